//! Every YAML example in the documentation is a config that `portcullis check`
//! accepts without a warning, so a reader can paste any of them and start from it.
//!
//! The test reads `README.md` and every `docs/**/*.md`, takes each fenced block whose
//! info string starts with `yaml` (or `yml`), writes it to a file of its own and runs
//! the real binary: `portcullis check -c FILE`. It must exit 0 and print no
//! `warning:` line. Failures name the Markdown file and line, and show the block and
//! what `check` said (with its line numbers turned into the document's).
//!
//! Conventions for people writing docs:
//!
//! - **Fragments.** A block that is deliberately not a whole config (a `claims:`
//!   snippet) is fenced ```` ```yaml partial ````. It is skipped, and listed as
//!   skipped. Keep them rare: at most [`MAX_PARTIAL`] in all the docs.
//! - **Kubernetes manifests** (a pod spec next to a recipe) are fenced
//!   ```` ```yaml kubernetes ````. They are not Portcullis configs and are skipped,
//!   but must look like manifests (contain `apiVersion:` or `containers:`), so the
//!   marker cannot hide a config.
//! - **Environment.** Every `${NAME}` in a block is set, for that `check` only, to a
//!   dummy value of 64 bytes (long enough for any secret `check` measures), or to
//!   a pod address for a name ending in `_IP` (`${POD_IP}`).
//! - **Files.** `check` compiles what `serve` compiles, so it reads referenced
//!   files. The test writes a fresh self-signed certificate to every `cert_file`,
//!   `client_ca_file` and `ca_file`, its P-256 key to every `key_file` and
//!   `signing_key_file` (an Ed25519 key under `algorithm: EdDSA`), an empty key
//!   set to every `jwks_file`, and creates the directory of an audit
//!   `sink: file:PATH`. A relative path is created inside the scratch directory
//!   `check` runs in; an absolute one (`/etc/portcullis/tls/tls.crt`) is rewritten
//!   into the scratch directory (`SCRATCH/etc/portcullis/tls/tls.crt`) in the copy
//!   that is checked, so the docs can show the paths a real deployment uses.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// Most `yaml partial` blocks the docs may have: complete configs are the rule.
const MAX_PARTIAL: usize = 6;

/// Keys whose value is a file that `check` requires to exist.
const FILE_KEYS: [&str; 6] = [
    "jwks_file",
    "signing_key_file",
    "cert_file",
    "key_file",
    "client_ca_file",
    "ca_file",
];

/// The value a block's `${NAME}` gets for `check`: an address for an `*_IP` (the
/// downward API's `status.podIP` in a pod), else 64 bytes, long enough for any
/// secret `check` measures.
fn dummy_env(name: &str) -> String {
    if name.ends_with("_IP") {
        "10.42.0.17".to_string()
    } else {
        "docs-dummy-value-".repeat(4)
    }
}

/// One fenced YAML block of a Markdown file.
#[derive(Debug, PartialEq, Eq)]
struct Block {
    /// Line (1-based) of the opening fence.
    fence_line: usize,
    /// The info string after the backticks (`yaml`, `yaml partial`).
    info: String,
    text: String,
}

/// What the test does with a block, from its info string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A whole config: `portcullis check` must accept it.
    Config,
    /// `yaml partial`: a fragment, skipped.
    Partial,
    /// `yaml kubernetes`: a Kubernetes manifest, skipped.
    Kubernetes,
}

impl Block {
    fn kind(&self) -> Kind {
        let mut words = self.info.split_whitespace().skip(1);
        if words.clone().any(|w| w == "partial") {
            Kind::Partial
        } else if words.any(|w| w == "kubernetes") {
            Kind::Kubernetes
        } else {
            Kind::Config
        }
    }
}

/// The YAML blocks of a Markdown document. Fences may be indented (inside list
/// items); the indentation is removed from the block's lines. An unclosed fence is
/// an error: everything after it would silently stop being checked.
fn yaml_blocks(markdown: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String, usize, String, bool)> = None; // line, info, indent, text, is yaml
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let info = info.trim().to_string();
                    let lang = info.split_whitespace().next().unwrap_or("");
                    let is_yaml = lang == "yaml" || lang == "yml";
                    open = Some((i + 1, info, indent, String::new(), is_yaml));
                }
            }
            Some((start, info, fence_indent, text, is_yaml)) => {
                if trimmed.starts_with("```") && trimmed.trim_end().chars().all(|c| c == '`') {
                    if *is_yaml {
                        blocks.push(Block {
                            fence_line: *start,
                            info: std::mem::take(info),
                            text: std::mem::take(text),
                        });
                    }
                    open = None;
                } else {
                    let cut = indent.min(*fence_indent);
                    text.push_str(&line[cut..]);
                    text.push('\n');
                }
            }
        }
    }
    match open {
        Some((line, ..)) => Err(format!(
            "the code fence opened on line {line} is never closed"
        )),
        None => Ok(blocks),
    }
}

