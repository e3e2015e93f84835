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
//! when full the least recently used eighth goes at once (one scan per many
//! new sessions, not one per session). One caller holds at most
//! [`MAX_PER_OWNER`]: past it its own oldest binding goes, so a caller that
//! opens sessions in a loop pushes out its own, not everyone else's.

use portcullis_core::Identity;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_SESSIONS: usize = 100_000;
pub const IDLE: Duration = Duration::from_secs(24 * 3600);
pub const MAX_PER_OWNER: usize = 1_000;

type Key = (String, String);

#[derive(Default)]
struct Bindings {
    map: HashMap<Key, Entry>,
    /// Each owner's bindings, oldest first. May name bindings already gone
    /// (ended, expired, evicted): those are skipped, and swept with the map.
    by_owner: HashMap<String, VecDeque<Key>>,
}

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
    map: Mutex<Bindings>,
    max: usize,
    per_owner: usize,
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
        Sessions::with_limits(MAX_SESSIONS, MAX_PER_OWNER, IDLE)
    }
}

impl Sessions {
    pub fn with_limits(max: usize, per_owner: usize, idle: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(Bindings::default()),
            max: max.max(1),
            per_owner: per_owner.max(1),
            idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bindings> {
        crate::sync::lock(&self.map)
    }

    /// May `owner` use session `id` on `route`?
    pub fn check(&self, route: &str, id: &str, owner: &str, now: Instant) -> Check {
        let mut guard = self.lock();
        let map = &mut guard.map;
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
        let mut guard = self.lock();
        let b = &mut *guard;
        let key = (route.to_string(), id.to_string());
        if b.map.contains_key(&key) {
            return;
        }
        let mine = b.by_owner.entry(owner.to_string()).or_default();
        while mine.len() >= self.per_owner {
            let Some(old) = mine.pop_front() else { break };
            if b.map.get(&old).is_some_and(|e| e.owner == owner) {
                b.map.remove(&old);
            }
        }
        mine.push_back(key.clone());
        if b.map.len() >= self.max {
            self.make_room(b, now);
        }
        b.map.insert(
            key,
            Entry {
                owner: owner.to_string(),
                used: now,
            },
        );
    }

    /// The map is full: drop what is idle, else the least recently used eighth.
    fn make_room(&self, b: &mut Bindings, now: Instant) {
        let idle = self.idle;
        b.map.retain(|_, e| now.duration_since(e.used) <= idle);
        if b.map.len() >= self.max {
            let mut used: Vec<Instant> = b.map.values().map(|e| e.used).collect();
            let drop = (self.max / 8).clamp(1, used.len());
            let (_, cutoff, _) = used.select_nth_unstable(drop - 1);
            let cutoff = *cutoff;
            let mut dropped = 0;
            b.map.retain(|_, e| {
                let old = e.used <= cutoff && dropped < drop;
                dropped += usize::from(old);
                !old
            });
        }
        let map = &b.map;
        b.by_owner.retain(|_, keys| {
            keys.retain(|k| map.contains_key(k));
            !keys.is_empty()
        });
    }

    /// The session ended (its owner deleted it).
    pub fn end(&self, route: &str, id: &str) {
        self.lock().map.remove(&(route.to_string(), id.to_string()));
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
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
    fn one_caller_opening_sessions_pushes_out_only_its_own() {
        let s = Sessions::with_limits(100, 4, Duration::from_secs(60));
        let t = Instant::now();
        s.bind("r", "alice-1", "alice", t);
        for i in 0..1000u64 {
            s.bind(
                "r",
                &format!("m{i}"),
                "mallory",
                t + Duration::from_millis(i),
            );
        }
        assert_eq!(s.check("r", "alice-1", "alice", t), Check::Owned);
        assert_eq!(s.len(), 5);
        // Mallory keeps her newest four.
        assert_eq!(s.check("r", "m999", "mallory", t), Check::Owned);
        assert_eq!(s.check("r", "m995", "mallory", t), Check::Refused);
    }

    #[test]
    fn a_full_map_makes_room_for_many_at_once() {
        let s = Sessions::with_limits(80, 1000, Duration::from_secs(60));
        let t = Instant::now();
        for i in 0..80u64 {
            s.bind(
                "r",
                &i.to_string(),
                &format!("o{i}"),
                t + Duration::from_millis(i),
            );
        }
        s.bind("r", "new", "n", t + Duration::from_secs(1));
        // The oldest eighth (10 of 80) went, the rest stayed.
        assert_eq!(s.len(), 80 - 10 + 1);
        assert_eq!(s.check("r", "9", "o9", t), Check::Refused);
        assert_eq!(s.check("r", "10", "o10", t), Check::Owned);
    }

    #[test]
    fn bounded_and_expiring() {
        let s = Sessions::with_limits(3, 10, Duration::from_secs(60));
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
