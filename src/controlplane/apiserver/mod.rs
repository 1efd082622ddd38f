//! A minimal but real kube-apiserver: HTTPS (HTTP/1.1), client-certificate authentication,
//! discovery, CRUD + watch over the embedded store, server-side Table output, and the pod
//! log/exec/attach/portforward subresources proxied to kubelets.
//!
//! Authorization: Node, RBAC and NodeRestriction (`controlplane::auth`), hooked in right after
//! authentication (`handlers::handle`); `system:masters` may do anything.
//! `/healthz`, `/livez`, `/readyz` answer without a client certificate; everything else needs one.
//!
//! Not implemented yet: impersonation, bearer tokens, server-side apply (`application/apply-patch+yaml`
//! answers 415), `limit`/`continue` paging (lists are always complete), `resourceVersionMatch`,
//! garbage collection / propagationPolicy (accepted, ignored), the namespace lifecycle
//! (deleting a namespace removes it at once and deletes its objects in the background), request
//! bodies in YAML (and protobuf beyond the kinds in [`proto`]), openapi schemas (the /openapi
//! documents only advertise `fieldValidation`), apps/batch/other groups, events.k8s.io.
//!
//! Layout: pure logic in `object` (metadata, deletion decision), `pods` (defaulting, validation),
//! `selectors`, `patch`, `table`, `discovery`, `status` (errors), `auth` (client-cert subject);
//! request handling in `handlers` (CRUD), `watch` and `proxy`; this file owns the listener.
pub mod auth;
pub mod discovery;
/// Entry points of the cargo-fuzz targets (fuzz/); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod handlers;
pub mod object;
pub mod patch;
pub mod pods;
pub mod proto;
mod proxy;
pub mod resources;
pub mod selectors;
pub mod status;
pub mod table;
mod watch;

#[cfg(test)]
mod kubectl_tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::controlplane::store::{Action, Store};

/// Configuration of the API server.
pub struct ApiServerConfig {
    pub listen: SocketAddr,
    /// Server cert + client-cert verifier (cluster CA; client auth optional so we can answer 401).
    pub tls: Arc<rustls::ServerConfig>,
    /// The redb file.
    pub store_path: PathBuf,
    /// Client cert for talking to kubelets (no server verification).
    pub kubelet_tls: Arc<rustls::ClientConfig>,
}

/// Shared state of all requests.
pub(crate) struct State {
    pub store: Arc<Store>,
    pub kubelet_tls: Arc<rustls::ClientConfig>,
    pub shutdown: CancellationToken,
    pub server_address: String,
    /// Authorization state (policy snapshot cache).
    pub authz: crate::controlplane::auth::server::Authz,
    /// Concurrency caps (max-requests-inflight).
    pub inflight: handlers::Inflight,
}

/// A bound API server: the port is listening (connections queue) once this exists.
pub struct ApiServer {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    store: Arc<Store>,
    kubelet_tls: Arc<rustls::ClientConfig>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Namespaces created on first start.
pub const INITIAL_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Open the store, create the initial namespaces, and bind the listener.
pub async fn bind(cfg: ApiServerConfig) -> anyhow::Result<ApiServer> {
    bind_with_encryption(cfg, None).await
}

/// [`bind`] with encryption at rest (`--encryption-provider-config`).
pub async fn bind_with_encryption(
    cfg: ApiServerConfig,
    encryption: Option<Arc<crate::controlplane::store::encryption::EncryptionConfig>>,
) -> anyhow::Result<ApiServer> {
    let path = cfg.store_path.clone();
    let store = tokio::task::spawn_blocking(move || Store::open_with(&path, encryption))
        .await?
        .with_context(|| format!("opening store {}", cfg.store_path.display()))?;
    let store = Arc::new(store);
    ensure_namespaces(&store).await?;
    {
        let store = store.clone();
        tokio::task::spawn_blocking(move || crate::controlplane::auth::server::ensure_bootstrap_policy(&store))
            .await?
            .context("RBAC bootstrap policy")?;
    }
    let mut tls = (*cfg.tls).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let local_addr = listener.local_addr()?;
    info!(%local_addr, "API server listening");
    Ok(ApiServer {
        listener,
        tls: Arc::new(tls),
        store,
        kubelet_tls: cfg.kubelet_tls,
        local_addr,
    })
}

async fn ensure_namespaces(store: &Arc<Store>) -> anyhow::Result<()> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let def = resources::namespaces();
        for ns in INITIAL_NAMESPACES {
            let key = def.key("", ns);
            let now = object::now_rfc3339();
            store.transact::<(), std::convert::Infallible>(&key, |cur| {
                if cur.is_some() {
                    return Ok(Action::Nothing(()));
                }
                let mut obj = json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns,
                    "labels": {"kubernetes.io/metadata.name": ns}}});
                object::prepare_create(def, &mut obj, "", &now).expect("initial namespaces are valid");
                Ok(Action::Put(obj, ()))
            })?
            .expect("infallible");
        }
        Ok(())
    })
    .await?
}

impl ApiServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serve until `shutdown` is cancelled; then stop accepting, end watches and let in-flight
    /// requests finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let state = Arc::new(State {
            store: self.store.clone(),
            kubelet_tls: self.kubelet_tls.clone(),
            shutdown: shutdown.clone(),
            server_address: self.local_addr.to_string(),
            authz: Default::default(),
            inflight: Default::default(),
        });
        crate::https::serve(self.listener, self.tls, shutdown, move |certs| {
            let state = state.clone();
            let user = auth::user_from_certs(certs);
            move |req| handlers::handle(state.clone(), req, user.clone())
        })
        .await;
        info!("API server stopped");
        Ok(())
    }
}

