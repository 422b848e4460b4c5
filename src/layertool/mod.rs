//! The layer tools: `stratafs diff | commit | import | init-layer`, and `stats`, which
//! reads what a live mount's daemon reports. This file owns their
//! command line (one clap parser per subcommand), the error type they share, and the rules
//! common to all of them (which upper entries are whiteouts, which paths belong to the init
//! layer). The tools work on plain layer directories and tar files; they never mount and
//! never touch the FUSE side of the crate (`diff --lowerdir` reads the lowers through a
//! union of them, so the tools and the mount share one merge of layers).

mod commit;
mod diff;
mod import;
pub(crate) mod initlayer;
mod layerdir;
mod lowerview;
mod tarpath;
mod tarwrite;

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use crate::whiteout::WhiteoutForm;

/// The subcommands that `main` hands to [`main`].
pub const SUBCOMMANDS: [&str; 5] = ["diff", "commit", "import", "init-layer", "stats"];

/// Each subcommand with the one-line summary (`about`) of its parser, in the order of
/// [`SUBCOMMANDS`], for the top-level help.
pub fn summaries() -> Vec<(&'static str, String)> {
    SUBCOMMANDS
        .iter()
        .map(|&sub| {
            let cmd = match sub {
                "diff" => DiffArgs::command(),
                "commit" => CommitArgs::command(),
                "import" => ImportArgs::command(),
                "init-layer" => InitLayerArgs::command(),
                "stats" => StatsArgs::command(),
                other => unreachable!("no parser for layer tool '{other}'"),
            };
            let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
            (sub, about)
        })
        .collect()
}

/// Paths (relative to a layer root) that the init layer owns (S18): `diff` never lists
/// them and `commit` never ships them, nor whiteouts of them.
pub const INIT_LAYER_FILES: [&str; 3] = ["etc/hosts", "etc/hostname", "etc/resolv.conf"];

pub fn is_init_layer_file(rel: &[u8]) -> bool {
    INIT_LAYER_FILES.iter().any(|f| f.as_bytes() == rel)
}

/// A failure of a layer tool: one line for the user, exit status 1.
#[derive(Debug)]
pub struct ToolError(pub String);

impl ToolError {
    pub fn new(msg: impl Into<String>) -> ToolError {
        ToolError(msg.into())
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub type ToolResult<T> = Result<T, ToolError>;

/// The name a tool writes `name` under before renaming it into place when complete:
/// `.NAME.stratafs-tmp.PID`, hidden, beside it (one filesystem, so the rename is atomic),
/// and apart from any other process's.
pub fn temp_name_for(name: &OsStr) -> OsString {
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".stratafs-tmp.{}", std::process::id()));
    tmp
}

#[derive(Parser, Debug)]
#[command(
    name = "stratafs diff",
    about = "List the changes an upper dir holds: A (added), C (changed), D (deleted)",
    long_about = "List the changes an upper dir holds, like `docker diff`: `A /path`, \
`C /path`, `D /path`, sorted by path. Whiteouts (.wh.<name> files, char 0/0 devices) and \
opaque dirs (.wh..wh..opq, trusted/user.overlay.opaque=y) are understood. With --lowerdir \
an entry is A when the lowers do not have it and C when they do, a whiteout is D when it \
hides something, and whatever an opaque dir hides is D. Without --lowerdir nothing is \
known of the lowers: a whiteout is D, a directory is C (the union copies up parents of \
what changes), anything else is A. Init-layer files (etc/hosts, etc/hostname, \
etc/resolv.conf) are never listed."
)]
struct DiffArgs {
    #[command(flatten)]
    upper: UpperArgs,
    /// The lowers the upper was mounted over, top first (A:B:C).
    #[arg(long, value_name = "A:B")]
    lowerdir: Option<String>,
}

/// The upper dir and how to read it, common to diff and commit.
#[derive(clap::Args, Debug)]
struct UpperArgs {
    /// The upper (read-write) layer dir.
    upperdir: PathBuf,
    /// The whiteout form the upper was mounted with: under aufs a char 0/0 device is a
    /// device node; the default reads both forms.
    #[arg(long, value_enum, default_value = "overlay", value_name = "FORM")]
    whiteout: WhiteoutForm,
}

#[derive(Parser, Debug)]
#[command(
    name = "stratafs commit",
    about = "Write an upper dir as an OCI image layer tar (reproducible), print its sha256"
)]
struct CommitArgs {
    #[command(flatten)]
    upper: UpperArgs,
    /// Where to write the layer tar.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: PathBuf,
    /// Compress with gzip (deterministic header: no name, mtime 0).
    #[arg(long)]
    gzip: bool,
}

#[derive(Parser, Debug)]
#[command(
    name = "stratafs import",
    about = "Unpack an OCI or docker-save layer tar (optionally gzip) into a new layer dir"
)]
struct ImportArgs {
    /// The layer tar (plain or gzip, detected by its magic bytes).
    layer: PathBuf,
    /// The layer dir to create: it must not exist, or be empty.
    dir: PathBuf,
    /// How whiteouts and opaque markers are written.
    #[arg(long, value_enum, default_value = "aufs", value_name = "FORM")]
    whiteout: WhiteoutForm,
}

