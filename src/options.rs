//! The `-o` option string: fuse-overlayfs compatible parsing (escapes `\,` and `\:`),
//! the options mount(8) and systemd pass along, and the typed result.

use crate::idmap::{parse_ranges, IdRange};
use crate::text::one_line;
use crate::whiteout::WhiteoutForm;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq)]
pub struct MountOptions {
    pub lowerdirs: Vec<PathBuf>,
    pub upperdir: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    pub initdir: Option<PathBuf>,
    pub read_only: bool,
    pub allow_other: bool,
    /// `noallow_other`: a root mount stays private to root (by default root mounts are
    /// shared with every user, as fuse-overlayfs and kernel overlayfs are).
    pub no_allow_other: bool,
    pub default_permissions: bool,
    pub whiteout: WhiteoutForm,
    pub fsname: Option<String>,
    pub threads: Option<usize>,
    pub timeout_secs: Option<f64>,
    pub passthrough: Passthrough,
    /// Metadata changes of lower files copy no data until the first write.
    pub metacopy: bool,
    /// Renaming a merged directory writes a redirect instead of copying the tree.
    pub redirect_dir: bool,
    pub debug: bool,
    /// fsync is a no-op; an unclean stop makes the next mount refuse (like overlayfs).
    pub volatile: bool,
    /// SELinux context given by container engines: accepted and logged.
    pub context: Option<String>,
    /// Where a detached daemon logs when there is no syslog socket.
    pub logfile: Option<PathBuf>,
    /// mount(8)'s -s: unknown options are ignored (with a warning) instead of refused.
    pub sloppy: bool,
    /// Init-layer shortcuts (S18): generate one in the workdir when no initdir is given.
    pub init: InitSpec,
    /// POSIX ACLs enforced and inherited (default); `noacl` turns them off.
    pub acl: bool,
    /// The generic mount flags (nosuid, nodev, noexec, atime handling, sync) for mount(2).
    pub mount_flags: u64,
    /// `remount`: change the flags (ro/rw, nosuid, ...) of the live mount at the mountpoint.
    pub remount: bool,
    /// fuse-overlayfs' `fsync=0` turns this off: nothing is synced (no marker, unlike
    /// `volatile`).
    pub fsync: bool,
    /// fuse-overlayfs' `static_nlink`: directories report st_nlink 1.
    pub static_nlink: bool,
    /// overlayfs' `userxattr`: private xattrs in `user.*` even for a mount by root (they
    /// are there anyway for any other mount).
    pub userxattr: bool,
    /// fuse-overlayfs' uidmapping=/gidmapping=: stored ids and shown ids (`idmap`).
    pub uid_ranges: Vec<IdRange>,
    pub gid_ranges: Vec<IdRange>,
    /// fuse-overlayfs' `ino32_t`: st_ino and d_ino keep their low 32 bits.
    pub ino32: bool,
    /// fuse-overlayfs' `xattr_permissions=0|1|2` (`override_stat`).
    pub xattr_permissions: u8,
    /// fuse-overlayfs' squash_to_uid=/squash_to_gid= (squash_to_root: 0, lower precedence).
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
    /// fuse-overlayfs' `noxattrs=1` turns this off.
    pub xattrs: bool,
}

/// The generic mount flags and the MS_ bits they set and clear, as mount(8) knows them.
const MOUNT_FLAGS: &[(&str, u64, u64)] = &[
    ("nosuid", libc::MS_NOSUID, 0),
    ("suid", 0, libc::MS_NOSUID),
    ("nodev", libc::MS_NODEV, 0),
    ("dev", 0, libc::MS_NODEV),
    ("noexec", libc::MS_NOEXEC, 0),
    ("exec", 0, libc::MS_NOEXEC),
    (
        "noatime",
        libc::MS_NOATIME,
        libc::MS_RELATIME | libc::MS_STRICTATIME,
    ),
    ("atime", 0, libc::MS_NOATIME),
    (
        "relatime",
        libc::MS_RELATIME,
        libc::MS_NOATIME | libc::MS_STRICTATIME,
    ),
    ("norelatime", 0, libc::MS_RELATIME),
    (
        "strictatime",
        libc::MS_STRICTATIME,
        libc::MS_NOATIME | libc::MS_RELATIME,
    ),
    ("nostrictatime", 0, libc::MS_STRICTATIME),
    ("nodiratime", libc::MS_NODIRATIME, 0),
    ("diratime", 0, libc::MS_NODIRATIME),
    ("sync", libc::MS_SYNCHRONOUS, 0),
    ("async", 0, libc::MS_SYNCHRONOUS),
    ("dirsync", libc::MS_DIRSYNC, 0),
    ("lazytime", libc::MS_LAZYTIME, 0),
    ("nolazytime", 0, libc::MS_LAZYTIME),
];

