//! The audit line's hand-written JSON string escaping (request paths, hosts and
//! subjects come from clients): whatever the text, the result parses back with
//! serde_json to exactly that text, and is byte for byte what serde_json writes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut out = b"x".to_vec();
    portcullis_proxy::audit_line::string(&mut out, &text);
    assert_eq!(out[0], b'x', "wrote before its start");
    let written = &out[1..];
    let back: String = serde_json::from_slice(written).expect("escaped string is JSON");
    assert_eq!(back, text, "round trip changed the text");
    let theirs = serde_json::to_vec(&*text).expect("serializable");
    assert_eq!(written, &theirs[..], "differs from serde_json");
});
