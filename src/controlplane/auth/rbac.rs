//! RBAC (rbac.authorization.k8s.io/v1): rule matching and the authorizer
//! (plugin/pkg/auth/authorizer/rbac), rule coverage for escalation prevention
//! (pkg/registry/rbac/validation), and ClusterRole aggregation (the clusterrole-aggregation
//! controller's union of the rules of the selected roles). Pure: works on a [`Policy`] snapshot
//! built from the stored objects.
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Attributes, Decision};
use crate::controlplane::apiserver::auth::User;

/// rbacv1.PolicyRule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(default, rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Rule {
    /// A resource rule.
    pub fn res(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Rule {
        Rule {
            verbs: strs(verbs),
            api_groups: strs(groups),
            resources: strs(resources),
            ..Default::default()
        }
    }
    /// A resource rule limited to names.
    pub fn named(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Rule {
        Rule {
            resource_names: strs(names),
            ..Rule::res(verbs, groups, resources)
        }
    }
    /// A non-resource rule.
    pub fn urls(verbs: &[&str], urls: &[&str]) -> Rule {
        Rule {
            verbs: strs(verbs),
            non_resource_urls: strs(urls),
            ..Default::default()
        }
    }

    /// `rbac.RuleAllows`.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !verb_matches(self, &a.verb) {
            return false;
        }
        if a.resource_request {
            let combined = if a.subresource.is_empty() {
                a.resource.clone()
            } else {
                format!("{}/{}", a.resource, a.subresource)
            };
            api_group_matches(self, &a.api_group)
                && resource_matches(self, &combined, &a.subresource)
                && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
        } else {
            self.non_resource_urls.iter().any(|u| url_matches(u, &a.path))
        }
    }

    /// rbacv1helpers.CompactString: `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`.
    pub fn compact(&self) -> String {
        let q = |v: &[String]| {
            let parts: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", parts.join(" "))
        };
        let mut f = Vec::new();
        if !self.api_groups.is_empty() {
            f.push(format!("APIGroups:{}", q(&self.api_groups)));
        }
        if !self.resources.is_empty() {
            f.push(format!("Resources:{}", q(&self.resources)));
        }
        if !self.resource_names.is_empty() {
            f.push(format!("ResourceNames:{}", q(&self.resource_names)));
        }
        if !self.non_resource_urls.is_empty() {
            f.push(format!("NonResourceURLs:{}", q(&self.non_resource_urls)));
        }
        f.push(format!("Verbs:{}", q(&self.verbs)));
        format!("{{{}}}", f.join(", "))
    }
}

fn verb_matches(r: &Rule, verb: &str) -> bool {
    r.verbs.iter().any(|v| v == "*" || v == verb)
}

fn api_group_matches(r: &Rule, group: &str) -> bool {
    r.api_groups.iter().any(|g| g == "*" || g == group)
}

fn resource_matches(r: &Rule, combined: &str, subresource: &str) -> bool {
    r.resources.iter().any(|res| {
        res == "*"
            || res == combined
            || (!subresource.is_empty()
                && res.strip_prefix("*/").is_some_and(|s| s == subresource))
    })
}

/// `rbac.NonResourceURLMatches`: `*`, exact, or a prefix ending in `*`.
fn url_matches(rule: &str, path: &str) -> bool {
    rule == "*"
        || rule == path
        || rule
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

/// rbacv1.Subject.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl Subject {
    /// `appliesToUser`: User by name, Group by membership, ServiceAccount by
    /// `system:serviceaccount:<ns>:<name>` (ns defaults to the binding's).
    pub fn applies_to(&self, user: &User, binding_ns: &str) -> bool {
        match self.kind.as_str() {
            "User" => user.name == self.name,
            "Group" => user.groups.contains(&self.name),
            "ServiceAccount" => {
                let ns = if self.namespace.is_empty() {
                    binding_ns
                } else {
                    &self.namespace
                };
                user.name == format!("system:serviceaccount:{ns}:{}", self.name)
            }
            _ => false,
        }
    }
}

