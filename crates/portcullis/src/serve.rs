//! `portcullis serve`: load, start, then live by signals: SIGHUP reloads (and so does
//! a change of the file with `watch: true`), SIGTERM/SIGINT drain and exit 0.

use anyhow::Context as _;
use portcullis_proxy::Server;
use std::path::Path;
use std::time::{Duration, SystemTime};
use tokio::signal::unix::{signal, SignalKind};

pub fn run(path: &Path) -> anyhow::Result<()> {
    let loaded = portcullis_config::load_file(path).map_err(|errors| {
        for e in errors.diagnostics() {
            eprintln!("{e}");
        }
        anyhow::anyhow!("invalid configuration: {}", path.display())
    })?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    for warning in crate::cli::policy_warnings(&loaded.config).unwrap_or_default() {
        tracing::warn!("{warning}");
    }
    crate::cli::runtime()?.block_on(async move {
        let watch = loaded.config.server.watch;
        let server = Server::start(loaded.config, Some(path.to_path_buf())).await?;
        let mut hup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
        let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
        let mut seen = modified(path);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = hup.recv() => { let _ = server.reload(); }
                _ = tick.tick(), if watch => {
                    let now = modified(path);
                    if now != seen {
                        seen = now;
                        let _ = server.reload();
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!("draining");
        server.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
