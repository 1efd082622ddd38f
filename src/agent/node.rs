//! The Node object: registration, status (capacity, addresses, node info, conditions), the pod
//! CIDR -> CNI conflist step, and the node Lease.
//!
//! Models: kubelet's pkg/kubelet/kubelet_node_status.go (registration, status sync),
//! pkg/kubelet/nodestatus/setters.go (conditions and their messages) and
//! pkg/kubelet/nodelease / component-helpers/apimachinery/lease (the Lease).
//!
//! `run` starts three loops that each own one thing: the status writer (the only writer of
//! nodes/{name}/status), the pod CIDR watcher (the only writer of the conflist) and the lease
//! renewer. The CIDR loop tells the status loop through a `watch` channel when the conflist exists.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::agent::cni_conf;
use crate::agent::AgentConfig;
use crate::cri::{api as cri_api, Cri};

/// How often the status is written when nothing changes (kubelet's nodeStatusUpdateFrequency).
pub const STATUS_UPDATE_PERIOD: Duration = Duration::from_secs(10);
/// How often the runtime is checked for readiness changes (a change is posted at once).
pub const RUNTIME_CHECK_PERIOD: Duration = Duration::from_secs(2);
/// Lease duration (kubelet's default nodeLeaseDurationSeconds).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// Lease renew interval (kubelet: 1/4 of the duration).
pub const LEASE_RENEW_PERIOD: Duration = Duration::from_secs(10);
/// Namespace holding node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Max pods per node (kubelet's default).
pub const MAX_PODS: &str = "110";
/// Kubelet's default hard eviction threshold memory.available<100Mi, subtracted from allocatable.
const EVICTION_MEMORY_BYTES: u64 = 100 << 20;
/// Kubelet's default nodefs.available<10%, subtracted from allocatable ephemeral storage.
const EVICTION_NODEFS_PERCENT: u64 = 10;

/// Errors from the node loops.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("API call {op} for node {node}: {source}")]
    Kube {
        op: &'static str,
        node: String,
        source: kube::Error,
    },
    #[error("reading {what}: {source}")]
    Read {
        what: String,
        source: std::io::Error,
    },
    #[error("procfs: {0}")]
    Proc(#[from] procfs::ProcError),
}

// ---------------------------------------------------------------------------------------------
// Pure parts.

/// Kubernetes architecture name for a Rust target arch (GOARCH names).
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// This machine's architecture, GOARCH-style.
pub fn arch() -> &'static str {
    go_arch(std::env::consts::ARCH)
}

/// The labels kubelet sets on its Node (kubelet_node_status.go `initialNode`/`updateDefaultLabels`).
pub fn default_labels(node_name: &str, arch: &str) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", node_name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The annotations kubelet sets on its Node.
pub fn default_annotations() -> BTreeMap<String, String> {
    BTreeMap::from([(
        "volumes.kubernetes.io/controller-managed-attach-detach".to_owned(),
        "true".to_owned(),
    )])
}

/// The Node object to create.
pub fn initial_node(node_name: &str, arch: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(node_name.to_owned()),
            labels: Some(default_labels(node_name, arch)),
            annotations: Some(default_annotations()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The merge patch that brings an existing Node's default labels and annotations to what we
/// want, or None when they already match (kubelet's `reconcileExistingNode` +
/// `updateDefaultLabels`; other labels are left alone).
pub fn reconcile_metadata(
    existing: &ObjectMeta,
    node_name: &str,
    arch: &str,
) -> Option<serde_json::Value> {
    fn diff(
        have: &Option<BTreeMap<String, String>>,
        want: BTreeMap<String, String>,
    ) -> serde_json::Map<String, serde_json::Value> {
        want.into_iter()
            .filter(|(k, v)| have.as_ref().and_then(|h| h.get(k)) != Some(v))
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect()
    }
    let labels = diff(&existing.labels, default_labels(node_name, arch));
    let annotations = diff(&existing.annotations, default_annotations());
    if labels.is_empty() && annotations.is_empty() {
        return None;
    }
    let mut meta = serde_json::Map::new();
    if !labels.is_empty() {
        meta.insert("labels".into(), labels.into());
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), annotations.into());
    }
    Some(serde_json::json!({ "metadata": meta }))
}

/// Facts about the machine that go into the status; gathered by `MachineInfo::read`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineInfo {
    pub cpu_cores: u64,
    pub memory_bytes: u64,
    /// Size of the filesystem holding the state dir.
    pub storage_bytes: u64,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub kernel_version: String,
    pub os_image: String,
}

/// What the container runtime reported (CRI Version + Status), plus whether our conflist exists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeHealth {
    /// e.g. "containerd://1.6.20"; empty when the runtime could not be asked.
    pub runtime_version: String,
    /// None when CRI Status failed (the runtime is down).
    pub conditions: Option<Vec<RuntimeCondition>>,
    /// The conflist has been written for the node's pod CIDR.
    pub cni_conf_written: bool,
}

/// A CRI runtime condition (RuntimeReady, NetworkReady).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeCondition {
    pub kind: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl RuntimeCondition {
    fn describe(c: Option<&RuntimeCondition>) -> String {
        // kubelet formats a missing condition with %v of a nil pointer.
        match c {
            Some(c) => format!(
                "{}={} reason:{} message:{}",
                c.kind, c.status, c.reason, c.message
            ),
            None => "<nil>".to_owned(),
        }
    }
}

impl From<&cri_api::RuntimeCondition> for RuntimeCondition {
    fn from(c: &cri_api::RuntimeCondition) -> Self {
        Self {
            kind: c.r#type.clone(),
            status: c.status,
            reason: c.reason.clone(),
            message: c.message.clone(),
        }
    }
}

/// Static inputs for the status: identity and versions from the config.
#[derive(Debug, Clone)]
pub struct StatusParams {
    pub node_name: String,
    pub node_ip: String,
    pub kubelet_port: i32,
    pub kubelet_version: String,
    pub arch: String,
}

