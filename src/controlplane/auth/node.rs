//! The Node authorizer (plugin/pkg/auth/authorizer/node, with AuthorizeNodeWithSelectors) and
//! the NodeRestriction admission checks (plugin/pkg/admission/noderestriction). Pure.
//!
//! A node identity (`system:node:<name>` in `system:nodes`) may read the secrets, configmaps,
//! PVCs and PVs reachable from pods bound to it (the graph: pod -> node; secret, configmap,
//! pvc, serviceaccount -> pod; pv -> pvc; secret -> pv), get/list/watch only its own Node, list
//! and watch pods only with `spec.nodeName=<name>`, get pods bound to it, its Lease in
//! kube-node-lease, and everything in the static node rules (events, services, CSRs, reviews).
use std::collections::BTreeMap;

use serde_json::Value;

use super::rbac::Rule;
use super::{node_identity, Attributes, Context, Decision};
use crate::controlplane::apiserver::auth::User;

/// A vertex type of the node graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vertex {
    Pod,
    Secret,
    ConfigMap,
    Pvc,
    Pv,
    ServiceAccount,
}

/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The static node rules (`bootstrappolicy.NodeRules`), also the rules of ClusterRole system:node.
pub fn node_rules() -> Vec<Rule> {
    vec![
        Rule::res(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        Rule::res(&["create"], &["authorization.k8s.io"], &["localsubjectaccessreviews", "subjectaccessreviews"]),
        Rule::res(&["get", "list", "watch"], &[""], &["services"]),
        Rule::res(&["create", "get", "list", "watch"], &[""], &["nodes"]),
        Rule::res(&["patch", "update"], &[""], &["nodes/status"]),
        Rule::res(&["patch", "update"], &[""], &["nodes"]),
        Rule::res(&["create", "patch", "update"], &["", "events.k8s.io"], &["events"]),
        Rule::res(&["get", "list", "watch"], &[""], &["pods"]),
        Rule::res(&["create", "delete"], &[""], &["pods"]),
        Rule::res(&["patch", "update"], &[""], &["pods/status"]),
        Rule::res(&["create"], &[""], &["pods/eviction"]),
        Rule::res(&["get", "list", "watch"], &[""], &["configmaps", "secrets"]),
        Rule::res(&["get"], &[""], &["persistentvolumeclaims", "persistentvolumes"]),
        Rule::res(&["get"], &[""], &["endpoints"]),
        Rule::res(&["create", "get", "list", "watch"], &["certificates.k8s.io"], &["certificatesigningrequests"]),
        Rule::res(&["create", "delete", "get", "patch", "update"], &["coordination.k8s.io"], &["leases"]),
        Rule::res(&["get"], &["storage.k8s.io"], &["volumeattachments"]),
        Rule::res(&["create"], &[""], &["serviceaccounts/token"]),
        Rule::res(&["get", "patch", "update"], &[""], &["persistentvolumeclaims/status"]),
        Rule::res(&["get", "list", "watch"], &["storage.k8s.io"], &["csidrivers"]),
        Rule::res(&["create", "delete", "get", "patch", "update"], &["storage.k8s.io"], &["csinodes"]),
        Rule::res(&["get", "list", "watch"], &["node.k8s.io"], &["runtimeclasses"]),
        Rule::res(&["get"], &[""], &["serviceaccounts"]),
        Rule::res(&["get", "list", "watch"], &["certificates.k8s.io"], &["clustertrustbundles"]),
        Rule::res(&["create", "get", "list", "watch"], &["certificates.k8s.io"], &["podcertificaterequests"]),
        Rule::res(&["get"], &["resource.k8s.io"], &["resourceclaims"]),
        Rule::res(&["deletecollection"], &["resource.k8s.io"], &["resourceslices"]),
    ]
}

fn no(reason: impl Into<String>) -> (Decision, String) {
    (Decision::NoOpinion, reason.into())
}

const ALLOW: (Decision, String) = (Decision::Allow, String::new());

/// The Node authorizer.
pub fn authorize(a: &Attributes, ctx: &dyn Context) -> (Decision, String) {
    let Some(node) = node_identity(&a.user) else {
        return no("");
    };
    if node.is_empty() {
        return no(format!("unknown node for user {:?}", a.user.name));
    }
    if a.resource_request {
        let vertex = match (a.api_group.as_str(), a.resource.as_str()) {
            ("", "secrets") => return read_namespaced(node, Vertex::Secret, a, ctx),
            ("", "configmaps") => return read_namespaced(node, Vertex::ConfigMap, a, ctx),
            ("", "persistentvolumeclaims") if a.subresource == "status" => {
                if !matches!(a.verb.as_str(), "update" | "patch") {
                    return no("can only get/update/patch this type");
                }
                return path(node, Vertex::Pvc, a, ctx);
            }
            ("", "persistentvolumeclaims") => Some(Vertex::Pvc),
            ("", "persistentvolumes") => Some(Vertex::Pv),
            ("", "serviceaccounts") => {
                if a.verb != "create" || a.name.is_empty() {
                    return no("can only create tokens for individual service accounts");
                }
                if a.subresource != "token" {
                    return no("can only create token subresource of serviceaccount");
                }
                return path(node, Vertex::ServiceAccount, a, ctx);
            }
            ("coordination.k8s.io", "leases") => return lease(node, a),
            ("", "nodes") => return node_object(node, a),
            ("", "pods") => return pod(node, a, ctx),
            _ => None,
        };
        if let Some(v) = vertex {
            return get(node, v, a, ctx);
        }
    }
    if node_rules().iter().any(|r| r.allows(a)) {
        return ALLOW;
    }
    no("")
}

fn get(node: &str, v: Vertex, a: &Attributes, ctx: &dyn Context) -> (Decision, String) {
    if a.verb != "get" {
        return no("can only get individual resources of this type");
    }
    if !a.subresource.is_empty() {
        return no("cannot get subresource");
    }
    path(node, v, a, ctx)
}

fn read_namespaced(node: &str, v: Vertex, a: &Attributes, ctx: &dyn Context) -> (Decision, String) {
    if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
        return no("can only read resources of this type");
    }
    if !a.subresource.is_empty() {
        return no("cannot read subresource");
    }
    if a.namespace.is_empty() {
        return no("can only read namespaced object of this type");
    }
    path(node, v, a, ctx)
}

