//! Generic object logic shared by every resource: metadata on create/update, name validation,
//! preconditions and the deletion decision.
use serde_json::{json, Value};

use super::pods;
use super::resources::ResourceDef;
use super::status::{ApiError, Cause};

/// Now as kube's metav1.Time (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    format_time(jiff::Timestamp::now())
}

pub fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// None if `s` is a DNS-1123 label, else kube's message.
pub fn validate_dns_label(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    if is_dns_label(s) {
        return None;
    }
    Some(format!("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{DNS1123_LABEL_FMT}')"))
}

/// None if `s` is a DNS-1123 subdomain, else kube's message.
pub fn validate_dns_subdomain(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    let ok = !s.is_empty()
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !p.starts_with('-')
                && !p.ends_with('-')
        });
    if ok {
        return None;
    }
    Some(format!("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{DNS1123_LABEL_FMT}(\\.{DNS1123_LABEL_FMT})*')"))
}

/// kube's name generator alphabet (no vowels, no confusable digits).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A 5-character random suffix for generateName.
pub fn random_suffix() -> String {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHANUMS[*b as usize % ALPHANUMS.len()] as char)
        .collect()
}

pub fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn namespace_of(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn uid_of(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn rv_of(obj: &Value) -> &str {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn finalizers_empty(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(|f| f.is_empty())
}

/// Check kind/apiVersion in a request body against the endpoint and fill them in.
pub fn check_type(
    def: &ResourceDef,
    obj: &mut Value,
    kind: &str,
    api_version: &str,
) -> Result<(), ApiError> {
    let Some(m) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the object provided is not a JSON object",
        ));
    };
    if let Some(k) = m.get("kind").and_then(Value::as_str) {
        if !k.is_empty() && k != kind {
            let _ = def;
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({kind})"
            )));
        }
    }
    if let Some(v) = m.get("apiVersion").and_then(Value::as_str) {
        if !v.is_empty() && v != api_version {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    m.insert("kind".into(), kind.into());
    m.insert("apiVersion".into(), api_version.into());
    if !m.get("metadata").is_some_and(Value::is_object) {
        m.insert("metadata".into(), json!({}));
    }
    Ok(())
}

/// How unknown fields are treated (`?fieldValidation=`; kube's default is Warn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<FieldValidation, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// Paths of fields in `input` that did not survive a typed round trip (`output`): kube's
/// "unknown field" paths, e.g. `spec.containers[0].bogus`. Nulls are not unknown.
pub fn unknown_fields(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(w) => unknown_fields(v, w, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                unknown_fields(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Remove what [`unknown_fields`] reports (kube's decoder drops unknown fields, so they are never
/// stored).
pub fn prune_unknown(input: &mut Value, output: &Value) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            a.retain(|k, v| v.is_null() || b.contains_key(k));
            for (k, v) in a.iter_mut() {
                if let Some(w) = b.get(k) {
                    prune_unknown(v, w);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (v, w) in a.iter_mut().zip(b) {
                prune_unknown(v, w);
            }
        }
        _ => {}
    }
}

/// Structural check of a body against the typed API (k8s-openapi), like kube's decoder:
/// wrong JSON types give 400 `Pod in version "v1" cannot be handled as a Pod: ...`; unknown
/// fields fail with Strict (400 `strict decoding error: unknown field "..."`) or are returned as
/// warnings with Warn; with Warn and Ignore they are removed from `obj`.
pub fn typecheck(
    def: &ResourceDef,
    obj: &mut Value,
    fv: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    typecheck_body(def, obj, fv, &[])
}

/// Paths of keys that occur more than once in the same JSON object of `body` (kube's strict
/// decoder reports `duplicate field "metadata.name"`; the last value wins). Empty when `body`
/// is not valid JSON (its decoding error is reported elsewhere).
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    struct Walk<'a> {
        path: String,
        out: &'a mut Vec<String>,
    }
    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
            let mut i = 0usize;
            while a
                .next_element_seed(Walk {
                    path: format!("{}[{i}]", self.path),
                    out: &mut *self.out,
                })?
                .is_some()
            {
                i += 1;
            }
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = a.next_key::<String>()? {
                let p = if self.path.is_empty() {
                    k.clone()
                } else {
                    format!("{}.{k}", self.path)
                };
                if !seen.insert(k) && !self.out.contains(&p) {
                    self.out.push(p.clone());
                }
                a.next_value_seed(Walk {
                    path: p,
                    out: &mut *self.out,
                })?;
            }
            Ok(())
        }
    }
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let ok = Walk {
        path: String::new(),
        out: &mut out,
    }
    .deserialize(&mut de)
    .is_ok();
    if ok {
        out
    } else {
        vec![]
    }
}

