//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and an approximation of
//! strategic merge patch (merge patch where known lists of objects merge by their key).
use serde_json::{Map, Value};

use super::status::ApiError;

/// The patch types we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

pub const ACCEPTED: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            _ => None,
        }
    }
}

/// Apply `patch` of type `t` to `target`.
pub fn apply(t: PatchType, target: &Value, patch: &Value) -> Result<Value, ApiError> {
    match t {
        PatchType::Merge => {
            let mut out = target.clone();
            merge(&mut out, patch);
            Ok(out)
        }
        PatchType::Strategic => {
            let mut out = target.clone();
            strategic(&mut out, patch, "");
            Ok(out)
        }
        PatchType::Json => json_patch(target, patch),
    }
}

/// RFC 7386.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The merge key of a list field (by the field's name), as in the core/v1 `patchMergeKey` tags.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "containerStatuses"
        | "initContainerStatuses"
        | "imagePullSecrets" => "name",
        "ownerReferences" => "uid",
        "readinessGates" => "conditionType",
        "conditions" | "addresses" => "type",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "podIPs" | "hostIPs" => "ip",
        _ => return None,
    })
}

/// Strategic merge patch, approximated: maps merge like merge patch; lists with a known merge key
/// merge element-wise by that key (with `$patch: delete` removing an element); other lists are
/// replaced. Directives (`$setElementOrder/...`, `$retainKeys`, `$deleteFromPrimitiveList/...`)
/// are honoured only as far as ignoring them (and deleting primitives) goes.
pub fn strategic(target: &mut Value, patch: &Value, field: &str) {
    match patch {
        Value::Object(p) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut v = patch.clone();
                v.as_object_mut().expect("object").remove("$patch");
                *target = v;
                return;
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("made an object");
            for (k, v) in p {
                if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
                    continue;
                }
                if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
                    if let (Some(Value::Array(cur)), Value::Array(del)) = (t.get_mut(list), v) {
                        cur.retain(|x| !del.contains(x));
                    }
                    continue;
                }
                if v.is_null() {
                    t.remove(k);
                } else {
                    strategic(t.entry(k.clone()).or_insert(Value::Null), v, k);
                }
            }
        }
        Value::Array(items) => {
            // Container ports merge on containerPort, service ports on port.
            let key = match merge_key(field) {
                Some("containerPort")
                    if items
                        .iter()
                        .any(|i| i.get("containerPort").is_none() && i.get("port").is_some()) =>
                {
                    Some("port")
                }
                k => k,
            };
            match (key, target.as_array_mut()) {
                (Some(key), Some(cur)) if items.iter().all(Value::is_object) => {
                    for item in items {
                        let id = item.get(key);
                        let pos = id.and_then(|id| cur.iter().position(|c| c.get(key) == Some(id)));
                        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (pos, delete) {
                            (Some(i), true) => {
                                cur.remove(i);
                            }
                            (None, true) => {}
                            (Some(i), false) => strategic(&mut cur[i], item, ""),
                            (None, false) => {
                                let mut v = Value::Null;
                                strategic(&mut v, item, "");
                                cur.push(v);
                            }
                        }
                    }
                }
                _ => *target = patch.clone(),
            }
        }
        other => *target = other.clone(),
    }
}

