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
//!
//! Callers serving the incoming side must serve their hyper connection `.with_upgrades()`, or the
//! incoming upgrade never resolves (the splice task then ends with an error log).
//!
//! Model: k8s.io/apimachinery/pkg/util/proxy/upgradeaware.go (`UpgradeAwareHandler`), here only
//! the part Berth needs: one upstream connection per request, HTTP/1.1, no redirects followed.
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A boxed error for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type shared by the API server and the kubelet API.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Errors while proxying.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("connecting to {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("TLS to {target}: {source}")]
    Tls {
        target: String,
        source: std::io::Error,
    },
    #[error("HTTP to {target}: {source}")]
    Http {
        target: String,
        source: hyper::Error,
    },
    #[error("bad target {0}")]
    BadTarget(String),
}

/// Headers that apply to one hop only (RFC 9110 7.6.1, plus the legacy ones Go's proxy drops).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// True when `headers` ask for a protocol upgrade (`Connection: upgrade` token plus an `Upgrade`
/// header), like apimachinery's `httpstream.IsUpgradeRequest`.
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .map(|s| {
                    s.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                })
                .unwrap_or(false)
        })
}

/// Remove hop-by-hop headers (and any header named in `Connection`) from `headers`. When
/// `keep_upgrade` is set, `Connection: Upgrade` and the `Upgrade` header survive.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| {
            s.split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|t| !(t.is_empty() || (keep_upgrade && t == "upgrade")))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    let upgrade = headers.get(header::UPGRADE).cloned();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    if keep_upgrade {
        if let Some(u) = upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(header::UPGRADE, u);
        }
    }
}

/// A client config with no trust anchors: every server certificate is rejected.
fn trust_nothing() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Arc::new(cfg)
}