/// Values for a generated init layer: /etc/hostname, /etc/hosts, /etc/resolv.conf.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InitSpec {
    pub hostname: Option<String>,
    pub add_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
}

impl InitSpec {
    pub fn is_empty(&self) -> bool {
        self == &InitSpec::default()
    }
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            lowerdirs: Vec::new(),
            upperdir: None,
            workdir: None,
            initdir: None,
            read_only: false,
            allow_other: false,
            no_allow_other: false,
            default_permissions: false,
            whiteout: WhiteoutForm::Aufs,
            fsname: None,
            threads: None,
            timeout_secs: None,
            passthrough: Passthrough::All,
            metacopy: false,
            redirect_dir: false,
            debug: false,
            volatile: false,
            context: None,
            logfile: None,
            sloppy: false,
            init: InitSpec::default(),
            acl: true,
            mount_flags: 0,
            remount: false,
            fsync: true,
            static_nlink: false,
            userxattr: false,
            uid_ranges: Vec::new(),
            gid_ranges: Vec::new(),
            ino32: false,
            xattr_permissions: 0,
            squash_uid: None,
            squash_gid: None,
            xattrs: true,
        }
    }
}

/// Options that mount(8), fstab and systemd pass and that need nothing from us.
const PASSED_ALONG: &[&str] = &[
    "defaults", "auto", "noauto", "nofail", "user", "users", "nouser", "_netdev", "silent", "loud",
];

/// Splits on `sep` where it is neither escaped by a backslash nor inside double quotes
/// (SELinux contexts such as `context="...:s0:c1,c2"`); keeps escapes and quotes.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
        } else if c == '"' {
            quoted = !quoted;
            cur.push(c);
        } else if c == sep && !quoted {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// Removes the escapes: `\X` becomes `X`. A trailing lone backslash is an error.
fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) => out.push(n),
                None => return Err(format!("malformed escape at the end of '{s}'")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Which opens the kernel serves from the layer file itself (FUSE passthrough).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passthrough {
    /// Every file: upper copies and lower ones, whose page cache every mount then shares.
    All,
    /// Upper copies only: lower files are served by the daemon (a descriptor opened on a
    /// lower copy then reads the upper copy once it exists, as on overlayfs).
    Upper,
    Off,
}

impl Passthrough {
    fn parse(v: &str) -> Result<Passthrough, String> {
        match v {
            "all" | "on" | "true" | "yes" | "1" => Ok(Passthrough::All),
            "upper" => Ok(Passthrough::Upper),
            "off" | "false" | "no" | "0" => Ok(Passthrough::Off),
            _ => Err(format!(
                "option 'passthrough' takes all, upper or off, not '{v}'"
            )),
        }
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("option '{key}' takes on or off, not '{v}'")),
    }
}

/// One element of an option string: `key` or `key=val`.
struct Opt<'a> {
    key: &'a str,
    val: Option<&'a str>,
}

impl Opt<'_> {
    /// The value, unescaped; an error when there is none.
    fn value(&self) -> Result<String, String> {
        match self.val {
            Some(v) if !v.is_empty() => {
                unescape(v).map_err(|e| format!("option '{}': {e}", self.key))
            }
            _ => Err(format!("option '{}' needs a value", self.key)),
        }
    }
}

impl MountOptions {
    /// Folds one `-o` string into self (several `-o` may be given). Errors are one line:
    /// control characters of the input are shown escaped.
    pub fn apply(&mut self, opts: &str) -> Result<(), String> {
        self.apply_inner(opts).map_err(|e| one_line(&e))
    }

