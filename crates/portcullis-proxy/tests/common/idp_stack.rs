//! A real server between a real development issuer (discovery and JWKS over
//! HTTP) and a real echo upstream, with a file audit sink: the stack the
//! identity, forward-auth and ext_authz tests all judge requests against.

use super::{config, wait_ready};
use portcullis_proxy::Server;
use portcullis_testkit::{DevIssuer, EchoUpstream};
use serde_json::Value;
use std::time::Duration;

pub struct IdpStack {
    pub server: Server,
    pub echo: EchoUpstream,
    pub idp: DevIssuer,
    pub audit: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl IdpStack {
    /// `server_keys` are extra lines of the `server` section (indented two
    /// spaces), `sections` extra top-level sections; `routes` is the `routes:`
    /// list with `UPSTREAM` standing for the echo upstream's URL. The issuer is
    /// the provider `dev`, audience `orders-api`.
    pub async fn start(server_keys: &str, sections: &str, routes: &str) -> IdpStack {
        let idp = DevIssuer::start().await.unwrap();
        let echo = EchoUpstream::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        let yaml = format!(
            "server:\n  listen: 127.0.0.1:0\n{server_keys}admin:\n  listen: 127.0.0.1:0\naudit:\n  sink: file:{}\n{sections}providers:\n  - name: dev\n    issuer: {}\n    audiences: [orders-api]\nroutes:\n{}",
            audit.display(),
            idp.issuer(),
            routes.replace("UPSTREAM", &echo.url())
        );
        let server = Server::start(config(&yaml), None).await.unwrap();
        wait_ready(server.admin_addr()).await;
        IdpStack {
            server,
            echo,
            idp,
            audit,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.local_addr())
    }

    /// A token for `orders-api` from the issuer, valid for 5 minutes.
    pub fn token(&self, sub: &str, extra: Value) -> String {
        self.idp.token(sub, "orders-api", 300, extra).unwrap()
    }

    pub fn audit_lines(&self) -> Vec<Value> {
        super::read_audit(&self.audit)
    }

    /// The audit lines once `n` have been written (the writer is asynchronous).
    pub async fn audit_when(&self, n: usize) -> Vec<Value> {
        for _ in 0..100 {
            let lines = self.audit_lines();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("expected {n} audit lines, got {:?}", self.audit_lines());
    }
}
