use super::*;
use portcullis_core::{Identity, IdentityKind};
use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

/// An in-memory sink that can fail and can accept only part of a write,
/// to exercise the retry path without filling a disk.
#[derive(Default)]
pub(super) struct TestSink {
    pub data: Vec<u8>,
    /// Outcome of the next writes: `Err` fails the call, `Ok(n)` accepts
    /// at most n bytes. Empty: accept everything.
    pub script: VecDeque<Result<usize, io::ErrorKind>>,
    pub calls: usize,
}

impl TestSink {
    pub(super) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        match self.script.pop_front() {
            None => {
                self.data.extend_from_slice(buf);
                Ok(buf.len())
            }
            Some(Ok(max)) => {
                let n = max.min(buf.len());
                self.data.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            Some(Err(kind)) => Err(io::Error::from(kind)),
        }
    }
}

fn test_log(script: Vec<Result<usize, io::ErrorKind>>) -> (AuditLog, Arc<Mutex<TestSink>>) {
    let sink = Arc::new(Mutex::new(TestSink {
        script: script.into(),
        ..TestSink::default()
    }));
    let log = AuditLog::start(AuditSink::Stdout, Some(Sink::Test(Arc::clone(&sink))), 16).unwrap();
    (log, sink)
}

fn sample(i: usize) -> AuditRecord {
    AuditRecord {
        timestamp: AuditTime::now(),
        request_id: format!("req-{i}"),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        client_ip: "203.0.113.7".into(),
        method: "GET".into(),
        host: "api.example.com".into(),
        path: "/api/orders/42".into(),
        route: Some("orders".into()),
        decision: DECISION_ALLOW,
        reason: "allowed",
        rule: Some("readers".into()),
        enforced: true,
        identity: AuditIdentity::anonymous(),
        status: 200,
        duration_ms: 1.5,
        upstream_ms: Some(1.25),
        bytes_out: 512,
        credential: None,
        frontend: "proxy",
        mcp: None,
    }
}

fn identity_json(id: &AuditIdentity) -> serde_json::Value {
    let mut out = Vec::new();
    crate::audit_line::write_identity(id, &mut out);
    serde_json::from_slice(&out).unwrap()
}

fn lines(sink: &Arc<Mutex<TestSink>>) -> Vec<serde_json::Value> {
    let data = lock(sink).data.clone();
    let text = String::from_utf8(data).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "partial last line");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn timestamp_is_rfc3339_utc_with_microseconds() {
    let t = time::macros::datetime!(2026-11-22 16:41:30.123456789 UTC);
    assert_eq!(
        AuditTime::from(t).to_string(),
        "2026-11-22T16:41:30.123456Z"
    );
    let t = time::macros::datetime!(2026-01-02 03:04:05 UTC);
    assert_eq!(
        AuditTime::from(t).to_string(),
        "2026-01-02T03:04:05.000000Z"
    );
    // Another offset is converted, not just relabelled.
    let t = time::macros::datetime!(2026-11-22 18:41:30.5 +02:00);
    assert_eq!(
        format!("\"{}\"", AuditTime::from(t)),
        "\"2026-11-22T16:41:30.500000Z\""
    );
    let epoch = AuditTime::from(SystemTime::UNIX_EPOCH);
    assert_eq!(epoch.to_string(), "1970-01-01T00:00:00.000000Z");
}

#[test]
fn path_without_query_strips_query_and_fragment() {
    assert_eq!(path_without_query("/cb?access_token=abc"), "/cb");
    assert_eq!(path_without_query("/a/b"), "/a/b");
    assert_eq!(path_without_query("/a#frag?x"), "/a");
    assert_eq!(path_without_query("?x=1"), "");
    assert_eq!(path_without_query(""), "");
}

#[test]
fn millis_rounds_to_microseconds() {
    assert_eq!(millis(Duration::from_nanos(12_345_678)), 12.345);
    assert_eq!(millis(Duration::ZERO), 0.0);
}

#[test]
fn numbers_are_json_numbers() {
    for (status, bytes_out) in [(200, 512), (101, 0), (599, u64::MAX)] {
        let rec = AuditRecord {
            status,
            bytes_out,
            ..sample(1)
        };
        let mut line = Vec::new();
        crate::audit_line::write_record(&rec, &mut line);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["status"], status);
        assert_eq!(v["bytes_out"], bytes_out);
        assert_eq!(v["duration_ms"], 1.5);
    }
}

