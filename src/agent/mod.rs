//! The node agent: registers the Node, runs the pods bound to it through CRI, serves the kubelet API.
//!
//! `run` wires the parts: one CRI connection and one API client shared by the node loop
//! (registration, status, lease, CNI config), the pod lifecycle and the kubelet API server.
pub mod cni_conf;
pub mod config;
pub mod join;
pub mod node;
pub mod pods;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::AgentConfig;

use crate::cri::Cri;

/// Run the agent until `shutdown` is cancelled or one of its parts fails (then the others are
/// stopped too). Running containers are left running: a restarted agent adopts them.
pub async fn run(cfg: Arc<AgentConfig>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = crate::kubeclient::from_file(&cfg.kubeconfig).await?;
    let cri = connect_cri(&cfg, &shutdown).await?;
    let tls = server::tls_config(&cfg).context("kubelet API TLS")?;
    tracing::info!(node = %cfg.node_name, ip = %cfg.node_ip, "agent starting");

    let stop = shutdown.child_token();
    let mut parts: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    {
        let (client, cri, cfg, stop) = (client.clone(), cri.clone(), cfg.clone(), stop.clone());
        parts.spawn(async move { ("node", node::run(client, cri, cfg, stop).await) });
    }
    {
        let (cri, cfg, stop) = (cri.clone(), cfg.clone(), stop.clone());
        parts.spawn(async move { ("pods", pods::run(client, cri, cfg, stop).await) });
    }
    {
        let stop = stop.clone();
        parts.spawn(async move { ("kubelet API", server::serve(cfg, cri, tls, stop).await) });
    }

    let mut first_error = None;
    while let Some(joined) = parts.join_next().await {
        let (part, result) = joined.unwrap_or_else(|e| ("task", Err(anyhow::anyhow!("panicked: {e}"))));
        match result {
            Ok(()) if stop.is_cancelled() => {}
            Ok(()) => tracing::warn!(part, "agent part exited early; stopping the agent"),
            Err(e) => {
                tracing::error!(part, error = %format!("{e:#}"), "agent part failed; stopping the agent");
                first_error.get_or_insert(e.context(part));
            }
        }
        stop.cancel();
    }
    first_error.map_or(Ok(()), Err)
}

/// Connect to containerd, waiting for its socket (it may start after us) until `shutdown`.
async fn connect_cri(cfg: &AgentConfig, shutdown: &CancellationToken) -> anyhow::Result<Cri> {
    let socket = &cfg.containerd_socket;
    crate::shutdown::retry(shutdown, Duration::from_secs(5), "container runtime not reachable yet", || Cri::connect(socket))
        .await
        .with_context(|| format!("shut down before the container runtime at {} answered", socket.display()))
}
