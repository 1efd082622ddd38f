//! The node IPAM loop: gives every Node without `spec.podCIDR` a block of the cluster CIDR
//! (merge patch of `spec.podCIDR` / `spec.podCIDRs`), after learning the blocks existing nodes
//! already have. Nodes that cannot get one get a `CIDRNotAvailable` Event.

use std::collections::HashSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use ipnetwork::{IpNetwork, Ipv4Network};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::events::{self, EventType};
use super::ipam::{CidrAllocator, NodeIpam, NodeView};

const COMPONENT: &str = "node-ipam-controller";
const RESYNC: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(2);

/// The controller's view of a Node (pure).
pub fn node_view(node: &Node) -> NodeView {
    NodeView {
        name: node.name_any(),
        uid: node.metadata.uid.clone().unwrap_or_default(),
        pod_cidr: node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| c.parse::<Ipv4Network>().ok()),
    }
}

/// Run node IPAM over `cluster` with `/node_prefix` blocks until `shutdown`. Blocks overlapping
/// `service_cidr` are never handed out.
pub async fn run(
    client: Client,
    cluster: Ipv4Network,
    node_prefix: u8,
    service_cidr: Option<IpNetwork>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut alloc = CidrAllocator::new(cluster, node_prefix)?;
    if let Some(IpNetwork::V4(svc)) = service_cidr {
        alloc.occupy_range(svc);
    }
    let mut ipam = NodeIpam::new(alloc);
    let (store, writer) = reflector::store::<Node>();
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut stream = reflector::reflector(
        writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .map_ok(|_| ())
    .boxed();
    let driver = {
        let notify = notify.clone();
        async move {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(()) => notify.notify_one(),
                    Err(e) => tracing::warn!(error = %e, "node IPAM watch failed; retrying"),
                }
            }
        }
    };
    let main = async {
        store
            .wait_until_ready()
            .await
            .map_err(|e| anyhow::anyhow!("node IPAM cache: {e}"))?;
        tracing::info!(%cluster, node_prefix, "node IPAM started");
        let mut reported: HashSet<String> = HashSet::new();
        loop {
            let wait = pass(&client, &store, &mut ipam, &mut reported).await.unwrap_or(RESYNC);
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        _ = driver => anyhow::bail!("node IPAM watch stream ended"),
        r = main => r,
    }
}

async fn pass(
    client: &Client,
    store: &Store<Node>,
    ipam: &mut NodeIpam,
    reported: &mut HashSet<String>,
) -> Option<Duration> {
    let nodes = store.state();
    let views: Vec<NodeView> = nodes.iter().map(|n| node_view(n)).collect();
    let plan = ipam.sync(&views);
    let api: Api<Node> = Api::all(client.clone());
    let mut retry = None;
    for (name, cidr) in plan.assign {
        let patch = serde_json::json!({ "spec": { "podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()] } });
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(node = %name, %cidr, "assigned pod CIDR");
                reported.remove(&name);
            }
            Err(e) => {
                tracing::warn!(node = %name, %cidr, error = %e, "could not assign pod CIDR");
                ipam.failed(&name);
                retry = Some(RETRY);
            }
        }
    }
    for name in plan.exhausted {
        if reported.insert(name.clone()) {
            tracing::warn!(node = %name, "no pod CIDR available");
            if let Some(node) = nodes.iter().find(|n| n.name_any() == name) {
                let msg = format!("Node {name} status is now: CIDRNotAvailable");
                events::record(
                    client,
                    node.as_ref(),
                    COMPONENT,
                    EventType::Normal,
                    "CIDRNotAvailable",
                    &msg,
                )
                .await;
            }
        }
    }
    let present: HashSet<String> = views.into_iter().map(|v| v.name).collect();
    reported.retain(|n| present.contains(n));
    retry
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;

    #[test]
    fn view_parses_cidr() {
        let mut n = Node::default();
        n.metadata.name = Some("a".into());
        assert_eq!(node_view(&n).pod_cidr, None);
        n.spec = Some(NodeSpec {
            pod_cidr: Some("10.244.3.0/24".into()),
            ..Default::default()
        });
        assert_eq!(node_view(&n).pod_cidr, Some("10.244.3.0/24".parse().unwrap()));
        n.spec = Some(NodeSpec {
            pod_cidr: Some("fd00::/64".into()),
            ..Default::default()
        });
        assert_eq!(node_view(&n).pod_cidr, None);
    }
}
