//! Route lookup + policy decision per request, on 1,000 routes × 10 rules.
//!
//! `allow_last_rule` is the hot path: the request's route is the last one in config
//! order and only its last allow rule matches, so every rule is evaluated.
//! `deny_explained` is a denial, which also builds the per-condition explanation.

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_config::Config;
use portcullis_core::{Identity, IdentityKind};
use portcullis_policy::{normalize, RequestFacts, RouteTable};
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;

const ROUTES: usize = 1000;

fn table() -> RouteTable {
    let routes: Vec<serde_json::Value> = (0..ROUTES)
        .map(|i| {
            let deny = vec![
                json!({"name": "no-interns", "groups": ["interns"]}),
                json!({"paths": ["/svc*/internal/**"], "authenticated": true, "claims": {"suspended": "true"}}),
            ];
            let mut allow: Vec<serde_json::Value> = (0..7)
                .map(|r| {
                    json!({
                        "groups": [format!("team-{i}-{r}"), "admins"],
                        "methods": ["GET", "POST"],
                        "scopes": [format!("svc{i}:read")]
                    })
                })
                .collect();
            allow.push(json!({
                "name": "readers",
                "methods": ["GET", "HEAD"],
                "paths": [format!("/svc{i}/items/*"), format!("/svc{i}/public/**")],
                "email_domains": ["example.com"],
                "scopes": [format!("svc{i}:read")],
                "claims": {"realm_access.roles": ["reader", "writer"]}
            }));
            json!({
                "name": format!("svc{i}"),
                "match": {"hosts": ["api.example.com", "*.internal.example.com"], "path_prefix": format!("/svc{i}")},
                "upstream": "http://127.0.0.1:8000",
                "policy": {"deny": deny, "allow": allow}
            })
        })
        .collect();
    let config: Config = serde_json::from_value(json!({ "routes": routes })).expect("config");
    RouteTable::compile(&config).expect("routes compile")
}

fn reader() -> Identity {
    Identity {
        kind: IdentityKind::User,
        subject: "alice".into(),
        provider: Some("idp".into()),
        email: Some("alice@example.com".into()),
        groups: vec!["users".into(), "dev".into()],
        scopes: vec!["openid".into(), format!("svc{}:read", ROUTES - 1)],
        claims: Arc::new(json!({"sub": "alice", "realm_access": {"roles": ["reader"]}})),
        ..Identity::default()
    }
}

fn bench(c: &mut Criterion) {
    let table = table();
    let id = reader();
    let path = normalize(&format!("/svc{}/items/42", ROUTES - 1), false).expect("path");
    let allowed = RequestFacts {
        method: "GET",
        host: "api.example.com",
        path: &path,
        tool: None,
    };
    assert!(table.decide(&id, &allowed).is_allowed());
    c.bench_function("allow_last_rule", |b| {
        b.iter(|| black_box(table.decide(black_box(&id), black_box(&allowed))))
    });
    let denied = RequestFacts {
        method: "DELETE",
        ..allowed
    };
    assert!(!table.decide(&id, &denied).is_allowed());
    c.bench_function("deny_explained", |b| {
        b.iter(|| black_box(table.decide(black_box(&id), black_box(&denied))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
