//! Request attributes as kube-apiserver's `RequestInfoFactory.NewRequestInfo` computes them
//! (staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go). Pure.
//!
//! - `/api/v1/...` and `/apis/<group>/<version>/...` with at least a resource are resource
//!   requests; everything else (`/api`, `/api/v1`, `/apis/g/v`, `/version`, `/openapi/v2`) is a
//!   non-resource request whose verb is the lower-case HTTP method.
//! - POST create, GET/HEAD get, PUT update, PATCH patch, DELETE delete; a GET without a name is
//!   list, or watch with `?watch=true`; a DELETE without a name is deletecollection; a leading
//!   `watch/` or `proxy/` path segment is the verb itself. A list/watch with the field selector
//!   `metadata.name=<n>` carries that name.
//! - `namespaces/<ns>/<resource>/...` sets the namespace; `namespaces/<ns>` itself is the
//!   resource `namespaces` named `<ns>` in namespace `<ns>`; `status` and `finalize` are its
//!   subresources.
//! - exec/attach/portforward are subresources with the HTTP method's verb (POST: create); log is
//!   `get pods/log`.
use crate::controlplane::apiserver::auth::User;

/// A field selector requirement (`spec.nodeName=n1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub equals: bool,
    pub value: String,
}

/// authorizer.Attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub user: User,
    pub verb: String,
    pub resource_request: bool,
    pub path: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub field_selector: Vec<FieldRequirement>,
}

