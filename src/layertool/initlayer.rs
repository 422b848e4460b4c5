//! The init layer generator (`stratafs init-layer DIR ...`): validates the hostname, extra
//! hosts, nameservers and search domains, renders etc/hosts, etc/hostname and
//! etc/resolv.conf, and writes them into DIR (S18). Each file is written to a temporary
//! name and renamed, and nothing is followed through a symlink inside DIR.

use std::ffi::OsStr;
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use super::{temp_name_for, ToolError, ToolResult};
use crate::sys::{self, Errno};

/// Written to etc/hostname when no hostname is given.
const DEFAULT_HOSTNAME: &str = "localhost";

#[derive(Debug, Default, PartialEq, Eq)]
pub struct InitLayer {
    pub hostname: Option<String>,
    pub extra_hosts: Vec<(String, IpAddr)>,
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
}

/// A host or domain name: dot-separated labels of letters, digits, `-` and `_`, each 1 to
/// 63 bytes and not starting or ending with `-`, 253 bytes at most in all.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An IPv4 or IPv6 address (IPv6 optionally in brackets).
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse().ok()
}

fn bad_ip(flag: &str, given: &str, ip: &str) -> ToolError {
    ToolError(format!(
        "{flag} '{given}': '{ip}' is not an IPv4 or IPv6 address"
    ))
}

impl InitLayer {
    /// Validates the command-line values.
    pub fn from_flags(
        hostname: Option<&str>,
        add_host: &[String],
        dns: &[String],
        dns_search: &[String],
    ) -> ToolResult<InitLayer> {
        let mut spec = InitLayer::default();
        if let Some(h) = hostname {
            if !valid_hostname(h) {
                return Err(ToolError(format!(
                    "--hostname '{h}' is not a valid hostname"
                )));
            }
            spec.hostname = Some(h.to_string());
        }
        for entry in add_host {
            // NAME:IP, split at the first ':' so that IPv6 addresses keep theirs.
            let (name, ip) = entry.split_once(':').ok_or_else(|| {
                ToolError(format!("--add-host '{entry}' is not of the form NAME:IP"))
            })?;
            if !valid_hostname(name) {
                return Err(ToolError(format!(
                    "--add-host '{entry}': '{name}' is not a valid hostname"
                )));
            }
            let addr = parse_ip(ip).ok_or_else(|| bad_ip("--add-host", entry, ip))?;
            spec.extra_hosts.push((name.to_string(), addr));
        }
        for ip in dns {
            let addr = parse_ip(ip)
                .ok_or_else(|| ToolError(format!("--dns '{ip}' is not an IPv4 or IPv6 address")))?;
            spec.nameservers.push(addr);
        }
        for domain in dns_search {
            let d = domain.strip_suffix('.').unwrap_or(domain);
            if !valid_hostname(d) {
                return Err(ToolError(format!(
                    "--dns-search '{domain}' is not a valid domain"
                )));
            }
            spec.search.push(d.to_string());
        }
        Ok(spec)
    }

    pub fn hosts(&self) -> String {
        let mut s =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        if let Some(h) = &self.hostname {
            s.push_str(&format!("127.0.1.1\t{h}\n"));
        }
        for (name, ip) in &self.extra_hosts {
            s.push_str(&format!("{ip}\t{name}\n"));
        }
        s
    }

    pub fn hostname_file(&self) -> String {
        format!("{}\n", self.hostname.as_deref().unwrap_or(DEFAULT_HOSTNAME))
    }