/// The names of the `${NAME}` references in `text` (`$${` is a literal, skipped).
fn env_references(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        let escaped = rest[..at].ends_with('$');
        rest = &rest[at + 2..];
        let Some(end) = rest.find('}') else { break };
        if !escaped && !rest[..end].is_empty() {
            names.push(rest[..end].to_string());
        }
        rest = &rest[end + 1..];
    }
    names.sort();
    names.dedup();
    names
}

/// The path value that starts at `text` (up to a space, `,`, `}`, `]` or `#`), without
/// quotes.
fn path_value(text: &str) -> &str {
    let text = text.trim_start();
    let end = text
        .find(|c: char| c.is_whitespace() || matches!(c, ',' | '}' | ']' | '#'))
        .unwrap_or(text.len());
    text[..end].trim_matches(|c| c == '"' || c == '\'')
}

/// Real key material for the files a block names: `check` compiles what `serve`
/// compiles, so certificates and keys must parse and belong together.
struct Material {
    /// A self-signed CA certificate (also a server certificate for `localhost`).
    cert_pem: String,
    /// Its P-256 key (PKCS#8): `key_file`, and an ES256 `signing_key_file`.
    key_pem: String,
    /// An Ed25519 key, for a `signing_key_file` under `algorithm: EdDSA`.
    ed25519_pem: String,
}

impl Material {
    fn new() -> Material {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        Material {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ed25519_pem: ed.serialize_pem(),
        }
    }

    /// What a file named by `key` holds, in a block whose text is `block`.
    fn for_key(&self, key: &str, block: &str) -> &str {
        match key {
            "key_file" => &self.key_pem,
            "signing_key_file" if block.contains("algorithm: EdDSA") => &self.ed25519_pem,
            "signing_key_file" => &self.key_pem,
            "jwks_file" => r#"{"keys": []}"#,
            _ => &self.cert_pem,
        }
    }
}

