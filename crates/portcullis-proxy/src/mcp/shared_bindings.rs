//! `Mcp-Session-Id` bindings shared by every replica through Redis (with
//! `shared_state`), so an MCP client whose requests a load balancer spreads
//! over replicas keeps its session on all of them.
//!
//! One key per binding, `portcullis:mcp-session:ROUTE:ID` (the id hashed when
//! long), holding a SHA-256 of the owner (no identity is stored in the clear)
//! and expiring after [`super::sessions::IDLE`] without use. A check is one
//! script call (compare, and renew only for the owner: another caller's
//! probes never keep a binding alive), a binding one script call: `SET NX`
//! (the first stands), and the owner's index `portcullis:mcp-owner:DIGEST`, a
//! sorted set of its bindings by age, trimmed to
//! [`super::sessions::MAX_PER_OWNER`] by dropping its oldest: as in memory, a
//! caller that opens sessions in a loop pushes out its own, and cannot fill
//! the Redis that also holds everyone's sign-ins and rate limits.
//!
//! Redis down: this replica's own bindings ([`Sessions`]) answer instead. That
//! fails closed: a session bound in Redis is unknown here (404, and the client
//! starts a new one, which binds locally); nothing unknown is ever let through.

use super::sessions::{Check, Sessions, IDLE, MAX_PER_OWNER};
use crate::shared_state::{key, sha256_hex, Redis};
use std::sync::LazyLock;
use std::time::Instant;

/// KEYS: the binding, the owner's index. ARGV: the caller's owner digest,
/// the idle TTL. Returns 1 (and renews the binding and the index, which must
/// outlive every binding it counts) when the caller owns it.
static CHECK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
",
    )
});

/// KEYS: the binding, the owner's index. ARGV: the owner digest, the idle
/// TTL, the most bindings one owner keeps. Returns 1 when it bound.
static BIND: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.replicate_commands()
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], tonumber(t[1]) * 1000000 + tonumber(t[2]), KEYS[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if over > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do
    if redis.call('GET', old) == ARGV[1] then redis.call('DEL', old) end
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
return 1
",
    )
});

/// KEYS: the binding, the owner's index.
static END: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return 0
",
    )
});

fn owner_index(digest: &str) -> String {
    format!("portcullis:mcp-owner:{digest}")
}

fn binding_key(route: &str, id: &str) -> String {
    key(&format!("portcullis:mcp-session:{route}:"), id)
}

/// The owner as stored: a digest, so Redis holds no subject or issuer.
fn owner_digest(owner: &str) -> String {
    sha256_hex(owner.as_bytes())
}

/// May `owner` use session `id` on `route`? In Redis when there is one that
/// answers, else in `local`.
pub async fn check(
    redis: Option<&Redis>,
    local: &Sessions,
    route: &str,
    id: &str,
    owner: &str,
) -> Check {
    let Some(redis) = redis else {
        return local.check(route, id, owner, Instant::now());
    };
    let (k, digest) = (binding_key(route, id), owner_digest(owner));
    let index = owner_index(&digest);
    let owned: Result<i64, _> = redis
        .run(|mut conn| {
            let mut call = CHECK.prepare_invoke();
            call.key(&k).key(&index).arg(&digest).arg(IDLE.as_secs());
            async move { call.invoke_async(&mut conn).await }
        })
        .await;
    match owned {
        Ok(1) => Check::Owned,
        Ok(_) => Check::Refused,
        Err(e) => {
            tracing::debug!(error = %e.0, "MCP session bindings: Redis unavailable; this replica's own answer");
            local.check(route, id, owner, Instant::now())
        }
    }
}

/// The server issued session `id` in answer to `owner`: bind it, unless it is
/// already bound (the first binding stands).
pub async fn bind(redis: Option<&Redis>, local: &Sessions, route: &str, id: &str, owner: &str) {
    let Some(redis) = redis else {
        return local.bind(route, id, owner, Instant::now());
    };
    let (k, digest) = (binding_key(route, id), owner_digest(owner));
    let index = owner_index(&digest);
    let stored: Result<i64, _> = redis
        .run(|mut conn| {
            let mut call = BIND.prepare_invoke();
            call.key(&k)
                .key(&index)
                .arg(&digest)
                .arg(IDLE.as_secs())
                .arg(MAX_PER_OWNER);
            async move { call.invoke_async(&mut conn).await }
        })
        .await;
    if let Err(e) = stored {
        tracing::debug!(error = %e.0, "MCP session bindings: Redis unavailable; bound on this replica only");
        local.bind(route, id, owner, Instant::now());
    }
}

