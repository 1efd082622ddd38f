//! Server-side Table output (meta.k8s.io/v1 Table), following kube-apiserver's
//! pkg/printers/internalversion/printers.go.
use serde_json::{json, Value};

use super::resources::{Printer, ResourceDef};

/// Which object each row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> IncludeObject {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// kube's duration.HumanDuration.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 8 * 24 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, h)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{}d", hours / 24 / 365, dy)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// translateTimestampSince: `<unknown>` for missing times.
pub fn age(ts: Option<&Value>, now: jiff::Timestamp) -> String {
    let Some(t) = ts
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    else {
        return "<unknown>".into();
    };
    human_duration(now.duration_since(t).as_secs())
}

fn col(name: &str, ty: &str, priority: i32, description: &str) -> Value {
    let mut c = json!({"name": name, "type": ty, "format": "", "description": description, "priority": priority});
    if name == "Name" {
        c["format"] = "name".into();
    }
    c
}

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// Column definitions for a resource.
pub fn columns(printer: Printer) -> Vec<Value> {
    match printer {
        Printer::Pod => vec![
            col("Name", "string", 0, NAME_DESC),
            col("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
            col("Status", "string", 0, "The aggregate status of the containers in this pod."),
            col("Restarts", "string", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            col("Age", "string", 0, AGE_DESC),
            col("IP", "string", 1, "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
            col("Node", "string", 1, "NodeName is a request to schedule this pod onto a specific node."),
            col("Nominated Node", "string", 1, "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods."),
            col("Readiness Gates", "string", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
        ],
        Printer::Node => vec![
            col("Name", "string", 0, NAME_DESC),
            col("Status", "string", 0, "The status of the node"),
            col("Roles", "string", 0, "The roles of the node"),
            col("Age", "string", 0, AGE_DESC),
            col("Version", "string", 0, "Kubelet Version reported by the node."),
            col("Internal-IP", "string", 1, "List of internal IPs."),
            col("External-IP", "string", 1, "List of external IPs."),
            col("OS-Image", "string", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
            col("Kernel-Version", "string", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
            col("Container-Runtime", "string", 1, "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
        ],
        Printer::Namespace => vec![
            col("Name", "string", 0, NAME_DESC),
            col("Status", "string", 0, "The status of the namespace"),
            col("Age", "string", 0, AGE_DESC),
        ],
        Printer::Event => vec![
            col("Last Seen", "string", 0, "The time at which the most recent occurrence of this event was recorded."),
            col("Type", "string", 0, "Type of this event (Normal, Warning), new types could be added in the future."),
            col("Reason", "string", 0, "This should be a short, machine understandable string that gives the reason for this event being generated."),
            col("Object", "string", 0, "The object that this event is about."),
            col("Subobject", "string", 1, "The subobject that this event is about."),
            col("Source", "string", 1, "The component reporting this event."),
            col("Message", "string", 0, "A human-readable description of the status of this operation."),
            col("First Seen", "string", 1, "The time at which the event was first recorded."),
            col("Count", "string", 1, "The number of times this event has occurred."),
            col("Name", "string", 1, NAME_DESC),
        ],
        Printer::Default => vec![col("Name", "string", 0, NAME_DESC), col("Age", "string", 0, AGE_DESC)],
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn or_none(x: &str) -> String {
    if x.is_empty() {
        "<none>".into()
    } else {
        x.to_string()
    }
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The pod's STATUS column, like printPod.
pub fn pod_status_reason(pod: &Value) -> String {
    let phase = s(pod, "/status/phase");
    let mut reason = if s(pod, "/status/reason").is_empty() {
        phase.to_string()
    } else {
        s(pod, "/status/reason").to_string()
    };
    for c in arr(pod, "/status/conditions") {
        if s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated" {
            reason = "SchedulingGated".into();
        }
    }
    let init_specs = arr(pod, "/spec/initContainers");
    let mut initializing = false;
    for (i, c) in arr(pod, "/status/initContainerStatuses").iter().enumerate() {
        let term = c.pointer("/state/terminated");
        let waiting = c.pointer("/state/waiting");
        let restartable = init_specs
            .iter()
            .find(|sp| s(sp, "/name") == s(c, "/name"))
            .is_some_and(|sp| s(sp, "/restartPolicy") == "Always");
        if term.is_some_and(|t| t.get("exitCode").and_then(Value::as_i64) == Some(0)) {
            continue;
        }
        if restartable && c.get("started") == Some(&Value::Bool(true)) {
            continue;
        }
        if let Some(t) = term {
            reason = if s(t, "/reason").is_empty() {
                match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                    Some(sig) => format!("Init:Signal:{sig}"),
                    None => format!(
                        "Init:ExitCode:{}",
                        t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                    ),
                }
            } else {
                format!("Init:{}", s(t, "/reason"))
            };
        } else if let Some(w) =
            waiting.filter(|w| !s(w, "/reason").is_empty() && s(w, "/reason") != "PodInitializing")
        {
            reason = format!("Init:{}", s(w, "/reason"));
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }
    let initialized = arr(pod, "/status/conditions")
        .iter()
        .any(|c| s(c, "/type") == "Initialized" && s(c, "/status") == "True");
    if !initializing || initialized {
        let mut has_running = false;
        for c in arr(pod, "/status/containerStatuses").iter().rev() {
            let waiting = c.pointer("/state/waiting");
            let term = c.pointer("/state/terminated");
            if let Some(w) = waiting.filter(|w| !s(w, "/reason").is_empty()) {
                reason = s(w, "/reason").to_string();
            } else if let Some(t) = term.filter(|t| !s(t, "/reason").is_empty()) {
                reason = s(t, "/reason").to_string();
            } else if let Some(t) = term {
                reason = match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                    Some(sig) => format!("Signal:{sig}"),
                    None => format!(
                        "ExitCode:{}",
                        t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)
                    ),
                };
            } else if c.get("ready") == Some(&Value::Bool(true))
                && c.pointer("/state/running").is_some()
            {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            let ready = arr(pod, "/status/conditions")
                .iter()
                .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True");
            reason = if ready {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    let deleting = super::object::is_deleting(pod);
    if deleting && s(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    reason
}

fn pod_cells(pod: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let total = arr(pod, "/spec/containers").len();
    let mut ready = 0;
    let mut restarts = 0i64;
    let mut last_restart: Option<jiff::Timestamp> = None;
    let init_specs = arr(pod, "/spec/initContainers");
    let mut consider = |c: &Value| {
        restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        if let Some(t) = c
            .pointer("/lastState/terminated/finishedAt")
            .and_then(Value::as_str)
            .and_then(|t| t.parse().ok())
        {
            if last_restart.is_none_or(|l| l < t) {
                last_restart = Some(t);
            }
        }
    };
    for c in arr(pod, "/status/initContainerStatuses") {
        let restartable = init_specs
            .iter()
            .find(|sp| s(sp, "/name") == s(c, "/name"))
            .is_some_and(|sp| s(sp, "/restartPolicy") == "Always");
        if restartable {
            consider(c);
        }
    }
    for c in arr(pod, "/status/containerStatuses") {
        consider(c);
        let w = c
            .pointer("/state/waiting")
            .is_some_and(|w| !s(w, "/reason").is_empty());
        let t = c.pointer("/state/terminated").is_some();
        if !w
            && !t
            && c.get("ready") == Some(&Value::Bool(true))
            && c.pointer("/state/running").is_some()
        {
            ready += 1;
        }
    }
    let restarts_str = match last_restart {
        Some(t) if restarts != 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now.duration_since(t).as_secs())
        ),
        _ => restarts.to_string(),
    };
    let ip = arr(pod, "/status/podIPs")
        .first()
        .map(|p| s(p, "/ip").to_string())
        .unwrap_or_default();
    let ip = if ip.is_empty() {
        s(pod, "/status/podIP").to_string()
    } else {
        ip
    };
    let gates = arr(pod, "/spec/readinessGates");
    let gates_str = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conds = arr(pod, "/status/conditions");
        let ok = gates
            .iter()
            .filter(|g| {
                conds
                    .iter()
                    .find(|c| s(c, "/type") == s(g, "/conditionType"))
                    .is_some_and(|c| s(c, "/status") == "True")
            })
            .count();
        format!("{ok}/{}", gates.len())
    };
    vec![
        s(pod, "/metadata/name").into(),
        format!("{ready}/{total}").into(),
        pod_status_reason(pod).into(),
        restarts_str.into(),
        age(pod.pointer("/metadata/creationTimestamp"), now).into(),
        or_none(&ip).into(),
        or_none(s(pod, "/spec/nodeName")).into(),
        or_none(s(pod, "/status/nominatedNodeName")).into(),
        gates_str.into(),
    ]
}

fn node_cells(node: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    let ready = arr(node, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == "Ready");
    match ready.map(|c| s(c, "/status")) {
        Some("True") => status.push("Ready".into()),
        Some("False") => status.push("NotReady".into()),
        _ => status.push("Unknown".into()),
    }
    if node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                if !r.is_empty() {
                    roles.push(r.into());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.push(v.into());
                }
            }
        }
    }
    roles.sort();
    roles.dedup();
    let addr = |ty: &str| {
        arr(node, "/status/addresses")
            .iter()
            .find(|a| s(a, "/type") == ty)
            .map(|a| s(a, "/address").to_string())
            .unwrap_or_default()
    };
    vec![
        s(node, "/metadata/name").into(),
        status.join(",").into(),
        (if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        })
        .into(),
        age(node.pointer("/metadata/creationTimestamp"), now).into(),
        s(node, "/status/nodeInfo/kubeletVersion").into(),
        or_none(&addr("InternalIP")).into(),
        or_none(&addr("ExternalIP")).into(),
        or_none(s(node, "/status/nodeInfo/osImage")).into(),
        or_none(s(node, "/status/nodeInfo/kernelVersion")).into(),
        or_none(s(node, "/status/nodeInfo/containerRuntimeVersion")).into(),
    ]
}

fn event_cells(ev: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let first_raw = ev
        .get("firstTimestamp")
        .filter(|v| !v.is_null())
        .or_else(|| ev.get("eventTime"));
    let first = age(first_raw, now);
    let mut last = match ev.get("lastTimestamp").filter(|v| !v.is_null()) {
        Some(t) => age(Some(t), now),
        None => first.clone(),
    };
    let mut count = ev.get("count").and_then(Value::as_i64).unwrap_or(0);
    if let Some(series) = ev.get("series").filter(|v| v.is_object()) {
        last = age(series.get("lastObservedTime"), now);
        count = series.get("count").and_then(Value::as_i64).unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let kind = s(ev, "/involvedObject/kind").to_lowercase();
    let name = s(ev, "/involvedObject/name");
    let target = if name.is_empty() {
        kind
    } else {
        format!("{kind}/{name}")
    };
    let source = {
        let c = s(ev, "/source/component");
        let c = if c.is_empty() {
            s(ev, "/reportingComponent")
        } else {
            c
        };
        let h = s(ev, "/source/host");
        let h = if h.is_empty() {
            s(ev, "/reportingInstance")
        } else {
            h
        };
        if h.is_empty() {
            c.to_string()
        } else {
            format!("{c}, {h}")
        }
    };
    vec![
        last.into(),
        s(ev, "/type").into(),
        s(ev, "/reason").into(),
        target.into(),
        s(ev, "/involvedObject/fieldPath").into(),
        source.into(),
        s(ev, "/message").trim().into(),
        first.into(),
        count.into(),
        s(ev, "/metadata/name").into(),
    ]
}

/// The cells of one row.
pub fn cells(printer: Printer, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    match printer {
        Printer::Pod => pod_cells(obj, now),
        Printer::Node => node_cells(obj, now),
        Printer::Namespace => vec![
            s(obj, "/metadata/name").into(),
            s(obj, "/status/phase").into(),
            age(obj.pointer("/metadata/creationTimestamp"), now).into(),
        ],
        Printer::Event => event_cells(obj, now),
        Printer::Default => {
            vec![
                s(obj, "/metadata/name").into(),
                age(obj.pointer("/metadata/creationTimestamp"), now).into(),
            ]
        }
    }
}

/// PartialObjectMetadata for an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// One Table row.
pub fn row(def: &ResourceDef, obj: &Value, include: IncludeObject, now: jiff::Timestamp) -> Value {
    let mut r = json!({"cells": cells(def.printer, obj, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => r["object"] = partial_metadata(obj),
        IncludeObject::Object => r["object"] = obj.clone(),
    }
    if def.printer == Printer::Pod {
        match s(obj, "/status/phase") {
            "Succeeded" => {
                r["conditions"] = json!([{"type": "Completed", "status": "True", "reason": "", "message": "The pod has completed successfully."}])
            }
            "Failed" => {
                r["conditions"] = json!([{"type": "Completed", "status": "True", "reason": "", "message": "The pod failed."}])
            }
            _ => {}
        }
    }
    r
}

/// A Table of `objs`. `with_columns` false leaves columnDefinitions empty (later watch events).
pub fn table(
    def: &ResourceDef,
    objs: &[&Value],
    rv: &str,
    include: IncludeObject,
    with_columns: bool,
    version: &str,
    now: jiff::Timestamp,
) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": if with_columns { columns(def.printer) } else { vec![] },
        "rows": objs.iter().map(|o| row(def, o, include, now)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controlplane::apiserver::resources::find;

    fn now() -> jiff::Timestamp {
        "2024-01-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(182), "3m2s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(4 * 3600), "4h");
        assert_eq!(human_duration(4 * 3600 + 120), "4h2m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(100 * 86400), "100d");
        assert_eq!(human_duration(-5), "<invalid>");
        assert_eq!(age(None, now()), "<unknown>");
        assert_eq!(age(Some(&json!("2024-01-01T11:59:55Z")), now()), "5s");
    }

    #[test]
    fn pod_status_column() {
        let mut p = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Pending"}});
        assert_eq!(pod_status_reason(&p), "Pending");
        p["status"]["containerStatuses"] = json!([{"name": "c", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]);
        assert_eq!(pod_status_reason(&p), "ContainerCreating");
        p["status"]["containerStatuses"][0]["state"] =
            json!({"waiting": {"reason": "CrashLoopBackOff"}});
        assert_eq!(pod_status_reason(&p), "CrashLoopBackOff");
        p["status"]["phase"] = "Running".into();
        p["status"]["containerStatuses"][0]["state"] =
            json!({"running": {"startedAt": "2024-01-01T11:00:00Z"}});
        p["status"]["containerStatuses"][0]["ready"] = true.into();
        assert_eq!(pod_status_reason(&p), "Running");
        p["status"]["phase"] = "Succeeded".into();
        p["status"]["containerStatuses"][0]["state"] =
            json!({"terminated": {"reason": "Completed", "exitCode": 0}});
        assert_eq!(pod_status_reason(&p), "Completed");
        p["status"]["containerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 2}});
        assert_eq!(pod_status_reason(&p), "ExitCode:2");
        p["status"]["phase"] = "Running".into();
        p["metadata"]["deletionTimestamp"] = "2024-01-01T12:00:30Z".into();
        assert_eq!(pod_status_reason(&p), "Terminating");
        let init = json!({"spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "c"}]},
                          "status": {"phase": "Pending", "initContainerStatuses": [{"name": "i", "state": {"running": {}}}]}});
        assert_eq!(pod_status_reason(&init), "Init:0/1");
    }

    #[test]
    fn pod_row() {
        let p = json!({"metadata": {"name": "web", "creationTimestamp": "2024-01-01T11:57:58Z"},
            "spec": {"containers": [{"name": "c"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.244.0.5"}], "containerStatuses": [{"name": "c", "ready": true, "restartCount": 2,
                "state": {"running": {}}, "lastState": {"terminated": {"finishedAt": "2024-01-01T11:59:00Z"}}}]}});
        let c = cells(Printer::Pod, &p, now());
        assert_eq!(
            c,
            vec![
                json!("web"),
                json!("1/1"),
                json!("Running"),
                json!("2 (60s ago)"),
                json!("2m2s"),
                json!("10.244.0.5"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        let def = find("", "v1", "pods").unwrap();
        let t = table(def, &[&p], "5", IncludeObject::Metadata, true, "v1", now());
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 9);
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn node_and_event_rows() {
        let n = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}, "creationTimestamp": "2024-01-01T11:00:00Z"},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                       "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian", "kernelVersion": "6.1", "containerRuntimeVersion": "containerd://1.6.20"}}});
        let c = cells(Printer::Node, &n, now());
        assert_eq!(c[1], "Ready,SchedulingDisabled");
        assert_eq!(c[2], "control-plane");
        assert_eq!(c[3], "60m");
        assert_eq!(c[5], "10.0.0.1");
        assert_eq!(c[6], "<none>");
        let e = json!({"metadata": {"name": "web.1"}, "type": "Normal", "reason": "Pulled", "message": " pulled \n",
            "involvedObject": {"kind": "Pod", "name": "web"}, "lastTimestamp": "2024-01-01T11:59:50Z", "source": {"component": "kubelet", "host": "n1"}});
        let c = cells(Printer::Event, &e, now());
        assert_eq!(c[0], "10s");
        assert_eq!(c[3], "pod/web");
        assert_eq!(c[5], "kubelet, n1");
        assert_eq!(c[6], "pulled");
        assert_eq!(c[8], 1);
    }
}
