//! Pod-specific pure logic: defaulting, validation, QoS class, update rules.
use serde_json::{json, Map, Value};

use super::object::{validate_dns_label, validate_dns_subdomain};
use super::status::Cause;

/// The default pull policy for an image: Always for `:latest` or no tag, IfNotPresent otherwise.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn set_default(m: &mut Map<String, Value>, k: &str, v: Value) {
    if m.get(k).is_none_or(Value::is_null) {
        m.insert(k.into(), v);
    }
}

fn default_container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    let image = m
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    set_default(m, "imagePullPolicy", default_pull_policy(&image).into());
    set_default(m, "terminationMessagePath", "/dev/termination-log".into());
    set_default(m, "terminationMessagePolicy", "File".into());
    set_default(m, "resources", json!({}));
    if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", "TCP".into());
        }
    }
    // Requests default to limits (core/v1 SetDefaults_ResourceRequirements).
    if let Some(res) = m.get_mut("resources").and_then(Value::as_object_mut) {
        if let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() {
            let req = res.entry("requests").or_insert_with(|| json!({}));
            if let Some(req) = req.as_object_mut() {
                for (k, v) in limits {
                    req.entry(k).or_insert(v);
                }
            }
        }
    }
}

/// Apply kube-apiserver's defaults (v1 defaulting plus the DefaultTolerationSeconds, Priority
/// and ServiceAccount admission defaults, without the token volume) to a new pod.
pub fn default_pod(pod: &mut Value) {
    let Some(obj) = pod.as_object_mut() else {
        return;
    };
    let spec = obj.entry("spec").or_insert_with(|| json!({}));
    if let Some(s) = spec.as_object_mut() {
        set_default(s, "restartPolicy", "Always".into());
        set_default(s, "dnsPolicy", "ClusterFirst".into());
        set_default(s, "schedulerName", "default-scheduler".into());
        set_default(s, "terminationGracePeriodSeconds", 30.into());
        set_default(s, "securityContext", json!({}));
        set_default(s, "enableServiceLinks", true.into());
        set_default(s, "priority", 0.into());
        set_default(s, "preemptionPolicy", "PreemptLowerPriority".into());
        set_default(s, "serviceAccountName", "default".into());
        let sa = s.get("serviceAccountName").cloned().unwrap_or_default();
        set_default(s, "serviceAccount", sa);
        for key in ["containers", "initContainers"] {
            if let Some(cs) = s.get_mut(key).and_then(Value::as_array_mut) {
                cs.iter_mut().for_each(default_container);
            }
        }
        let tolerations = s.entry("tolerations").or_insert_with(|| json!([]));
        if let Some(ts) = tolerations.as_array_mut() {
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            ] {
                let present = ts.iter().any(|t| {
                    let k = t.get("key").and_then(Value::as_str);
                    let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
                    (k == Some(key) || (k.is_none() && t.get("operator") == Some(&json!("Exists"))))
                        && (effect.is_empty() || effect == "NoExecute")
                });
                if !present {
                    ts.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
                }
            }
        }
    }
    let qos = crate::k8s::qos::pod_json_qos_class(pod);
    let obj = pod.as_object_mut().expect("checked above");
    let status = obj.entry("status").or_insert_with(|| json!({}));
    if let Some(st) = status.as_object_mut() {
        set_default(st, "phase", "Pending".into());
        st.insert("qosClass".into(), qos.into());
    }
}

