//! fuse-overlayfs' `uidmapping=` / `gidmapping=`: the owners stored in the layers and
//! the owners the mount shows are related by ranges `STORED:SHOWN:LEN` (an id `STORED+k`
//! on disk shows as `SHOWN+k`, for k < LEN). Shown ids that callers give (the creator of a
//! new object, a chown, the ids inside an ACL) are stored back through the same ranges.
//! An id outside every range becomes the kernel's overflow id, in both directions, as in
//! fuse-overlayfs; without ranges ids pass unchanged. Pure logic.

/// One range of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub stored: u32,
    pub shown: u32,
    pub len: u32,
}

/// Parses `STORED:SHOWN:LEN[:STORED:SHOWN:LEN...]` (the value of option `opt`).
pub fn parse_ranges(opt: &str, value: &str) -> Result<Vec<IdRange>, String> {
    let bad =
        || format!("option '{opt}' takes ID:MAPPED_ID:LENGTH triples joined by ':', not '{value}'");
    let nums: Vec<u32> = value
        .split(':')
        .map(|n| n.parse::<u32>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if nums.is_empty() || !nums.len().is_multiple_of(3) {
        return Err(bad());
    }
    nums.chunks_exact(3)
        .map(|t| {
            let r = IdRange {
                stored: t[0],
                shown: t[1],
                len: t[2],
            };
            let fits = |start: u32| start.checked_add(r.len - 1).is_some();
            if r.len == 0 || !fits(r.stored) || !fits(r.shown) {
                return Err(format!(
                    "option '{opt}': range {}:{}:{} is empty or passes the last id",
                    r.stored, r.shown, r.len
                ));
            }
            Ok(r)
        })
        .collect()
}

/// A mapping of one kind of id (user or group).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    ranges: Vec<IdRange>,
    overflow: u32,
}

impl IdMap {
    /// `ranges` empty: the identity. Where ranges overlap, the last given wins.
    pub fn new(ranges: Vec<IdRange>, overflow: u32) -> IdMap {
        IdMap { ranges, overflow }
    }

    pub fn is_identity(&self) -> bool {
        self.ranges.is_empty()
    }

    fn map(&self, id: u32, from: fn(&IdRange) -> u32, to: fn(&IdRange) -> u32) -> u32 {
        if self.is_identity() {
            return id;
        }
        self.ranges
            .iter()
            .rev()
            .find(|r| id >= from(r) && id - from(r) < r.len)
            .map_or(self.overflow, |r| to(r) + (id - from(r)))
    }

    /// The id the mount shows for an id stored in a layer.
    pub fn to_shown(&self, stored: u32) -> u32 {
        self.map(stored, |r| r.stored, |r| r.shown)
    }

    /// The id stored for an id a caller gives.
    pub fn to_stored(&self, shown: u32) -> u32 {
        self.map(shown, |r| r.shown, |r| r.stored)
    }
}

/// The user and group mappings of a mount, with what they rewrite inside xattr values.
#[derive(Clone, Debug, Default)]
pub struct IdMaps {
    pub uids: IdMap,
    pub gids: IdMap,
}

/// `security.capability` of revision 3 (VFS_CAP_REVISION_3, 24 bytes) ends with the
/// owner the capabilities are valid for (rootid).
const CAP_REVISION_3: u32 = 0x0300_0000;
const CAP_V3_LEN: usize = 24;
const CAP_XATTR: &str = "security.capability";

impl IdMaps {
    pub fn is_identity(&self) -> bool {
        self.uids.is_identity() && self.gids.is_identity()
    }

    /// An xattr value as the mount shows it: the ids inside ACLs and a v3 capability's
    /// rootid mapped from stored to shown. None: the value shows unchanged.
    pub fn shown_xattr(&self, name: &str, value: &[u8]) -> Option<Vec<u8>> {
        self.rewrite(
            name,
            value,
            |u| self.uids.to_shown(u),
            |g| self.gids.to_shown(g),
        )
    }

    /// An xattr value a caller sets, with its ids mapped from shown to stored.
    pub fn stored_xattr(&self, name: &str, value: &[u8]) -> Option<Vec<u8>> {
        self.rewrite(
            name,
            value,
            |u| self.uids.to_stored(u),
            |g| self.gids.to_stored(g),
        )
    }

