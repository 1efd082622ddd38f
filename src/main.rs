//! `berth`: the node agent (`berth agent`) and the standalone single host (`berth up`).
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use berth::agent::AgentConfig;

#[derive(Parser, Debug)]
#[command(name = "berth", version, about = "Kubernetes node agent: kubelet + kube-proxy + CNI in one daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the node agent against an API server (kubeconfig).
    Agent(AgentArgs),
    /// Run a control plane and an agent in one process: a standalone single-node cluster.
    Up(UpArgs),
}

/// Flags shared by `agent` and `up`: where this node's runtime, network and logs live.
#[derive(Args, Debug, Clone)]
struct NodeArgs {
    /// Node name; defaults to the host name, lower-cased.
    #[arg(long, env = "BERTH_NODE_NAME")]
    node_name: Option<String>,
    /// Address other hosts reach this node on (InternalIP); defaults to the first non-loopback IPv4.
    #[arg(long, env = "BERTH_NODE_IP")]
    node_ip: Option<IpAddr>,
    /// containerd's socket (CRI v1).
    #[arg(long, default_value = "/run/containerd/containerd.sock", env = "BERTH_CONTAINERD_SOCKET")]
    containerd_socket: PathBuf,
    /// Directory containerd reads CNI network configs from.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// Directory containerd runs CNI plugins from (checked for berth-cni at start-up).
    #[arg(long, default_value = "/opt/cni/bin")]
    cni_bin_dir: PathBuf,
    /// IPAM state directory handed to berth-cni.
    #[arg(long, default_value = "/var/lib/cni/networks")]
    cni_data_dir: PathBuf,
    /// Pod log directory (kubelet's /var/log/pods).
    #[arg(long, default_value = "/var/log/pods")]
    pod_log_dir: PathBuf,
    /// Kubelet API port.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// Bridge the pods attach to.
    #[arg(long, default_value = "berth0")]
    bridge: String,
    /// MTU of pod interfaces.
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
}

#[derive(Args, Debug)]
struct AgentArgs {
    /// Kubeconfig of this node's identity (system:node:<name>).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Agent state directory.
    #[arg(long, default_value = "/var/lib/berth")]
    state_dir: PathBuf,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Args, Debug)]
struct UpArgs {
    /// State directory: store, PKI, kubeconfigs.
    #[arg(long, default_value = "/var/lib/berth")]
    state_dir: PathBuf,
    /// API server listen address; the port is also used for the kubeconfig's server URL.
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// Cluster (pod) CIDR, split into one /24 per node.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: ipnetwork::IpNetwork,
    /// Size of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Service CIDR.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: ipnetwork::IpNetwork,
    #[command(flatten)]
    node: NodeArgs,
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
        match cli.command {
            Command::Agent(args) => {
                let cfg = agent_config(&args.node, args.kubeconfig, args.state_dir)?;
                berth::agent::run(Arc::new(cfg), shutdown).await
            }
            Command::Up(args) => up(args, shutdown).await,
        }
    })
}

fn agent_config(node: &NodeArgs, kubeconfig: PathBuf, state_dir: PathBuf) -> anyhow::Result<AgentConfig> {
    let node_name = match &node.node_name {
        Some(n) => n.clone(),
        None => berth::agent::config::default_node_name()?,
    };
    let node_ip = match node.node_ip {
        Some(ip) => ip,
        None => berth::agent::config::default_node_ip()
            .context("no non-loopback IPv4 address found; pass --node-ip")?,
    };
    if !node.cni_bin_dir.join("berth-cni").exists() {
        tracing::warn!(dir = %node.cni_bin_dir.display(), "berth-cni is not installed in the CNI bin dir; pods will fail to get a network");
    }
    Ok(AgentConfig {
        node_name,
        node_ip,
        kubeconfig,
        containerd_socket: node.containerd_socket.clone(),
        cni_conf_dir: node.cni_conf_dir.clone(),
        cni_data_dir: node.cni_data_dir.clone(),
        pod_log_dir: node.pod_log_dir.clone(),
        kubelet_listen: SocketAddr::new(node_ip, node.kubelet_port),
        state_dir,
        bridge: node.bridge.clone(),
        mtu: node.mtu,
        kubelet_version: berth::KUBERNETES_VERSION.to_string(),
    })
}

/// `berth up`: control plane, then an agent registered as a node of it, in one process.
async fn up(args: UpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let node_ip = match args.node.node_ip {
        Some(ip) => ip,
        None => berth::agent::config::default_node_ip()
            .context("no non-loopback IPv4 address found; pass --node-ip")?,
    };
    let advertise = if args.listen.ip().is_unspecified() { node_ip } else { args.listen.ip() };
    let cp_cfg = berth::controlplane::ControlPlaneConfig {
        state_dir: args.state_dir.clone(),
        listen: args.listen,
        advertise,
        cluster_cidr: args.cluster_cidr,
        node_cidr_prefix: args.node_cidr_mask_size,
        service_cidr: args.service_cidr,
    };
    let cp = berth::controlplane::start(cp_cfg, shutdown.clone()).await?;
    let mut node = args.node.clone();
    node.node_ip = Some(node_ip);
    let node_name = match &node.node_name {
        Some(n) => n.clone(),
        None => berth::agent::config::default_node_name()?,
    };
    let kubeconfig = berth::pki::ensure_node_kubeconfig(&args.state_dir, &node_name, &cp.server_url)?;
    let cfg = agent_config(&node, kubeconfig, args.state_dir.join("agent"))?;
    println!("berth is up. Admin kubeconfig: {}", cp.admin_kubeconfig.display());
    println!("Try: kubectl --kubeconfig {} get nodes", cp.admin_kubeconfig.display());
    let agent = berth::agent::run(Arc::new(cfg), shutdown.clone());
    let (a, c) = tokio::join!(agent, cp.wait());
    a.and(c)
}
