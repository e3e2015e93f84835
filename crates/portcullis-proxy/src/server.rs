//! Starting, reloading and draining the proxy. The binary wires signals to these.

use crate::audit::AuditLog;
use crate::listener::connections::Connections;
use crate::metrics::{Metrics, StateLabel};
use crate::runtime::{Carried, Runtime};
use crate::telemetry::Telemetry;
use crate::tls::ReloadingTls;
use crate::workers::Workers;
use crate::{admin, listener};
use anyhow::Context as _;
use arc_swap::ArcSwap;
use portcullis_config::Config;
use portcullis_identity::{Fetch, HttpFetch, IdentityMetrics};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::state::Shared;

/// The longest shutdown waits for the last spans to reach the collector.
const TRACE_FLUSH: Duration = Duration::from_secs(3);

/// A running proxy.
pub struct Server {
    pub shared: Arc<Shared>,
    config_path: Option<PathBuf>,
    local_addr: SocketAddr,
    admin_addr: SocketAddr,
    /// The Envoy ext_authz gRPC listener's bound address, when configured.
    ext_authz_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    /// Every open client connection; shutdown waits for them to end.
    connections: Arc<Connections>,
    tasks: Vec<JoinHandle<()>>,
    /// The data plane's threads; dropped (stopped) after the drain.
    workers: Workers,
    /// The main listener's TLS settings, which a reload changes in place.
    tls: Option<Arc<ReloadingTls>>,
}

