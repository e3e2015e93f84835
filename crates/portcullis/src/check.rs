//! `portcullis check`: the config loader's checks, then the very compilation
//! `serve` runs ([`Runtime::check`]: route table, upstream TLS, trusted networks,
//! authenticator, assertion signer, listener TLS), without network or writes. So
//! `check` refuses exactly what `serve` refuses, and every error is shown as
//! `FILE:LINE:COL: message`.

use portcullis_config::{is_config_path, locate, Diagnostic};
use portcullis_proxy::runtime::Runtime;
use std::path::Path;
use std::process::ExitCode;

/// Prints `ok` (and warnings) or every error; exit 0 or 1.
pub fn run(path: &Path) -> ExitCode {
    let file = path.display().to_string();
    let loaded = match portcullis_config::load_file(path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            for error in errors.diagnostics() {
                eprintln!("{error}");
            }
            return ExitCode::from(1);
        }
    };
    // Read again only to place the compiler's messages; the loader succeeded, so
    // this is the same text unless the file changed in between.
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    // The table's own errors come from `Runtime::check` below.
    for warning in crate::cli::policy_warnings(&loaded.config).unwrap_or_default() {
        eprintln!("warning: {}", place(&text, &file, &warning));
    }
    match Runtime::check(loaded.config) {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in errors {
                eprintln!("{}", place(&text, &file, &error));
            }
            ExitCode::from(1)
        }
    }
}

/// `routes[3] (orders): match.path_regex: …` at the position of
/// `routes[3].match.path_regex` in the file.
pub(crate) fn place(text: &str, file: &str, message: &str) -> Diagnostic {
    locate(text, file, &leading_path(message), message)
}

/// The config path a compiler message starts with: the leading `PATH: ` parts,
/// joined (`routes[3] (orders): policy.allow[0]: methods: …` →
/// `routes[3].policy.allow[0].methods`). A route's name in parentheses is dropped.
fn leading_path(message: &str) -> String {
    let mut path = String::new();
    let mut rest = message;
    while let Some((head, tail)) = rest.split_once(": ") {
        let head = match head.split_once(" (") {
            Some((p, name)) if name.ends_with(')') => p,
            _ => head,
        };
        if !is_config_path(head) {
            break;
        }
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(head);
        rest = tail;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::leading_path;

    #[test]
    fn the_leading_path_of_compiler_messages() {
        assert_eq!(
            leading_path("routes[3] (orders): policy.allow[0]: methods: `G T` is not"),
            "routes[3].policy.allow[0].methods"
        );
        assert_eq!(
            leading_path("routes[0]: match.hosts: host `a:1`: leave out the port"),
            "routes[0].match.hosts"
        );
        assert_eq!(
            leading_path("providers[1] (b): another provider has the same issuer"),
            "providers[1]"
        );
        assert_eq!(leading_path("too many routes"), "");
    }
}
