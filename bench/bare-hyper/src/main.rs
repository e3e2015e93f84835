//! A bare hyper reverse proxy: the floor under Portcullis's data plane in bench/run.
//!
//! What Portcullis's data plane is built from and nothing else: one current-thread
//! tokio runtime (as each Portcullis worker), hyper's HTTP/1 server, the pooled
//! hyper-util client, mimalloc. No auth, policy, header rewriting, audit or metrics,
//! so `pc_full_rs256` read against this row is the cost of our own per-request work.
//!
//!     bare-hyper LISTEN_ADDR UPSTREAM_ADDR     e.g. bare-hyper 127.0.0.1:8081 127.0.0.1:9000

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Upstream = Client<HttpConnector, Incoming>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream] = args.as_slice() else {
        return Err("usage: bare-hyper LISTEN_ADDR UPSTREAM_ADDR".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: SocketAddr = upstream.parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // Pool settings as Portcullis's upstream client (forward/client.rs).
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        // Out of descriptors, say: wait and accept again rather than exit.
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| forward(client.clone(), upstream, req));
            // A client that goes away mid-request is its own business here.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: Upstream,
    upstream: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = Uri::builder()
        .scheme("http")
        .authority(upstream.to_string())
        .path_and_query(path)
        .build()?;
    Ok(client.request(req).await?)
}
