//! Legacy (non-aggregated) discovery documents and /version.
use serde_json::{json, Value};

use super::resources::{groups, RESOURCES};

pub const GIT_VERSION: &str = "v1.33.0";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "berth",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": format!("linux/{}", if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" }),
    })
}

/// GET /api
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// GET /api/v1 or /apis/<group>/<version>
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let rs: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| r.discovery())
        .collect();
    if rs.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": rs}),
    )
}

fn group_doc(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0].clone()})
}

/// GET /apis
pub fn api_group_list() -> Value {
    let gs: Vec<Value> = groups().iter().map(|(g, vs)| group_doc(g, vs)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

/// GET /apis/<group>
pub fn api_group(name: &str) -> Option<Value> {
    let (g, vs) = groups().into_iter().find(|(g, _)| *g == name)?;
    let mut d = group_doc(g, &vs);
    d["kind"] = "APIGroup".into();
    d["apiVersion"] = "v1".into();
    Some(d)
}

/// GET /openapi/v3: the group-version documents we serve.
pub fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(String, String)> = vec![(String::new(), "v1".into())];
    for (g, vs) in groups() {
        for v in vs {
            gvs.push((g.to_string(), v.to_string()));
        }
    }
    for (g, v) in gvs {
        let p = if g.is_empty() {
            format!("api/{v}")
        } else {
            format!("apis/{g}/{v}")
        };
        let url = format!("/openapi/v3/{p}?hash={}", openapi_hash());
        paths.insert(p, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

fn openapi_hash() -> &'static str {
    // Changes whenever the served documents change (the resource table is static per build).
    concat!("berth-", env!("CARGO_PKG_VERSION"))
}

/// GET /openapi/v3/api/v1, /openapi/v3/apis/<group>/<version>: a minimal OpenAPI v3 document.
///
/// It has no schemas: it only lists, per resource, the PATCH operation with its
/// x-kubernetes-group-version-kind and the `fieldValidation` query parameter, which is what
/// kubectl (>= 1.27) checks before relying on server-side field validation instead of downloading
/// schemas for client-side validation.
pub fn openapi_v3_doc(group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let item = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let gvk = json!({"group": group, "version": version, "kind": r.kind});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        let op = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", r.kind),
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            })
        };
        paths.insert(item, json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// Media type of /openapi/v2 (gnostic protobuf).
pub const OPENAPI_V2_PB: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// GET /openapi/v2: an empty gnostic `openapi_v2.Document` (swagger "2.0", info, no
/// definitions), protobuf-encoded. kubectl 1.27 fetches it eagerly before validating manifests;
/// with no definitions it skips client-side schema validation.
pub fn openapi_v2_pb() -> Vec<u8> {
    fn ld(num: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(num << 3 | 2);
        assert!(body.len() < 128, "short fields only");
        out.push(body.len() as u8);
        out.extend_from_slice(body);
    }
    let mut info = Vec::new();
    ld(1, b"Kubernetes", &mut info);
    ld(2, GIT_VERSION.as_bytes(), &mut info);
    let mut doc = Vec::new();
    ld(1, b"2.0", &mut doc);
    ld(2, &info, &mut doc);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents() {
        assert_eq!(version()["minor"], "33");
        let core = resource_list("", "v1").unwrap();
        assert_eq!(core["groupVersion"], "v1");
        assert!(core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "pods/log"));
        assert!(resource_list("", "v2").is_none());
        let l = api_group_list();
        assert_eq!(l["groups"][0]["name"], "coordination.k8s.io");
        assert_eq!(
            l["groups"][0]["preferredVersion"]["groupVersion"],
            "coordination.k8s.io/v1"
        );
        assert_eq!(
            api_group("coordination.k8s.io").unwrap()["kind"],
            "APIGroup"
        );
        assert!(api_group("apps").is_none());
        let leases = resource_list("coordination.k8s.io", "v1").unwrap();
        assert_eq!(leases["resources"][0]["kind"], "Lease");
        let root = openapi_v3_root();
        assert!(root["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/api/v1?hash="));
        assert!(root["paths"]["apis/coordination.k8s.io/v1"].is_object());
        let doc = openapi_v3_doc("", "v1").unwrap();
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert!(patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        assert!(doc["paths"]["/api/v1/nodes/{name}"].is_object());
        let pb = openapi_v2_pb();
        assert_eq!(&pb[..5], b"\x0a\x032.0");
    }
}
