//! Upgrade-aware HTTP proxy, used by the API server (kubectl -> kubelet) and by the kubelet API
//! (API server -> containerd's CRI streaming server) for logs, exec, attach and port-forward.
//!
//! OWNER: node engineer. Contract (others code against it):
//! `forward(req, target, tls)` sends `req`'s method, headers (minus hop-by-hop ones, but keeping
//! `Connection: Upgrade`/`Upgrade` for upgrade requests) and body to `target` (an http:// or https://
//! URL whose path and query are used as-is), and returns the upstream response with a streaming body.
//! When upstream answers 101 Switching Protocols, the returned response is a 101 with upstream's
//! headers, and a background task splices the two upgraded connections byte for byte until either
//! side closes. `tls` is used for https targets (None = a default that trusts nothing: callers pass
//! one). Errors map to a 502 by the caller.
use std::sync::Arc;

use bytes::Bytes;

/// A boxed error for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type shared by the API server and the kubelet API.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Errors while proxying.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("connecting to {target}: {source}")]
    Connect { target: String, source: std::io::Error },
    #[error("TLS to {target}: {source}")]
    Tls { target: String, source: std::io::Error },
    #[error("HTTP to {target}: {source}")]
    Http { target: String, source: hyper::Error },
    #[error("bad target {0}")]
    BadTarget(String),
}

/// Forward `req` to `target`; see the module docs.
pub async fn forward(
    req: http::Request<hyper::body::Incoming>,
    target: url::Url,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<http::Response<Body>, ProxyError> {
    let _ = (req, tls);
    Err(ProxyError::BadTarget(target.to_string()))
}
