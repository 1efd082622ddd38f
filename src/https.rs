//! The one HTTPS/1.1 server loop behind the API server and the kubelet API: accept, TLS handshake
//! (10 s limit), hyper HTTP/1.1 with upgrades (exec/attach/port-forward streams), and on shutdown
//! stop accepting, ask every connection to finish gracefully and wait a bounded time for them.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::streamproxy::Body;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
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
            let svc = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, std::convert::Infallible>(handler(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), svc)
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
