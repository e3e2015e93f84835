//! The loader: file → text → layout → `${NAME}` interpolation → serde → validation,
//! with every problem turned into a `FILE:LINE:COL: message` [`Diagnostic`].

use crate::diagnostic::{ConfigErrors, Diagnostic};
use crate::interpolate::interpolate;
use crate::layout::{walk, Layout};
use crate::limits;
use crate::model::Config;
use crate::parse::{parse, unknown_top_level_key, ParseError, TOP_LEVEL_KEYS};
use crate::path::KeyPath;
use crate::position::{LineIndex, Pos, SourceMap};
use crate::validate::{validate, Report, Scope};
use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

/// A config that parsed and validated, with the warnings worth showing (settings
/// that work but probably not as meant, such as a route that denies everything).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Non-fatal findings, in file order.
    pub warnings: Vec<Diagnostic>,
}

/// Reads and validates the config at `path`, taking `${NAME}` values from the
/// process environment. A file that cannot be read is one diagnostic at `1:1`.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    let file = path.display().to_string();
    let text =
        read(path).map_err(|message| ConfigErrors(vec![Diagnostic::new(&file, 1, 1, message)]))?;
    load_str(&text, &file, &|name| {
        std::env::var_os(name).and_then(|v| v.into_string().ok())
    })
}

/// Reads at most [`limits::MAX_FILE_BYTES`] (plus one, to notice a bigger file).
fn read(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(limits::MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > limits::MAX_FILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "cannot read: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

fn too_large() -> String {
    format!(
        "refused: the file is larger than {} MiB; a config is never that large",
        limits::MAX_FILE_BYTES / (1024 * 1024)
    )
}

/// Parses and validates config `text`. `file_name` is used in diagnostics; `env`
/// resolves `${NAME}` (return `None` for an unset variable).
pub fn load_str(
    text: &str,
    file_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    // granit-parser skips a BOM; dropping it here keeps columns on line 1 right.
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let lines = LineIndex::new(text);
    let at = |offset: usize, message: String| {
        let pos = lines.pos(text, offset);
        Diagnostic::new(file_name, pos.line, pos.column, message)
    };
    if text.len() > limits::MAX_FILE_BYTES {
        return Err(ConfigErrors(vec![at(0, too_large())]));
    }
    let layout = walk(text).map_err(|e| {
        let message = with_flow_hint(text, &lines, e.offset, e.message);
        ConfigErrors(vec![at(e.offset, message)])
    })?;
    if layout.empty {
        return Err(ConfigErrors(vec![at(
            0,
            "the config is empty: start from the minimal config in the docs (server, providers, routes)"
                .to_string(),
        )]));
    }
    let interpolated = interpolate(text, &layout, env);
    // A value whose `${NAME}` failed is parsed as written; whatever else is reported
    // at that value is a consequence, not news, and sections holding one are treated
    // as incomplete so that cross-references to them are not misjudged.
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let mut consequences = HashSet::new();
    let mut incomplete: Vec<String> = Vec::new();
    for e in &interpolated.errors {
        let pos = lines.pos(text, e.offset);
        consequences.insert((pos.line, pos.column));
        incomplete.extend(e.path.section().map(str::to_string));
        diagnostics.push(at(e.offset, e.message.clone()));
    }
    let top_keys: Vec<(String, Option<usize>)> = layout
        .top_keys
        .iter()
        .map(|(key, _)| {
            let items = layout.node(&KeyPath::root().key(key)).and_then(|n| n.items);
            (key.clone(), items)
        })
        .collect();

    let mut others = Vec::new();
    let mut loaded = None;
    match parse(&interpolated.text, &top_keys) {
        Ok(config) => {
            let mut scope = Scope::complete(&config);
            scope.failed.extend(incomplete);
            let mut report = Report::new(scope, file_name, text, &lines, &layout);
            validate(&config, &mut report);
            others = report.errors;
            loaded = Some(Loaded {
                config,
                warnings: report.warnings,
            });
        }
        Err((errors, partial)) => {
            let parsed = LineIndex::new(&interpolated.text);
            let locate = Locate {
                original: text,
                original_lines: &lines,
                parsed: &interpolated.text,
                parsed_lines: &parsed,
                map: &interpolated.map,
                layout: &layout,
            };
            others.extend(errors.into_iter().map(|e| locate.diagnostic(file_name, e)));
            for (key, span) in &layout.top_keys {
                if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                    others.push(at(span.start, unknown_top_level_key(key)));
                }
            }
            // Semantic errors in the parts that did parse belong in the same report.
            if let Some(partial) = partial {
                let mut scope = partial.scope;
                scope.failed.extend(incomplete);
                let mut report = Report::new(scope, file_name, text, &lines, &layout);
                validate(&partial.config, &mut report);
                others.extend(report.errors);
            }
        }
    }
    diagnostics.extend(
        others
            .into_iter()
            .filter(|d| !consequences.contains(&(d.line, d.column))),
    );
    match loaded {
        Some(mut loaded) if diagnostics.is_empty() => {
            sort_dedup(&mut loaded.warnings);
            Ok(loaded)
        }
        _ => Err(errors_in_order(diagnostics)),
    }
}

/// `{secret: ${X}}` is a YAML syntax error (`{` and `}` end a plain value inside
/// flow collections); the parser's message does not say so, so add the fix.
fn with_flow_hint(text: &str, lines: &LineIndex, offset: usize, message: String) -> String {
    let line = lines.pos(text, offset).line;
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    if line_text.contains("${") && (line_text.contains('{') || line_text.contains('[')) {
        format!(
            "{message} (inside [...] or {{...}}, quote values that use ${{NAME}}: \"${{NAME}}\")"
        )
    } else {
        message
    }
}

fn sort_dedup(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by_key(|d| (d.line, d.column));
    let mut seen = HashSet::new();
    diagnostics.retain(|d| seen.insert(d.clone()));
}

fn errors_in_order(mut diagnostics: Vec<Diagnostic>) -> ConfigErrors {
    sort_dedup(&mut diagnostics);
    ConfigErrors(diagnostics)
}

/// Places parse errors (found in the interpolated text) in the user's file.
struct Locate<'a> {
    original: &'a str,
    original_lines: &'a LineIndex,
    parsed: &'a str,
    parsed_lines: &'a LineIndex,
    map: &'a SourceMap,
    layout: &'a Layout,
}

impl Locate<'_> {
    fn diagnostic(&self, file: &str, error: ParseError) -> Diagnostic {
        let parsed_offset = self.parsed_lines.offset(self.parsed, error.pos);
        let offset = self.map.to_original(parsed_offset);
        let pos: Pos = self.original_lines.pos(self.original, offset);
        let message = match self.layout.path_at(offset, error.anchor) {
            Some(path) if !path.is_root() => format!("{path}: {}", error.message),
            _ => error.message,
        };
        Diagnostic::new(file, pos.line, pos.column, message)
    }
}
