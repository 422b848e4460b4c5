//! The daemon's modules that the fuzz targets drive, from the stratafs library itself: the
//! `-o` parser (`options`) and the layer tools (`layertool`, with the modules they use).
//! A change in src/ is fuzzed as soon as it is made.

pub use stratafs::{layertool, options, sys, whiteout};

/// A message fit for one line of stderr: no line breaks inside.
pub fn one_line(msg: &str) -> bool {
    !msg.contains('\n') && !msg.contains('\r')
}
