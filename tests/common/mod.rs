//! Shared test harness: builds layer dirs in a temp dir, mounts stratafs (the real binary,
//! a real FUSE mount) and unmounts it on Drop, even when the test fails. One module per
//! concern; every test file reaches them all through `common::*`.
#![allow(dead_code)]

pub mod daemon;
pub mod layers;
pub mod mount;
pub mod rng;
pub mod side;
pub mod sys;
pub mod tree;

// Not every test file uses every module.
#[allow(unused_imports)]
pub use {daemon::*, layers::*, mount::*, rng::*, sys::*, tree::*};