/// Prepares a block for `check` inside `scratch`: creates the files it names (with
/// real certificates and keys) and rewrites absolute paths into `scratch`. Returns
/// the text to check.
fn provide_files(text: &str, scratch: &Path) -> String {
    let material = Material::new();
    let mut out = String::new();
    for line in text.lines() {
        let mut line = line.to_string();
        // path, and the key naming it (`None`: the parent of a file to be written)
        let mut wanted: Vec<(String, Option<&str>)> = Vec::new();
        for key in FILE_KEYS {
            let pattern = format!("{key}:");
            let mut from = 0;
            while let Some(pos) = line[from..].find(&pattern) {
                let at = from + pos;
                from = at + pattern.len();
                // `ca_file:` must not match inside `client_ca_file:`.
                let before = line[..at].chars().last();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                let value = path_value(&line[from..]);
                if !value.is_empty() && !value.contains("${") {
                    wanted.push((value.to_string(), Some(key)));
                }
            }
        }
        if let Some(pos) = line.find("sink:") {
            if let Some(path) = path_value(&line[pos + 5..]).strip_prefix("file:") {
                wanted.push((path.to_string(), None));
            }
        }
        wanted.sort();
        wanted.dedup();
        for (path, key) in wanted {
            let local = match path.strip_prefix('/') {
                Some(relative) => {
                    let moved = scratch.join(relative);
                    line = line.replace(&path, moved.to_str().unwrap());
                    moved
                }
                None => scratch.join(&path),
            };
            match key {
                None => {
                    if let Some(parent) = local.parent() {
                        std::fs::create_dir_all(parent).unwrap();
                    }
                }
                Some(key) => {
                    std::fs::create_dir_all(local.parent().unwrap()).unwrap();
                    std::fs::write(&local, material.for_key(key, text)).unwrap();
                }
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// `check`'s `FILE:LINE:COL: message` lines (errors, and warnings after `warning: `),
/// pointed at the Markdown document.
fn relocate(stderr: &str, checked: &Path, doc: &str, fence_line: usize) -> String {
    let prefix = format!("{}:", checked.display());
    stderr
        .lines()
        .map(|l| {
            let Some(at) = l.find(&prefix) else {
                return l.to_string();
            };
            let rest = &l[at + prefix.len()..];
            let mut parts = rest.splitn(2, ':');
            match (
                parts.next().and_then(|n| n.parse::<usize>().ok()),
                parts.next(),
            ) {
                (Some(n), Some(tail)) => format!("{}{doc}:{}:{tail}", &l[..at], fence_line + n),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// README.md and every Markdown file under docs/, relative to the workspace root.
fn documents(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut docs = vec![root.join("README.md")];
    let mut under = Vec::new();
    walk(&root.join("docs"), &mut under);
    under.sort();
    docs.extend(under);
    docs
}

#[test]
fn every_yaml_block_in_the_docs_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap();
    let scratch_root = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut skipped = Vec::new();
    let mut manifests = Vec::new();
    let mut failures = Vec::new();
    for (n, doc_path) in documents(&root).into_iter().enumerate() {
        let doc = doc_path.strip_prefix(&root).unwrap().display().to_string();
        let markdown =
            std::fs::read_to_string(&doc_path).unwrap_or_else(|e| panic!("cannot read {doc}: {e}"));
        let blocks = yaml_blocks(&markdown).unwrap_or_else(|e| panic!("{doc}: {e}"));
        for (b, block) in blocks.iter().enumerate() {
            let at = format!("{doc}:{}", block.fence_line);
            match block.kind() {
                Kind::Config => {}
                Kind::Partial => {
                    skipped.push(at);
                    continue;
                }
                Kind::Kubernetes => {
                    if block.text.contains("apiVersion:") || block.text.contains("containers:") {
                        manifests.push(at);
                    } else {
                        failures.push(format!(
                            "{at}: fenced `yaml kubernetes` but has neither `apiVersion:` nor \
                             `containers:`; if it is a Portcullis config, fence it ```yaml\n"
                        ));
                    }
                    continue;
                }
            }
            let scratch = scratch_root.path().join(format!("doc{n}-block{b}"));
            std::fs::create_dir_all(&scratch).unwrap();
            let text = provide_files(&block.text, &scratch);
            let file = scratch.join("portcullis.yaml");
            std::fs::write(&file, &text).unwrap();
            let mut cmd = Command::new(BIN);
            cmd.arg("check")
                .arg("-c")
                .arg(&file)
                .current_dir(&scratch)
                .env_remove("PORTCULLIS_CONFIG");
            for name in env_references(&block.text) {
                cmd.env(&name, dummy_env(&name));
            }
            let out = cmd.output().unwrap();
            checked += 1;
            let stderr = String::from_utf8_lossy(&out.stderr);
            let warned = stderr.lines().any(|l| l.starts_with("warning:"));
            if !out.status.success() || warned {
                let mut report = format!(
                    "{at}: `portcullis check` {}:\n",
                    if out.status.success() {
                        "printed warnings".to_string()
                    } else {
                        format!("failed ({})", out.status)
                    }
                );
                for line in relocate(&stderr, &file, &doc, block.fence_line).lines() {
                    let _ = writeln!(report, "    {line}");
                }
                let _ = writeln!(report, "  the block:");
                for (i, line) in block.text.lines().enumerate() {
                    let _ = writeln!(report, "    {:>4} | {line}", block.fence_line + i + 1);
                }
                failures.push(report);
            }
        }
    }
    for at in &skipped {
        println!("skipped (```yaml partial): {at}");
    }
    for at in &manifests {
        println!("skipped (```yaml kubernetes): {at}");
    }
    println!("checked {checked} YAML blocks");
    assert!(
        checked >= 10,
        "only {checked} YAML blocks found in README.md and docs/: is the extraction broken?"
    );
    assert!(
        skipped.len() <= MAX_PARTIAL,
        "{} `yaml partial` blocks ({}): make some of them complete configs (at most {MAX_PARTIAL})",
        skipped.len(),
        skipped.join(", ")
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} YAML blocks in the docs do not pass `portcullis check`:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn extraction_finds_yaml_blocks_and_marks_partial_ones() {
    let md = "intro\n```yaml\na: 1\n```\n```sh\necho\n```\n- item\n\n  ```yaml partial\n  b: 2\n    c: 3\n  ```\n";
    let blocks = yaml_blocks(md).unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].fence_line, 2);
    assert_eq!(blocks[0].text, "a: 1\n");
    assert_eq!(blocks[0].kind(), Kind::Config);
    assert_eq!(blocks[1].text, "b: 2\n  c: 3\n");
    assert_eq!(blocks[1].kind(), Kind::Partial);
    let k8s = yaml_blocks("```yaml kubernetes\napiVersion: v1\n```\n").unwrap();
    assert_eq!(k8s[0].kind(), Kind::Kubernetes);
    assert!(yaml_blocks("```yaml\na: 1\n").is_err());
}

#[test]
fn check_positions_point_into_the_document() {
    let checked = Path::new("/tmp/x/portcullis.yaml");
    let stderr = "/tmp/x/portcullis.yaml:2:5: bad\nwarning: /tmp/x/portcullis.yaml:3:1: odd\nother";
    assert_eq!(
        relocate(stderr, checked, "docs/a.md", 10),
        "docs/a.md:12:5: bad\nwarning: docs/a.md:13:1: odd\nother"
    );
}

#[test]
fn env_references_and_file_provisioning() {
    assert_eq!(
        env_references("a: ${B}\nc: \"x${D}y\"\ne: $${LITERAL}\nf: ${B}\n"),
        vec!["B".to_string(), "D".to_string()]
    );
    let scratch = tempfile::tempdir().unwrap();
    let text = "tls: { cert_file: /etc/p/tls.crt, key_file: 'k.pem' }\n  client_ca_file: ca.pem # c\naudit: { sink: file:/var/log/p/audit.log }\n";
    let out = provide_files(text, scratch.path());
    let s = scratch.path().display();
    assert!(
        out.contains(&format!("cert_file: {s}/etc/p/tls.crt,")),
        "{out}"
    );
    assert!(scratch.path().join("etc/p/tls.crt").is_file());
    assert!(scratch.path().join("k.pem").is_file());
    assert!(scratch.path().join("ca.pem").is_file());
    assert!(scratch.path().join("var/log/p").is_dir());
    assert!(!scratch.path().join("var/log/p/audit.log").exists());
}

/// Configs `serve` refuses although each of their values is well formed: only the
/// compilation `serve` runs (route table, TLS, keys, authenticator) finds these.
/// `check` must refuse every one, at the line that contains the third element.
const BROKEN: &[(&str, &str, &str)] = &[
    (
        "two providers with one issuer",
        "providers:\n  - name: a\n    issuer: https://idp.example.com\n    jwks_file: keys.json\n    allow_any_audience: true\n  - name: b\n    issuer: https://idp.example.com\n    jwks_file: keys.json\n    allow_any_audience: true\n",
        "- name: b",
    ),
    (
        "a listener certificate that is not a certificate",
        "server:\n  tls:\n    cert_file: garbage.pem\n    key_file: key.pem\n",
        "cert_file:",
    ),
    (
        "an assertion key that is not a key",
        "assertion:\n  signing_key_file: garbage.pem\n",
        "signing_key_file:",
    ),
    (
        "a signing_keys_dir holding something that is not a key",
        "assertion:\n  signing_keys_dir: keys\n",
        "signing_keys_dir:",
    ),
    (
        "an upstream CA bundle without a certificate",
        "routes:\n  - name: r\n    match: { path_prefix: /r }\n    upstream: https://127.0.0.1:9\n    upstream_tls: { ca_file: garbage.pem }\n    auth: none\n",
        "upstream_tls:",
    ),
];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Gives every listener a free loopback port so the config can really be served:
/// each `listen:` value is replaced, and `server` and `admin` get one when the
/// block leaves it to the default.
fn with_free_ports(text: &str) -> (String, Vec<u16>) {
    let mut ports = Vec::new();
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| {
            let Some(at) = line.find("listen: ") else {
                return line.to_string();
            };
            let port = free_port();
            ports.push(port);
            let value = path_value(&line[at + 8..]);
            line.replacen(value, &format!("127.0.0.1:{port}"), 1)
        })
        .collect();
    for section in ["server", "admin"] {
        let header = format!("{section}:");
        let start = lines.iter().position(|l| l.starts_with(&header));
        let has_listen = start.is_some_and(|s| {
            lines[s].contains("listen: ")
                || lines[s + 1..]
                    .iter()
                    .take_while(|l| l.starts_with(' ') || l.is_empty())
                    .any(|l| l.trim_start().starts_with("listen:"))
        });
        if has_listen {
            continue;
        }
        let port = free_port();
        ports.push(port);
        let listen = format!("  listen: 127.0.0.1:{port}");
        match start {
            Some(s) if lines[s].trim_end() == header => lines.insert(s + 1, listen),
            Some(_) => {} // a flow mapping without listen: left to the default
            None => {
                lines.insert(0, listen);
                lines.insert(0, header);
            }
        }
    }
    (lines.join("\n") + "\n", ports)
}

/// Runs `serve` on `file`: `Ok` once it listens (then stops it), `Err(stderr)` when
/// it exits first.
fn serve_starts(file: &Path, dir: &Path, env: &[String], ports: &[u16]) -> Result<(), String> {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "-c"])
        .arg(file)
        .current_dir(dir)
        .env_remove("PORTCULLIS_CONFIG")
        .env("PORTCULLIS_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for name in env {
        cmd.env(name, dummy_env(name));
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read as _;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return Err(stderr);
        }
        let listening = !ports.is_empty()
            && ports
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok());
        if listening {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            return Ok(());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve neither started nor exited: {}",
            file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn check_output(file: &Path, dir: &Path, env: &[String]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "-c"])
        .arg(file)
        .current_dir(dir)
        .env_remove("PORTCULLIS_CONFIG");
    for name in env {
        cmd.env(name, dummy_env(name));
    }
    cmd.output().unwrap()
}

/// `check` accepts a config exactly when `serve` starts with it: over every docs
/// block and over [`BROKEN`], which only the serve-time compilation can refuse.
#[test]
fn check_accepts_exactly_what_serve_starts_with() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap();
    let scratch_root = tempfile::tempdir().unwrap();
    let mut cases: Vec<(String, String)> = Vec::new();
    for doc_path in documents(&root) {
        let doc = doc_path.strip_prefix(&root).unwrap().display().to_string();
        let markdown = std::fs::read_to_string(&doc_path).unwrap();
        for block in yaml_blocks(&markdown).unwrap() {
            if block.kind() == Kind::Config {
                cases.push((format!("{doc}:{}", block.fence_line), block.text));
            }
        }
    }
    let preamble =
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\n";
    for (name, body, _) in BROKEN {
        // A case with its own `server` section gets the rest of the preamble only.
        let text = match body.strip_prefix("server:\n") {
            Some(rest) => format!("server:\n  listen: 127.0.0.1:0\n{rest}admin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\n"),
            None => format!("{preamble}{body}"),
        };
        cases.push((format!("broken: {name}"), text));
    }
    let mut disagreements = Vec::new();
    let mut refused = 0;
    for (i, (name, text)) in cases.iter().enumerate() {
        let scratch = scratch_root.path().join(format!("case{i}"));
        std::fs::create_dir_all(&scratch).unwrap();
        let provided = provide_files(text, &scratch);
        // After provide_files, which fills every named file with real material.
        std::fs::write(scratch.join("garbage.pem"), "not PEM at all").unwrap();
        std::fs::create_dir_all(scratch.join("keys")).unwrap();
        std::fs::write(scratch.join("keys/old.pem"), "not a key").unwrap();
        let (text, ports) = with_free_ports(&provided);
        let file = scratch.join("portcullis.yaml");
        std::fs::write(&file, &text).unwrap();
        let env = env_references(&text);
        let check = check_output(&file, &scratch, &env);
        let serve = serve_starts(&file, &scratch, &env, &ports);
        let check_stderr = String::from_utf8_lossy(&check.stderr).into_owned();
        if check.status.success() != serve.is_ok() {
            disagreements.push(format!(
                "{name}: check {} but serve {}\n  check said: {check_stderr}\n  config:\n{text}",
                if check.status.success() {
                    "accepts"
                } else {
                    "refuses"
                },
                match &serve {
                    Ok(()) => "starts".to_string(),
                    Err(e) => format!("refuses: {e}"),
                },
            ));
        }
        if let Some((_, _, at)) = BROKEN
            .iter()
            .find(|(n, _, _)| name == &format!("broken: {n}"))
        {
            refused += 1;
            assert!(!check.status.success(), "{name}: check accepted it");
            let first = check_stderr.lines().next().unwrap_or_default();
            let line: usize = first
                .strip_prefix(&format!("{}:", file.display()))
                .and_then(|rest| rest.split(':').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name}: not FILE:LINE:COL: {first}"));
            let written = text.lines().nth(line - 1).unwrap_or_default();
            assert!(
                written.contains(at),
                "{name}: error at line {line} (`{written}`), not at `{at}`: {check_stderr}"
            );
        }
    }
    assert_eq!(refused, BROKEN.len());
    assert!(cases.len() > BROKEN.len() + 10, "the docs have YAML blocks");
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}
