//! The daemon's modules that the fuzz targets drive, compiled from the daemon's own source
//! files: the `-o` parser (`options`) and the layer tools (`layertool`, with the modules
//! they use). Nothing here is a copy; a change in src/ is fuzzed as soon as it is made.
#![allow(dead_code, unused_imports, clippy::all)]

#[path = "../../src/options.rs"]
pub mod options;
#[path = "../../src/sys.rs"]
pub mod sys;
#[path = "../../src/whiteout.rs"]
pub mod whiteout;
#[path = "../../src/layertool/mod.rs"]
pub mod layertool;

/// A message fit for one line of stderr: no line breaks inside.
pub fn one_line(msg: &str) -> bool {
    !msg.contains('\n') && !msg.contains('\r')
}
