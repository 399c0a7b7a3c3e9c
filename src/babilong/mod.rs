//! BABILong: bAbI tasks (the real files and built-in generators), haystack text, the sample builder, evaluation.

pub mod babi;
pub mod depth;
pub mod eval;
pub mod generate;
pub mod haystack;
pub mod plot;
pub mod raster;
pub mod sample;
pub mod solver;
