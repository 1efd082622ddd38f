//! Controllers that drive the cluster through the API server only (a `kube::Client`), the way
//! kube-scheduler and kube-controller-manager do: the scheduler and node IPAM.
//!
//! Each controller is a pure part (`scheduling`, `ipam`) with unit tests and a loop
//! (`scheduler`, `nodeipam`) of reflectors + a level-triggered pass.

pub mod events;
pub mod ipam;
pub mod nodeipam;
pub mod scheduler;
pub mod scheduling;

use ipnetwork::IpNetwork;
use kube::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Configuration of the controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllersConfig {
    /// Cluster (pod) CIDR carved into node CIDRs (IPv4).
    pub cluster_cidr: IpNetwork,
    /// Node CIDR mask size (kube-controller-manager's --node-cidr-mask-size).
    pub node_cidr_prefix: u8,
    /// Node CIDRs overlapping it are never handed out.
    pub service_cidr: Option<IpNetwork>,
    /// Pods with this `spec.schedulerName` are scheduled.
    pub scheduler_name: String,
    pub enable_scheduler: bool,
    pub enable_node_ipam: bool,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        Self {
            cluster_cidr: "10.244.0.0/16".parse().expect("valid"),
            node_cidr_prefix: 24,
            service_cidr: Some("10.96.0.0/12".parse().expect("valid")),
            scheduler_name: "default-scheduler".into(),
            enable_scheduler: true,
            enable_node_ipam: true,
        }
    }
}

/// Run the enabled controllers until `shutdown` (then Ok) or until one fails (then the others are
/// stopped and the error returned). The configuration is checked before anything starts.
pub async fn run(client: Client, cfg: ControllersConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let cluster = ipam::ipv4_cluster(cfg.cluster_cidr)?;
    ipam::CidrAllocator::new(cluster, cfg.node_cidr_prefix)?;

    let stop = shutdown.child_token();
    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    if cfg.enable_scheduler {
        let (c, s, name) = (client.clone(), stop.clone(), cfg.scheduler_name.clone());
        tasks.spawn(async move { ("scheduler", scheduler::run(c, name, s).await) });
    }
    if cfg.enable_node_ipam {
        let (c, s) = (client.clone(), stop.clone());
        let (prefix, svc) = (cfg.node_cidr_prefix, cfg.service_cidr);
        tasks.spawn(async move { ("node-ipam", nodeipam::run(c, cluster, prefix, svc, s).await) });
    }
    let mut first_err: Option<anyhow::Error> = None;
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = match joined {
            Ok(r) => r,
            Err(e) => ("controller", Err(anyhow::anyhow!("task panicked: {e}"))),
        };
        match result {
            Ok(()) => tracing::debug!(controller = name, "controller stopped"),
            Err(e) => {
                tracing::error!(controller = name, error = %e, "controller failed");
                stop.cancel();
                first_err.get_or_insert(e.context(format!("{name} controller")));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}
