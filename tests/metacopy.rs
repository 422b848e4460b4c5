//! `-o metacopy=on` (issue 3): a metadata change of a lower file copies no data until the
//! first write, reads keep coming from the lower, and the copy completes atomically.
mod common;
use common::*;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn big_lower(l: &Layers) -> Vec<u8> {
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(l.lower(0, "big"), &data).unwrap();
    data
}

#[test]
fn chmod_copies_metadata_only_until_the_first_write() {
    let l = Layers::new(1);
    let data = big_lower(&l);
    let lower_blocks = fs::metadata(l.lower(0, "big")).unwrap().blocks();
    let lo = snapshot(&l.lowers[0]);
    {
        let _m = l.mount("metacopy=on");
        chmod(&l.m("big"), 0o600);
        std::os::unix::fs::chown(l.m("big"), Some(1234), None).unwrap();
        let up = fs::metadata(l.upper.join("big")).unwrap();
        assert_eq!(up.len(), data.len() as u64, "upper copy has the size");
        assert_eq!(up.blocks(), 0, "upper copy holds no data blocks");
        let md = fs::metadata(l.m("big")).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, 0o600);
        assert_eq!(md.uid(), 1234);
        assert_eq!(md.blocks(), lower_blocks, "blocks of the data in the lower");
        assert_eq!(
            fs::read(l.m("big")).unwrap(),
            data,
            "data still read from the lower"
        );
        assert!(
            list_xattr(&l.m("big")).unwrap().is_empty(),
            "private mark hidden (S8)"
        );
    }
    // Across a remount (even without the option) the copy is still metadata-only.
    {
        let _m = l.mount("");
        assert_eq!(fs::read(l.m("big")).unwrap(), data);
        // A read-only handle opened before the data copy-up keeps reading the lower data
        // (S28); every later open sees the write.
        let mut ro = fs::File::open(l.m("big")).unwrap();
        let mut rw = fs::OpenOptions::new().write(true).open(l.m("big")).unwrap();
        rw.seek(SeekFrom::Start(100)).unwrap();
        rw.write_all(b"WRITTEN").unwrap();
        rw.sync_all().unwrap();
        let mut expect = data.clone();
        expect[100..107].copy_from_slice(b"WRITTEN");
        let mut got = Vec::new();
        ro.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), data.len());
        assert!(
            got == data,
            "the earlier read-only handle reads the lower data"
        );
        assert_eq!(fs::read(l.m("big")).unwrap(), expect);
        let up = fs::metadata(l.upper.join("big")).unwrap();
        assert!(up.blocks() > 0, "data copied into the upper");
        assert!(get_xattr(&l.upper.join("big"), "trusted.stratafs.metacopy").is_err());
        assert_eq!(
            fs::metadata(l.m("big")).unwrap().permissions().mode() & 0o7777,
            0o600
        );
    }
    assert_same_tree("lower", &lo, &snapshot(&l.lowers[0]));
}

#[test]
fn commit_refuses_a_metadata_only_copy_and_truncate_completes_it() {
    let l = Layers::new(1);
    big_lower(&l);
    {
        let _m = l.mount("metacopy=on");
        set_xattr(&l.m("big"), "user.tag", b"v").unwrap();
    }
    let tar = l.tmp.path().join("layer.tar");
    let commit = [
        "commit",
        l.upper.to_str().unwrap(),
        "--output",
        tar.to_str().unwrap(),
    ];
    let err = stratafs_refuses(&commit);
    assert!(err.contains("metadata-only"), "{err}");
    {
        let _m = l.mount("metacopy=on");
        // Truncating to zero drops the mark without copying data.
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(l.m("big"))
            .unwrap();
        assert_eq!(fs::metadata(l.m("big")).unwrap().len(), 0);
        assert_eq!(get_xattr(&l.m("big"), "user.tag").unwrap(), b"v");
    }
    stratafs_ok(&commit);
}