impl Server {
    /// Binds the listeners and starts serving `config`. `config_path` is where
    /// reloads read from (none: reloads are refused).
    pub async fn start(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<Server> {
        let metrics = Metrics::new();
        let identity_metrics = IdentityMetrics::default();
        if let Ok(mut registry) = metrics.registry.lock() {
            identity_metrics.register(&mut registry);
        }
        let audit = AuditLog::open(&config.audit.sink).context("cannot open the audit sink")?;
        let telemetry = Telemetry::start(config.telemetry.as_ref()).map_err(anyhow::Error::msg)?;
        let fetch: Arc<dyn Fetch> = Arc::new(
            HttpFetch::new(Duration::from_secs(10)).map_err(|e| anyhow::anyhow!(e.to_string()))?,
        );
        let mut runtime = Runtime::build(
            config,
            Carried {
                previous: None,
                identity_metrics: &identity_metrics,
                metrics: &metrics,
                fetch: &fetch,
            },
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        runtime.start_background();
        let server_cfg = runtime.config.server.clone();
        let admin_listen = runtime.config.admin.listen.clone();

        let listener = TcpListener::bind(&server_cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", server_cfg.listen))?;
        let admin_listener = TcpListener::bind(&admin_listen)
            .await
            .with_context(|| format!("cannot listen on {admin_listen} (admin)"))?;
        let local_addr = listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let tls = match &server_cfg.tls {
            Some(tls_cfg) => Some(ReloadingTls::new(tls_cfg).map_err(|e| anyhow::anyhow!(e))?),
            None => None,
        };

        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            identity_metrics,
            fetch,
            audit,
            telemetry,
            mcp: Default::default(),
            stalls: Arc::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let state = |state| {
            shared
                .metrics
                .connections
                .get_or_create(&StateLabel { state })
                .clone()
        };
        let connections = Arc::new(Connections::new(
            state("active"),
            state("idle"),
            shared.metrics.connections_refused.clone(),
        ));
        let mut tasks = Vec::new();
        if let Some(tls) = &tls {
            tasks.push(tls.clone().watch(Duration::from_secs(2)));
        }
        tasks.push(tokio::spawn(shared.stalls.clone().run()));
        // Every worker accepts from the same socket: the kernel hands each new
        // connection to one of them, and it stays on that worker's thread.
        let workers = Workers::start().context("cannot start the worker threads")?;
        let listener = listener.into_std()?;
        let mut clones = Vec::with_capacity(workers.len());
        for _ in 0..workers.len() {
            clones.push(Some(listener.try_clone()?));
        }
        tasks.extend(workers.spawn_each(|i| {
            let socket = clones[i].take();
            let (tls, shared, connections, stop) = (
                tls.clone(),
                shared.clone(),
                connections.clone(),
                stop_rx.clone(),
            );
            async move {
                let listener = socket.map(tokio::net::TcpListener::from_std);
                match listener {
                    Some(Ok(listener)) => {
                        listener::accept_loop(listener, tls, shared, connections, stop).await
                    }
                    Some(Err(e)) => tracing::error!(error = %e, "worker cannot listen"),
                    None => {}
                }
            }
        }));
        let ext_authz_cfg = shared.runtime.load().config.ext_authz.clone();
        let ext_authz_addr = match ext_authz_cfg {
            Some(cfg) => {
                let grpc = crate::ext_authz::start(&cfg, shared.clone(), stop_rx.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
                tasks.extend(grpc.tasks);
                Some(grpc.addr)
            }
            None => None,
        };
        tasks.push(tokio::spawn(admin::run(
            admin_listener,
            shared.clone(),
            stop_rx,
        )));
        tracing::info!(listen = %local_addr, admin = %admin_addr, "portcullis serving");
        Ok(Server {
            shared,
            config_path,
            local_addr,
            admin_addr,
            ext_authz_addr,
            stop,
            connections,
            tasks,
            workers,
            tls,
        })
    }

    /// The main listener's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The ext_authz gRPC listener's bound address, when `ext_authz` is configured.
    pub fn ext_authz_addr(&self) -> Option<SocketAddr> {
        self.ext_authz_addr
    }

    /// Re-reads the config file and swaps it in. An invalid config is refused, logged,
    /// and counted; the old one keeps serving. Also reopens the audit file (rotation).
    pub fn reload(&self) -> Result<(), String> {
        self.shared.audit.reopen();
        let result = self.try_reload();
        self.shared.metrics.reload(result.is_ok());
        match &result {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "configuration reload refused; keeping the old one")
            }
        }
        result
    }

    fn try_reload(&self) -> Result<(), String> {
        let path = self
            .config_path
            .as_ref()
            .ok_or("this server was not started from a config file")?;
        let loaded = portcullis_config::load_file(path).map_err(|e| e.to_string())?;
        self.apply(loaded.config)
    }

    /// Swaps in an already-loaded config (used by reload and by tests).
    pub fn apply(&self, mut config: Config) -> Result<(), String> {
        let current = self.shared.runtime.load_full();
        if config.telemetry != current.config.telemetry {
            tracing::warn!("telemetry cannot change on reload; restart to apply it");
            // The runtime describes the exporter that actually runs.
            config.telemetry.clone_from(&current.config.telemetry);
        }
        if config.server.listen != current.config.server.listen
            || config.admin.listen != current.config.admin.listen
        {
            tracing::warn!("listen addresses cannot change on reload; restart to apply them");
            // The runtime describes the listeners that actually run: the
            // default `public_url` (the assertions' `iss`) is derived from it.
            config
                .server
                .listen
                .clone_from(&current.config.server.listen);
            config.admin.listen.clone_from(&current.config.admin.listen);
        }
        if config.server.tls.is_some() != current.config.server.tls.is_some() {
            tracing::warn!("TLS cannot be turned on or off on reload; restart to apply it");
            config.server.tls.clone_from(&current.config.server.tls);
        }
        if config.audit.sink != current.config.audit.sink {
            tracing::warn!("the audit sink cannot change on reload; restart to apply it");
        }
        let listener_of = |c: &Config| {
            c.ext_authz
                .as_ref()
                .map(|e| (e.grpc_listen.clone(), e.tls.clone()))
        };
        if listener_of(&config) != listener_of(&current.config) {
            // The gRPC listener keeps what it was started with, client
            // certificates included (which decide whether `source.principal`
            // is believed from an untrusted address).
            tracing::warn!(
                "the ext_authz listener (grpc_listen, tls) cannot change on reload; restart to apply it"
            );
        }
        let mut next = Runtime::build(
            config,
            Carried {
                previous: Some(&current),
                identity_metrics: &self.shared.identity_metrics,
                metrics: &self.shared.metrics,
                fetch: &self.shared.fetch,
            },
        )?;
        if let (Some(tls), Some(cfg)) = (&self.tls, &next.config.server.tls) {
            if current.config.server.tls.as_ref() != Some(cfg) {
                tls.reconfigure(cfg)
                    .map_err(|e| format!("server.tls: {e}"))?;
            }
        }
        next.start_background();
        self.shared.runtime.store(Arc::new(next));
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish within `shutdown_grace`, then
    /// flushes the traces (within [`TRACE_FLUSH`]) and the audit log.
    pub async fn shutdown(self) {
        let grace = self
            .shared
            .runtime
            .load()
            .config
            .server
            .shutdown_grace
            .get();
        // Every connection watches `stop` and winds down gracefully.
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
        if tokio::time::timeout(grace, self.connections.drained())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "shutdown grace elapsed with requests still in flight"
            );
        }
        drop(self.workers);
        // Bounded: a dead collector must not hold up the exit.
        if let Some(telemetry) = &self.shared.telemetry {
            telemetry.shutdown(TRACE_FLUSH).await;
        }
        self.shared.audit.shutdown();
    }
}