/// The errors that make the node NotReady, in kubelet's order (runtime, then network).
pub fn readiness_errors(h: &RuntimeHealth) -> Vec<String> {
    let mut errs = Vec::new();
    let Some(conds) = &h.conditions else {
        errs.push("container runtime is down".to_owned());
        return errs;
    };
    let find = |t: &str| conds.iter().find(|c| c.kind == t);
    let runtime = find("RuntimeReady");
    if !runtime.is_some_and(|c| c.status) {
        errs.push(format!(
            "container runtime not ready: {}",
            RuntimeCondition::describe(runtime)
        ));
    }
    let network = find("NetworkReady");
    if !network.is_some_and(|c| c.status) {
        errs.push(format!(
            "container runtime network not ready: {}",
            RuntimeCondition::describe(network)
        ));
    } else if !h.cni_conf_written {
        errs.push("container runtime network not ready: CNI configuration not written (waiting for node.spec.podCIDR)".to_owned());
    }
    errs
}

/// A Kubernetes BinarySI quantity for a byte count, in canonical form ("100Mi", "16393148Ki").
pub fn binary_quantity(bytes: u64) -> Quantity {
    if bytes == 0 {
        return Quantity("0".into());
    }
    let mut v = bytes;
    let mut i = 0;
    const SUFFIX: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    while v.is_multiple_of(1024) && i < SUFFIX.len() - 1 {
        v /= 1024;
        i += 1;
    }
    Quantity(format!("{v}{}", SUFFIX[i]))
}

fn condition(
    kind: &str,
    ok: bool,
    true_means_bad: bool,
    reason: &str,
    message: &str,
    prev: &[NodeCondition],
    now: Timestamp,
) -> NodeCondition {
    let status = if ok != true_means_bad {
        "True"
    } else {
        "False"
    };
    let transition = prev
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    NodeCondition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(transition),
    }
}

/// The full node status from its inputs. `prev` are the conditions last written (or read), so a
/// condition keeps its lastTransitionTime while its status does not change. Pure.
pub fn compute_status(
    p: &StatusParams,
    m: &MachineInfo,
    h: &RuntimeHealth,
    prev: &[NodeCondition],
    now: Timestamp,
) -> NodeStatus {
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_owned(), Quantity(m.cpu_cores.to_string()));
    capacity.insert("memory".to_owned(), binary_quantity(m.memory_bytes));
    capacity.insert("pods".to_owned(), Quantity(MAX_PODS.into()));
    capacity.insert(
        "ephemeral-storage".to_owned(),
        binary_quantity(m.storage_bytes),
    );
    capacity.insert("hugepages-1Gi".to_owned(), Quantity("0".into()));
    capacity.insert("hugepages-2Mi".to_owned(), Quantity("0".into()));
    let mut allocatable = capacity.clone();
    allocatable.insert(
        "memory".to_owned(),
        binary_quantity(m.memory_bytes.saturating_sub(EVICTION_MEMORY_BYTES)),
    );
    let storage_alloc = m.storage_bytes - m.storage_bytes * EVICTION_NODEFS_PERCENT / 100;
    allocatable.insert(
        "ephemeral-storage".to_owned(),
        binary_quantity(storage_alloc),
    );

    let errs = readiness_errors(h);
    let ready = errs.is_empty();
    let (ready_reason, ready_message) = if ready {
        ("KubeletReady", "kubelet is posting ready status".to_owned())
    } else if errs.len() == 1 {
        ("KubeletNotReady", errs[0].clone())
    } else {
        // utilerrors.NewAggregate(errs).Error()
        ("KubeletNotReady", format!("[{}]", errs.join(", ")))
    };
    let conditions = vec![
        condition(
            "MemoryPressure",
            false,
            false,
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
            prev,
            now,
        ),
        condition(
            "DiskPressure",
            false,
            false,
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
            prev,
            now,
        ),
        condition(
            "PIDPressure",
            false,
            false,
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
            prev,
            now,
        ),
        condition(
            "Ready",
            ready,
            false,
            ready_reason,
            &ready_message,
            prev,
            now,
        ),
    ];

    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: p.node_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: p.node_name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: p.kubelet_port,
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: p.arch.clone(),
            boot_id: m.boot_id.clone(),
            container_runtime_version: h.runtime_version.clone(),
            kernel_version: m.kernel_version.clone(),
            kube_proxy_version: p.kubelet_version.clone(),
            kubelet_version: p.kubelet_version.clone(),
            machine_id: m.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: m.os_image.clone(),
            system_uuid: m.system_uuid.clone(),
            swap: None,
        }),
        conditions: Some(conditions),
        ..Default::default()
    }
}

/// Conditions compared without their timestamps: a difference means "post now".
fn conditions_key(c: &[NodeCondition]) -> Vec<(String, String, Option<String>, Option<String>)> {
    c.iter()
        .map(|c| {
            (
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            )
        })
        .collect()
}

/// PRETTY_NAME from an os-release file ("Linux" when absent, like cadvisor).
pub fn parse_os_release(contents: &str) -> String {
    contents
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_owned())
        .unwrap_or_else(|| "Linux".to_owned())
}

/// The pod CIDR of a node: spec.podCIDR, else the first of spec.podCIDRs.
pub fn pod_cidr(node: &Node) -> Option<String> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidr
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| spec.pod_cidrs.as_ref().and_then(|v| v.first().cloned()))
}

/// The Lease for `node` renewed at `now`, keeping `existing`'s metadata (resourceVersion).
pub fn renewed_lease(
    existing: Option<Lease>,
    node_name: &str,
    node_uid: Option<&str>,
    now: Timestamp,
) -> Lease {
    let mut lease = existing.unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(node_name.to_owned()),
            namespace: Some(LEASE_NAMESPACE.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    });
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(node_name.to_owned());
    spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
    spec.renew_time = Some(MicroTime(now));
    if let Some(uid) = node_uid {
        let owners = lease.metadata.owner_references.get_or_insert_with(Vec::new);
        if !owners.iter().any(|o| o.uid == uid) {
            owners.push(OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node_name.to_owned(),
                uid: uid.to_owned(),
                ..Default::default()
            });
        }
    }
    lease
}

