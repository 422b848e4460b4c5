//! stratafs: a union filesystem in userspace. This file is the command line: argv parsing
//! (clap + the `-o` option string) and dispatch to the daemon.

#![deny(unsafe_code)]

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use stratafs::{daemon, layertool, mount_helper, options, text};

use clap::{CommandFactory, Parser};

/// The mount command line. The layer tools (`diff`, `commit`, ...) and `help` are
/// dispatched in `main` before this parser runs; [`help_command`] lists them in the help.
#[derive(Parser, Debug)]
#[command(
    name = "stratafs",
    version,
    about = "Union filesystem in userspace: read-only lower layers merged under one writable upper",
    override_usage = "stratafs [-f] [-d] -o OPTIONS [SOURCE] MOUNTPOINT\n       \
                      stratafs <COMMAND> [ARGS]...",
    after_help = "Run `stratafs help COMMAND` (or `stratafs COMMAND --help`) for the arguments \
                  of a command.\nCalled as mount.stratafs (a link to this binary), it speaks \
                  mount(8)'s helper protocol:\n  mount.stratafs SOURCE MOUNTPOINT [-sfnv] -o OPTIONS"
)]
struct Cli {
    /// Stay in the foreground (do not daemonize).
    #[arg(short, long)]
    foreground: bool,
    /// Debug logging to stderr (implies -f).
    #[arg(short, long)]
    debug: bool,
    /// Mount options: lowerdir=A:B,upperdir=U,workdir=W,...
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// [SOURCE] MOUNTPOINT; SOURCE is free text, the first column of /proc/mounts
    #[arg(required = true, num_args = 1..=2, value_name = "MOUNTPOINT")]
    args: Vec<String>,
}

/// The top-level help: the mount command line of [`Cli`], with the layer tools and `help`
/// listed as commands, one line each (the summary of each tool's own parser). For printing
/// only: the parser of the mount command line knows no subcommands.
fn help_command() -> clap::Command {
    let mut cmd = Cli::command().subcommand_help_heading("Commands");
    for (name, about) in layertool::summaries() {
        cmd = cmd.subcommand(clap::Command::new(name).about(about));
    }
    cmd.subcommand(clap::Command::new("help").about("Print this help, or the help of one command"))
        .subcommand(
            clap::Command::new("man")
                .about("Print the manual page (roff; `stratafs man | man -l -`)"),
        )
        .subcommand(
            clap::Command::new("completions").about(
                "Print shell completions: stratafs completions bash|zsh|fish|elvish|powershell",
            ),
        )
        .disable_help_subcommand(true)
}

/// `stratafs man`: the manual page, from the same definitions as `--help`.
fn man_main(args: &[OsString]) -> i32 {
    if !args.is_empty() {
        eprintln!("stratafs man: takes no arguments");
        return 1;
    }
    let mut out = std::io::stdout().lock();
    match clap_mangen::Man::new(help_command()).render(&mut out) {
        Ok(()) => 0,
        // A closed stdout (`stratafs man | head`) is no failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("stratafs man: {e}");
            1
        }
    }
}

/// `stratafs completions SHELL`: completions of the commands and flags for SHELL.
fn completions_main(args: &[OsString]) -> i32 {
    use std::str::FromStr;
    let shells = "bash, zsh, fish, elvish, powershell";
    let shell = match args {
        [one] => clap_complete::Shell::from_str(&one.to_string_lossy()).ok(),
        _ => None,
    };
    let Some(shell) = shell else {
        eprintln!("stratafs completions: expected one shell ({shells})");
        return 1;
    };
    clap_complete::generate(
        shell,
        &mut help_command(),
        "stratafs",
        &mut std::io::stdout(),
    );
    0
}

fn print_help() -> i32 {
    // A closed stdout (`stratafs --help | head -1`) is no failure of the help.
    let _ = help_command().print_help();
    0
}

/// `stratafs help [COMMAND]`: the top-level help, or that command's (what `stratafs
/// COMMAND --help` prints); exit status 0. An unknown command, or more than one, is a
/// one-line error with exit status 1.
fn help_main(args: &[OsString]) -> i32 {
    let name = match args {
        [] => return print_help(),
        [one] => one.to_string_lossy(),
        _ => {
            eprintln!(
                "stratafs help: expected at most one command, got {}",
                args.len()
            );
            return 1;
        }
    };
    if layertool::SUBCOMMANDS.contains(&name.as_ref()) {
        return layertool::main(&name, vec![OsString::from("--help")]);
    }
    if ["help", "-h", "--help"].contains(&name.as_ref()) {
        return print_help();
    }
    if ["man", "completions"].contains(&name.as_ref()) {
        if let Some(sub) = help_command().find_subcommand_mut(name.as_ref()) {
            let _ = sub.print_help();
            return 0;
        }
    }
    eprintln!(
        "stratafs help: unknown command '{}' (commands: {}, help, man, completions)",
        text::one_line(&name),
        layertool::SUBCOMMANDS.join(", ")
    );
    1
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
        let rest: Vec<OsString> = argv.collect();
        if layertool::SUBCOMMANDS.contains(&sub.as_str()) {
            std::process::exit(layertool::main(&sub, rest));
        }
        // mount.fuse3 runs `stratafs SOURCE MOUNTPOINT -o OPTIONS` with the first field of
        // an fstab line as SOURCE, which may be any word: with `-o`, `help` is a SOURCE.
        let mounting = rest.iter().any(|a| a.as_bytes().starts_with(b"-o"));
        match sub.as_str() {
            "help" if !mounting => std::process::exit(help_main(&rest)),
            "man" if !mounting => std::process::exit(man_main(&rest)),
            "completions" if !mounting => std::process::exit(completions_main(&rest)),
            _ => {}
        }
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if e.kind() == ErrorKind::DisplayHelp {
                std::process::exit(print_help());
            }
            if e.kind() == ErrorKind::DisplayVersion {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks that a command is consistent when it is built (in debug builds); what
    /// the help lists, and in which order, tests/cli.rs asks of the built binary.
    #[test]
    fn help_and_mount_commands_are_consistent() {
        help_command().debug_assert();
        Cli::command().debug_assert();
    }
}
