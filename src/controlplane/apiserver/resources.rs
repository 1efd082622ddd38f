//! The per-resource descriptor table: everything the generic handlers need to know about a
//! resource (discovery, storage key, status subresource, deletion and printing behaviour).
use serde_json::{json, Value};

/// How a resource is rendered as a server-side Table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Printer {
    Pod,
    Node,
    Namespace,
    Event,
    Default,
}

/// A subresource served by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Status,
    Binding,
    Log,
    Exec,
    Attach,
    PortForward,
}

impl Sub {
    pub fn name(self) -> &'static str {
        match self {
            Sub::Status => "status",
            Sub::Binding => "binding",
            Sub::Log => "log",
            Sub::Exec => "exec",
            Sub::Attach => "attach",
            Sub::PortForward => "portforward",
        }
    }
    fn discovery(self, parent_kind: &str) -> (&'static str, &'static [&'static str]) {
        let _ = parent_kind;
        match self {
            Sub::Status => ("", &["get", "patch", "update"]),
            Sub::Binding => ("Binding", &["create"]),
            Sub::Log => ("", &["get"]),
            Sub::Exec => ("PodExecOptions", &["create", "get"]),
            Sub::Attach => ("PodAttachOptions", &["create", "get"]),
            Sub::PortForward => ("PodPortForwardOptions", &["create", "get"]),
        }
    }
}

/// One resource.
#[derive(Debug, PartialEq)]
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Sub],
    pub printer: Printer,
    /// DELETE answers the deleted object (pods, namespaces) rather than a Success Status.
    pub return_deleted_object: bool,
}

const FULL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceDef {
    /// The store key of object `name` (in namespace `ns` when the resource is namespaced).
    pub fn key(&self, ns: &str, name: &str) -> crate::controlplane::store::Key {
        crate::controlplane::store::Key::new(&self.qualified(), if self.namespaced { ns } else { "" }, name)
    }

    /// `pods`, `leases.coordination.k8s.io`: kube's GroupResource string and our storage prefix.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// `v1`, `coordination.k8s.io/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// authorization.k8s.io / authentication.k8s.io reviews: create-only, never stored.
    pub fn is_review(&self) -> bool {
        self.group == "authorization.k8s.io" || self.group == "authentication.k8s.io"
    }
    pub fn has_status(&self) -> bool {
        self.subresources.contains(&Sub::Status)
    }
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.is_review() {
            &["create"]
        } else if self.plural == "namespaces" {
            &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ]
        } else {
            FULL_VERBS
        }
    }
    /// APIResource entries for discovery (the resource and its subresources).
    pub fn discovery(&self) -> Vec<Value> {
        let mut out = vec![json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs(),
        })];
        if !self.short_names.is_empty() {
            out[0]["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            out[0]["categories"] = json!(self.categories);
        }
        for s in self.subresources {
            let (kind, verbs) = s.discovery(self.kind);
            let mut v = json!({
                "name": format!("{}/{}", self.plural, s.name()),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": if kind.is_empty() { self.kind } else { kind },
                "verbs": verbs,
            });
            if *s == Sub::Binding {
                v["singularName"] = "".into();
            }
            out.push(v);
        }
        out
    }
}

macro_rules! res {
    ($g:expr, $v:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr, $short:expr, $cat:expr, $subs:expr, $printer:expr, $ret:expr) => {
        ResourceDef {
            group: $g,
            version: $v,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            subresources: $subs,
            printer: $printer,
            return_deleted_object: $ret,
        }
    };
}