// ---------------------------------------------------------------------------------------------
// I/O.

fn read_trimmed(path: &str) -> Result<String, NodeError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| NodeError::Read {
            what: path.to_owned(),
            source,
        })
}

/// Total size in bytes of the filesystem holding `path` (statvfs).
pub fn filesystem_size(path: &Path) -> Result<u64, NodeError> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| {
        NodeError::Read {
            what: path.display().to_string(),
            source: std::io::Error::other(e),
        }
    })?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated string and `st` a valid out pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(NodeError::Read {
            what: format!("statvfs {}", path.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(st.f_blocks as u64 * st.f_frsize as u64)
}

impl MachineInfo {
    /// Read the machine's facts; `storage_path` is statvfs'd (its nearest existing ancestor).
    pub fn read(storage_path: &Path) -> Result<Self, NodeError> {
        use procfs::Current;
        let cpu = procfs::CpuInfo::current()?.num_cores() as u64;
        let mem = procfs::Meminfo::current()?.mem_total;
        let mut p = storage_path;
        while !p.exists() {
            p = p.parent().unwrap_or(Path::new("/"));
        }
        let kernel = read_trimmed("/proc/sys/kernel/osrelease")?;
        Ok(Self {
            cpu_cores: cpu,
            memory_bytes: mem,
            storage_bytes: filesystem_size(p)?,
            machine_id: read_trimmed("/etc/machine-id").unwrap_or_default(),
            system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid").unwrap_or_default(),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id")?,
            kernel_version: kernel,
            os_image: parse_os_release(
                &std::fs::read_to_string("/etc/os-release").unwrap_or_default(),
            ),
        })
    }
}

/// Deadline of the CRI Version/Status calls of one status round.
const CRI_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Ask the runtime for its version and conditions.
pub async fn runtime_health(cri: &Cri, cni_conf_written: bool) -> RuntimeHealth {
    let mut rt = cri.runtime();
    let version = tokio::time::timeout(
        CRI_CALL_TIMEOUT,
        rt.version(cri_api::VersionRequest {
            version: "v1".into(),
        }),
    );
    let runtime_version = match version.await {
        Ok(Ok(v)) => {
            let v = v.into_inner();
            format!("{}://{}", v.runtime_name, v.runtime_version)
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "CRI Version");
            String::new()
        }
        Err(_) => String::new(),
    };
    let status = tokio::time::timeout(
        CRI_CALL_TIMEOUT,
        rt.status(cri_api::StatusRequest { verbose: false }),
    );
    let conditions = match status.await {
        Ok(Ok(s)) => Some(
            s.into_inner()
                .status
                .map(|s| s.conditions.iter().map(RuntimeCondition::from).collect())
                .unwrap_or_default(),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "CRI Status failed");
            None
        }
        Err(_) => {
            tracing::warn!("CRI Status timed out");
            None
        }
    };
    RuntimeHealth {
        runtime_version,
        conditions,
        cni_conf_written,
    }
}

/// Where the status loop learns the runtime's health: CRI in production, a fake in tests.
pub trait HealthProbe: Send + Sync + 'static {
    fn health(
        &self,
        cni_conf_written: bool,
    ) -> impl std::future::Future<Output = RuntimeHealth> + Send;
}

impl HealthProbe for Cri {
    async fn health(&self, cni_conf_written: bool) -> RuntimeHealth {
        runtime_health(self, cni_conf_written).await
    }
}

/// The periods of the node loops (kubelet's defaults in `Default`; tests shorten them).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Status written at least this often.
    pub status_update: Duration,
    /// Runtime health checked this often (a change is written at once).
    pub runtime_check: Duration,
    /// Lease renewed this often.
    pub lease_renew: Duration,
    /// Node polled this often for spec.podCIDR until it is set (then every `status_update`).
    pub cidr_poll: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            status_update: STATUS_UPDATE_PERIOD,
            runtime_check: RUNTIME_CHECK_PERIOD,
            lease_renew: LEASE_RENEW_PERIOD,
            cidr_poll: Duration::from_secs(1),
        }
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

async fn try_register(api: &Api<Node>, cfg: &AgentConfig) -> Result<Node, NodeError> {
    let name = &cfg.node_name;
    let kube_err = |op| {
        move |source| NodeError::Kube {
            op,
            node: name.clone(),
            source,
        }
    };
    let mut node = initial_node(name, arch());
    // kubelet's --node-labels, applied over its defaults at registration only.
    node.metadata.labels.get_or_insert_with(BTreeMap::new).extend(cfg.node_labels.clone());
    match api.create(&PostParams::default(), &node).await {
        Ok(n) => {
            tracing::info!(node = %name, "registered node");
            Ok(n)
        }
        Err(e) if is_status(&e, 409) => {
            let existing = api.get(name).await.map_err(kube_err("get"))?;
            match reconcile_metadata(&existing.metadata, name, arch()) {
                None => Ok(existing),
                Some(patch) => {
                    tracing::info!(node = %name, "node exists; reconciling default labels/annotations");
                    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(kube_err("patch"))
                }
            }
        }
        Err(e) => Err(kube_err("create")(e)),
    }
}

/// Register the Node (create; if it exists, reconcile its default labels and annotations), retrying
/// with backoff until it exists. Returns the Node, or an error only when `shutdown` fires first.
pub async fn register(
    client: &kube::Client,
    cfg: &AgentConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    crate::shutdown::retry(shutdown, Duration::from_secs(7), "unable to register node", || try_register(&api, cfg))
        .await
        .ok_or_else(|| anyhow::anyhow!("shutdown before node {} was registered", cfg.node_name))
}

