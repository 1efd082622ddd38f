//! The default RBAC policy created at first start: kube-apiserver's bootstrap roles and bindings
//! (cluster-admin, admin/edit/view with aggregation, system:basic-user, system:discovery,
//! system:public-info-viewer, system:node, system:node-bootstrapper, system:kube-scheduler,
//! system:kube-controller-manager, ...) and kubeadm's additions (kubeadm:cluster-admins,
//! kubeadm:get-nodes, CSR auto-approval bindings). Our own table, written after the rules
//! upstream's bootstrappolicy carries.
use serde_json::{json, Value};

use super::node::node_rules;
use super::rbac::{Rule, Subject};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

const AGG_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const AGG_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const AGG_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

fn r(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Rule {
    Rule::res(verbs, groups, resources)
}

fn events_rule() -> Rule {
    r(&["create", "patch", "update"], &["", "events.k8s.io"], &["events"])
}

/// One bootstrap ClusterRole.
pub struct RoleSpec {
    pub name: &'static str,
    pub rules: Vec<Rule>,
    /// Extra labels (aggregation targets).
    pub labels: &'static [(&'static str, &'static str)],
    /// aggregationRule: the label each selector requires (`<key>=true`).
    pub aggregate_from: &'static [&'static str],
}

fn role(name: &'static str, rules: Vec<Rule>) -> RoleSpec {
    RoleSpec { name, rules, labels: &[], aggregate_from: &[] }
}

