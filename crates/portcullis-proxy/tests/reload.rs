//! Reload under load: requests keep succeeding while the config is swapped, a bad
//! config is refused while the old one keeps serving.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use portcullis_proxy::Server;
use portcullis_testkit::EchoUpstream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn yaml(upstream: &str, route_name: &str) -> String {
    format!(
        "server:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\naudit:\n  sink: none\nroutes:\n  - name: {route_name}\n    match: {{ path_prefix: / }}\n    upstream: {upstream}\n    auth: none\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_nothing() {
    let echo = EchoUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.yaml");
    std::fs::write(&path, yaml(&echo.url(), "first")).unwrap();
    let cfg = portcullis_config::load_file(&path).unwrap().config;
    let server = Arc::new(Server::start(cfg, Some(path.clone())).await.unwrap());
    let base = format!("http://{}", server.local_addr());

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, base) = (stop.clone(), ok.clone(), failed.clone(), base.clone());
        workers.push(tokio::spawn(async move {
            // One keep-alive client per worker: reloads must not drop its connection.
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let (status, _, _) = send(&c, "GET", &format!("{base}/r"), &[]).await;
                if status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
            }
        }));
    }
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(&path, yaml(&echo.url(), &format!("gen{i}"))).unwrap();
        server.reload().unwrap();
    }
    // An invalid config is refused; the old one keeps serving.
    std::fs::write(&path, "server: [not, a, map]\n").unwrap();
    assert!(server.reload().is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "too few requests: {}",
        ok.load(Ordering::Relaxed)
    );

    let metrics = get(&format!("http://{}/metrics", server.admin_addr()))
        .await
        .1;
    assert!(metrics.contains(r#"route="gen9""#), "{metrics}");
    assert!(
        metrics.contains(r#"portcullis_config_reloads_total{result="success"} 10"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"portcullis_config_reloads_total{result="failure"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let h =
        Harness::start("  - match: { path_prefix: / }\n    upstream: UPSTREAM\n    auth: none\n")
            .await;
    let admin = format!("http://{}", h.server.admin_addr());
    assert_eq!(get(&format!("{admin}/healthz")).await.0, 200);
    let (status, body) = get(&format!("{admin}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&h.url("/x")).await.0, 200);
    let metrics = get(&format!("{admin}/metrics")).await.1;
    assert!(
        metrics.contains(
            r#"portcullis_requests_total{frontend="proxy",route="route-0",decision="allow",code="200"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_upstream_duration_seconds_bucket"),
        "{metrics}"
    );
}

/// `telemetry` is started once: a reload that adds, changes or removes it keeps
/// the running exporter (and says so), and the runtime describes that exporter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_changes_wait_for_a_restart() {
    let echo = EchoUpstream::start().await.unwrap();
    let plain = yaml(&echo.url(), "r");
    let traced = format!("{plain}telemetry:\n  otlp_endpoint: http://127.0.0.1:9\n");
    let load = |text: &str| {
        portcullis_config::load_str(text, "t.yaml", &|_| None)
            .unwrap()
            .config
    };
    let running = |s: &Server| s.shared.runtime.load().config.telemetry.clone();

    let server = Server::start(load(&plain), None).await.unwrap();
    server.apply(load(&traced)).unwrap();
    assert_eq!(running(&server), None);
    assert!(server.shared.telemetry.is_none());
    server.shutdown().await;

    let server = Server::start(load(&traced), None).await.unwrap();
    let started = running(&server);
    assert!(started.is_some());
    server.apply(load(&plain)).unwrap();
    assert_eq!(running(&server), started);
    let other = traced.replace("127.0.0.1:9", "127.0.0.1:10");
    server.apply(load(&other)).unwrap();
    assert_eq!(running(&server), started);
    server.shutdown().await;
}
