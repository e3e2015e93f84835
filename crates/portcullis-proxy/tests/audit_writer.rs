//! The audit writer against real files (SPEC §7): line format, no line lost
//! under concurrency, rotation by rename with and without SIGHUP, shutdown
//! with a full queue, and the `none` sink.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use portcullis_config::AuditSink;
use portcullis_core::{Identity, IdentityKind};
use portcullis_proxy::audit::{
    path_without_query, AuditIdentity, AuditLog, AuditRecord, AuditTime, DECISION_ALLOW,
    DECISION_DENY,
};
use serde_json::Value;

fn record(id: String) -> AuditRecord {
    AuditRecord {
        timestamp: AuditTime::now(),
        request_id: id,
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        client_ip: "203.0.113.7".into(),
        method: "GET".into(),
        host: "api.example.com".into(),
        path: "/api/orders/42".into(),
        route: Some("orders".into()),
        decision: DECISION_ALLOW,
        reason: "allowed",
        rule: Some("0".into()),
        enforced: true,
        identity: AuditIdentity::anonymous(),
        status: 200,
        duration_ms: 3.25,
        upstream_ms: Some(2.5),
        bytes_out: 1234,
        credential: None,
        frontend: "proxy",
        mcp: None,
    }
}

fn file_sink(path: &Path) -> AuditSink {
    AuditSink::File(path.to_string_lossy().into_owned())
}

/// Every line of the file, parsed; fails on a partial or invalid line.
fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends in a partial line",
        path.display()
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, checked character by character (the crate
/// has no regex dev-dependency): `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$`.
fn is_rfc3339_utc_micros(s: &str) -> bool {
    let pattern = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    s.len() == pattern.len()
        && s.chars().zip(pattern.chars()).all(|(c, p)| match p {
            'd' => c.is_ascii_digit(),
            _ => c == p,
        })
}

#[test]
fn one_line_has_exactly_the_spec_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&file_sink(&path)).unwrap();

    let identity = Identity {
        kind: IdentityKind::User,
        subject: "alice".into(),
        provider: Some("idp".into()),
        issuer: Some("https://idp.example.com".into()),
        email: Some("alice@example.com".into()),
        name: Some("Alice".into()),
        groups: vec!["admins".into(), "dev".into()],
        roles: vec!["editor".into()],
        scopes: vec!["orders:read".into()],
        client_id: Some("web".into()),
        workload: Some("spiffe://example.org/ns/web/sa/frontend".into()),
        ..Identity::default()
    };
    log.record(AuditRecord {
        path: path_without_query("/api/orders?access_token=secret").to_string(),
        decision: DECISION_DENY,
        reason: "insufficient_scope",
        enforced: false,
        identity: AuditIdentity::from_identity(&identity),
        status: 403,
        upstream_ms: None,
        ..record("req-1".into())
    });
    // A request that matched no route, from nobody.
    log.record(AuditRecord {
        route: None,
        rule: None,
        reason: "no_route",
        decision: DECISION_DENY,
        status: 404,
        upstream_ms: None,
        bytes_out: 0,
        ..record("req-2".into())
    });
    log.shutdown();

    let lines = read_lines(&path);
    assert_eq!(lines.len(), 2);
    let v = &lines[0];
    let keys: HashSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let expected: HashSet<&str> = [
        "timestamp",
        "request_id",
        "trace_id",
        "client_ip",
        "method",
        "host",
        "path",
        "route",
        "decision",
        "reason",
        "rule",
        "enforced",
        "identity",
        "status",
        "duration_ms",
        "upstream_ms",
        "bytes_out",
        "credential",
        "frontend",
        "mcp",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected);

    let ts = v["timestamp"].as_str().unwrap();
    assert!(is_rfc3339_utc_micros(ts), "timestamp {ts}");
    assert_eq!(v["request_id"], "req-1");
    assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(v["client_ip"], "203.0.113.7");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["host"], "api.example.com");
    assert_eq!(v["path"], "/api/orders");
    assert_eq!(v["route"], "orders");
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["reason"], "insufficient_scope");
    assert_eq!(v["rule"], "0");
    assert_eq!(v["enforced"], false);
    assert_eq!(v["status"], 403);
    assert_eq!(v["duration_ms"], 3.25);
    assert_eq!(v["upstream_ms"], Value::Null);
    assert_eq!(v["bytes_out"], 1234);
    assert_eq!(v["credential"], Value::Null);
    assert_eq!(v["mcp"], Value::Null);
    assert_eq!(
        v["identity"],
        serde_json::json!({
            "type": "user",
            "sub": "alice",
            "email": "alice@example.com",
            "issuer": "https://idp.example.com",
            "client_id": "web",
            "groups": ["admins", "dev"],
            "workload": "spiffe://example.org/ns/web/sa/frontend",
        })
    );

    let v = &lines[1];
    assert_eq!(v["route"], Value::Null);
    assert_eq!(v["rule"], Value::Null);
    assert_eq!(v["reason"], "no_route");
    assert_eq!(v["upstream_ms"], Value::Null);
    assert_eq!(v["identity"]["type"], "anonymous");
    assert_eq!(v["identity"]["sub"], Value::Null);
    assert_eq!(v["identity"]["groups"], serde_json::json!([]));

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("secret"));
    assert!(!text.contains('?'));
}