/// [`typecheck`] of a request body that had `duplicates` (from [`duplicate_fields`]): with
/// Strict they fail with the unknown fields, with Warn they are warnings too.
pub fn typecheck_body(
    def: &ResourceDef,
    obj: &mut Value,
    fv: FieldValidation,
    duplicates: &[String],
) -> Result<Vec<String>, ApiError> {
    use k8s_openapi::api::{coordination::v1 as coord, core::v1 as core};
    fn check<T: serde::de::DeserializeOwned + serde::Serialize>(
        v: &Value,
    ) -> Result<Value, String> {
        let t = T::deserialize(v).map_err(|e| e.to_string())?;
        serde_json::to_value(t).map_err(|e| e.to_string())
    }
    let r = match (def.group, def.kind) {
        ("", "Pod") => check::<core::Pod>(obj),
        ("", "Node") => check::<core::Node>(obj),
        ("", "Namespace") => check::<core::Namespace>(obj),
        ("", "Event") => check::<core::Event>(obj),
        ("", "ConfigMap") => check::<core::ConfigMap>(obj),
        ("", "Secret") => check::<core::Secret>(obj),
        ("", "ServiceAccount") => check::<core::ServiceAccount>(obj),
        ("", "Service") => check::<core::Service>(obj),
        ("", "Endpoints") => check::<core::Endpoints>(obj),
        ("coordination.k8s.io", "Lease") => check::<coord::Lease>(obj),
        _ => Ok(obj.clone()),
    };
    let typed = r.map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {e}",
            def.kind, def.version, def.kind
        ))
    })?;
    let mut unknown = Vec::new();
    unknown_fields(obj, &typed, "", &mut unknown);
    let pruned = !unknown.is_empty();
    let msgs: Vec<String> = duplicates
        .iter()
        .map(|p| format!("duplicate field {p:?}"))
        .chain(unknown.iter().map(|p| format!("unknown field {p:?}")))
        .collect();
    if fv == FieldValidation::Strict && !msgs.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
            def.kind,
            def.version,
            def.kind,
            msgs.join(", ")
        )));
    }
    if pruned {
        prune_unknown(obj, &typed);
    }
    Ok(if fv == FieldValidation::Ignore {
        vec![]
    } else {
        msgs
    })
}

/// How a kind's names are validated (kube's per-kind `ValidateNameFunc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain (most kinds).
    Subdomain,
    /// DNS-1123 label (Namespace).
    Label,
    /// DNS-1035 label.
    Dns1035,
    /// Service names (kube >= 1.34): a DNS-1123 label, with "must not contain dots" for
    /// subdomains.
    ServiceName,
    /// Any valid path segment (Event, RBAC kinds).
    PathSegment,
}

pub fn name_rule(def: &ResourceDef) -> NameRule {
    match (def.group, def.plural) {
        ("", "namespaces") => NameRule::Label,
        ("", "services") => NameRule::ServiceName,
        ("", "events") | ("events.k8s.io", _) | ("rbac.authorization.k8s.io", _) => {
            NameRule::PathSegment
        }
        _ => NameRule::Subdomain,
    }
}

/// kube's path-segment name check (`path.IsValidPathSegmentName`).
fn validate_path_segment(s: &str) -> Option<String> {
    if s == "." || s == ".." {
        return Some(format!("may not be '{s}'"));
    }
    for bad in ["/", "%"] {
        if s.contains(bad) {
            return Some(format!("may not contain '{bad}'"));
        }
    }
    None
}

const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";

/// None if `s` is a DNS-1035 label, else kube's message.
pub fn validate_dns1035_label(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    if is_dns_label(s) && s.as_bytes()[0].is_ascii_lowercase() {
        return None;
    }
    Some(format!("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '{DNS1035_LABEL_FMT}')"))
}

/// Validate a name (or, with `prefix`, a generateName whose trailing '-' is allowed) by `rule`.
pub fn validate_name(rule: NameRule, name: &str, prefix: bool) -> Option<String> {
    let n = if prefix {
        name.strip_suffix('-').unwrap_or(name)
    } else {
        name
    };
    match rule {
        NameRule::Subdomain => validate_dns_subdomain(n),
        NameRule::Label => validate_dns_label(n),
        NameRule::Dns1035 => validate_dns1035_label(n),
        NameRule::ServiceName if n.contains('.') && validate_dns_subdomain(n).is_none() => {
            Some("must not contain dots".into())
        }
        NameRule::ServiceName => validate_dns_label(n),
        NameRule::PathSegment => validate_path_segment(n),
    }
}

