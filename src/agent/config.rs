//! The agent's configuration: one typed struct, filled from flags by main.rs.
use std::net::IpAddr;
use std::path::PathBuf;

/// Everything the agent's parts need to know about this node. Paths are absolute.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node name (defaults to the hostname, lower-cased).
    pub node_name: String,
    /// The address other nodes and the API server use to reach this node (InternalIP).
    pub node_ip: IpAddr,
    /// Kubeconfig the agent uses to talk to the API server.
    pub kubeconfig: PathBuf,
    /// containerd's CRI socket.
    pub containerd_socket: PathBuf,
    /// Where the conflist is written (containerd's CRI `conf_dir`).
    pub cni_conf_dir: PathBuf,
    /// IPAM state directory passed to berth-cni as `ipam.dataDir`.
    pub cni_data_dir: PathBuf,
    /// Pod log root (kubelet's /var/log/pods).
    pub pod_log_dir: PathBuf,
    /// Agent state (serving certificate, etc.).
    pub state_dir: PathBuf,
    /// Kubelet API listen address.
    pub kubelet_listen: std::net::SocketAddr,
    /// Bridge name written into the conflist.
    pub bridge: String,
    /// MTU for pod interfaces.
    pub mtu: u32,
    /// Kubernetes version the node reports as kubeletVersion.
    pub kubelet_version: String,
}
