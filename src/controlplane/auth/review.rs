//! authorization.k8s.io/v1 SubjectAccessReview, LocalSubjectAccessReview,
//! SelfSubjectAccessReview, SelfSubjectRulesReview and authentication.k8s.io/v1
//! SelfSubjectReview: create-only, never stored. Pure: request spec -> attributes, answers.
use serde_json::{json, Value};

use super::{node_identity, Attributes, Context, Decision, SYSTEM_MASTERS};
use crate::controlplane::apiserver::auth::User;

/// Which review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SubjectAccessReview,
    LocalSubjectAccessReview,
    SelfSubjectAccessReview,
    SelfSubjectRulesReview,
    SelfSubjectReview,
}

impl Kind {
    /// The review of (group, plural).
    pub fn of(group: &str, plural: &str) -> Option<Kind> {
        Some(match (group, plural) {
            ("authorization.k8s.io", "subjectaccessreviews") => Kind::SubjectAccessReview,
            ("authorization.k8s.io", "localsubjectaccessreviews") => Kind::LocalSubjectAccessReview,
            ("authorization.k8s.io", "selfsubjectaccessreviews") => Kind::SelfSubjectAccessReview,
            ("authorization.k8s.io", "selfsubjectrulesreviews") => Kind::SelfSubjectRulesReview,
            ("authentication.k8s.io", "selfsubjectreviews") => Kind::SelfSubjectReview,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::SubjectAccessReview => "SubjectAccessReview",
            Kind::LocalSubjectAccessReview => "LocalSubjectAccessReview",
            Kind::SelfSubjectAccessReview => "SelfSubjectAccessReview",
            Kind::SelfSubjectRulesReview => "SelfSubjectRulesReview",
            Kind::SelfSubjectReview => "SelfSubjectReview",
        }
    }
}

/// A review request that cannot be answered: (field path, message) for a 422, or a 400 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    Field { field: String, value: Value, detail: String },
    BadRequest(String),
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The user a (Local)SubjectAccessReview asks about.
pub fn spec_user(spec: &Value) -> User {
    User {
        name: s(spec, "user").to_string(),
        groups: spec
            .get("groups")
            .and_then(Value::as_array)
            .map(|g| g.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default(),
    }
}

/// The attributes of an access review's spec for `user` (`authorizationutil.ResourceAttributesFrom`
/// / `NonResourceAttributesFrom`), validated like the review's REST strategy. `url_namespace` is
/// the LocalSubjectAccessReview's namespace.
pub fn access_attributes(kind: Kind, spec: &Value, user: User, url_namespace: &str) -> Result<Attributes, Invalid> {
    let ra = spec.get("resourceAttributes").filter(|v| v.is_object());
    let nra = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    let field = |f: &str, value: Value, d: &str| Invalid::Field { field: f.into(), value, detail: d.into() };
    match (ra, nra) {
        (Some(_), Some(_)) => {
            return Err(field("spec.nonResourceAttributes", json!(nra), "cannot be specified in combination with resourceAttributes"))
        }
        (None, None) => return Err(field("spec.resourceAttributes", Value::Null, "exactly one of nonResourceAttributes or resourceAttributes must be specified")),
        _ => {}
    }
    if kind == Kind::SubjectAccessReview && user.name.is_empty() && user.groups.is_empty() {
        return Err(field("spec.user", json!(""), "at least one of user or group must be specified"));
    }
    if kind == Kind::LocalSubjectAccessReview {
        if nra.is_some() {
            return Err(field("spec.nonResourceAttributes", json!(nra), "disallowed on this kind of request"));
        }
        let ns = ra.map(|r| s(r, "namespace")).unwrap_or("");
        if ns != url_namespace {
            return Err(field("spec.resourceAttributes.namespace", json!(ns), "must match metadata.namespace"));
        }
    }
    if let Some(r) = ra {
        let mut a = Attributes::resource(user, s(r, "verb"), s(r, "group"), s(r, "resource"), s(r, "subresource"), s(r, "namespace"), s(r, "name"));
        a.api_version = s(r, "version").to_string();
        if let Some(raw) = r.pointer("/fieldSelector/rawSelector").and_then(Value::as_str) {
            a.field_selector = super::request::parse_field_selector(raw).unwrap_or_default();
        }
        for req in r.pointer("/fieldSelector/requirements").and_then(Value::as_array).into_iter().flatten() {
            let op = s(req, "operator");
            let vals: Vec<&str> = req.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            if (op == "In" || op == "NotIn") && vals.len() == 1 {
                a.field_selector.push(super::request::FieldRequirement {
                    field: s(req, "key").into(),
                    equals: op == "In",
                    value: vals[0].into(),
                });
            }
        }
        Ok(a)
    } else {
        let n = nra.expect("checked");
        Ok(Attributes::non_resource(user, s(n, "verb"), s(n, "path")))
    }
}

/// The status of an access review.
pub fn access_status(decision: Decision, reason: &str) -> Value {
    let mut st = json!({"allowed": decision == Decision::Allow});
    if decision == Decision::Deny {
        st["denied"] = true.into();
    }
    if !reason.is_empty() {
        st["reason"] = reason.into();
    }
    st
}

/// The status of a SelfSubjectRulesReview for `user` in `namespace` (union of what the
/// privileged-group, Node and RBAC rule resolvers report).
pub fn rules_status(user: &User, namespace: &str, ctx: &dyn Context) -> Value {
    let mut resource_rules: Vec<Value> = Vec::new();
    let mut non_resource_rules: Vec<Value> = Vec::new();
    let mut incomplete = false;
    let mut errors: Vec<String> = Vec::new();
    if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
        resource_rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        non_resource_rules.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    }
    if node_identity(user).is_some() {
        incomplete = true;
        errors.push("node authorizer does not support user rule resolution".into());
    }
    let (rules, errs) = ctx.policy().rules_for(user, namespace);
    errors.extend(errs);
    if !errors.is_empty() {
        incomplete = true;
    }
    for r in rules {
        if !r.non_resource_urls.is_empty() {
            non_resource_rules.push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
        if !r.resources.is_empty() {
            let mut v = json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            resource_rules.push(v);
        }
    }
    let mut st = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": incomplete});
    if !errors.is_empty() {
        st["evaluationError"] = if errors.len() == 1 { errors[0].clone() } else { format!("[{}]", errors.join(", ")) }.into();
    }
    st
}

/// The answer to a review `body` (already decoded) of `requester`: the object with its status.
pub fn answer(kind: Kind, mut body: Value, requester: &User, url_namespace: &str, ctx: &dyn Context) -> Result<Value, Invalid> {
    let api_version = if kind == Kind::SelfSubjectReview { "authentication.k8s.io/v1" } else { "authorization.k8s.io/v1" };
    if !body.is_object() {
        return Err(Invalid::BadRequest("the object provided is not a JSON object".into()));
    }
    if let Some(k) = body.get("kind").and_then(Value::as_str).filter(|k| !k.is_empty()) {
        if k != kind.name() {
            return Err(Invalid::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.name()
            )));
        }
    }
    body["kind"] = kind.name().into();
    body["apiVersion"] = api_version.into();
    if !body.get("metadata").is_some_and(Value::is_object) {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = Value::Null;
    if kind == Kind::LocalSubjectAccessReview {
        body["metadata"]["namespace"] = url_namespace.into();
    }
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match kind {
        Kind::SelfSubjectReview => {
            let mut ui = json!({"username": requester.name, "groups": requester.groups});
            if requester.groups.is_empty() {
                ui.as_object_mut().expect("object").remove("groups");
            }
            json!({"userInfo": ui})
        }
        Kind::SelfSubjectRulesReview => rules_status(requester, s(&spec, "namespace"), ctx),
        Kind::SelfSubjectAccessReview => {
            let a = access_attributes(kind, &spec, requester.clone(), url_namespace)?;
            let (d, reason) = super::authorize(&a, ctx);
            access_status(d, &reason)
        }
        Kind::SubjectAccessReview | Kind::LocalSubjectAccessReview => {
            let a = access_attributes(kind, &spec, spec_user(&spec), url_namespace)?;
            let (d, reason) = super::authorize(&a, ctx);
            access_status(d, &reason)
        }
    };
    body["status"] = status;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controlplane::auth::bootstrap;
    use crate::controlplane::auth::rbac::Policy;
    use crate::controlplane::auth::testutil::{user, Fixed};

    fn ctx() -> Fixed {
        let (roles, rbs) = bootstrap::namespaced();
        Fixed {
            policy: Policy::from_objects(&bootstrap::cluster_roles(), &roles, &bootstrap::cluster_role_bindings(), &rbs),
            paths: vec![],
        }
    }

    #[test]
    fn self_subject_access_review() {
        let me = user("nobody", &[]);
        let body = json!({"kind": "SelfSubjectAccessReview", "spec": {"resourceAttributes": {"verb": "list", "resource": "pods", "namespace": "default"}}});
        let out = answer(Kind::SelfSubjectAccessReview, body, &me, "", &ctx()).unwrap();
        assert_eq!(out["status"], json!({"allowed": false}));
        assert_eq!(out["apiVersion"], "authorization.k8s.io/v1");
        let admin = user("kubernetes-admin", &["system:masters"]);
        let body = json!({"spec": {"nonResourceAttributes": {"verb": "get", "path": "/metrics"}}});
        assert_eq!(answer(Kind::SelfSubjectAccessReview, body, &admin, "", &ctx()).unwrap()["status"]["allowed"], true);
        let body = json!({"spec": {"resourceAttributes": {"verb": "create", "group": "authorization.k8s.io", "resource": "selfsubjectaccessreviews"}}});
        let st = &answer(Kind::SelfSubjectAccessReview, body, &me, "", &ctx()).unwrap()["status"];
        assert_eq!(st["allowed"], true);
        assert_eq!(st["reason"], "RBAC: allowed by ClusterRoleBinding \"system:basic-user\" of ClusterRole \"system:basic-user\" to Group \"system:authenticated\"");
    }

    #[test]
    fn subject_access_review_validation() {
        let me = user("x", &[]);
        let sar = json!({"spec": {"resourceAttributes": {"verb": "get", "resource": "nodes", "subresource": "proxy", "name": "n1"},
                                 "user": "kube-apiserver-kubelet-client", "groups": ["system:masters", "system:authenticated"]}});
        assert_eq!(answer(Kind::SubjectAccessReview, sar, &me, "", &ctx()).unwrap()["status"]["allowed"], true);
        let nouser = json!({"spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}});
        assert!(matches!(answer(Kind::SubjectAccessReview, nouser, &me, "", &ctx()), Err(Invalid::Field { field, .. }) if field == "spec.user"));
        let both = json!({"spec": {"user": "a", "resourceAttributes": {}, "nonResourceAttributes": {}}});
        assert!(answer(Kind::SubjectAccessReview, both, &me, "", &ctx()).is_err());
        let local = json!({"spec": {"user": "a", "resourceAttributes": {"namespace": "other", "verb": "get", "resource": "pods"}}});
        assert!(matches!(answer(Kind::LocalSubjectAccessReview, local, &me, "team", &ctx()), Err(Invalid::Field { field, .. }) if field == "spec.resourceAttributes.namespace"));
        assert!(answer(Kind::SubjectAccessReview, json!({"kind": "Pod"}), &me, "", &ctx()).is_err());
    }

    #[test]
    fn rules_review_and_whoami() {
        let me = user("nobody", &[]);
        let out = answer(Kind::SelfSubjectRulesReview, json!({"spec": {"namespace": "default"}}), &me, "", &ctx()).unwrap();
        let st = &out["status"];
        assert_eq!(st["incomplete"], false);
        assert!(st["resourceRules"].as_array().unwrap().iter().any(|r| r["resources"][0] == "selfsubjectaccessreviews"));
        assert!(st["nonResourceRules"].as_array().unwrap().iter().any(|r| r["nonResourceURLs"].as_array().unwrap().contains(&json!("/api"))));
        let node = user("system:node:n1", &["system:nodes"]);
        let st = rules_status(&node, "default", &ctx());
        assert_eq!(st["incomplete"], true);
        let who = answer(Kind::SelfSubjectReview, json!({}), &node, "", &ctx()).unwrap();
        assert_eq!(who["status"]["userInfo"], json!({"username": "system:node:n1", "groups": ["system:nodes", "system:authenticated"]}));
        assert_eq!(who["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(Kind::of("authorization.k8s.io", "selfsubjectrulesreviews"), Some(Kind::SelfSubjectRulesReview));
    }
}