/// The name kube's SimpleNameGenerator makes of a generateName: at most 58 bytes of it plus 5
/// random characters (cut on a character boundary).
pub fn generate_name(base: &str) -> String {
    let mut end = base.len().min(63 - 5);
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{}", &base[..end], random_suffix())
}

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// kube's `IsQualifiedName`: `[prefix/]name`, prefix a DNS subdomain, name ≤ 63 characters.
pub fn qualified_name_errors(s: &str) -> Vec<String> {
    let regex_err = |what: &str| {
        format!("{what}{QUALIFIED_NAME_ERR} (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{QUALIFIED_NAME_FMT}')")
    };
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                return vec!["prefix part must be non-empty".into()];
            }
            if let Some(m) = validate_dns_subdomain(prefix) {
                return vec![format!("prefix part {m}")];
            }
            *name
        }
        _ => {
            return vec![format!(
                "{} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_err("a valid label key ")
            )]
        }
    };
    let mut out = Vec::new();
    if name.is_empty() {
        out.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        out.push("name part must be no more than 63 bytes".into());
    }
    if !name.is_empty() && !is_qualified_part(name) {
        out.push(regex_err("name part "));
    }
    out
}

/// kube's `IsValidLabelValue`.
pub fn label_value_errors(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    if v.len() > 63 {
        out.push("must be no more than 63 bytes".into());
    }
    if !v.is_empty() && !is_qualified_part(v) {
        out.push(format!("{LABEL_VALUE_ERR} (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '({QUALIFIED_NAME_FMT})?')"));
    }
    out
}

/// Total size of all annotations (keys + values), kube's `TotalAnnotationSizeLimitB`.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// Largest total of ConfigMap data + binaryData and of Secret data (kube's `MaxSecretSize`).
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// A value shown in a cause, shortened like kube does for long values.
fn shown(v: &str) -> Value {
    const MAX: usize = 256;
    if v.len() <= MAX {
        return json!(v);
    }
    let mut end = MAX;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    json!(format!("{}...(truncated)", &v[..end]))
}

/// kube's ValidateLabels and ValidateAnnotations on `metadata`.
pub fn validate_labels_annotations(meta: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            for m in qualified_name_errors(k) {
                causes.push(Cause::invalid("metadata.labels", &shown(k), &m));
            }
            let v = v.as_str().unwrap_or("");
            for m in label_value_errors(v) {
                causes.push(Cause::invalid("metadata.labels", &shown(v), &m));
            }
        }
    }
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0usize;
        for (k, v) in ann {
            // kube: QualifiedName, except that case does not matter.
            for m in qualified_name_errors(&k.to_ascii_lowercase()) {
                causes.push(Cause::invalid("metadata.annotations", &shown(k), &m));
            }
            total = total
                .saturating_add(k.len())
                .saturating_add(v.as_str().map_or(0, str::len));
        }
        if total > MAX_ANNOTATIONS_BYTES {
            causes.push(Cause::too_long("metadata.annotations", MAX_ANNOTATIONS_BYTES));
        }
    }
    causes
}

/// Size checks of ConfigMap and Secret payloads (kube: 1 MiB in total).
fn validate_payload_size(def: &ResourceDef, obj: &Value) -> Vec<Cause> {
    let total = |fields: &[&str]| -> usize {
        fields
            .iter()
            .filter_map(|f| obj.get(*f).and_then(Value::as_object))
            .flat_map(|m| m.iter())
            .map(|(k, v)| k.len().saturating_add(v.as_str().map_or(0, str::len)))
            .fold(0usize, usize::saturating_add)
    };
    match (def.group, def.plural) {
        ("", "configmaps") if total(&["data", "binaryData"]) > MAX_CONFIG_BYTES => {
            // kube reports the whole object (field path "").
            vec![Cause::too_long("[]", MAX_CONFIG_BYTES)]
        }
        ("", "secrets") => {
            // data values are base64 in JSON; kube counts the decoded bytes.
            let decoded: usize = obj
                .get("data")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| k.len() + v.as_str().map_or(0, |s| s.len() / 4 * 3))
                        .fold(0usize, usize::saturating_add)
                })
                .unwrap_or(0);
            let strings = total(&["stringData"]);
            if decoded.saturating_add(strings) > MAX_CONFIG_BYTES {
                vec![Cause::too_long("data", MAX_CONFIG_BYTES)]
            } else {
                vec![]
            }
        }
        _ => vec![],
    }
}