/// Register the Node, then run the status, pod-CIDR/conflist and lease loops until `shutdown`.
/// Registration is idempotent, so calling `register` first (to wait for the Node) is fine.
pub async fn run(
    client: kube::Client,
    cri: Cri,
    cfg: Arc<AgentConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(client, cri, cfg, Timing::default(), shutdown).await
}

/// `run` with any health probe and periods.
pub async fn run_with(
    client: kube::Client,
    probe: impl HealthProbe,
    cfg: Arc<AgentConfig>,
    timing: Timing,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let node = match register(&client, &cfg, &shutdown).await {
        Ok(n) => n,
        Err(_) if shutdown.is_cancelled() => return Ok(()),
        Err(e) => return Err(e),
    };
    crate::sdnotify::ready(&format!("node {} registered", cfg.node_name));
    let uid = node.metadata.uid.clone();
    let prev = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    // A restarted agent whose Node already has its pod CIDR puts the conflist in place before the
    // first status post, so the node does not flap NotReady (kubelet's network readiness comes
    // from the runtime, which still has the conflist).
    let cni_ready = pod_cidr(&node).is_some_and(|cidr| write_conflist(&cfg, &cidr).is_ok());
    let (cni_tx, cni_rx) = watch::channel(cni_ready);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(status_loop(
        client.clone(),
        probe,
        cfg.clone(),
        timing,
        prev,
        cni_rx,
        shutdown.clone(),
    ));
    tasks.spawn(pod_cidr_loop(
        client.clone(),
        cfg.clone(),
        timing,
        cni_tx,
        shutdown.clone(),
    ));
    tasks.spawn(lease_loop(client, cfg, timing, uid, shutdown.clone()));
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            if e.is_panic() {
                shutdown.cancel();
                anyhow::bail!("node loop panicked: {e}");
            }
        }
    }
    Ok(())
}

async fn status_loop(
    client: kube::Client,
    probe: impl HealthProbe,
    cfg: Arc<AgentConfig>,
    timing: Timing,
    mut prev: Vec<NodeCondition>,
    mut cni_rx: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let api: Api<Node> = Api::all(client);
    let params = StatusParams {
        node_name: cfg.node_name.clone(),
        node_ip: cfg.node_ip.to_string(),
        kubelet_port: cfg.kubelet_listen.port() as i32,
        kubelet_version: cfg.kubelet_version.clone(),
        arch: arch().to_owned(),
    };
    let mut last_post: Option<tokio::time::Instant> = None;
    let mut machine = MachineInfo::default();
    loop {
        let due = last_post.is_none_or(|t| t.elapsed() >= timing.status_update);
        if due {
            // /proc, statvfs and /etc reads: only for a periodic post, and off the async threads.
            let dir = cfg.state_dir.clone();
            match tokio::task::spawn_blocking(move || MachineInfo::read(&dir)).await {
                Ok(Ok(m)) => machine = m,
                Ok(Err(e)) => tracing::warn!(error = %e, "reading machine info"),
                Err(e) => tracing::warn!(error = %e, "reading machine info"),
            }
        }
        let cni_written = *cni_rx.borrow_and_update();
        let health = probe.health(cni_written).await;
        let status = compute_status(&params, &machine, &health, &prev, Timestamp::now());
        let conds = status.conditions.clone().unwrap_or_default();
        let changed = conditions_key(&conds) != conditions_key(&prev);
        if changed || due {
            let patch = serde_json::json!({ "status": status });
            match api
                .patch_status(
                    &cfg.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    if changed {
                        let ready = conds.iter().find(|c| c.type_ == "Ready");
                        tracing::info!(
                            node = %cfg.node_name,
                            ready = ready.map(|c| c.status.as_str()).unwrap_or(""),
                            message = ready.and_then(|c| c.message.as_deref()).unwrap_or(""),
                            "node status changed"
                        );
                    }
                    prev = conds;
                    last_post = Some(tokio::time::Instant::now());
                }
                Err(e) => tracing::warn!(node = %cfg.node_name, error = %e, "updating node status"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(timing.runtime_check) => {}
            r = cni_rx.changed() => if r.is_err() {
                // The CIDR loop ended (shutdown); keep posting on the timer.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(timing.runtime_check) => {}
                }
            },
        }
    }
}

