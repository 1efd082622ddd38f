//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) for the
//! few kinds that typed clients (kubectl >= 1.33 `create configmap|secret|namespace|serviceaccount|
//! service`) send that way. Responses are always JSON (clients accept it).
//!
//! The envelope is `k8s\0` + runtime.Unknown{typeMeta{apiVersion, kind}, raw}. Messages are decoded
//! by a small field table per type (field numbers from k8s.io/api generated.proto); unknown fields
//! are skipped; zero scalars are omitted like Go's `omitempty`.
use base64::Engine;
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtoError {
    #[error("not a kubernetes protobuf envelope")]
    NoEnvelope,
    #[error("truncated or malformed protobuf")]
    Malformed,
    #[error("protobuf bodies of kind {0:?} are not supported; send JSON")]
    UnsupportedKind(String),
}

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Msg(&'static [Field]),
    MapStr,
    MapBytes,
    Time,
    IntOrString,
}

#[derive(Clone, Copy)]
struct Field {
    num: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

const fn f(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
    }
}
const fn r(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: true,
    }
}

const OWNER_REF: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
    f(6, "controller", Ty::Bool),
    f(7, "blockOwnerDeletion", Ty::Bool),
];
const OBJECT_META: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "generateName", Ty::Str),
    f(3, "namespace", Ty::Str),
    f(5, "uid", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "generation", Ty::Int),
    f(8, "creationTimestamp", Ty::Time),
    f(9, "deletionTimestamp", Ty::Time),
    f(10, "deletionGracePeriodSeconds", Ty::Int),
    f(11, "labels", Ty::MapStr),
    f(12, "annotations", Ty::MapStr),
    r(13, "ownerReferences", Ty::Msg(OWNER_REF)),
    r(14, "finalizers", Ty::Str),
];
const OBJECT_REF: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(2, "namespace", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "fieldPath", Ty::Str),
];
const LOCAL_REF: &[Field] = &[f(1, "name", Ty::Str)];
const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "data", Ty::MapStr),
    f(3, "binaryData", Ty::MapBytes),
    f(4, "immutable", Ty::Bool),
];
const SECRET: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "data", Ty::MapBytes),
    f(3, "type", Ty::Str),
    f(4, "stringData", Ty::MapStr),
    f(5, "immutable", Ty::Bool),
];
const NAMESPACE_SPEC: &[Field] = &[r(1, "finalizers", Ty::Str)];
const NAMESPACE_STATUS: &[Field] = &[f(1, "phase", Ty::Str)];
const NAMESPACE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(NAMESPACE_SPEC)),
    f(3, "status", Ty::Msg(NAMESPACE_STATUS)),
];
const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    r(2, "secrets", Ty::Msg(OBJECT_REF)),
    r(3, "imagePullSecrets", Ty::Msg(LOCAL_REF)),
    f(4, "automountServiceAccountToken", Ty::Bool),
];
const SERVICE_PORT: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "protocol", Ty::Str),
    f(3, "port", Ty::Int),
    f(4, "targetPort", Ty::IntOrString),
    f(5, "nodePort", Ty::Int),
    f(6, "appProtocol", Ty::Str),
];
const SERVICE_SPEC: &[Field] = &[
    r(1, "ports", Ty::Msg(SERVICE_PORT)),
    f(2, "selector", Ty::MapStr),
    f(3, "clusterIP", Ty::Str),
    f(4, "type", Ty::Str),
    r(5, "externalIPs", Ty::Str),
    f(7, "sessionAffinity", Ty::Str),
    f(8, "loadBalancerIP", Ty::Str),
    r(9, "loadBalancerSourceRanges", Ty::Str),
    f(10, "externalName", Ty::Str),
    f(11, "externalTrafficPolicy", Ty::Str),
    f(12, "healthCheckNodePort", Ty::Int),
    f(13, "publishNotReadyAddresses", Ty::Bool),
    r(18, "clusterIPs", Ty::Str),
    r(19, "ipFamilies", Ty::Str),
    f(17, "ipFamilyPolicy", Ty::Str),
    f(20, "allocateLoadBalancerNodePorts", Ty::Bool),
    f(22, "internalTrafficPolicy", Ty::Str),
];
const SERVICE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(SERVICE_SPEC)),
];
const PRECONDITIONS: &[Field] = &[f(1, "uid", Ty::Str), f(2, "resourceVersion", Ty::Str)];
const DELETE_OPTIONS: &[Field] = &[
    f(1, "gracePeriodSeconds", Ty::Int),
    f(2, "preconditions", Ty::Msg(PRECONDITIONS)),
    f(3, "orphanDependents", Ty::Bool),
    f(4, "propagationPolicy", Ty::Str),
    r(5, "dryRun", Ty::Str),
];
const BINDING: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "target", Ty::Msg(OBJECT_REF)),
];

