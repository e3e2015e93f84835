//! Against a real `redis-server` (Debian's; scripts/test installs it), started
//! here on a free loopback port without persistence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::limiter::{self, Budget};
use super::*;
use portcullis_testkit::RedisServer;
use std::time::Instant;

/// A redis-server for these tests (see [`RedisServer`]).
fn redis_server(extra: &[&str]) -> RedisServer {
    RedisServer::start(extra).expect("redis-server")
}

/// `shared_state` for `url` with a 1 s timeout: generous, so that a loaded
/// test machine does not turn a slow answer into a failure. (Also the Redis
/// of the session store's and MCP bindings' tests.)
pub(crate) fn config(url: &str) -> SharedStateConfig {
    config_timeout(url, "1s")
}

fn config_timeout(url: &str, timeout: &str) -> SharedStateConfig {
    let yaml = format!("shared_state: {{redis: '{url}', timeout: {timeout}}}\n");
    portcullis_config::load_str(&yaml, "test.yaml", &|_| None)
        .unwrap()
        .config
        .shared_state
        .unwrap()
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn long_keys_are_hashed_short_ones_kept() {
    assert_eq!(
        key("portcullis:rl:r:", "sub:alice"),
        "portcullis:rl:r:sub:alice"
    );
    let long = format!("sub:{}", "x".repeat(300));
    let k = key("portcullis:rl:r:", &long);
    assert!(
        k.starts_with("portcullis:rl:r:sha256:") && k.len() == 16 + 7 + 64,
        "{k}"
    );
    assert_ne!(k, key("portcullis:rl:r:", &format!("{long}y")));
}

const BUDGET: Budget = Budget {
    interval: Duration::from_millis(500),
    burst: 3,
};

#[tokio::test]
async fn gcra_in_redis_allows_the_burst_then_refuses_until_the_interval() {
    let server = redis_server(&[]);
    let redis = Redis::start(&config(&server.url("", 3)), Gauge::default()).unwrap();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let t = limiter::take(&redis, "portcullis:rl:r:sub:a", BUDGET)
            .await
            .unwrap();
        assert!(t.allowed);
        remaining.push(t.remaining);
    }
    assert_eq!(remaining, [2, 1, 0]);
    let refused = limiter::take(&redis, "portcullis:rl:r:sub:a", BUDGET)
        .await
        .unwrap();
    assert!(!refused.allowed);
    assert!(refused.retry_after > Duration::from_millis(300));
    assert!(refused.retry_after <= Duration::from_millis(500));
    assert!(refused.reset > Duration::from_millis(1000));
    // Another caller has its own budget.
    let other = limiter::take(&redis, "portcullis:rl:r:sub:b", BUDGET)
        .await
        .unwrap();
    assert!(other.allowed);
    // One interval later, one more request is allowed.
    tokio::time::sleep(refused.retry_after + Duration::from_millis(20)).await;
    let again = limiter::take(&redis, "portcullis:rl:r:sub:a", BUDGET)
        .await
        .unwrap();
    assert!(again.allowed, "{again:?}");

    // The counter expires once its budget is full again, and lands in the URL's db.
    let mut sync = redis::Client::open(server.url("", 3))
        .unwrap()
        .get_connection()
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg("portcullis:rl:r:sub:a")
        .query(&mut sync)
        .unwrap();
    assert!(pttl > 0 && pttl <= 1600, "{pttl}");
    // NOSCRIPT (an emptied or restarted Redis) falls back to loading the script.
    let () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut sync).unwrap();
    assert!(
        limiter::take(&redis, "portcullis:rl:r:sub:c", BUDGET)
            .await
            .unwrap()
            .allowed
    );
}

#[tokio::test]
async fn a_dead_redis_fails_fast_and_a_restarted_one_is_used_again() {
    let mut server = redis_server(&[]);
    let gauge = Gauge::default();
    let redis = Redis::start(&config(&server.url("", 3)), gauge.clone()).unwrap();
    until("up", || gauge.get() == 1).await;
    assert!(limiter::take(&redis, "k", BUDGET).await.is_ok());

    server.kill();
    // The call that meets the dead server fails within the timeout (plus the
    // scheduler's slack), then Redis counts as down.
    let started = Instant::now();
    let _ = limiter::take(&redis, "k", BUDGET).await;
    assert!(started.elapsed() < Duration::from_millis(500));
    until("down", || !redis.is_up()).await;
    assert_eq!(gauge.get(), 0);
    // While down, callers do not wait on Redis at all.
    let started = Instant::now();
    for _ in 0..100 {
        assert!(limiter::take(&redis, "k", BUDGET).await.is_err());
    }
    assert!(started.elapsed() < Duration::from_millis(50));

    server.restart().unwrap();
    until("up again", || redis.is_up()).await;
    assert_eq!(gauge.get(), 1);
    assert!(limiter::take(&redis, "k", BUDGET).await.unwrap().allowed);
}

#[tokio::test]
async fn a_restart_between_two_requests_costs_no_false_alarm() {
    let mut server = redis_server(&[]);
    let gauge = Gauge::default();
    // The probe pings once at start, then not again during this test: only the
    // requests' own connection sees the restart.
    let redis = Redis::start_probing_every(
        &config(&server.url("", 3)),
        gauge.clone(),
        Duration::from_secs(3600),
    )
    .unwrap();
    until("up", || gauge.get() == 1).await;
    // Until this thread's connection is dialled, the probe's serves; wait for it.
    assert!(limiter::take(&redis, "k", BUDGET).await.is_ok());
    until("this thread's connection", || {
        per_thread::ready(&redis.link)
    })
    .await;
    assert!(limiter::take(&redis, "k", BUDGET).await.is_ok());
    server.restart().unwrap();
    // The thread's connection is dead; the call redials once and answers.
    let t = limiter::take(&redis, "k2", BUDGET).await.unwrap();
    assert!(t.allowed);
    assert!(redis.is_up());
    assert_eq!(gauge.get(), 1);
}

