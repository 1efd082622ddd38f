//! Entry points for the cargo-fuzz targets in `fuzz/` (not an API; hidden from the docs).
//!
//! Each function runs one request-path pipeline on arbitrary bytes the way the handlers do, minus
//! the store: decoding, kind/type checks, create/update preparation and validation, deletion,
//! patching, selectors, and the rendering of what would be answered. Errors are expected results;
//! a panic, a hang or unbounded memory is a finding.
use serde_json::{json, Value};

use super::handlers::{decode_json, route, Filter, Query, Route};
use super::object::{self, DeleteOptions, FieldValidation};
use super::patch::{self, PatchType};
use super::resources::{self, ResourceDef, RESOURCES};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::table::{self, IncludeObject};

/// A fixed clock, so runs are reproducible.
fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_700_000_000).expect("valid timestamp")
}

/// What a response would carry: the Status body of an error, or the object and its Table.
fn answer(def: &ResourceDef, r: Result<Value, ApiError>) {
    match r {
        Ok(obj) => {
            let t = table::table(
                def,
                &[&obj],
                object::rv_of(&obj),
                IncludeObject::Object,
                true,
                "v1",
                now(),
            );
            std::hint::black_box(serde_json::to_vec(&t).expect("a Value serializes"));
            std::hint::black_box(table::partial_metadata(&obj));
        }
        Err(e) => {
            std::hint::black_box(serde_json::to_vec(&e.to_status()).expect("a Value serializes"));
        }
    }
}

/// The resource an arbitrary body is sent to: the one of its `kind`, else one picked by `salt`.
fn def_for(obj: &Value, salt: usize) -> &'static ResourceDef {
    obj.get("kind")
        .and_then(Value::as_str)
        .and_then(|k| RESOURCES.iter().find(|d| d.kind == k))
        .unwrap_or(&RESOURCES[salt % RESOURCES.len()])
}

/// Create (POST) of `obj` as the handler does it, then an update of the result with the same body
/// (PUT), a status update, and a DELETE with options taken from the body.
fn create_update_delete(def: &'static ResourceDef, body: Value, dups: &[String]) {
    let ns = if def.namespaced { "default" } else { "" };
    let created = (|| {
        let mut obj = body.clone();
        object::check_type(def, &mut obj, def.kind, &def.api_version())?;
        let mut strict = obj.clone();
        let _ = object::typecheck_body(def, &mut strict, FieldValidation::Strict, dups);
        object::typecheck_body(def, &mut obj, FieldValidation::Warn, dups)?;
        object::prepare_create(def, &mut obj, ns, &object::format_time(now()))?;
        Ok(obj)
    })();
    let Ok(stored) = created else {
        answer(def, created);
        return;
    };
    answer(def, Ok(stored.clone()));
    for status_only in [false, true] {
        let updated = (|| {
            let mut obj = body.clone();
            object::check_type(def, &mut obj, def.kind, &def.api_version())?;
            object::typecheck_body(def, &mut obj, FieldValidation::Warn, dups)?;
            object::prepare_update(def, obj, &stored, status_only)
        })();
        answer(def, updated);
    }
    let mut opts = DeleteOptions::default();
    opts.merge_body(&body);
    for o in [DeleteOptions::default(), opts] {
        if let Ok(object::DeleteDecision::Update(obj)) =
            object::delete_decision(def, &stored, &o, now())
        {
            std::hint::black_box(object::should_delete_after_update(&obj));
            answer(def, Ok(obj));
        }
    }
}

/// A create/update/delete request body with a JSON content type.
pub fn json_body(data: &[u8]) {
    match decode_json(data, "application/json") {
        Ok(v) => create_update_delete(def_for(&v, data.len()), v, &object::duplicate_fields(data)),
        Err(e) => answer(resources::namespaces(), Err(e)),
    }
}

