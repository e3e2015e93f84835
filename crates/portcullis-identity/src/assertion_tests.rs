//! Tests of the assertion signer: claims, in-memory rotation, fixed keys, and
//! the `signing_keys_dir` schedule (rotation, restarts, racing replicas).

use super::*;
use crate::jose::compact::parse;
use crate::jwks::{KeySet, Lookup};
use portcullis_config::Duration;
use serde_json::json;

fn cfg(f: impl FnOnce(&mut AssertionConfig)) -> AssertionConfig {
    let mut c = AssertionConfig::default();
    f(&mut c);
    c
}

fn identity() -> Identity {
    Identity {
        kind: portcullis_core::IdentityKind::User,
        subject: "u-1".into(),
        issuer: Some("https://idp".into()),
        email: Some("a@b.c".into()),
        groups: vec!["g1".into(), "g2".into()],
        scopes: vec!["read".into(), "write".into()],
        client_id: Some("web".into()),
        ..Identity::default()
    }
}

/// Verifies `token` against `jwks` and returns its claims.
fn verify(token: &str, jwks: &[u8]) -> serde_json::Value {
    let set = KeySet::parse(jwks).unwrap();
    let c = parse(token).unwrap();
    let alg = c.header.algorithm().unwrap();
    let Lookup::Found(key) = set.lookup(c.header.kid.as_deref(), alg) else {
        panic!("kid not published")
    };
    assert!(key.verify(alg, c.signing_input, &c.signature));
    assert_eq!(c.header.typ.as_deref(), Some("JWT"));
    serde_json::Value::Object(c.claims)
}

#[test]
fn signs_the_spec_claims_and_omits_absent_ones() {
    for alg in [AssertionAlgorithm::ES256, AssertionAlgorithm::EdDSA] {
        let s = AssertionSigner::new(&cfg(|c| c.algorithm = alg)).unwrap();
        let t = s
            .sign_at(&identity(), "https://proxy", "http://orders:8000", 1_000)
            .unwrap();
        let claims = verify(&t.token, &s.state.load().jwks);
        assert_eq!(claims["exp"], t.expires_at);
        assert_eq!(claims["iss"], "https://proxy");
        assert_eq!(claims["aud"], "http://orders:8000");
        assert_eq!(claims["sub"], "u-1");
        assert_eq!(claims["groups"], json!(["g1", "g2"]));
        assert_eq!(claims["scope"], "read write");
        assert_eq!(claims["idp"], "https://idp");
        assert_eq!(claims["iat"], 1_000);
        assert_eq!(claims["exp"], 1_060);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 22);
        for absent in ["roles", "workload", "name"] {
            assert!(claims.get(absent).is_none(), "{absent}");
        }
    }
    let s = AssertionSigner::new(&AssertionConfig::default()).unwrap();
    let a = s.sign(&identity(), "i", "a").unwrap().token;
    let b = s.sign(&identity(), "i", "a").unwrap().token;
    assert_ne!(a, b, "jti makes every assertion unique");
    let workload = Identity {
        kind: portcullis_core::IdentityKind::Workload,
        workload: Some("spiffe://td/ns/a/sa/b".into()),
        ..Identity::default()
    };
    let claims = verify(&s.sign(&workload, "i", "a").unwrap().token, &s.jwks_json());
    assert_eq!(claims["sub"], "spiffe://td/ns/a/sa/b");
    assert_eq!(claims["workload"], "spiffe://td/ns/a/sa/b");

    // An assertion never outlives the token it vouches for.
    let short = Identity {
        expires_at: Some(1_010),
        ..identity()
    };
    let t = s.sign_at(&short, "i", "a", 1_000).unwrap().token;
    assert_eq!(verify(&t, &s.state.load().jwks)["exp"], 1_010);
}

#[test]
fn rotation_keeps_old_keys_until_their_assertions_expire() {
    let c = cfg(|c| {
        c.rotate_every = Duration::from_secs(3600);
        c.ttl = Duration::from_secs(60);
    });
    let s = AssertionSigner::new_at(&c, None, 0).unwrap();
    let t0 = s.sign_at(&identity(), "i", "a", 10).unwrap().token;
    let kid0 = s.state_at(10).current.key.kid().to_string();
    let next_kid = s.state_at(10).next.as_ref().unwrap().key.kid().to_string();
    assert!(
        String::from_utf8_lossy(&s.state_at(10).jwks).contains(&next_kid),
        "next key pre-published"
    );
    // Rotation at 3600: the pre-published key signs, the old one stays published.
    let t1 = s.sign_at(&identity(), "i", "a", 3600).unwrap().token;
    let state = s.state_at(3600);
    assert_eq!(state.current.key.kid(), next_kid);
    verify(&t0, &state.jwks);
    verify(&t1, &state.jwks);
    // Until ttl + grace after retirement.
    assert!(String::from_utf8_lossy(&s.state_at(3600 + 119).jwks).contains(&kid0));
    assert!(!String::from_utf8_lossy(&s.state_at(3600 + 120).jwks).contains(&kid0));
}

