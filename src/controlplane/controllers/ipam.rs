//! Node IPAM, pure: carve the cluster CIDR into per-node CIDRs (kube-controller-manager's
//! `cidrset` range allocator) and decide which nodes get which.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network};

/// Errors of the allocator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("cluster CIDR {cluster}: node mask /{prefix} must be between /{} and /32 and leave at most 2^24 node CIDRs", cluster.prefix())]
    BadMask { cluster: Ipv4Network, prefix: u8 },
    #[error("cluster CIDR {0} is not IPv4 (only IPv4 pod CIDRs are supported)")]
    NotIpv4(IpNetwork),
    #[error("{cidr} is not a /{prefix} inside {cluster}")]
    Outside {
        cidr: Ipv4Network,
        prefix: u8,
        cluster: Ipv4Network,
    },
}

/// Allocates `/node_prefix` blocks of `cluster`, round robin from the last allocation.
#[derive(Debug, Clone)]
pub struct CidrAllocator {
    cluster: Ipv4Network,
    node_prefix: u8,
    count: u32,
    used: BTreeSet<u32>,
    next: u32,
}

impl CidrAllocator {
    pub fn new(cluster: Ipv4Network, node_prefix: u8) -> Result<Self, IpamError> {
        if node_prefix < cluster.prefix() || node_prefix > 32 || node_prefix - cluster.prefix() > 24 {
            return Err(IpamError::BadMask {
                cluster,
                prefix: node_prefix,
            });
        }
        // Normalise the base address (10.244.1.0/16 -> 10.244.0.0/16).
        let cluster = Ipv4Network::new(cluster.network(), cluster.prefix()).expect("valid prefix");
        Ok(Self {
            cluster,
            node_prefix,
            count: 1u32 << (node_prefix - cluster.prefix()),
            used: BTreeSet::new(),
            next: 0,
        })
    }

    /// How many node CIDRs exist in total / are free.
    pub fn capacity(&self) -> u32 {
        self.count
    }
    pub fn free(&self) -> u32 {
        self.count - u32::try_from(self.used.len()).unwrap_or(u32::MAX)
    }

    fn block(&self, index: u32) -> Ipv4Network {
        let size = 1u64 << (32 - u32::from(self.node_prefix));
        let base = u64::from(u32::from(self.cluster.network())) + u64::from(index) * size;
        Ipv4Network::new(
            Ipv4Addr::from(u32::try_from(base).expect("inside the cluster CIDR")),
            self.node_prefix,
        )
        .expect("valid prefix")
    }

    fn index_of(&self, cidr: Ipv4Network) -> Result<u32, IpamError> {
        let outside = || IpamError::Outside {
            cidr,
            prefix: self.node_prefix,
            cluster: self.cluster,
        };
        if cidr.prefix() != self.node_prefix || !self.cluster.contains(cidr.ip()) || cidr.ip() != cidr.network() {
            return Err(outside());
        }
        let offset = u32::from(cidr.network()) - u32::from(self.cluster.network());
        Ok(offset >> (32 - u32::from(self.node_prefix)))
    }

    /// Mark `cidr` used (an allocation found on a node). Idempotent.
    pub fn occupy(&mut self, cidr: Ipv4Network) -> Result<(), IpamError> {
        let i = self.index_of(cidr)?;
        self.used.insert(i);
        Ok(())
    }

    /// Mark every node CIDR overlapping `range` used (e.g. the service CIDR).
    pub fn occupy_range(&mut self, range: Ipv4Network) {
        let (lo, hi) = (u32::from(range.network()), u32::from(range.broadcast()));
        for i in 0..self.count {
            let b = self.block(i);
            if u32::from(b.network()) <= hi && u32::from(b.broadcast()) >= lo {
                self.used.insert(i);
            }
        }
    }

    /// The next free node CIDR, or None when all are taken.
    pub fn allocate(&mut self) -> Option<Ipv4Network> {
        for k in 0..self.count {
            let i = (self.next + k) % self.count;
            if self.used.insert(i) {
                self.next = (i + 1) % self.count;
                return Some(self.block(i));
            }
        }
        None
    }

    /// Return `cidr` to the pool (ignored if it is not one of ours).
    pub fn release(&mut self, cidr: Ipv4Network) {
        if let Ok(i) = self.index_of(cidr) {
            self.used.remove(&i);
        }
    }
}