#[test]
fn hundred_thousand_records_from_eight_threads() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 12_500;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&file_sink(&path)).unwrap();

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    log.record(record(format!("{t}-{i}")));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    log.shutdown();

    let lines = read_lines(&path);
    assert_eq!(lines.len(), THREADS * PER_THREAD);
    let ids: HashSet<String> = lines
        .iter()
        .map(|v| v["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), THREADS * PER_THREAD, "duplicated lines");
    assert_eq!(log.lines_written(), (THREADS * PER_THREAD) as u64);
    assert_eq!(log.lines_lost(), 0);
}

#[test]
fn rename_then_reopen_starts_a_new_file_without_losing_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let rotated = dir.path().join("audit.log.1");
    let log = AuditLog::open(&file_sink(&path)).unwrap();

    for i in 0..1000 {
        log.record(record(format!("a{i}")));
    }
    std::fs::rename(&path, &rotated).unwrap();
    log.reopen(); // what the SIGHUP handler does
    for i in 0..700 {
        log.record(record(format!("b{i}")));
    }
    log.shutdown();

    // Queue order: everything before reopen() in the old file, after in the new.
    let old = read_lines(&rotated);
    let new = read_lines(&path);
    assert_eq!(old.len(), 1000);
    assert_eq!(new.len(), 700);
    assert!(old
        .iter()
        .all(|v| v["request_id"].as_str().unwrap().starts_with('a')));
    assert!(new
        .iter()
        .all(|v| v["request_id"].as_str().unwrap().starts_with('b')));
}

#[test]
fn rotation_under_concurrent_load_loses_and_splits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open_with_capacity(&file_sink(&path), 64).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let workers: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 5000 {
                    log.record(record(format!("{t}-{n}")));
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut files = Vec::new();
    for k in 0..5 {
        thread::sleep(Duration::from_millis(20));
        let to = dir.path().join(format!("audit.log.{k}"));
        std::fs::rename(&path, &to).unwrap();
        log.reopen();
        files.push(to);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    log.shutdown();
    files.push(path);

    let mut ids = HashSet::new();
    for f in &files {
        for v in read_lines(f) {
            assert!(ids.insert(v["request_id"].as_str().unwrap().to_string()));
        }
    }
    assert_eq!(ids.len() as u64, sent);
}

#[test]
fn rename_without_sighup_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let rotated = dir.path().join("audit.log.1");
    let log = AuditLog::open(&file_sink(&path)).unwrap();

    for i in 0..10 {
        log.record(record(format!("a{i}")));
    }
    log.flush();
    std::fs::rename(&path, &rotated).unwrap();
    // The writer checks the path's inode about once a second.
    thread::sleep(Duration::from_millis(2500));
    for i in 0..10 {
        log.record(record(format!("b{i}")));
    }
    log.shutdown();

    assert_eq!(read_lines(&rotated).len(), 10);
    let new = read_lines(&path);
    assert_eq!(new.len(), 10);
    assert!(new
        .iter()
        .all(|v| v["request_id"].as_str().unwrap().starts_with('b')));
}

#[test]
fn deleted_file_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&file_sink(&path)).unwrap();
    log.record(record("a".into()));
    log.flush();
    std::fs::remove_file(&path).unwrap();
    log.reopen();
    log.record(record("b".into()));
    log.shutdown();
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["request_id"], "b");
}

#[test]
fn shutdown_with_a_full_queue_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open_with_capacity(&file_sink(&path), 2).unwrap();

    // Producers race the shutdown: their records go through the queue, or,
    // once it is closed, are written synchronously. None may vanish.
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            thread::spawn(move || {
                for i in 0..5000 {
                    log.record(record(format!("{t}-{i}")));
                }
            })
        })
        .collect();
    for i in 0..5000 {
        log.record(record(format!("main-{i}")));
    }
    log.shutdown();
    for w in workers {
        w.join().unwrap();
    }
    log.shutdown(); // idempotent

    let lines = read_lines(&path);
    assert_eq!(lines.len(), 25_000);
    assert_eq!(log.lines_written(), 25_000);
}

