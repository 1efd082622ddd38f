//! Authorization: the chain kube-apiserver runs with `--authorization-mode=Node,RBAC` (kubeadm's
//! default), preceded by the `system:masters` privileged-group authorizer.
//!
//! Layout (pure logic unless noted):
//! - [`request`]: request attributes exactly as kube-apiserver's `RequestInfoFactory` computes them
//!   (verb, API group, resource, subresource, namespace, name, non-resource path).
//! - [`rbac`]: rule matching, the RBAC authorizer over a [`rbac::Policy`] snapshot, rule coverage
//!   (escalation prevention), ClusterRole aggregation, the rules of a user (SelfSubjectRulesReview).
//! - [`node`]: the Node authorizer (graph of pods bound to a node and what they reference) and the
//!   NodeRestriction admission checks.
//! - [`bootstrap`]: the default policy kube-apiserver and kubeadm create (our own table).
//! - [`review`]: SubjectAccessReview & co. (request spec -> attributes, answers).
//! - [`server`] (I/O): the glue in the API server: policy snapshot from the store, the hook that
//!   answers 403, the review endpoints, escalation checks, and the aggregation controller.
pub mod bootstrap;
pub mod node;
pub mod rbac;
pub mod request;
pub mod review;
pub(crate) mod server;

pub use request::Attributes;

use crate::controlplane::apiserver::auth::User;

/// `system:masters`: kube-apiserver's privileged group, allowed everything without RBAC.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// The group of node identities (`system:node:<name>`).
pub const NODES_GROUP: &str = "system:nodes";
/// Prefix of node user names.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// An authorizer's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    NoOpinion,
}

/// The node name of a node identity: `system:node:<name>` in the `system:nodes` group
/// (upstream `nodeidentifier.NewDefaultNodeIdentifier`). `Some("")` for a node user with no name.
pub fn node_identity(user: &User) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES_GROUP) {
        return None;
    }
    user.name.strip_prefix(NODE_USER_PREFIX)
}

/// Where the authorizers get what they need to know about the cluster.
pub trait Context {
    /// The RBAC policy snapshot.
    fn policy(&self) -> &rbac::Policy;
    /// The node authorizer's question: is object (`kind`, `namespace`, `name`) reachable from
    /// node `node` in the graph (pods bound to it and what they reference)?
    fn has_path(&self, node: &str, kind: node::Vertex, namespace: &str, name: &str) -> bool;
}

/// Run the chain: privileged group, Node, RBAC. The reason is what kube-apiserver appends to
/// its 403 message (the non-empty reasons of the authorizers that had no opinion, joined by "\n").
pub fn authorize(attrs: &Attributes, ctx: &dyn Context) -> (Decision, String) {
    if attrs.user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
        return (Decision::Allow, String::new());
    }
    let mut reasons = Vec::new();
    let (d, reason) = node::authorize(attrs, ctx);
    if d != Decision::NoOpinion {
        return (d, reason);
    }
    if !reason.is_empty() {
        // kube-apiserver (>= 1.3x) names the authorizer in front of its reason.
        reasons.push(format!("node: {reason}"));
    }
    let (d, reason) = rbac::authorize(attrs, ctx.policy());
    if d != Decision::NoOpinion {
        return (d, reason);
    }
    if !reason.is_empty() {
        reasons.push(reason);
    }
    (Decision::NoOpinion, reasons.join("\n"))
}

/// Whether the chain allows `attrs`.
pub fn allowed(attrs: &Attributes, ctx: &dyn Context) -> bool {
    authorize(attrs, ctx).0 == Decision::Allow
}

/// kube-apiserver's 403 message (`responsewriters.forbiddenMessage` + `apierrors.NewForbidden`):
/// `pods is forbidden: User "x" cannot list resource "pods" in API group "" in the namespace "default"`.
pub fn forbidden_message(attrs: &Attributes, reason: &str) -> String {
    let user = &attrs.user.name;
    let what = if !attrs.resource_request {
        format!("User {user:?} cannot {} path {:?}", attrs.verb, attrs.path)
    } else {
        let mut resource = attrs.resource.clone();
        if !attrs.subresource.is_empty() {
            resource = format!("{resource}/{}", attrs.subresource);
        }
        if !attrs.namespace.is_empty() {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
                attrs.verb, attrs.api_group, attrs.namespace
            )
        } else {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
                attrs.verb, attrs.api_group
            )
        }
    };
    let err = if reason.is_empty() {
        what
    } else {
        format!("{what}: {reason}")
    };
    forbidden_prefix(attrs, &err)
}

