//! Portcullis configuration: the YAML schema of SPEC §2 ([`model`]), human units
//! ([`units`]), and the loader that turns a file into a validated [`Config`] or a
//! list of `FILE:LINE:COL: message` errors. No network, no async.
#![forbid(unsafe_code)]

pub mod model;
pub mod units;

pub use model::*;
pub use units::{ByteSize, Duration};
