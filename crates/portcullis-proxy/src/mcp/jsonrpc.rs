//! The JSON-RPC the MCP front end reads and writes (SPEC §10): one client
//! message per POST body, read with borrowed fields so nothing but the method,
//! the id and a `tools/call`'s tool name is copied; error answers; and the
//! `tools/list` filter, which rewrites only the `tools` array and copies every
//! other value through as the server wrote it.
//!
//! The proxy judges the bytes the server will read, so ambiguity is refused
//! rather than resolved: a duplicate `method`, `id`, `params` or `name` key,
//! a non-string method or tool name, nesting deeper than serde_json's limit of
//! 128 in the fields read here, and invalid UTF-8 are all errors here,
//! whatever the server would make of them. Values read only as raw JSON (a
//! call's `arguments`) are checked for syntax, not depth: the server gets them
//! exactly as they were judged, and no rule looks inside them.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// JSON-RPC's parse error.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's invalid request.
pub const INVALID_REQUEST: i64 = -32600;
/// The code of a call the policy denied (SPEC §10).
pub const DENIED: i64 = -32003;
/// Longest id echoed back and written to the audit line, as JSON text. Clients
/// use short numbers or UUIDs; a longer one is someone probing the proxy.
pub const MAX_ID_BYTES: usize = 256;

/// Longest method name accepted: MCP's are short words (`tools/call`,
/// `notifications/initialized`); a longer one would only fill the audit line.
pub const MAX_METHOD_BYTES: usize = 128;
/// Longest tool name accepted (MCP says 1 to 128 characters; twice that in
/// bytes leaves room for non-ASCII names).
pub const MAX_TOOL_BYTES: usize = 256;

/// The method whose tool the policy's `tools` condition judges.
pub const TOOLS_CALL: &str = "tools/call";
/// The method whose answers are filtered.
pub const TOOLS_LIST: &str = "tools/list";

/// One client-to-server message, as judged.
#[derive(Debug)]
pub struct Message<'a> {
    /// `None` for a response (to a request the server made of the client).
    pub method: Option<Cow<'a, str>>,
    /// The id (a JSON string or number, as sent); `None` for a notification.
    pub id: Option<&'a RawValue>,
    /// For `tools/call`: `params.name`.
    pub tool: Option<Cow<'a, str>>,
}

/// Why a body is not one acceptable message.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid {
    /// [`PARSE_ERROR`] or [`INVALID_REQUEST`].
    pub code: i64,
    pub message: String,
    /// A batch (a JSON array), refused with HTTP 400 (SPEC §10).
    pub batch: bool,
}

impl Invalid {
    fn new(code: i64, message: impl Into<String>) -> Invalid {
        Invalid {
            code,
            message: message.into(),
            batch: false,
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct CallParams<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// Reads one JSON-RPC message from a POST body.
pub fn parse(body: &[u8]) -> Result<Message<'_>, Invalid> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'[') => {
            return Err(Invalid {
                batch: true,
                ..Invalid::new(
                    INVALID_REQUEST,
                    "JSON-RPC batches are not accepted: send one message per request",
                )
            })
        }
        Some(b'{') => {}
        Some(_) | None => {
            return Err(Invalid::new(
                PARSE_ERROR,
                "the body is not a JSON-RPC message (a JSON object)",
            ))
        }
    }
    let env: Envelope<'_> = serde_json::from_slice(body).map_err(|e| {
        let code = match e.classify() {
            serde_json::error::Category::Data => INVALID_REQUEST,
            _ => PARSE_ERROR,
        };
        Invalid::new(code, format!("invalid JSON-RPC message: {e}"))
    })?;
    if let Some(id) = env.id {
        let text = id.get();
        let scalar =
            text.starts_with('"') || text.starts_with(|c: char| c == '-' || c.is_ascii_digit());
        if !scalar {
            return Err(Invalid::new(
                INVALID_REQUEST,
                "the id must be a string or a number",
            ));
        }
        if text.len() > MAX_ID_BYTES {
            return Err(Invalid::new(
                INVALID_REQUEST,
                format!("the id is longer than {MAX_ID_BYTES} bytes"),
            ));
        }
    }
    if let Some(method) = env.method.as_deref() {
        if method.len() > MAX_METHOD_BYTES {
            return Err(Invalid::new(
                INVALID_REQUEST,
                format!("the method is longer than {MAX_METHOD_BYTES} bytes"),
            ));
        }
        if is_judged_method_misspelt(method) {
            return Err(Invalid::new(
                INVALID_REQUEST,
                format!("unknown method: the proxy judges only {TOOLS_CALL} and {TOOLS_LIST} spelled exactly"),
            ));
        }
    }
    let tool = match env.method.as_deref() {
        Some(TOOLS_CALL) => {
            let params = env.params.ok_or_else(|| {
                Invalid::new(
                    INVALID_REQUEST,
                    "tools/call needs params with the tool's name",
                )
            })?;
            let params: CallParams<'_> = serde_json::from_str(params.get())
                .map_err(|e| Invalid::new(INVALID_REQUEST, format!("tools/call params: {e}")))?;
            if params.name.len() > MAX_TOOL_BYTES {
                return Err(Invalid::new(
                    INVALID_REQUEST,
                    format!("the tool name is longer than {MAX_TOOL_BYTES} bytes"),
                ));
            }
            Some(params.name)
        }
        _ => None,
    };
    Ok(Message {
        method: env.method,
        id: env.id,
        tool,
    })
}

