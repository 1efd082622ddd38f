//! `berth-control-plane`: the minimal control plane alone (API server, embedded store,
//! scheduler, node IPAM), for hosts whose agents join it with `berth join` / `berth agent`.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "berth-control-plane",
    version,
    about = "Minimal Kubernetes control plane: API server, store, scheduler, node IPAM"
)]
struct Cli {
    /// State directory (store.redb, pki/, kubeconfigs/).
    #[arg(long, default_value = "/var/lib/berth", env = "BERTH_STATE_DIR")]
    state_dir: PathBuf,
    /// API server listen address.
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// Address clients reach the API server on (kubeconfig server URL, certificate SAN).
    /// Default: the listen address if specific, else the host's first non-loopback IPv4, else
    /// 127.0.0.1.
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Cluster (pod) CIDR, split into one block per node.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: ipnetwork::IpNetwork,
    /// Mask size of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Service CIDR.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: ipnetwork::IpNetwork,
}

fn main() -> anyhow::Result<()> {
    berth::telemetry::init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let shutdown = berth::shutdown::on_signals();
        let advertise = cli.advertise_address.unwrap_or_else(|| {
            if cli.listen.ip().is_unspecified() {
                berth::agent::config::default_node_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
            } else {
                cli.listen.ip()
            }
        });
        let cfg = berth::controlplane::ControlPlaneConfig {
            state_dir: cli.state_dir,
            listen: cli.listen,
            advertise,
            cluster_cidr: cli.cluster_cidr,
            node_cidr_prefix: cli.node_cidr_mask_size,
            service_cidr: cli.service_cidr,
        };
        let cp = berth::controlplane::start(cfg, shutdown).await?;
        println!("berth control plane is up at {}", cp.server_url);
        println!("Admin kubeconfig: {}", cp.admin_kubeconfig.display());
        println!("Try: kubectl --kubeconfig {} get nodes", cp.admin_kubeconfig.display());
        let result = cp.wait().await;
        if let Err(e) = &result {
            tracing::error!(error = %format!("{e:#}"), "control plane failed");
        } else {
            tracing::info!("control plane stopped");
        }
        result
    })
}
