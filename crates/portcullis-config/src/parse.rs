//! serde-saphyr, configured for configs written by people and read by a security
//! proxy: strict booleans, duplicate keys refused, tight budgets against YAML bombs.
//!
//! serde stops at the first error. To still report every error, a failed parse is
//! followed by *probes*: one parse per top-level section, and per item of
//! `providers` and `routes`, each deserializing only its part and skipping the rest
//! with `IgnoredAny`. Every probe reads the whole document, so anchors, aliases and
//! positions are exactly those of the real parse.

use crate::layout::Anchor;
use crate::limits;
use crate::model::{
    AdminConfig, AssertionConfig, AuditConfig, Config, ExtAuthzConfig, LoginConfig, PolicySettings,
    ProviderConfig, RouteConfig, ServerConfig, SharedStateConfig, WorkloadIdentityConfig,
};
use crate::position::Pos;
use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DefaultMessageFormatter, DuplicateKeyPolicy, Error, MessageFormatter};
use std::fmt;
use std::marker::PhantomData;

/// Every top-level key of [`Config`], for the unknown-key message of the probes.
pub(crate) const TOP_LEVEL_KEYS: &[&str] = &[
    "server",
    "admin",
    "providers",
    "workload_identity",
    "login",
    "assertion",
    "shared_state",
    "audit",
    "ext_authz",
    "policy",
    "routes",
];

/// One deserialization error, located in the parsed (interpolated) text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub(crate) pos: Pos,
    pub(crate) message: String,
    /// What `pos` points at, to name the key path in the message.
    pub(crate) anchor: Anchor,
    /// True for errors after which probing is pointless (budgets, alias bombs).
    pub(crate) fatal: bool,
}

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: DuplicateKeyPolicy::Error,
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(limits::MAX_FILE_BYTES),
            max_documents: 1,
            max_depth: limits::MAX_DEPTH,
            max_events: limits::MAX_EVENTS,
            max_nodes: limits::MAX_EVENTS,
            max_aliases: limits::MAX_ALIASES,
            max_anchors: limits::MAX_ALIASES,
            max_recorded_anchor_events: limits::MAX_REPLAYED_EVENTS,
            max_recorded_anchor_bytes: limits::MAX_FILE_BYTES,
            max_total_scalar_bytes: limits::MAX_FILE_BYTES,
            max_merge_keys: limits::MAX_ALIASES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: limits::MAX_REPLAYED_EVENTS,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: limits::MAX_ALIASES,
        },
    }
}

/// Parses the whole config; on failure, returns that error and every other one the
/// probes find (unsorted, possibly with duplicates).
pub(crate) fn parse(
    text: &str,
    top_keys: &[(String, Option<usize>)],
) -> Result<Config, Vec<ParseError>> {
    let first = match serde_saphyr::from_str_with_options::<Config>(text, options()) {
        Ok(config) => return Ok(config),
        Err(e) => translate(&e),
    };
    if first.fatal {
        return Err(vec![first]);
    }
    let mut errors = vec![first];
    for (key, items) in top_keys {
        errors.extend(probe_section(text, key, *items).iter().map(translate));
    }
    Err(errors)
}

/// Probes one top-level section; `items` is the length when it is a sequence.
fn probe_section(text: &str, key: &str, items: Option<usize>) -> Vec<Error> {
    match key {
        "server" => probe::<ServerConfig>(text, key),
        "admin" => probe::<AdminConfig>(text, key),
        "providers" => probe_items::<ProviderConfig>(text, key, items),
        "workload_identity" => probe::<Option<WorkloadIdentityConfig>>(text, key),
        "login" => probe::<Option<LoginConfig>>(text, key),
        "assertion" => probe::<AssertionConfig>(text, key),
        "shared_state" => probe::<Option<SharedStateConfig>>(text, key),
        "audit" => probe::<AuditConfig>(text, key),
        "ext_authz" => probe::<Option<ExtAuthzConfig>>(text, key),
        "policy" => probe::<PolicySettings>(text, key),
        "routes" => probe_items::<RouteConfig>(text, key, items),
        // Unknown top-level keys are reported by the loader from the layout.
        _ => Vec::new(),
    }
}

fn probe<T: DeserializeOwned>(text: &str, key: &str) -> Vec<Error> {
    run_probe(text, key, Whole::<T>(PhantomData))
}