/// A method that a lenient server could read as `tools/call` or `tools/list`
/// (other case, surrounding blanks or control characters) while the proxy,
/// matching exactly, would neither judge nor filter it.
fn is_judged_method_misspelt(method: &str) -> bool {
    if method == TOOLS_CALL || method == TOOLS_LIST {
        return false;
    }
    let core = method.trim_matches(|c: char| c.is_whitespace() || c.is_control());
    core.eq_ignore_ascii_case(TOOLS_CALL) || core.eq_ignore_ascii_case(TOOLS_LIST)
}

#[derive(Serialize)]
struct ErrorAnswer<'a> {
    jsonrpc: &'static str,
    id: Option<&'a RawValue>,
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: i64,
    message: &'a str,
    data: ErrorData<'a>,
}

#[derive(Serialize)]
struct ErrorData<'a> {
    error: &'a str,
    request_id: &'a str,
}

/// A JSON-RPC error answer: `data` carries the SPEC §6 code and the request id.
pub fn error_answer(
    id: Option<&RawValue>,
    code: i64,
    message: &str,
    error: &str,
    request_id: &str,
) -> Vec<u8> {
    let answer = ErrorAnswer {
        jsonrpc: "2.0",
        id,
        error: ErrorObject {
            code,
            message,
            data: ErrorData { error, request_id },
        },
    };
    // Only strings and raw JSON that was already valid: this cannot fail.
    serde_json::to_vec(&answer).unwrap_or_default()
}

#[derive(Deserialize)]
struct ToolName<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// Filters a `tools/list` answer to the tools `permits` lets through. `None`
/// when the message carries no `result.tools` (an error, a notification, any
/// other answer): it passes as it is. A `tools` value that is not an array is an
/// error, and so is a tool without a string `name` dropped: what cannot be
/// judged is not shown.
pub fn filter_tools(
    message: &[u8],
    permits: &dyn Fn(&str) -> bool,
) -> Result<Option<Vec<u8>>, String> {
    let bad = |e: serde_json::Error| format!("unreadable tools/list answer: {e}");
    let top: BTreeMap<Cow<'_, str>, &RawValue> = serde_json::from_slice(message).map_err(bad)?;
    let Some(result) = top.get("result") else {
        return Ok(None);
    };
    if !result.get().starts_with('{') {
        return Ok(None);
    }
    let fields: BTreeMap<Cow<'_, str>, &RawValue> =
        serde_json::from_str(result.get()).map_err(bad)?;
    let Some(tools) = fields.get("tools") else {
        return Ok(None);
    };
    let tools: Vec<&RawValue> = serde_json::from_str(tools.get()).map_err(bad)?;
    let mut out = Vec::with_capacity(message.len());
    out.push(b'{');
    for (i, (key, value)) in top.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_key(&mut out, key);
        if key == "result" {
            out.push(b'{');
            for (j, (k, v)) in fields.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_key(&mut out, k);
                if k == "tools" {
                    out.push(b'[');
                    let mut first = true;
                    for tool in &tools {
                        let keep = serde_json::from_str::<ToolName<'_>>(tool.get())
                            .is_ok_and(|t| permits(&t.name));
                        if keep {
                            if !first {
                                out.push(b',');
                            }
                            first = false;
                            out.extend_from_slice(tool.get().as_bytes());
                        }
                    }
                    out.push(b']');
                } else {
                    out.extend_from_slice(v.get().as_bytes());
                }
            }
            out.push(b'}');
        } else {
            out.extend_from_slice(value.get().as_bytes());
        }
    }
    out.push(b'}');
    Ok(Some(out))
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    crate::audit_line::string(out, key);
    out.push(b':');
}

#[cfg(test)]
#[path = "jsonrpc_tests.rs"]
mod tests;
