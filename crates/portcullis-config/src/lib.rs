//! Portcullis configuration: the YAML schema of SPEC §2 ([`model`]), human units
//! ([`units`]), and the loader that turns a file into a validated [`Config`] or a
//! list of `FILE:LINE:COL: message` errors ([`load_file`], [`load_str`]). No network,
//! no async.
//!
//! Loading goes: read (size-capped) → walk the YAML events once to learn where every
//! key and value is (`layout`) → replace `${NAME}` (`interpolate`) → deserialize
//! with serde-saphyr (`parse`, strict booleans, duplicate keys refused, YAML-bomb
//! budgets; on failure every section is probed so all errors are reported) →
//! semantic checks (`validate`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod claim_path;
mod diagnostic;
mod interpolate;
mod layout;
mod limits;
mod load;
mod locate;
pub mod model;
mod parse;
mod path;
mod position;
pub mod units;
mod validate;

pub use claim_path::parse_claim_path;
pub use diagnostic::{ConfigErrors, Diagnostic};
pub use load::{load_file, load_str, Loaded};
pub use locate::{is_config_path, locate};
pub use model::*;
pub use units::{ByteSize, Duration};
pub use validate::{compile_path_regex, parse_cidr};
