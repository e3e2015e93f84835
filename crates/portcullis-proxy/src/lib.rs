//! Portcullis data plane: the listener (TCP/TLS, HTTP/1.1 + HTTP/2), the request
//! pipeline, the upstream client, the proxy's own endpoints, the admin listener,
//! metrics and the audit log.
#![forbid(unsafe_code)]
// `Refusal` (respond.rs) is the error of every judging step and grew past
// clippy's 128 bytes with login's fields; it is built on the refusal path only,
// where a move of ~150 bytes is nothing next to writing the answer.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod audit;
// Public only for the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub mod audit_line;
pub mod authority;
pub mod body;
pub mod conn;
pub mod endpoints;
pub mod ext_authz;
pub mod forward;
pub mod forward_auth;
pub mod judge;
pub mod listener;
pub mod login;
pub mod mcp;
pub mod metrics;
pub mod pipeline;
pub mod propagate;
pub mod ratelimit;
pub mod record;
pub mod request_meta;
pub mod respond;
pub mod runtime;
mod scan;
pub mod server;
pub mod shared_state;
pub mod state;
mod sync;
pub mod telemetry;
pub mod tls;
pub mod upstream_auth;
pub mod workers;

pub use server::Server;