/// Every resource served.
pub static RESOURCES: &[ResourceDef] = &[
    res!(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        &["ns"],
        &[],
        &[Sub::Status],
        Printer::Namespace,
        true
    ),
    res!(
        "",
        "v1",
        "nodes",
        "node",
        "Node",
        false,
        &["no"],
        &[],
        &[Sub::Status],
        Printer::Node,
        false
    ),
    res!(
        "",
        "v1",
        "pods",
        "pod",
        "Pod",
        true,
        &["po"],
        &["all"],
        &[
            Sub::Status,
            Sub::Binding,
            Sub::Log,
            Sub::Exec,
            Sub::Attach,
            Sub::PortForward
        ],
        Printer::Pod,
        true
    ),
    res!(
        "",
        "v1",
        "events",
        "event",
        "Event",
        true,
        &["ev"],
        &[],
        &[],
        Printer::Event,
        false
    ),
    res!(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        &["cm"],
        &[],
        &[],
        Printer::Default,
        false
    ),
    res!(
        "",
        "v1",
        "secrets",
        "secret",
        "Secret",
        true,
        &[],
        &[],
        &[],
        Printer::Default,
        false
    ),
    res!(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        &["sa"],
        &[],
        &[],
        Printer::Default,
        false
    ),
    res!(
        "",
        "v1",
        "services",
        "service",
        "Service",
        true,
        &["svc"],
        &["all"],
        &[Sub::Status],
        Printer::Default,
        false
    ),
    res!(
        "",
        "v1",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        &["ep"],
        &[],
        &[],
        Printer::Default,
        false
    ),
    res!(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        &[],
        &[],
        &[],
        Printer::Default,
        false
    ),
    // RBAC (stored) and the access reviews (create-only, answered by controlplane::auth).
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        &[],
        &[],
        &[],
        Printer::Default,
        false
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
        &[],
        &[],
        Printer::Default,
        false
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
        &[],
        &[],
        &[],
        Printer::Default,
        false
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        &[],
        &[],
        &[],
        Printer::Default,
        false
    ),
    res!(
        "authorization.k8s.io",
        "v1",
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        "LocalSubjectAccessReview",
        true,
        &[],
        &[],
        &[],
        Printer::Default,
        false
    ),
    res!(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
        false,
        &[],
        &[],
        &[],
        Printer::Default,
        false
    ),
    res!(
        "authorization.k8s.io",
        "v1",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        "SelfSubjectRulesReview",
        false,
        &[],
        &[],
        &[],
        Printer::Default,
        false
    ),
    res!(
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "subjectaccessreview",
        "SubjectAccessReview",
        false,
        &[],
        &[],
        &[],
        Printer::Default,
        false
    ),
    res!(
        "authentication.k8s.io",
        "v1",
        "selfsubjectreviews",
        "selfsubjectreview",
        "SelfSubjectReview",
        false,
        &[],
        &[],
        &[],
        Printer::Default,
        false
    ),
];

/// Look up a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// core/v1 namespaces (always served).
pub fn namespaces() -> &'static ResourceDef {
    find("", "v1", "namespaces").expect("namespaces are served")
}

/// core/v1 nodes (always served).
pub fn nodes() -> &'static ResourceDef {
    find("", "v1", "nodes").expect("nodes are served")
}

/// The API groups (other than core) with their versions.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) => {
                if !vs.contains(&r.version) {
                    vs.push(r.version)
                }
            }
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RBAC: &str = "rbac.authorization.k8s.io";

    #[test]
    fn lookup_and_names() {
        let p = find("", "v1", "pods").unwrap();
        assert_eq!(p.qualified(), "pods");
        assert_eq!(p.api_version(), "v1");
        let l = find("coordination.k8s.io", "v1", "leases").unwrap();
        assert_eq!(l.qualified(), "leases.coordination.k8s.io");
        assert_eq!(l.api_version(), "coordination.k8s.io/v1");
        assert!(find("", "v1", "widgets").is_none());
        assert_eq!(
            groups(),
            vec![
                ("coordination.k8s.io", vec!["v1"]),
                ("rbac.authorization.k8s.io", vec!["v1"]),
                ("authorization.k8s.io", vec!["v1"]),
                ("authentication.k8s.io", vec!["v1"]),
            ]
        );
        let ssar = find("authorization.k8s.io", "v1", "selfsubjectaccessreviews").unwrap();
        assert_eq!(ssar.verbs(), &["create"]);
        assert_eq!(find(RBAC, "v1", "roles").unwrap().verbs().len(), 8);
    }

    #[test]
    fn discovery_entries() {
        let d = find("", "v1", "pods").unwrap().discovery();
        assert_eq!(d[0]["shortNames"], json!(["po"]));
        assert_eq!(d[0]["categories"], json!(["all"]));
        let names: Vec<&str> = d.iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert!(
            names.contains(&"pods/exec")
                && names.contains(&"pods/log")
                && names.contains(&"pods/binding")
        );
        let exec = d.iter().find(|v| v["name"] == "pods/exec").unwrap();
        assert_eq!(exec["kind"], "PodExecOptions");
        let st = d.iter().find(|v| v["name"] == "pods/status").unwrap();
        assert_eq!(st["kind"], "Pod");
    }
}
