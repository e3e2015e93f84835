//! Semantic validation of a deserialized [`Config`]: everything serde cannot see
//! (address syntax, URL shapes, regexes, file paths, cross-references), each error
//! reported at the offending value. No network, ever: `portcullis check` must give
//! the same answer on a laptop as in the cluster.

mod checks;
mod credentials;
mod identity;
mod routes;
mod rules;
mod server;
mod url;

pub use checks::{cidr as parse_cidr, path_regex as compile_path_regex};

use crate::diagnostic::Diagnostic;
use crate::layout::Layout;
use crate::model::Config;
use crate::path::KeyPath;
use crate::position::{LineIndex, Pos};
use std::fmt::Display;

/// Which parts of the config are present, for validating a partially parsed one:
/// entries of `config.providers`/`config.routes` keep their file index, and checks
/// that need a section that failed to parse are skipped rather than misreported.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    /// File index of each entry of `config.providers`.
    pub(crate) provider_index: Vec<usize>,
    /// File index of each entry of `config.routes`.
    pub(crate) route_index: Vec<usize>,
    /// Top-level sections that (partly) failed to parse.
    pub(crate) failed: Vec<String>,
}

impl Scope {
    /// The scope of a config that parsed completely.
    pub(crate) fn complete(config: &Config) -> Self {
        Scope {
            provider_index: (0..config.providers.len()).collect(),
            route_index: (0..config.routes.len()).collect(),
            failed: Vec::new(),
        }
    }

    /// True when the whole of top-level `section` parsed.
    pub(crate) fn parsed(&self, section: &str) -> bool {
        !self.failed.iter().any(|s| s == section)
    }
}

/// Collects errors and warnings, placing each at a key path's position in the file.
pub(crate) struct Report<'a> {
    pub(crate) scope: Scope,
    file: &'a str,
    text: &'a str,
    lines: &'a LineIndex,
    layout: &'a Layout,
    pub(crate) errors: Vec<Diagnostic>,
    pub(crate) warnings: Vec<Diagnostic>,
}

impl<'a> Report<'a> {
    pub(crate) fn new(
        scope: Scope,
        file: &'a str,
        text: &'a str,
        lines: &'a LineIndex,
        layout: &'a Layout,
    ) -> Self {
        Report {
            scope,
            file,
            text,
            lines,
            layout,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn diagnostic(
        &self,
        offset: Option<usize>,
        path: &KeyPath,
        message: impl Display,
    ) -> Diagnostic {
        let pos = offset.map_or(Pos::START, |o| self.lines.pos(self.text, o));
        let message = if path.is_root() {
            message.to_string()
        } else {
            format!("{path}: {message}")
        };
        Diagnostic::new(self.file, pos.line, pos.column, message)
    }

    /// An error at the value of `path` (or its nearest ancestor in the file).
    pub(crate) fn error(&mut self, path: &KeyPath, message: impl Display) {
        let d = self.diagnostic(self.layout.value_offset(path), path, message);
        self.errors.push(d);
    }

    /// An error at the key of `path`: for problems with the key itself.
    pub(crate) fn error_at_key(&mut self, path: &KeyPath, message: impl Display) {
        let d = self.diagnostic(self.layout.key_offset(path), path, message);
        self.errors.push(d);
    }

    /// True when `path` is written in the file (rather than defaulted).
    pub(crate) fn is_written(&self, path: &KeyPath) -> bool {
        self.layout.node(path).is_some()
    }

    /// A warning at the value of `path`: the config works, but probably not as meant.
    pub(crate) fn warn(&mut self, path: &KeyPath, message: impl Display) {
        let d = self.diagnostic(self.layout.value_offset(path), path, message);
        self.warnings.push(d);
    }
}

/// Runs every semantic check on `config`.
pub(crate) fn validate(config: &Config, report: &mut Report<'_>) {
    let root = KeyPath::root();
    server::validate(config, &root, report);
    identity::validate(config, &root, report);
    routes::validate(config, &root, report);
    credentials::validate(config, &root, report);
}

/// A duration setting that must not be zero.
pub(crate) fn nonzero(report: &mut Report<'_>, path: &KeyPath, value: crate::units::Duration) {
    if value.get().is_zero() {
        report.error(path, "must be greater than 0");
    }
}
