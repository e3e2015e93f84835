//! The one HTTPS client builder: every outbound connection the proxy makes —
//! discovery, JWKS, introspection, token endpoints and upstreams — gets its TLS
//! settings and its connector here, so they cannot drift apart (protocol
//! versions, crypto provider, which roots are trusted, ALPN, socket options).
//!
//! rustls uses the aws-lc-rs provider explicitly, independent of any
//! process-wide default. Callers build their own pooled `Client` on top, since
//! they differ only in body type and pool size.

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use std::time::Duration;

/// Which certificate authorities a client trusts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The Mozilla roots.
    Public,
    /// The Mozilla roots and the CA certificates of this PEM bundle (an IdP
    /// behind a private CA: `providers[].ca_file`, `credentials[].ca_file`).
    PublicAnd(&'a [u8]),
    /// Only this PEM bundle (`upstream_tls.ca_file`: a service's own CA).
    Only(&'a [u8]),
}

/// Why a client could not be built. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HttpsError(pub String);

/// The TLS client configuration for `trust`, presenting `client_auth` (a
/// certificate chain and its key) when given.
pub fn tls_config(
    trust: Trust<'_>,
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, HttpsError> {
    let mut roots = rustls::RootCertStore::empty();
    match trust {
        Trust::Public => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Trust::PublicAnd(pem) => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            add_pem(&mut roots, pem)?;
        }
        Trust::Only(pem) => add_pem(&mut roots, pem)?,
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| HttpsError(format!("TLS setup: {e}")))?
    .with_root_certificates(roots);
    match client_auth {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| HttpsError(format!("client certificate and key do not match: {e}"))),
        None => Ok(builder.with_no_client_auth()),
    }
}

fn add_pem(roots: &mut rustls::RootCertStore, pem: &[u8]) -> Result<(), HttpsError> {
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| HttpsError(format!("CA PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| HttpsError(format!("CA certificate: {e}")))?;
        added += 1;
    }
    if added == 0 {
        return Err(HttpsError("CA PEM holds no certificate".into()));
    }
    Ok(())
}

/// Reads a CA bundle file for [`Trust::PublicAnd`] or [`Trust::Only`].
pub fn read_ca_file(path: &str) -> Result<Vec<u8>, HttpsError> {
    std::fs::read(path).map_err(|e| HttpsError(format!("{path}: cannot read CA bundle: {e}")))
}

/// A connector for `http://` and `https://` with `tls`, offering HTTP/1.1 and h2
/// by ALPN; `server_name` overrides the name checked in the certificate (and sent
/// as SNI).
pub fn connector(
    tls: rustls::ClientConfig,
    server_name: Option<ServerName<'static>>,
) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match server_name {
        Some(name) => {
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    builder.enable_all_versions().wrap_connector(http)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["ca.internal".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn extra_roots_must_hold_a_certificate() {
        assert!(tls_config(Trust::PublicAnd(b"junk"), None).is_err());
        assert!(tls_config(Trust::Only(b""), None).is_err());
        let pem = ca_pem();
        assert!(tls_config(Trust::PublicAnd(pem.as_bytes()), None).is_ok());
        assert!(tls_config(Trust::Only(pem.as_bytes()), None).is_ok());
        assert!(tls_config(Trust::Public, None).is_ok());
    }
}