/// The session ended (its owner deleted it): everywhere it may be bound.
pub async fn end(redis: Option<&Redis>, local: &Sessions, route: &str, id: &str, owner: &str) {
    local.end(route, id);
    if let Some(redis) = redis {
        let k = binding_key(route, id);
        let index = owner_index(&owner_digest(owner));
        let _ = redis
            .run(|mut conn| {
                let mut call = END.prepare_invoke();
                call.key(&k).key(&index);
                async move { call.invoke_async::<i64>(&mut conn).await }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::shared_state::SharedState;
    use portcullis_testkit::RedisServer;
    use prometheus_client::metrics::gauge::Gauge;

    fn redis(server: &RedisServer) -> Redis {
        let cfg = crate::shared_state::tests::config(&server.url("", 5));
        SharedState::start(&cfg, Gauge::default()).unwrap().redis
    }

    #[tokio::test]
    async fn a_binding_made_on_one_replica_holds_on_another() {
        let server = RedisServer::start(&[]).unwrap();
        let (r1, r2) = (redis(&server), redis(&server));
        let (l1, l2) = (Sessions::default(), Sessions::default());
        bind(Some(&r1), &l1, "mcp", "abc", "alice").await;
        assert_eq!(
            check(Some(&r2), &l2, "mcp", "abc", "alice").await,
            Check::Owned
        );
        assert_eq!(
            check(Some(&r2), &l2, "mcp", "abc", "mallory").await,
            Check::Refused
        );
        assert_eq!(
            check(Some(&r2), &l2, "other", "abc", "alice").await,
            Check::Refused
        );
        assert_eq!(
            check(Some(&r2), &l2, "mcp", "never-issued", "alice").await,
            Check::Refused
        );
        // Another caller's probe does not keep the binding alive.
        let mut conn = redis::Client::open(server.url("", 5))
            .unwrap()
            .get_connection()
            .unwrap();
        let ttl_now = |conn: &mut redis::Connection| -> i64 {
            redis::cmd("TTL")
                .arg("portcullis:mcp-session:mcp:abc")
                .query(conn)
                .unwrap()
        };
        let _: () = redis::cmd("EXPIRE")
            .arg("portcullis:mcp-session:mcp:abc")
            .arg(100)
            .query(&mut conn)
            .unwrap();
        check(Some(&r2), &l2, "mcp", "abc", "mallory").await;
        assert!(ttl_now(&mut conn) <= 100);
        check(Some(&r2), &l2, "mcp", "abc", "alice").await;
        assert!(ttl_now(&mut conn) > 100);
        // The first binding stands, on any replica.
        bind(Some(&r2), &l2, "mcp", "abc", "mallory").await;
        assert_eq!(
            check(Some(&r1), &l1, "mcp", "abc", "mallory").await,
            Check::Refused
        );
        // Nothing about the owner is readable in Redis.
        let stored: String = redis::cmd("GET")
            .arg("portcullis:mcp-session:mcp:abc")
            .query(&mut conn)
            .unwrap();
        assert!(!stored.contains("alice") && stored.len() == 64);
        let ttl: i64 = redis::cmd("TTL")
            .arg("portcullis:mcp-session:mcp:abc")
            .query(&mut conn)
            .unwrap();
        assert!(ttl > 0 && ttl <= i64::try_from(IDLE.as_secs()).unwrap());
        end(Some(&r2), &l2, "mcp", "abc", "alice").await;
        assert_eq!(
            check(Some(&r1), &l1, "mcp", "abc", "alice").await,
            Check::Refused
        );
    }

    /// One caller opening sessions in a loop keeps at most `MAX_PER_OWNER`
    /// bindings in Redis, its oldest pushed out; nobody else's go.
    #[tokio::test]
    async fn a_caller_that_opens_sessions_in_a_loop_pushes_out_its_own() {
        let server = RedisServer::start(&[]).unwrap();
        let r = redis(&server);
        let local = Sessions::default();
        bind(Some(&r), &local, "mcp", "alices", "alice").await;
        let extra = 5;
        for i in 0..MAX_PER_OWNER + extra {
            bind(Some(&r), &local, "mcp", &format!("m{i}"), "mallory").await;
        }
        let mut conn = redis::Client::open(server.url("", 5))
            .unwrap()
            .get_connection()
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("portcullis:mcp-session:*")
            .query(&mut conn)
            .unwrap();
        assert_eq!(keys.len(), MAX_PER_OWNER + 1);
        let owned = |id: String, who: &'static str| {
            let r = &r;
            let local = &local;
            async move { check(Some(r), local, "mcp", &id, who).await }
        };
        for i in 0..extra {
            assert_eq!(owned(format!("m{i}"), "mallory").await, Check::Refused);
        }
        let newest = format!("m{}", MAX_PER_OWNER + extra - 1);
        assert_eq!(owned(newest, "mallory").await, Check::Owned);
        assert_eq!(owned("alices".into(), "alice").await, Check::Owned);
        // A binding kept alive by use keeps its owner's index alive with it:
        // else the index would expire first, and the cap start over.
        let index_ttl = |conn: &mut redis::Connection| -> i64 {
            redis::cmd("TTL")
                .arg(owner_index(&owner_digest("mallory")))
                .query(conn)
                .unwrap()
        };
        let _: () = redis::cmd("EXPIRE")
            .arg(owner_index(&owner_digest("mallory")))
            .arg(100)
            .query(&mut conn)
            .unwrap();
        let newest = format!("m{}", MAX_PER_OWNER + extra - 1);
        assert_eq!(owned(newest, "mallory").await, Check::Owned);
        assert!(index_ttl(&mut conn) > 100);
        // An ended session leaves its owner's index too.
        end(Some(&r), &local, "mcp", "alices", "alice").await;
        let index: i64 = redis::cmd("ZCARD")
            .arg(owner_index(&owner_digest("alice")))
            .query(&mut conn)
            .unwrap();
        assert_eq!(index, 0);
    }

    #[tokio::test]
    async fn redis_gone_falls_back_to_this_replica_and_stays_closed() {
        let mut server = RedisServer::start(&[]).unwrap();
        let r = redis(&server);
        let local = Sessions::default();
        bind(Some(&r), &local, "mcp", "in-redis", "alice").await;
        server.kill();
        // Bound in Redis only: unknown here, refused (the client starts over).
        assert_eq!(
            check(Some(&r), &local, "mcp", "in-redis", "alice").await,
            Check::Refused
        );
        bind(Some(&r), &local, "mcp", "local", "alice").await;
        assert_eq!(
            check(Some(&r), &local, "mcp", "local", "alice").await,
            Check::Owned
        );
        assert_eq!(
            check(Some(&r), &local, "mcp", "local", "mallory").await,
            Check::Refused
        );
    }
}