fn unescape(tok: &str) -> String {
    tok.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<(String, String), ApiError> {
    if path.is_empty() {
        return Err(ApiError::bad_request(
            "json patch: the root path is not supported",
        ));
    }
    let idx = path
        .rfind('/')
        .ok_or_else(|| ApiError::bad_request(format!("json patch: invalid path {path:?}")))?;
    Ok((path[..idx].to_string(), unescape(&path[idx + 1..])))
}

/// Most operations in one JSON patch (kube's `maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPS: usize = 10_000;
/// Largest total size of values copied by one JSON patch (kube sets json-patch's
/// AccumulatedCopySizeLimit to the request body limit, 3 MiB).
pub const MAX_COPY_BYTES: usize = 3 * 1024 * 1024;

/// kube answers every failed JSON patch operation with this generic 422 (the reason stays in
/// the server log).
fn jp_err(op: &str, path: &str, why: &str) -> ApiError {
    tracing::debug!(op, path, why, "json patch operation failed");
    let mut e = ApiError::new(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
    );
    e.details = Some(serde_json::json!({}));
    e
}

/// A writer that only counts, failing once more than `limit` bytes were written.
struct Counter {
    n: usize,
    limit: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.n = self.n.saturating_add(b.len());
        if self.n > self.limit {
            return Err(std::io::Error::other("limit exceeded"));
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The JSON size of `v` if it is at most `limit` bytes (computed without allocating it).
pub fn json_size_within(v: &Value, limit: usize) -> Option<usize> {
    let mut c = Counter { n: 0, limit };
    serde_json::to_writer(&mut c, v).ok().map(|_| c.n)
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => m
            .remove(&last)
            .ok_or_else(|| jp_err("remove", path, "missing value")),
        Some(Value::Array(a)) => {
            let i: usize = last
                .parse()
                .map_err(|_| jp_err("remove", path, "bad index"))?;
            if i < a.len() {
                Ok(a.remove(i))
            } else {
                Err(jp_err("remove", path, "index out of range"))
            }
        }
        _ => Err(jp_err("remove", path, "missing value")),
    }
}

fn add_at(doc: &mut Value, path: &str, value: Value, op: &str) -> Result<(), ApiError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            if op == "replace" && !m.contains_key(&last) {
                return Err(jp_err(op, path, "missing value"));
            }
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            if last == "-" && op == "add" {
                a.push(value);
                return Ok(());
            }
            let i: usize = last.parse().map_err(|_| jp_err(op, path, "bad index"))?;
            if op == "replace" {
                let slot = a
                    .get_mut(i)
                    .ok_or_else(|| jp_err(op, path, "index out of range"))?;
                *slot = value;
            } else if i <= a.len() {
                a.insert(i, value);
            } else {
                return Err(jp_err(op, path, "index out of range"));
            }
            Ok(())
        }
        _ => Err(jp_err(op, path, "missing value")),
    }
}

