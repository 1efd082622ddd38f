//! An in-memory CRI runtime for unit tests: sandboxes, containers and images in a map, every call
//! recorded, failures injectable. Containers start "running" and stay so until [`FakeRuntime::exit`].
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::{api, CriError, Labels, Runtime};

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Clock in wall-clock nanoseconds, strictly increasing across mutations.
    now_ns: i64,
    sandboxes: BTreeMap<String, (api::PodSandboxStatus, api::PodSandboxConfig)>,
    containers: BTreeMap<String, (api::ContainerStatus, String)>,
    images: HashSet<String>,
    calls: Vec<String>,
    /// Scripted failures: op name ("PullImage", "CreateContainer", ...) -> message, consumed once.
    fail_next: HashMap<&'static str, String>,
    /// IP handed to the next sandbox; incremented.
    next_ip: u8,
}

impl State {
    fn tick(&mut self) {
        let real = i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX);
        self.now_ns = real.max(self.now_ns + 1000);
    }
}

/// Cheap to clone; clones share the state.
#[derive(Clone, Debug, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
}

fn matches(labels: &HashMap<String, String>, selector: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn not_found(op: &'static str, id: &str) -> CriError {
    CriError::Call {
        op,
        status: tonic::Status::not_found(format!("{id} not found")),
    }
}

impl FakeRuntime {
    pub fn new() -> Self {
        let rt = Self::default();
        rt.state.lock().unwrap().next_ip = 2;
        rt
    }

    /// Make `image` present.
    pub fn add_image(&self, image: &str) {
        self.state.lock().unwrap().images.insert(image.to_string());
    }

    /// The next call of `op` (e.g. "PullImage", "CreateContainer", "StartContainer",
    /// "RunPodSandbox") fails with `message`.
    pub fn fail_next(&self, op: &'static str, message: &str) {
        self.state
            .lock()
            .unwrap()
            .fail_next
            .insert(op, message.to_string());
    }

    /// The container's process exits with `code`.
    pub fn exit(&self, id: &str, code: i32) {
        let mut st = self.state.lock().unwrap();
        st.tick();
        let now = st.now_ns;
        if let Some((c, _)) = st.containers.get_mut(id) {
            c.state = api::ContainerState::ContainerExited as i32;
            c.exit_code = code;
            c.finished_at = now;
            c.reason = if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            };
        }
    }

    /// Every call made so far, as "Op arg".
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.state.lock().unwrap().calls.clear();
    }

    /// Container ids in creation order.
    pub fn container_ids(&self) -> Vec<String> {
        let st = self.state.lock().unwrap();
        let mut v: Vec<_> = st
            .containers
            .iter()
            .map(|(id, (c, _))| (c.created_at, id.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    pub fn sandbox_ids(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .sandboxes
            .keys()
            .cloned()
            .collect()
    }

    fn begin(
        &self,
        op: &'static str,
        arg: &str,
    ) -> Result<std::sync::MutexGuard<'_, State>, CriError> {
        let mut st = self.state.lock().unwrap();
        st.calls.push(format!("{op} {arg}"));
        st.tick();
        if let Some(msg) = st.fail_next.remove(op) {
            return Err(CriError::Call {
                op,
                status: tonic::Status::unknown(msg),
            });
        }
        Ok(st)
    }
}

impl Runtime for FakeRuntime {
    async fn run_pod_sandbox(&self, config: api::PodSandboxConfig) -> Result<String, CriError> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let mut st = self.begin("RunPodSandbox", &name)?;
        st.next_id += 1;
        let id = format!("sb{}", st.next_id);
        let ip = format!("10.244.0.{}", st.next_ip);
        st.next_ip = st.next_ip.wrapping_add(1);
        let status = api::PodSandboxStatus {
            id: id.clone(),
            metadata: config.metadata.clone(),
            state: api::PodSandboxState::SandboxReady as i32,
            created_at: st.now_ns,
            network: Some(api::PodSandboxNetworkStatus {
                ip,
                additional_ips: vec![],
            }),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            ..Default::default()
        };
        st.sandboxes.insert(id.clone(), (status, config));
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut st = self.begin("StopPodSandbox", id)?;
        let now = st.now_ns;
        if !st.sandboxes.contains_key(id) {
            return Ok(()); // idempotent, like containerd
        }
        for (c, sb) in st.containers.values_mut() {
            if sb == id && c.state != api::ContainerState::ContainerExited as i32 {
                c.state = api::ContainerState::ContainerExited as i32;
                c.exit_code = 137;
                c.finished_at = now;
                c.reason = "Error".into();
            }
        }
        let (s, _) = st.sandboxes.get_mut(id).unwrap();
        s.state = api::PodSandboxState::SandboxNotready as i32;
        s.network = None;
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut st = self.begin("RemovePodSandbox", id)?;
        st.sandboxes.remove(id);
        st.containers.retain(|_, (_, sb)| sb != id);
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus, CriError> {
        let st = self.state.lock().unwrap();
        st.sandboxes
            .get(id)
            .map(|(s, _)| s.clone())
            .ok_or_else(|| not_found("PodSandboxStatus", id))
    }

    async fn list_pod_sandboxes(&self, selector: Labels) -> Result<Vec<api::PodSandbox>, CriError> {
        let st = self.state.lock().unwrap();
        Ok(st
            .sandboxes
            .values()
            .filter(|(s, _)| matches(&s.labels, &selector))
            .map(|(s, _)| api::PodSandbox {
                id: s.id.clone(),
                metadata: s.metadata.clone(),
                state: s.state,
                created_at: s.created_at,
                labels: s.labels.clone(),
                annotations: s.annotations.clone(),
                runtime_handler: String::new(),
            })
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        _sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let mut st = self.begin("CreateContainer", &name)?;
        if !st.sandboxes.contains_key(sandbox_id) {
            return Err(not_found("CreateContainer", sandbox_id));
        }
        let image = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let known = st.images.contains(&image)
            || st
                .images
                .iter()
                .any(|i| format!("sha256:{}", i.len()) == image);
        if !known {
            return Err(CriError::Call {
                op: "CreateContainer",
                status: tonic::Status::not_found(format!("image {image} not found")),
            });
        }
        st.next_id += 1;
        let id = format!("c{}", st.next_id);
        let status = api::ContainerStatus {
            id: id.clone(),
            metadata: config.metadata.clone(),
            state: api::ContainerState::ContainerCreated as i32,
            created_at: st.now_ns,
            image: config.image.clone(),
            image_ref: format!("sha256:{}", image.len()),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            log_path: config.log_path.clone(),
            ..Default::default()
        };
        st.containers
            .insert(id.clone(), (status, sandbox_id.to_string()));
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), CriError> {
        let mut st = self.begin("StartContainer", id)?;
        let now = st.now_ns;
        let (c, _) = st
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("StartContainer", id))?;
        c.state = api::ContainerState::ContainerRunning as i32;
        c.started_at = now;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), CriError> {
        let mut st = self.begin("StopContainer", &format!("{id} {timeout_secs}"))?;
        let now = st.now_ns;
        let (c, _) = st
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("StopContainer", id))?;
        if c.state != api::ContainerState::ContainerExited as i32 {
            c.state = api::ContainerState::ContainerExited as i32;
            c.exit_code = 143;
            c.finished_at = now;
            c.reason = "Error".into();
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let mut st = self.begin("RemoveContainer", id)?;
        st.containers.remove(id);
        Ok(())
    }

    async fn list_containers(&self, selector: Labels) -> Result<Vec<api::Container>, CriError> {
        let st = self.state.lock().unwrap();
        Ok(st
            .containers
            .values()
            .filter(|(c, _)| matches(&c.labels, &selector))
            .map(|(c, sb)| api::Container {
                id: c.id.clone(),
                pod_sandbox_id: sb.clone(),
                metadata: c.metadata.clone(),
                image: c.image.clone(),
                image_ref: c.image_ref.clone(),
                state: c.state,
                created_at: c.created_at,
                labels: c.labels.clone(),
                annotations: c.annotations.clone(),
                image_id: String::new(),
            })
            .collect())
    }

    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus, CriError> {
        let st = self.state.lock().unwrap();
        st.containers
            .get(id)
            .map(|(c, _)| c.clone())
            .ok_or_else(|| not_found("ContainerStatus", id))
    }

    async fn image_status(&self, image: &str) -> Result<Option<api::Image>, CriError> {
        let st = self.state.lock().unwrap();
        Ok(st.images.contains(image).then(|| api::Image {
            id: format!("sha256:{}", image.len()),
            repo_tags: vec![image.to_string()],
            ..Default::default()
        }))
    }

    async fn pull_image(
        &self,
        image: &str,
        _sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String, CriError> {
        let mut st = self.begin("PullImage", image)?;
        st.images.insert(image.to_string());
        Ok(format!("sha256:{}", image.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sandbox_and_container_round_trip() {
        let rt = FakeRuntime::new();
        rt.add_image("busybox");
        let labels: Labels = [("k".to_string(), "v".to_string())].into();
        let sb_cfg = api::PodSandboxConfig {
            labels: labels.clone(),
            ..Default::default()
        };
        let sb = rt.run_pod_sandbox(sb_cfg.clone()).await.unwrap();
        let cfg = api::ContainerConfig {
            image: Some(api::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            labels: labels.clone(),
            ..Default::default()
        };
        let c = rt.create_container(&sb, cfg, sb_cfg).await.unwrap();
        rt.start_container(&c).await.unwrap();
        assert_eq!(rt.list_containers(labels.clone()).await.unwrap().len(), 1);
        assert!(rt
            .list_containers([("k".into(), "x".into())].into())
            .await
            .unwrap()
            .is_empty());
        rt.exit(&c, 3);
        let st = rt.container_status(&c).await.unwrap();
        assert_eq!(st.exit_code, 3);
        rt.fail_next("StartContainer", "boom");
        assert!(rt.start_container(&c).await.is_err());
        rt.remove_pod_sandbox(&sb).await.unwrap();
        assert!(rt.container_status(&c).await.unwrap_err().is_not_found());
    }
}
