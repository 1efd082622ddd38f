//! Node label rules shared by `berth join` (kubelet's `--node-labels` check) and the API server's
//! NodeRestriction admission, so the two can never disagree. Pure.

/// Labels kubelet sets on its own Node (`kubeletapis.IsKubeletLabel`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.kubernetes.io/zone",
    "failure-domain.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
    "node.kubernetes.io/windows-build",
];
/// Label namespaces (and their subdomains) kubelet may use freely.
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

fn in_namespace(ns: &str, base: &str) -> bool {
    ns == base || ns.strip_suffix(base).is_some_and(|p| p.ends_with('.'))
}

/// Whether a kubelet may set label `key` on its Node: anything outside the kubernetes.io and
/// k8s.io namespaces, plus kubelet's own labels and namespaces.
pub fn is_kubelet_label(key: &str) -> bool {
    let ns = key.split_once('/').map(|(p, _)| p).unwrap_or("");
    if !in_namespace(ns, "kubernetes.io") && !in_namespace(ns, "k8s.io") {
        return true;
    }
    KUBELET_LABELS.contains(&key) || KUBELET_LABEL_NAMESPACES.iter().any(|n| in_namespace(ns, n))
}

/// Whether NodeRestriction refuses a node setting label `key` on itself (`getForbiddenLabels`):
/// the node-restriction.kubernetes.io namespace always, other kubernetes.io/k8s.io labels unless
/// they are kubelet's.
pub fn forbidden_node_label(key: &str) -> bool {
    let ns = key.split_once('/').map(|(p, _)| p).unwrap_or("");
    in_namespace(ns, "node-restriction.kubernetes.io") || !is_kubelet_label(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_labels_and_namespaces() {
        for k in ["kubernetes.io/hostname", "topology.kubernetes.io/zone", "node.kubernetes.io/foo", "a.kubelet.kubernetes.io/x", "example.com/team", "plain"] {
            assert!(is_kubelet_label(k), "{k}");
            assert!(!forbidden_node_label(k), "{k}");
        }
        for k in ["node-role.kubernetes.io/master", "kubernetes.io/other", "x.k8s.io/y", "node-restriction.kubernetes.io/a", "z.node-restriction.kubernetes.io/b"] {
            assert!(forbidden_node_label(k), "{k}");
        }
        assert!(is_kubelet_label("notkubernetes.io/x"), "a suffix is not a subdomain");
    }
}