/// rbacv1.RoleRef.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    #[serde(default)]
    pub api_group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

/// A RoleBinding (namespace set) or ClusterRoleBinding (namespace empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    pub namespace: String,
    pub name: String,
    pub role_ref: RoleRef,
    pub subjects: Vec<Subject>,
}

impl Binding {
    pub fn from_value(v: &Value) -> Option<Binding> {
        Some(Binding {
            namespace: v.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").into(),
            name: v.pointer("/metadata/name").and_then(Value::as_str)?.into(),
            role_ref: serde_json::from_value(v.get("roleRef")?.clone()).ok()?,
            subjects: v
                .get("subjects")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default(),
        })
    }
}

/// The rules of a Role/ClusterRole object.
pub fn rules_of(v: &Value) -> Vec<Rule> {
    v.get("rules")
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default()
}

/// A label selector of an aggregationRule (matchLabels + matchExpressions).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<Expression>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Expression {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

impl Selector {
    /// metav1.LabelSelectorAsSelector semantics (an empty selector matches everything).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let have = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => have.is_some_and(|v| e.values.contains(v)),
                    "NotIn" => have.is_none_or(|v| !e.values.contains(v)),
                    "Exists" => have.is_some(),
                    "DoesNotExist" => have.is_none(),
                    _ => false,
                }
            })
    }
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default()
}

/// The selectors of a ClusterRole's aggregationRule (None: not aggregated).
pub fn aggregation_selectors(v: &Value) -> Option<Vec<Selector>> {
    let ar = v.get("aggregationRule")?;
    if ar.is_null() {
        return None;
    }
    Some(
        ar.get("clusterRoleSelectors")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default(),
    )
}