fn probe_items<T: DeserializeOwned>(text: &str, key: &str, items: Option<usize>) -> Vec<Error> {
    match items {
        Some(n) => (0..n)
            .flat_map(|index| {
                run_probe(
                    text,
                    key,
                    Item::<T> {
                        index,
                        item: PhantomData,
                    },
                )
            })
            .collect(),
        None => probe::<Vec<T>>(text, key),
    }
}

fn run_probe<S>(text: &str, key: &str, seed: S) -> Vec<Error>
where
    S: for<'de> DeserializeSeed<'de, Value = ()>,
{
    let root = Root {
        key,
        seed: Some(seed),
    };
    serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        root.deserialize(de)
    })
    .err()
    .into_iter()
    .collect()
}

/// Deserializes one top-level key's value with `seed`, skipping every other key.
struct Root<'k, S> {
    key: &'k str,
    seed: Option<S>,
}

impl<'de, S: DeserializeSeed<'de, Value = ()>> DeserializeSeed<'de> for Root<'_, S> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, S: DeserializeSeed<'de, Value = ()>> Visitor<'de> for Root<'_, S> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match self.seed.take() {
                Some(seed) if key == self.key => map.next_value_seed(seed)?,
                other => {
                    self.seed = other;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Deserializes a `T` and drops it.
struct Whole<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Whole<T> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        T::deserialize(d).map(|_| ())
    }
}

/// Deserializes item `index` of a sequence as a `T`, skipping the others.
struct Item<T> {
    index: usize,
    item: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Item<T> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Item<T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let more = if i == self.index {
                seq.next_element::<T>()?.is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// The error a wrapper (alias use site, snippet) carries.
fn original(mut err: &Error) -> &Error {
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = err {
        err = error;
    }
    err
}

/// Turns a serde-saphyr error into a located message that says what to fix.
fn translate(err: &Error) -> ParseError {
    let pos = err.location().map_or(Pos::START, |l| Pos {
        line: usize::try_from(l.line()).unwrap_or(1),
        column: usize::try_from(l.column()).unwrap_or(1),
    });
    let inner = original(err);
    let mut anchor = Anchor::Value;
    let mut fatal = false;
    let message = match inner {
        Error::SerdeUnknownField {
            field, expected, ..
        } => {
            anchor = Anchor::KeyOfParent;
            format!(
                "unknown key `{field}`: expected one of {}",
                expected.join(", ")
            )
        }
        Error::SerdeMissingField { field, .. } => {
            anchor = Anchor::Container;
            format!("missing required key `{field}`")
        }
        Error::SerdeUnknownVariant {
            variant, expected, ..
        } => format!(
            "unknown value `{variant}`: expected one of {}",
            expected.join(", ")
        ),
        Error::DuplicateMappingKey { key, .. } => {
            anchor = Anchor::KeyOfParent;
            match key {
                Some(k) => format!("duplicate key `{k}`: a key may appear only once in a mapping"),
                None => "duplicate key: a key may appear only once in a mapping".to_string(),
            }
        }
        Error::InvalidBooleanStrict { .. } => {
            "expected `true` or `false` (yes/no/on/off are not booleans here)".to_string()
        }
        Error::Budget { .. } => {
            fatal = true;
            format!(
                "refused: {} (a config is never this large, deep or alias-heavy)",
                DefaultMessageFormatter.format_message(inner)
            )
        }
        Error::AliasReplayLimitExceeded { .. }
        | Error::AliasExpansionLimitExceeded { .. }
        | Error::AliasReplayStackDepthExceeded { .. }
        | Error::AliasReplayCounterOverflow { .. } => {
            fatal = true;
            format!(
                "refused: aliases expand to more than {} nodes (a YAML bomb?)",
                limits::MAX_REPLAYED_EVENTS
            )
        }
        other => {
            let text = DefaultMessageFormatter.format_message(other).into_owned();
            friendlier(&text).unwrap_or(text)
        }
    };
    ParseError {
        pos,
        message,
        anchor,
        fatal,
    }
}

/// Rewords serde's messages for the model's untagged enums, which name Rust types.
fn friendlier(text: &str) -> Option<String> {
    if text.contains("untagged enum Upstreams") {
        Some("expected a URL or a list of URLs".to_string())
    } else if text.contains("untagged enum OneOrMany") {
        Some("expected a string or a list of strings".to_string())
    } else {
        None
    }
}

/// The message for an unknown top-level key, worded exactly as serde's would be so
/// that the same key found by the full parse and by the layout deduplicates.
pub(crate) fn unknown_top_level_key(key: &str) -> String {
    format!(
        "unknown key `{key}`: expected one of {}",
        TOP_LEVEL_KEYS.join(", ")
    )
}
