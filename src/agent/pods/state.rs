//! What the runtime says about one pod (kubelet's `kubecontainer.PodStatus`), and how to read it
//! from CRI: ListPodSandbox + ListContainers by the pod-uid label, then the per-object statuses.
use std::collections::HashMap;

use super::kuberuntime::{ANN_HASH, LABEL_CONTAINER_NAME, LABEL_POD_UID};
use crate::cri::{api, CriError, Runtime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CState {
    Created,
    Running,
    Exited,
    Unknown,
}

impl CState {
    pub fn from_cri(state: i32) -> Self {
        match api::ContainerState::try_from(state) {
            Ok(api::ContainerState::ContainerCreated) => CState::Created,
            Ok(api::ContainerState::ContainerRunning) => CState::Running,
            Ok(api::ContainerState::ContainerExited) => CState::Exited,
            _ => CState::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SandboxInfo {
    pub id: String,
    pub attempt: u32,
    pub ready: bool,
    pub created_at: i64,
    /// Primary IP first.
    pub ips: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    /// The restart count this container was created with (annotation, else metadata.attempt).
    pub restart_count: u32,
    pub state: CState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub hash: String,
    pub image: String,
    pub image_ref: String,
}

/// Everything the runtime has for one pod uid; both lists newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodRuntimeStatus {
    pub sandboxes: Vec<SandboxInfo>,
    pub containers: Vec<ContainerInfo>,
}

impl PodRuntimeStatus {
    /// Newest container of that name.
    pub fn latest(&self, name: &str) -> Option<&ContainerInfo> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// All containers of that name, newest first.
    pub fn by_name<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ContainerInfo> + 'a {
        self.containers.iter().filter(move |c| c.name == name)
    }

    /// The newest sandbox, if it is ready.
    pub fn ready_sandbox(&self) -> Option<&SandboxInfo> {
        self.sandboxes.first().filter(|s| s.ready)
    }

    pub fn is_empty(&self) -> bool {
        self.sandboxes.is_empty() && self.containers.is_empty()
    }

    pub fn sort(&mut self) {
        self.sandboxes
            .sort_by_key(|s| std::cmp::Reverse((s.created_at, s.attempt)));
        self.containers
            .sort_by_key(|c| std::cmp::Reverse((c.created_at, c.restart_count)));
    }
}

pub fn container_info(c: &api::ContainerStatus, sandbox_id: &str) -> ContainerInfo {
    let md = c.metadata.clone().unwrap_or_default();
    let name = c
        .labels
        .get(LABEL_CONTAINER_NAME)
        .cloned()
        .unwrap_or(md.name);
    let restart_count = super::kuberuntime::restart_count(&c.annotations, md.attempt);
    ContainerInfo {
        id: c.id.clone(),
        sandbox_id: sandbox_id.to_string(),
        name,
        restart_count,
        state: CState::from_cri(c.state),
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        reason: c.reason.clone(),
        message: c.message.clone(),
        hash: c.annotations.get(ANN_HASH).cloned().unwrap_or_default(),
        image: c
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
        image_ref: c.image_ref.clone(),
    }
}

pub fn sandbox_info(s: &api::PodSandboxStatus) -> SandboxInfo {
    let mut ips = Vec::new();
    if let Some(n) = &s.network {
        if !n.ip.is_empty() {
            ips.push(n.ip.clone());
        }
        ips.extend(
            n.additional_ips
                .iter()
                .map(|p| p.ip.clone())
                .filter(|ip| !ip.is_empty()),
        );
    }
    SandboxInfo {
        id: s.id.clone(),
        attempt: s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
        ready: s.state == api::PodSandboxState::SandboxReady as i32,
        created_at: s.created_at,
        ips,
    }
}

/// Read the runtime's view of a pod (kubelet's GetPodStatus). Objects that vanish between the
/// list and the status call are skipped.
pub async fn get_pod_status<R: Runtime>(rt: &R, uid: &str) -> Result<PodRuntimeStatus, CriError> {
    let selector = HashMap::from([(LABEL_POD_UID.to_string(), uid.to_string())]);
    let sandboxes = rt.list_pod_sandboxes(selector.clone()).await?;
    let containers = rt.list_containers(selector).await?;
    let mut out = PodRuntimeStatus::default();
    for s in &sandboxes {
        if s.state == api::PodSandboxState::SandboxReady as i32 {
            match rt.pod_sandbox_status(&s.id).await {
                Ok(st) => out.sandboxes.push(sandbox_info(&st)),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        } else {
            // Not ready: no network to read; the list entry is enough.
            out.sandboxes.push(SandboxInfo {
                id: s.id.clone(),
                attempt: s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
                ready: false,
                created_at: s.created_at,
                ips: vec![],
            });
        }
    }
    for c in &containers {
        match rt.container_status(&c.id).await {
            Ok(st) => out.containers.push(container_info(&st, &c.pod_sandbox_id)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}