    fn apply_inner(&mut self, opts: &str) -> Result<(), String> {
        for raw in split_unescaped(opts, ',') {
            if raw.is_empty() {
                continue;
            }
            let (key, val) = match raw.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (raw.as_str(), None),
            };
            let opt = Opt { key, val };
            let flag = MOUNT_FLAGS.iter().find(|(n, _, _)| *n == key);
            if let (Some((_, set, clear)), None) = (flag, val) {
                self.mount_flags = (self.mount_flags & !clear) | set;
            } else if !self.apply_ours(&opt)? && !self.apply_fuse_overlayfs(&opt)? {
                match key {
                    k if PASSED_ALONG.contains(&k) && val.is_none() => {}
                    k if k.starts_with("x-") => {}
                    _ if self.sloppy => eprintln!("stratafs: ignoring unknown option '{raw}'"),
                    _ => return Err(format!("unknown option '{raw}'")),
                }
            }
        }
        Ok(())
    }

    /// stratafs' own options and overlayfs' (README's option table); false: not one.
    fn apply_ours(&mut self, opt: &Opt<'_>) -> Result<bool, String> {
        match opt.key {
            "lowerdir" => {
                let v = opt.val.unwrap_or_default().to_string();
                if v.is_empty() {
                    return Err("option 'lowerdir' needs at least one directory".into());
                }
                let mut dirs = Vec::new();
                for p in split_unescaped(&v, ':') {
                    if p.is_empty() {
                        return Err(format!("option 'lowerdir' has an empty path in '{v}'"));
                    }
                    dirs.push(PathBuf::from(
                        unescape(&p).map_err(|e| format!("option 'lowerdir': {e}"))?,
                    ));
                }
                self.lowerdirs = dirs;
            }
            "upperdir" => self.upperdir = Some(PathBuf::from(opt.value()?)),
            "workdir" => self.workdir = Some(PathBuf::from(opt.value()?)),
            "initdir" => self.initdir = Some(PathBuf::from(opt.value()?)),
            "remount" if opt.val.is_none() => self.remount = true,
            "ro" if opt.val.is_none() => self.read_only = true,
            "rw" if opt.val.is_none() => self.read_only = false,
            "allow_other" | "allow_root" => {
                self.allow_other = true;
                self.no_allow_other = false;
            }
            "noallow_other" if opt.val.is_none() => {
                self.allow_other = false;
                self.no_allow_other = true;
            }
            "default_permissions" => self.default_permissions = true,
            "whiteout" => {
                self.whiteout = match opt.value()?.as_str() {
                    "aufs" => WhiteoutForm::Aufs,
                    "overlay" => WhiteoutForm::Overlay,
                    other => {
                        return Err(format!(
                            "option 'whiteout' takes aufs or overlay, not '{other}'"
                        ))
                    }
                }
            }
            "fsname" => self.fsname = Some(opt.value()?),
            "threads" => {
                let v = opt.value()?;
                let n: usize = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| format!("option 'threads' takes 1 to 64, not '{v}'"))?;
                self.threads = Some(n);
            }
            "timeout" => {
                let v = opt.value()?;
                let t: f64 = v
                    .parse()
                    .ok()
                    .filter(|t: &f64| t.is_finite() && *t >= 0.0)
                    .ok_or_else(|| format!("option 'timeout' takes seconds, not '{v}'"))?;
                self.timeout_secs = Some(t);
            }
            "passthrough" => self.passthrough = Passthrough::parse(&opt.value()?)?,
            "metacopy" => self.metacopy = parse_bool("metacopy", &opt.value()?)?,
            "redirect_dir" => self.redirect_dir = parse_bool("redirect_dir", &opt.value()?)?,
            "debug" => self.debug = true,
            "volatile" => self.volatile = true,
            "context" | "fscontext" | "defcontext" | "rootcontext" => {
                self.context = Some(opt.value()?)
            }
            "logfile" => self.logfile = Some(PathBuf::from(opt.value()?)),
            "hostname" => self.init.hostname = Some(opt.value()?),
            "add_host" | "add-host" => self.init.add_hosts.push(opt.value()?),
            "dns" => self.init.dns.push(opt.value()?),
            "dns_search" | "dns-search" => self.init.dns_search.push(opt.value()?),
            "userxattr" if opt.val.is_none() => self.userxattr = true,
            "acl" if opt.val.is_none() => self.acl = true,
            "noacl" if opt.val.is_none() => self.acl = false,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// fuse-overlayfs' own options, with their meaning there (README's option table);
    /// false: not one.
    fn apply_fuse_overlayfs(&mut self, opt: &Opt<'_>) -> Result<bool, String> {
        match opt.key {
            // fuse-overlayfs' own options (see README's option table).
            "fsync" => self.fsync = parse_bool("fsync", &opt.value()?)?,
            "static_nlink" if opt.val.is_none() => self.static_nlink = true,
            "noxattrs" => self.xattrs = !parse_bool("noxattrs", &opt.value()?)?,
            // squash_to_uid/gid win over squash_to_root, in whatever order they come.
            "squash_to_root" if opt.val.is_none() => {
                self.squash_uid.get_or_insert(0);
                self.squash_gid.get_or_insert(0);
            }
            "squash_to_uid" | "squash_to_gid" => {
                let v = opt.value()?;
                let id: u32 =
                    v.parse().ok().filter(|id| *id != u32::MAX).ok_or_else(|| {
                        format!("option '{}' takes a numeric id, not '{v}'", opt.key)
                    })?;
                if opt.key == "squash_to_uid" {
                    self.squash_uid = Some(id);
                } else {
                    self.squash_gid = Some(id);
                }
            }
            "uidmapping" => self.uid_ranges = parse_ranges(opt.key, &opt.value()?)?,
            "gidmapping" => self.gid_ranges = parse_ranges(opt.key, &opt.value()?)?,
            "ino32_t" if opt.val.is_none() => self.ino32 = true,
            "xattr_permissions" => {
                let v = opt.value()?;
                self.xattr_permissions = match v.as_str() {
                    "0" => 0,
                    "1" => 1,
                    "2" => 2,
                    _ => {
                        return Err(format!(
                            "option 'xattr_permissions' takes 0, 1 or 2, not '{v}'"
                        ))
                    }
                };
            }
            // overlayfs' and fuse-overlayfs' inode number scheme: stratafs always
            // composes numbers as xino does (unique in the mount, S13), so every value
            // means the same here.
            "xino" => match opt.value()?.as_str() {
                "off" | "auto" | "on" => {}
                v => return Err(format!("option 'xino' takes off, auto or on, not '{v}'")),
            },
            "threaded" => {
                // threaded=0: one worker; threaded=1: our default count.
                self.threads = (!parse_bool("threaded", &opt.value()?)?).then_some(1);
            }
            // Accepted for compatibility, with nothing to change here: passthrough
            // supersedes the writeback cache (the kernel allows one or the other), and
            // inode numbers always come from the layers' own.
            "writeback" | "fast_ino" => {
                parse_bool(opt.key, &opt.value()?)?;
            }
            "plugins" => {
                return Err("option 'plugins': lazy-pull layer plugins are not supported".into())
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Whether POSIX ACLs are on: asked for (the default) and xattrs not turned off.
    pub fn acls(&self) -> bool {
        self.acl && self.xattrs
    }

    #[cfg(test)]
    pub fn parse(opts: &str) -> Result<MountOptions, String> {
        let mut m = MountOptions::default();
        m.apply(opts)?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_mount_flags_reach_mount_flags_last_one_wins() {
        let m = MountOptions::parse("lowerdir=/a,nosuid,nodev,noexec,noatime").unwrap();
        assert_eq!(
            m.mount_flags,
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_NOATIME
        );
        let m = MountOptions::parse("lowerdir=/a,nosuid,suid,noatime,relatime,dev").unwrap();
        assert_eq!(m.mount_flags, libc::MS_RELATIME);
        assert!(MountOptions::parse("lowerdir=/a,nosuid=1").is_err());
    }

    #[test]
    fn fuse_overlayfs_options_are_understood() {
        let m = MountOptions::parse(
            "lowerdir=/a,fsync=0,static_nlink,threaded=0,writeback=1,fast_ino=1,noacl",
        )
        .unwrap();
        assert!(!m.fsync && m.static_nlink && !m.acl);
        assert_eq!(m.threads, Some(1));
        assert!(MountOptions::parse("lowerdir=/a,fsync=1").unwrap().fsync);
        assert_eq!(
            MountOptions::parse("lowerdir=/a,threaded=1")
                .unwrap()
                .threads,
            None
        );
        for bad in [
            "fsync=maybe",
            "writeback=2",
            "plugins=/usr/lib/x.so",
            "static_nlink=1",
        ] {
            let e = MountOptions::parse(&format!("lowerdir=/a,{bad}")).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn acl_is_on_unless_noacl() {
        assert!(MountOptions::parse("lowerdir=/a").unwrap().acl);
        assert!(!MountOptions::parse("lowerdir=/a,noacl").unwrap().acl);
        assert!(MountOptions::parse("lowerdir=/a,noacl,acl").unwrap().acl);
    }

    #[test]
    fn lowerdirs_top_first_with_escapes() {
        let m = MountOptions::parse(r"lowerdir=/a\:b:/c\,d:/e,upperdir=/u,workdir=/w").unwrap();
        assert_eq!(
            m.lowerdirs,
            vec![
                PathBuf::from("/a:b"),
                PathBuf::from("/c,d"),
                PathBuf::from("/e")
            ]
        );
        assert_eq!(m.upperdir, Some(PathBuf::from("/u")));
        assert_eq!(m.workdir, Some(PathBuf::from("/w")));
    }

    #[test]
    fn passed_along_options_and_empty_elements_are_accepted() {
        let m = MountOptions::parse(
            "lowerdir=/a,,rw,nodev,nosuid,noatime,nofail,_netdev,x-systemd.after=b",
        )
        .unwrap();
        assert_eq!(m.lowerdirs.len(), 1);
        assert!(!m.read_only);
    }

    #[test]
    fn unknown_option_is_named() {
        let e = MountOptions::parse("lowerdir=/a,bogus=1").unwrap_err();
        assert_eq!(e, "unknown option 'bogus=1'");
        let e = MountOptions::parse("lowerdir=/a,frob").unwrap_err();
        assert_eq!(e, "unknown option 'frob'");
    }

    #[test]
    fn whiteout_form_and_flags() {
        let m =
            MountOptions::parse("lowerdir=/a,whiteout=overlay,ro,allow_other,default_permissions")
                .unwrap();
        assert_eq!(m.whiteout, WhiteoutForm::Overlay);
        assert!(m.read_only && m.allow_other && m.default_permissions);
        assert!(MountOptions::parse("lowerdir=/a,whiteout=zfs").is_err());
    }

    #[test]
    fn malformed_values_are_refused() {
        assert!(MountOptions::parse("lowerdir=").is_err());
        assert!(MountOptions::parse("lowerdir=/a::/b").is_err());
        assert!(MountOptions::parse(r"lowerdir=/a\").is_err());
        assert!(MountOptions::parse("lowerdir=/a,threads=0").is_err());
        assert!(MountOptions::parse("lowerdir=/a,upperdir=").is_err());
    }

    #[test]
    fn container_engine_options() {
        let m = MountOptions::parse(
            r#"lowerdir=/a,volatile,context="system_u:object_r:container_file_t:s0:c1,c2",logfile=/tmp/x.log"#,
        )
        .unwrap();
        assert!(m.volatile);
        assert_eq!(
            m.context.as_deref(),
            Some(r#""system_u:object_r:container_file_t:s0:c1,c2""#)
        );
        assert_eq!(m.logfile, Some(PathBuf::from("/tmp/x.log")));
    }

    #[test]
    fn init_layer_shortcuts() {
        let m = MountOptions::parse(
            "lowerdir=/a,hostname=web1,add_host=db:10.0.0.2,add-host=v6:[::1],dns=1.1.1.1,dns_search=example.org",
        )
        .unwrap();
        assert_eq!(m.init.hostname.as_deref(), Some("web1"));
        assert_eq!(m.init.add_hosts, vec!["db:10.0.0.2", "v6:[::1]"]);
        assert_eq!(m.init.dns, vec!["1.1.1.1"]);
        assert_eq!(m.init.dns_search, vec!["example.org"]);
        assert!(!m.init.is_empty());
    }

    #[test]
    fn later_options_override() {
        let mut m = MountOptions::parse("lowerdir=/a").unwrap();
        m.apply("lowerdir=/b:/c,threads=2,timeout=0.5,passthrough=off")
            .unwrap();
        assert_eq!(m.lowerdirs.len(), 2);
        assert_eq!(m.threads, Some(2));
        assert_eq!(m.timeout_secs, Some(0.5));
        assert_eq!(m.passthrough, Passthrough::Off);
        m.apply("passthrough=upper").unwrap();
        assert_eq!(m.passthrough, Passthrough::Upper);
        m.apply("passthrough=on").unwrap();
        assert_eq!(m.passthrough, Passthrough::All);
        assert!(m.apply("passthrough=lower").is_err());
    }
}