/// A request body with the protobuf content type (`k8s\0` envelope).
pub fn protobuf_body(data: &[u8]) {
    match decode_json(data, "application/vnd.kubernetes.protobuf") {
        Ok(v) => create_update_delete(def_for(&v, data.len()), v, &[]),
        Err(e) => answer(resources::namespaces(), Err(e)),
    }
}

/// Objects as they are stored (created through the create path), the targets of patches.
fn stored_objects() -> &'static [(&'static ResourceDef, Value)] {
    static STORED: std::sync::OnceLock<Vec<(&'static ResourceDef, Value)>> =
        std::sync::OnceLock::new();
    STORED.get_or_init(stored_objects_init)
}

fn stored_objects_init() -> Vec<(&'static ResourceDef, Value)> {
    let bodies = [
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"},
            "annotations": {"a": "b"}, "finalizers": ["example.com/f"]},
            "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}],
                "env": [{"name": "A", "value": "1"}], "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                "volumes": [{"name": "v", "emptyDir": {}}], "nodeName": "n1"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"k": "v"}}),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}),
    ];
    bodies
        .into_iter()
        .map(|mut b| {
            let def = def_for(&b, 0);
            let ns = if def.namespaced { "default" } else { "" };
            object::prepare_create(def, &mut b, ns, &object::format_time(now()))
                .expect("seed objects are valid");
            (def, b)
        })
        .collect()
}

/// A PATCH of type `t` with body `data` on one of the stored objects, as the handler applies it.
pub fn patch_body(t: PatchType, data: &[u8]) {
    let targets = stored_objects();
    let (def, cur) = &targets[data.len() % targets.len()];
    let p: Value = match serde_json::from_slice(data) {
        Ok(p) => p,
        Err(e) => {
            return answer(
                def,
                Err(ApiError::bad_request(format!("error decoding patch: {e}"))),
            )
        }
    };
    for status_only in [false, true] {
        let r = (|| {
            let mut patched = patch::apply(t, cur, &p)?;
            object::check_type(def, &mut patched, def.kind, &def.api_version())?;
            object::typecheck(def, &mut patched, FieldValidation::Warn)?;
            object::prepare_update(def, patched, cur, status_only)
        })();
        answer(def, r);
    }
}

/// A list/watch URL: `path?query` (routing, query decoding, label and field selectors), and the
/// whole input as a bare label selector and field selector.
pub fn selectors(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let (path, query) = s.split_once('?').unwrap_or((&s, ""));
    let (def, ns) = match route(path) {
        Route::Resource(t) => (t.def, t.namespace),
        _ => (
            RESOURCES.iter().find(|d| d.plural == "pods").expect("pods"),
            None,
        ),
    };
    let q = Query::parse(Some(query));
    let objects = stored_objects();
    match Filter::new(def, ns.as_deref(), &q) {
        Ok(f) => {
            for (_, o) in objects {
                std::hint::black_box(f.matches(def, o));
            }
        }
        Err(e) => answer(def, Err(e)),
    }
    if let Ok(l) = LabelSelector::parse(&s) {
        for (_, o) in objects {
            std::hint::black_box(l.matches(o));
        }
    }
    for d in RESOURCES {
        if let Ok(f) = FieldSelector::parse(&s, d.plural, d.kind) {
            for (_, o) in objects {
                std::hint::black_box(f.matches(d.plural, o));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_accept_real_requests() {
        let pod = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
        json_body(pod);
        json_body(b"{bad");
        protobuf_body(b"k8s\0garbage");
        patch_body(
            PatchType::Json,
            br#"[{"op":"add","path":"/metadata/labels/x","value":"y"}]"#,
        );
        patch_body(PatchType::Merge, br#"{"metadata":{"labels":{"x":"y"}}}"#);
        patch_body(
            PatchType::Strategic,
            br#"{"spec":{"containers":[{"name":"c","image":"nginx"}]}}"#,
        );
        selectors(b"/api/v1/namespaces/default/pods?labelSelector=app%3Dweb&fieldSelector=spec.nodeName%3Dn1");
        assert_eq!(stored_objects().len(), 4);
    }
}
