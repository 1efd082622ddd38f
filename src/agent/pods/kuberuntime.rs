//! Pod spec -> CRI configs (pure): the only Pod <-> CRI translation (kubelet's
//! `kuberuntime_sandbox.go` / `kuberuntime_container.go` / `helpers_linux.go`).
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::cri::api;

pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const ANN_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const ANN_HASH: &str = "io.kubernetes.container.hash";
pub const ANN_GRACE: &str = "io.kubernetes.pod.terminationGracePeriod";
pub const ANN_TERM_MSG_PATH: &str = "io.kubernetes.container.terminationMessagePath";
pub const ANN_TERM_MSG_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";
pub const ANN_PORTS: &str = "io.kubernetes.container.ports";

/// kubelet's defaults when the spec leaves them out.
pub const DEFAULT_GRACE_SECS: i64 = 30;
const CPU_PERIOD: i64 = 100_000;
const MIN_SHARES: i64 = 2;
const MIN_QUOTA: i64 = 1000;

/// A container's spec cannot be turned into a CRI config (reported as CreateContainerConfigError).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("pod has no metadata.{0}")]
    MissingMeta(&'static str),
    #[error("env var {name}: {reason}")]
    Env { name: String, reason: String },
    #[error("invalid quantity {value:?} for {resource}")]
    Quantity { resource: String, value: String },
}

/// Identity of a pod, read off its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodKey {
    pub fn of(pod: &Pod) -> Result<Self, ConfigError> {
        let m = &pod.metadata;
        Ok(Self {
            namespace: m.namespace.clone().unwrap_or_else(|| "default".into()),
            name: m.name.clone().ok_or(ConfigError::MissingMeta("name"))?,
            uid: m.uid.clone().ok_or(ConfigError::MissingMeta("uid"))?,
        })
    }

    /// kubelet's `format.Pod`: `name_namespace(uid)`.
    pub fn display(&self) -> String {
        format!("{}_{}({})", self.name, self.namespace, self.uid)
    }
}

/// `<pod_log_dir>/<ns>_<name>_<uid>`.
pub fn pod_log_directory(root: &Path, key: &PodKey) -> PathBuf {
    root.join(format!("{}_{}_{}", key.namespace, key.name, key.uid))
}

/// A container's restart count: kubelet's annotation, else the CRI metadata attempt.
pub fn restart_count(annotations: &HashMap<String, String>, attempt: u32) -> u32 {
    annotations.get(ANN_RESTART_COUNT).and_then(|s| s.parse().ok()).unwrap_or(attempt)
}

/// `<container>/<restartCount>.log`, relative to the sandbox's log directory.
pub fn container_log_path(container: &str, restart_count: u32) -> String {
    format!("{container}/{restart_count}.log")
}

/// Labels every sandbox and container of the pod carries (the adoption/orphan key is the uid).
pub fn pod_labels(key: &PodKey) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_POD_NAME.to_string(), key.name.clone()),
        (LABEL_POD_NAMESPACE.to_string(), key.namespace.clone()),
        (LABEL_POD_UID.to_string(), key.uid.clone()),
    ])
}

/// Parse resolv.conf (nameserver / search / domain / options lines).
pub fn parse_resolv_conf(text: &str) -> api::DnsConfig {
    let mut dns = api::DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.servers.extend(words.next().map(str::to_string)),
            Some("search") | Some("domain") => dns.searches = words.map(str::to_string).collect(),
            Some("options") => dns.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    dns
}

/// kubelet's DNS configurer, without cluster DNS: policy Default and ClusterFirst (no cluster DNS
/// configured) use the host's resolv.conf; None uses only the pod's dnsConfig; pod dnsConfig is
/// merged in for every policy. Host-network pods get the host's file untouched.
pub fn pod_dns_config(pod: &Pod, host: &api::DnsConfig) -> api::DnsConfig {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let mut dns = if policy == "None" {
        api::DnsConfig::default()
    } else {
        host.clone()
    };
    if let Some(cfg) = spec.and_then(|s| s.dns_config.as_ref()) {
        for s in cfg.nameservers.iter().flatten() {
            if !dns.servers.contains(s) {
                dns.servers.push(s.clone());
            }
        }
        for s in cfg.searches.iter().flatten() {
            if !dns.searches.contains(s) {
                dns.searches.push(s.clone());
            }
        }
        for o in cfg.options.iter().flatten() {
            let Some(name) = &o.name else { continue };
            dns.options
                .retain(|x| x.split(':').next() != Some(name.as_str()));
            dns.options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            });
        }
    }
    dns
}