impl Attributes {
    /// A resource request built from its parts (SubjectAccessReview, kubelet API, tests).
    #[allow(clippy::too_many_arguments)]
    pub fn resource(
        user: User,
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Attributes {
        Attributes {
            user,
            verb: verb.into(),
            resource_request: true,
            path: String::new(),
            api_group: group.into(),
            api_version: String::new(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
            field_selector: vec![],
        }
    }

    /// A non-resource request.
    pub fn non_resource(user: User, verb: &str, path: &str) -> Attributes {
        Attributes {
            user,
            verb: verb.into(),
            resource_request: false,
            path: path.into(),
            api_group: String::new(),
            api_version: String::new(),
            resource: String::new(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            field_selector: vec![],
        }
    }
}

/// Parse a field selector into requirements (`a=b`, `a==b`, `a!=b`); None if it does not parse.
pub fn parse_field_selector(s: &str) -> Option<Vec<FieldRequirement>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (field, equals, value) = if let Some((f, v)) = part.split_once("!=") {
            (f, false, v)
        } else if let Some((f, v)) = part.split_once("==") {
            (f, true, v)
        } else if let Some((f, v)) = part.split_once('=') {
            (f, true, v)
        } else {
            return None;
        };
        out.push(FieldRequirement {
            field: field.trim().into(),
            equals,
            value: value.trim().into(),
        });
    }
    Some(out)
}

/// `path.IsValidPathSegmentName`.
fn valid_path_segment(name: &str) -> bool {
    !(name == "." || name == ".." || name.contains('/') || name.contains('%'))
}

/// Go's `strconv.ParseBool` truthiness for the watch parameter (an unparsable value counts as
/// true, like kube's fallback).
fn truthy(v: &str) -> bool {
    !matches!(v.to_ascii_lowercase().as_str(), "false" | "0" | "f")
}

/// The attributes of an HTTP request of `user`.
pub fn attributes(user: User, method: &str, path: &str, query: Option<&str>) -> Attributes {
    let mut a = Attributes::non_resource(user, &method.to_ascii_lowercase(), path);
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    if parts.len() < 3 || !(parts[0] == "api" || parts[0] == "apis") {
        return a;
    }
    let mut cur = &parts[1..];
    if parts[0] == "apis" {
        if cur.len() < 3 {
            return a;
        }
        a.api_group = cur[0].into();
        cur = &cur[1..];
    }
    a.resource_request = true;
    a.api_version = cur[0].into();
    cur = &cur[1..];
    if cur[0] == "proxy" || cur[0] == "watch" {
        if cur.len() < 2 {
            // kube: "unable to determine kind and namespace from url"; treat as non-resource.
            a.resource_request = false;
            return a;
        }
        a.verb = cur[0].into();
        cur = &cur[1..];
    } else {
        a.verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .into();
    }
    if cur[0] == "namespaces" && cur.len() > 1 {
        a.namespace = cur[1].into();
        if cur.len() > 2 && !["status", "finalize"].contains(&cur[2]) {
            cur = &cur[2..];
        }
    }
    if cur.len() >= 3 && a.verb != "proxy" {
        a.subresource = cur[2].into();
    }
    if cur.len() >= 2 {
        a.name = cur[1].into();
    }
    if !cur.is_empty() {
        a.resource = cur[0].into();
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if let Some(fs) = get("fieldSelector") {
        a.field_selector = parse_field_selector(fs).unwrap_or_default();
    }
    if a.name.is_empty() && a.verb == "get" {
        a.verb = if get("watch").is_some_and(truthy) { "watch" } else { "list" }.into();
        if let Some(n) = a
            .field_selector
            .iter()
            .find(|r| r.field == "metadata.name" && r.equals)
            .map(|r| r.value.clone())
        {
            if valid_path_segment(&n) {
                a.name = n;
            }
        }
    }
    if a.name.is_empty() && a.verb == "delete" {
        a.verb = "deletecollection".into();
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u() -> User {
        User {
            name: "u".into(),
            groups: vec![],
        }
    }

    fn a(method: &str, path: &str, q: &str) -> (String, bool, String, String, String, String, String) {
        let x = attributes(u(), method, path, Some(q));
        (
            x.verb,
            x.resource_request,
            x.api_group,
            x.resource,
            x.subresource,
            x.namespace,
            x.name,
        )
    }

    fn r(v: &str, g: &str, res: &str, sub: &str, ns: &str, n: &str) -> (String, bool, String, String, String, String, String) {
        (v.into(), true, g.into(), res.into(), sub.into(), ns.into(), n.into())
    }

    #[test]
    fn verbs_and_parts_like_request_info() {
        assert_eq!(a("GET", "/api/v1/namespaces/default/pods", ""), r("list", "", "pods", "", "default", ""));
        assert_eq!(a("GET", "/api/v1/pods", "watch=true"), r("watch", "", "pods", "", "", ""));
        assert_eq!(a("GET", "/api/v1/pods", "watch=false"), r("list", "", "pods", "", "", ""));
        assert_eq!(a("GET", "/api/v1/watch/pods", ""), r("watch", "", "pods", "", "", ""));
        assert_eq!(
            a("GET", "/api/v1/namespaces/d/pods", "fieldSelector=metadata.name%3Dweb&watch=1"),
            r("watch", "", "pods", "", "d", "web")
        );
        assert_eq!(a("GET", "/api/v1/namespaces/d/pods/web", ""), r("get", "", "pods", "", "d", "web"));
        assert_eq!(a("HEAD", "/api/v1/namespaces/d/pods/web", ""), r("get", "", "pods", "", "d", "web"));
        assert_eq!(a("POST", "/api/v1/namespaces/d/pods", ""), r("create", "", "pods", "", "d", ""));
        assert_eq!(a("PUT", "/api/v1/namespaces/d/pods/web/status", ""), r("update", "", "pods", "status", "d", "web"));
        assert_eq!(a("PATCH", "/api/v1/nodes/n1/status", ""), r("patch", "", "nodes", "status", "", "n1"));
        assert_eq!(a("DELETE", "/api/v1/nodes/n1", ""), r("delete", "", "nodes", "", "", "n1"));
        assert_eq!(a("DELETE", "/api/v1/namespaces/d/pods", ""), r("deletecollection", "", "pods", "", "d", ""));
        assert_eq!(a("POST", "/api/v1/namespaces/d/pods/web/exec", "command=ls"), r("create", "", "pods", "exec", "d", "web"));
        assert_eq!(a("GET", "/api/v1/namespaces/d/pods/web/exec", ""), r("get", "", "pods", "exec", "d", "web"));
        assert_eq!(a("POST", "/api/v1/namespaces/d/pods/web/portforward", ""), r("create", "", "pods", "portforward", "d", "web"));
        assert_eq!(a("GET", "/api/v1/namespaces/d/pods/web/log", ""), r("get", "", "pods", "log", "d", "web"));
        assert_eq!(a("GET", "/api/v1/namespaces/d/pods/web/proxy/x/y", ""), r("get", "", "pods", "proxy", "d", "web"));
        assert_eq!(a("GET", "/api/v1/proxy/namespaces/d/pods/web/x", ""), r("proxy", "", "pods", "", "d", "web"));
        assert_eq!(a("GET", "/api/v1/namespaces/kube-system", ""), r("get", "", "namespaces", "", "kube-system", "kube-system"));
        assert_eq!(a("PUT", "/api/v1/namespaces/x/finalize", ""), r("update", "", "namespaces", "finalize", "x", "x"));
        assert_eq!(a("GET", "/api/v1/namespaces", ""), r("list", "", "namespaces", "", "", ""));
        assert_eq!(
            a("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", ""),
            r("get", "coordination.k8s.io", "leases", "", "kube-node-lease", "n1")
        );
        assert_eq!(
            a("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", ""),
            r("create", "authorization.k8s.io", "selfsubjectaccessreviews", "", "", "")
        );
    }

    #[test]
    fn non_resource_requests() {
        for p in ["/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/version", "/openapi/v2", "/"] {
            let x = attributes(u(), "GET", p, None);
            assert!(!x.resource_request, "{p}");
            assert_eq!((x.verb.as_str(), x.path.as_str()), ("get", p));
        }
        assert_eq!(attributes(u(), "POST", "/logs", None).verb, "post");
    }

    #[test]
    fn field_selectors() {
        let x = attributes(u(), "GET", "/api/v1/pods", Some("fieldSelector=spec.nodeName%3Dn1"));
        assert_eq!(
            x.field_selector,
            vec![FieldRequirement { field: "spec.nodeName".into(), equals: true, value: "n1".into() }]
        );
        assert_eq!(parse_field_selector("a!=b,c==d").unwrap().len(), 2);
        assert!(parse_field_selector("nonsense").is_none());
        let x = attributes(u(), "GET", "/api/v1/pods", Some("fieldSelector=metadata.name%3Da%2Fb"));
        assert_eq!(x.name, "", "names that are not path segments are ignored");
    }
}
