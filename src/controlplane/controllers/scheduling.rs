//! The scheduling algorithm, pure: filter nodes (kube-scheduler's filter plugins that matter for
//! a small cluster), score the feasible ones (least allocated), explain failures the way
//! kube-scheduler does ("0/3 nodes are available: 1 Insufficient cpu, 2 node(s) were not ready.").

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{Container, Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};

use crate::k8s::quantity::{parse_milli, parse_value};

/// Non-zero defaults used for scoring containers without requests (kube-scheduler's
/// `DefaultMilliCPURequest` / `DefaultMemoryRequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i128 = 100;
pub const DEFAULT_MEMORY_REQUEST: i128 = 200 * 1024 * 1024;

/// The taint kube's node lifecycle uses for `spec.unschedulable`.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Requested (or allocatable) amounts: CPU in millicores, memory in bytes, pod count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i128,
    pub memory: i128,
    pub pods: i128,
}

impl Resources {
    fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.pods += o.pods;
    }
    fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
    }
}

/// Allocatable amounts of a node; `None` where the node reports nothing (treated as unlimited,
/// so hand-made Node objects without status still schedule).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocatable {
    pub milli_cpu: Option<i128>,
    pub memory: Option<i128>,
    pub pods: Option<i128>,
}

/// `status.allocatable`, else `status.capacity`, per resource.
pub fn node_allocatable(node: &Node) -> Allocatable {
    let status = node.status.as_ref();
    let get = |name: &str, milli: bool| {
        let q = status
            .and_then(|s| s.allocatable.as_ref().and_then(|a| a.get(name)))
            .or_else(|| status.and_then(|s| s.capacity.as_ref().and_then(|c| c.get(name))))?;
        if milli {
            parse_milli(&q.0).ok()
        } else {
            parse_value(&q.0).ok()
        }
    };
    Allocatable {
        milli_cpu: get("cpu", true),
        memory: get("memory", false),
        pods: get("pods", false),
    }
}

fn container_request(c: &Container, nonzero: bool) -> Resources {
    let res = c.resources.as_ref();
    // A limit without a request defaults the request (API defaulting).
    let q = |name: &str| {
        res.and_then(|r| r.requests.as_ref().and_then(|m| m.get(name)))
            .or_else(|| res.and_then(|r| r.limits.as_ref().and_then(|m| m.get(name))))
    };
    let cpu = q("cpu").and_then(|q| parse_milli(&q.0).ok());
    let mem = q("memory").and_then(|q| parse_value(&q.0).ok());
    Resources {
        milli_cpu: cpu.unwrap_or(if nonzero { DEFAULT_MILLI_CPU_REQUEST } else { 0 }),
        memory: mem.unwrap_or(if nonzero { DEFAULT_MEMORY_REQUEST } else { 0 }),
        pods: 0,
    }
}

/// A pod's effective request (`max(sum(containers) + sidecars, each init container)` plus
/// overhead) and one pod. With `nonzero`, containers without requests count kube-scheduler's
/// defaults (for scoring).
pub fn pod_requests(pod: &Pod, nonzero: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources {
            pods: 1,
            ..Default::default()
        };
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&container_request(c, nonzero));
    }
    // Init containers run one at a time; restartable ones (sidecars) keep running.
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_request(c, nonzero);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            init_max.max(&sidecars);
        } else {
            let mut with = sidecars;
            with.add(&r);
            init_max.max(&with);
        }
    }
    sum.add(&sidecars);
    sum.max(&init_max);
    if let Some(o) = spec.overhead.as_ref() {
        sum.milli_cpu += o.get("cpu").and_then(|q| parse_milli(&q.0).ok()).unwrap_or(0);
        sum.memory += o.get("memory").and_then(|q| parse_value(&q.0).ok()).unwrap_or(0);
    }
    sum.pods = 1;
    sum
}

/// A node with what is already placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo<'a> {
    pub node: &'a Node,
    pub requested: Resources,
    pub nonzero_requested: Resources,
    /// (host IP, protocol, port) of host ports in use.
    pub host_ports: BTreeSet<(String, String, i32)>,
}

