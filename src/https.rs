//! The one HTTPS/1.1 server loop behind the API server and the kubelet API: accept, TLS handshake
//! (10 s limit), hyper HTTP/1.1 with upgrades (exec/attach/port-forward streams), and on shutdown
//! stop accepting, ask every connection to finish gracefully and wait a bounded time for them.
//!
//! Connection limits: the TLS handshake must finish in [`HANDSHAKE_TIMEOUT`]; a request head
//! must arrive completely within [`HEADER_READ_TIMEOUT`] of the connection starting to wait
//! for it (so a half-sent head, or a keep-alive connection idle that long, is closed); a head may
//! be at most [`MAX_HEAD_BYTES`] (Go's and so kube-apiserver's 1 MiB) and a URI at most hyper's
//! 65,534 bytes. hyper's automatic 400/414/431 answers get a metav1 Status body.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::streamproxy::Body;

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may take to send a complete request head (also the keep-alive idle
/// timeout: hyper starts this timer whenever it waits for a head).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 1024 * 1024;
/// How long one connection may take to finish after shutdown.
const CONNECTION_GRACE: Duration = Duration::from_secs(5);
/// How long the server waits for all its connections after shutdown.
const SERVER_GRACE: Duration = Duration::from_secs(6);

/// Serve `listener` with TLS until `shutdown`. For each connection, `connection` is called once,
/// after the handshake, with the peer's verified client certificates (if any), and returns the
/// handler of that connection's requests.
pub async fn serve<C, H, F>(listener: TcpListener, tls: Arc<rustls::ServerConfig>, shutdown: CancellationToken, connection: C)
where
    C: Fn(Option<&[CertificateDer<'static>]>) -> H + Clone + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, shutdown, connection) = (acceptor.clone(), shutdown.clone(), connection.clone());
        conns.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let handler = connection(tls.get_ref().1.peer_certificates());
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                async move {
                    // hyper's buffer limit lets a head overshoot by one read; the real limit.
                    if head_size(&req) > MAX_HEAD_BYTES {
                        return Ok(head_too_large());
                    }
                    Ok::<_, std::convert::Infallible>(handler(req).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(StatusOnErrors::new(tls)), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with error");
                },
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CONNECTION_GRACE, conn).await;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(SERVER_GRACE, async { while conns.join_next().await.is_some() {} }).await;
}

/// Bytes of a request's head as sent (request line and headers, approximately).
fn head_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri().to_string().len();
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .fold(uri + 16, usize::saturating_add)
}

/// 431 with a Status body, closing the connection.
fn head_too_large() -> Response<Body> {
    let body = status_body(431).expect("431 has a body");
    Response::builder()
        .status(431)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONNECTION, "close")
        .body(
            http_body_util::Full::new(bytes::Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("static response parts are valid")
}

/// The Status body for one of hyper's automatic error answers.
fn status_body(code: u16) -> Option<String> {
    let (reason, message) = match code {
        400 => ("BadRequest", "the request could not be parsed".to_string()),
        414 => ("", "URI too long".to_string()),
        431 => (
            "",
            format!("request header fields too large: limit is {MAX_HEAD_BYTES}"),
        ),
        _ => return None,
    };
    let mut v = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "code": code});
    if !reason.is_empty() {
        v["reason"] = reason.into();
    }
    Some(v.to_string())
}

