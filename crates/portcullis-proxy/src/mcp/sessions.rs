//! `Mcp-Session-Id` bindings (SPEC §10): a session belongs to the caller whose
//! request created it. The proxy learns the id from the server's answer and
//! from then on forwards a request carrying it only for that same caller;
//! anyone else — and anyone presenting an id the proxy never saw the server
//! issue — gets 404, which MCP clients answer by starting a new session.
//!
//! Here in memory, per process: bindings survive config reloads but not
//! restarts. With `shared_state` they live in Redis instead
//! ([`super::shared_bindings`]), and these serve only while Redis is down.
//! Bounded: at most [`MAX_SESSIONS`], idle ones expire after [`IDLE`], and
//! when full the least recently used goes.

use portcullis_core::Identity;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_SESSIONS: usize = 100_000;
pub const IDLE: Duration = Duration::from_secs(24 * 3600);

/// Who a session belongs to: what identifies a caller across its requests.
pub fn owner_of(identity: &Identity) -> String {
    format!(
        "{}\u{0}{}\u{0}{}\u{0}{}",
        identity.kind.as_str(),
        identity.issuer.as_deref().unwrap_or(""),
        identity.subject,
        identity.workload.as_deref().unwrap_or("")
    )
}

struct Entry {
    owner: String,
    used: Instant,
}

/// The session bindings of every MCP route.
pub struct Sessions {
    map: Mutex<HashMap<(String, String), Entry>>,
    max: usize,
    idle: Duration,
}

/// Whether a request may use the session it names.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Its creator's.
    Owned,
    /// Another caller's, or unknown.
    Refused,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::with_limits(MAX_SESSIONS, IDLE)
    }
}

impl Sessions {
    pub fn with_limits(max: usize, idle: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
            idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        // A panic elsewhere while holding it leaves a map that is still consistent.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May `owner` use session `id` on `route`?
    pub fn check(&self, route: &str, id: &str, owner: &str, now: Instant) -> Check {
        let mut map = self.lock();
        let key = (route.to_string(), id.to_string());
        match map.get_mut(&key) {
            Some(e) if now.duration_since(e.used) > self.idle => {
                map.remove(&key);
                Check::Refused
            }
            Some(e) if e.owner == owner => {
                e.used = now;
                Check::Owned
            }
            Some(_) | None => Check::Refused,
        }
    }

    /// The server issued session `id` in answer to `owner`: bind it, unless it is
    /// already bound (the first binding stands).
    pub fn bind(&self, route: &str, id: &str, owner: &str, now: Instant) {
        let mut map = self.lock();
        let key = (route.to_string(), id.to_string());
        if map.contains_key(&key) {
            return;
        }
        if map.len() >= self.max {
            let idle = self.idle;
            map.retain(|_, e| now.duration_since(e.used) <= idle);
        }
        if map.len() >= self.max {
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(
            key,
            Entry {
                owner: owner.to_string(),
                used: now,
            },
        );
    }

    /// The session ended (its owner deleted it).
    pub fn end(&self, route: &str, id: &str) {
        self.lock().remove(&(route.to_string(), id.to_string()));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_its_creators() {
        let s = Sessions::default();
        let t = Instant::now();
        assert_eq!(s.check("r", "abc", "alice", t), Check::Refused, "unknown");
        s.bind("r", "abc", "alice", t);
        assert_eq!(s.check("r", "abc", "alice", t), Check::Owned);
        assert_eq!(s.check("r", "abc", "mallory", t), Check::Refused);
        assert_eq!(s.check("other-route", "abc", "alice", t), Check::Refused);
        // A second binding of the same id does not take it over.
        s.bind("r", "abc", "mallory", t);
        assert_eq!(s.check("r", "abc", "mallory", t), Check::Refused);
        s.end("r", "abc");
        assert_eq!(s.check("r", "abc", "alice", t), Check::Refused);
    }

    #[test]
    fn owners_differ_by_issuer_subject_and_workload() {
        let mut a = Identity::anonymous();
        a.kind = portcullis_core::IdentityKind::Service;
        a.subject = "bot".into();
        a.issuer = Some("https://a".into());
        let mut b = a.clone();
        b.issuer = Some("https://b".into());
        let mut c = a.clone();
        c.workload = Some("spiffe://x/y".into());
        let owners = [
            owner_of(&a),
            owner_of(&b),
            owner_of(&c),
            owner_of(&Identity::anonymous()),
        ];
        for (i, x) in owners.iter().enumerate() {
            for (j, y) in owners.iter().enumerate() {
                assert_eq!(i == j, x == y);
            }
        }
    }

    #[test]
    fn bounded_and_expiring() {
        let s = Sessions::with_limits(3, Duration::from_secs(60));
        let t = Instant::now();
        for i in 0..10u64 {
            s.bind("r", &i.to_string(), "alice", t + Duration::from_millis(i));
        }
        assert_eq!(s.len(), 3);
        // The newest survive.
        assert_eq!(
            s.check("r", "9", "alice", t + Duration::from_millis(20)),
            Check::Owned
        );
        assert_eq!(s.check("r", "0", "alice", t), Check::Refused);
        // Idle past the limit: gone.
        assert_eq!(
            s.check("r", "9", "alice", t + Duration::from_secs(120)),
            Check::Refused
        );
    }
}