impl<'a> NodeInfo<'a> {
    pub fn new(node: &'a Node) -> Self {
        Self {
            node,
            requested: Resources::default(),
            nonzero_requested: Resources::default(),
            host_ports: BTreeSet::new(),
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    /// Account `pod` as running here.
    pub fn add_pod(&mut self, pod: &Pod) {
        self.requested.add(&pod_requests(pod, false));
        self.nonzero_requested.add(&pod_requests(pod, true));
        self.host_ports.extend(host_ports(pod));
    }
}

/// Whether a pod still occupies its node's resources (not finished).
pub fn pod_is_active(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// NodeInfos for `nodes`, with every active pod bound to one of them accounted.
pub fn node_infos<'a>(nodes: &'a [&'a Node], pods: &[&Pod]) -> Vec<NodeInfo<'a>> {
    let mut infos: Vec<NodeInfo<'a>> = nodes.iter().map(|n| NodeInfo::new(n)).collect();
    let index: BTreeMap<String, usize> = infos
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name().to_owned(), i))
        .collect();
    for pod in pods {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        if let (Some(&i), true) = (index.get(node), pod_is_active(pod)) {
            infos[i].add_pod(pod);
        }
    }
    infos
}

fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let hp = p.host_port.filter(|hp| *hp > 0)?;
            let ip = p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".to_owned());
            Some((ip, p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()), hp))
        })
        .collect()
}

/// Why a node cannot take a pod; `Display` is kube-scheduler's reason text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unfit {
    NotReady,
    Unschedulable,
    UntoleratedTaint { key: String, value: String },
    SelectorMismatch,
    HostPorts,
    Insufficient(&'static str),
    TooManyPods,
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::NotReady => f.write_str("node(s) were not ready"),
            Unfit::Unschedulable => f.write_str("node(s) were unschedulable"),
            Unfit::UntoleratedTaint { key, value } => write!(f, "node(s) had untolerated taint {{{key}: {value}}}"),
            Unfit::SelectorMismatch => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Unfit::HostPorts => f.write_str("node(s) didn't have free ports for the requested pod ports"),
            Unfit::Insufficient(r) => write!(f, "Insufficient {r}"),
            Unfit::TooManyPods => f.write_str("Too many pods"),
        }
    }
}

/// Whether the node's Ready condition is True.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether `toleration` tolerates `taint` (kube's `Toleration.ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    let key = toleration.key.as_deref().unwrap_or("");
    let exists = toleration.operator.as_deref() == Some("Exists");
    if key.is_empty() {
        // An empty key with Exists matches every taint.
        return exists;
    }
    if key != taint.key {
        return false;
    }
    exists || toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
}

fn pod_tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or(&[])
}

/// The first NoSchedule/NoExecute taint of the node the pod does not tolerate.
pub fn untolerated_taint<'t>(pod: &Pod, taints: &'t [Taint]) -> Option<&'t Taint> {
    let tols = pod_tolerations(pod);
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tols.iter().any(|tol| tolerates(tol, t)))
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or(&[]);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        // An empty term matches nothing.
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| {
            let v = if r.key == "metadata.name" {
                node.metadata.name.as_deref()
            } else {
                None
            };
            requirement_matches(r, v)
        })
}

/// `spec.nodeSelector` and required node affinity (terms ORed, requirements ANDed).
pub fn matches_node_selector(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return true };
    let labels = node.metadata.labels.as_ref();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    let affinity_ok = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref())
        .is_none_or(|sel| sel.node_selector_terms.iter().any(|t| term_matches(t, node)));
    selector_ok && affinity_ok
}

/// Every reason the node cannot take the pod (empty: it fits). Like kube-scheduler, the checks
/// run in order and stop at the first failing one, except that all insufficient resources are
/// reported together.
pub fn filter(pod: &Pod, info: &NodeInfo<'_>) -> Vec<Unfit> {
    let node = info.node;
    if !node_ready(node) {
        return vec![Unfit::NotReady];
    }
    let spec = node.spec.as_ref();
    if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
        let t = Taint {
            key: TAINT_UNSCHEDULABLE.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !pod_tolerations(pod).iter().any(|tol| tolerates(tol, &t)) {
            return vec![Unfit::Unschedulable];
        }
    }
    if let Some(t) = untolerated_taint(pod, spec.and_then(|s| s.taints.as_deref()).unwrap_or(&[])) {
        return vec![Unfit::UntoleratedTaint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
        }];
    }
    if !matches_node_selector(pod, node) {
        return vec![Unfit::SelectorMismatch];
    }
    let wanted = host_ports(pod);
    let conflicts = wanted.iter().any(|(ip, proto, port)| {
        info.host_ports.iter().any(|(uip, uproto, uport)| {
            uport == port && uproto == proto && (ip == uip || ip == "0.0.0.0" || uip == "0.0.0.0")
        })
    });
    if conflicts {
        return vec![Unfit::HostPorts];
    }
    let alloc = node_allocatable(node);
    let req = pod_requests(pod, false);
    let mut out = Vec::new();
    if alloc.pods.is_some_and(|a| info.requested.pods + 1 > a) {
        out.push(Unfit::TooManyPods);
    }
    if req.milli_cpu > 0
        && alloc
            .milli_cpu
            .is_some_and(|a| info.requested.milli_cpu + req.milli_cpu > a)
    {
        out.push(Unfit::Insufficient("cpu"));
    }
    if req.memory > 0 && alloc.memory.is_some_and(|a| info.requested.memory + req.memory > a) {
        out.push(Unfit::Insufficient("memory"));
    }
    out
}

