//! Against a real `redis-server` (Debian's; scripts/test installs it), started
//! on a free loopback port without persistence. Two stores on one Redis are
//! two replicas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::login::now;
use crate::shared_state::SharedState;
use portcullis_core::IdentityKind;
use portcullis_testkit::RedisServer;
use prometheus_client::metrics::gauge::Gauge;

const SECRET: &str = "a-cookie-secret-of-at-least-32-bytes!!";

fn replica(server: &RedisServer, secret: &str) -> RedisStore {
    replica_idle(server, secret, 3600)
}

/// A replica whose `login.idle_timeout` is `idle` seconds.
fn replica_idle(server: &RedisServer, secret: &str, idle: u64) -> RedisStore {
    let cfg = crate::shared_state::tests::config(&server.url("", 4));
    let state = SharedState::start(&cfg, Gauge::default()).unwrap();
    RedisStore::new(state.redis, secret, idle).unwrap()
}

fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url("", 4))
        .unwrap()
        .get_connection()
        .unwrap()
}

fn session(sub: &str, sid: Option<&str>) -> Arc<Session> {
    let now = now();
    Arc::new(Session {
        identity: Identity {
            kind: IdentityKind::User,
            subject: sub.to_string(),
            provider: Some("idp".into()),
            groups: vec!["admins".into()],
            claims: Arc::new(serde_json::json!({"sub": sub, "tier": "gold"})),
            expires_at: Some(now + 300),
            ..Identity::default()
        },
        sid: sid.map(str::to_string),
        csrf: "csrf-token".into(),
        created_at: now,
        expires_at: now + 3600,
        tokens: Tokens {
            id_token: "eyJ.id-token-secret.sig".into(),
            refresh_token: Some("refresh-token-secret".into()),
            access_expires_at: now + 300,
        },
        generation: 0,
        last_seen: AtomicU64::new(now),
        refreshing: Arc::default(),
    })
}

#[tokio::test]
async fn a_session_stored_by_one_replica_is_found_by_another_sealed_and_expiring() {
    let server = RedisServer::start(&[]).unwrap();
    let (one, two) = (replica(&server, SECRET), replica(&server, SECRET));
    one.put("k1", session("alice", Some("s1"))).await.unwrap();
    let found = two
        .get("k1")
        .await
        .unwrap()
        .expect("the other replica finds it");
    assert_eq!(found.identity.subject, "alice");
    assert_eq!(found.identity.groups, ["admins"]);
    assert_eq!(found.identity.claims["tier"], "gold");
    assert_eq!(found.sid.as_deref(), Some("s1"));
    assert_eq!(
        found.tokens.refresh_token.as_deref(),
        Some("refresh-token-secret")
    );
    assert_eq!(two.held().await.unwrap(), 1);

    let mut conn = raw(&server);
    let sealed: Vec<u8> = redis::cmd("HGET")
        .arg("portcullis:session:k1")
        .arg("d")
        .query(&mut conn)
        .unwrap();
    let text = String::from_utf8_lossy(&sealed);
    for secret in [
        "refresh-token-secret",
        "id-token-secret",
        "alice",
        "csrf-token",
    ] {
        assert!(!text.contains(secret), "{secret} is readable in Redis");
    }
    let ttl: i64 = redis::cmd("TTL")
        .arg("portcullis:session:k1")
        .query(&mut conn)
        .unwrap();
    assert!(
        (3590..=3600).contains(&ttl),
        "the key lives as long as the session: {ttl}"
    );
    let index_ttl: i64 = redis::cmd("TTL")
        .arg("portcullis:session-sub:idp:alice")
        .query(&mut conn)
        .unwrap();
    assert!(index_ttl >= 3590, "{index_ttl}");
}

