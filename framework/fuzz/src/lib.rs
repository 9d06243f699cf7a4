//! Shared code of switchyard's fuzz targets: the checks each target runs
//! and the seed corpus (see `docs/fuzzing.md`).

mod checks;

pub use checks::*;