/// Least-allocated score in [0, 100]: the mean free fraction of CPU and memory after placing the
/// pod (non-zero requests). Resources the node does not report count as fully free.
pub fn score(pod: &Pod, info: &NodeInfo<'_>) -> i64 {
    let alloc = node_allocatable(info.node);
    let req = pod_requests(pod, true);
    let part = |cap: Option<i128>, used: i128| -> i128 {
        match cap {
            Some(cap) if cap > 0 => ((cap - used).max(0) * 100) / cap,
            Some(_) => 0,
            None => 100,
        }
    };
    let cpu = part(alloc.milli_cpu, info.nonzero_requested.milli_cpu + req.milli_cpu);
    let mem = part(alloc.memory, info.nonzero_requested.memory + req.memory);
    i64::try_from((cpu + mem) / 2).unwrap_or(0)
}

/// No node fits: kube-scheduler's FitError.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub num_nodes: usize,
    /// Reason text -> number of nodes.
    pub reasons: BTreeMap<String, usize>,
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.num_nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        let mut parts: Vec<String> = self.reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        parts.sort();
        write!(f, "0/{} nodes are available: {}.", self.num_nodes, parts.join(", "))
    }
}

/// Pick the node for `pod`: highest score among feasible nodes; ties go to the node with fewer
/// pods, then by name. Returns the index into `infos`.
pub fn schedule(pod: &Pod, infos: &[NodeInfo<'_>]) -> Result<usize, FitError> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(i64, std::cmp::Reverse<i128>, std::cmp::Reverse<&str>, usize)> = None;
    for (i, info) in infos.iter().enumerate() {
        let unfit = filter(pod, info);
        if !unfit.is_empty() {
            for u in unfit {
                *reasons.entry(u.to_string()).or_default() += 1;
            }
            continue;
        }
        let key = (
            score(pod, info),
            std::cmp::Reverse(info.requested.pods),
            std::cmp::Reverse(info.name()),
            i,
        );
        if best.as_ref().is_none_or(|b| (key.0, key.1, key.2) > (b.0, b.1, b.2)) {
            best = Some(key);
        }
    }
    best.map(|b| b.3).ok_or(FitError {
        num_nodes: infos.len(),
        reasons,
    })
}

/// The pod's scheduler (`spec.schedulerName`, default `default-scheduler`).
pub fn scheduler_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default-scheduler")
}

