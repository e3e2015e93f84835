//! Development tools shared by the tests and by `portcullis demo`: an echo upstream
//! that reports exactly what it received. No committed keys: everything is made at
//! run time.
#![forbid(unsafe_code)]

pub mod echo;

pub use echo::{EchoUpstream, Seen};
