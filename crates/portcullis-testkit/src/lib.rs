//! Development tools shared by the tests and by `portcullis demo`: an echo upstream
//! that reports exactly what it received, a development token issuer, and a real
//! `redis-server` for the shared-state tests. No committed keys: everything is made at
//! run time.
#![forbid(unsafe_code)]

pub mod authorize;
pub mod echo;
pub mod introspection;
pub mod issuer;
pub mod redis_server;
pub mod token_endpoint;

pub use echo::{EchoUpstream, Seen};
pub use introspection::IntrospectionEndpoint;
pub use issuer::DevIssuer;
pub use redis_server::RedisServer;
pub use token_endpoint::TokenEndpoint;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Locks `m`, also after a panic in another test thread (the state is a
/// test double's: a half-made change is still worth reading).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