/// Whether `pod` waits for `scheduler`: unbound, not being deleted, not finished.
pub fn needs_scheduling(pod: &Pod, scheduler: &str) -> bool {
    pod.spec
        .as_ref()
        .is_some_and(|s| s.node_name.as_deref().unwrap_or("").is_empty())
        && pod.metadata.deletion_timestamp.is_none()
        && pod_is_active(pod)
        && scheduler_name(pod) == scheduler
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Affinity, ContainerPort, NodeAffinity, NodeCondition, NodeSelector, NodeSpec, NodeStatus, PodSpec,
        ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    fn node(name: &str, ready: bool, cpu: &str, mem: &str, pods: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(
                    [("cpu", cpu), ("memory", mem), ("pods", pods)]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), q(v)))
                        .collect(),
                ),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn pod(name: &str, cpu: Option<&str>, mem: Option<&str>) -> Pod {
        let mut requests = BTreeMap::new();
        if let Some(c) = cpu {
            requests.insert("cpu".to_owned(), q(c));
        }
        if let Some(m) = mem {
            requests.insert("memory".to_owned(), q(m));
        }
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(requests),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    fn bound(mut p: Pod, node: &str) -> Pod {
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        p
    }

    #[test]
    fn requests_sum_init_and_limits() {
        let mut p = pod("p", Some("100m"), Some("64Mi"));
        let spec = p.spec.as_mut().unwrap();
        spec.containers.push(Container {
            name: "d".into(),
            resources: Some(ResourceRequirements {
                limits: Some([("cpu".to_owned(), q("200m"))].into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        spec.init_containers = Some(vec![Container {
            name: "init".into(),
            resources: Some(ResourceRequirements {
                requests: Some([("memory".to_owned(), q("1Gi"))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let r = pod_requests(&p, false);
        assert_eq!(
            r,
            Resources {
                milli_cpu: 300,
                memory: 1 << 30,
                pods: 1
            }
        );
        let nz = pod_requests(&pod("e", None, None), true);
        assert_eq!(
            (nz.milli_cpu, nz.memory),
            (DEFAULT_MILLI_CPU_REQUEST, DEFAULT_MEMORY_REQUEST)
        );
        assert_eq!(pod_requests(&pod("e", None, None), false).milli_cpu, 0);
    }

    #[test]
    fn not_ready_message() {
        let n = node("n1", false, "2", "4Gi", "110");
        let nodes = [&n];
        let infos = node_infos(&nodes, &[]);
        let err = schedule(&pod("p", None, None), &infos).unwrap_err();
        assert_eq!(err.to_string(), "0/1 nodes are available: 1 node(s) were not ready.");
        let none: Vec<NodeInfo<'_>> = Vec::new();
        assert_eq!(
            schedule(&pod("p", None, None), &none).unwrap_err().to_string(),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn resources_fit_and_least_allocated() {
        let a = node("a", true, "2", "4Gi", "110");
        let b = node("b", true, "2", "4Gi", "110");
        let busy = bound(pod("x", Some("1500m"), Some("1Gi")), "a");
        let nodes = [&a, &b];
        let infos = node_infos(&nodes, &[&busy]);
        assert_eq!(infos[0].requested.milli_cpu, 1500);
        // Fits both; b is less allocated.
        assert_eq!(schedule(&pod("p", Some("100m"), None), &infos), Ok(1));
        // Needs 1 cpu: only b.
        assert_eq!(
            filter(&pod("p", Some("1"), None), &infos[0]),
            vec![Unfit::Insufficient("cpu")]
        );
        // Too big for both.
        let err = schedule(&pod("p", Some("3"), Some("5Gi")), &infos).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory."
        );
        // Finished pods do not count.
        let mut done = bound(pod("d", Some("2"), None), "b");
        done.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        let infos = node_infos(&nodes, &[&busy, &done]);
        assert_eq!(infos[1].requested.milli_cpu, 0);
    }

    #[test]
    fn too_many_pods_and_unknown_allocatable() {
        let a = node("a", true, "2", "4Gi", "1");
        let p1 = bound(pod("x", None, None), "a");
        let nodes = [&a];
        let infos = node_infos(&nodes, &[&p1]);
        assert_eq!(
            schedule(&pod("p", None, None), &infos).unwrap_err().to_string(),
            "0/1 nodes are available: 1 Too many pods."
        );
        let mut bare = node("bare", true, "1", "1", "1");
        bare.status.as_mut().unwrap().allocatable = None;
        let nodes = [&bare];
        let infos = node_infos(&nodes, &[]);
        assert_eq!(schedule(&pod("p", Some("64"), Some("1Ti")), &infos), Ok(0));
    }

    #[test]
    fn taints_tolerations_unschedulable() {
        let mut a = node("a", true, "2", "4Gi", "110");
        a.spec.as_mut().unwrap().taints = Some(vec![
            Taint {
                key: "soft".into(),
                effect: "PreferNoSchedule".into(),
                ..Default::default()
            },
            Taint {
                key: "node-role.kubernetes.io/control-plane".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            },
        ]);
        let nodes = [&a];
        let infos = node_infos(&nodes, &[]);
        let p = pod("p", None, None);
        assert_eq!(
            schedule(&p, &infos).unwrap_err().to_string(),
            "0/1 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }."
        );
        let mut tp = p.clone();
        tp.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            key: Some("node-role.kubernetes.io/control-plane".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]);
        assert_eq!(schedule(&tp, &infos), Ok(0));
        // Operator Equal needs the value; wrong effect does not tolerate.
        let t = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoExecute".into(),
            ..Default::default()
        };
        let tol = |op: &str, v: Option<&str>, e: Option<&str>| Toleration {
            key: Some("k".into()),
            operator: Some(op.into()),
            value: v.map(Into::into),
            effect: e.map(Into::into),
            ..Default::default()
        };
        assert!(tolerates(&tol("Equal", Some("v"), None), &t));
        assert!(!tolerates(&tol("Equal", Some("w"), None), &t));
        assert!(!tolerates(&tol("Exists", None, Some("NoSchedule")), &t));
        assert!(tolerates(
            &Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            },
            &t
        ));

        let mut u = node("u", true, "2", "4Gi", "110");
        u.spec.as_mut().unwrap().unschedulable = Some(true);
        let nodes = [&u];
        let infos = node_infos(&nodes, &[]);
        assert_eq!(filter(&p, &infos[0]), vec![Unfit::Unschedulable]);
        let mut up = p.clone();
        up.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            key: Some(TAINT_UNSCHEDULABLE.into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }]);
        assert!(filter(&up, &infos[0]).is_empty());
    }

    #[test]
    fn node_selector_and_affinity() {
        let mut a = node("a", true, "2", "4Gi", "110");
        a.metadata.labels = Some(
            [
                ("disk".to_owned(), "ssd".to_owned()),
                ("gen".to_owned(), "5".to_owned()),
            ]
            .into(),
        );
        let b = node("b", true, "2", "4Gi", "110");
        let mut p = pod("p", None, None);
        p.spec.as_mut().unwrap().node_selector = Some([("disk".to_owned(), "ssd".to_owned())].into());
        let nodes = [&a, &b];
        let infos = node_infos(&nodes, &[]);
        assert_eq!(schedule(&p, &infos), Ok(0));
        p.spec.as_mut().unwrap().node_selector = Some([("disk".to_owned(), "hdd".to_owned())].into());
        assert_eq!(
            schedule(&p, &infos).unwrap_err().to_string(),
            "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
        );
        let req = |key: &str, op: &str, vals: &[&str]| NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(vals.iter().map(|v| (*v).to_owned()).collect()),
        };
        let mut p = pod("p", None, None);
        let with_terms = |p: &mut Pod, terms: Vec<NodeSelectorTerm>| {
            p.spec.as_mut().unwrap().affinity = Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: terms,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        };
        with_terms(
            &mut p,
            vec![NodeSelectorTerm {
                match_expressions: Some(vec![req("gen", "Gt", &["4"])]),
                ..Default::default()
            }],
        );
        assert_eq!(schedule(&p, &infos), Ok(0));
        with_terms(
            &mut p,
            vec![NodeSelectorTerm {
                match_fields: Some(vec![req("metadata.name", "In", &["b"])]),
                ..Default::default()
            }],
        );
        assert_eq!(schedule(&p, &infos), Ok(1));
        with_terms(
            &mut p,
            vec![NodeSelectorTerm {
                match_expressions: Some(vec![req("disk", "DoesNotExist", &[])]),
                ..Default::default()
            }],
        );
        assert_eq!(schedule(&p, &infos), Ok(1));
        with_terms(
            &mut p,
            vec![NodeSelectorTerm {
                match_expressions: Some(vec![req("disk", "NotIn", &["ssd"])]),
                ..Default::default()
            }],
        );
        assert_eq!(schedule(&p, &infos), Ok(1));
    }

    #[test]
    fn host_port_conflicts() {
        let a = node("a", true, "2", "4Gi", "110");
        let with_port = |name: &str| {
            let mut p = pod(name, None, None);
            p.spec.as_mut().unwrap().containers[0].ports = Some(vec![ContainerPort {
                container_port: 80,
                host_port: Some(8080),
                ..Default::default()
            }]);
            p
        };
        let existing = bound(with_port("x"), "a");
        let nodes = [&a];
        let infos = node_infos(&nodes, &[&existing]);
        assert_eq!(filter(&with_port("p"), &infos[0]), vec![Unfit::HostPorts]);
        assert!(filter(&pod("q", None, None), &infos[0]).is_empty());
    }

    #[test]
    fn mixed_reasons_sorted() {
        let a = node("a", false, "2", "4Gi", "110");
        let b = node("b", true, "1", "4Gi", "110");
        let c = node("c", false, "2", "4Gi", "110");
        let nodes = [&a, &b, &c];
        let infos = node_infos(&nodes, &[]);
        assert_eq!(
            schedule(&pod("p", Some("2"), None), &infos).unwrap_err().to_string(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) were not ready."
        );
    }

    #[test]
    fn needs_scheduling_rules() {
        let p = pod("p", None, None);
        assert!(needs_scheduling(&p, "default-scheduler"));
        assert!(!needs_scheduling(&p, "other"));
        assert!(!needs_scheduling(&bound(p.clone(), "a"), "default-scheduler"));
        let mut d = p.clone();
        d.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::now(),
        ));
        assert!(!needs_scheduling(&d, "default-scheduler"));
    }
}
