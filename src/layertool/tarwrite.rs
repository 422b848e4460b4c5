//! The bytes of the tar that `commit` writes: one ustar header per entry with fixed fields
//! (no user or group names, no atime/ctime), preceded by a PAX extended header when the
//! entry needs one (long names or link targets, ids or sizes too big for octal, sub-second
//! mtimes, xattrs as `SCHILY.xattr.<name>`), and two zero blocks at the end. Nothing here
//! depends on the time, the host or who runs it, so equal inputs give equal bytes.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tar::{EntryType, Header};

const BLOCK: usize = 512;
/// The largest value an 8-byte octal field holds (uid, gid, mode).
const MAX_OCTAL_8: u64 = 0o7777777;
/// The largest value a 12-byte octal field holds (size, mtime).
const MAX_OCTAL_12: u64 = 0o77777777777;
/// The fixed name of every PAX extended header (readers ignore it).
const PAX_HEADER_NAME: &str = "PaxHeader";

/// What one tar entry says. `path` has no leading or trailing slash; a directory gets its
/// trailing slash here.
pub struct EntryMeta<'a> {
    pub path: &'a [u8],
    pub kind: EntryType,
    /// Permission bits with setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds and nanoseconds since the epoch.
    pub mtime: (i64, i64),
    pub size: u64,
    pub link: Option<&'a [u8]>,
    pub device: Option<(u32, u32)>,
    pub xattrs: &'a [(OsString, Vec<u8>)],
}

pub struct TarWriter<W: Write> {
    out: W,
}

/// A PAX record: `"<len> <key>=<value>\n"`, where `len` counts the whole record.
pub fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while len != base + len.to_string().len() {
        len = base + len.to_string().len();
    }
    let mut rec = format!("{len} ").into_bytes();
    rec.extend_from_slice(key);
    rec.push(b'=');
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

/// A PAX time value: whole seconds, or seconds with a fraction without trailing zeros.
pub fn pax_time(secs: i64, nsec: i64) -> String {
    if nsec == 0 {
        return secs.to_string();
    }
    // -1.25 s is stored as secs -2, nsec 750000000.
    let (sign, s, ns) = if secs < 0 {
        ("-", -(secs + 1), 1_000_000_000 - nsec)
    } else {
        ("", secs, nsec)
    };
    let frac = format!("{ns:09}");
    format!("{sign}{s}.{}", frac.trim_end_matches('0'))
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> TarWriter<W> {
        TarWriter { out }
    }

    /// Writes one entry; `data` must yield exactly `meta.size` bytes for a regular file.
    pub fn append(&mut self, meta: &EntryMeta<'_>, data: &mut dyn Read) -> io::Result<()> {
        let mut pax = Vec::new();
        let mut header = Header::new_ustar();
        header.set_entry_type(meta.kind);

        let mut name = meta.path.to_vec();
        if meta.kind == EntryType::Directory {
            name.push(b'/');
        }
        if header
            .set_path(Path::new(std::ffi::OsStr::from_bytes(&name)))
            .is_err()
        {
            pax.extend(pax_record(b"path", &name));
            let keep = name.len().min(100);
            header.as_old_mut().name[..keep].copy_from_slice(&name[..keep]);
        }

        header.set_mode(meta.mode & 0o7777);
        for (key, value, setter) in [
            ("uid", meta.uid, Header::set_uid as fn(&mut Header, u64)),
            ("gid", meta.gid, Header::set_gid),
        ] {
            if value > MAX_OCTAL_8 {
                pax.extend(pax_record(key.as_bytes(), value.to_string().as_bytes()));
                setter(&mut header, 0);
            } else {
                setter(&mut header, value);
            }
        }

        let (secs, nsec) = meta.mtime;
        let fits = secs >= 0 && (secs as u64) <= MAX_OCTAL_12;
        header.set_mtime(if fits { secs as u64 } else { 0 });
        if !fits || nsec != 0 {
            pax.extend(pax_record(b"mtime", pax_time(secs, nsec).as_bytes()));
        }

        if meta.size > MAX_OCTAL_12 {
            pax.extend(pax_record(b"size", meta.size.to_string().as_bytes()));
            header.set_size(0);
        } else {
            header.set_size(meta.size);
        }

        if let Some(link) = meta.link {
            if link.len() <= 100 {
                header.set_link_name_literal(link)?;
            } else {
                pax.extend(pax_record(b"linkpath", link));
                header.set_link_name_literal(&link[..100])?;
            }
        }
        if let Some((major, minor)) = meta.device {
            header.set_device_major(major)?;
            header.set_device_minor(minor)?;
        }
        for (xname, value) in meta.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(xname.as_bytes());
            pax.extend(pax_record(&key, value));
        }
        header.set_cksum();

        if !pax.is_empty() {
            let mut ph = Header::new_ustar();
            ph.set_entry_type(EntryType::XHeader);
            ph.set_path(PAX_HEADER_NAME)?;
            ph.set_mode(0o644);
            ph.set_uid(0);
            ph.set_gid(0);
            ph.set_mtime(0);
            ph.set_size(pax.len() as u64);
            ph.set_cksum();
            self.out.write_all(ph.as_bytes())?;
            self.write_padded(&mut pax.as_slice(), pax.len() as u64)?;
        }
        self.out.write_all(header.as_bytes())?;
        if meta.kind == EntryType::Regular {
            self.write_padded(data, meta.size)?;
        }
        Ok(())
    }

    /// Copies exactly `size` bytes and pads to a block boundary.
    fn write_padded(&mut self, data: &mut dyn Read, size: u64) -> io::Result<()> {
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file shrank while being read ({copied} of {size} bytes)"),
            ));
        }
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker and hands back the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record(b"path", b"a"), b"9 path=a\n".to_vec());
        // 98 bytes without the length: two digits would make 100, so three are needed.
        let rec = pax_record(b"path", &[b'x'; 91]);
        let len: usize = std::str::from_utf8(&rec[..3]).unwrap().parse().unwrap();
        assert_eq!((len, rec.len(), rec[3]), (101, 101, b' '));
    }

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(5, 0), "5");
        assert_eq!(pax_time(5, 500_000_000), "5.5");
        assert_eq!(pax_time(5, 1), "5.000000001");
        assert_eq!(pax_time(-2, 750_000_000), "-1.25");
    }

    #[test]
    fn entries_are_block_aligned_and_deterministic() {
        let meta = EntryMeta {
            path: b"dir/file",
            kind: EntryType::Regular,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime: (1_700_000_000, 0),
            size: 3,
            link: None,
            device: None,
            xattrs: &[(OsString::from("user.k"), b"v".to_vec())],
        };
        let write = || {
            let mut w = TarWriter::new(Vec::new());
            w.append(&meta, &mut &b"abc"[..]).unwrap();
            w.finish().unwrap()
        };
        let a = write();
        assert_eq!(a, write());
        assert_eq!(a.len() % BLOCK, 0);
        // PAX header + its data block + header + data block + 2 end blocks.
        assert_eq!(a.len(), 6 * BLOCK);
    }
}