#[test]
fn a_fixed_key_file_signs_and_must_match_the_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let old = crate::keys::generate(Alg::ES256).unwrap();
    let path = dir.path().join("a-old.pem");
    std::fs::write(&path, &old.pkcs8_pem).unwrap();
    let file = cfg(|c| c.signing_key_file = Some(path.display().to_string()));
    let s = AssertionSigner::new(&file).unwrap();
    assert_eq!(s.current_kid(), old.kid);
    assert!(s.maintenance_interval().is_none());
    let eddsa = cfg(|c| {
        c.signing_key_file = Some(path.display().to_string());
        c.algorithm = AssertionAlgorithm::EdDSA;
    });
    assert!(matches!(
        AssertionSigner::new(&eddsa),
        Err(AssertionError::WrongAlgorithm { .. })
    ));
}

fn dir_cfg(dir: &Path, rotate: u64, ttl: u64) -> AssertionConfig {
    cfg(|c| {
        c.signing_keys_dir = Some(dir.display().to_string());
        c.rotate_every = Duration::from_secs(rotate);
        c.ttl = Duration::from_secs(ttl);
    })
}

fn kids(jwks: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(jwks).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

fn managed_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("assertion-") && n.ends_with(".pem"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_keys_dir_rotates_and_every_live_assertion_verifies_at_every_moment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let c = dir_cfg(&dir, 10, 4);
    let s = AssertionSigner::new_at(&c, None, 1_000).unwrap();
    assert_eq!(
        managed_files(&dir).len(),
        2,
        "this period's key and the next"
    );
    let mut issued: Vec<(String, u64)> = Vec::new();
    let mut signing_kids = std::collections::BTreeSet::new();
    for now in 1_000..1_200 {
        // The background task ticks every rotate_every / 4; here every 3 s, and
        // not at all for one whole period to show that signing never waits for it.
        if now % 3 == 0 && !(1_100..1_115).contains(&now) {
            s.maintain_at(now);
        }
        let t = s.sign_at(&identity(), "i", "a", now).unwrap();
        signing_kids.insert(s.state_at(now).current.key.kid().to_string());
        issued.push((t.token, t.expires_at));
        let jwks = s.state_at(now).jwks.clone();
        for (token, exp) in issued.iter().filter(|(_, exp)| *exp > now) {
            let claims = verify(token, &jwks);
            assert_eq!(claims["exp"], *exp);
        }
        // Retired keys stay for ttl + 60 s of grace, then are dropped.
        assert!(kids(&jwks).len() <= (4 + 60) / 10 + 3, "at {now}");
    }
    assert!(signing_kids.len() >= 18, "rotated: {signing_kids:?}");
    let first_kid = {
        let (token, _) = &issued[0];
        parse(token).unwrap().header.kid.unwrap()
    };
    assert!(!kids(&s.state_at(1_199).jwks).contains(&first_kid));
    // Files of long-retired keys are removed.
    assert!(
        managed_files(&dir).len() <= (4 + 60) / 10 + 4,
        "{:?}",
        managed_files(&dir)
    );
}

#[test]
fn a_keys_dir_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let c = dir_cfg(tmp.path(), 3_600, 60);
    let first = AssertionSigner::new_at(&c, None, 10_000).unwrap();
    let token = first.sign_at(&identity(), "i", "a", 10_000).unwrap().token;
    let kid = first.state_at(10_000).current.key.kid().to_string();
    drop(first);
    let again = AssertionSigner::new_at(&c, None, 10_030).unwrap();
    assert_eq!(again.state_at(10_030).current.key.kid(), kid);
    verify(&token, &again.state_at(10_030).jwks);
    // The next period's key was made before the restart and is the one that signs.
    let next = again
        .state_at(10_000)
        .next
        .as_ref()
        .unwrap()
        .key
        .kid()
        .to_string();
    let restarted = AssertionSigner::new_at(&c, None, 10_800 + 1).unwrap();
    assert_eq!(restarted.state_at(10_801).current.key.kid(), next);
    verify(&token, &restarted.state_at(10_801).jwks);
}