fn path(node: &str, v: Vertex, a: &Attributes, ctx: &dyn Context) -> (Decision, String) {
    if a.name.is_empty() {
        return no("No Object name found");
    }
    if ctx.has_path(node, v, &a.namespace, &a.name) {
        ALLOW
    } else {
        no(format!("no relationship found between node '{node}' and this object"))
    }
}

fn lease(node: &str, a: &Attributes) -> (Decision, String) {
    if !matches!(a.verb.as_str(), "get" | "create" | "update" | "patch" | "delete") {
        return no("can only get, create, update, patch, or delete a node lease");
    }
    if a.namespace != NODE_LEASE_NAMESPACE {
        return no(format!("can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"));
    }
    if a.verb != "create" && a.name != node {
        return no("can only access node lease with the same name as the requesting node");
    }
    ALLOW
}

fn node_object(node: &str, a: &Attributes) -> (Decision, String) {
    match (a.subresource.as_str(), a.verb.as_str()) {
        ("", "create" | "update" | "patch") => ALLOW,
        ("", "get" | "list" | "watch") => {
            if a.name == node {
                ALLOW
            } else if a.name.is_empty() {
                no(format!("node '{node}' cannot read all nodes, only its own Node object"))
            } else {
                no(format!("node '{node}' cannot read '{}', only its own Node object", a.name))
            }
        }
        ("status", "update" | "patch") => ALLOW,
        _ => no(""),
    }
}

fn pod(node: &str, a: &Attributes, ctx: &dyn Context) -> (Decision, String) {
    match (a.subresource.as_str(), a.verb.as_str()) {
        ("", "get") => get(node, Vertex::Pod, a, ctx),
        ("", "list" | "watch") => {
            if a
                .field_selector
                .iter()
                .any(|r| r.field == "spec.nodeName" && r.equals && r.value == node)
            {
                return ALLOW;
            }
            if !a.name.is_empty() {
                return path(node, Vertex::Pod, a, ctx);
            }
            no("can only list/watch pods with spec.nodeName field selector")
        }
        ("", "create" | "delete") => ALLOW,
        ("status", "update" | "patch") => ALLOW,
        ("eviction", "create") => ALLOW,
        _ => no(""),
    }
}

