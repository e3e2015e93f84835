//! Helpers shared by the unit tests: configs from JSON, identities, request facts.

use crate::{normalize, NormalizedPath, RouteTable};
use portcullis_config::Config;
use portcullis_core::{Identity, IdentityKind};
use std::sync::Arc;

/// A config from a JSON value (the config types are plain serde types).
pub fn config(v: serde_json::Value) -> Config {
    serde_json::from_value(v).unwrap()
}

/// A compiled table from the JSON of `routes`.
pub fn table(routes: serde_json::Value) -> RouteTable {
    RouteTable::compile(&config(serde_json::json!({ "routes": routes }))).unwrap()
}

pub fn path(p: &str) -> NormalizedPath {
    normalize(p, false).unwrap()
}

/// A signed-in user with the given groups and scopes.
pub fn user(sub: &str, groups: &[&str], scopes: &[&str]) -> Identity {
    Identity {
        kind: IdentityKind::User,
        subject: sub.to_string(),
        provider: Some("idp".to_string()),
        issuer: Some("https://idp.example.com".to_string()),
        groups: groups.iter().map(|s| s.to_string()).collect(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        claims: Arc::new(serde_json::json!({"sub": sub})),
        ..Identity::default()
    }
}