#[tokio::test]
async fn a_record_moved_under_another_key_or_sealed_with_another_secret_is_no_session() {
    let server = RedisServer::start(&[]).unwrap();
    let store = replica(&server, SECRET);
    store.put("k1", session("alice", None)).await.unwrap();
    let mut conn = raw(&server);
    // Someone with write access to Redis copies alice's record under their own key.
    let sealed: Vec<u8> = redis::cmd("HGET")
        .arg("portcullis:session:k1")
        .arg("d")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("portcullis:session:mallory")
        .arg("d")
        .arg(&sealed)
        .arg("s")
        .arg(now())
        .query(&mut conn)
        .unwrap();
    assert!(store.get("mallory").await.unwrap().is_none());
    // A flipped bit is no session either.
    let mut flipped = sealed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let _: () = redis::cmd("HSET")
        .arg("portcullis:session:k1")
        .arg("d")
        .arg(&flipped)
        .query(&mut conn)
        .unwrap();
    assert!(store.get("k1").await.unwrap().is_none());
    // The genuine record opens only with the same cookie secret.
    store.put("k2", session("alice", None)).await.unwrap();
    let other = replica(&server, "another-cookie-secret-of-32-bytes-or-more");
    assert!(other.get("k2").await.unwrap().is_none());
    assert!(store.get("k2").await.unwrap().is_some());
}

#[tokio::test]
async fn a_refresh_never_brings_back_a_session_that_ended() {
    let server = RedisServer::start(&[]).unwrap();
    let store = replica(&server, SECRET);
    let s = session("alice", None);
    store.put("k1", s.clone()).await.unwrap();
    let turn = store.refresh_turn("k1", &s).await.unwrap();
    assert!(store.update("k1", s.clone(), &turn).await.unwrap());
    store.remove("k1").await.unwrap();
    assert!(!store.update("k1", s.clone(), &turn).await.unwrap());
    assert!(store.get("k1").await.unwrap().is_none());
    // Nor does a late touch recreate it.
    let stale = session("alice", None);
    stale.last_seen.store(0, Ordering::Relaxed);
    store.touch("k1", &stale, now()).await.unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg("portcullis:session:k1")
        .query(&mut raw(&server))
        .unwrap();
    assert_eq!(exists, 0);
    assert_eq!(store.held().await.unwrap(), 0);
}

#[tokio::test]
async fn use_is_written_back_at_most_every_touch_interval() {
    let server = RedisServer::start(&[]).unwrap();
    let store = replica(&server, SECRET);
    let s = session("alice", None);
    store.put("k1", s.clone()).await.unwrap();
    let seen = |store: &RedisStore| {
        let mut conn = raw(&server);
        let _ = store;
        redis::cmd("HGET")
            .arg("portcullis:session:k1")
            .arg("s")
            .query::<u64>(&mut conn)
            .unwrap()
    };
    let first = seen(&store);
    store.touch("k1", &s, first + 1).await.unwrap();
    assert_eq!(
        seen(&store),
        first,
        "a touch within the interval writes nothing"
    );
    store.touch("k1", &s, first + TOUCH_EVERY).await.unwrap();
    assert_eq!(seen(&store), first + TOUCH_EVERY);
    assert_eq!(
        store
            .get("k1")
            .await
            .unwrap()
            .unwrap()
            .last_seen
            .load(Ordering::Relaxed),
        first + TOUCH_EVERY
    );
}