/// The bootstrap ClusterRoles.
pub fn cluster_role_specs() -> Vec<RoleSpec> {
    vec![
        role("cluster-admin", vec![r(&["*"], &["*"], &["*"]), Rule::urls(&["*"], &["*"])]),
        role(
            "system:discovery",
            vec![Rule::urls(&["get"], &["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"])],
        ),
        role(
            "system:monitoring",
            vec![
                Rule::urls(&["get"], &["/flagz", "/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics", "/metrics/slis", "/readyz", "/readyz/*", "/statusz"]),
                r(&["get"], &[""], &["nodes/metrics"]),
            ],
        ),
        role(
            "system:basic-user",
            vec![
                r(&["create"], &["authorization.k8s.io"], &["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
                r(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
            ],
        ),
        role("system:public-info-viewer", vec![Rule::urls(&["get"], &["/healthz", "/livez", "/readyz", "/version", "/version/"])]),
        RoleSpec { name: "admin", rules: vec![], labels: &[], aggregate_from: &[AGG_ADMIN] },
        RoleSpec { name: "edit", rules: vec![], labels: &[(AGG_ADMIN, "true")], aggregate_from: &[AGG_EDIT] },
        RoleSpec { name: "view", rules: vec![], labels: &[(AGG_EDIT, "true")], aggregate_from: &[AGG_VIEW] },
        RoleSpec {
            name: "system:aggregate-to-admin",
            rules: vec![
                r(&["create"], &["authorization.k8s.io"], &["localsubjectaccessreviews"]),
                r(READ_WRITE, &[RBAC_GROUP], &["rolebindings", "roles"]),
            ],
            labels: &[(AGG_ADMIN, "true")],
            aggregate_from: &[],
        },
        RoleSpec {
            name: "system:aggregate-to-edit",
            rules: vec![
                r(READ, &[""], &["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"]),
                r(&["impersonate"], &[""], &["serviceaccounts"]),
                r(WRITE, &[""], &["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]),
                r(&["create"], &[""], &["pods/eviction"]),
                r(
                    WRITE,
                    &[""],
                    &["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers", "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy"],
                ),
                r(&["create"], &[""], &["serviceaccounts/token"]),
                r(
                    WRITE,
                    &["apps"],
                    &["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets", "replicasets/scale", "statefulsets", "statefulsets/scale"],
                ),
                r(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                r(WRITE, &["batch"], &["cronjobs", "jobs"]),
                r(
                    WRITE,
                    &["extensions"],
                    &["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "ingresses", "networkpolicies", "replicasets", "replicasets/scale", "replicationcontrollers/scale"],
                ),
                r(WRITE, &["policy"], &["poddisruptionbudgets"]),
                r(WRITE, &["networking.k8s.io"], &["ingresses", "networkpolicies"]),
                r(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
                r(WRITE, &["events.k8s.io"], &["events"]),
                r(WRITE, &["resource.k8s.io"], &["resourceclaims", "resourceclaimtemplates"]),
            ],
            labels: &[(AGG_EDIT, "true")],
            aggregate_from: &[],
        },
        RoleSpec {
            name: "system:aggregate-to-view",
            rules: vec![
                r(
                    READ,
                    &[""],
                    &["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods", "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services", "services/status"],
                ),
                r(
                    READ,
                    &[""],
                    &["bindings", "events", "limitranges", "namespaces/status", "pods/log", "pods/status", "replicationcontrollers/status", "resourcequotas", "resourcequotas/status"],
                ),
                r(READ, &[""], &["namespaces"]),
                r(READ, &["discovery.k8s.io"], &["endpointslices"]),
                r(
                    READ,
                    &["apps"],
                    &["controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale", "deployments/status", "replicasets", "replicasets/scale", "replicasets/status", "statefulsets", "statefulsets/scale", "statefulsets/status"],
                ),
                r(READ, &["autoscaling"], &["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
                r(READ, &["batch"], &["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
                r(
                    READ,
                    &["extensions"],
                    &["daemonsets", "daemonsets/status", "deployments", "deployments/scale", "deployments/status", "ingresses", "ingresses/status", "networkpolicies", "replicasets", "replicasets/scale", "replicasets/status", "replicationcontrollers/scale"],
                ),
                r(READ, &["policy"], &["poddisruptionbudgets", "poddisruptionbudgets/status"]),
                r(READ, &["networking.k8s.io"], &["ingresses", "ingresses/status", "networkpolicies"]),
                r(READ, &["events.k8s.io"], &["events"]),
                r(READ, &["resource.k8s.io"], &["resourceclaims", "resourceclaims/status", "resourceclaimtemplates"]),
            ],
            labels: &[(AGG_VIEW, "true")],
            aggregate_from: &[],
        },
        role("system:node", node_rules()),
        role("system:node-bootstrapper", vec![r(&["create", "get", "list", "watch"], &["certificates.k8s.io"], &["certificatesigningrequests"])]),
        role(
            "system:node-proxier",
            vec![
                r(&["list", "watch"], &[""], &["endpoints", "services"]),
                r(READ, &[""], &["nodes"]),
                events_rule(),
                r(&["list", "watch"], &["discovery.k8s.io"], &["endpointslices"]),
                r(&["list", "watch"], &["networking.k8s.io"], &["servicecidrs"]),
            ],
        ),
        role("system:auth-delegator", vec![
            r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
            r(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
        ]),
        role(
            "system:kubelet-api-admin",
            vec![
                r(&["get", "list", "watch", "proxy"], &[""], &["nodes"]),
                r(&["*"], &[""], &["nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats", "nodes/configz", "nodes/healthz", "nodes/pods"]),
            ],
        ),
        role(
            "system:kube-scheduler",
            vec![
                events_rule(),
                r(&["create"], &["coordination.k8s.io"], &["leases"]),
                Rule::named(&["get", "list", "update", "watch"], &["coordination.k8s.io"], &["leases"], &["kube-scheduler"]),
                r(READ_WRITE, &["coordination.k8s.io"], &["leasecandidates"]),
                r(READ, &[""], &["nodes"]),
                r(&["delete", "get", "list", "watch"], &[""], &["pods"]),
                r(&["create"], &[""], &["bindings", "pods/binding"]),
                r(&["patch", "update"], &[""], &["pods/status"]),
                r(READ, &[""], &["replicationcontrollers", "services"]),
                r(READ, &["apps", "extensions"], &["replicasets"]),
                r(READ, &["apps"], &["statefulsets"]),
                r(READ, &["policy"], &["poddisruptionbudgets"]),
                r(READ, &[""], &["persistentvolumeclaims", "persistentvolumes"]),
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
                r(READ, &["storage.k8s.io"], &["csinodes"]),
                r(READ, &[""], &["namespaces"]),
                r(READ, &["storage.k8s.io"], &["csidrivers"]),
                r(READ, &["storage.k8s.io"], &["csistoragecapacities"]),
                r(&["update"], &[""], &["pods/finalizers"]),
                r(READ, &["resource.k8s.io"], &["deviceclasses", "devicetaintrules", "resourceslices"]),
                r(&["create", "delete", "get", "list", "patch", "update", "watch"], &["resource.k8s.io"], &["resourceclaims"]),
                r(&["patch", "update"], &["resource.k8s.io"], &["resourceclaims/binding"]),
                r(&["get", "list", "patch", "update", "watch"], &["resource.k8s.io"], &["resourceclaims/status"]),
                r(READ, &["storage.k8s.io"], &["volumeattachments"]),
            ],
        ),
        role(
            "system:kube-controller-manager",
            vec![
                events_rule(),
                r(&["create"], &["coordination.k8s.io"], &["leases"]),
                Rule::named(&["get", "update"], &["coordination.k8s.io"], &["leases"], &["kube-controller-manager"]),
                r(&["create"], &[""], &["secrets", "serviceaccounts"]),
                r(&["delete"], &[""], &["secrets"]),
                r(&["get"], &[""], &["configmaps", "namespaces", "secrets", "serviceaccounts"]),
                r(&["update"], &[""], &["secrets", "serviceaccounts"]),
                r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                r(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
                r(&["list", "watch"], &["*"], &["*"]),
                r(&["create"], &[""], &["serviceaccounts/token"]),
            ],
        ),
        role("system:kube-dns", vec![r(&["list", "watch"], &[""], &["endpoints", "services"])]),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![r(&["create"], &["certificates.k8s.io"], &["certificatesigningrequests/nodeclient"])],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![r(&["create"], &["certificates.k8s.io"], &["certificatesigningrequests/selfnodeclient"])],
        ),
        role(
            "system:service-account-issuer-discovery",
            vec![Rule::urls(&["get"], &["/.well-known/openid-configuration", "/.well-known/openid-configuration/", "/openid/v1/jwks", "/openid/v1/jwks/"])],
        ),
        // Controllers of kube-controller-manager that berth's control plane has an equivalent of.
        role(
            "system:controller:node-controller",
            vec![
                r(&["delete", "get", "list", "patch", "update", "watch"], &[""], &["nodes"]),
                r(&["patch", "update"], &[""], &["nodes/status"]),
                r(&["patch", "update"], &[""], &["pods/status"]),
                r(&["delete", "list", "watch"], &[""], &["pods"]),
                r(&["get"], &[""], &["pods"]),
                r(READ, &["coordination.k8s.io"], &["leases"]),
                events_rule(),
            ],
        ),
        role(
            "system:controller:namespace-controller",
            vec![
                r(&["delete", "get", "list", "watch"], &[""], &["namespaces"]),
                r(&["update"], &[""], &["namespaces/finalize", "namespaces/status"]),
                r(&["delete", "deletecollection", "get", "list", "watch"], &["*"], &["*"]),
            ],
        ),
        role("kubeadm:get-nodes", vec![r(&["get"], &[""], &["nodes"])]),
    ]
}

/// (binding name, role name, subjects).
pub fn cluster_role_binding_specs() -> Vec<(&'static str, &'static str, Vec<Subject>)> {
    let group = |n: &str| Subject { kind: "Group".into(), api_group: RBAC_GROUP.into(), name: n.into(), namespace: String::new() };
    let user = |n: &str| Subject { kind: "User".into(), api_group: RBAC_GROUP.into(), name: n.into(), namespace: String::new() };
    let sa = |ns: &str, n: &str| Subject { kind: "ServiceAccount".into(), api_group: String::new(), name: n.into(), namespace: ns.into() };
    vec![
        ("cluster-admin", "cluster-admin", vec![group("system:masters")]),
        ("kubeadm:cluster-admins", "cluster-admin", vec![group("kubeadm:cluster-admins")]),
        ("system:basic-user", "system:basic-user", vec![group("system:authenticated")]),
        ("system:discovery", "system:discovery", vec![group("system:authenticated")]),
        ("system:public-info-viewer", "system:public-info-viewer", vec![group("system:authenticated"), group("system:unauthenticated")]),
        ("system:monitoring", "system:monitoring", vec![group("system:monitoring")]),
        // Since 1.8 nodes are authorized by the Node authorizer; the binding has no subjects.
        ("system:node", "system:node", vec![]),
        ("system:node-proxier", "system:node-proxier", vec![user("system:kube-proxy")]),
        ("system:kube-controller-manager", "system:kube-controller-manager", vec![user("system:kube-controller-manager")]),
        ("system:kube-scheduler", "system:kube-scheduler", vec![user("system:kube-scheduler")]),
        ("system:kube-dns", "system:kube-dns", vec![sa("kube-system", "kube-dns")]),
        ("system:service-account-issuer-discovery", "system:service-account-issuer-discovery", vec![group("system:serviceaccounts")]),
        ("system:controller:node-controller", "system:controller:node-controller", vec![sa("kube-system", "node-controller")]),
        ("system:controller:namespace-controller", "system:controller:namespace-controller", vec![sa("kube-system", "namespace-controller")]),
        ("kubeadm:kubelet-bootstrap", "system:node-bootstrapper", vec![group("system:bootstrappers:kubeadm:default-node-token")]),
        ("kubeadm:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", vec![group("system:bootstrappers:kubeadm:default-node-token")]),
        ("kubeadm:node-autoapprove-certificate-rotation", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", vec![group("system:nodes")]),
        ("kubeadm:get-nodes", "kubeadm:get-nodes", vec![group("system:bootstrappers:kubeadm:default-node-token")]),
        ("kubeadm:apiserver-kubelet-client", "system:kubelet-api-admin", vec![user("kube-apiserver-kubelet-client")]),
    ]
}

fn bootstrap_meta(name: &str, extra: &[(&str, &str)], autoupdate: bool) -> Value {
    let mut labels = serde_json::Map::new();
    if !name.starts_with("kubeadm:") {
        labels.insert("kubernetes.io/bootstrapping".into(), "rbac-defaults".into());
    }
    for (k, v) in extra {
        labels.insert(k.to_string(), v.to_string().into());
    }
    let mut m = json!({"name": name, "labels": labels});
    if autoupdate && !name.starts_with("kubeadm:") {
        m["annotations"] = json!({"rbac.authorization.kubernetes.io/autoupdate": "true"});
    }
    m
}

/// The bootstrap ClusterRoles as API objects (aggregated roles with empty rules; the
/// aggregation controller fills them).
pub fn cluster_roles() -> Vec<Value> {
    cluster_role_specs()
        .into_iter()
        .map(|s| {
            let mut o = json!({
                "kind": "ClusterRole",
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "metadata": bootstrap_meta(s.name, s.labels, true),
                "rules": s.rules,
            });
            if !s.aggregate_from.is_empty() {
                let sel: Vec<Value> = s.aggregate_from.iter().map(|k| json!({"matchLabels": {*k: "true"}})).collect();
                o["aggregationRule"] = json!({"clusterRoleSelectors": sel});
            }
            o
        })
        .collect()
}

/// The bootstrap ClusterRoleBindings as API objects.
pub fn cluster_role_bindings() -> Vec<Value> {
    cluster_role_binding_specs()
        .into_iter()
        .map(|(name, role, subjects)| {
            let mut o = json!({
                "kind": "ClusterRoleBinding",
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "metadata": bootstrap_meta(name, &[], true),
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
            });
            if !subjects.is_empty() {
                o["subjects"] = serde_json::to_value(subjects).expect("subjects serialize");
            }
            o
        })
        .collect()
}

/// Namespaced bootstrap Roles and RoleBindings: (Roles, RoleBindings).
pub fn namespaced() -> (Vec<Value>, Vec<Value>) {
    let role = |ns: &str, name: &str, rules: Vec<Rule>| {
        json!({"kind": "Role", "apiVersion": "rbac.authorization.k8s.io/v1",
               "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
               "rules": rules})
    };
    let binding = |ns: &str, name: &str, role: &str, subjects: Value| {
        json!({"kind": "RoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
               "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
               "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": role}, "subjects": subjects})
    };
    let roles = vec![
        role(
            "kube-system",
            "extension-apiserver-authentication-reader",
            vec![Rule::named(READ, &[""], &["configmaps"], &["extension-apiserver-authentication"])],
        ),
        role("kube-system", "system::leader-locking-kube-controller-manager", vec![
            r(&["watch"], &[""], &["configmaps"]),
            Rule::named(&["get", "update"], &[""], &["configmaps"], &["kube-controller-manager"]),
        ]),
        role("kube-system", "system::leader-locking-kube-scheduler", vec![
            r(&["watch"], &[""], &["configmaps"]),
            Rule::named(&["get", "update"], &[""], &["configmaps"], &["kube-scheduler"]),
        ]),
    ];
    let bindings = vec![
        binding("kube-system", "system::extension-apiserver-authentication-reader", "extension-apiserver-authentication-reader",
                json!([{"kind": "User", "apiGroup": RBAC_GROUP, "name": "system:kube-controller-manager"},
                       {"kind": "User", "apiGroup": RBAC_GROUP, "name": "system:kube-scheduler"}])),
        binding("kube-system", "system::leader-locking-kube-controller-manager", "system::leader-locking-kube-controller-manager",
                json!([{"kind": "User", "apiGroup": RBAC_GROUP, "name": "system:kube-controller-manager"},
                       {"kind": "ServiceAccount", "name": "kube-controller-manager", "namespace": "kube-system"}])),
        binding("kube-system", "system::leader-locking-kube-scheduler", "system::leader-locking-kube-scheduler",
                json!([{"kind": "User", "apiGroup": RBAC_GROUP, "name": "system:kube-scheduler"},
                       {"kind": "ServiceAccount", "name": "kube-scheduler", "namespace": "kube-system"}])),
    ];
    (roles, bindings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controlplane::auth::rbac::{authorize, Policy};
    use crate::controlplane::auth::request::attributes;
    use crate::controlplane::auth::testutil::user;
    use crate::controlplane::auth::Decision;

    fn policy() -> Policy {
        let (roles, rbs) = namespaced();
        Policy::from_objects(&cluster_roles(), &roles, &cluster_role_bindings(), &rbs)
    }

    #[test]
    fn default_policy_answers_like_kubeadm() {
        let p = policy();
        let d = |u: &crate::controlplane::apiserver::auth::User, m: &str, path: &str| authorize(&attributes(u.clone(), m, path, None), &p).0;
        let nobody = user("nobody", &[]);
        assert_eq!(d(&nobody, "GET", "/api"), Decision::Allow, "discovery");
        assert_eq!(d(&nobody, "GET", "/apis/apps/v1"), Decision::Allow);
        assert_eq!(d(&nobody, "GET", "/version"), Decision::Allow);
        assert_eq!(d(&nobody, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"), Decision::Allow);
        assert_eq!(d(&nobody, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews"), Decision::Allow);
        assert_eq!(d(&nobody, "GET", "/api/v1/namespaces/default/pods"), Decision::NoOpinion);
        assert_eq!(d(&nobody, "GET", "/metrics"), Decision::NoOpinion);
        let kadm = user("k", &["kubeadm:cluster-admins"]);
        assert_eq!(d(&kadm, "DELETE", "/api/v1/nodes/n1"), Decision::Allow);
        assert_eq!(d(&kadm, "GET", "/metrics"), Decision::Allow);
        // The aggregated roles carry their sources' rules.
        assert!(p.cluster_roles["view"].len() >= 10);
        assert!(p.cluster_roles["edit"].len() > p.cluster_roles["view"].len());
        assert!(p.cluster_roles["admin"].len() > p.cluster_roles["edit"].len());
        let view = &p.cluster_roles["view"];
        let a = |m: &str, path: &str| attributes(nobody.clone(), m, path, None);
        assert!(view.iter().any(|r| r.allows(&a("GET", "/api/v1/namespaces/d/pods/p/log"))));
        assert!(!view.iter().any(|r| r.allows(&a("GET", "/api/v1/namespaces/d/secrets"))), "view cannot read secrets");
        assert!(!view.iter().any(|r| r.allows(&a("POST", "/api/v1/namespaces/d/pods/p/exec"))));
        let edit = &p.cluster_roles["edit"];
        assert!(edit.iter().any(|r| r.allows(&a("POST", "/api/v1/namespaces/d/pods/p/exec"))));
        assert!(edit.iter().any(|r| r.allows(&a("GET", "/api/v1/namespaces/d/secrets/s"))));
        assert!(!edit.iter().any(|r| r.allows(&a("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/d/rolebindings"))));
        let admin = &p.cluster_roles["admin"];
        assert!(admin.iter().any(|r| r.allows(&a("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/d/rolebindings"))));
        let sched = user("system:kube-scheduler", &[]);
        assert_eq!(d(&sched, "POST", "/api/v1/namespaces/d/pods/p/binding"), Decision::Allow);
        assert_eq!(d(&sched, "GET", "/api/v1/namespaces/d/secrets/s"), Decision::NoOpinion);
        let node = user("system:node:n1", &["system:nodes"]);
        assert_eq!(d(&node, "GET", "/api/v1/namespaces/d/secrets/s"), Decision::NoOpinion, "system:node has no subjects");
        let names: Vec<&str> = cluster_roles().iter().map(|r| r["metadata"]["name"].as_str().unwrap()).map(|s| Box::leak(s.to_string().into_boxed_str()) as &str).collect();
        for n in ["cluster-admin", "admin", "edit", "view", "system:basic-user", "system:discovery", "system:public-info-viewer", "system:node", "system:node-bootstrapper", "system:kube-scheduler", "system:kube-controller-manager"] {
            assert!(names.contains(&n), "{n}");
        }
        for b in cluster_role_bindings() {
            assert!(p.cluster_roles.contains_key(b["roleRef"]["name"].as_str().unwrap()), "{b}");
        }
    }
}
