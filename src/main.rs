//! `berth`: the node agent (`berth agent`) and the standalone single host (`berth up`).
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use berth::agent::AgentConfig;
use berth::cli::ControlPlaneArgs;

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
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
    #[command(flatten)]
    node: NodeArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    berth::cli::run_daemon(|shutdown| async move {
        match cli.command {
            Command::Agent(args) => {
                let cfg = agent_config(&args.node, args.kubeconfig, args.state_dir)?;
                berth::agent::run(Arc::new(cfg), shutdown).await
            }
            Command::Up(args) => up(args, shutdown).await,
        }
    })
}

/// The node's name and IP: the flags, else the host name and first non-loopback IPv4.
fn node_identity(node: &NodeArgs) -> anyhow::Result<(String, IpAddr)> {
    let name = match &node.node_name {
        Some(n) => n.clone(),
        None => berth::agent::config::default_node_name().context("reading the host name; pass --node-name")?,
    };
    let ip = match node.node_ip {
        Some(ip) => ip,
        None => berth::agent::config::default_node_ip()
            .context("no non-loopback IPv4 address found; pass --node-ip")?,
    };
    Ok((name, ip))
}

fn agent_config(node: &NodeArgs, kubeconfig: PathBuf, state_dir: PathBuf) -> anyhow::Result<AgentConfig> {
    let (node_name, node_ip) = node_identity(node)?;
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
    let (node_name, node_ip) = node_identity(&args.node)?;
    let cp_cfg = args.control_plane.config(Some(node_ip));
    let state_dir = cp_cfg.state_dir.clone();
    let cp = berth::controlplane::start(cp_cfg, shutdown.clone()).await?;
    let node = NodeArgs { node_name: Some(node_name.clone()), node_ip: Some(node_ip), ..args.node };
    let kubeconfig = berth::pki::ensure_node_kubeconfig(&state_dir, &node_name, &cp.server_url)?;
    let cfg = agent_config(&node, kubeconfig, state_dir.join("agent"))?;
    println!("berth is up. Admin kubeconfig: {}", cp.admin_kubeconfig.display());
    println!("Try: kubectl --kubeconfig {} get nodes", cp.admin_kubeconfig.display());
    // One process, one fate: whichever half stops first takes the other one with it.
    let agent = async {
        let result = berth::agent::run(Arc::new(cfg), shutdown.clone()).await;
        shutdown.cancel();
        result.context("agent")
    };
    let control_plane = async {
        let result = cp.wait().await;
        shutdown.cancel();
        result.context("control plane")
    };
    let (a, c) = tokio::join!(agent, control_plane);
    a.and(c)
}
