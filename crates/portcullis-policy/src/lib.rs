//! Portcullis's decision core: given the facts of a request and a verified
//! [`Identity`](portcullis_core::Identity), which route does it belong to and may the
//! caller make it?
//!
//! Pure functions only — no I/O, no async — so every front end (reverse proxy,
//! forward-auth, ext_authz, `portcullis explain`) asks the same question the same way:
//!
//! 1. [`RouteTable::normalize`] the raw path once (SPEC §5); the upstream receives
//!    exactly [`NormalizedPath::as_str`] plus the original query;
//! 2. [`RouteTable::find`] the first route whose `match` fits (compiled once per
//!    config load by [`RouteTable::compile`]);
//! 3. [`CompiledRoute::evaluate`] its policy into a [`Decision`] (or call
//!    [`RouteTable::decide`] for both steps);
//! 4. render it: [`Decision::explain_text`], [`Decision::caller_message`],
//!    [`Decision::html_page`], or serialize it to JSON.
#![forbid(unsafe_code)]

mod bytes;
mod claim_path;
pub mod decision;
pub mod explain;
pub mod glob;
pub mod path;
pub mod routes;
pub mod rules;

#[cfg(test)]
mod testutil;

pub use decision::{
    Basis, Combine, ConditionTrace, Decision, Outcome, RequestFacts, RuleList, RuleRef, RuleTrace,
};
pub use explain::{clean, html_escape};
pub use glob::Glob;
pub use path::{normalize, normalize_with, split_query, NormalizedPath, PathError, PathOptions};
pub use routes::{canonical_host, host_matches, CompiledRoute, RouteTable};
pub use rules::{CompiledPolicy, CompiledRule};