    pub fn resolv_conf(&self) -> String {
        let mut s = String::new();
        for ip in &self.nameservers {
            s.push_str(&format!("nameserver {ip}\n"));
        }
        if !self.search.is_empty() {
            s.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        s
    }

    /// Writes the three files under `dir/etc` (both created when missing).
    pub fn write(&self, dir: &Path) -> ToolResult<()> {
        let shown = dir.display();
        std::fs::create_dir_all(dir)
            .map_err(|e| ToolError(format!("cannot create '{shown}': {e}")))?;
        let root = sys::open_dir_path(dir)
            .map_err(|e| ToolError(format!("cannot open '{shown}': {e}")))?;
        match sys::mkdirat(root.as_fd(), OsStr::new("etc"), 0o755) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(ToolError(format!("cannot create '{shown}/etc': {e}"))),
        }
        let etc = sys::openat(
            root.as_fd(),
            OsStr::new("etc"),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| ToolError(format!("cannot open '{shown}/etc' (not a directory?): {e}")))?;
        for (name, text) in [
            ("hosts", self.hosts()),
            ("hostname", self.hostname_file()),
            ("resolv.conf", self.resolv_conf()),
        ] {
            write_file(etc.as_fd(), name, text.as_bytes())
                .map_err(|e| ToolError(format!("cannot write '{shown}/etc/{name}': {e}")))?;
        }
        Ok(())
    }
}

/// Writes `name` in `dir` with mode 0644 through a temporary name and a rename.
fn write_file(dir: BorrowedFd<'_>, name: &str, data: &[u8]) -> Result<(), Errno> {
    let tmp = &temp_name_for(OsStr::new(name));
    let fd = sys::openat(
        dir,
        tmp,
        libc::O_CREAT | libc::O_TRUNC | libc::O_WRONLY,
        0o644,
    )?;
    let mut file = std::fs::File::from(fd);
    let written = file
        .write_all(data)
        .map_err(Errno::from)
        .and_then(|()| sys::fchmod(file.as_fd(), 0o644));
    if let Err(e) = written.and_then(|()| sys::renameat2(dir, tmp, dir, OsStr::new(name), 0)) {
        let _ = sys::unlinkat(dir, tmp, false);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hostnames() {
        assert!(valid_hostname("web"));
        assert!(valid_hostname("db-1.example.com"));
        assert!(valid_hostname("my_host"));
        assert!(!valid_hostname(""));
        assert!(!valid_hostname("-bad"));
        assert!(!valid_hostname("a..b"));
        assert!(!valid_hostname("has space"));
        assert!(!valid_hostname(&"x".repeat(64)));
    }

    #[test]
    fn addresses() {
        assert!(parse_ip("10.0.0.1").is_some());
        assert!(parse_ip("2001:db8::1").is_some());
        assert!(parse_ip("[::1]").is_some());
        assert!(parse_ip("300.1.2.3").is_none());
        assert!(parse_ip("10.0.0").is_none());
        assert!(parse_ip("fe80::1::2").is_none());
    }

    #[test]
    fn renders_all_three_files() {
        let spec = InitLayer::from_flags(
            Some("web"),
            &strings(&["db:10.0.0.2", "v6:2001:db8::5"]),
            &strings(&["1.1.1.1", "2606:4700::1111"]),
            &strings(&["example.com", "corp.example."]),
        )
        .unwrap();
        assert_eq!(
            spec.hosts(),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             127.0.1.1\tweb\n10.0.0.2\tdb\n2001:db8::5\tv6\n"
        );
        assert_eq!(spec.hostname_file(), "web\n");
        assert_eq!(
            spec.resolv_conf(),
            "nameserver 1.1.1.1\nnameserver 2606:4700::1111\nsearch example.com corp.example\n"
        );
    }

    #[test]
    fn bad_values_are_refused_with_one_line() {
        let e = InitLayer::from_flags(None, &strings(&["db:300.1.2.3"]), &[], &[]).unwrap_err();
        assert_eq!(
            e.0,
            "--add-host 'db:300.1.2.3': '300.1.2.3' is not an IPv4 or IPv6 address"
        );
        let e = InitLayer::from_flags(None, &[], &strings(&["8.8.8"]), &[]).unwrap_err();
        assert_eq!(e.0, "--dns '8.8.8' is not an IPv4 or IPv6 address");
        let e = InitLayer::from_flags(None, &strings(&["nocolon"]), &[], &[]).unwrap_err();
        assert_eq!(e.0, "--add-host 'nocolon' is not of the form NAME:IP");
        assert!(InitLayer::from_flags(Some("bad name"), &[], &[], &[]).is_err());
        assert!(InitLayer::from_flags(None, &[], &[], &strings(&["bad domain"])).is_err());
    }
}