    fn rewrite(
        &self,
        name: &str,
        value: &[u8],
        uid: impl Fn(u32) -> u32,
        gid: impl Fn(u32) -> u32,
    ) -> Option<Vec<u8>> {
        if self.is_identity() {
            return None;
        }
        if name == crate::acl::ACCESS_XATTR || name == crate::acl::DEFAULT_XATTR {
            return crate::acl::Acl::parse(value).map(|a| a.map_ids(uid, gid).to_bytes());
        }
        let is_v3_cap = name == CAP_XATTR
            && value.len() == CAP_V3_LEN
            && u32::from_le_bytes([value[0], value[1], value[2], value[3]]) & 0xff00_0000
                == CAP_REVISION_3;
        if is_v3_cap {
            let mut v = value.to_vec();
            let rootid = u32::from_le_bytes([v[20], v[21], v[22], v[23]]);
            v[20..24].copy_from_slice(&uid(rootid).to_le_bytes());
            return Some(v);
        }
        None
    }
}

/// The kernel's overflow id for users (`group`: for groups), shown for unmapped ids.
pub fn kernel_overflow_id(group: bool) -> u32 {
    let file = if group {
        "/proc/sys/kernel/overflowgid"
    } else {
        "/proc/sys/kernel/overflowuid"
    };
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65534)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_triples_and_refuses_bad_values() {
        assert_eq!(
            parse_ranges("uidmapping", "0:1000:1:1:100000:65536").unwrap(),
            vec![
                IdRange {
                    stored: 0,
                    shown: 1000,
                    len: 1
                },
                IdRange {
                    stored: 1,
                    shown: 100000,
                    len: 65536
                }
            ]
        );
        for bad in [
            "",
            "0:1",
            "0:1:2:3",
            "a:1:1",
            "0:0:0",
            "4294967295:0:2",
            "-1:0:1",
        ] {
            assert!(parse_ranges("uidmapping", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn maps_both_ways_with_overflow_and_last_range_winning() {
        let m = IdMap::new(parse_ranges("u", "0:1000:1:1:100000:10").unwrap(), 65534);
        assert_eq!(m.to_shown(0), 1000);
        assert_eq!(m.to_shown(5), 100004);
        assert_eq!(m.to_shown(11), 65534);
        assert_eq!(m.to_stored(1000), 0);
        assert_eq!(m.to_stored(100009), 10);
        assert_eq!(m.to_stored(0), 65534);
        let overlapping = IdMap::new(parse_ranges("u", "0:10:5:2:50:1").unwrap(), 7);
        assert_eq!(overlapping.to_shown(2), 50);
        assert_eq!(overlapping.to_shown(3), 13);
        let none = IdMap::default();
        assert_eq!((none.to_shown(42), none.to_stored(42)), (42, 42));
    }

    #[test]
    fn acl_entries_and_capability_rootid_are_mapped() {
        let maps = IdMaps {
            uids: IdMap::new(parse_ranges("u", "0:1000:10").unwrap(), 65534),
            gids: IdMap::new(parse_ranges("g", "0:2000:10").unwrap(), 65534),
        };
        // user::rw-, user:3:r--, group::r--, group:4:rw-, mask::rw-, other::---
        let entries = [
            (0x01, 6, u32::MAX),
            (0x02, 4, 3),
            (0x04, 4, u32::MAX),
            (0x08, 6, 4),
            (0x10, 6, u32::MAX),
            (0x20, 0, u32::MAX),
        ];
        let acl = crate::acl::Acl(
            entries
                .iter()
                .map(|&(tag, perm, id)| crate::acl::Entry { tag, perm, id })
                .collect(),
        );
        let shown = maps
            .shown_xattr(crate::acl::ACCESS_XATTR, &acl.to_bytes())
            .unwrap();
        let ids: Vec<u32> = crate::acl::Acl::parse(&shown)
            .unwrap()
            .0
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(
            ids,
            vec![u32::MAX, 1003, u32::MAX, 2004, u32::MAX, u32::MAX]
        );
        let back = maps.stored_xattr(crate::acl::ACCESS_XATTR, &shown).unwrap();
        assert_eq!(back, acl.to_bytes());
        let mut cap = vec![0u8; CAP_V3_LEN];
        cap[0..4].copy_from_slice(&(CAP_REVISION_3 | 1).to_le_bytes());
        cap[20..24].copy_from_slice(&5u32.to_le_bytes());
        let shown = maps.shown_xattr(CAP_XATTR, &cap).unwrap();
        assert_eq!(u32::from_le_bytes(shown[20..24].try_into().unwrap()), 1005);
        assert_eq!(maps.shown_xattr("user.x", b"abc"), None);
        assert_eq!(
            IdMaps::default().shown_xattr(crate::acl::ACCESS_XATTR, &acl.to_bytes()),
            None
        );
    }
}