fn protocol(p: Option<&str>) -> i32 {
    match p {
        Some("UDP") => api::Protocol::Udp as i32,
        Some("SCTP") => api::Protocol::Sctp as i32,
        _ => api::Protocol::Tcp as i32,
    }
}

fn namespace_options(pod: &Pod) -> api::NamespaceOption {
    let spec = pod.spec.as_ref();
    let flag = |f: fn(&k8s_openapi::api::core::v1::PodSpec) -> Option<bool>| {
        spec.and_then(f).unwrap_or(false)
    };
    let node = api::NamespaceMode::Node as i32;
    let pod_mode = api::NamespaceMode::Pod as i32;
    api::NamespaceOption {
        network: if flag(|s| s.host_network) {
            node
        } else {
            pod_mode
        },
        pid: if flag(|s| s.host_pid) {
            node
        } else if flag(|s| s.share_process_namespace) {
            pod_mode
        } else {
            api::NamespaceMode::Container as i32
        },
        ipc: if flag(|s| s.host_ipc) { node } else { pod_mode },
        ..Default::default()
    }
}

/// Pod -> PodSandboxConfig (kubelet's generatePodSandboxConfig).
pub fn sandbox_config(
    pod: &Pod,
    key: &PodKey,
    attempt: u32,
    pod_log_root: &Path,
    host_dns: &api::DnsConfig,
) -> api::PodSandboxConfig {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let hostname = if host_network {
        String::new()
    } else {
        let mut h = spec
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| key.name.clone());
        h.truncate(63);
        h.trim_end_matches(['-', '.']).to_string()
    };
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend(pod_labels(key));
    let annotations: HashMap<String, String> = pod
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let port_mappings = spec
        .map(|s| &s.containers)
        .into_iter()
        .flatten()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| api::PortMapping {
            protocol: protocol(p.protocol.as_deref()),
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let sysctls = spec
        .and_then(|s| s.security_context.as_ref())
        .and_then(|sc| sc.sysctls.as_ref())
        .map(|v| {
            v.iter()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    let psc = spec.and_then(|s| s.security_context.as_ref());
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: key.name.clone(),
            uid: key.uid.clone(),
            namespace: key.namespace.clone(),
            attempt,
        }),
        hostname,
        log_directory: pod_log_directory(pod_log_root, key)
            .to_string_lossy()
            .into_owned(),
        dns_config: (!host_network).then(|| pod_dns_config(pod, host_dns)),
        port_mappings,
        labels,
        annotations,
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                run_as_user: psc
                    .and_then(|s| s.run_as_user)
                    .map(|value| api::Int64Value { value }),
                run_as_group: psc
                    .and_then(|s| s.run_as_group)
                    .map(|value| api::Int64Value { value }),
                supplemental_groups: psc
                    .and_then(|s| s.supplemental_groups.clone())
                    .unwrap_or_default(),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        windows: None,
    }
}

/// A stable hash of the container spec (kubelet's HashContainer): FNV-1a 64 of its JSON.
/// A running container whose hash differs from the spec's is restarted.
pub fn container_hash(c: &Container) -> String {
    let bytes = serde_json::to_vec(c).unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:x}")
}

/// A Kubernetes quantity times `scale` (1000 for milli-cpu, 1 for bytes), rounded up.
pub fn parse_quantity(q: &str, scale: i128) -> Option<i64> {
    use crate::k8s::quantity::{parse_milli, parse_value};
    let v = match scale {
        1000 => parse_milli(q).ok()?,
        _ => parse_value(q).ok()?.checked_mul(scale)?,
    };
    i64::try_from(v).ok()
}

fn resource(
    c: &Container,
    which: fn(
        &k8s_openapi::api::core::v1::ResourceRequirements,
    )
        -> Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    name: &str,
    scale: i128,
) -> Result<Option<i64>, ConfigError> {
    let Some(q) = c
        .resources
        .as_ref()
        .and_then(which)
        .and_then(|m| m.get(name))
    else {
        return Ok(None);
    };
    parse_quantity(&q.0, scale)
        .map(Some)
        .ok_or_else(|| ConfigError::Quantity {
            resource: name.into(),
            value: q.0.clone(),
        })
}

/// Pod QoS class (Guaranteed / Burstable / BestEffort), as the API server computes it.
pub fn qos_class(pod: &Pod) -> &'static str {
    crate::k8s::qos::pod_qos_class(pod.spec.as_ref())
}