/// Poll the Node for spec.podCIDR and keep the conflist in place for it.
async fn pod_cidr_loop(
    client: kube::Client,
    cfg: Arc<AgentConfig>,
    timing: Timing,
    cni_tx: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let api: Api<Node> = Api::all(client);
    let mut current: Option<String> = None;
    loop {
        match api.get(&cfg.node_name).await {
            Ok(node) => match pod_cidr(&node) {
                None => tracing::debug!(node = %cfg.node_name, "waiting for node.spec.podCIDR"),
                Some(cidr) => match write_conflist(&cfg, &cidr) {
                    Ok(written) => {
                        if written || current.as_deref() != Some(cidr.as_str()) {
                            tracing::info!(pod_cidr = %cidr, dir = %cfg.cni_conf_dir.display(), "CNI conflist in place");
                        }
                        current = Some(cidr);
                        cni_tx.send_if_modified(|v| !std::mem::replace(v, true));
                    }
                    Err(e) => {
                        tracing::error!(pod_cidr = %cidr, error = %e, "writing CNI conflist");
                        cni_tx.send_if_modified(|v| std::mem::replace(v, false));
                    }
                },
            },
            Err(e) => tracing::warn!(node = %cfg.node_name, error = %e, "getting node"),
        }
        let period = if current.is_some() {
            timing.status_update
        } else {
            timing.cidr_poll
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

fn write_conflist(cfg: &AgentConfig, cidr: &str) -> anyhow::Result<bool> {
    let net: ipnetwork::IpNetwork = cidr
        .parse()
        .map_err(|e| anyhow::anyhow!("pod CIDR {cidr:?}: {e}"))?;
    let contents = cni_conf::render(
        cni_conf::NETWORK_NAME,
        &cfg.bridge,
        cfg.mtu,
        net,
        &cfg.cni_data_dir,
    )?;
    Ok(cni_conf::write_atomic(&cfg.cni_conf_dir, &contents)?)
}

/// Create the Lease, then renew it every 10 s (PUT with resourceVersion; on conflict re-get).
async fn lease_loop(
    client: kube::Client,
    cfg: Arc<AgentConfig>,
    timing: Timing,
    node_uid: Option<String>,
    shutdown: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let name = cfg.node_name.clone();
    let mut latest: Option<Lease> = None;
    loop {
        let renewed = async {
            if latest.is_none() {
                match api.get(&name).await {
                    Ok(l) => latest = Some(l),
                    Err(e) if is_status(&e, 404) => {
                        let lease =
                            renewed_lease(None, &name, node_uid.as_deref(), Timestamp::now());
                        return api.create(&PostParams::default(), &lease).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            let lease = renewed_lease(latest.take(), &name, node_uid.as_deref(), Timestamp::now());
            api.replace(&name, &PostParams::default(), &lease).await
        }
        .await;
        match renewed {
            Ok(l) => latest = Some(l),
            Err(e) => {
                // Conflict or anything else: re-get before the next attempt.
                latest = None;
                if is_status(&e, 409) {
                    tracing::debug!(lease = %name, "lease conflict; re-reading");
                    continue_soon(&shutdown).await;
                    if shutdown.is_cancelled() {
                        return;
                    }
                    continue;
                }
                tracing::warn!(lease = %name, error = %e, "renewing node lease");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(timing.lease_renew) => {}
        }
    }
}

async fn continue_soon(shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> StatusParams {
        StatusParams {
            node_name: "n1".into(),
            node_ip: "10.0.0.5".into(),
            kubelet_port: 10250,
            kubelet_version: "v1.33.0".into(),
            arch: "amd64".into(),
        }
    }

    fn machine() -> MachineInfo {
        MachineInfo {
            cpu_cores: 4,
            memory_bytes: 16393148 * 1024,
            storage_bytes: 100 << 30,
            machine_id: "mid".into(),
            system_uuid: "uuid".into(),
            boot_id: "boot".into(),
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
        }
    }

    fn cond(kind: &str, status: bool) -> RuntimeCondition {
        RuntimeCondition {
            kind: kind.into(),
            status,
            reason: String::new(),
            message: String::new(),
        }
    }

    fn healthy() -> RuntimeHealth {
        RuntimeHealth {
            runtime_version: "containerd://1.6.20".into(),
            conditions: Some(vec![cond("RuntimeReady", true), cond("NetworkReady", true)]),
            cni_conf_written: true,
        }
    }

    fn ready_of(s: &NodeStatus) -> NodeCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .clone()
    }

    #[test]
    fn arch_mapping() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        let l = default_labels("n1", "arm64");
        assert_eq!(l["kubernetes.io/arch"], "arm64");
        assert_eq!(l["beta.kubernetes.io/os"], "linux");
        assert_eq!(l["kubernetes.io/hostname"], "n1");
    }

    #[test]
    fn quantities() {
        assert_eq!(binary_quantity(0).0, "0");
        assert_eq!(binary_quantity(100 << 20).0, "100Mi");
        assert_eq!(binary_quantity(16393148 * 1024).0, "16393148Ki");
        assert_eq!(binary_quantity(1000).0, "1000");
    }

    #[test]
    fn ready_status() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let s = compute_status(&params(), &machine(), &healthy(), &[], now);
        let r = ready_of(&s);
        assert_eq!(
            (r.status.as_str(), r.reason.as_deref()),
            ("True", Some("KubeletReady"))
        );
        assert_eq!(
            r.message.as_deref(),
            Some("kubelet is posting ready status")
        );
        let cap = s.capacity.as_ref().unwrap();
        assert_eq!(cap["cpu"].0, "4");
        assert_eq!(cap["memory"].0, "16393148Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["ephemeral-storage"].0, "100Gi");
        assert_eq!(cap["hugepages-2Mi"].0, "0");
        let alloc = s.allocatable.as_ref().unwrap();
        assert_eq!(alloc["memory"].0, format!("{}Ki", 16393148 - 102400));
        assert_eq!(
            alloc["ephemeral-storage"].0,
            binary_quantity((100u64 << 30) / 10 * 9).0
        );
        let a = s.addresses.as_ref().unwrap();
        assert_eq!(
            (a[0].type_.as_str(), a[0].address.as_str()),
            ("InternalIP", "10.0.0.5")
        );
        assert_eq!(
            (a[1].type_.as_str(), a[1].address.as_str()),
            ("Hostname", "n1")
        );
        assert_eq!(
            s.daemon_endpoints
                .as_ref()
                .unwrap()
                .kubelet_endpoint
                .as_ref()
                .unwrap()
                .port,
            10250
        );
        let info = s.node_info.as_ref().unwrap();
        assert_eq!(info.container_runtime_version, "containerd://1.6.20");
        assert_eq!(info.operating_system, "linux");
        assert_eq!(info.architecture, "amd64");
        let kinds: Vec<_> = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("MemoryPressure", "False"),
                ("DiskPressure", "False"),
                ("PIDPressure", "False"),
                ("Ready", "True")
            ]
        );
    }

    #[test]
    fn not_ready_messages_match_kubelet() {
        let now = Timestamp::now();
        let mut h = healthy();
        h.conditions = Some(vec![
            cond("RuntimeReady", true),
            RuntimeCondition {
                kind: "NetworkReady".into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message: "Network plugin returns error: cni plugin not initialized".into(),
            },
        ]);
        let r = ready_of(&compute_status(&params(), &machine(), &h, &[], now));
        assert_eq!(r.status, "False");
        assert_eq!(r.reason.as_deref(), Some("KubeletNotReady"));
        assert_eq!(
            r.message.as_deref(),
            Some("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized")
        );

        h.conditions = Some(vec![cond("NetworkReady", true)]);
        let r = ready_of(&compute_status(&params(), &machine(), &h, &[], now));
        assert_eq!(
            r.message.as_deref(),
            Some("container runtime not ready: <nil>")
        );

        h.conditions = None;
        let r = ready_of(&compute_status(&params(), &machine(), &h, &[], now));
        assert_eq!(r.message.as_deref(), Some("container runtime is down"));

        let mut h = healthy();
        h.cni_conf_written = false;
        let r = ready_of(&compute_status(&params(), &machine(), &h, &[], now));
        assert_eq!(r.status, "False");
        assert!(r.message.unwrap().contains("podCIDR"));

        h.conditions = Some(vec![
            cond("RuntimeReady", false),
            cond("NetworkReady", false),
        ]);
        let r = ready_of(&compute_status(&params(), &machine(), &h, &[], now));
        assert!(r
            .message
            .unwrap()
            .starts_with("[container runtime not ready: RuntimeReady=false"));
    }

    #[test]
    fn transition_time_is_stable_until_status_changes() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let t2: Timestamp = "2026-01-01T00:00:20Z".parse().unwrap();
        let mut h = healthy();
        h.cni_conf_written = false;
        let s0 = compute_status(&params(), &machine(), &h, &[], t0);
        let s1 = compute_status(
            &params(),
            &machine(),
            &h,
            s0.conditions.as_ref().unwrap(),
            t1,
        );
        let r1 = ready_of(&s1);
        assert_eq!(r1.last_transition_time, Some(Time(t0)));
        assert_eq!(r1.last_heartbeat_time, Some(Time(t1)));
        let s2 = compute_status(
            &params(),
            &machine(),
            &healthy(),
            s1.conditions.as_ref().unwrap(),
            t2,
        );
        let r2 = ready_of(&s2);
        assert_eq!(r2.status, "True");
        assert_eq!(r2.last_transition_time, Some(Time(t2)));
        let mp = s2
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "MemoryPressure")
            .unwrap();
        assert_eq!(mp.last_transition_time, Some(Time(t0)));
        assert_ne!(
            conditions_key(s1.conditions.as_ref().unwrap()),
            conditions_key(s2.conditions.as_ref().unwrap())
        );
        // The merge patch body serializes with kubelet's field names.
        let v = serde_json::json!({ "status": s2 });
        assert_eq!(
            v["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
            10250
        );
        assert_eq!(v["status"]["nodeInfo"]["kubeletVersion"], "v1.33.0");
    }

    #[test]
    fn metadata_reconcile() {
        let mut meta = initial_node("n1", "amd64").metadata;
        assert_eq!(reconcile_metadata(&meta, "n1", "amd64"), None);
        meta.labels
            .as_mut()
            .unwrap()
            .insert("custom".into(), "x".into());
        assert_eq!(
            reconcile_metadata(&meta, "n1", "amd64"),
            None,
            "foreign labels are left alone"
        );
        meta.labels
            .as_mut()
            .unwrap()
            .insert("kubernetes.io/arch".into(), "arm64".into());
        meta.annotations = None;
        let p = reconcile_metadata(&meta, "n1", "amd64").unwrap();
        assert_eq!(
            p,
            serde_json::json!({"metadata": {"labels": {"kubernetes.io/arch": "amd64"},
                "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"}}})
        );
    }

    #[test]
    fn os_release_and_cidr() {
        assert_eq!(
            parse_os_release("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(parse_os_release(""), "Linux");
        let mut n = Node::default();
        assert_eq!(pod_cidr(&n), None);
        n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            pod_cidrs: Some(vec!["10.244.1.0/24".into()]),
            ..Default::default()
        });
        assert_eq!(pod_cidr(&n).as_deref(), Some("10.244.1.0/24"));
        n.spec.as_mut().unwrap().pod_cidr = Some("10.244.2.0/24".into());
        assert_eq!(pod_cidr(&n).as_deref(), Some("10.244.2.0/24"));
    }

    #[test]
    fn machine_info_of_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let m = MachineInfo::read(&dir.path().join("not/yet/created")).unwrap();
        assert!(
            m.cpu_cores >= 1 && m.memory_bytes > 0 && m.storage_bytes > 0,
            "{m:?}"
        );
        assert!(
            !m.boot_id.is_empty() && !m.kernel_version.is_empty(),
            "{m:?}"
        );
    }

    #[test]
    fn lease_renewal() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let l = renewed_lease(None, "n1", Some("uid-1"), t0);
        assert_eq!(l.metadata.namespace.as_deref(), Some("kube-node-lease"));
        let spec = l.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        let owners = l.metadata.owner_references.as_ref().unwrap();
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].uid.as_str()),
            ("Node", "uid-1")
        );
        let mut l = l;
        l.metadata.resource_version = Some("7".into());
        let t1: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let l2 = renewed_lease(Some(l), "n1", Some("uid-1"), t1);
        assert_eq!(l2.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(l2.metadata.owner_references.as_ref().unwrap().len(), 1);
        assert_eq!(l2.spec.unwrap().renew_time, Some(MicroTime(t1)));
    }
}