/// SPEC §5: a bearer token in the query (implicit-flow callbacks, some
/// websocket clients) must never reach the audit log.
#[test]
fn no_secret_reaches_the_line() {
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
    let uri = format!("/.portcullis/callback?access_token={token}&state=xyz");
    let identity = Identity {
        kind: IdentityKind::User,
        subject: "alice".into(),
        issuer: Some("https://idp.example.com".into()),
        email: Some("alice@example.com".into()),
        groups: vec!["admins".into()],
        claims: Arc::new(serde_json::json!({ "sub": "alice", "raw": token })),
        ..Identity::default()
    };
    let rec = AuditRecord {
        path: path_without_query(&uri).to_string(),
        identity: AuditIdentity::from_identity(&identity),
        ..sample(1)
    };
    let mut line = Vec::new();
    crate::audit_line::write_record(&rec, &mut line);
    let line = String::from_utf8(line).unwrap();
    assert!(!line.contains(token), "{line}");
    assert!(!line.contains("access_token"), "{line}");
    assert!(!line.contains('?'), "{line}");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["path"], "/.portcullis/callback");
    assert_eq!(v["identity"]["sub"], "alice");
}

#[test]
fn identity_mapping() {
    let workload = Identity {
        kind: IdentityKind::Workload,
        workload: Some("spiffe://example.org/ns/a/sa/b".into()),
        ..Identity::default()
    };
    let v = identity_json(&AuditIdentity::from_identity(&workload));
    assert_eq!(
        v,
        serde_json::json!({
            "type": "workload", "sub": null, "email": null, "issuer": null,
            "client_id": null, "groups": [], "workload": "spiffe://example.org/ns/a/sa/b"
        })
    );
    let v = identity_json(&AuditIdentity::from_identity(&Identity::anonymous()));
    assert_eq!(v["type"], "anonymous");
}

#[test]
fn control_characters_cannot_split_a_line() {
    let (log, sink) = test_log(vec![]);
    log.record(AuditRecord {
        path: "/a\nb\r\n{\"forged\":1}".into(),
        host: "h\u{2028}x".into(),
        ..sample(0)
    });
    log.shutdown();
    let got = lines(&sink);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["path"], "/a\nb\r\n{\"forged\":1}");
}

/// A failing sink (disk full), then partial writes: every line arrives
/// exactly once and whole, and nothing panics.
#[test]
fn write_errors_are_retried_without_loss_or_duplication() {
    use io::ErrorKind::{Interrupted, StorageFull};
    let (log, sink) = test_log(vec![
        Err(StorageFull),
        Err(StorageFull),
        Ok(7),
        Err(Interrupted),
        Ok(100),
        Err(StorageFull),
        Ok(1),
    ]);
    for i in 0..500 {
        log.record(sample(i));
    }
    log.flush();
    log.shutdown();
    let got = lines(&sink);
    assert_eq!(got.len(), 500);
    for (i, v) in got.iter().enumerate() {
        assert_eq!(v["request_id"], format!("req-{i}"));
    }
    assert_eq!(log.lines_written(), 500);
    assert_eq!(log.lines_lost(), 0);
    assert!(lock(&sink).calls >= 7);
}

/// A sink that never recovers does not hang shutdown forever; the loss is
/// counted.
#[test]
fn permanently_failing_sink_gives_up_at_shutdown() {
    let (log, sink) = test_log(vec![Err(io::ErrorKind::StorageFull); 10_000]);
    for i in 0..100 {
        log.record(sample(i));
    }
    let start = Instant::now();
    log.shutdown();
    assert!(start.elapsed() < SHUTDOWN_RETRY + Duration::from_secs(3));
    assert_eq!(log.lines_lost(), 100);
    assert_eq!(log.lines_written(), 0);
    assert!(lock(&sink).data.is_empty());
    // Late records after shutdown: still no panic.
    log.record(sample(100));
}

#[test]
fn record_after_shutdown_is_written_synchronously() {
    let (log, sink) = test_log(vec![]);
    log.record(sample(0));
    log.shutdown();
    log.shutdown();
    log.record(sample(1));
    log.reopen();
    log.flush();
    let got = lines(&sink);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1]["request_id"], "req-1");
    assert_eq!(log.lines_written(), 2);
}

#[test]
fn handle_is_send_sync() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<AuditLog>();
}