/// Validate object metadata (name, generateName, labels, annotations) plus resource-specific
/// validation.
pub fn validate(def: &ResourceDef, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = name_of(obj);
    let rule = name_rule(def);
    let mut causes = Vec::new();
    if let Some(g) = obj
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .filter(|g| !g.is_empty())
    {
        if let Some(m) = validate_name(rule, g, true) {
            causes.push(Cause::invalid("metadata.generateName", &shown(g), &m));
        }
    }
    if name.is_empty() {
        causes.push(Cause::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else if let Some(m) = validate_name(rule, name, false) {
        causes.push(Cause::invalid("metadata.name", &shown(name), &m));
    }
    causes.extend(validate_labels_annotations(&obj["metadata"]));
    causes.extend(validate_payload_size(def, obj));
    if def.plural == "pods" {
        match old {
            Some(o) => causes.extend(pods::validate_pod_update(obj, o)),
            None => causes.extend(pods::validate_pod(obj)),
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(def, name, causes))
    }
}

/// Per-resource defaulting on create.
pub fn default_new(def: &ResourceDef, obj: &mut Value) {
    match def.plural {
        "pods" => {
            // kube's podStrategy.PrepareForCreate: status is the server's (Pending + QoS class).
            obj["status"] = json!({});
            pods::default_pod(obj)
        }
        "namespaces" => {
            if obj.pointer("/spec/finalizers").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            obj["status"] = json!({"phase": "Active"});
            // kube labels every namespace with its name (NamespaceDefaultLabelName).
            let name = name_of(obj).to_string();
            if !obj["metadata"].get("labels").is_some_and(Value::is_object) {
                obj["metadata"]["labels"] = json!({});
            }
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name.into();
        }
        "services" => {
            let spec = obj
                .as_object_mut()
                .unwrap()
                .entry("spec")
                .or_insert_with(|| json!({}));
            if spec.get("type").is_none() {
                spec["type"] = "ClusterIP".into();
            }
            if spec.get("sessionAffinity").is_none() {
                spec["sessionAffinity"] = "None".into();
            }
        }
        "secrets" if obj.get("type").is_none() => obj["type"] = "Opaque".into(),
        _ => {}
    }
}

/// Prepare a new object for storage: namespace, name (generateName), uid, creationTimestamp,
/// defaults, validation. `obj` already passed [`check_type`].
pub fn prepare_create(
    def: &ResourceDef,
    obj: &mut Value,
    namespace: &str,
    now: &str,
) -> Result<(), ApiError> {
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("check_type made metadata an object");
    if def.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {
                meta.insert("namespace".into(), namespace.into());
            }
        }
    } else {
        meta.remove("namespace");
    }
    let has_name = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !has_name {
        if let Some(g) = meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|g| !g.is_empty())
        {
            meta.insert("name".into(), generate_name(g).into());
        }
    }
    meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
    meta.insert("creationTimestamp".into(), now.into());
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(k);
    }
    if meta.get("generation").is_some() || def.plural == "services" {
        meta.insert("generation".into(), 1.into());
    }
    default_new(def, obj);
    validate(def, obj, None)
}

/// Prepare an update of `old` to `new` (main resource or status subresource), checking the
/// resourceVersion precondition. Returns the object to store.
pub fn prepare_update(
    def: &ResourceDef,
    mut new: Value,
    old: &Value,
    status_only: bool,
) -> Result<Value, ApiError> {
    let name = name_of(old).to_string();
    if !new.get("metadata").is_some_and(Value::is_object) {
        new["metadata"] = json!({});
    }
    let body_name = name_of(&new);
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let rv = rv_of(&new);
    if !rv.is_empty() && rv != rv_of(old) {
        return Err(ApiError::modified(def, &name));
    }
    if status_only {
        // Only status (and labels/annotations, like kube's status strategies) change.
        let mut out = old.clone();
        out["status"] = new.get("status").cloned().unwrap_or(json!({}));
        for k in ["labels", "annotations"] {
            match new["metadata"].get(k) {
                Some(v) => out["metadata"][k] = v.clone(),
                None => {
                    out["metadata"].as_object_mut().map(|m| m.remove(k));
                }
            }
        }
        if def.plural == "pods" {
            // The spec cannot change here, so neither can the class computed at create.
            let qos = old
                .pointer("/status/qosClass")
                .cloned()
                .unwrap_or_else(|| crate::k8s::qos::pod_json_qos_class(&out).into());
            out["status"]["qosClass"] = qos;
        }
        return Ok(out);
    }
    // Immutable metadata comes from the stored object.
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old["metadata"].get(k) {
            Some(v) => new["metadata"][k] = v.clone(),
            None => {
                new["metadata"].as_object_mut().map(|m| m.remove(k));
            }
        }
    }
    if def.has_status() {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                new.as_object_mut().map(|m| m.remove("status"));
            }
        }
    }
    if let Some(g) = old.pointer("/metadata/generation").and_then(Value::as_i64) {
        let changed = new.get("spec") != old.get("spec");
        new["metadata"]["generation"] = (if changed { g.saturating_add(1) } else { g }).into();
    }
    if def.plural == "pods" {
        // Defaulting of containers added by image changes etc. keeps the stored shape stable.
        pods::default_pod(&mut new);
    }
    validate(def, &new, Some(old))?;
    Ok(new)
}