// ---------------------------------------------------------------------------------------------
// The graph, computed from the pods bound to a node.

/// What one pod references (secrets, configmaps, PVC names, service account).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodRefs {
    pub secrets: Vec<String>,
    pub config_maps: Vec<String>,
    pub pvcs: Vec<String>,
    pub service_account: String,
}

fn push(v: &mut Vec<String>, s: Option<&str>) {
    if let Some(s) = s.filter(|s| !s.is_empty()) {
        if !v.iter().any(|x| x == s) {
            v.push(s.to_string());
        }
    }
}

/// The references of a pod, like the graph populator's `AddPod` (podutil.VisitPodSecretNames /
/// VisitPodConfigmapNames, PVC claims and generic ephemeral volumes).
pub fn pod_refs(pod: &Value) -> PodRefs {
    let mut r = PodRefs::default();
    let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    let spec = &pod["spec"];
    r.service_account = s(spec, "/serviceAccountName").unwrap_or_else(|| "default".into());
    for ips in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        push(&mut r.secrets, ips["name"].as_str());
    }
    for kind in ["containers", "initContainers", "ephemeralContainers"] {
        for c in spec[kind].as_array().into_iter().flatten() {
            for ef in c["envFrom"].as_array().into_iter().flatten() {
                push(&mut r.secrets, ef.pointer("/secretRef/name").and_then(Value::as_str));
                push(&mut r.config_maps, ef.pointer("/configMapRef/name").and_then(Value::as_str));
            }
            for e in c["env"].as_array().into_iter().flatten() {
                push(&mut r.secrets, e.pointer("/valueFrom/secretKeyRef/name").and_then(Value::as_str));
                push(&mut r.config_maps, e.pointer("/valueFrom/configMapKeyRef/name").and_then(Value::as_str));
            }
        }
    }
    let pod_name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    for v in spec["volumes"].as_array().into_iter().flatten() {
        push(&mut r.secrets, v.pointer("/secret/secretName").and_then(Value::as_str));
        push(&mut r.config_maps, v.pointer("/configMap/name").and_then(Value::as_str));
        push(&mut r.pvcs, v.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str));
        if v.get("ephemeral").is_some_and(Value::is_object) {
            let n = format!("{pod_name}-{}", v["name"].as_str().unwrap_or(""));
            push(&mut r.pvcs, Some(&n));
        }
        for src in v.pointer("/projected/sources").and_then(Value::as_array).into_iter().flatten() {
            push(&mut r.secrets, src.pointer("/secret/name").and_then(Value::as_str));
            push(&mut r.config_maps, src.pointer("/configMap/name").and_then(Value::as_str));
        }
        // Volume plugins with secret references (csi, cephfs, rbd, iscsi, flexVolume, azureFile, ...).
        if let Some(o) = v.as_object() {
            for (k, src) in o {
                if k == "secret" || k == "projected" {
                    continue;
                }
                push(&mut r.secrets, src.pointer("/secretRef/name").and_then(Value::as_str));
                push(&mut r.secrets, src.pointer("/nodePublishSecretRef/name").and_then(Value::as_str));
                push(&mut r.secrets, src.get("secretName").and_then(Value::as_str));
            }
        }
    }
    r
}

/// The graph of one node: the pods bound to it and the PVs of their PVCs.
#[derive(Debug, Default, Clone)]
pub struct NodeGraph {
    /// (namespace, name) of pods bound to the node (with a name in spec.nodeName).
    pub pods: Vec<(String, String, PodRefs)>,
    /// (namespace, PVC name) -> bound PV name (spec.volumeName).
    pub pvc_volumes: BTreeMap<(String, String), String>,
    /// PV name -> secret (namespace, name) references.
    pub pv_secrets: BTreeMap<String, Vec<(String, String)>>,
}

