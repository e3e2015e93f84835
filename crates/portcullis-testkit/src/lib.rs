//! Development tools shared by the tests and by `portcullis demo`: an echo upstream
//! that reports exactly what it received, and a development token issuer. No committed keys: everything is made at
//! run time.
#![forbid(unsafe_code)]

pub mod echo;
pub mod issuer;
pub mod token_endpoint;

pub use echo::{EchoUpstream, Seen};
pub use issuer::DevIssuer;
pub use token_endpoint::TokenEndpoint;