/// What the controller knows about a node, from the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub uid: String,
    /// `spec.podCIDR`, if set and parseable as IPv4.
    pub pod_cidr: Option<Ipv4Network>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Assignment {
    uid: String,
    cidr: Ipv4Network,
    /// Sent by us and not yet seen on the node.
    in_flight: bool,
}

/// Outcome of a sync: patches to send and nodes that could not get a CIDR.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncPlan {
    pub assign: Vec<(String, Ipv4Network)>,
    pub exhausted: Vec<String>,
}

/// Level-triggered node IPAM: feed it every node, get the CIDRs to patch in.
#[derive(Debug, Clone)]
pub struct NodeIpam {
    alloc: CidrAllocator,
    assigned: BTreeMap<String, Assignment>,
}

impl NodeIpam {
    pub fn new(alloc: CidrAllocator) -> Self {
        Self {
            alloc,
            assigned: BTreeMap::new(),
        }
    }

    pub fn allocator(&self) -> &CidrAllocator {
        &self.alloc
    }

    /// Reconcile with the full list of nodes. Existing `podCIDR`s are remembered first, so
    /// allocations never collide with them.
    pub fn sync(&mut self, nodes: &[NodeView]) -> SyncPlan {
        let present: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        let gone: Vec<String> = self
            .assigned
            .keys()
            .filter(|k| !present.contains(k.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(a) = self.assigned.remove(&name) {
                self.alloc.release(a.cidr);
            }
        }
        // Observed allocations first.
        for n in nodes {
            let Some(cidr) = n.pod_cidr else { continue };
            if let Some(prev) = self.assigned.get(&n.name) {
                if prev.cidr != cidr {
                    self.alloc.release(prev.cidr);
                }
            }
            if let Err(e) = self.alloc.occupy(cidr) {
                tracing::warn!(node = %n.name, error = %e, "node podCIDR outside the cluster CIDR; not tracked");
            }
            self.assigned.insert(
                n.name.clone(),
                Assignment {
                    uid: n.uid.clone(),
                    cidr,
                    in_flight: false,
                },
            );
        }
        let mut plan = SyncPlan::default();
        for n in nodes.iter().filter(|n| n.pod_cidr.is_none()) {
            match self.assigned.get(&n.name) {
                Some(a) if a.in_flight && a.uid == n.uid => continue,
                Some(a) => {
                    // A node re-created under the same name: its old block is free again.
                    let cidr = a.cidr;
                    self.alloc.release(cidr);
                    self.assigned.remove(&n.name);
                }
                None => {}
            }
            match self.alloc.allocate() {
                Some(cidr) => {
                    self.assigned.insert(
                        n.name.clone(),
                        Assignment {
                            uid: n.uid.clone(),
                            cidr,
                            in_flight: true,
                        },
                    );
                    plan.assign.push((n.name.clone(), cidr));
                }
                None => plan.exhausted.push(n.name.clone()),
            }
        }
        plan
    }

    /// Sending the assignment for `node` failed: free its block so the next sync retries.
    pub fn failed(&mut self, node: &str) {
        if let Some(a) = self.assigned.get(node) {
            if a.in_flight {
                let cidr = a.cidr;
                self.alloc.release(cidr);
                self.assigned.remove(node);
            }
        }
    }
}

/// `IpNetwork` -> IPv4 cluster CIDR.
pub fn ipv4_cluster(net: IpNetwork) -> Result<Ipv4Network, IpamError> {
    match net {
        IpNetwork::V4(n) => Ok(n),
        IpNetwork::V6(_) => Err(IpamError::NotIpv4(net)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    fn view(name: &str, cidr: Option<&str>) -> NodeView {
        NodeView {
            name: name.into(),
            uid: format!("uid-{name}"),
            pod_cidr: cidr.map(net),
        }
    }

    #[test]
    fn allocates_in_order_and_wraps() {
        let mut a = CidrAllocator::new(net("10.244.0.0/16"), 24).unwrap();
        assert_eq!(a.capacity(), 256);
        assert_eq!(a.allocate(), Some(net("10.244.0.0/24")));
        assert_eq!(a.allocate(), Some(net("10.244.1.0/24")));
        a.release(net("10.244.0.0/24"));
        // Round robin: continues after the last allocation before reusing.
        assert_eq!(a.allocate(), Some(net("10.244.2.0/24")));
        let mut small = CidrAllocator::new(net("10.0.0.0/23"), 24).unwrap();
        assert!(small.allocate().is_some() && small.allocate().is_some());
        assert_eq!(small.allocate(), None);
        small.release(net("10.0.1.0/24"));
        assert_eq!(small.allocate(), Some(net("10.0.1.0/24")));
    }

    #[test]
    fn occupy_validates() {
        let mut a = CidrAllocator::new(net("10.244.0.0/16"), 24).unwrap();
        a.occupy(net("10.244.0.0/24")).unwrap();
        a.occupy(net("10.244.0.0/24")).unwrap();
        assert!(a.occupy(net("10.245.0.0/24")).is_err());
        assert!(a.occupy(net("10.244.0.0/25")).is_err());
        assert_eq!(a.allocate(), Some(net("10.244.1.0/24")));
        assert!(CidrAllocator::new(net("10.244.0.0/16"), 8).is_err());
        assert!(CidrAllocator::new(net("10.0.0.0/8"), 33).is_err());
        // Non-canonical base is normalised.
        let mut b = CidrAllocator::new(net("10.244.7.0/16"), 24).unwrap();
        assert_eq!(b.allocate(), Some(net("10.244.0.0/24")));
    }

    #[test]
    fn occupy_range_marks_overlaps() {
        let mut a = CidrAllocator::new(net("10.0.0.0/16"), 24).unwrap();
        a.occupy_range(net("10.0.0.0/23"));
        assert_eq!(a.free(), 254);
        assert_eq!(a.allocate(), Some(net("10.0.2.0/24")));
    }

    #[test]
    fn remembers_existing_then_assigns() {
        let mut ipam = NodeIpam::new(CidrAllocator::new(net("10.244.0.0/16"), 24).unwrap());
        let plan = ipam.sync(&[
            view("a", Some("10.244.0.0/24")),
            view("b", None),
            view("c", Some("10.244.1.0/24")),
        ]);
        assert_eq!(plan.assign, vec![("b".into(), net("10.244.2.0/24"))]);
        // Until the patch is seen, nothing new is planned.
        assert_eq!(
            ipam.sync(&[view("a", Some("10.244.0.0/24")), view("b", None)]).assign,
            vec![]
        );
        // Seen.
        let plan = ipam.sync(&[view("a", Some("10.244.0.0/24")), view("b", Some("10.244.2.0/24"))]);
        assert!(plan.assign.is_empty());
        // c's block was freed when c disappeared; new nodes still go round robin.
        let plan = ipam.sync(&[
            view("a", Some("10.244.0.0/24")),
            view("b", Some("10.244.2.0/24")),
            view("d", None),
        ]);
        assert_eq!(plan.assign, vec![("d".into(), net("10.244.3.0/24"))]);
    }

    #[test]
    fn failure_and_recreate_retry() {
        let mut ipam = NodeIpam::new(CidrAllocator::new(net("10.244.0.0/16"), 24).unwrap());
        let plan = ipam.sync(&[view("a", None)]);
        assert_eq!(plan.assign.len(), 1);
        ipam.failed("a");
        assert_eq!(ipam.allocator().free(), 256);
        assert_eq!(ipam.sync(&[view("a", None)]).assign.len(), 1);
        ipam.sync(&[view("a", Some("10.244.1.0/24"))]);
        // Re-created with a new uid and no CIDR: gets one again.
        let recreated = NodeView {
            name: "a".into(),
            uid: "uid-2".into(),
            pod_cidr: None,
        };
        let plan = ipam.sync(&[recreated]);
        assert_eq!(plan.assign.len(), 1);
        assert_eq!(ipam.allocator().free(), 255);
    }

    #[test]
    fn exhaustion_reported() {
        let mut ipam = NodeIpam::new(CidrAllocator::new(net("10.0.0.0/24"), 24).unwrap());
        let plan = ipam.sync(&[view("a", None), view("b", None)]);
        assert_eq!(plan.assign.len(), 1);
        assert_eq!(plan.exhausted, vec!["b".to_owned()]);
    }
}
