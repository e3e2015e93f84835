//! `shared_state` through the real server and a real `redis-server`: a 429
//! counted in Redis carries the RateLimit fields; a reload that changes only
//! `on_redis_down` keeps the connection (and the counters); one to another
//! database starts afresh; with `deny`, a dead Redis means 503 at once.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use portcullis_proxy::Server;
use portcullis_testkit::{EchoUpstream, RedisServer};
use std::time::{Duration, Instant};

fn yaml(upstream: &str, redis: &str, on_down: &str) -> String {
    format!(
        "server: {{ listen: 127.0.0.1:0 }}\nadmin: {{ listen: 127.0.0.1:0 }}\naudit: {{ sink: none }}\n\
         shared_state: {{ redis: '{redis}', on_redis_down: {on_down}, timeout: 1s }}\n\
         routes:\n  - name: limited\n    match: {{ path_prefix: / }}\n    upstream: {upstream}\n    auth: none\n\
         \x20   rate_limit: {{ requests_per_second: 0.1, burst: 2, key: ip }}\n"
    )
}

fn gauge(server: &Server) -> Option<String> {
    server.shared.metrics.render().lines().find_map(|l| {
        l.strip_prefix("portcullis_shared_state_up ")
            .map(str::to_string)
    })
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_in_redis_survive_reloads_and_deny_when_it_is_gone() {
    let mut redis = RedisServer::start(&[]).unwrap();
    let echo = EchoUpstream::start().await.unwrap();
    let server = Server::start(config(&yaml(&echo.url(), &redis.url("", 4), "local")), None)
        .await
        .unwrap();
    until("shared_state_up 1", || {
        gauge(&server).as_deref() == Some("1")
    })
    .await;
    let url = format!("http://{}/x", server.local_addr());
    let c = client();
    for _ in 0..2 {
        assert_eq!(send(&c, "GET", &url, &[]).await.0, 200);
    }
    let (status, headers, _) = send(&c, "GET", &url, &[]).await;
    assert_eq!(status, 429);
    assert_eq!(headers["ratelimit-policy"], "\"default\";q=2;w=20");
    assert!(headers["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"default\";r=0;t="));
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 9
    );

    // Only the fallback changes: same connection (the gauge never drops), same counters.
    server
        .apply(config(&yaml(&echo.url(), &redis.url("", 4), "deny")))
        .unwrap();
    assert_eq!(gauge(&server).as_deref(), Some("1"));
    assert_eq!(send(&c, "GET", &url, &[]).await.0, 429);

    // Another database: a new connection and fresh counters.
    server
        .apply(config(&yaml(&echo.url(), &redis.url("", 5), "deny")))
        .unwrap();
    assert_eq!(send(&c, "GET", &url, &[]).await.0, 200);
    until("shared_state_up 1", || {
        gauge(&server).as_deref() == Some("1")
    })
    .await;

    // deny: with Redis gone, the limited route answers 503 without waiting on it.
    redis.kill();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let (status, headers, body) = send(&c, "GET", &url, &[]).await;
        assert!(started.elapsed() < Duration::from_millis(500));
        if status == 503 {
            assert_eq!(headers["retry-after"], "1");
            assert!(body.contains("upstream_unavailable"), "{body}");
        }
        statuses.push(status);
    }
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    until("shared_state_up 0", || {
        gauge(&server).as_deref() == Some("0")
    })
    .await;
    server.shutdown().await;
}