// rbac.authorization.k8s.io/v1 (kubectl create role|clusterrole|rolebinding|clusterrolebinding).
const POLICY_RULE: &[Field] = &[
    r(1, "verbs", Ty::Str),
    r(2, "apiGroups", Ty::Str),
    r(3, "resources", Ty::Str),
    r(4, "resourceNames", Ty::Str),
    r(5, "nonResourceURLs", Ty::Str),
];
const LABEL_SELECTOR_REQUIREMENT: &[Field] = &[
    f(1, "key", Ty::Str),
    f(2, "operator", Ty::Str),
    r(3, "values", Ty::Str),
];
const LABEL_SELECTOR: &[Field] = &[
    f(1, "matchLabels", Ty::MapStr),
    r(2, "matchExpressions", Ty::Msg(LABEL_SELECTOR_REQUIREMENT)),
];
const AGGREGATION_RULE: &[Field] = &[r(1, "clusterRoleSelectors", Ty::Msg(LABEL_SELECTOR))];
const ROLE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    r(2, "rules", Ty::Msg(POLICY_RULE)),
];
const CLUSTER_ROLE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    r(2, "rules", Ty::Msg(POLICY_RULE)),
    f(3, "aggregationRule", Ty::Msg(AGGREGATION_RULE)),
];
const SUBJECT: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(2, "apiGroup", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "namespace", Ty::Str),
];
const ROLE_REF: &[Field] = &[f(1, "apiGroup", Ty::Str), f(2, "kind", Ty::Str), f(3, "name", Ty::Str)];
const ROLE_BINDING: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    r(2, "subjects", Ty::Msg(SUBJECT)),
    f(3, "roleRef", Ty::Msg(ROLE_REF)),
];
// authorization.k8s.io/v1 and authentication.k8s.io/v1 reviews (kubectl auth can-i / whoami).
const FIELD_SELECTOR_REQUIREMENT: &[Field] = &[
    f(1, "key", Ty::Str),
    f(2, "operator", Ty::Str),
    r(3, "values", Ty::Str),
];
const FIELD_SELECTOR_ATTRIBUTES: &[Field] = &[
    f(1, "rawSelector", Ty::Str),
    r(2, "requirements", Ty::Msg(FIELD_SELECTOR_REQUIREMENT)),
];
const LABEL_SELECTOR_ATTRIBUTES: &[Field] = &[
    f(1, "rawSelector", Ty::Str),
    r(2, "requirements", Ty::Msg(LABEL_SELECTOR_REQUIREMENT)),
];
const RESOURCE_ATTRIBUTES: &[Field] = &[
    f(1, "namespace", Ty::Str),
    f(2, "verb", Ty::Str),
    f(3, "group", Ty::Str),
    f(4, "version", Ty::Str),
    f(5, "resource", Ty::Str),
    f(6, "subresource", Ty::Str),
    f(7, "name", Ty::Str),
    f(8, "fieldSelector", Ty::Msg(FIELD_SELECTOR_ATTRIBUTES)),
    f(9, "labelSelector", Ty::Msg(LABEL_SELECTOR_ATTRIBUTES)),
];
const NON_RESOURCE_ATTRIBUTES: &[Field] = &[f(1, "path", Ty::Str), f(2, "verb", Ty::Str)];
const SELF_SAR_SPEC: &[Field] = &[
    f(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
    f(2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
];
const SAR_SPEC: &[Field] = &[
    f(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
    f(2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
    f(3, "user", Ty::Str),
    r(4, "groups", Ty::Str),
    f(6, "uid", Ty::Str),
];
const SELF_SAR: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(SELF_SAR_SPEC)),
];
const SAR: &[Field] = &[f(1, "metadata", Ty::Msg(OBJECT_META)), f(2, "spec", Ty::Msg(SAR_SPEC))];
const SSRR_SPEC: &[Field] = &[f(1, "namespace", Ty::Str)];
const SSRR: &[Field] = &[f(1, "metadata", Ty::Msg(OBJECT_META)), f(2, "spec", Ty::Msg(SSRR_SPEC))];
const SELF_SUBJECT_REVIEW: &[Field] = &[f(1, "metadata", Ty::Msg(OBJECT_META))];

fn schema(kind: &str) -> Option<&'static [Field]> {
    Some(match kind {
        "Role" => ROLE,
        "ClusterRole" => CLUSTER_ROLE,
        "RoleBinding" | "ClusterRoleBinding" => ROLE_BINDING,
        "SelfSubjectAccessReview" => SELF_SAR,
        "SubjectAccessReview" | "LocalSubjectAccessReview" => SAR,
        "SelfSubjectRulesReview" => SSRR,
        "SelfSubjectReview" => SELF_SUBJECT_REVIEW,
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Service" => SERVICE,
        "DeleteOptions" => DELETE_OPTIONS,
        "Binding" => BINDING,
        _ => return None,
    })
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.b.split_first().ok_or(ProtoError::Malformed)?;
            self.b = rest;
            v |= ((byte & 0x7f) as u64) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtoError::Malformed)
    }
    fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let n = self.varint()? as usize;
        if n > self.b.len() {
            return Err(ProtoError::Malformed);
        }
        let (x, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(x)
    }
    fn skip(&mut self, wire: u64) -> Result<(), ProtoError> {
        let n = match wire {
            0 => {
                self.varint()?;
                return Ok(());
            }
            1 => 8,
            2 => {
                self.bytes()?;
                return Ok(());
            }
            5 => 4,
            _ => return Err(ProtoError::Malformed),
        };
        if n > self.b.len() {
            return Err(ProtoError::Malformed);
        }
        self.b = &self.b[n..];
        Ok(())
    }
}

