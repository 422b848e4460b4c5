//! stratafs: a union filesystem in userspace. The library holds everything; the binary
//! (main.rs) is the command line. Dependencies run one way: the FUSE adapter
//! (`fuse_adapter`) calls the union logic (`union`), which reaches the layers through
//! `sys`, the only module with `unsafe`; `daemon` puts a mount together, `layertool`
//! holds the commands that work on layer dirs without a mount (with the union's merge of
//! layers where they need one).

// `unsafe` and raw syscalls live in `sys` alone, behind safe wrappers.
#![deny(unsafe_code)]

pub mod acl;
pub mod daemon;
pub mod fuse_adapter;
pub mod fusermount;
pub mod idmap;
pub mod iomode;
pub mod layers;
pub mod layertool;
pub mod logging;
pub mod mount_helper;
pub mod options;
pub mod override_stat;
pub mod private_xattrs;
pub mod stats;
#[allow(unsafe_code)]
pub mod sys;
pub mod text;
pub mod union;
pub mod whiteout;