#[test]
fn racing_replicas_make_one_key_per_period() {
    for round in 0..5u64 {
        let tmp = tempfile::tempdir().unwrap();
        let c = dir_cfg(tmp.path(), 100, 10);
        let replicas = 8;
        let barrier = std::sync::Barrier::new(replicas);
        let signers: Vec<AssertionSigner> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..replicas)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        AssertionSigner::new_at(&c, None, 1_000 + round).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let now = 1_000 + round;
        let kid = signers[0].state_at(now).current.key.kid().to_string();
        for s in &signers {
            assert_eq!(s.state_at(now).current.key.kid(), kid);
            assert_eq!(s.state_at(now).jwks, signers[0].state_at(now).jwks);
        }
        assert_eq!(managed_files(tmp.path()).len(), 2);
        // All rotate at the next boundary at once: still one key per period.
        std::thread::scope(|scope| {
            for s in &signers {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    s.maintain_at(1_100);
                });
            }
        });
        assert_eq!(managed_files(tmp.path()).len(), 3);
        let kid = signers[0].state_at(1_100).current.key.kid().to_string();
        assert!(signers
            .iter()
            .all(|s| s.state_at(1_100).current.key.kid() == kid));
    }
}

#[test]
fn other_pem_files_are_published_but_never_sign() {
    let tmp = tempfile::tempdir().unwrap();
    let hand = crate::keys::generate(Alg::ES256).unwrap();
    std::fs::write(tmp.path().join("from-before.pem"), &hand.pkcs8_pem).unwrap();
    std::fs::write(tmp.path().join("README"), "not a key").unwrap();
    let s = AssertionSigner::new_at(&dir_cfg(tmp.path(), 3_600, 60), None, 5).unwrap();
    let state = s.state_at(5);
    assert_ne!(state.current.key.kid(), hand.kid);
    assert!(kids(&state.jwks).contains(&hand.kid));
}

#[test]
fn changing_the_algorithm_keeps_the_old_keys_published() {
    let tmp = tempfile::tempdir().unwrap();
    let es = dir_cfg(tmp.path(), 3_600, 60);
    let old = AssertionSigner::new_at(&es, None, 100).unwrap();
    let token = old.sign_at(&identity(), "i", "a", 100).unwrap().token;
    let mut ed = es.clone();
    ed.algorithm = AssertionAlgorithm::EdDSA;
    let new = AssertionSigner::new_at(&ed, None, 110).unwrap();
    assert_eq!(new.state_at(110).current.key.alg(), Alg::EdDSA);
    verify(&token, &new.state_at(110).jwks);
    verify(
        &new.sign_at(&identity(), "i", "a", 110).unwrap().token,
        &new.state_at(110).jwks,
    );
    assert_eq!(managed_files(tmp.path()).len(), 4);
}

#[test]
fn read_only_signer_writes_nothing_and_still_checks_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("not-yet");
    let s = AssertionSigner::new_read_only(&dir_cfg(&missing, 3_600, 60)).unwrap();
    s.sign(&identity(), "i", "a").unwrap();
    assert!(!missing.exists());
    std::fs::write(tmp.path().join("broken.pem"), "not a key").unwrap();
    assert!(matches!(
        AssertionSigner::new_read_only(&dir_cfg(tmp.path(), 3_600, 60)),
        Err(AssertionError::Key { .. })
    ));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    // A directory `serve` could not create is refused by `check` too.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let under_a_file = file.join("keys");
    assert!(matches!(
        AssertionSigner::new_read_only(&dir_cfg(&under_a_file, 3_600, 60)),
        Err(AssertionError::File { .. })
    ));
    assert!(AssertionSigner::new(&dir_cfg(&under_a_file, 3_600, 60)).is_err());
}

#[test]
fn reload_keeps_generated_keys() {
    let s = AssertionSigner::new(&AssertionConfig::default()).unwrap();
    let t = s.sign(&identity(), "i", "a").unwrap().token;
    let reloaded = AssertionSigner::new_from_previous(&s, &AssertionConfig::default()).unwrap();
    assert_eq!(reloaded.current_kid(), s.current_kid());
    verify(&t, &reloaded.jwks_json());
    let eddsa =
        AssertionSigner::new_from_previous(&s, &cfg(|c| c.algorithm = AssertionAlgorithm::EdDSA))
            .unwrap();
    assert_ne!(eddsa.current_kid(), s.current_kid());
}

#[test]
fn a_reload_keeps_the_keys_dir_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let s = AssertionSigner::new(&dir_cfg(tmp.path(), 3_600, 60)).unwrap();
    let token = s.sign(&identity(), "i", "a").unwrap().token;
    // A reload that changes the assertion section rebuilds the signer from the
    // same directory: same signing key, earlier assertions still verify.
    let reloaded = AssertionSigner::new_from_previous(&s, &dir_cfg(tmp.path(), 3_600, 30)).unwrap();
    assert_eq!(reloaded.current_kid(), s.current_kid());
    verify(&token, &reloaded.jwks_json());
    assert_eq!(managed_files(tmp.path()).len(), 2);
}