impl NodeGraph {
    /// Build from the pods bound to the node (already filtered by spec.nodeName), the PVCs and
    /// PVs the caller looked up.
    pub fn new(pods: &[Value], pvcs: &[Value], pvs: &[Value]) -> NodeGraph {
        let name = |v: &Value| v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        let ns = |v: &Value| v.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string();
        let mut g = NodeGraph {
            pods: pods.iter().map(|p| (ns(p), name(p), pod_refs(p))).collect(),
            ..Default::default()
        };
        for c in pvcs {
            if let Some(v) = c.pointer("/spec/volumeName").and_then(Value::as_str).filter(|v| !v.is_empty()) {
                g.pvc_volumes.insert((ns(c), name(c)), v.to_string());
            }
        }
        for pv in pvs {
            let mut secrets = Vec::new();
            if let Some(spec) = pv["spec"].as_object() {
                for src in spec.values() {
                    for key in ["secretRef", "nodePublishSecretRef", "controllerPublishSecretRef", "nodeStageSecretRef", "nodeExpandSecretRef"] {
                        if let Some(n) = src.pointer(&format!("/{key}/name")).and_then(Value::as_str) {
                            let sns = src.pointer(&format!("/{key}/namespace")).and_then(Value::as_str).unwrap_or("");
                            secrets.push((sns.to_string(), n.to_string()));
                        }
                    }
                }
            }
            g.pv_secrets.insert(name(pv), secrets);
        }
        g
    }