/// Iterate over (field number, wire type, reader positioned at the value).
fn fields<'a>(
    buf: &'a [u8],
    mut each: impl FnMut(u64, u64, &mut Reader<'a>) -> Result<(), ProtoError>,
) -> Result<(), ProtoError> {
    let mut rd = Reader { b: buf };
    while !rd.b.is_empty() {
        let key = rd.varint()?;
        each(key >> 3, key & 7, &mut rd)?;
    }
    Ok(())
}

fn map_entry(buf: &[u8], bytes_value: bool) -> Result<(String, Value), ProtoError> {
    let mut k = String::new();
    let mut v = Value::String(String::new());
    fields(buf, |num, wire, rd| {
        match (num, wire) {
            (1, 2) => k = String::from_utf8_lossy(rd.bytes()?).into_owned(),
            (2, 2) => {
                let b = rd.bytes()?;
                v = if bytes_value {
                    base64::engine::general_purpose::STANDARD.encode(b).into()
                } else {
                    String::from_utf8_lossy(b).into_owned().into()
                };
            }
            (_, w) => rd.skip(w)?,
        }
        Ok(())
    })?;
    Ok((k, v))
}

fn time(buf: &[u8]) -> Result<Option<Value>, ProtoError> {
    let mut secs = 0i64;
    fields(buf, |num, wire, rd| {
        match (num, wire) {
            (1, 0) => secs = rd.varint()? as i64,
            (_, w) => rd.skip(w)?,
        }
        Ok(())
    })?;
    if secs == 0 {
        return Ok(None);
    }
    Ok(jiff::Timestamp::from_second(secs)
        .ok()
        .map(|t| super::object::format_time(t).into()))
}

fn int_or_string(buf: &[u8]) -> Result<Value, ProtoError> {
    let (mut ty, mut i, mut s) = (0u64, 0i64, String::new());
    fields(buf, |num, wire, rd| {
        match (num, wire) {
            (1, 0) => ty = rd.varint()?,
            (2, 0) => i = rd.varint()? as i32 as i64,
            (3, 2) => s = String::from_utf8_lossy(rd.bytes()?).into_owned(),
            (_, w) => rd.skip(w)?,
        }
        Ok(())
    })?;
    Ok(if ty == 1 { s.into() } else { i.into() })
}