/// CRI Linux resources from requests/limits (kubelet's generateLinuxContainerResources):
/// shares from the cpu request (limit if no request), quota from the cpu limit, memory limit,
/// oom_score_adj by QoS class.
pub fn linux_resources(
    pod: &Pod,
    c: &Container,
    node_memory_bytes: Option<i64>,
) -> Result<api::LinuxContainerResources, ConfigError> {
    let cpu_req = resource(c, |r| r.requests.as_ref(), "cpu", 1000)?;
    let cpu_lim = resource(c, |r| r.limits.as_ref(), "cpu", 1000)?;
    let mem_lim = resource(c, |r| r.limits.as_ref(), "memory", 1)?;
    let mem_req = resource(c, |r| r.requests.as_ref(), "memory", 1)?.or(mem_lim);
    let milli = cpu_req.or(cpu_lim).unwrap_or(0);
    let shares = if milli == 0 {
        MIN_SHARES
    } else {
        (milli * 1024 / 1000).max(MIN_SHARES)
    };
    let (cpu_period, cpu_quota) = match cpu_lim {
        Some(l) if l > 0 => (CPU_PERIOD, (l * CPU_PERIOD / 1000).max(MIN_QUOTA)),
        _ => (0, 0),
    };
    let oom_score_adj = match qos_class(pod) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => match (mem_req, node_memory_bytes) {
            (Some(req), Some(cap)) if cap > 0 => (1000 - (1000 * req) / cap).clamp(2, 999),
            _ => 999,
        },
    };
    Ok(api::LinuxContainerResources {
        cpu_period,
        cpu_quota,
        cpu_shares: shares,
        memory_limit_in_bytes: mem_lim.unwrap_or(0),
        oom_score_adj,
        ..Default::default()
    })
}

/// What container env fieldRefs may resolve to, besides the pod object itself.
#[derive(Debug, Clone, Default)]
pub struct RuntimeFacts {
    pub pod_ips: Vec<String>,
    pub host_ips: Vec<String>,
    pub node_name: String,
    pub node_memory_bytes: Option<i64>,
}

fn field_ref(pod: &Pod, facts: &RuntimeFacts, path: &str) -> Result<String, String> {
    let m = &pod.metadata;
    let map_key = |prefix: &str| -> Option<String> {
        let rest = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(rest.to_string())
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or(facts.node_name.clone()),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => facts.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => facts.pod_ips.join(","),
        "status.hostIP" => facts.host_ips.first().cloned().unwrap_or_default(),
        "status.hostIPs" => facts.host_ips.join(","),
        _ => {
            if let Some(k) = map_key("metadata.labels") {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = map_key("metadata.annotations") {
                m.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldRef {path:?}"));
            }
        }
    })
}

/// Kubernetes `$(VAR)` expansion (`$$` escapes; unknown references are left as they are).
pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let b = input.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = input[i + 2..].find(')') {
                    let name = &input[i + 2..i + 2 + end];
                    if let Some(v) = vars.get(name) {
                        out.push_str(v);
                    } else {
                        out.push_str(&input[i..i + 3 + end]);
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        let ch = input[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The container's environment, in order, with `$(VAR)` references expanded.
pub fn container_env(
    pod: &Pod,
    c: &Container,
    facts: &RuntimeFacts,
) -> Result<Vec<api::KeyValue>, ConfigError> {
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut out: Vec<api::KeyValue> = Vec::new();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(src)) => {
                if let Some(f) = &src.field_ref {
                    field_ref(pod, facts, &f.field_path).map_err(|reason| ConfigError::Env {
                        name: e.name.clone(),
                        reason,
                    })?
                } else {
                    let what = if src.config_map_key_ref.is_some() {
                        "configMapKeyRef"
                    } else if src.secret_key_ref.is_some() {
                        "secretKeyRef"
                    } else {
                        "resourceFieldRef"
                    };
                    return Err(ConfigError::Env {
                        name: e.name.clone(),
                        reason: format!("{what} is not supported yet"),
                    });
                }
            }
            (Some(v), None) => expand(v, &vars),
            (None, None) => String::new(),
        };
        vars.insert(e.name.clone(), value.clone());
        out.retain(|kv| kv.key != e.name);
        out.push(api::KeyValue {
            key: e.name.clone(),
            value,
        });
    }
    Ok(out)
}

