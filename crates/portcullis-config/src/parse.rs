//! serde-saphyr, configured for configs written by people and read by a security
//! proxy: strict booleans, duplicate keys refused, tight budgets against YAML bombs.
//!
//! serde stops at the first error. To still report every error, a failed parse is
//! followed by *probes*: one parse per top-level section, and per item of
//! `providers` and `routes`, each deserializing only its part and skipping the rest
//! with `IgnoredAny`. Every probe reads the whole document, so anchors, aliases and
//! positions are exactly those of the real parse. What the probes do parse is kept,
//! so semantic validation can run on it as well.

use crate::layout::Anchor;
use crate::limits;
use crate::model::Config;
use crate::position::Pos;
use crate::validate::Scope;
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
    "telemetry",
    "credentials",
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

/// What could still be read from a config that failed to parse: the sections and
/// items that deserialized on their own, so that semantic checks can run on them too.
pub(crate) struct Partial {
    pub(crate) config: Config,
    pub(crate) scope: Scope,
}

/// Parses the whole config. On failure, returns that error and every other one the
/// probes find (unsorted, possibly with duplicates), and what did parse.
pub(crate) fn parse(
    text: &str,
    top_keys: &[(String, Option<usize>)],
) -> Result<Config, (Vec<ParseError>, Option<Box<Partial>>)> {
    let first = match serde_saphyr::from_str_with_options::<Config>(text, options()) {
        Ok(config) => return Ok(config),
        Err(e) => translate(&e),
    };
    if first.fatal {
        return Err((vec![first], None));
    }
    let mut probes = Probes {
        text,
        errors: vec![first],
        scope: Scope::default(),
        stopped: false,
    };
    let mut config = Config::default();
    for (key, items) in top_keys {
        let key = key.as_str();
        match key {
            "server" => probes.section(key, &mut config.server),
            "admin" => probes.section(key, &mut config.admin),
            "providers" => {
                config.providers = probes.items(key, *items, |s, i| s.provider_index.push(i))
            }
            "workload_identity" => probes.section(key, &mut config.workload_identity),
            "login" => probes.section(key, &mut config.login),
            "assertion" => probes.section(key, &mut config.assertion),
            "shared_state" => probes.section(key, &mut config.shared_state),
            "audit" => probes.section(key, &mut config.audit),
            "ext_authz" => probes.section(key, &mut config.ext_authz),
            "policy" => probes.section(key, &mut config.policy),
            "credentials" => probes.section(key, &mut config.credentials),
            "routes" => config.routes = probes.items(key, *items, |s, i| s.route_index.push(i)),
            // Unknown top-level keys are reported by the loader from the layout.
            _ => {}
        }
    }
    let partial = Partial {
        config,
        scope: probes.scope,
    };
    Err((probes.errors, Some(Box::new(partial))))
}

/// Runs probes, collecting their errors and which sections failed.
struct Probes<'t> {
    text: &'t str,
    errors: Vec<ParseError>,
    scope: Scope,
    /// Set by a fatal error (a budget breach): every further probe would hit it again.
    stopped: bool,
}