#[derive(Parser, Debug)]
#[command(
    name = "stratafs stats",
    about = "Print what a mount's daemon did: requests by opcode with latencies, copy-ups, memory",
    long_about = "Print what the daemon of a live stratafs mount did: requests by opcode with \
their count and latency quantiles (log2 buckets, microseconds), copy-ups and the data they \
copied, open files, objects the kernel holds, and the daemon's memory. Needs CAP_SYS_ADMIN \
(it reads the private xattr trusted.stratafs.stats of the mount's root), or, for a mount made \
by a plain user, that user (user.stratafs.stats)."
)]
struct StatsArgs {
    /// The mount point of a live stratafs mount.
    mountpoint: PathBuf,
}

#[derive(Parser, Debug)]
#[command(
    name = "stratafs init-layer",
    about = "Write an init layer: etc/hosts, etc/hostname, etc/resolv.conf"
)]
struct InitLayerArgs {
    /// The init layer dir (created if missing).
    dir: PathBuf,
    /// The container's hostname.
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// An extra /etc/hosts line (repeatable).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// A nameserver for resolv.conf (repeatable).
    #[arg(long, value_name = "IP")]
    dns: Vec<String>,
    /// A search domain for resolv.conf (repeatable).
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    dns_search: Vec<String>,
}

/// Parses `args` for subcommand `sub`; on help prints it and yields exit code 0, on a bad
/// argument prints clap's first line and yields 1.
fn parse<T: Parser>(sub: &str, args: Vec<OsString>) -> Result<T, i32> {
    let argv = std::iter::once(OsString::from(format!("stratafs {sub}"))).chain(args);
    T::try_parse_from(argv).map_err(|e| {
        use clap::error::ErrorKind;
        if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            print!("{e}");
            return 0;
        }
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("bad arguments");
        eprintln!("stratafs {sub}: {}", first.trim_start_matches("error: "));
        1
    })
}

/// Runs layer tool `sub` with the arguments after it; returns the process exit code.
pub fn main(sub: &str, args: Vec<OsString>) -> i32 {
    let result = match sub {
        "diff" => match parse::<DiffArgs>(sub, args) {
            Ok(a) => diff::run(&a.upper.upperdir, a.lowerdir.as_deref(), a.upper.whiteout),
            Err(code) => return code,
        },
        "commit" => match parse::<CommitArgs>(sub, args) {
            Ok(a) => commit::run(&a.upper.upperdir, &a.output, a.gzip, a.upper.whiteout),
            Err(code) => return code,
        },
        "import" => match parse::<ImportArgs>(sub, args) {
            Ok(a) => import::run(&a.layer, &a.dir, a.whiteout),
            Err(code) => return code,
        },
        "init-layer" => match parse::<InitLayerArgs>(sub, args) {
            Ok(a) => initlayer::InitLayer::from_flags(
                a.hostname.as_deref(),
                &a.add_host,
                &a.dns,
                &a.dns_search,
            )
            .and_then(|spec| spec.write(&a.dir)),
            Err(code) => return code,
        },
        "stats" => match parse::<StatsArgs>(sub, args) {
            Ok(a) => print_stats(&a.mountpoint),
            Err(code) => return code,
        },
        other => Err(ToolError(format!("unknown layer tool '{other}'"))),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("stratafs {sub}: {e}");
            1
        }
    }
}

/// `stratafs stats MOUNTPOINT`: prints the report the daemon serves as an xattr.
fn print_stats(mountpoint: &std::path::Path) -> ToolResult<()> {
    use crate::sys::{self, Errno, XTarget};
    let dir = sys::open_dir_path(mountpoint)
        .map_err(|e| ToolError(format!("'{}': {e}", mountpoint.display())))?;
    // trusted.* from a mount by root, user.* from a plain user's.
    let [trusted, user] = crate::private_xattrs::Private::Stats.both();
    let target = XTarget::Fd(std::os::fd::AsFd::as_fd(&dir));
    match sys::getxattr(target, trusted).or_else(|_| sys::getxattr(target, user)) {
        Ok(report) => {
            print!("{}", String::from_utf8_lossy(&report));
            Ok(())
        }
        Err(Errno::ENODATA) | Err(Errno::ENOTSUP) if sys::getuid() != 0 => Err(ToolError(
            "needs CAP_SYS_ADMIN (run as root), or to be the user who mounted it".into(),
        )),
        Err(Errno::ENODATA) | Err(Errno::ENOTSUP) => Err(ToolError(format!(
            "'{}': not the root of a stratafs mount",
            mountpoint.display()
        ))),
        Err(e) => Err(ToolError(format!("'{}': {e}", mountpoint.display()))),
    }
}
