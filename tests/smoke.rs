//! The harness itself: a mount comes up, serves the lowers, and goes away on drop.
mod common;
use common::*;

#[test]
fn mount_serves_lower_and_unmounts_on_drop() {
    let l = Layers::new(1);
    l.put(0, "hello.txt", "hi\n");
    let mnt = l.mnt.clone();
    {
        let _m = l.mount("");
        assert_eq!(std::fs::read_to_string(l.m("hello.txt")).unwrap(), "hi\n");
    }
    assert!(!is_mounted(&mnt));
}