/// Pod + container -> ContainerConfig (kubelet's generateContainerConfig).
/// `image_ref` is what ImageStatus/PullImage resolved the image to.
pub fn container_config(
    pod: &Pod,
    key: &PodKey,
    c: &Container,
    restart_count: u32,
    image_ref: &str,
    facts: &RuntimeFacts,
) -> Result<api::ContainerConfig, ConfigError> {
    let envs = container_env(pod, c, facts)?;
    let vars: HashMap<String, String> = envs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    let command = c
        .command
        .iter()
        .flatten()
        .map(|s| expand(s, &vars))
        .collect();
    let args = c.args.iter().flatten().map(|s| expand(s, &vars)).collect();

    let mut labels = pod_labels(key);
    labels.insert(LABEL_CONTAINER_NAME.into(), c.name.clone());
    let grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECS);
    let mut annotations = HashMap::from([
        (ANN_HASH.to_string(), container_hash(c)),
        (ANN_RESTART_COUNT.to_string(), restart_count.to_string()),
        (ANN_GRACE.to_string(), grace.to_string()),
        (
            ANN_TERM_MSG_PATH.to_string(),
            c.termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into()),
        ),
        (
            ANN_TERM_MSG_POLICY.to_string(),
            c.termination_message_policy
                .clone()
                .unwrap_or_else(|| "File".into()),
        ),
    ]);
    if let Some(ports) = &c.ports {
        if let Ok(j) = serde_json::to_string(ports) {
            annotations.insert(ANN_PORTS.into(), j);
        }
    }

    let sc = c.security_context.as_ref();
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|s| s.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or(psc.and_then(|s| s.run_as_group));
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let security_context = api::LinuxContainerSecurityContext {
        capabilities: caps.map(|c| api::Capability {
            add_capabilities: c.add.clone().unwrap_or_default(),
            drop_capabilities: c.drop.clone().unwrap_or_default(),
            ..Default::default()
        }),
        privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
        namespace_options: Some(namespace_options(pod)),
        run_as_user: run_as_user.map(|value| api::Int64Value { value }),
        run_as_group: run_as_group.map(|value| api::Int64Value { value }),
        readonly_rootfs: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        supplemental_groups: psc
            .and_then(|s| s.supplemental_groups.clone())
            .unwrap_or_default(),
        no_new_privs: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        ..Default::default()
    };

    Ok(api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: c.name.clone(),
            attempt: restart_count,
        }),
        image: Some(api::ImageSpec {
            image: image_ref.to_string(),
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command,
        args,
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs,
        labels,
        annotations,
        log_path: container_log_path(&c.name, restart_count),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(linux_resources(pod, c, facts.node_memory_bytes)?),
            security_context: Some(security_context),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pod(json: serde_json::Value) -> Pod {
        let mut base = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "uid": "u-1"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}
        });
        merge(&mut base, json);
        serde_json::from_value(base).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    #[test]
    fn sandbox_config_matches_kubelet() {
        let p = pod(serde_json::json!({
            "metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"},
                          {"containerPort": 53, "protocol": "UDP"}]}]}
        }));
        let key = PodKey::of(&p).unwrap();
        let host =
            parse_resolv_conf("nameserver 1.1.1.1\nsearch example.com\noptions ndots:2 # x\n");
        let cfg = sandbox_config(&p, &key, 2, Path::new("/var/log/pods"), &host);
        let md = cfg.metadata.as_ref().unwrap();
        assert_eq!(
            (
                md.name.as_str(),
                md.namespace.as_str(),
                md.uid.as_str(),
                md.attempt
            ),
            ("web", "default", "u-1", 2)
        );
        assert_eq!(cfg.hostname, "web");
        assert_eq!(cfg.log_directory, "/var/log/pods/default_web_u-1");
        assert_eq!(cfg.labels["app"], "web");
        assert_eq!(cfg.labels[LABEL_POD_UID], "u-1");
        assert_eq!(cfg.annotations["a"], "b");
        let dns = cfg.dns_config.unwrap();
        assert_eq!(dns.servers, vec!["1.1.1.1"]);
        assert_eq!(dns.searches, vec!["example.com"]);
        assert_eq!(dns.options, vec!["ndots:2"]);
        assert_eq!(cfg.port_mappings.len(), 2);
        assert_eq!(cfg.port_mappings[0].host_port, 8080);
        assert_eq!(cfg.port_mappings[1].protocol, api::Protocol::Udp as i32);
        let ns = cfg
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, api::NamespaceMode::Pod as i32);
        assert_eq!(ns.pid, api::NamespaceMode::Container as i32);
    }

    #[test]
    fn dns_policy_none_and_pod_dns_config() {
        let p = pod(serde_json::json!({"spec": {"dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["9.9.9.9"], "options": [{"name": "ndots", "value": "5"}]}}}));
        let host = parse_resolv_conf("nameserver 1.1.1.1\n");
        let d = pod_dns_config(&p, &host);
        assert_eq!(d.servers, vec!["9.9.9.9"]);
        assert_eq!(d.options, vec!["ndots:5"]);
    }

    #[test]
    fn container_config_env_logs_labels_resources() {
        let p = pod(
            serde_json::json!({"spec": {"terminationGracePeriodSeconds": 5, "containers": [{
                "name": "app", "image": "busybox:1", "command": ["sh", "-c"], "args": ["echo $(GREETING) $$HOME"],
                "workingDir": "/tmp", "tty": true, "stdin": true,
                "env": [
                    {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "GREETING", "value": "hi-$(NAME)"}
                ],
                "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "64Mi"}}
            }]}}),
        );
        let key = PodKey::of(&p).unwrap();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let facts = RuntimeFacts {
            pod_ips: vec!["10.244.0.5".into()],
            node_name: "n1".into(),
            ..Default::default()
        };
        let cfg = container_config(&p, &key, c, 3, "sha256:abc", &facts).unwrap();
        let env: Vec<(String, String)> = cfg
            .envs
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect();
        assert_eq!(
            env,
            vec![
                ("NAME".into(), "web".into()),
                ("NS".into(), "default".into()),
                ("UID".into(), "u-1".into()),
                ("IP".into(), "10.244.0.5".into()),
                ("NODE".into(), "n1".into()),
                ("GREETING".into(), "hi-web".into()),
            ]
        );
        assert_eq!(cfg.args, vec!["echo hi-web $HOME"]);
        assert_eq!(cfg.working_dir, "/tmp");
        assert!(cfg.tty && cfg.stdin);
        assert_eq!(cfg.log_path, "app/3.log");
        assert_eq!(cfg.metadata.as_ref().unwrap().attempt, 3);
        assert_eq!(cfg.labels[LABEL_CONTAINER_NAME], "app");
        assert_eq!(cfg.labels[LABEL_POD_UID], "u-1");
        assert_eq!(cfg.annotations[ANN_RESTART_COUNT], "3");
        assert_eq!(cfg.annotations[ANN_GRACE], "5");
        assert_eq!(cfg.annotations[ANN_HASH], container_hash(c));
        assert_eq!(cfg.image.as_ref().unwrap().image, "sha256:abc");
        assert_eq!(
            cfg.image.as_ref().unwrap().user_specified_image,
            "busybox:1"
        );
        let r = cfg.linux.unwrap().resources.unwrap();
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.cpu_period),
            (512, 50_000, 100_000)
        );
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(r.oom_score_adj, -997); // requests == limits (as the API server defaults them) => Guaranteed
    }

    #[test]
    fn unsupported_env_source_is_config_error() {
        let p = pod(
            serde_json::json!({"spec": {"containers": [{"name": "c", "image": "b",
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}}),
        );
        let key = PodKey::of(&p).unwrap();
        let c = &p.spec.as_ref().unwrap().containers[0];
        let e = container_config(&p, &key, c, 0, "b", &RuntimeFacts::default()).unwrap_err();
        assert!(e.to_string().contains("secretKeyRef"));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m", 1000), Some(500));
        assert_eq!(parse_quantity("2", 1000), Some(2000));
        assert_eq!(parse_quantity("0.1", 1000), Some(100));
        assert_eq!(parse_quantity("1.5Gi", 1), Some(3 << 29));
        assert_eq!(parse_quantity("128974848", 1), Some(128974848));
        assert_eq!(parse_quantity("129e6", 1), Some(129_000_000));
        assert_eq!(parse_quantity("1k", 1), Some(1000));
        assert_eq!(parse_quantity("abc", 1), None);
    }

    #[test]
    fn qos_and_shares_defaults() {
        let p = pod(serde_json::json!({}));
        assert_eq!(qos_class(&p), "BestEffort");
        let c = &p.spec.as_ref().unwrap().containers[0];
        let r = linux_resources(&p, c, None).unwrap();
        assert_eq!(
            (
                r.cpu_shares,
                r.cpu_quota,
                r.memory_limit_in_bytes,
                r.oom_score_adj
            ),
            (2, 0, 0, 1000)
        );
        let p = pod(
            serde_json::json!({"spec": {"containers": [{"name": "c", "image": "b",
            "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}}]}}),
        );
        assert_eq!(qos_class(&p), "Burstable");
        let c = &p.spec.as_ref().unwrap().containers[0];
        let r = linux_resources(&p, c, Some(4 << 30)).unwrap();
        assert_eq!((r.cpu_shares, r.oom_score_adj), (102, 750));
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let p = pod(serde_json::json!({}));
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        let mut c2 = c.clone();
        assert_eq!(container_hash(&c), container_hash(&c2));
        c2.image = Some("other".into());
        assert_ne!(container_hash(&c), container_hash(&c2));
    }

    #[test]
    fn expand_vars() {
        let vars = HashMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "1-$(B)-$(A)-$");
    }
}