/// The loops against a fake API server (nodes, nodes/status, leases over plain HTTP on loopback)
/// with a fake runtime probe and short periods.
#[cfg(test)]
mod api_tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use serde_json::{json, Value};
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// RFC 7386 JSON merge patch.
    fn merge(target: &mut Value, patch: &Value) {
        match patch {
            Value::Object(p) => {
                if !target.is_object() {
                    *target = json!({});
                }
                let t = target.as_object_mut().unwrap();
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
            other => *target = other.clone(),
        }
    }

    #[derive(Default)]
    struct Fake {
        objects: Mutex<HashMap<String, Value>>,
        rv: std::sync::atomic::AtomicU64,
        status_patches: Mutex<Vec<Value>>,
        lease_puts: std::sync::atomic::AtomicU64,
        lease_conflicts: std::sync::atomic::AtomicU64,
    }

    fn status(code: u16, reason: &str) -> (u16, Value) {
        (
            code,
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":reason,"code":code,"message":reason}),
        )
    }

    impl Fake {
        fn next_rv(&self) -> String {
            (self.rv.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1).to_string()
        }

        fn handle(
            &self,
            method: &http::Method,
            path: &str,
            content_type: &str,
            body: &[u8],
        ) -> (u16, Value) {
            let body: Value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(body).unwrap()
            };
            let (collection, name, sub) = match path.split('/').collect::<Vec<_>>().as_slice() {
                ["", "api", "v1", "nodes"] => ("nodes", None, None),
                ["", "api", "v1", "nodes", n] => ("nodes", Some(n.to_string()), None),
                ["", "api", "v1", "nodes", n, "status"] => {
                    ("nodes", Some(n.to_string()), Some("status"))
                }
                ["", "apis", "coordination.k8s.io", "v1", "namespaces", "kube-node-lease", "leases"] => {
                    ("leases", None, None)
                }
                ["", "apis", "coordination.k8s.io", "v1", "namespaces", "kube-node-lease", "leases", n] => {
                    ("leases", Some(n.to_string()), None)
                }
                _ => return status(404, "NotFound"),
            };
            let mut objects = self.objects.lock().unwrap();
            match (method.as_str(), name) {
                ("POST", None) => {
                    let n = body["metadata"]["name"].as_str().unwrap().to_owned();
                    let key = format!("{collection}/{n}");
                    if objects.contains_key(&key) {
                        return status(409, "AlreadyExists");
                    }
                    let mut obj = body;
                    obj["metadata"]["uid"] = json!(format!("uid-{n}"));
                    obj["metadata"]["resourceVersion"] = json!(self.next_rv());
                    objects.insert(key, obj.clone());
                    (201, obj)
                }
                (m, Some(n)) => {
                    let key = format!("{collection}/{n}");
                    let Some(obj) = objects.get_mut(&key) else {
                        return status(404, "NotFound");
                    };
                    match m {
                        "GET" => (200, obj.clone()),
                        "PATCH" => {
                            assert_eq!(content_type, "application/merge-patch+json");
                            if sub == Some("status") {
                                let keys: Vec<_> =
                                    body.as_object().unwrap().keys().cloned().collect();
                                assert_eq!(keys, ["status"], "status patches touch only status");
                                self.status_patches.lock().unwrap().push(body.clone());
                            }
                            merge(obj, &body);
                            obj["metadata"]["resourceVersion"] = json!(self.next_rv());
                            (200, obj.clone())
                        }
                        "PUT" => {
                            if body["metadata"]["resourceVersion"]
                                != obj["metadata"]["resourceVersion"]
                            {
                                self.lease_conflicts
                                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                return status(409, "Conflict");
                            }
                            self.lease_puts
                                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let mut new = body;
                            new["metadata"]["uid"] = obj["metadata"]["uid"].clone();
                            new["metadata"]["resourceVersion"] = json!(self.next_rv());
                            *obj = new.clone();
                            (200, new)
                        }
                        _ => status(405, "MethodNotAllowed"),
                    }
                }
                _ => status(405, "MethodNotAllowed"),
            }
        }

        fn get(&self, key: &str) -> Option<Value> {
            self.objects.lock().unwrap().get(key).cloned()
        }

        fn update(&self, key: &str, f: impl FnOnce(&mut Value)) {
            let mut o = self.objects.lock().unwrap();
            let v = o.get_mut(key).unwrap();
            f(v);
            v["metadata"]["resourceVersion"] = json!(self.next_rv());
        }
    }

    async fn serve(fake: Arc<Fake>) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let fake = fake.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let fake = fake.clone();
                            async move {
                                let method = req.method().clone();
                                let path = req.uri().path().to_owned();
                                let ct = req
                                    .headers()
                                    .get("content-type")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_owned();
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let (code, v) = fake.handle(&method, &path, &ct, &body);
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(code)
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(v.to_string())))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        addr
    }

    /// A runtime that is ready unless told otherwise.
    #[derive(Clone)]
    struct FakeProbe(Arc<std::sync::atomic::AtomicBool>);
    impl HealthProbe for FakeProbe {
        async fn health(&self, cni_conf_written: bool) -> RuntimeHealth {
            let net = self.0.load(std::sync::atomic::Ordering::SeqCst);
            RuntimeHealth {
                runtime_version: "containerd://1.6.20".into(),
                conditions: Some(vec![
                    RuntimeCondition {
                        kind: "RuntimeReady".into(),
                        status: true,
                        ..Default::default()
                    },
                    RuntimeCondition {
                        kind: "NetworkReady".into(),
                        status: net,
                        reason: if net {
                            String::new()
                        } else {
                            "NetworkPluginNotReady".into()
                        },
                        message: if net {
                            String::new()
                        } else {
                            "cni plugin not initialized".into()
                        },
                    },
                ]),
                cni_conf_written,
            }
        }
    }

    async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn ready(node: &Value) -> Option<Value> {
        node["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")
            .cloned()
    }

    #[tokio::test]
    async fn register_status_cidr_and_lease() {
        let fake = Arc::new(Fake::default());
        // A Node left from an earlier run, with a wrong arch label and a label of its own.
        fake.objects.lock().unwrap().insert(
            "nodes/n1".into(),
            json!({"apiVersion":"v1","kind":"Node","metadata":{"name":"n1","uid":"uid-n1","resourceVersion":"1",
                "labels":{"kubernetes.io/arch":"sparc","team":"a"}}}),
        );
        let addr = serve(fake.clone()).await;
        let client =
            kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = Arc::new(AgentConfig {
            node_name: "n1".into(),
            node_ip: "10.0.0.5".parse().unwrap(),
            kubeconfig: dir.path().join("kc"),
            containerd_socket: dir.path().join("sock"),
            cni_conf_dir: dir.path().join("net.d"),
            cni_data_dir: dir.path().join("ipam"),
            pod_log_dir: dir.path().join("pods"),
            state_dir: dir.path().join("state"),
            kubelet_listen: "0.0.0.0:10250".parse().unwrap(),
            bridge: "berth0".into(),
            mtu: 1450,
            kubelet_version: "v1.33.0".into(),
            node_labels: [("tier".to_owned(), "web".to_owned())].into(),
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".into(),
        });
        let timing = Timing {
            status_update: Duration::from_millis(300),
            runtime_check: Duration::from_millis(50),
            lease_renew: Duration::from_millis(100),
            cidr_poll: Duration::from_millis(50),
        };
        let net_ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let shutdown = CancellationToken::new();

        // register() returns once the Node exists and has reconciled its default labels.
        let node = register(&client, &cfg, &shutdown).await.unwrap();
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/arch"], arch());
        assert_eq!(labels["team"], "a");
        assert_eq!(
            node.metadata.annotations.unwrap()
                ["volumes.kubernetes.io/controller-managed-attach-detach"],
            "true"
        );

        let task = tokio::spawn(run_with(
            client,
            FakeProbe(net_ready.clone()),
            cfg.clone(),
            timing,
            shutdown.clone(),
        ));

        // NotReady with kubelet's message while the runtime's network is not ready.
        let r = wait_for("a NotReady status", || ready(&fake.get("nodes/n1")?)).await;
        assert_eq!(r["status"], "False");
        assert_eq!(
            r["message"],
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:cni plugin not initialized"
        );
        let first_transition = r["lastTransitionTime"].clone();
        let node = fake.get("nodes/n1").unwrap();
        assert_eq!(
            node["status"]["nodeInfo"]["containerRuntimeVersion"],
            "containerd://1.6.20"
        );
        assert_eq!(
            node["status"]["addresses"][0],
            json!({"type":"InternalIP","address":"10.0.0.5"})
        );
        assert_eq!(
            node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
            10250
        );
        assert!(node["status"]["capacity"]["memory"]
            .as_str()
            .unwrap()
            .ends_with("Ki"));

        // Network ready but no podCIDR yet: still NotReady, no conflist.
        net_ready.store(true, std::sync::atomic::Ordering::SeqCst);
        wait_for("the podCIDR message", || {
            let r = ready(&fake.get("nodes/n1")?)?;
            r["message"].as_str()?.contains("podCIDR").then_some(())
        })
        .await;
        assert!(!cfg.cni_conf_dir.join(cni_conf::FILE_NAME).exists());

        // The IPAM controller assigns a CIDR: the conflist appears, then Ready=True.
        fake.update("nodes/n1", |n| {
            n["spec"] = json!({"podCIDR": "10.244.7.0/24", "podCIDRs": ["10.244.7.0/24"]})
        });
        let r = wait_for("Ready=True", || {
            ready(&fake.get("nodes/n1")?).filter(|r| r["status"] == "True")
        })
        .await;
        assert_eq!(r["reason"], "KubeletReady");
        assert_eq!(r["message"], "kubelet is posting ready status");
        let conf: Value = serde_json::from_str(
            &std::fs::read_to_string(cfg.cni_conf_dir.join(cni_conf::FILE_NAME)).unwrap(),
        )
        .unwrap();
        assert_eq!(conf["plugins"][0]["ipam"]["gateway"], "10.244.7.1");
        assert_eq!(
            conf["plugins"][0]["ipam"]["dataDir"],
            cfg.cni_data_dir.to_string_lossy().as_ref()
        );
        assert_eq!(conf["plugins"][0]["mtu"], 1450);
        let ready_transition = r["lastTransitionTime"].clone();
        // (Time has second precision on the wire, so the NotReady -> Ready transition may share
        // `first_transition`'s second; compute_status's unit tests check the transition itself.)
        assert!(ready_transition.as_str() >= first_transition.as_str());
        let mp = |n: &Value| n["status"]["conditions"][0]["lastTransitionTime"].clone();
        let mp0 = mp(&fake.get("nodes/n1").unwrap());

        // Heartbeats continue; transition times stay put.
        let n_patches = fake.status_patches.lock().unwrap().len();
        wait_for("more heartbeats", || {
            (fake.status_patches.lock().unwrap().len() >= n_patches + 2).then_some(())
        })
        .await;
        let node = fake.get("nodes/n1").unwrap();
        assert_eq!(
            ready(&node).unwrap()["lastTransitionTime"],
            ready_transition
        );
        assert_eq!(mp(&node), mp0);

        // A new podCIDR rewrites the conflist.
        fake.update("nodes/n1", |n| {
            n["spec"] = json!({"podCIDR": "10.244.9.0/24"})
        });
        wait_for("the conflist for the new CIDR", || {
            std::fs::read_to_string(cfg.cni_conf_dir.join(cni_conf::FILE_NAME))
                .ok()?
                .contains("10.244.9.1")
                .then_some(())
        })
        .await;

        // The lease: created with the node as owner, renewed, and re-read after a conflict.
        let lease = wait_for("the lease", || fake.get("leases/n1")).await;
        assert_eq!(lease["spec"]["holderIdentity"], "n1");
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(lease["metadata"]["ownerReferences"][0]["uid"], "uid-n1");
        assert_eq!(lease["metadata"]["ownerReferences"][0]["kind"], "Node");
        wait_for("lease renewals", || {
            (fake.lease_puts.load(std::sync::atomic::Ordering::SeqCst) >= 2).then_some(())
        })
        .await;
        fake.update("leases/n1", |_| {}); // someone else wrote it: our resourceVersion is stale
        wait_for("a conflict", || {
            (fake
                .lease_conflicts
                .load(std::sync::atomic::Ordering::SeqCst)
                >= 1)
                .then_some(())
        })
        .await;
        let puts = fake.lease_puts.load(std::sync::atomic::Ordering::SeqCst);
        wait_for("renewal after the conflict", || {
            (fake.lease_puts.load(std::sync::atomic::Ordering::SeqCst) > puts).then_some(())
        })
        .await;

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