/// Validate a pod's spec (metadata is validated generically).
pub fn validate_pod(pod: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required("spec.containers", "")),
        Some(cs) if cs.is_empty() => causes.push(Cause::required("spec.containers", "")),
        Some(_) => {}
    }
    let mut seen: Vec<String> = Vec::new();
    for key in ["initContainers", "containers"] {
        let Some(cs) = pod
            .pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
        else {
            continue;
        };
        for (i, c) in cs.iter().enumerate() {
            let path = format!("spec.{key}[{i}]");
            match c.get("name").and_then(Value::as_str).unwrap_or("") {
                "" => causes.push(Cause::required(format!("{path}.name"), "")),
                n => {
                    if let Some(msg) = validate_dns_label(n) {
                        causes.push(Cause::invalid(format!("{path}.name"), &json!(n), &msg));
                    } else if seen.iter().any(|s| s == n) {
                        causes.push(Cause::duplicate(format!("{path}.name"), &json!(n)));
                    }
                    seen.push(n.to_string());
                }
            }
            if c.get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim()
                .is_empty()
            {
                causes.push(Cause::required(format!("{path}.image"), ""));
            }
            if let Some(p) = c.get("imagePullPolicy").and_then(Value::as_str) {
                if !["Always", "IfNotPresent", "Never"].contains(&p) {
                    causes.push(Cause::unsupported(
                        format!("{path}.imagePullPolicy"),
                        &json!(p),
                        &["Always", "IfNotPresent", "Never"],
                    ));
                }
            }
        }
    }
    if let Some(p) = pod.pointer("/spec/restartPolicy").and_then(Value::as_str) {
        if !["Always", "OnFailure", "Never"].contains(&p) {
            causes.push(Cause::unsupported(
                "spec.restartPolicy",
                &json!(p),
                &["Always", "OnFailure", "Never"],
            ));
        }
    }
    if let Some(v) = pod.pointer("/spec/activeDeadlineSeconds").filter(|v| !v.is_null()) {
        // kube: 1 ..= math.MaxInt32 (validation.InclusiveRangeError).
        if !v.as_i64().is_some_and(|n| (1..=i64::from(i32::MAX)).contains(&n)) {
            causes.push(Cause::invalid(
                "spec.activeDeadlineSeconds",
                v,
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    if let Some(n) = pod.pointer("/spec/nodeName").and_then(Value::as_str) {
        if !n.is_empty() {
            if let Some(msg) = validate_dns_subdomain(n) {
                causes.push(Cause::invalid("spec.nodeName", &json!(n), &msg));
            }
        }
    }
    causes
}

/// Strip the fields a pod update may change (images, activeDeadlineSeconds, added tolerations,
/// terminationGracePeriodSeconds), so two specs can be compared for forbidden changes.
fn mutable_masked(spec: &Value) -> Value {
    let mut s = spec.clone();
    if let Some(m) = s.as_object_mut() {
        for key in ["containers", "initContainers"] {
            if let Some(cs) = m.get_mut(key).and_then(Value::as_array_mut) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
        m.remove("activeDeadlineSeconds");
        m.remove("tolerations");
        m.remove("terminationGracePeriodSeconds");
    }
    s
}

/// Validate a pod spec update (kube: only images, activeDeadlineSeconds, tolerations additions
/// and terminationGracePeriodSeconds may change).
pub fn validate_pod_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = validate_pod(new);
    let ns = new.get("spec").cloned().unwrap_or_default();
    let os = old.get("spec").cloned().unwrap_or_default();
    if mutable_masked(&ns) != mutable_masked(&os) {
        causes.push(Cause::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    causes
}

/// Whether a pod is bound to a node.
pub fn is_bound(pod: &Value) -> bool {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty())
}

/// Whether the pod reached a terminal phase.
pub fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// The grace period kube-apiserver uses for a pod deletion: the requested one (or the spec's),
/// but 0 for unbound or terminal pods.
pub fn deletion_grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    if !is_bound(pod) || is_terminal(pod) {
        return 0;
    }
    let spec = pod
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30);
    let g = requested.unwrap_or(spec);
    // kube: a negative grace period means "use 1" (a requested -1 is rejected earlier by validation).
    if g < 0 {
        1
    } else {
        g
    }
}

/// Apply a v1 Binding to a pod: set spec.nodeName and the PodScheduled condition.
pub fn bind(pod: &mut Value, node: &str, now: &str) {
    pod["spec"]["nodeName"] = node.into();
    let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let status = pod
        .as_object_mut()
        .expect("pod is an object")
        .entry("status")
        .or_insert_with(|| json!({}));
    let conds = status
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
    if let Some(Value::Array(cs)) = conds {
        cs.retain(|c| c.get("type") != Some(&json!("PodScheduled")));
        cs.push(cond);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("x/busybox:1"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(
            default_pull_policy("localhost:5000/busybox:1.36"),
            "IfNotPresent"
        );
        assert_eq!(default_pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn pod_defaults() {
        let mut p = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "web", "image": "x/busybox:1", "ports": [{"containerPort": 80}]}]}});
        default_pod(&mut p);
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        assert_eq!(p["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(p["spec"]["schedulerName"], "default-scheduler");
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(p["spec"]["securityContext"], json!({}));
        assert_eq!(p["spec"]["enableServiceLinks"], true);
        assert_eq!(p["spec"]["priority"], 0);
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        let ts = p["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(ts.len(), 2);
        assert_eq!(ts[0]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(ts[1]["tolerationSeconds"], 300);
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["status"]["qosClass"], "BestEffort");
        // Idempotent.
        let before = p.clone();
        default_pod(&mut p);
        assert_eq!(p, before);
    }

    #[test]
    fn qos() {
        // Defaulting copies limits to requests before the class is computed.
        let mut g = json!({"metadata": {"name": "g"}, "spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        default_pod(&mut g);
        assert_eq!(g["status"]["qosClass"], "Guaranteed");
        let b = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(crate::k8s::qos::pod_json_qos_class(&b), "Burstable");
        let e = json!({"spec": {"containers": [{"resources": {}}]}});
        assert_eq!(crate::k8s::qos::pod_json_qos_class(&e), "BestEffort");
    }

    #[test]
    fn pod_validation() {
        let fields = |p: Value| {
            validate_pod(&p)
                .into_iter()
                .map(|c| c.field)
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(json!({"spec": {}})), vec!["spec.containers"]);
        assert_eq!(
            fields(
                json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}, {"image": "z"}, {"name": "b"}]}})
            ),
            vec![
                "spec.containers[1].name",
                "spec.containers[2].name",
                "spec.containers[3].image"
            ]
        );
        let c = validate_pod(&json!({"spec": {"containers": [{"name": "A", "image": "x"}]}}));
        assert_eq!(c[0].reason, "FieldValueInvalid");
        assert!(
            validate_pod(&json!({"spec": {"containers": [{"name": "a", "image": "x"}]}}))
                .is_empty()
        );
    }

    #[test]
    fn pod_update_rules() {
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x"}], "nodeName": ""}});
        let new = json!({"spec": {"containers": [{"name": "a", "image": "y"}], "nodeName": ""}});
        assert!(validate_pod_update(&new, &old).is_empty());
        let new = json!({"spec": {"containers": [{"name": "a", "image": "x"}], "nodeName": "n1"}});
        assert_eq!(validate_pod_update(&new, &old)[0].field, "spec");
    }

    #[test]
    fn grace_periods() {
        let bound = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10}, "status": {"phase": "Running"}});
        assert_eq!(deletion_grace_period(&bound, None), 10);
        assert_eq!(deletion_grace_period(&bound, Some(0)), 0);
        assert_eq!(deletion_grace_period(&bound, Some(5)), 5);
        let unbound = json!({"spec": {"terminationGracePeriodSeconds": 10}});
        assert_eq!(deletion_grace_period(&unbound, Some(5)), 0);
        let done = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}});
        assert_eq!(deletion_grace_period(&done, None), 0);
    }

    #[test]
    fn binding() {
        let mut p = json!({"spec": {}, "status": {"phase": "Pending"}});
        bind(&mut p, "n1", "2024-01-01T00:00:00Z");
        assert_eq!(p["spec"]["nodeName"], "n1");
        assert_eq!(p["status"]["conditions"][0]["type"], "PodScheduled");
        assert_eq!(p["status"]["conditions"][0]["status"], "True");
    }
}