#[tokio::test]
async fn logout_by_sid_or_sub_ends_the_matching_sessions_of_every_replica() {
    let server = RedisServer::start(&[]).unwrap();
    let (one, two) = (replica(&server, SECRET), replica(&server, SECRET));
    one.put("a1", session("alice", Some("s1"))).await.unwrap();
    one.put("a2", session("alice", Some("s2"))).await.unwrap();
    two.put("a3", session("alice", None)).await.unwrap();
    two.put("b1", session("bob", Some("s1"))).await.unwrap();
    assert_eq!(one.held().await.unwrap(), 4);
    // sid and sub: both must agree; a session without a sid is found by its sub.
    assert_eq!(
        two.remove_matching("idp", Some("s1"), Some("alice"))
            .await
            .unwrap(),
        2
    );
    assert!(one.get("a1").await.unwrap().is_none());
    assert!(one.get("a3").await.unwrap().is_none());
    assert!(one.get("a2").await.unwrap().is_some());
    assert!(
        one.get("b1").await.unwrap().is_some(),
        "bob's session shares the sid, not the sub"
    );
    // Another provider's logout ends nothing.
    assert_eq!(
        one.remove_matching("other", None, Some("alice"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        one.remove_matching("idp", None, Some("alice"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        one.remove_matching("idp", Some("s1"), None).await.unwrap(),
        1
    );
    assert_eq!(two.held().await.unwrap(), 0);
    assert_eq!(one.remove_matching("idp", None, None).await.unwrap(), 0);
}

#[tokio::test]
async fn one_refresh_at_a_time_across_replicas() {
    let server = RedisServer::start(&[]).unwrap();
    let (one, two) = (replica(&server, SECRET), replica(&server, SECRET));
    let s = session("alice", None);
    let turn = one.refresh_turn("k1", &s).await.unwrap();
    let waiting = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let _turn = two
            .refresh_turn("k1", &session("alice", None))
            .await
            .unwrap();
        started.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the second replica waits for the first"
    );
    drop(turn);
    let waited = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
}

#[tokio::test]
async fn redis_gone_is_an_error_never_a_missing_session() {
    let mut server = RedisServer::start(&[]).unwrap();
    let store = replica(&server, SECRET);
    store.put("k1", session("alice", None)).await.unwrap();
    server.kill();
    assert!(store.get("k1").await.is_err());
    assert!(store
        .remove_matching("idp", None, Some("alice"))
        .await
        .is_err());
    assert!(store.held().await.is_err());
}

#[tokio::test]
async fn a_refresh_whose_turn_lapsed_is_not_written() {
    let server = RedisServer::start(&[]).unwrap();
    let (one, two) = (replica(&server, SECRET), replica(&server, SECRET));
    let s = session("alice", None);
    one.put("k1", s.clone()).await.unwrap();
    let turn = one.refresh_turn("k1", &s).await.unwrap();
    // The lock expires (a refresh slower than LOCK_TTL) and another replica takes it.
    let _: () = redis::cmd("DEL")
        .arg("portcullis:session-lock:k1")
        .query(&mut raw(&server))
        .unwrap();
    let theirs = two.refresh_turn("k1", &s).await.unwrap();
    let mut late = session("alice", None);
    Arc::get_mut(&mut late).unwrap().generation = 7;
    assert!(!one.update("k1", late.clone(), &turn).await.unwrap());
    assert_eq!(one.get("k1").await.unwrap().unwrap().generation, 0);
    assert!(two.update("k1", late, &theirs).await.unwrap());
    assert_eq!(one.get("k1").await.unwrap().unwrap().generation, 7);
}

#[tokio::test]
async fn ending_a_session_takes_it_out_of_its_indexes_and_idle_sessions_expire_early() {
    let server = RedisServer::start(&[]).unwrap();
    let store = replica(&server, SECRET);
    store.put("k1", session("alice", Some("s1"))).await.unwrap();
    let mut conn = raw(&server);
    let members = |conn: &mut redis::Connection, index: &str| -> Vec<String> {
        redis::cmd("SMEMBERS").arg(index).query(conn).unwrap()
    };
    assert_eq!(
        members(&mut conn, "portcullis:session-sub:idp:alice"),
        ["k1"]
    );
    assert_eq!(members(&mut conn, "portcullis:session-sid:idp:s1"), ["k1"]);
    store.remove("k1").await.unwrap();
    assert!(members(&mut conn, "portcullis:session-sub:idp:alice").is_empty());
    assert!(members(&mut conn, "portcullis:session-sid:idp:s1").is_empty());

    // An idle timeout shorter than the session: the key goes when idle ends.
    let yaml_store = replica_idle(&server, SECRET, 60);
    yaml_store.put("k2", session("bob", None)).await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg("portcullis:session:k2")
        .query(&mut conn)
        .unwrap();
    assert!(
        (60..=60 + i64::try_from(TOUCH_EVERY).unwrap()).contains(&ttl),
        "{ttl}"
    );

    // A session already over is not stored, and leaves no index behind.
    let over = session("carol", None);
    let mut over = Arc::try_unwrap(over).ok().unwrap();
    over.expires_at = now() - 1;
    yaml_store.put("k3", Arc::new(over)).await.unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg("portcullis:session:k3")
        .arg("portcullis:session-sub:idp:carol")
        .query(&mut conn)
        .unwrap();
    assert_eq!(exists, 0);
}
