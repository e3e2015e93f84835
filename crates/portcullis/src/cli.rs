//! Command-line definitions and dispatch.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    // `--version` is accepted by every subcommand too (SPEC §1).
    propagate_version = true,
    about = "An identity-aware reverse proxy"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Config file (default: $PORTCULLIS_CONFIG, then ./portcullis.yaml).
        #[arg(short, long, env = "PORTCULLIS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run the embedded demo: a development issuer, an echo upstream and the proxy, on
    /// loopback, with ready-to-paste curl commands.
    Demo {
        /// Where the demo proxy listens (a free port is used if this one is taken).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Validate a config without contacting any network.
    Check {
        #[arg(short, long, env = "PORTCULLIS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Evaluate a request against the config's routes and policy, offline.
    Explain(crate::explain::ExplainArgs),
    /// Mint or inspect JWTs for development and tests.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Generate signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Rules from observed traffic, and what the policy did (audit files).
    #[command(subcommand)]
    Policy(crate::policy::PolicyCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint a signed JWT (RS256, ES256 or EdDSA, chosen by the key's type).
    Mint(crate::token::MintArgs),
    /// Decode a JWT's header and claims (verifying the signature only with --jwks).
    Inspect(crate::token::InspectArgs),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new private key (DIR/private.pem) and its public JWKS (DIR/jwks.json).
    Generate(crate::keys::GenerateArgs),
}

/// The config path: the flag, `$PORTCULLIS_CONFIG` (through clap), or `./portcullis.yaml`.
/// An empty `$PORTCULLIS_CONFIG` counts as unset.
fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("portcullis.yaml"))
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            init_logging();
            crate::serve::run(&config_path(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { listen } => {
            init_logging();
            crate::demo::run(&listen)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => Ok(crate::check::run(&config_path(config))),
        Command::Explain(args) => {
            let path = config_path(args.config.clone());
            crate::explain::run(&path, args)
        }
        Command::Token(TokenCommand::Mint(args)) => crate::token::mint(args),
        Command::Token(TokenCommand::Inspect(args)) => crate::token::inspect(args),
        Command::Keys(KeysCommand::Generate(args)) => crate::keys::generate(args),
        Command::Policy(cmd) => crate::policy::run(cmd, config_path),
    }
}

/// Reports a command-line parse error. Help and version go to stdout (exit 0); a
/// usage error becomes one line on stderr (exit 1) — clap's own rendering adds a
/// usage block, and SPEC §1 wants every user error on one clear line.
pub fn report_parse_error(e: &clap::Error) -> ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let rendered = e.render().to_string();
    let line = if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // The "error" is the whole help text; its usage line says what is missing.
        let usage = rendered
            .lines()
            .find_map(|l| l.trim().strip_prefix("Usage:"))
            .map(str::trim)
            .unwrap_or("portcullis --help");
        format!("error: incomplete command; usage: {usage}")
    } else {
        // The first paragraph is the message; clap continues a list (missing
        // arguments) on indented lines, so they are joined rather than dropped.
        let first: Vec<&str> = rendered
            .lines()
            .map(str::trim)
            .skip_while(|l| l.is_empty())
            .take_while(|l| !l.is_empty())
            .collect();
        let text = first.join(" ");
        if text.starts_with("error:") {
            text
        } else {
            format!("error: {text}")
        }
    };
    eprintln!("{line} (see --help)");
    ExitCode::from(1)
}

/// Writes `text` to stdout, ignoring a closed pipe (`portcullis token inspect … |
/// head -1` must not panic the way `print!` does).
pub fn out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Routes that can never match and rules that can never matter (compiling the route
/// table exactly as `serve` will). `Err` only if the table cannot be compiled at all.
pub fn policy_warnings(config: &portcullis_config::Config) -> Result<Vec<String>, Vec<String>> {
    portcullis_policy::RouteTable::compile(config).map(|table| table.shadowed())
}

/// Logs go to stderr; `PORTCULLIS_LOG` (or `RUST_LOG`) sets the filter, default `info`.
pub fn init_logging() {
    let filter = std::env::var("PORTCULLIS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Builds the multi-threaded runtime every async command runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A single-threaded runtime for the short async parts of the developer commands
/// (key loading, token verification): no worker threads to start for one request.
pub fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
