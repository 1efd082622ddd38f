//! What the binaries share: the control-plane flags (`berth up`, `berth-control-plane`) and the
//! daemon main loop (tracing, a 2-thread runtime, shutdown on signals).
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::controlplane::ControlPlaneConfig;

/// Control-plane flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ControlPlaneArgs {
    /// State directory (store.redb, pki/, kubeconfigs/).
    #[arg(long, default_value = "/var/lib/berth", env = "BERTH_STATE_DIR")]
    pub state_dir: PathBuf,
    /// API server listen address.
    #[arg(long, default_value = "0.0.0.0:6443")]
    pub listen: SocketAddr,
    /// Address clients reach the API server on (kubeconfig server URL, certificate SAN).
    /// Default: the listen address if specific, else the node IP (`berth up`) or the host's first
    /// non-loopback IPv4, else 127.0.0.1.
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// Cluster (pod) CIDR, split into one block per node.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: ipnetwork::IpNetwork,
    /// Mask size of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// Service CIDR.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: ipnetwork::IpNetwork,
    /// EncryptionConfiguration file (apiserver.config.k8s.io/v1; providers aescbc, secretbox,
    /// identity) for encryption at rest of the resources it names, as kube-apiserver's flag.
    #[arg(long)]
    pub encryption_provider_config: Option<PathBuf>,
}

impl ControlPlaneArgs {
    /// The control plane's config; `host_ip` is the advertise address used when neither
    /// --advertise-address nor a specific --listen address says otherwise.
    pub fn config(&self, host_ip: Option<IpAddr>) -> ControlPlaneConfig {
        let advertise = self.advertise_address.unwrap_or_else(|| {
            if self.listen.ip().is_unspecified() {
                host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
            } else {
                self.listen.ip()
            }
        });
        ControlPlaneConfig {
            state_dir: self.state_dir.clone(),
            listen: self.listen,
            advertise,
            cluster_cidr: self.cluster_cidr,
            node_cidr_prefix: self.node_cidr_mask_size,
            service_cidr: self.service_cidr,
            encryption_provider_config: self.encryption_provider_config.clone(),
        }
    }
}

/// Run a daemon: tracing, a 2-worker tokio runtime, and a shutdown token cancelled by the first
/// SIGTERM/SIGINT (the second exits at once). Logs the error the daemon ends with.
pub fn run_daemon<F, Fut>(daemon: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    crate::telemetry::init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let result = daemon(crate::shutdown::on_signals()).await;
        match &result {
            Ok(()) => tracing::info!("stopped"),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "failed"),
        }
        result
    })
}
