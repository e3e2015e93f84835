//! `portcullis policy suggest` and `policy report` (SPEC §11): policy from
//! observed traffic, and what the policy did. Both stream the audit file once
//! (one line in memory plus per-route aggregates) and print only what audit lines
//! hold, which is never a secret (SPEC §7); raw lines are never echoed.

mod audit_read;
mod generalize;
mod grouping;
mod report;
mod suggest;
mod suggest_yaml;

use clap::{Args, Subcommand};
use portcullis_config::{AuthMode, Config};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Print, as config YAML, the narrowest allow rules that would have allowed what
    /// the audit file shows was allowed or denied only in audit mode.
    Suggest(SuggestArgs),
    /// Per route: rules that never decided anything, callers denied most often and
    /// why, and for audit-mode routes how many requests enforcement would refuse.
    Report(ReportArgs),
}

#[derive(Args)]
pub struct SuggestArgs {
    /// Config file (default: $PORTCULLIS_CONFIG, then ./portcullis.yaml).
    #[arg(short, long, env = "PORTCULLIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Audit file (JSON lines, plain or gzip; `-` for stdin).
    #[arg(long)]
    pub audit: PathBuf,
    /// Suggest rules for this route only.
    #[arg(long)]
    pub route: Option<String>,
}

#[derive(Args)]
pub struct ReportArgs {
    /// Config file (default: $PORTCULLIS_CONFIG, then ./portcullis.yaml).
    #[arg(short, long, env = "PORTCULLIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Audit file (JSON lines, plain or gzip; `-` for stdin).
    #[arg(long)]
    pub audit: PathBuf,
}

/// Runs a `policy` subcommand; `config_path` resolves the `-c` default as `check` does.
pub fn run(
    cmd: PolicyCommand,
    config_path: fn(Option<PathBuf>) -> PathBuf,
) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Suggest(args) => {
            let config = load_config(&config_path(args.config))?;
            suggest(&config, &args.audit, args.route)
        }
        PolicyCommand::Report(args) => {
            let config = load_config(&config_path(args.config))?;
            report(&config, &args.audit)
        }
    }
}

/// The config, or one error line pointing at `check` for the full list.
fn load_config(path: &Path) -> anyhow::Result<Config> {
    match portcullis_config::load_file(path) {
        Ok(loaded) => Ok(loaded.config),
        Err(errors) => {
            let all = errors.diagnostics();
            let first = all
                .first()
                .map_or_else(|| "invalid".to_string(), ToString::to_string);
            let more = match all.len() {
                0 | 1 => String::new(),
                n => format!(" (and {} more; `portcullis check` lists them)", n - 1),
            };
            anyhow::bail!("config: {first}{more}")
        }
    }
}

fn suggest(config: &Config, audit: &Path, only: Option<String>) -> anyhow::Result<ExitCode> {
    let names: Vec<String> = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| r.display_name(i))
        .collect();
    if let Some(route) = &only {
        if !names.contains(route) {
            anyhow::bail!(
                "the config has no route named {}",
                portcullis_policy::clean(route)
            );
        }
    }
    let mut suggester = suggest::Suggester::new(only.clone());
    let stats = audit_read::for_each_line(audit, |line| suggester.observe(line))?;
    if let Some(note) = stats.malformed_note() {
        eprintln!("{note}");
    }
    let traffic = suggester.into_routes();
    for (name, _) in &traffic {
        if !names.contains(name) {
            eprintln!(
                "warning: the audit file names route {}, which the config does not have; skipped",
                portcullis_policy::clean(name)
            );
        }
    }
    let mut sections = Vec::new();
    let mut skipped = Vec::new();
    for (route, name) in config.routes.iter().zip(&names) {
        if only.as_ref().is_some_and(|o| o != name) {
            continue;
        }
        if route.auth == AuthMode::None {
            skipped.push((name.clone(), "public (`auth: none`)"));
            continue;
        }
        if route.mcp.is_some() {
            // Rules from methods and paths alone would allow every tool: on
            // an MCP route a rule without `tools` matches any tools/call.
            skipped.push((
                name.clone(),
                "an MCP route: its rules need `tools:`, which suggest does not write \
                 (a rule without them would allow every tool)",
            ));
            continue;
        }
        let Some((_, t)) = traffic.iter().find(|(n, _)| n == name) else {
            skipped.push((name.clone(), "no permitted request in the audit file"));
            continue;
        };
        let rules = suggest::rules_for(t);
        if rules.is_empty() {
            skipped.push((name.clone(), "only anonymous callers were let through"));
            continue;
        }
        sections.push(suggest_yaml::RouteSection {
            name,
            mode: route.mode,
            permitted: t.permitted,
            shadow_denied: t.shadow_denied,
            rules,
            callers: t.callers(),
            issuers: t.issuers(),
        });
    }
    let source = audit.display().to_string();
    let providers = provider_names(config);
    let yaml = suggest_yaml::render(&source, stats.lines, &sections, &skipped, &providers);
    crate::cli::out(&yaml);
    Ok(ExitCode::SUCCESS)
}

/// Issuer → provider name, for issuers that exactly one provider has.
fn provider_names(config: &Config) -> suggest_yaml::ProviderNames {
    let mut names = suggest_yaml::ProviderNames::new();
    let mut shared = Vec::new();
    for p in &config.providers {
        if names.insert(p.issuer.clone(), p.name.clone()).is_some() {
            shared.push(p.issuer.clone());
        }
    }
    for issuer in shared {
        names.remove(&issuer);
    }
    names
}

fn report(config: &Config, audit: &Path) -> anyhow::Result<ExitCode> {
    let mut reporter = report::Reporter::default();
    let stats = audit_read::for_each_line(audit, |line| reporter.observe(line))?;
    if let Some(note) = stats.malformed_note() {
        eprintln!("{note}");
    }
    let source = audit.display().to_string();
    crate::cli::out(&reporter.render(config, &source, stats.lines));
    Ok(ExitCode::SUCCESS)
}