impl Probes<'_> {
    fn fail(&mut self, key: &str, error: &Error) {
        let error = translate(error);
        self.stopped |= error.fatal;
        self.errors.push(error);
        self.scope.failed.push(key.to_string());
    }

    /// Probes a whole section into `slot`; a failed section keeps its default.
    fn section<T: DeserializeOwned>(&mut self, key: &str, slot: &mut T) {
        if self.stopped {
            self.scope.failed.push(key.to_string());
            return;
        }
        match run_probe(self.text, key, Whole::<T>(PhantomData)) {
            Ok(Some(value)) => *slot = value,
            Ok(None) => {}
            Err(e) => self.fail(key, &e),
        }
    }

    /// Probes each of `items` items of a sequence section; returns those that parsed
    /// and records their original indices with `record`.
    fn items<T: DeserializeOwned>(
        &mut self,
        key: &str,
        items: Option<usize>,
        record: impl Fn(&mut Scope, usize),
    ) -> Vec<T> {
        let mut parsed = Vec::new();
        if self.stopped {
            self.scope.failed.push(key.to_string());
            return parsed;
        }
        let Some(n) = items else {
            // Not a sequence: probing it whole reports the type error.
            match run_probe(self.text, key, Whole::<Vec<T>>(PhantomData)) {
                Ok(Some(all)) => {
                    for (i, item) in all.into_iter().enumerate() {
                        record(&mut self.scope, i);
                        parsed.push(item);
                    }
                }
                Ok(None) => {}
                Err(e) => self.fail(key, &e),
            }
            return parsed;
        };
        // One parse per failing item, not per item: each run deserializes items from
        // `from` on, keeping those that parse, and stops at the first that does not;
        // the next run starts after it.
        let mut found: Vec<(usize, T)> = Vec::new();
        let mut from = 0;
        let mut previous: Option<ParseError> = None;
        while from < n && !self.stopped {
            let before = found.len();
            let seed = ItemsFrom {
                from,
                found: &mut found,
            };
            let error = match run_probe(self.text, key, seed) {
                Ok(_) => break,
                Err(e) => translate(&e),
            };
            // An error outside the items (the same one again, with no item read) would
            // repeat for every start: stop instead of re-parsing n times.
            let repeated = found.len() == before && previous.as_ref() == Some(&error);
            self.stopped |= error.fatal;
            self.scope.failed.push(key.to_string());
            if repeated {
                break;
            }
            self.errors.push(error.clone());
            previous = Some(error);
            let failing = match found.last() {
                Some((last, _)) if found.len() > before => last + 1,
                _ => from,
            };
            from = failing + 1;
        }
        for (index, item) in found {
            record(&mut self.scope, index);
            parsed.push(item);
        }
        parsed
    }
}

/// Parses the document, handing the value of top-level `key` to `seed`.
fn run_probe<S, V>(text: &str, key: &str, seed: S) -> Result<Option<V>, Error>
where
    S: for<'de> DeserializeSeed<'de, Value = V>,
{
    let root = Root {
        key,
        seed: Some(seed),
    };
    serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
        root.deserialize(de)
    })
}

/// Deserializes one top-level key's value with `seed`, skipping every other key.
struct Root<'k, S> {
    key: &'k str,
    seed: Option<S>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Root<'_, S> {
    type Value = Option<S::Value>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Root<'_, S> {
    type Value = Option<S::Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            match self.seed.take() {
                Some(seed) if key == self.key => found = Some(map.next_value_seed(seed)?),
                other => {
                    self.seed = other;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// Deserializes a `T`.
struct Whole<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Whole<T> {
    type Value = T;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::deserialize(d)
    }
}

/// Deserializes the items of a sequence from index `from` on into `found`, skipping
/// those before. Items stay in `found` when a later one fails.
struct ItemsFrom<'v, T> {
    from: usize,
    found: &'v mut Vec<(usize, T)>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for ItemsFrom<'_, T> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for ItemsFrom<'_, T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            if i < self.from {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    return Ok(());
                }
            } else {
                match seq.next_element::<T>()? {
                    Some(item) => self.found.push((i, item)),
                    None => return Ok(()),
                }
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
        Error::Unexpected { expected, .. } => match *expected {
            "mapping start" => "expected a mapping (`key: value` entries)".to_string(),
            "sequence start" => "expected a list (`- item` lines or `[a, b]`)".to_string(),
            "string scalar" | "scalar" => {
                "expected a single value, not a list or mapping".to_string()
            }
            other => format!("expected {other}"),
        },
        Error::InvalidScalar { ty, .. } => format!("expected {}", scalar_kind(ty)),
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

/// Names a Rust scalar type the way a config author thinks of it.
fn scalar_kind(ty: &str) -> String {
    match ty {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number".to_string(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".to_string(),
        "f32" | "f64" | "floating point" => "a number".to_string(),
        "boolean" => "`true` or `false`".to_string(),
        other => format!("a value of type {other}"),
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