/// Forward `req` to `target`; see the module docs.
pub async fn forward(
    mut req: http::Request<hyper::body::Incoming>,
    target: url::Url,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<http::Response<Body>, ProxyError> {
    let target_s = target.to_string();
    let https = match target.scheme() {
        "http" => false,
        "https" => true,
        _ => return Err(ProxyError::BadTarget(target_s)),
    };
    let host = target
        .host_str()
        .ok_or_else(|| ProxyError::BadTarget(target_s.clone()))?
        .to_owned();
    let port = target
        .port_or_known_default()
        .ok_or_else(|| ProxyError::BadTarget(target_s.clone()))?;
    // url gives IPv6 hosts in brackets; strip them for connecting and for the TLS name.
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();

    let upgrade = is_upgrade_request(req.headers());
    let incoming_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    // Build the outgoing request: path and query from the target, headers minus hop-by-hop.
    let mut path_and_query = target.path().to_owned();
    if let Some(q) = target.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers, upgrade);
    let authority = match target.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    headers.insert(
        header::HOST,
        HeaderValue::from_str(&authority).map_err(|_| ProxyError::BadTarget(target_s.clone()))?,
    );
    let out_body: Body = if upgrade {
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync()
    } else {
        body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
    };
    let mut out = http::Request::builder()
        .method(parts.method)
        .uri(path_and_query)
        .version(http::Version::HTTP_11)
        .body(out_body)
        .map_err(|_| ProxyError::BadTarget(target_s.clone()))?;
    *out.headers_mut() = headers;

    let tcp = TcpStream::connect((bare_host.as_str(), port))
        .await
        .map_err(|source| ProxyError::Connect {
            target: target_s.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let mut resp = if https {
        let cfg = tls.unwrap_or_else(trust_nothing);
        let name = rustls::pki_types::ServerName::try_from(bare_host.clone())
            .map_err(|_| ProxyError::BadTarget(target_s.clone()))?;
        let stream = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .map_err(|source| ProxyError::Tls {
                target: target_s.clone(),
                source,
            })?;
        send(TokioIo::new(stream), out, &target_s).await?
    } else {
        send(TokioIo::new(tcp), out, &target_s).await?
    };

    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let (parts, _) = resp.into_parts();
        let mut builder = http::Response::builder().status(http::StatusCode::SWITCHING_PROTOCOLS);
        if let Some(h) = builder.headers_mut() {
            *h = parts.headers;
        }
        match incoming_upgrade {
            Some(incoming) => {
                let target = target_s.clone();
                tokio::spawn(async move {
                    let (down, up) = match tokio::try_join!(incoming, upstream_upgrade) {
                        Ok(pair) => pair,
                        Err(e) => {
                            tracing::warn!(%target, error = %e, "upgrade failed");
                            return;
                        }
                    };
                    let mut down = TokioIo::new(down);
                    let mut up = TokioIo::new(up);
                    match tokio::io::copy_bidirectional(&mut down, &mut up).await {
                        Ok((a, b)) => {
                            tracing::debug!(%target, to_upstream = a, from_upstream = b, "stream closed")
                        }
                        Err(e) => tracing::debug!(%target, error = %e, "stream ended"),
                    }
                });
            }
            None => {
                tracing::warn!(target = %target_s, "upstream switched protocols without an upgrade request");
            }
        }
        let empty = Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        return builder
            .body(empty)
            .map_err(|_| ProxyError::BadTarget(target_s));
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Ok(http::Response::from_parts(
        parts,
        body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
    ))
}

/// One HTTP/1.1 exchange over `io`; the connection task runs (with upgrades) in the background.
async fn send<T>(
    io: TokioIo<T>,
    req: http::Request<Body>,
    target: &str,
) -> Result<http::Response<hyper::body::Incoming>, ProxyError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|source| ProxyError::Http {
            target: target.to_owned(),
            source,
        })?;
    let t = target.to_owned();
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(target = %t, error = %e, "upstream connection ended");
        }
    });
    sender
        .send_request(req)
        .await
        .map_err(|source| ProxyError::Http {
            target: target.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;
    use std::convert::Infallible;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn upgrade_detection() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(!is_upgrade_request(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(is_upgrade_request(&h));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        assert!(!is_upgrade_request(&h));
    }

    #[test]
    fn hop_by_hop_stripping() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, X-Foo"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            "x-stream-protocol-version",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        let mut kept = h.clone();
        strip_hop_by_hop(&mut kept, true);
        assert_eq!(kept.get(header::CONNECTION).unwrap(), "Upgrade");
        assert_eq!(kept.get(header::UPGRADE).unwrap(), "SPDY/3.1");
        assert!(kept.get("x-foo").is_none());
        assert!(kept.get("keep-alive").is_none());
        assert!(kept.get("x-stream-protocol-version").is_some());
        strip_hop_by_hop(&mut h, false);
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(header::UPGRADE).is_none());
    }

    /// Upstream: `/upgrade` answers 101 and echoes bytes; `/stream` sends "one\n", waits for a
    /// signal from the test, then sends "two\n"; `/echo` returns the request body and path+query.
    async fn upstream(release: Arc<tokio::sync::Notify>) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let release = release.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |mut req: http::Request<hyper::body::Incoming>| {
                            let release = release.clone();
                            async move {
                                let resp: http::Response<Body> = match req.uri().path() {
                                    "/upgrade" => {
                                        assert!(is_upgrade_request(req.headers()));
                                        assert_eq!(
                                            req.headers()["x-stream-protocol-version"],
                                            "v4.channel.k8s.io"
                                        );
                                        let on = hyper::upgrade::on(&mut req);
                                        tokio::spawn(async move {
                                            let mut io = TokioIo::new(on.await.unwrap());
                                            let mut buf = [0u8; 1024];
                                            loop {
                                                let n = io.read(&mut buf).await.unwrap();
                                                if n == 0 {
                                                    break;
                                                }
                                                io.write_all(&buf[..n]).await.unwrap();
                                            }
                                        });
                                        http::Response::builder()
                                            .status(101)
                                            .header("connection", "Upgrade")
                                            .header("upgrade", "SPDY/3.1")
                                            .header(
                                                "x-stream-protocol-version",
                                                "v4.channel.k8s.io",
                                            )
                                            .body(
                                                Empty::new().map_err(|n| match n {}).boxed_unsync(),
                                            )
                                            .unwrap()
                                    }
                                    "/stream" => {
                                        let s = futures::stream::unfold(0, move |i| {
                                            let release = release.clone();
                                            async move {
                                                match i {
                                                    0 => Some((
                                                        Ok::<_, BoxError>(Frame::data(
                                                            Bytes::from("one\n"),
                                                        )),
                                                        1,
                                                    )),
                                                    1 => {
                                                        release.notified().await;
                                                        Some((
                                                            Ok(Frame::data(Bytes::from("two\n"))),
                                                            2,
                                                        ))
                                                    }
                                                    _ => None,
                                                }
                                            }
                                        });
                                        http::Response::new(BodyExt::boxed_unsync(StreamBody::new(
                                            s,
                                        )))
                                    }
                                    _ => {
                                        let pq = req.uri().to_string();
                                        let body =
                                            req.into_body().collect().await.unwrap().to_bytes();
                                        let mut out = pq.into_bytes();
                                        out.push(b' ');
                                        out.extend_from_slice(&body);
                                        http::Response::new(
                                            Full::new(Bytes::from(out))
                                                .map_err(|n| match n {})
                                                .boxed_unsync(),
                                        )
                                    }
                                };
                                Ok::<_, Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        addr
    }

    /// The proxy: forwards every request to `upstream` + the request's path and query.
    async fn proxy(up: std::net::SocketAddr) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| async move {
                            let target =
                                url::Url::parse(&format!("http://{up}{}", req.uri())).unwrap();
                            let resp = forward(req, target, None).await.unwrap();
                            Ok::<_, Infallible>(resp)
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn upgrade_is_spliced() {
        let up = upstream(Arc::new(tokio::sync::Notify::new())).await;
        let p = proxy(up).await;
        let mut s = TcpStream::connect(p).await.unwrap();
        s.write_all(
            b"POST /upgrade?command=sh HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
              X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(
                s.read(&mut b).await.unwrap(),
                1,
                "eof in head: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: spdy/3.1"), "{head}");
        assert!(
            head.contains("x-stream-protocol-version: v4.channel.k8s.io"),
            "{head}"
        );
        for msg in [&b"hello"[..], &b"\x00\x01binary\xff"[..]] {
            s.write_all(msg).await.unwrap();
            let mut got = vec![0u8; msg.len()];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(got, msg);
        }
    }

    #[tokio::test]
    async fn body_streams_and_request_is_forwarded() {
        let release = Arc::new(tokio::sync::Notify::new());
        let up = upstream(release.clone()).await;
        let p = proxy(up).await;
        let tcp = TcpStream::connect(p).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);

        // A plain request: path, query and body arrive upstream.
        let resp = send
            .send_request(
                http::Request::post("/echo?a=1&a=2")
                    .body(Full::new(Bytes::from("payload")))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"/echo?a=1&a=2 payload");

        // A streaming response: the first chunk arrives before upstream sends the second.
        let resp = send
            .send_request(http::Request::get("/stream").body(Full::default()).unwrap())
            .await
            .unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"one\n");
        release.notify_one();
        let mut rest = Vec::new();
        while let Some(f) = body.frame().await {
            if let Ok(d) = f.unwrap().into_data() {
                rest.extend_from_slice(&d);
            }
        }
        assert_eq!(rest, b"two\n");
    }

    #[tokio::test]
    async fn connect_error_is_reported() {
        // Bind then drop to get a port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let up = upstream(Arc::new(tokio::sync::Notify::new())).await;
        let _ = up;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let svc = hyper::service::service_fn(
                move |req: http::Request<hyper::body::Incoming>| async move {
                    let target = url::Url::parse(&format!("http://127.0.0.1:{port}/x")).unwrap();
                    let err = forward(req, target, None).await.unwrap_err();
                    assert!(matches!(err, ProxyError::Connect { .. }), "{err}");
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .status(502)
                            .body(Full::new(Bytes::new()))
                            .unwrap(),
                    )
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let resp = send
            .send_request(http::Request::get("/").body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 502);
    }
}
