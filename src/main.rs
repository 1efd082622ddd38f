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
    /// Join an existing cluster as a worker node (kubeadm join's flags), then run the agent.
    Join(JoinArgs),
    /// Undo what `join` and the agent set up on this host.
    Reset(berth::agent::join::ResetArgs),
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
    /// containerd's socket (CRI v1); `unix://` URLs (kubeadm's --cri-socket) are accepted.
    #[arg(long, alias = "cri-socket", default_value = "/run/containerd/containerd.sock", env = "BERTH_CONTAINERD_SOCKET")]
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
    #[command(flatten)]
    kubelet: KubeletArgs,
}

/// kubelet flags `berth join` passes on to the agent it runs or configures.
#[derive(Args, Debug, Clone, Default)]
struct KubeletArgs {
    /// Labels to register the Node with (k=v,…; kubelet's restrictions apply).
    #[arg(long = "register-node-labels", value_delimiter = ',')]
    register_node_labels: Vec<String>,
    /// Cluster DNS server addresses (KubeletConfiguration clusterDNS).
    #[arg(long, value_delimiter = ',')]
    cluster_dns: Vec<IpAddr>,
    /// Cluster domain (KubeletConfiguration clusterDomain).
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Renew the client certificate in the kubeconfig through the CSR API before it expires.
    #[arg(long)]
    rotate_certificates: bool,
}

#[derive(Args, Debug)]
struct JoinArgs {
    #[command(flatten)]
    join: berth::agent::join::JoinFlags,
    /// State directory (kubeconfigs/node.conf, agent/).
    #[arg(long, default_value = "/var/lib/berth")]
    state_dir: PathBuf,
    /// Run the agent in the foreground even when systemd runs the host.
    #[arg(long)]
    foreground: bool,
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
                let mut cfg = agent_config(&args.node, args.kubeconfig, args.state_dir)?;
                cfg.node_labels = berth::agent::join::kubeadm::parse_node_labels(&args.kubelet.register_node_labels)?;
                cfg.cluster_dns = args.kubelet.cluster_dns;
                cfg.cluster_domain = args.kubelet.cluster_domain;
                berth::agent::join::run_agent(Arc::new(cfg), args.kubelet.rotate_certificates, shutdown).await
            }
            Command::Up(args) => up(args, shutdown).await,
            Command::Join(args) => join(args, shutdown).await,
            Command::Reset(args) => reset(&args),
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
    let containerd_socket = berth::agent::join::kubeadm::cri_socket_path(&node.containerd_socket.to_string_lossy());
    Ok(AgentConfig {
        node_name,
        node_ip,
        kubeconfig,
        containerd_socket,
        cni_conf_dir: node.cni_conf_dir.clone(),
        cni_data_dir: node.cni_data_dir.clone(),
        pod_log_dir: node.pod_log_dir.clone(),
        kubelet_listen: SocketAddr::new(node_ip, node.kubelet_port),
        state_dir,
        bridge: node.bridge.clone(),
        mtu: node.mtu,
        kubelet_version: berth::KUBERNETES_VERSION.to_string(),
        node_labels: Default::default(),
        cluster_dns: Vec::new(),
        cluster_domain: "cluster.local".into(),
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

/// `berth join`: discovery and TLS bootstrap, then the agent in the foreground (or the systemd
/// unit enabled when systemd runs the host).
async fn join(args: JoinArgs, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    use berth::agent::join;
    let config_text = match &args.join.config {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading --config {}", p.display()))?),
        None => None,
    };
    let plan = join::kubeadm::plan(&args.join, config_text.as_deref())?;
    let mut node = args.node.clone();
    if node.node_name.is_none() {
        node.node_name = plan.node_name.clone();
    }
    if let Some(sock) = &plan.cri_socket {
        node.containerd_socket = sock.clone();
    }
    let (node_name, node_ip) = node_identity(&node)?;
    let node = NodeArgs { node_name: Some(node_name.clone()), node_ip: Some(node_ip), ..node };
    let started = std::time::Instant::now();
    let node_ips = [node_ip];
    let joined = tokio::select! {
        _ = shutdown.cancelled() => anyhow::bail!("interrupted before the join completed"),
        r = join::join(&plan, &node_name, &node_ips, &args.state_dir) => r?,
    };
    println!(
        "This node ({node_name}) has joined the cluster at {} in {:.1}s: node kubeconfig {}.",
        joined.server,
        started.elapsed().as_secs_f64(),
        joined.kubeconfig.display()
    );
    let agent_state = join::agent_state_dir(&args.state_dir);
    if join::systemd_is_pid1() && !args.foreground {
        let mut agent_args = vec![
            "--node-name".to_owned(), node_name.clone(),
            "--node-ip".to_owned(), node_ip.to_string(),
            "--state-dir".to_owned(), agent_state.display().to_string(),
            "--containerd-socket".to_owned(), node.containerd_socket.display().to_string(),
            "--cni-conf-dir".to_owned(), node.cni_conf_dir.display().to_string(),
            "--cni-bin-dir".to_owned(), node.cni_bin_dir.display().to_string(),
            "--cni-data-dir".to_owned(), node.cni_data_dir.display().to_string(),
            "--pod-log-dir".to_owned(), node.pod_log_dir.display().to_string(),
            "--kubelet-port".to_owned(), node.kubelet_port.to_string(),
            "--bridge".to_owned(), node.bridge.clone(),
            "--mtu".to_owned(), node.mtu.to_string(),
            "--cluster-domain".to_owned(), joined.kubelet.cluster_domain.clone(),
            "--rotate-certificates".to_owned(),
        ];
        if !joined.kubelet.cluster_dns.is_empty() {
            let dns: Vec<String> = joined.kubelet.cluster_dns.iter().map(ToString::to_string).collect();
            agent_args.extend(["--cluster-dns".to_owned(), dns.join(",")]);
        }
        if !plan.node_labels.is_empty() {
            let labels: Vec<String> = plan.node_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            agent_args.extend(["--register-node-labels".to_owned(), labels.join(",")]);
        }
        join::enable_systemd_unit(std::path::Path::new(join::SYSTEMD_ENV_FILE), &joined.kubeconfig, &agent_args)?;
        println!("Enabled and started {} (settings in {}).", join::SYSTEMD_UNIT, join::SYSTEMD_ENV_FILE);
        return Ok(());
    }
    let mut cfg = agent_config(&node, joined.kubeconfig, agent_state)?;
    cfg.node_labels = plan.node_labels;
    cfg.cluster_dns = joined.kubelet.cluster_dns;
    cfg.cluster_domain = joined.kubelet.cluster_domain;
    println!("Running the node agent in the foreground (Ctrl-C stops it; pods keep running).");
    join::run_agent(Arc::new(cfg), true, shutdown).await
}

/// `berth reset`: prints each thing it removed.
fn reset(args: &berth::agent::join::ResetArgs) -> anyhow::Result<()> {
    match berth::agent::join::reset::reset(args) {
        Ok(removed) => {
            if removed.is_empty() {
                println!("Nothing to remove.");
            }
            for r in removed {
                println!("{r}");
            }
            Ok(())
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            anyhow::bail!("reset incomplete: {} step(s) failed", errors.iter().filter(|e| !e.starts_with("(done)")).count())
        }
    }
}
