//! The mount(8) helper protocol: invoked as `mount.stratafs SOURCE MOUNTPOINT [-sfnv]
//! [-o OPTIONS]`, as mount(8) calls `/sbin/mount.TYPE` for `mount -t stratafs` and fstab
//! lines. Its flags mean other things than the daemon's: -f is "fake" (check, mount
//! nothing), -s "sloppy" (ignore unknown options), -n "no mtab", -v "verbose".

use std::path::PathBuf;

use crate::daemon::MountRequest;
use crate::options::MountOptions;

/// What mount(8) asked for.
pub struct HelperCall {
    pub request: MountRequest,
    pub fake: bool,
    pub verbose: bool,
}

/// Parses the helper argv (without argv[0]).
pub fn parse(args: &[String]) -> Result<HelperCall, String> {
    let mut positional = Vec::new();
    let mut option_strings = Vec::new();
    let (mut fake, mut sloppy, mut verbose) = (false, false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-o" {
            option_strings.push(
                it.next()
                    .ok_or_else(|| "option '-o' needs a value".to_string())?
                    .clone(),
            );
        } else if let Some(o) = a.strip_prefix("-o") {
            option_strings.push(o.to_string());
        } else if let Some(flags) = a.strip_prefix('-').filter(|f| !f.is_empty()) {
            for f in flags.chars() {
                match f {
                    'f' => fake = true,
                    's' => sloppy = true,
                    'v' => verbose = true,
                    'n' => {}
                    _ => return Err(format!("unknown flag '-{f}'")),
                }
            }
        } else {
            positional.push(a.clone());
        }
    }
    let (source, mountpoint) = match positional.as_slice() {
        [s, m] => (s.clone(), m.clone()),
        _ => return Err("usage: mount.stratafs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]".into()),
    };
    let mut opts = MountOptions {
        sloppy,
        ..MountOptions::default()
    };
    for o in &option_strings {
        opts.apply(o)?;
    }
    Ok(HelperCall {
        request: MountRequest {
            opts,
            mountpoint: PathBuf::from(mountpoint),
            source: Some(source),
            foreground: false,
        },
        fake,
        verbose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn mount_passes_source_mountpoint_then_flags_and_options() {
        let c = parse(&args(&[
            "stratafs",
            "/mnt/x",
            "-n",
            "-o",
            "rw,lowerdir=/a,noatime",
        ]))
        .unwrap();
        assert_eq!(c.request.mountpoint, PathBuf::from("/mnt/x"));
        assert_eq!(c.request.source.as_deref(), Some("stratafs"));
        assert_eq!(c.request.opts.lowerdirs, vec![PathBuf::from("/a")]);
        assert!(!c.fake && !c.verbose && !c.request.foreground);
    }

    #[test]
    fn combined_flags_and_sloppy_options() {
        let c = parse(&args(&["src", "/m", "-sfv", "-o", "lowerdir=/a,weird=1"])).unwrap();
        assert!(c.fake && c.verbose && c.request.opts.sloppy);
        assert!(parse(&args(&["src", "/m", "-o", "lowerdir=/a,weird=1"])).is_err());
    }

    #[test]
    fn bad_helper_calls_are_refused() {
        assert!(parse(&args(&["/m"])).is_err());
        assert!(parse(&args(&["s", "/m", "-x"])).is_err());
        assert!(parse(&args(&["s", "/m", "-o"])).is_err());
    }
}
