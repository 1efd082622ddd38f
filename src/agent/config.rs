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
    /// Labels the Node is registered with besides kubelet's defaults (kubelet's --node-labels).
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// Cluster DNS servers and domain (KubeletConfiguration clusterDNS / clusterDomain).
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
}

/// The default node name: the host name, lower-cased (kubelet's default).
pub fn default_node_name() -> std::io::Result<String> {
    let name = hostname::get()?;
    Ok(name.to_string_lossy().trim().to_lowercase())
}

/// The first non-loopback, non-link-local IPv4 address of an interface that is up.
pub fn default_node_ip() -> Option<IpAddr> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a linked list we free with freeifaddrs below; we only read it.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = addrs;
    while !cur.is_null() {
        // SAFETY: `cur` is a valid node of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let up = ifa.ifa_flags & (libc::IFF_UP as u32) != 0;
        if !up || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr whose family we check first.
        if unsafe { (*ifa.ifa_addr).sa_family } as i32 != libc::AF_INET {
            continue;
        }
        // SAFETY: family is AF_INET, so the sockaddr is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        if !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified() {
            found = Some(IpAddr::V4(ip));
            break;
        }
    }
    // SAFETY: `addrs` came from a successful getifaddrs.
    unsafe { libc::freeifaddrs(addrs) };
    found
}
