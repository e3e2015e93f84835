//! What MCP judgment adds per message (SPEC §10 performance goals): reading a
//! `tools/call` body and judging its tool (goal: ≤ 50 µs over proxying the
//! same request on a plain route), and filtering a `tools/list` answer of 500
//! tools for one caller (goal: ≤ 1 ms).
//!
//! `cargo bench -p portcullis-proxy --bench mcp`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis_core::{Identity, IdentityKind};
use portcullis_policy::{normalize, RequestFacts, RouteTable};
use portcullis_proxy::mcp::jsonrpc;
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;

fn table() -> RouteTable {
    let config = serde_json::from_value(json!({"routes": [{
        "name": "mcp", "match": {"path_prefix": "/mcp"}, "mcp": {},
        "policy": {
            "deny": [{"name": "no-deletes", "groups": ["agents"], "tools": ["delete_*", "*_admin_*"]}],
            "allow": [
                {"name": "agents", "groups": ["agents"], "tools": ["get_*", "search_*", "list_*"]},
                {"name": "admins", "groups": ["admins"]}
            ]
        }
    }]}))
    .unwrap();
    RouteTable::compile(&config).unwrap()
}

fn agent() -> Identity {
    Identity {
        kind: IdentityKind::Service,
        subject: "triage-bot".into(),
        groups: vec!["agents".into()],
        claims: Arc::new(json!({})),
        ..Identity::default()
    }
}

fn bench(c: &mut Criterion) {
    let table = table();
    let route = &table.routes()[0];
    let id = agent();
    let path = normalize("/mcp", false).unwrap();
    let call = json!({"jsonrpc": "2.0", "id": 41, "method": "tools/call",
        "params": {"name": "get_issue", "arguments": {"owner": "acme", "repo": "portcullis", "issue_number": 1161}}})
    .to_string();
    c.bench_function("tools_call_parse_and_judge", |b| {
        b.iter(|| {
            let m = jsonrpc::parse(black_box(call.as_bytes())).unwrap();
            let facts = RequestFacts {
                method: "POST",
                host: "gw",
                path: &path,
                tool: m.tool.as_deref(),
            };
            black_box(route.evaluate(&id, &facts).is_allowed())
        })
    });

    let verbs = ["get", "list", "search", "create", "delete", "update"];
    let tools: Vec<_> = (0..500)
        .map(|i| json!({
            "name": format!("{}_thing_{i}", verbs[i % verbs.len()]),
            "description": "Does one thing to one kind of thing, as its name says, for the agent that may.",
            "inputSchema": {"type": "object", "properties": {"id": {"type": "string"}, "limit": {"type": "integer"}}, "required": ["id"]}
        }))
        .collect();
    let answer = json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": tools}}).to_string();
    let permits = |tool: &str| {
        let facts = RequestFacts {
            method: "POST",
            host: "gw",
            path: &path,
            tool: Some(tool),
        };
        route.permits(&id, &facts)
    };
    let kept = jsonrpc::filter_tools(answer.as_bytes(), &permits)
        .unwrap()
        .unwrap();
    assert!(kept.len() < answer.len() / 2);
    c.bench_function("tools_list_500_filter", |b| {
        b.iter(|| black_box(jsonrpc::filter_tools(black_box(answer.as_bytes()), &permits).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
