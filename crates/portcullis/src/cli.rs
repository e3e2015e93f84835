//! Command-line definitions and dispatch.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
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
    /// Validate a config without contacting any network.
    Check {
        #[arg(short, long, env = "PORTCULLIS_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// The config path: the flag, `$PORTCULLIS_CONFIG` (through clap), or `./portcullis.yaml`.
fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| PathBuf::from("portcullis.yaml"))
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            init_logging();
            crate::serve::run(&config_path(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => Ok(check(&config_path(config))),
    }
}

/// `check`: prints `ok` (and warnings) or every error as `FILE:LINE:COL: message`.
fn check(path: &Path) -> ExitCode {
    match portcullis_config::load_file(path) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in errors.diagnostics() {
                eprintln!("{error}");
            }
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr; `PORTCULLIS_LOG` (or `RUST_LOG`) sets the filter, default `info`.
pub fn init_logging() {
    let filter = std::env::var("PORTCULLIS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Builds the multi-threaded runtime every async command runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