/// RFC 6902.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("json patch must be an array of operations"))?;
    if ops.len() > MAX_JSON_PATCH_OPS {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!(
                "Request entity too large: The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPS}, got {}",
                ops.len()
            ),
        ));
    }
    let mut doc = target.clone();
    let mut copied = 0usize;
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| ApiError::bad_request(format!("json patch: {name} needs a value")))
        };
        match name {
            "add" | "replace" => add_at(&mut doc, path, value()?, name)?,
            "remove" => {
                remove_at(&mut doc, path)?;
            }
            "move" | "copy" => {
                let from = op.get("from").and_then(Value::as_str).unwrap_or("");
                let v = if name == "move" {
                    remove_at(&mut doc, from)?
                } else {
                    let src = doc
                        .pointer(from)
                        .ok_or_else(|| jp_err(name, from, "missing value"))?;
                    // Bound what copies can grow the document by (each copy may double it).
                    let size = json_size_within(src, MAX_COPY_BYTES - copied).ok_or_else(|| {
                        jp_err(name, from, "the accumulated size increase of copy exceeds the limit")
                    })?;
                    copied += size;
                    src.clone()
                };
                add_at(&mut doc, path, v, "add")?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(jp_err(name, path, "testing value failed"));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "json patch: unexpected operation {other:?}"
                )))
            }
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch() {
        let t = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1, 2]}});
        let out = apply(
            PatchType::Merge,
            &t,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"x": [3]}}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"x": [3]}})
        );
    }

    #[test]
    fn json_patch_ops() {
        let t = json!({"a": {"b": 1}, "l": [1, 2]});
        let p = json!([
            {"op": "add", "path": "/a/c", "value": 2},
            {"op": "replace", "path": "/a/b", "value": 5},
            {"op": "add", "path": "/l/-", "value": 3},
            {"op": "remove", "path": "/l/0"},
            {"op": "copy", "from": "/a/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/e"},
            {"op": "test", "path": "/e", "value": 2},
            {"op": "add", "path": "/metadata~1x", "value": true}
        ]);
        let out = json_patch(&t, &p).unwrap();
        assert_eq!(
            out,
            json!({"a": {"b": 5, "c": 2}, "l": [2, 3], "e": 2, "metadata/x": true})
        );
        assert!(json_patch(&t, &json!([{"op": "replace", "path": "/zz", "value": 1}])).is_err());
        assert!(json_patch(&t, &json!([{"op": "test", "path": "/a/b", "value": 2}])).is_err());
        assert!(json_patch(&t, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn json_patch_limits() {
        // A copy bomb: each copy doubles /x; the accumulated copy size stops it at 3 MiB.
        let t = json!({"metadata": {"name": "pb"}});
        let mut ops = vec![json!({"op": "add", "path": "/x", "value": {"a": "y".repeat(1000)}})];
        for i in 0..40 {
            ops.push(json!({"op": "copy", "from": "/x", "path": format!("/x/c{i}")}));
        }
        let e = json_patch(&t, &Value::Array(ops.clone())).unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert_eq!(e.message, "the server rejected our request due to an error in our request");
        // Within the limit, copies work.
        let out = json_patch(&t, &Value::Array(ops[..6].to_vec())).unwrap();
        assert!(json_size_within(&out, MAX_COPY_BYTES).unwrap() > 32_000);
        // At most 10,000 operations.
        let test = json!({"op": "test", "path": "/metadata/name", "value": "pb"});
        assert!(json_patch(&t, &Value::Array(vec![test.clone(); 10_000])).is_ok());
        let e = json_patch(&t, &Value::Array(vec![test; 10_001])).unwrap_err();
        assert_eq!(e.code, 413);
        assert_eq!(
            e.message,
            "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
        assert_eq!(json_size_within(&json!({"a": 1}), 7), Some(7));
        assert_eq!(json_size_within(&json!({"a": 1}), 6), None);
    }

    #[test]
    fn strategic_merges_lists_by_key() {
        let t = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}], "tolerations": [1]},
                       "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        let p = json!({"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                       "spec": {"containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}], "tolerations": [2]},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}});
        let out = apply(PatchType::Strategic, &t, &p).unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "image": "x"}, {"name": "b", "image": "z"}, {"name": "c", "image": "w"}])
        );
        assert_eq!(out["spec"]["tolerations"], json!([2]));
        assert_eq!(out["status"]["conditions"][0]["status"], "True");
        assert_eq!(out["status"]["conditions"].as_array().unwrap().len(), 2);
        assert!(out.get("$setElementOrder/containers").is_none());
        let del = apply(
            PatchType::Strategic,
            &out,
            &json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        )
        .unwrap();
        assert_eq!(del["spec"]["containers"].as_array().unwrap().len(), 2);
        let svc = apply(
            PatchType::Strategic,
            &json!({"ports": [{"port": 80, "name": "a"}]}),
            &json!({"ports": [{"port": 80, "name": "b"}, {"port": 443}]}),
        )
        .unwrap();
        assert_eq!(
            svc,
            json!({"ports": [{"port": 80, "name": "b"}, {"port": 443}]})
        );
        let fin = apply(
            PatchType::Strategic,
            &json!({"f": ["a", "b"]}),
            &json!({"$deleteFromPrimitiveList/f": ["a"]}),
        )
        .unwrap();
        assert_eq!(fin, json!({"f": ["b"]}));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
            Some(PatchType::Strategic)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            None
        );
    }
}
