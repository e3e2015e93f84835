//! `routes[].mcp` and the `tools` condition (SPEC §10).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

const MCP: &str = "\
providers:
  - name: idp
    issuer: https://idp.example.com
    audiences: [https://gw.example.com/mcp]
routes:
  - name: tools
    match: { path_prefix: /mcp }
    upstream: http://127.0.0.1:8000
    mcp: {}
    policy:
      deny:
        - tools: ['*_delete']
      allow:
        - clients: [agent-1]
          tools: [get_*, search]
";

#[test]
fn an_mcp_route_loads_with_defaults() {
    let loaded = assert_ok(MCP);
    let route = &loaded.config.routes[0];
    let mcp = route.mcp.as_ref().unwrap();
    assert_eq!(mcp.max_message_bytes.0, 4 * 1024 * 1024);
    let tools = route.policy.as_ref().unwrap().allow[0].tools.clone();
    assert_eq!(tools.unwrap(), ["get_*", "search"]);
    let loaded = assert_ok(&MCP.replace("mcp: {}", "mcp: { max_message_bytes: 64KiB }"));
    assert_eq!(
        loaded.config.routes[0]
            .mcp
            .as_ref()
            .unwrap()
            .max_message_bytes
            .0,
        64 * 1024
    );
}

#[test]
fn forward_token_is_refused_and_why() {
    let yaml = MCP.replace("mcp: {}", "mcp: {}\n    forward_token: true");
    assert_error(
        &yaml,
        "portcullis.yaml:10:20: routes[0].forward_token: an MCP server must never receive the \
         caller's token (MCP authorization forbids token passthrough",
    );
    // On a plain route it stays allowed.
    assert_ok(
        &yaml
            .replace("    mcp: {}\n", "")
            .replace("      deny:\n        - tools: ['*_delete']\n", "")
            .replace("          tools: [get_*, search]\n", ""),
    );
}

#[test]
fn tools_only_on_mcp_routes() {
    let yaml = MCP.replace("    mcp: {}\n", "");
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("routes[0].policy.deny[0].tools: `tools` names MCP tools"));
    assert!(errs[1].contains("routes[0].policy.allow[0].tools: `tools` names MCP tools"));
}

#[test]
fn bad_mcp_settings() {
    assert_error(
        &MCP.replace("[get_*, search]", "[get_*, 'two words']"),
        "routes[0].policy.allow[0].tools[1]: `two words` is not an MCP tool name pattern",
    );
    assert_error(
        &MCP.replace("[get_*, search]", "[]"),
        "routes[0].policy.allow[0].tools: an empty list never matches",
    );
    assert_error(
        &MCP.replace("[get_*, search]", "['a**']"),
        "routes[0].policy.allow[0].tools[0]:",
    );
    assert_error(
        &MCP.replace("mcp: {}", "mcp: { max_message_bytes: 0 }"),
        "routes[0].mcp.max_message_bytes: must be between 1 byte and 64MiB",
    );
    assert_error(
        &MCP.replace("mcp: {}", "mcp: { max_message_bytes: 1GiB }"),
        "routes[0].mcp.max_message_bytes: must be between 1 byte and 64MiB",
    );
    assert_error(
        &MCP.replace("mcp: {}", "mcp: { sessions: off }"),
        "routes[0].mcp: unknown key `sessions`: expected one of max_message_bytes",
    );
    assert_error(
        &MCP.replace("    upstream: http://127.0.0.1:8000\n", ""),
        "routes[0].mcp: an MCP route needs an `upstream`",
    );
    let loaded = assert_ok(&MCP.replace("path_prefix: /mcp", "path_regex: '/mcp/.*'"));
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.to_string().contains("no protected resource metadata")));
}