/// Whether the object has a deletion pending (metadata.deletionTimestamp set).
pub fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// Whether an updated object must now be removed (deletion pending, no finalizers left,
/// grace period over): kube's ShouldDeleteDuringUpdate.
pub fn should_delete_after_update(obj: &Value) -> bool {
    is_deleting(obj)
        && finalizers_empty(obj)
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
}

/// DeleteOptions relevant to us.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub propagation_policy: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Merge a DeleteOptions body (JSON) over the query values.
    pub fn merge_body(&mut self, body: &Value) {
        if let Some(g) = body.get("gracePeriodSeconds").and_then(Value::as_i64) {
            self.grace_period_seconds = Some(g);
        }
        if let Some(u) = body.pointer("/preconditions/uid").and_then(Value::as_str) {
            self.uid = Some(u.into());
        }
        if let Some(r) = body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            self.resource_version = Some(r.into());
        }
        if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
            self.propagation_policy = Some(p.into());
        }
        if let Some(Value::Array(d)) = body.get("dryRun") {
            self.dry_run |= d.iter().any(|v| v == "All");
        }
    }
}

/// What a DELETE does to the stored object.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteDecision {
    /// Remove it from the store.
    Remove,
    /// Keep it, updated (deletionTimestamp set / grace period shortened).
    Update(Value),
    /// Already being deleted with a shorter grace period: nothing to do.
    Unchanged,
}

