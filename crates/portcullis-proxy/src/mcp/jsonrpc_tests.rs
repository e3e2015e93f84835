//! Hostile and ordinary JSON-RPC bodies: each is either one judged message or a
//! clear JSON-RPC error, never a panic and never a guess.

use super::*;
use serde_json::{json, Value};

fn call(name: &str) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": {}}})
        .to_string()
        .into_bytes()
}

#[test]
fn ordinary_messages() {
    let body = call("get_weather");
    let m = parse(&body).unwrap();
    assert_eq!(m.method.as_deref(), Some("tools/call"));
    assert_eq!(m.tool.as_deref(), Some("get_weather"));
    assert_eq!(m.id.unwrap().get(), "7");

    let m = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
    assert!(m.id.is_none() && m.tool.is_none());
    let m = parse(br#"{"jsonrpc":"2.0","id":"a-1","result":{}}"#).unwrap();
    assert!(m.method.is_none());
    assert_eq!(m.id.unwrap().get(), r#""a-1""#);
    // Escapes are read as the server reads them.
    let m =
        parse(br#"{"id":1,"\u006dethod":"tools\/call","params":{"name":"get\u005fx"}}"#).unwrap();
    assert_eq!(m.tool.as_deref(), Some("get_x"));
    // A huge integer id is echoed exactly as sent, not through a float.
    let m = parse(br#"{"id":123456789012345678901234567890,"method":"ping"}"#).unwrap();
    assert_eq!(m.id.unwrap().get(), "123456789012345678901234567890");
}

#[test]
fn batches_are_refused() {
    for body in [&b"[]"[..], b"  [{\"id\":1,\"method\":\"ping\"}]"] {
        let e = parse(body).unwrap_err();
        assert!(e.batch);
        assert_eq!(e.code, INVALID_REQUEST);
    }
}

#[test]
fn malformed_is_a_parse_error() {
    for body in [
        &b""[..],
        b"   ",
        b"null",
        b"\"tools/call\"",
        b"{",
        b"{\"method\":\"ping\"} {}",
        b"{\"method\":\"pi\xffng\"}",
        b"{\"method\":\"ping\",\"id\":NaN}",
    ] {
        let e = parse(body).unwrap_err();
        assert_eq!(
            e.code,
            PARSE_ERROR,
            "{:?}: {}",
            String::from_utf8_lossy(body),
            e.message
        );
        assert!(!e.batch);
    }
}

#[test]
fn ambiguous_or_unjudgeable_is_invalid() {
    let huge_id = format!("{{\"id\":\"{}\",\"method\":\"ping\"}}", "x".repeat(1 << 20));
    for body in [
        // Two methods or two tool names: the proxy and the server might read different ones.
        &br#"{"id":1,"method":"ping","method":"tools/call","params":{"name":"x"}}"#[..],
        br#"{"id":1,"method":"tools/call","params":{"name":"safe","name":"evil"}}"#,
        br#"{"id":1,"method":"tools/call"}"#,
        br#"{"id":1,"method":"tools/call","params":{}}"#,
        br#"{"id":1,"method":"tools/call","params":{"name":7}}"#,
        br#"{"id":1,"method":"tools/call","params":{"name":"\ud800"}}"#,
        br#"{"id":1,"method":"tools/call","params":[]}"#,
        br#"{"id":1,"method":3}"#,
        br#"{"id":{"a":1},"method":"ping"}"#,
        br#"{"id":[1],"method":"ping"}"#,
        br#"{"id":true,"method":"ping"}"#,
        huge_id.as_bytes(),
    ] {
        let e = parse(body).unwrap_err();
        assert!(
            e.code == INVALID_REQUEST || e.code == PARSE_ERROR,
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
        assert!(!e.batch);
        assert!(e.message.len() < 300, "the message does not echo the input");
    }
}

#[test]
fn error_answers_echo_the_id() {
    let body = call("x");
    let m = parse(&body).unwrap();
    let answer = error_answer(m.id, DENIED, "denied by policy", "forbidden", "rid-1");
    let v: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        v,
        json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32003, "message": "denied by policy",
               "data": {"error": "forbidden", "request_id": "rid-1"}}})
    );
    let v: Value =
        serde_json::from_slice(&error_answer(None, PARSE_ERROR, "m", "bad_request", "r")).unwrap();
    assert_eq!(v["id"], Value::Null);
}

fn list(tools: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": tools, "nextCursor": "c"}})
        .to_string()
        .into_bytes()
}

#[test]
fn tools_list_is_filtered() {
    let body = list(json!([
        {"name": "get_a", "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}}},
        {"name": "delete_all", "description": "no"},
        {"description": "no name"},
        {"name": 5},
        {"name": "get_b", "name": "delete_all"},
        "not an object",
        {"name": "get_c"}
    ]));
    let permits = |t: &str| t.starts_with("get_");
    let out = filter_tools(&body, &permits).unwrap().unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v,
        json!({"jsonrpc": "2.0", "id": 2, "result": {"tools": [
            {"name": "get_a", "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}}},
            {"name": "get_c"}
        ], "nextCursor": "c"}})
    );
    // Nothing permitted: an empty list, not an error.
    let out = filter_tools(&body, &|_| false).unwrap().unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["result"]["tools"], json!([]));
}

#[test]
fn other_answers_pass_and_broken_ones_fail() {
    for body in [
        json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -1, "message": "x"}}),
        json!({"jsonrpc": "2.0", "id": 2, "result": {"content": []}}),
        json!({"jsonrpc": "2.0", "id": 2, "result": null}),
        json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
    ] {
        assert_eq!(
            filter_tools(body.to_string().as_bytes(), &|_| true).unwrap(),
            None
        );
    }
    for body in [
        &br#"{"id":2,"result":{"tools":{"name":"x"}}}"#[..],
        br#"{"id":2,"result":{"tools":[{"name":"x"}]"#,
        b"\xff",
    ] {
        assert!(filter_tools(body, &|_| true).is_err());
    }
}

#[test]
fn deep_nesting_is_skipped_without_recursion() {
    // What the proxy does not read it only skips (iteratively): a deep argument
    // neither overflows the stack nor hides the tool.
    let depth = 100_000;
    let body = format!(
        "{{\"id\":1,\"method\":\"tools/call\",\"params\":{{\"arguments\":{}{},\"name\":\"rm\"}}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let m = parse(body.as_bytes()).unwrap();
    assert_eq!(m.tool.as_deref(), Some("rm"));
    // Unbalanced: a parse error, not a crash.
    let body = format!(
        "{{\"id\":1,\"method\":\"ping\",\"params\":{}",
        "[".repeat(depth)
    );
    assert_eq!(parse(body.as_bytes()).unwrap_err().code, PARSE_ERROR);
}