/// If `buf` is exactly one of hyper's automatic error responses (status 400/414/431, only
/// `connection: close`, `content-length: 0` and `date` headers), the same response with a
/// Status body.
fn rewrite_auto_error(buf: &[u8]) -> Option<Vec<u8>> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if head_end != buf.len() {
        return None;
    }
    let head = std::str::from_utf8(&buf[..head_end - 4]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let code: u16 = status_line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = status_body(code)?;
    let mut date = None;
    for l in lines {
        let (k, v) = l.split_once(':')?;
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" if v.trim() == "0" => {}
            "connection" if v.trim().eq_ignore_ascii_case("close") => {}
            "date" => date = Some(v.trim().to_string()),
            _ => return None,
        }
    }
    let mut out = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(d) = date {
        out.push_str(&format!("date: {d}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(out.into_bytes())
}

/// How long a connection answered with an automatic error is read (and discarded) before it is
/// closed, so the client's unsent rest does not turn the close into a reset that loses the
/// answer (Go's server does the same, `closeWriteAndWait`).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 8 * 1024 * 1024;

/// IO wrapper that gives hyper's automatic error answers (malformed head, head too large, URI
/// too long) a Status body like every other error of the API.
struct StatusOnErrors<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    /// Always Some until dropped.
    inner: Option<T>,
    /// Bytes of a rewritten response still to be written.
    pending: Vec<u8>,
    sent: usize,
    /// An automatic error answer was sent: linger on close.
    answered_error: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> StatusOnErrors<T> {
    fn new(inner: T) -> Self {
        StatusOnErrors {
            inner: Some(inner),
            pending: Vec::new(),
            sent: 0,
            answered_error: false,
        }
    }
    fn io(&mut self) -> Pin<&mut T> {
        Pin::new(self.inner.as_mut().expect("inner taken only on drop"))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for StatusOnErrors<T> {
    fn drop(&mut self) {
        if !self.answered_error {
            return;
        }
        let (Some(mut io), Ok(rt)) = (self.inner.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        rt.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = io.flush().await;
            let _ = tokio::time::timeout(LINGER, async {
                let mut buf = vec![0u8; 16 * 1024];
                let mut total = 0usize;
                while let Ok(n) = io.read(&mut buf).await {
                    total += n;
                    if n == 0 || total > LINGER_MAX_BYTES {
                        break;
                    }
                }
            })
            .await;
            let _ = io.shutdown().await;
        });
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> StatusOnErrors<T> {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let (sent, pending) = (self.sent, std::mem::take(&mut self.pending));
            let r = self.io().poll_write(cx, &pending[sent..]);
            self.pending = pending;
            let n = std::task::ready!(r)?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for StatusOnErrors<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for StatusOnErrors<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        if buf.len() < 512 && buf.starts_with(b"HTTP/1.1 4") {
            if let Some(replacement) = rewrite_auto_error(buf) {
                self.pending = replacement;
                self.sent = 0;
                self.answered_error = true;
                // Accepted: the replacement is written by this and later polls.
                let _ = self.drain(cx)?;
                return Poll::Ready(Ok(buf.len()));
            }
        }
        self.io().poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        self.io().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        if self.answered_error {
            // The close happens on drop, after lingering.
            return self.io().poll_flush(cx);
        }
        self.io().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_error_answers_get_status_bodies() {
        let out = rewrite_auto_error(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 22:00:00 GMT\r\n\r\n",
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        let (head, body) = s.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!((v["kind"].as_str(), v["code"].as_u64()), (Some("Status"), Some(431)));
        let s414 = rewrite_auto_error(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert!(String::from_utf8(s414).unwrap().contains("\"code\":414"));
        // Our own responses (other headers, or a body) are left alone.
        assert!(rewrite_auto_error(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(rewrite_auto_error(b"HTTP/1.1 431 X\r\ncontent-length: 2\r\n\r\n").is_none());
        assert!(rewrite_auto_error(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
    }

    #[tokio::test]
    async fn rewritten_answers_are_written_whole() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(16);
        let mut w = StatusOnErrors::new(a);
        let writer = tokio::spawn(async move {
            w.write_all(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n").await.unwrap();
            w.flush().await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = String::new();
        b.read_to_string(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got.ends_with("\"code\":414}") || got.contains("\"code\":414"), "{got}");
        let body = got.split_once("\r\n\r\n").unwrap().1;
        assert!(got.contains(&format!("content-length: {}", body.len())));
    }
}

#[cfg(test)]
mod hyper_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// hyper's own answers to a URI over 65,534 bytes and a head over the buffer limit carry
    /// a Status body through the wrapper.
    #[tokio::test]
    async fn hyper_auto_errors_through_the_wrapper() {
        for (req, code) in [
            (format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)), 414u16),
            (format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "h".repeat(MAX_HEAD_BYTES + 10)), 431),
        ] {
            let (server, mut client) = tokio::io::duplex(1 << 16);
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
            });
            let conn = tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .serve_connection(TokioIo::new(StatusOnErrors::new(server)), svc)
                    .await;
            });
            let writer = tokio::spawn(async move {
                let _ = client.write_all(req.as_bytes()).await;
                let mut out = Vec::new();
                let _ = client.read_to_end(&mut out).await;
                out
            });
            let out = String::from_utf8_lossy(&writer.await.unwrap()).into_owned();
            let _ = conn.await;
            assert!(out.starts_with(&format!("HTTP/1.1 {code} ")), "{out}");
            assert!(out.contains(&format!("\"code\":{code}")), "{out}");
        }
    }
}
