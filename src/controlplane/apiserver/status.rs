//! API errors rendered as metav1 `Status`, with kube-apiserver's messages.
use serde_json::{json, Map, Value};

use super::resources::ResourceDef;

/// One field-level cause of an `Invalid` error.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueDuplicate`, `FieldValueForbidden`, ...
    pub reason: &'static str,
    /// Full message: `Required value`, `Invalid value: "x": detail`.
    pub message: String,
    pub field: String,
}

impl Cause {
    pub fn required(field: impl Into<String>, detail: &str) -> Cause {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Cause {
            reason: "FieldValueRequired",
            message,
            field: field.into(),
        }
    }
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Cause {
        let v = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        let message = if detail.is_empty() {
            format!("Invalid value: {v}")
        } else {
            format!("Invalid value: {v}: {detail}")
        };
        Cause {
            reason: "FieldValueInvalid",
            message,
            field: field.into(),
        }
    }
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Cause {
        let v = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        Cause {
            reason: "FieldValueDuplicate",
            message: format!("Duplicate value: {v}"),
            field: field.into(),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {detail}"),
            field: field.into(),
        }
    }
    pub fn unsupported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Cause {
        let v = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ),
            field: field.into(),
        }
    }
    /// kube's `field.TooLong` with a byte limit.
    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> Cause {
        Cause {
            reason: "FieldValueTooLong",
            message: format!("Too long: may not be more than {max_bytes} bytes"),
            field: field.into(),
        }
    }
    /// `field: message`, as in kube's aggregated error text.
    pub fn text(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// An error answered as a Status object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

fn details(name: &str, group: &str, kind: &str) -> Value {
    let mut m = Map::new();
    if !name.is_empty() {
        m.insert("name".into(), name.into());
    }
    if !group.is_empty() {
        m.insert("group".into(), group.into());
    }
    if !kind.is_empty() {
        m.insert("kind".into(), kind.into());
    }
    Value::Object(m)
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    /// `pods "web" not found`.
    pub fn not_found(def: &ResourceDef, name: &str) -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} {name:?} not found", def.qualified()),
            details: Some(details(name, def.group, def.plural)),
        }
    }
    /// The generic 404 for unknown paths.
    pub fn no_route() -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: Some(json!({})),
        }
    }
    pub fn already_exists(def: &ResourceDef, name: &str) -> ApiError {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} {name:?} already exists", def.qualified()),
            details: Some(details(name, def.group, def.plural)),
        }
    }
    /// `Operation cannot be fulfilled on pods "web": <why>`.
    pub fn conflict(qualified: &str, group: &str, plural: &str, name: &str, why: &str) -> ApiError {
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!("Operation cannot be fulfilled on {qualified} {name:?}: {why}"),
            details: Some(details(name, group, plural)),
        }
    }
    pub fn modified(def: &ResourceDef, name: &str) -> ApiError {
        Self::conflict(
            &def.qualified(),
            def.group,
            def.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }
    /// `Pod "web" is invalid: spec.containers: Required value`.
    pub fn invalid(def: &ResourceDef, name: &str, causes: Vec<Cause>) -> ApiError {
        let agg = if causes.len() == 1 {
            causes[0].text()
        } else {
            format!(
                "[{}]",
                causes
                    .iter()
                    .map(Cause::text)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let kind_q = if def.group.is_empty() {
            def.kind.to_string()
        } else {
            format!("{}.{}", def.kind, def.group)
        };
        let mut d = details(name, def.group, def.kind);
        d["causes"] = Value::Array(
            causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect(),
        );
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{kind_q} {name:?} is invalid: {agg}"),
            details: Some(d),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(400, "BadRequest", message)
    }
    pub fn method_not_allowed() -> ApiError {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }
    pub fn unauthorized() -> ApiError {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    /// `namespaces "default" is forbidden: this namespace may not be deleted`.
    pub fn forbidden(def: &ResourceDef, name: &str, why: &str) -> ApiError {
        ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!("{} {name:?} is forbidden: {why}", def.qualified()),
            details: Some(details(name, def.group, def.plural)),
        }
    }
    pub fn expired(requested: u64, oldest: u64) -> ApiError {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }
    pub fn unsupported_media_type(ct: &str, accepted: &[&str]) -> ApiError {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}{}",
                accepted.join(", "),
                if ct.is_empty() { String::new() } else { format!(" (got {ct})") }
            ),
        )
    }
    pub fn service_unavailable(message: impl Into<String>) -> ApiError {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The Status object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.reason.is_empty() {
            // metav1.StatusReasonUnknown is "" and omitted, as for errors kube passes through.
            s.as_object_mut().map(|m| m.remove("reason"));
        }
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// The Success Status returned by deletions of most resources.
pub fn success_status(def: &ResourceDef, name: &str, uid: &str) -> Value {
    let mut d = details(name, def.group, def.plural);
    if !uid.is_empty() {
        d["uid"] = uid.into();
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controlplane::apiserver::resources::find;

    #[test]
    fn messages_match_kube() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(
            ApiError::not_found(pods, "web").message,
            r#"pods "web" not found"#
        );
        assert_eq!(
            ApiError::already_exists(pods, "web").message,
            r#"pods "web" already exists"#
        );
        assert_eq!(
            ApiError::modified(pods, "web").message,
            r#"Operation cannot be fulfilled on pods "web": the object has been modified; please apply your changes to the latest version and try again"#
        );
        let leases = find("coordination.k8s.io", "v1", "leases").unwrap();
        let e = ApiError::not_found(leases, "n1");
        assert_eq!(e.message, r#"leases.coordination.k8s.io "n1" not found"#);
        assert_eq!(e.to_status()["details"]["group"], "coordination.k8s.io");
        let e = ApiError::invalid(pods, "web", vec![Cause::required("spec.containers", "")]);
        assert_eq!(
            e.message,
            r#"Pod "web" is invalid: spec.containers: Required value"#
        );
        assert_eq!(
            e.to_status()["details"]["causes"][0]["field"],
            "spec.containers"
        );
        assert_eq!(e.to_status()["code"], 422);
        let e = ApiError::invalid(
            pods,
            "web",
            vec![
                Cause::required("a", ""),
                Cause::invalid("b", &json!("X"), "bad"),
            ],
        );
        assert_eq!(
            e.message,
            r#"Pod "web" is invalid: [a: Required value, b: Invalid value: "X": bad]"#
        );
    }
}
