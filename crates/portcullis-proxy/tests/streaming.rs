//! Bodies stream both ways: moving hundreds of MiB through the proxy must not grow
//! the process's memory by more than a few buffers. Alone in its own test binary so
//! no other test's allocations blur the measurement.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::convert::Infallible;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_without_memory_growth() {
    let h =
        Harness::start("  - match: { path_prefix: / }\n    upstream: UPSTREAM\n    auth: none\n")
            .await;
    // Warm up pools and allocator.
    let _ = get(&h.url("/download/1048576")).await;
    let before = rss_bytes();

    // Download 512 MiB through the proxy, reading it frame by frame.
    let size = 512 * MIB;
    let client = client();
    let resp = client
        .request(
            http::Request::get(h.url(&format!("/download/{size}")))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        got += frame
            .unwrap()
            .data_ref()
            .map(|d| d.len() as u64)
            .unwrap_or(0);
    }
    assert_eq!(got, size);

    // Upload 256 MiB, chunked, generated on the fly.
    let upload = 256 * MIB;
    let chunk = Bytes::from(vec![7u8; 256 * 1024]);
    let stream = futures_util::stream::unfold(upload, move |left| {
        let chunk = chunk.clone();
        async move {
            (left > 0).then(|| {
                let n = left.min(chunk.len() as u64);
                (
                    Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))),
                    left - n,
                )
            })
        }
    });
    let up_client: hyper_util::client::legacy::Client<_, StreamBody<_>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let resp = up_client
        .request(
            http::Request::post(h.url("/upload"))
                .body(StreamBody::new(Box::pin(stream)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(json["body_bytes"], upload);

    let growth = rss_bytes().saturating_sub(before);
    assert!(
        growth < 64 * MIB,
        "memory grew by {} MiB while streaming",
        growth / MIB
    );
}