#[test]
fn rendezvous_queue_still_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open_with_capacity(&file_sink(&path), 0).unwrap();
    for i in 0..1000 {
        log.record(record(format!("{i}")));
    }
    log.shutdown();
    assert_eq!(read_lines(&path).len(), 1000);
}

#[test]
fn concurrent_shutdowns_all_wait_for_the_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open_with_capacity(&file_sink(&path), 1024).unwrap();
    for i in 0..20_000 {
        log.record(record(format!("{i}")));
    }
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let log = log.clone();
            let path = path.clone();
            thread::spawn(move || {
                log.shutdown();
                // Whoever returns from shutdown sees every line on disk.
                read_lines(&path).len()
            })
        })
        .collect();
    for w in waiters {
        assert_eq!(w.join().unwrap(), 20_000);
    }
}

#[test]
fn dropping_the_last_handle_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    {
        let log = AuditLog::open(&file_sink(&path)).unwrap();
        let clone = log.clone();
        for i in 0..100 {
            clone.record(record(format!("{i}")));
        }
    }
    assert_eq!(read_lines(&path).len(), 100);
}

#[test]
fn appends_to_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
    let log = AuditLog::open(&file_sink(&path)).unwrap();
    log.record(record("x".into()));
    log.shutdown();
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["earlier"], true);
}

#[test]
fn unopenable_path_is_an_error_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("audit.log");
    assert!(AuditLog::open(&file_sink(&path)).is_err());
}

#[test]
fn none_sink_writes_nothing_but_counts() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&AuditSink::None).unwrap();
    for i in 0..10 {
        log.record(record(format!("{i}")));
    }
    log.reopen();
    log.flush();
    log.shutdown();
    log.record(record("late".into()));
    assert_eq!(log.lines_written(), 11);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Disk full for real: `/dev/full` fails every write with ENOSPC. Nothing
/// panics, shutdown returns in bounded time, and the loss is counted.
#[cfg(target_os = "linux")]
#[test]
fn disk_full_is_survived() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let log = AuditLog::open(&AuditSink::File("/dev/full".into())).unwrap();
    for i in 0..50 {
        log.record(record(format!("{i}")));
    }
    let start = std::time::Instant::now();
    log.shutdown();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(log.lines_written(), 0);
    assert_eq!(log.lines_lost(), 50);
}

/// A sink that stops taking bytes (a pipe nobody reads, a stalled stdout) and
/// records of 256 KiB each: `record` waits once the queued records hold the
/// byte budget, instead of queueing 65,536 of them; when the reader comes back
/// every line arrives.
#[cfg(target_os = "linux")]
#[test]
fn a_stalled_sink_holds_at_most_the_byte_budget() {
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const BUDGET: usize = 4 * 1024 * 1024;
    const BIG: usize = 256 * 1024;
    const RECORDS: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // The reader opens at once (opening a FIFO waits for both ends) but reads
    // only when told to.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let reader = {
        let fifo = fifo.clone();
        thread::spawn(move || {
            let mut f = std::fs::File::open(&fifo).unwrap();
            go_rx.recv().unwrap();
            // Until the last line: the log keeps its end open after shutdown.
            let mut text = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            while text.iter().filter(|&&b| b == b'\n').count() < RECORDS {
                let n = f.read(&mut buf).unwrap();
                assert!(n > 0, "the pipe closed early");
                text.extend_from_slice(&buf[..n]);
            }
            String::from_utf8(text).unwrap()
        })
    };
    let log = AuditLog::open_with_byte_budget(&file_sink(&fifo), BUDGET).unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let recorder = {
        let (log, sent) = (log.clone(), sent.clone());
        thread::spawn(move || {
            for i in 0..RECORDS {
                let mut rec = record(format!("{i}"));
                rec.path = format!("/{}", "a".repeat(BIG));
                log.record(rec);
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    thread::sleep(Duration::from_millis(500));
    // The pipe holds 64 KiB and the writer one batch: the rest waits in the
    // queue, bounded by the budget, and the recorder with it.
    let queued = log.queued_bytes();
    assert!(queued <= BUDGET + BIG + 64, "{queued} bytes queued");
    let accepted = sent.load(Ordering::SeqCst);
    assert!(
        accepted < RECORDS,
        "all {accepted} records accepted by a stalled sink"
    );
    go_tx.send(()).unwrap();
    recorder.join().unwrap();
    log.shutdown();
    let text = reader.join().unwrap();
    assert_eq!(text.lines().count(), RECORDS);
    assert_eq!(log.queued_bytes(), 0);
}
