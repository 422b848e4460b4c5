//! stratafs: a union filesystem in userspace. This file is the command line: argv parsing
//! (clap + the `-o` option string) and dispatch to the daemon.

mod acl;
mod daemon;
mod fuse_adapter;
mod iomode;
mod layers;
mod layertool;
mod logging;
mod mount_helper;
mod options;
mod sys;
mod union;
mod whiteout;

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "stratafs",
    version,
    about = "Union filesystem in userspace: read-only lower layers merged under one writable upper"
)]
struct Cli {
    /// Stay in the foreground (do not daemonize).
    #[arg(short, long)]
    foreground: bool,
    /// Debug logging (implies nothing else).
    #[arg(short, long)]
    debug: bool,
    /// Mount options: lowerdir=A:B,upperdir=U,workdir=W,...
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// [SOURCE] MOUNTPOINT
    #[arg(required = true, num_args = 1..=2, value_name = "MOUNTPOINT")]
    args: Vec<String>,
}

/// `mount.stratafs ...`: the binary called by mount(8) (a link named mount.stratafs).
fn helper_main() -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let call = match mount_helper::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mount.stratafs: {e}");
            std::process::exit(1);
        }
    };
    if call.verbose {
        eprintln!(
            "mount.stratafs: mounting {} on {}",
            call.request.source.as_deref().unwrap_or("stratafs"),
            call.request.mountpoint.display()
        );
    }
    if call.fake {
        std::process::exit(daemon::check(&call.request));
    }
    std::process::exit(daemon::run(call.request));
}

fn main() {
    let invoked_as = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    if invoked_as.starts_with("mount.") {
        helper_main();
    }
    let mut argv = std::env::args_os().skip(1);
    if let Some(sub) = argv.next().and_then(|a| a.into_string().ok()) {
        if layertool::SUBCOMMANDS.contains(&sub.as_str()) {
            std::process::exit(layertool::main(&sub, argv.collect()));
        }
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                print!("{e}");
                std::process::exit(0);
            }
            // clap's first paragraph (the error itself), folded into one line.
            let text = e.to_string();
            let msg: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let msg = msg.join(" ");
            eprintln!("stratafs: {}", msg.trim_start_matches("error: "));
            std::process::exit(1);
        }
    };
    let mut opts = options::MountOptions::default();
    for o in &cli.options {
        if let Err(e) = opts.apply(o) {
            eprintln!("stratafs: {e}");
            std::process::exit(1);
        }
    }
    opts.debug |= cli.debug;
    let (source, mountpoint) = match cli.args.as_slice() {
        [m] => (None, m.clone()),
        [s, m] => (Some(s.clone()), m.clone()),
        _ => unreachable!("clap enforces one or two arguments"),
    };
    let code = daemon::run(daemon::MountRequest {
        opts,
        mountpoint: PathBuf::from(mountpoint),
        source,
        foreground: cli.foreground || cli.debug,
    });
    std::process::exit(code);
}