#[tokio::test]
async fn a_hung_redis_never_holds_a_request_past_the_timeout() {
    let server = redis_server(&[]);
    let redis = Redis::start(
        &config_timeout(&server.url("", 3), "100ms"),
        Gauge::default(),
    )
    .unwrap();
    assert!(limiter::take(&redis, "k", BUDGET).await.is_ok());
    server.signal("-STOP").unwrap();
    for _ in 0..DOWN_AFTER {
        let started = Instant::now();
        let result = limiter::take(&redis, "k", BUDGET).await;
        let waited = started.elapsed();
        assert!(result.is_err());
        assert!(
            waited >= Duration::from_millis(90) && waited < Duration::from_millis(400),
            "{waited:?}"
        );
    }
    // Down now: the next caller does not wait at all.
    let started = Instant::now();
    assert!(limiter::take(&redis, "k", BUDGET).await.is_err());
    assert!(started.elapsed() < Duration::from_millis(10));
    server.signal("-CONT").unwrap();
    assert!(!redis.is_up());
    until("up after SIGCONT", || redis.is_up()).await;
}

#[tokio::test]
async fn acl_users_and_passwords_work_and_never_show_in_errors() {
    let server = redis_server(&[
        "--user",
        "default",
        "off",
        "--user",
        "portcullis",
        "on",
        ">pa55-w0rd",
        "~portcullis:*",
        "-@all",
        "+evalsha",
        "+eval",
        "+script|load",
        "+ping",
        "+select",
        "+get",
        "+set",
        "+time",
    ]);
    let good = Redis::start(
        &config(&server.url("portcullis:pa55-w0rd@", 3)),
        Gauge::default(),
    )
    .unwrap();
    assert!(
        limiter::take(&good, "portcullis:rl:r:x", BUDGET)
            .await
            .unwrap()
            .allowed
    );
    let bad = Redis::start(
        &config(&server.url("portcullis:wr0ng-pa55@", 3)),
        Gauge::default(),
    )
    .unwrap();
    let err = limiter::take(&bad, "portcullis:rl:r:x", BUDGET)
        .await
        .unwrap_err();
    assert!(!err.0.contains("wr0ng-pa55"), "{err}");
    until("down", || !bad.is_up()).await;
}

/// A CA and a `localhost` certificate it signed, as PEM files in `dir`:
/// (ca, cert, key).
fn tls_files(dir: &std::path::Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    (
        write("ca.pem", ca_cert.pem()),
        write("cert.pem", leaf.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

#[tokio::test]
async fn rediss_with_a_private_ca_and_not_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(dir.path());
    // TLS on the helper's port; the plain one closed.
    let server = redis_server(&[
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://localhost:{}/1", server.port);
    let mut trusted = config(&url);
    trusted.ca_file = Some(ca.clone());
    let redis = Redis::start(&trusted, Gauge::default()).unwrap();
    assert!(
        limiter::take(&redis, "portcullis:rl:tls:k", BUDGET)
            .await
            .unwrap()
            .allowed
    );
    // The Mozilla roots do not know this CA: refused (down), no panic.
    let untrusted = Redis::start(&config(&url), Gauge::default()).unwrap();
    assert!(limiter::take(&untrusted, "portcullis:rl:tls:k", BUDGET)
        .await
        .is_err());
    until("down", || !untrusted.is_up()).await;
    // A ca_file that is no PEM bundle is refused by `check`, before any connection.
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    trusted.ca_file = Some(bogus.display().to_string());
    assert!(Redis::check(&trusted)
        .unwrap_err()
        .contains("shared_state.ca_file"));
}

#[test]
fn passwords_are_found_and_scrubbed() {
    assert_eq!(
        password("redis://u:p%40ss@h:1/0").as_deref(),
        Some("p%40ss")
    );
    assert_eq!(password("rediss://secret@h/0").as_deref(), Some("secret"));
    assert_eq!(password("redis://h:6379/0"), None);
    assert_eq!(password("redis://h/0?x=a@b"), None);
    assert_eq!(
        scrub("auth p%40ss failed", Some("p%40ss")),
        "auth *** failed"
    );
    assert_eq!(scrub("fine", Some("")), "fine");
}

#[test]
fn check_refuses_what_the_client_would() {
    let err = Redis::check(&config("redis://u:s3cret@cache:6379/0?protocol=bogus")).unwrap_err();
    assert!(!err.contains("s3cret"), "{err}");
    assert!(Redis::check(&config("rediss://cache:6380/1")).is_ok());
}

/// A session store (`login::SessionStore`) keeps a `Redis` and returns boxed
/// `Send` futures: the handle must be `Send + Sync` and [`Redis::run`]'s future
/// `Send`. Checked when this compiles.
#[allow(dead_code)]
fn fits_a_session_store(
    redis: &Redis,
) -> impl Future<Output = Result<String, Unavailable>> + Send + '_ {
    fn send_sync<T: Send + Sync>(_: &T) {}
    send_sync(redis);
    redis.run(|mut conn| async move { redis::cmd("PING").query_async::<String>(&mut conn).await })
}