/// Resolve aggregation over the stored ClusterRoles: for each aggregated role, the union (first
/// seen order, no duplicates) of the rules of the other roles its selectors match, iterated until
/// nothing changes (aggregated roles can select aggregated roles: admin selects edit). Returns
/// name -> effective rules for every ClusterRole.
pub fn aggregate(cluster_roles: &[Value]) -> BTreeMap<String, Vec<Rule>> {
    let mut rules: BTreeMap<String, Vec<Rule>> = cluster_roles
        .iter()
        .map(|r| (name_of(r).to_string(), rules_of(r)))
        .collect();
    let aggregated: Vec<(String, Vec<Selector>)> = cluster_roles
        .iter()
        .filter_map(|r| Some((name_of(r).to_string(), aggregation_selectors(r)?)))
        .collect();
    let mut labels: Vec<(String, BTreeMap<String, String>)> = cluster_roles
        .iter()
        .map(|r| (name_of(r).to_string(), labels_of(r)))
        .collect();
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    for _ in 0..=aggregated.len() {
        let mut changed = false;
        for (name, selectors) in &aggregated {
            let mut union: Vec<Rule> = Vec::new();
            // Sorted by name, like the controller's lister order.
            for (other, l) in &labels {
                if other == name || !selectors.iter().any(|s| s.matches(l)) {
                    continue;
                }
                for r in rules.get(other).into_iter().flatten() {
                    if !union.contains(r) {
                        union.push(r.clone());
                    }
                }
            }
            if rules.get(name) != Some(&union) {
                rules.insert(name.clone(), union);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    rules
}

fn name_of(v: &Value) -> &str {
    v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

/// Everything the RBAC authorizer reads.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// ClusterRole name -> effective (aggregated) rules.
    pub cluster_roles: BTreeMap<String, Vec<Rule>>,
    /// (namespace, Role name) -> rules.
    pub roles: HashMap<(String, String), Vec<Rule>>,
    pub cluster_role_bindings: Vec<Binding>,
    /// RoleBindings of every namespace.
    pub role_bindings: Vec<Binding>,
}

impl Policy {
    /// Build the snapshot from the stored objects.
    pub fn from_objects(
        cluster_roles: &[Value],
        roles: &[Value],
        cluster_role_bindings: &[Value],
        role_bindings: &[Value],
    ) -> Policy {
        Policy {
            cluster_roles: aggregate(cluster_roles),
            roles: roles
                .iter()
                .map(|r| {
                    let ns = r.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
                    ((ns.to_string(), name_of(r).to_string()), rules_of(r))
                })
                .collect(),
            cluster_role_bindings: cluster_role_bindings.iter().filter_map(Binding::from_value).collect(),
            role_bindings: role_bindings.iter().filter_map(Binding::from_value).collect(),
        }
    }

    /// The rules a roleRef points at (in `ns` for a Role), or kube's NotFound message.
    pub fn role_rules(&self, r: &RoleRef, ns: &str) -> Result<&[Rule], String> {
        match r.kind.as_str() {
            "ClusterRole" => self
                .cluster_roles
                .get(&r.name)
                .map(Vec::as_slice)
                .ok_or_else(|| format!("clusterrole.rbac.authorization.k8s.io {:?} not found", r.name)),
            "Role" => self
                .roles
                .get(&(ns.to_string(), r.name.clone()))
                .map(Vec::as_slice)
                .ok_or_else(|| format!("role.rbac.authorization.k8s.io {:?} not found", r.name)),
            other => Err(format!("unsupported role reference kind: {other:?}")),
        }
    }

    /// Visit the rules that apply to `user` in `namespace` (cluster bindings first, then the
    /// namespace's bindings); stop when `f` returns true and describe where that rule came from
    /// (`ClusterRoleBinding "x" of ClusterRole "y" to Group "z"`). Also returns the resolution
    /// errors.
    fn visit(&self, user: &User, namespace: &str, mut f: impl FnMut(&Rule) -> bool) -> (Option<String>, Vec<String>) {
        let mut errors = Vec::new();
        let describe = |b: &Binding, s: &Subject| {
            let subject = match s.kind.as_str() {
                "ServiceAccount" => {
                    let ns = if s.namespace.is_empty() { &b.namespace } else { &s.namespace };
                    format!("ServiceAccount {:?}", format!("{}/{ns}", s.name))
                }
                k => format!("{k} {:?}", s.name),
            };
            if b.namespace.is_empty() {
                format!("ClusterRoleBinding {:?} of {} {:?} to {subject}", b.name, b.role_ref.kind, b.role_ref.name)
            } else {
                format!(
                    "RoleBinding {:?} of {} {:?} to {subject}",
                    format!("{}/{}", b.name, b.namespace),
                    b.role_ref.kind,
                    b.role_ref.name
                )
            }
        };
        let cluster = self.cluster_role_bindings.iter().map(|b| (b, ""));
        let local = self
            .role_bindings
            .iter()
            .filter(|b| !namespace.is_empty() && b.namespace == namespace)
            .map(|b| (b, namespace));
        for (b, ns) in cluster.chain(local) {
            let Some(s) = b.subjects.iter().find(|s| s.applies_to(user, ns)) else {
                continue;
            };
            match self.role_rules(&b.role_ref, ns) {
                Ok(rules) => {
                    if rules.iter().any(&mut f) {
                        return (Some(describe(b, s)), errors);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        (None, errors)
    }

    /// All rules that apply to `user` in `namespace` (`RulesFor`), and resolution errors.
    pub fn rules_for(&self, user: &User, namespace: &str) -> (Vec<Rule>, Vec<String>) {
        let mut out = Vec::new();
        let (_, errors) = self.visit(user, namespace, |r| {
            out.push(r.clone());
            false
        });
        (out, errors)
    }
}

/// `utilerrors.NewAggregate(errs).Error()`.
fn aggregate_errors(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// The RBAC authorizer: Allow (with `RBAC: allowed by <binding>`) if a rule applying to the
/// user allows the request, else
/// NoOpinion with `RBAC: <resolution errors>` as the reason (empty when there are none).
pub fn authorize(a: &Attributes, p: &Policy) -> (Decision, String) {
    let (allowed_by, errors) = p.visit(&a.user, &a.namespace, |r| r.allows(a));
    if let Some(source) = allowed_by {
        return (Decision::Allow, format!("RBAC: allowed by {source}"));
    }
    let reason = if errors.is_empty() {
        String::new()
    } else {
        format!("RBAC: {}", aggregate_errors(&errors))
    };
    (Decision::NoOpinion, reason)
}

/// Split rules into atomic ones (one verb, group, resource, name / URL), like `BreakdownRule`.
fn breakdown(r: &Rule) -> Vec<Rule> {
    let mut out = Vec::new();
    for g in &r.api_groups {
        for res in &r.resources {
            for v in &r.verbs {
                if r.resource_names.is_empty() {
                    out.push(Rule::res(&[v], &[g], &[res]));
                } else {
                    for n in &r.resource_names {
                        out.push(Rule::named(&[v], &[g], &[res], &[n]));
                    }
                }
            }
        }
    }
    for u in &r.non_resource_urls {
        for v in &r.verbs {
            out.push(Rule::urls(&[v], &[u]));
        }
    }
    out
}

fn has_all(set: &[String], want: &[String]) -> bool {
    want.iter().all(|w| set.contains(w))
}

fn resource_covers_all(set: &[String], covers: &[String]) -> bool {
    if set.iter().any(|s| s == "*") || has_all(set, covers) {
        return true;
    }
    covers.iter().all(|path| {
        set.contains(path)
            || path
                .split_once('/')
                .is_some_and(|(_, sub)| set.contains(&format!("*/{sub}")))
    })
}

fn url_covers(set: &[String], url: &str) -> bool {
    set.iter().any(|s| url_matches(s, url))
}

/// `ruleCovers`: does `owner` cover all of `sub`?
fn rule_covers(owner: &Rule, sub: &Rule) -> bool {
    let verbs = owner.verbs.iter().any(|v| v == "*") || has_all(&owner.verbs, &sub.verbs);
    let groups = owner.api_groups.iter().any(|g| g == "*") || has_all(&owner.api_groups, &sub.api_groups);
    let resources = resource_covers_all(&owner.resources, &sub.resources);
    let urls = sub.non_resource_urls.iter().all(|u| url_covers(&owner.non_resource_urls, u));
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs && groups && resources && urls && names
}

/// `validation.Covers`: whether `owner` covers every rule of `servant`; the uncovered atomic
/// rules otherwise.
pub fn covers(owner: &[Rule], servant: &[Rule]) -> Result<(), Vec<Rule>> {
    let missing: Vec<Rule> = servant
        .iter()
        .flat_map(breakdown)
        .filter(|s| !owner.iter().any(|o| rule_covers(o, s)))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

/// The message of an escalation attempt (`ConfirmNoEscalation`).
pub fn escalation_message(user: &User, missing: &[Rule], errors: &[String]) -> String {
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let rules: Vec<String> = missing.iter().map(Rule::compact).collect();
    let mut msg = format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        rules.join("\n")
    );
    if !errors.is_empty() {
        msg.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
    }
    msg
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controlplane::auth::request::attributes;
    use crate::controlplane::auth::testutil::user;

    fn req(u: &User, method: &str, path: &str) -> Attributes {
        attributes(u.clone(), method, path, None)
    }

    #[test]
    fn rule_matching() {
        let u = user("x", &[]);
        let r = Rule::res(&["get", "list"], &[""], &["pods", "pods/log"]);
        assert!(r.allows(&req(&u, "GET", "/api/v1/namespaces/d/pods")));
        assert!(r.allows(&req(&u, "GET", "/api/v1/namespaces/d/pods/p/log")));
        assert!(!r.allows(&req(&u, "POST", "/api/v1/namespaces/d/pods/p/exec")), "subresources are separate");
        assert!(!r.allows(&req(&u, "DELETE", "/api/v1/namespaces/d/pods/p")));
        assert!(!r.allows(&req(&u, "GET", "/apis/apps/v1/namespaces/d/pods")), "group must match");
        let star = Rule::res(&["*"], &["*"], &["*"]);
        assert!(star.allows(&req(&u, "DELETE", "/apis/apps/v1/namespaces/d/deployments/x")));
        assert!(!star.allows(&req(&u, "GET", "/metrics")), "resource rules do not cover paths");
        let sub = Rule::res(&["get"], &[""], &["*/status"]);
        assert!(sub.allows(&req(&u, "GET", "/api/v1/nodes/n/status")));
        assert!(!sub.allows(&req(&u, "GET", "/api/v1/nodes/n")));
        let named = Rule::named(&["get"], &[""], &["configmaps"], &["a"]);
        assert!(named.allows(&req(&u, "GET", "/api/v1/namespaces/d/configmaps/a")));
        assert!(!named.allows(&req(&u, "GET", "/api/v1/namespaces/d/configmaps/b")));
        assert!(!named.allows(&req(&u, "GET", "/api/v1/namespaces/d/configmaps")), "list has no name");
        let urls = Rule::urls(&["get"], &["/healthz", "/apis/*"]);
        assert!(urls.allows(&req(&u, "GET", "/healthz")));
        assert!(urls.allows(&req(&u, "GET", "/apis/apps/v1")));
        assert!(!urls.allows(&req(&u, "GET", "/api")));
        assert!(!urls.allows(&req(&u, "POST", "/healthz")));
        assert!(Rule::urls(&["*"], &["*"]).allows(&req(&u, "PUT", "/anything")));
    }

    fn policy() -> Policy {
        let crs = vec![
            json!({"metadata": {"name": "view", "labels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
                   "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}}),
            json!({"metadata": {"name": "edit"},
                   "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}}]}}),
            json!({"metadata": {"name": "system:aggregate-to-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                   "rules": [{"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods"]}]}),
            json!({"metadata": {"name": "system:aggregate-to-edit", "labels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
                   "rules": [{"verbs": ["create", "delete"], "apiGroups": [""], "resources": ["pods"]}]}),
            json!({"metadata": {"name": "secret-reader"},
                   "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]}),
        ];
        let roles = vec![json!({"metadata": {"name": "cm", "namespace": "team"},
                                "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}]})];
        let crbs = vec![json!({"metadata": {"name": "readers"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "secret-reader"},
                               "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "readers"}]}),
                        json!({"metadata": {"name": "dangling"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gone"},
                               "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "dangler"}]})];
        let rbs = vec![
            json!({"metadata": {"name": "v", "namespace": "team"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                   "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "viewer"},
                                {"kind": "ServiceAccount", "name": "bot"}]}),
            json!({"metadata": {"name": "cm", "namespace": "team"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm"},
                   "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "viewer"}]}),
        ];
        Policy::from_objects(&crs, &roles, &crbs, &rbs)
    }

    #[test]
    fn aggregation_is_transitive() {
        let p = policy();
        assert_eq!(p.cluster_roles["view"], vec![Rule::res(&["get", "list", "watch"], &[""], &["pods"])]);
        assert_eq!(
            p.cluster_roles["edit"],
            vec![
                Rule::res(&["create", "delete"], &[""], &["pods"]),
                Rule::res(&["get", "list", "watch"], &[""], &["pods"]),
            ],
            "edit selects view (aggregated) and aggregate-to-edit"
        );
        let s: Selector = serde_json::from_value(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]}, {"key": "b", "operator": "DoesNotExist"}]})).unwrap();
        assert!(s.matches(&BTreeMap::from([("a".into(), "x".into())])));
        assert!(!s.matches(&BTreeMap::from([("a".into(), "x".into()), ("b".into(), "".into())])));
    }

    #[test]
    fn bindings_and_subjects() {
        let p = policy();
        let viewer = user("viewer", &[]);
        let get_pods = |u: &User, ns: &str| authorize(&req(u, "GET", &format!("/api/v1/namespaces/{ns}/pods")), &p).0;
        assert_eq!(get_pods(&viewer, "team"), Decision::Allow);
        assert_eq!(get_pods(&viewer, "other"), Decision::NoOpinion, "a RoleBinding grants in its namespace only");
        assert_eq!(authorize(&req(&viewer, "GET", "/api/v1/pods"), &p).0, Decision::NoOpinion);
        assert_eq!(authorize(&req(&viewer, "GET", "/api/v1/namespaces/team/configmaps/x"), &p).0, Decision::Allow);
        assert_eq!(authorize(&req(&viewer, "DELETE", "/api/v1/namespaces/team/pods/x"), &p).0, Decision::NoOpinion);
        let bot = user("system:serviceaccount:team:bot", &["system:serviceaccounts"]);
        assert_eq!(get_pods(&bot, "team"), Decision::Allow, "SA subject defaults to the binding's namespace");
        assert_eq!(get_pods(&user("system:serviceaccount:other:bot", &[]), "team"), Decision::NoOpinion);
        let reader = user("r", &["readers"]);
        assert_eq!(
            authorize(&req(&reader, "GET", "/api/v1/namespaces/any/secrets/s"), &p),
            (Decision::Allow, r#"RBAC: allowed by ClusterRoleBinding "readers" of ClusterRole "secret-reader" to Group "readers""#.into())
        );
        assert_eq!(
            authorize(&req(&bot, "GET", "/api/v1/namespaces/team/pods"), &p).1,
            r#"RBAC: allowed by RoleBinding "v/team" of ClusterRole "view" to ServiceAccount "bot/team""#
        );
        let (d, reason) = authorize(&req(&user("dangler", &[]), "GET", "/api/v1/pods"), &p);
        assert_eq!(d, Decision::NoOpinion);
        assert_eq!(reason, r#"RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found"#);
        let (rules, _) = p.rules_for(&viewer, "team");
        assert_eq!(rules.len(), 2);
    }

    #[test]
    fn coverage_for_escalation_checks() {
        let owner = vec![
            Rule::res(&["get", "list"], &[""], &["pods", "*/status"]),
            Rule::named(&["get"], &[""], &["configmaps"], &["a"]),
            Rule::urls(&["get"], &["/apis/*"]),
        ];
        assert!(covers(&owner, &[Rule::res(&["get"], &[""], &["pods"])]).is_ok());
        assert!(covers(&owner, &[Rule::res(&["list"], &[""], &["nodes/status"])]).is_ok());
        assert!(covers(&owner, &[Rule::named(&["get"], &[""], &["configmaps"], &["a"])]).is_ok());
        assert!(covers(&owner, &[Rule::res(&["get"], &[""], &["configmaps"])]).is_err(), "names do not cover all");
        assert!(covers(&owner, &[Rule::urls(&["get"], &["/apis/apps"])]).is_ok());
        let missing = covers(&owner, &[Rule::res(&["get", "delete"], &["", "apps"], &["pods"])]).unwrap_err();
        assert_eq!(missing.len(), 3);
        assert_eq!(missing[0].compact(), r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#);
        let all = vec![Rule::res(&["*"], &["*"], &["*"]), Rule::urls(&["*"], &["*"])];
        assert!(covers(&all, &owner).is_ok());
        let msg = escalation_message(&user("bob", &[]), &missing[..1], &[]);
        assert_eq!(
            msg,
            "user \"bob\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}"
        );
    }
}
