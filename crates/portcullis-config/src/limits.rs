//! Resource limits for reading a config: a config is a few kilobytes written by a
//! person, so anything far beyond that is refused before it can cost memory or time
//! (YAML bombs, deep nesting, giant files).

/// Largest config file accepted, in bytes.
pub(crate) const MAX_FILE_BYTES: usize = 2 * 1024 * 1024;
/// Deepest nesting of mappings and sequences.
pub(crate) const MAX_DEPTH: usize = 16;
/// Most YAML events (nodes, starts and ends) in one document.
pub(crate) const MAX_EVENTS: usize = 100_000;
/// Most alias (`*name`) uses.
pub(crate) const MAX_ALIASES: usize = 1_000;
/// Most events that alias expansion may replay in total: this is what stops a
/// billion-laughs document, whose size is tiny but whose expansion is exponential.
pub(crate) const MAX_REPLAYED_EVENTS: usize = 20_000;
/// Longest `path_regex`, in bytes.
pub(crate) const MAX_REGEX_LEN: usize = 1_024;
/// Most memory one compiled `path_regex` may use.
pub(crate) const MAX_REGEX_SIZE: usize = 256 * 1024;