    /// The PVCs (namespace, name) the node's pods use.
    pub fn pvcs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (ns, _, r) in &self.pods {
            for c in &r.pvcs {
                let k = (ns.clone(), c.clone());
                if !out.contains(&k) {
                    out.push(k);
                }
            }
        }
        out
    }

    /// Is (kind, ns, name) reachable from the node?
    pub fn has_path(&self, kind: Vertex, ns: &str, name: &str) -> bool {
        let in_ns = || self.pods.iter().filter(move |(pns, _, _)| pns == ns);
        match kind {
            Vertex::Pod => in_ns().any(|(_, n, _)| n == name),
            Vertex::Secret => {
                in_ns().any(|(_, _, r)| r.secrets.iter().any(|s| s == name))
                    || self.pvcs().iter().filter_map(|k| self.pvc_volumes.get(k)).any(|pv| {
                        self.pv_secrets
                            .get(pv)
                            .is_some_and(|ss| ss.iter().any(|(sns, sn)| sns == ns && sn == name))
                    })
            }
            Vertex::ConfigMap => in_ns().any(|(_, _, r)| r.config_maps.iter().any(|s| s == name)),
            Vertex::Pvc => in_ns().any(|(_, _, r)| r.pvcs.iter().any(|s| s == name)),
            Vertex::ServiceAccount => in_ns().any(|(_, _, r)| r.service_account == name),
            Vertex::Pv => self
                .pvcs()
                .iter()
                .filter_map(|k| self.pvc_volumes.get(k))
                .any(|pv| pv == name),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// NodeRestriction admission.

pub use crate::k8s::labels::forbidden_node_label;

fn labels(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(|o| o.pointer("/metadata/labels"))
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default()
}

/// A NodeRestriction denial: the message after `<resource> "<name>" is forbidden: `.
pub type Denial = String;

/// What is being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

/// NodeRestriction for a request of `user` on (group, resource, subresource) named `name`, with
/// the new object (create/update) and the stored one (update/delete). None: admitted (also for
/// users that are not nodes and resources the plugin does not restrict).
#[allow(clippy::too_many_arguments)]
pub fn admit(
    user: &User,
    op: Operation,
    group: &str,
    resource: &str,
    subresource: &str,
    name: &str,
    new: Option<&Value>,
    old: Option<&Value>,
) -> Option<Denial> {
    let node = node_identity(user)?;
    if node.is_empty() {
        return Some(format!("could not determine node from user {:?}", user.name));
    }
    let bound_to = |p: Option<&Value>| p.and_then(|p| p.pointer("/spec/nodeName")).and_then(Value::as_str).unwrap_or("").to_string();
    match (group, resource) {
        ("", "nodes") => {
            if name != node {
                return Some(format!("node {node:?} is not allowed to modify node {name:?}"));
            }
            let new_labels = labels(new);
            let old_labels = labels(old);
            let mut changed: Vec<&String> = new_labels
                .iter()
                .filter(|(k, v)| old_labels.get(*k) != Some(*v))
                .map(|(k, _)| k)
                .chain(old_labels.keys().filter(|k| !new_labels.contains_key(*k)))
                .filter(|k| forbidden_node_label(k))
                .collect();
            changed.sort();
            changed.dedup();
            match op {
                Operation::Create if !changed.is_empty() => {
                    let l: Vec<&str> = changed.iter().map(|s| s.as_str()).collect();
                    return Some(format!("node {node:?} is not allowed to set the following labels: {}", l.join(", ")));
                }
                Operation::Update => {
                    if subresource.is_empty() || subresource == "status" {
                        let taints = |v: Option<&Value>| v.and_then(|o| o.pointer("/spec/taints")).cloned().unwrap_or(Value::Null);
                        let norm = |t: Value| if t.as_array().is_some_and(|a| a.is_empty()) { Value::Null } else { t };
                        if norm(taints(new)) != norm(taints(old)) {
                            return Some(format!("node {node:?} is not allowed to modify taints"));
                        }
                    }
                    if !changed.is_empty() {
                        let l: Vec<&str> = changed.iter().map(|s| s.as_str()).collect();
                        // kube's message has no node prefix here.
                        return Some(format!("is not allowed to modify labels: {}", l.join(", ")));
                    }
                }
                _ => {}
            }
            None
        }
        ("", "pods") => match (op, subresource) {
            (Operation::Create, "") => {
                let p = new?;
                let mirror = p
                    .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
                    .is_some();
                if !mirror {
                    return Some(format!(
                        "pod does not have \"kubernetes.io/config.mirror\" annotation, node {node:?} can only create mirror pods"
                    ));
                }
                if bound_to(Some(p)) != node {
                    return Some(format!("node {node:?} can only create pods with spec.nodeName set to itself"));
                }
                let r = pod_refs(p);
                if !r.secrets.is_empty() {
                    return Some(format!("node {node:?} can not create pods that reference secrets"));
                }
                if !r.config_maps.is_empty() {
                    return Some(format!("node {node:?} can not create pods that reference configmaps"));
                }
                if !r.pvcs.is_empty() {
                    return Some(format!("node {node:?} can not create pods that reference persistentvolumeclaims"));
                }
                None
            }
            (Operation::Delete, "") => {
                if bound_to(old) != node {
                    return Some(format!("node {node:?} can only delete pods with spec.nodeName set to itself"));
                }
                None
            }
            (Operation::Update, "status") => {
                if bound_to(old) != node {
                    return Some(format!("node {node:?} can only update pod status for pods with spec.nodeName set to itself"));
                }
                None
            }
            (_, "eviction") => {
                if bound_to(old) != node {
                    return Some(format!("node {node:?} can only evict pods with spec.nodeName set to itself"));
                }
                None
            }
            _ => None,
        },
        ("coordination.k8s.io", "leases") => {
            if op == Operation::Create && name != node {
                return Some("can only access node lease with the same name as the requesting node".into());
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controlplane::auth::rbac::Policy;
    use crate::controlplane::auth::request::attributes;
    use crate::controlplane::auth::testutil::{user, Fixed};
    use crate::controlplane::auth::NODES_GROUP;

    struct G(NodeGraph, Policy);
    impl Context for G {
        fn policy(&self) -> &Policy {
            &self.1
        }
        fn has_path(&self, node: &str, kind: Vertex, ns: &str, name: &str) -> bool {
            node == "n1" && self.0.has_path(kind, ns, name)
        }
    }

    fn n1() -> User {
        user("system:node:n1", &[NODES_GROUP])
    }

    fn pods() -> Vec<Value> {
        vec![json!({"metadata": {"name": "web", "namespace": "d"}, "spec": {"nodeName": "n1",
            "serviceAccountName": "sa",
            "imagePullSecrets": [{"name": "pull"}],
            "containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "env-s"}}, {"configMapRef": {"name": "env-cm"}}],
                            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "key-s", "key": "k"}}},
                                    {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "key-cm", "key": "k"}}}]}],
            "volumes": [{"name": "v1", "secret": {"secretName": "vol-s"}}, {"name": "v2", "configMap": {"name": "vol-cm"}},
                        {"name": "v3", "persistentVolumeClaim": {"claimName": "data"}},
                        {"name": "v4", "projected": {"sources": [{"secret": {"name": "proj-s"}}, {"configMap": {"name": "proj-cm"}}]}},
                        {"name": "v5", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-s"}}}]}})]
    }

    fn ctx() -> G {
        let pvcs = vec![json!({"metadata": {"name": "data", "namespace": "d"}, "spec": {"volumeName": "pv1"}})];
        let pvs = vec![json!({"metadata": {"name": "pv1"}, "spec": {"csi": {"driver": "x", "nodePublishSecretRef": {"name": "pv-s", "namespace": "d"}}}})];
        G(NodeGraph::new(&pods(), &pvcs, &pvs), Policy::default())
    }

    fn d(u: &User, method: &str, path: &str, q: &str) -> (Decision, String) {
        authorize(&attributes(u.clone(), method, path, Some(q)), &ctx())
    }

    #[test]
    fn graph_of_pod_references() {
        let allow = |p: &str| d(&n1(), "GET", p, "").0 == Decision::Allow;
        for s in ["pull", "env-s", "key-s", "vol-s", "proj-s", "csi-s", "pv-s"] {
            assert!(allow(&format!("/api/v1/namespaces/d/secrets/{s}")), "{s}");
        }
        for c in ["env-cm", "key-cm", "vol-cm", "proj-cm"] {
            assert!(allow(&format!("/api/v1/namespaces/d/configmaps/{c}")), "{c}");
        }
        assert!(allow("/api/v1/namespaces/d/persistentvolumeclaims/data"));
        assert!(allow("/api/v1/persistentvolumes/pv1"));
        assert!(allow("/api/v1/namespaces/d/pods/web"));
        assert!(d(&n1(), "GET", "/api/v1/namespaces/d/secrets", "fieldSelector=metadata.name%3Dpull&watch=true").0 == Decision::Allow);
        let (dec, reason) = d(&n1(), "GET", "/api/v1/namespaces/d/secrets/other", "");
        assert_eq!((dec, reason.as_str()), (Decision::NoOpinion, "no relationship found between node 'n1' and this object"));
        assert!(!allow("/api/v1/namespaces/other/secrets/pull"), "namespaces matter");
        assert_eq!(d(&n1(), "GET", "/api/v1/namespaces/d/secrets", "").1, "No Object name found");
        assert_eq!(d(&n1(), "DELETE", "/api/v1/namespaces/d/secrets/pull", "").1, "can only read resources of this type");
        assert_eq!(d(&n1(), "GET", "/api/v1/namespaces/d/persistentvolumeclaims", "").1, "can only get individual resources of this type");
        let other = user("system:node:n2", &[NODES_GROUP]);
        assert_eq!(d(&other, "GET", "/api/v1/namespaces/d/secrets/pull", "").0, Decision::NoOpinion);
        assert_eq!(
            d(&n1(), "POST", "/api/v1/namespaces/d/serviceaccounts/sa/token", "").0,
            Decision::Allow
        );
    }

    #[test]
    fn nodes_pods_leases_and_static_rules() {
        let n = n1();
        let ok = |m: &str, p: &str, q: &str| d(&n, m, p, q).0 == Decision::Allow;
        assert!(ok("GET", "/api/v1/nodes/n1", ""));
        assert!(ok("GET", "/api/v1/nodes", "fieldSelector=metadata.name%3Dn1"));
        assert_eq!(d(&n, "GET", "/api/v1/nodes", "").1, "node 'n1' cannot read all nodes, only its own Node object");
        assert_eq!(d(&n, "GET", "/api/v1/nodes/n2", "").1, "node 'n1' cannot read 'n2', only its own Node object");
        assert!(ok("POST", "/api/v1/nodes", ""));
        assert!(ok("PATCH", "/api/v1/nodes/n1/status", ""));
        assert!(ok("PATCH", "/api/v1/nodes/n2", ""), "the name is NodeRestriction's to check");
        assert!(!ok("DELETE", "/api/v1/nodes/n1", ""));
        assert!(ok("GET", "/api/v1/pods", "fieldSelector=spec.nodeName%3Dn1&watch=true"));
        assert_eq!(d(&n, "GET", "/api/v1/pods", "").1, "can only list/watch pods with spec.nodeName field selector");
        assert!(!ok("GET", "/api/v1/pods", "fieldSelector=spec.nodeName%3Dn2"));
        assert!(ok("PATCH", "/api/v1/namespaces/d/pods/web/status", ""));
        assert!(ok("DELETE", "/api/v1/namespaces/d/pods/web", ""));
        assert!(!ok("PUT", "/api/v1/namespaces/d/pods/web", ""));
        assert!(!ok("POST", "/api/v1/namespaces/d/pods/web/exec", ""));
        assert!(ok("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", ""));
        assert!(ok("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", ""));
        assert!(ok("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", ""));
        assert!(!ok("PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2", ""));
        assert!(!ok("GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases/n1", ""));
        assert!(ok("POST", "/api/v1/namespaces/d/events", ""));
        assert!(ok("GET", "/api/v1/services", ""));
        assert!(ok("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", ""));
        assert!(ok("POST", "/apis/certificates.k8s.io/v1/certificatesigningrequests", ""));
        assert!(!ok("GET", "/api/v1/namespaces", ""));
        assert!(!ok("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", ""));
        // Not a node: no opinion.
        let f = Fixed { policy: Policy::default(), paths: vec![] };
        assert_eq!(authorize(&attributes(user("x", &[]), "GET", "/api/v1/services", None), &f).0, Decision::NoOpinion);
        let (dec, reason) = authorize(&attributes(user("system:node:", &[NODES_GROUP]), "GET", "/api/v1/services", None), &f);
        assert_eq!((dec, reason.as_str()), (Decision::NoOpinion, "unknown node for user \"system:node:\""));
    }

    #[test]
    fn node_restriction() {
        let n = n1();
        let node = |name: &str, labels: Value| json!({"metadata": {"name": name, "labels": labels}});
        assert_eq!(
            admit(&n, Operation::Update, "", "nodes", "", "n2", Some(&node("n2", json!({}))), Some(&node("n2", json!({})))).unwrap(),
            "node \"n1\" is not allowed to modify node \"n2\""
        );
        assert!(admit(&n, Operation::Create, "", "nodes", "", "n1", Some(&node("n1", json!({"kubernetes.io/hostname": "n1", "kubernetes.io/os": "linux", "example.com/x": "y", "node.kubernetes.io/exclude-from-external-load-balancers": ""}))), None).is_none());
        assert_eq!(
            admit(&n, Operation::Create, "", "nodes", "", "n1", Some(&node("n1", json!({"node-restriction.kubernetes.io/a": "b", "node-role.kubernetes.io/control-plane": ""}))), None).unwrap(),
            "node \"n1\" is not allowed to set the following labels: node-restriction.kubernetes.io/a, node-role.kubernetes.io/control-plane"
        );
        let old = node("n1", json!({"node-restriction.kubernetes.io/a": "b"}));
        assert!(admit(&n, Operation::Update, "", "nodes", "status", "n1", Some(&old), Some(&old)).is_none(), "unchanged labels pass");
        assert_eq!(
            admit(&n, Operation::Update, "", "nodes", "", "n1", Some(&node("n1", json!({}))), Some(&old)).unwrap(),
            "is not allowed to modify labels: node-restriction.kubernetes.io/a"
        );
        let tainted = json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
        assert_eq!(
            admit(&n, Operation::Update, "", "nodes", "", "n1", Some(&node("n1", json!({}))), Some(&tainted)).unwrap(),
            "node \"n1\" is not allowed to modify taints"
        );
        let mine = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        let theirs = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n2"}});
        assert!(admit(&n, Operation::Delete, "", "pods", "", "p", None, Some(&mine)).is_none());
        assert!(admit(&n, Operation::Delete, "", "pods", "", "p", None, Some(&theirs)).is_some());
        assert!(admit(&n, Operation::Update, "", "pods", "status", "p", Some(&mine), Some(&mine)).is_none());
        assert_eq!(
            admit(&n, Operation::Update, "", "pods", "status", "p", Some(&theirs), Some(&theirs)).unwrap(),
            "node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
        );
        assert!(admit(&n, Operation::Create, "", "pods", "", "p", Some(&mine), None).unwrap().contains("can only create mirror pods"));
        let mirror = json!({"metadata": {"name": "p", "annotations": {"kubernetes.io/config.mirror": "x"}}, "spec": {"nodeName": "n1"}});
        assert!(admit(&n, Operation::Create, "", "pods", "", "p", Some(&mirror), None).is_none());
        assert!(admit(&n, Operation::Create, "coordination.k8s.io", "leases", "", "n2", None, None).is_some());
        assert!(admit(&n, Operation::Create, "coordination.k8s.io", "leases", "", "n1", None, None).is_none());
        assert!(admit(&user("admin", &["system:masters"]), Operation::Delete, "", "nodes", "", "n2", None, None).is_none());
    }
}