/// `apierrors.NewForbidden(groupResource, name, err)` message.
pub fn forbidden_prefix(attrs: &Attributes, err: &str) -> String {
    let qualified = if !attrs.resource_request || attrs.resource.is_empty() {
        String::new()
    } else if attrs.api_group.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    };
    if qualified.is_empty() {
        format!("forbidden: {err}")
    } else if attrs.name.is_empty() {
        format!("{qualified} is forbidden: {err}")
    } else {
        format!("{qualified} {:?} is forbidden: {err}", attrs.name)
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub fn user(name: &str, groups: &[&str]) -> User {
        let mut g: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
        g.push("system:authenticated".into());
        User {
            name: name.into(),
            groups: g,
        }
    }

    /// A context over a policy and a fixed list of reachable (node, kind, ns, name) tuples.
    pub struct Fixed {
        pub policy: rbac::Policy,
        pub paths: Vec<(String, node::Vertex, String, String)>,
    }

    impl Context for Fixed {
        fn policy(&self) -> &rbac::Policy {
            &self.policy
        }
        fn has_path(&self, n: &str, kind: node::Vertex, ns: &str, name: &str) -> bool {
            self.paths
                .iter()
                .any(|(a, k, b, c)| a == n && *k == kind && b == ns && c == name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    fn attrs(u: User, method: &str, path: &str, q: &str) -> Attributes {
        request::attributes(u, method, path, Some(q))
    }

    #[test]
    fn forbidden_messages_like_kube_apiserver() {
        let u = user("x", &[]);
        let a = attrs(u.clone(), "GET", "/api/v1/namespaces/default/pods", "");
        assert_eq!(
            forbidden_message(&a, ""),
            r#"pods is forbidden: User "x" cannot list resource "pods" in API group "" in the namespace "default""#
        );
        let a = attrs(u.clone(), "DELETE", "/api/v1/nodes/n1", "");
        assert_eq!(
            forbidden_message(&a, ""),
            r#"nodes "n1" is forbidden: User "x" cannot delete resource "nodes" in API group "" at the cluster scope"#
        );
        let a = attrs(u.clone(), "POST", "/api/v1/namespaces/d/pods/p/exec", "");
        assert_eq!(
            forbidden_message(&a, "r"),
            r#"pods "p" is forbidden: User "x" cannot create resource "pods/exec" in API group "" in the namespace "d": r"#
        );
        let a = attrs(u.clone(), "GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", "");
        assert_eq!(
            forbidden_message(&a, ""),
            r#"clusterroles.rbac.authorization.k8s.io is forbidden: User "x" cannot list resource "clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope"#
        );
        let a = attrs(u, "GET", "/metrics", "");
        assert_eq!(
            forbidden_message(&a, ""),
            r#"forbidden: User "x" cannot get path "/metrics""#
        );
    }

    #[test]
    fn masters_always_allowed_and_chain_order() {
        let ctx = Fixed {
            policy: rbac::Policy::default(),
            paths: vec![],
        };
        let admin = user("kubernetes-admin", &[SYSTEM_MASTERS]);
        assert!(allowed(&attrs(admin, "DELETE", "/api/v1/nodes/n1", ""), &ctx));
        let nobody = user("nobody", &[]);
        let (d, reason) = authorize(&attrs(nobody, "GET", "/api/v1/secrets", ""), &ctx);
        assert_eq!((d, reason.as_str()), (Decision::NoOpinion, ""));
        let node = user("system:node:n1", &[NODES_GROUP]);
        assert_eq!(node_identity(&node), Some("n1"));
        assert_eq!(node_identity(&user("system:node:n1", &[])), None);
        let (d, reason) = authorize(
            &attrs(node, "GET", "/api/v1/namespaces/default/secrets/s", ""),
            &ctx,
        );
        assert_eq!(d, Decision::NoOpinion);
        assert_eq!(reason, "node: no relationship found between node 'n1' and this object");
    }
}
