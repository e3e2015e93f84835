//! The SSE filter over split, oddly terminated, hostile and oversized streams.

use super::*;
use serde_json::{json, Value};

fn filter(max: usize) -> SseFilter {
    SseFilter::new(max, Box::new(|t: &str| t.starts_with("get_")))
}

fn run(chunks: &[&[u8]], max: usize) -> Result<Vec<u8>, TooLarge> {
    let mut f = filter(max);
    let mut out = Vec::new();
    for c in chunks {
        f.feed(c, &mut out)?;
    }
    Ok(out)
}

fn list_event(eol: &str) -> String {
    let data = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "get_a"}, {"name": "rm_b"}]}});
    format!("event: message{eol}id: 9{eol}data: {data}{eol}{eol}")
}

/// The tools named in every data line of `out`.
fn tools_in(out: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(out);
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .flat_map(|v| v["result"]["tools"].as_array().cloned().unwrap_or_default())
        .map(|t| t["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn other_events_pass_byte_for_byte() {
    let stream = b": comment\n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\nretry: 10\r\n\r\n";
    assert_eq!(run(&[stream], 1 << 20).unwrap(), stream.to_vec());
}

#[test]
fn a_list_is_filtered_in_every_line_ending_and_every_split() {
    for eol in ["\n", "\r\n", "\r"] {
        let event = list_event(eol);
        let bytes = event.as_bytes();
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            let out = run(&[a, b], 1 << 20).unwrap();
            assert_eq!(
                tools_in(
                    &out.iter()
                        .map(|&c| if c == b'\r' { b'\n' } else { c })
                        .collect::<Vec<_>>()
                ),
                ["get_a"],
                "eol {eol:?} split {split}"
            );
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("id: 9") && text.contains("event: message"),
                "{text:?}"
            );
        }
        // One byte at a time.
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        let out = run(&chunks, 1 << 20).unwrap();
        assert_eq!(String::from_utf8(out).unwrap().matches("rm_b").count(), 0);
    }
}

#[test]
fn multi_line_data_is_joined_before_reading() {
    let event = b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\ndata:\"result\":{\"tools\":[{\"name\":\"rm_b\"},\ndata: {\"name\":\"get_z\"}]}}\n\n";
    let out = run(&[event], 1 << 20).unwrap();
    assert_eq!(tools_in(&out), ["get_z"]);
}

#[test]
fn broken_json_and_invalid_utf8_lose_their_data_not_the_stream() {
    let stream = b"data: {\"result\":{\"tools\":[{\"name\":\"rm\xff\"}\n\nevent: x\ndata: {\"tools\": 1}\n\ndata: ok\n\n";
    let out = run(&[stream], 1 << 20).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("rm"), "{text}");
    assert!(text.ends_with("data: ok\n\n"), "{text}");
}

#[test]
fn an_oversized_event_ends_the_stream() {
    let big = format!("data: {}\n\n", "x".repeat(10_000));
    assert!(run(&[big.as_bytes()], 1000).is_err());
    // Many events each under the limit are fine: only one is ever held.
    let small = "data: y\n\n".repeat(10_000);
    assert_eq!(run(&[small.as_bytes()], 64).unwrap().len(), small.len());
    // A stream of line ends without data holds nothing.
    let blanks = "\n".repeat(100_000);
    assert_eq!(run(&[blanks.as_bytes()], 16).unwrap().len(), 100_000);
}

#[test]
fn an_unfinished_event_is_not_emitted() {
    let out = run(&[b"data: {\"partial\": true}\n"], 1 << 20).unwrap();
    assert!(out.is_empty());
}

#[test]
fn an_escaped_tools_key_is_still_filtered() {
    // `"t\u006fols"` is `"tools"` to every JSON reader, but not byte for byte.
    let stream = b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"t\\u006fols\":[{\"name\":\"get_a\"},{\"name\":\"rm_b\"}]}}\n\n";
    let out = run(&[stream], 1 << 20).unwrap();
    assert_eq!(
        tools_in(&out),
        ["get_a"],
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn a_byte_order_mark_does_not_hide_the_first_event() {
    let event = list_event("\n");
    let stream = [b"\xEF\xBB\xBF".as_slice(), event.as_bytes()].concat();
    for split in [1, 2, 3, 4] {
        let (a, b) = stream.split_at(split);
        let out = run(&[a, b], 1 << 20).unwrap();
        assert_eq!(tools_in(&out), ["get_a"], "split {split}");
    }
}