fn message(buf: &[u8], schema: &[Field]) -> Result<Map<String, Value>, ProtoError> {
    let mut out = Map::new();
    fields(buf, |num, wire, rd| {
        let Some(fd) = schema.iter().find(|f| f.num == num) else {
            return rd.skip(wire);
        };
        let value: Option<Value> = match (fd.ty, wire) {
            (Ty::Str, 2) => Some(String::from_utf8_lossy(rd.bytes()?).into_owned().into()),
            (Ty::Int, 0) => Some((rd.varint()? as i64).into()),
            (Ty::Bool, 0) => Some((rd.varint()? != 0).into()),
            (Ty::Msg(s), 2) => Some(Value::Object(message(rd.bytes()?, s)?)),
            (Ty::Time, 2) => time(rd.bytes()?)?,
            (Ty::IntOrString, 2) => Some(int_or_string(rd.bytes()?)?),
            (Ty::MapStr | Ty::MapBytes, 2) => {
                let (k, v) = map_entry(rd.bytes()?, matches!(fd.ty, Ty::MapBytes))?;
                let m = out
                    .entry(fd.name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(m) = m.as_object_mut() {
                    m.insert(k, v);
                }
                None
            }
            (_, w) => {
                rd.skip(w)?;
                None
            }
        };
        if let Some(v) = value {
            if fd.repeated {
                let a = out.entry(fd.name).or_insert_with(|| Value::Array(vec![]));
                if let Some(a) = a.as_array_mut() {
                    a.push(v);
                }
            } else if !is_zero(&v) {
                out.insert(fd.name.into(), v);
            }
        }
        Ok(())
    })?;
    Ok(out)
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Bool(b) => !b,
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// Decode a protobuf request body into the equivalent JSON object.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body.strip_prefix(b"k8s\0").ok_or(ProtoError::NoEnvelope)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    fields(rest, |num, wire, rd| {
        match (num, wire) {
            (1, 2) => {
                let tm = rd.bytes()?;
                fields(tm, |n, w, r2| {
                    match (n, w) {
                        (1, 2) => api_version = String::from_utf8_lossy(r2.bytes()?).into_owned(),
                        (2, 2) => kind = String::from_utf8_lossy(r2.bytes()?).into_owned(),
                        (_, w) => r2.skip(w)?,
                    }
                    Ok(())
                })?;
            }
            (2, 2) => raw = rd.bytes()?,
            (_, w) => rd.skip(w)?,
        }
        Ok(())
    })?;
    let s = schema(&kind).ok_or_else(|| ProtoError::UnsupportedKind(kind.clone()))?;
    let mut obj = message(raw, s)?;
    obj.insert("apiVersion".into(), api_version.into());
    obj.insert("kind".into(), kind.into());
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn ld(num: u64, body: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        ld(1, k.as_bytes(), &mut e);
        ld(2, v, &mut e);
        e
    }

    #[test]
    fn decodes_a_configmap_envelope() {
        let mut meta = Vec::new();
        ld(1, b"c1", &mut meta);
        ld(3, b"", &mut meta); // empty namespace: omitted
        ld(11, &entry("app", b"web"), &mut meta);
        ld(14, b"f1", &mut meta);
        varint(7 << 3, &mut meta);
        varint(0, &mut meta); // generation 0: omitted
        let mut cm = Vec::new();
        ld(1, &meta, &mut cm);
        ld(2, &entry("a", b"b"), &mut cm);
        ld(2, &entry("c", b"d"), &mut cm);
        ld(3, &entry("bin", &[0, 1]), &mut cm);
        varint(99 << 3, &mut cm); // unknown varint field: skipped
        varint(5, &mut cm);
        let mut tm = Vec::new();
        ld(1, b"v1", &mut tm);
        ld(2, b"ConfigMap", &mut tm);
        let mut env = b"k8s\0".to_vec();
        ld(1, &tm, &mut env);
        ld(2, &cm, &mut env);
        ld(4, b"application/vnd.kubernetes.protobuf", &mut env);
        let v = decode(&env).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "c1", "labels": {"app": "web"}, "finalizers": ["f1"]},
                   "data": {"a": "b", "c": "d"}, "binaryData": {"bin": "AAE="}})
        );
    }

    #[test]
    fn errors() {
        assert_eq!(decode(b"{}").unwrap_err(), ProtoError::NoEnvelope);
        assert_eq!(decode(b"k8s\0\x0a\x05").unwrap_err(), ProtoError::Malformed);
        let mut tm = Vec::new();
        ld(2, b"Deployment", &mut tm);
        let mut env = b"k8s\0".to_vec();
        ld(1, &tm, &mut env);
        assert_eq!(
            decode(&env).unwrap_err(),
            ProtoError::UnsupportedKind("Deployment".into())
        );
    }

    #[test]
    fn int_or_string_and_time() {
        let mut port = Vec::new();
        varint(3 << 3, &mut port);
        varint(80, &mut port);
        let mut tp = Vec::new();
        varint(1 << 3, &mut tp);
        varint(1, &mut tp);
        ld(3, b"http", &mut tp);
        ld(4, &tp, &mut port);
        let m = message(&port, SERVICE_PORT).unwrap();
        assert_eq!(Value::Object(m), json!({"port": 80, "targetPort": "http"}));
        let mut t = Vec::new();
        varint(1 << 3, &mut t);
        varint(1_704_067_200, &mut t);
        assert_eq!(time(&t).unwrap(), Some(json!("2024-01-01T00:00:00Z")));
    }
}