/// Decide a deletion like kube-apiserver's generic registry (BeforeDelete + graceful deletion +
/// finalizers). Checks preconditions first.
pub fn delete_decision(
    def: &ResourceDef,
    obj: &Value,
    opts: &DeleteOptions,
    now: jiff::Timestamp,
) -> Result<DeleteDecision, ApiError> {
    let name = name_of(obj);
    if let Some(uid) = &opts.uid {
        if uid != uid_of(obj) {
            return Err(ApiError::conflict(
                &def.qualified(),
                def.group,
                def.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    uid_of(obj)
                ),
            ));
        }
    }
    if let Some(rv) = &opts.resource_version {
        if rv != rv_of(obj) {
            return Err(ApiError::conflict(
                &def.qualified(),
                def.group,
                def.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    rv_of(obj)
                ),
            ));
        }
    }
    // A negative grace period is accepted (pods: treated as 1 s, as kube does).
    let grace = if def.plural == "pods" {
        pods::deletion_grace_period(obj, opts.grace_period_seconds)
    } else {
        0
    };
    let pending = is_deleting(obj);
    let current_grace = obj
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    let has_finalizers = !finalizers_empty(obj);

    if grace > 0 {
        if pending && current_grace.is_some_and(|c| c <= grace) {
            return Ok(DeleteDecision::Unchanged);
        }
        let mut o = obj.clone();
        // Saturating: a grace period of i64::MAX seconds is far past jiff's (and RFC 3339's)
        // last representable instant; kube stores such values as given.
        let ts = now
            .checked_add(jiff::SignedDuration::from_secs(grace))
            .unwrap_or(jiff::Timestamp::MAX);
        o["metadata"]["deletionTimestamp"] = format_time(ts).into();
        o["metadata"]["deletionGracePeriodSeconds"] = grace.into();
        return Ok(DeleteDecision::Update(o));
    }
    if has_finalizers {
        if pending && current_grace == Some(0) {
            return Ok(DeleteDecision::Unchanged);
        }
        let mut o = obj.clone();
        if !pending {
            o["metadata"]["deletionTimestamp"] = format_time(now).into();
        }
        o["metadata"]["deletionGracePeriodSeconds"] = 0.into();
        return Ok(DeleteDecision::Update(o));
    }
    Ok(DeleteDecision::Remove)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controlplane::apiserver::resources::find;

    fn ts() -> jiff::Timestamp {
        "2024-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn metadata_validation_matches_kube() {
        assert!(qualified_name_errors("example.com/my-key_1").is_empty());
        assert!(qualified_name_errors("k").is_empty());
        assert_eq!(qualified_name_errors("example.com/"), vec![
            "name part must be non-empty".to_string(),
        ]);
        assert_eq!(qualified_name_errors("/a"), vec!["prefix part must be non-empty"]);
        assert!(qualified_name_errors("Ex.com/n")[0].starts_with("prefix part a lowercase RFC 1123 subdomain"));
        assert!(qualified_name_errors("a/b/c")[0].starts_with("a valid label key must consist"));
        assert_eq!(qualified_name_errors(&"a".repeat(64)), vec!["name part must be no more than 63 bytes"]);
        assert!(qualified_name_errors("-bad")[0].starts_with("name part must consist of alphanumeric"));
        assert!(label_value_errors("").is_empty());
        assert!(label_value_errors("v1.2_3-x").is_empty());
        assert_eq!(label_value_errors(&"x".repeat(64)), vec!["must be no more than 63 bytes"]);
        assert!(label_value_errors("-v-")[0].starts_with("a valid label must be an empty string"));
        // A 1 MiB label value is rejected, and the cause does not echo all of it.
        let meta = json!({"labels": {"k": "v".repeat(1 << 20)}});
        let c = validate_labels_annotations(&meta);
        assert_eq!(c.len(), 1);
        assert!(c[0].message.len() < 1024);
        let meta = json!({"annotations": {"a": "x".repeat(MAX_ANNOTATIONS_BYTES)}});
        let c = validate_labels_annotations(&meta);
        assert_eq!(c, vec![Cause::too_long("metadata.annotations", MAX_ANNOTATIONS_BYTES)]);
        assert_eq!(c[0].text(), "metadata.annotations: Too long: may not be more than 262144 bytes");
        assert!(validate_labels_annotations(&json!({"annotations": {"Example.COM/Key": "x"}})).is_empty());
        assert_eq!(validate_labels_annotations(&json!({"annotations": {"bad key": "x"}})).len(), 1);
    }

    #[test]
    fn duplicate_fields_like_kube() {
        let body = br#"{"metadata":{"name":"d1","name":"d2"},"data":{"a":"1","a":"2","a":"3"},"l":[{"x":1,"x":2}]}"#;
        assert_eq!(duplicate_fields(body), vec!["metadata.name", "data.a", "l[0].x"]);
        assert!(duplicate_fields(br#"{"a":{"b":1},"c":{"b":2}}"#).is_empty());
        assert!(duplicate_fields(b"{bad").is_empty());
        let cms = find("", "v1", "configmaps").unwrap();
        let mut v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["metadata"]["name"], "d2", "the last value wins");
        check_type(cms, &mut v, "ConfigMap", "v1").unwrap();
        let d = duplicate_fields(body);
        let e = typecheck_body(cms, &mut v.clone(), FieldValidation::Strict, &d).unwrap_err();
        assert_eq!(e.message, r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: duplicate field "metadata.name", duplicate field "data.a", duplicate field "l[0].x", unknown field "l""#);
        let w = typecheck_body(cms, &mut v, FieldValidation::Warn, &d).unwrap();
        assert_eq!(w[0], r#"duplicate field "metadata.name""#);
        assert_eq!(w.len(), 4);
    }

    #[test]
    fn names_per_kind() {
        let svc = find("", "v1", "services").unwrap();
        let rule = name_rule(svc);
        assert_eq!(validate_name(rule, "1abc", false), None);
        assert_eq!(validate_name(rule, "a.b", false).as_deref(), Some("must not contain dots"));
        assert!(validate_name(rule, "a.B", false).unwrap().starts_with("a lowercase RFC 1123 label"));
        assert_eq!(validate_name(rule, "ab-", true), None);
        assert!(validate_name(rule, "Ab-", true).is_some());
        assert_eq!(validate_name(NameRule::Dns1035, "1abc", false).unwrap().split(' ').nth(1), Some("DNS-1035"));
        assert_eq!(validate_name(NameRule::PathSegment, "a/b", false).as_deref(), Some("may not contain '/'"));
        assert_eq!(validate_name(NameRule::PathSegment, "..", false).as_deref(), Some("may not be '..'"));
        assert_eq!(validate_name(NameRule::Subdomain, &"a".repeat(254), false).as_deref(), Some("must be no more than 253 characters"));
        // generateName of multi-byte characters is cut on a boundary (no panic) and rejected.
        let g = "é".repeat(40);
        assert!(generate_name(&g).len() <= 63);
        let cms = find("", "v1", "configmaps").unwrap();
        let mut cm = json!({"metadata": {"generateName": g}});
        check_type(cms, &mut cm, "ConfigMap", "v1").unwrap();
        let e = prepare_create(cms, &mut cm, "default", "t").unwrap_err();
        assert_eq!(e.code, 422);
        let fields: Vec<_> = e.to_status()["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].clone()).collect();
        assert_eq!(fields, vec![json!("metadata.generateName"), json!("metadata.name")]);
        // ConfigMap payload limit: 1 MiB in total, reported on the whole object.
        let mut big = json!({"metadata": {"name": "big"}, "data": {"a": "x".repeat(MAX_CONFIG_BYTES)}});
        check_type(cms, &mut big, "ConfigMap", "v1").unwrap();
        let e = prepare_create(cms, &mut big, "default", "t").unwrap_err();
        assert_eq!(e.message, r#"ConfigMap "big" is invalid: []: Too long: may not be more than 1048576 bytes"#);
    }

    #[test]
    fn huge_grace_periods_saturate() {
        let pods = find("", "v1", "pods").unwrap();
        let bound = json!({"metadata": {"name": "web", "uid": "u1"},
                           "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": i64::MAX}, "status": {"phase": "Running"}});
        for g in [None, Some(i64::MAX)] {
            let opts = DeleteOptions { grace_period_seconds: g, ..Default::default() };
            let DeleteDecision::Update(o) = delete_decision(pods, &bound, &opts, ts()).unwrap() else {
                panic!("graceful")
            };
            assert_eq!(o["metadata"]["deletionGracePeriodSeconds"], i64::MAX);
            assert_eq!(o["metadata"]["deletionTimestamp"], format_time(jiff::Timestamp::MAX));
        }
        // kube: a negative grace period means 1 second.
        let opts = DeleteOptions { grace_period_seconds: Some(-5), ..Default::default() };
        let DeleteDecision::Update(o) = delete_decision(pods, &bound, &opts, ts()).unwrap() else {
            panic!("graceful")
        };
        assert_eq!(o["metadata"]["deletionGracePeriodSeconds"], 1);
    }

    #[test]
    fn names() {
        assert!(validate_dns_label("web-1").is_none());
        assert!(validate_dns_label("Web").is_some());
        assert!(validate_dns_label("-a").is_some());
        assert!(validate_dns_subdomain("a.b-c.d").is_none());
        assert!(validate_dns_subdomain("a..b").is_some());
        assert!(validate_dns_subdomain("").is_some());
        let s = random_suffix();
        assert_eq!(s.len(), 5);
        assert!(s.bytes().all(|b| ALPHANUMS.contains(&b)));
    }

    #[test]
    fn create_sets_metadata_and_generates_names() {
        let pods = find("", "v1", "pods").unwrap();
        let mut p = json!({"metadata": {"generateName": "web-", "resourceVersion": "5"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        check_type(pods, &mut p, "Pod", "v1").unwrap();
        prepare_create(pods, &mut p, "default", "2024-01-01T00:00:00Z").unwrap();
        assert_eq!(p["kind"], "Pod");
        assert!(name_of(&p).starts_with("web-") && name_of(&p).len() == 9);
        assert_eq!(namespace_of(&p), "default");
        assert!(!uid_of(&p).is_empty());
        assert!(p["metadata"].get("resourceVersion").is_none());
        assert_eq!(p["metadata"]["creationTimestamp"], "2024-01-01T00:00:00Z");

        let mut bad = json!({"metadata": {"name": "x", "namespace": "other"}});
        check_type(pods, &mut bad, "Pod", "v1").unwrap();
        assert_eq!(
            prepare_create(pods, &mut bad, "default", "t")
                .unwrap_err()
                .code,
            400
        );
        let mut invalid = json!({"metadata": {"name": "Web"}, "spec": {}});
        check_type(pods, &mut invalid, "Pod", "v1").unwrap();
        let e = prepare_create(pods, &mut invalid, "default", "t").unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.to_status()["details"]["causes"].as_array().unwrap().len(),
            2
        );
        let mut typed = json!({"metadata": {"name": "x"}, "spec": {"containers": "nope"}});
        check_type(pods, &mut typed, "Pod", "v1").unwrap();
        let e = typecheck(pods, &mut typed, FieldValidation::Warn).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message
                .starts_with(r#"Pod in version "v1" cannot be handled as a Pod: "#),
            "{}",
            e.message
        );
        assert!(typecheck(pods, &mut p.clone(), FieldValidation::Strict)
            .unwrap()
            .is_empty());
        let mut extra = p.clone();
        extra["spec"]["containers"][0]["bogus"] = 1.into();
        extra["spec"]["nodeName"] = Value::Null;
        extra["x"] = json!({"y": 1});
        let e = typecheck(pods, &mut extra.clone(), FieldValidation::Strict).unwrap_err();
        assert_eq!(
            e.message,
            r#"Pod in version "v1" cannot be handled as a Pod: strict decoding error: unknown field "spec.containers[0].bogus", unknown field "x""#
        );
        assert!(typecheck(pods, &mut extra.clone(), FieldValidation::Ignore)
            .unwrap()
            .is_empty());
        let w = typecheck(pods, &mut extra, FieldValidation::Warn).unwrap();
        assert_eq!(
            w,
            vec![
                r#"unknown field "spec.containers[0].bogus""#,
                r#"unknown field "x""#
            ]
        );
        assert!(extra.get("x").is_none());
        assert!(extra["spec"]["containers"][0].get("bogus").is_none());
        assert!(typecheck(pods, &mut extra, FieldValidation::Strict)
            .unwrap()
            .is_empty());
        let mut wrong = json!({"kind": "Node"});
        assert_eq!(
            check_type(pods, &mut wrong, "Pod", "v1").unwrap_err().code,
            400
        );
    }

    #[test]
    fn namespace_defaults() {
        let nsdef = find("", "v1", "namespaces").unwrap();
        let mut ns = json!({"metadata": {"name": "team-a", "namespace": "x"}});
        check_type(nsdef, &mut ns, "Namespace", "v1").unwrap();
        prepare_create(nsdef, &mut ns, "", "t").unwrap();
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team-a"
        );
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert!(ns["metadata"].get("namespace").is_none());
        let mut bad = json!({"metadata": {"name": "a.b"}});
        check_type(nsdef, &mut bad, "Namespace", "v1").unwrap();
        assert_eq!(
            prepare_create(nsdef, &mut bad, "", "t").unwrap_err().code,
            422
        );
    }

    #[test]
    fn update_rules() {
        let pods = find("", "v1", "pods").unwrap();
        let mut old = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        check_type(pods, &mut old, "Pod", "v1").unwrap();
        prepare_create(pods, &mut old, "default", "t").unwrap();
        old["metadata"]["resourceVersion"] = "7".into();
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"a": "b"});
        new["status"]["phase"] = "Running".into();
        let out = prepare_update(pods, new.clone(), &old, false).unwrap();
        assert_eq!(out["metadata"]["labels"]["a"], "b");
        assert_eq!(
            out["status"]["phase"], "Pending",
            "main resource ignores status"
        );
        let out = prepare_update(pods, new.clone(), &old, true).unwrap();
        assert_eq!(out["status"]["phase"], "Running");
        new["metadata"]["resourceVersion"] = "6".into();
        assert_eq!(
            prepare_update(pods, new.clone(), &old, false)
                .unwrap_err()
                .reason,
            "Conflict"
        );
        new["metadata"]["resourceVersion"] = "".into();
        new["metadata"]["name"] = "other".into();
        assert_eq!(
            prepare_update(pods, new, &old, false).unwrap_err().code,
            400
        );
    }

    #[test]
    fn pod_deletion() {
        let pods = find("", "v1", "pods").unwrap();
        let bound = json!({"metadata": {"name": "web", "uid": "u1", "resourceVersion": "3"},
                           "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30}, "status": {"phase": "Running"}});
        let d = delete_decision(pods, &bound, &DeleteOptions::default(), ts()).unwrap();
        let DeleteDecision::Update(o) = d else {
            panic!("graceful")
        };
        assert_eq!(o["metadata"]["deletionTimestamp"], "2024-01-01T00:00:30Z");
        assert_eq!(o["metadata"]["deletionGracePeriodSeconds"], 30);
        // A second delete with a longer or equal grace period changes nothing; shorter shortens.
        assert_eq!(
            delete_decision(pods, &o, &DeleteOptions::default(), ts()).unwrap(),
            DeleteDecision::Unchanged
        );
        let short = DeleteOptions {
            grace_period_seconds: Some(5),
            ..Default::default()
        };
        assert!(matches!(
            delete_decision(pods, &o, &short, ts()).unwrap(),
            DeleteDecision::Update(_)
        ));
        let now = DeleteOptions {
            grace_period_seconds: Some(0),
            uid: Some("u1".into()),
            ..Default::default()
        };
        assert_eq!(
            delete_decision(pods, &o, &now, ts()).unwrap(),
            DeleteDecision::Remove
        );
        let wrong = DeleteOptions {
            grace_period_seconds: Some(0),
            uid: Some("u2".into()),
            ..Default::default()
        };
        let e = delete_decision(pods, &o, &wrong, ts()).unwrap_err();
        assert_eq!(e.code, 409);
        assert!(e
            .message
            .contains("Precondition failed: UID in precondition: u2"));
        let unbound = json!({"metadata": {"name": "web"}, "spec": {}});
        assert_eq!(
            delete_decision(pods, &unbound, &DeleteOptions::default(), ts()).unwrap(),
            DeleteDecision::Remove
        );
    }

    #[test]
    fn finalizers_keep_objects() {
        let cms = find("", "v1", "configmaps").unwrap();
        let cm = json!({"metadata": {"name": "c", "finalizers": ["x/y"]}});
        let DeleteDecision::Update(o) =
            delete_decision(cms, &cm, &DeleteOptions::default(), ts()).unwrap()
        else {
            panic!()
        };
        assert_eq!(o["metadata"]["deletionTimestamp"], "2024-01-01T00:00:00Z");
        assert!(!should_delete_after_update(&o));
        let mut cleared = o.clone();
        cleared["metadata"]["finalizers"] = json!([]);
        assert!(should_delete_after_update(&cleared));
        assert!(!should_delete_after_update(&cm));
    }
}
