//! The only module that speaks gRPC to containerd (CRI v1). Knows nothing about Pods.
//!
//! `Cri` holds one tonic channel over containerd's unix socket and hands out the generated
//! RuntimeService / ImageService clients (cheap clones sharing the channel).
//!
//! [`Runtime`] is the small typed facade the agent uses (one method per CRI call it needs);
//! it is implemented by [`Cri`] (gRPC) and by [`fake::FakeRuntime`] (in memory, for unit tests).
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};

pub mod fake;

pub use k8s_cri::v1 as api;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

/// Errors talking to the container runtime.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("connecting to container runtime at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("CRI {op}: {status}")]
    Call {
        op: &'static str,
        status: tonic::Status,
    },
    #[error("CRI {op}: response without {what}")]
    Incomplete {
        op: &'static str,
        what: &'static str,
    },
}

/// For answering a CRI failure over gRPC-flavoured interfaces (the kubelet API reports CRI errors
/// with their gRPC code, like kubelet).
impl From<CriError> for tonic::Status {
    fn from(e: CriError) -> Self {
        match e {
            CriError::Call { status, .. } => status,
            other => tonic::Status::internal(other.to_string()),
        }
    }
}

impl CriError {
    /// The object named in the call does not exist (gRPC NotFound).
    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::Call { status, .. } if status.code() == tonic::Code::NotFound)
    }

    /// The runtime's own message (for pod status / events), without the "CRI op:" prefix.
    pub fn message(&self) -> String {
        match self {
            CriError::Call { status, .. } => status.message().to_string(),
            other => other.to_string(),
        }
    }
}

fn call_err(op: &'static str) -> impl FnOnce(tonic::Status) -> CriError {
    move |status| CriError::Call { op, status }
}

/// Label selector for List calls (exact match on every key/value).
pub type Labels = HashMap<String, String>;

/// The CRI calls the agent makes, typed. Pod-agnostic: callers pass CRI configs and labels.
pub trait Runtime: Clone + Send + Sync + 'static {
    fn run_pod_sandbox(
        &self,
        config: api::PodSandboxConfig,
    ) -> impl Future<Output = Result<String, CriError>> + Send;
    fn stop_pod_sandbox(&self, id: &str) -> impl Future<Output = Result<(), CriError>> + Send;
    fn remove_pod_sandbox(&self, id: &str) -> impl Future<Output = Result<(), CriError>> + Send;
    fn pod_sandbox_status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<api::PodSandboxStatus, CriError>> + Send;
    /// All sandboxes whose labels include `selector` (all of them if empty).
    fn list_pod_sandboxes(
        &self,
        selector: Labels,
    ) -> impl Future<Output = Result<Vec<api::PodSandbox>, CriError>> + Send;
    fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> impl Future<Output = Result<String, CriError>> + Send;
    fn start_container(&self, id: &str) -> impl Future<Output = Result<(), CriError>> + Send;
    /// Stop with SIGTERM, then SIGKILL after `timeout_secs`.
    fn stop_container(
        &self,
        id: &str,
        timeout_secs: i64,
    ) -> impl Future<Output = Result<(), CriError>> + Send;
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<(), CriError>> + Send;
    /// All containers whose labels include `selector` (all of them if empty).
    fn list_containers(
        &self,
        selector: Labels,
    ) -> impl Future<Output = Result<Vec<api::Container>, CriError>> + Send;
    fn container_status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<api::ContainerStatus, CriError>> + Send;
    /// `None` when the image is not present.
    fn image_status(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<Option<api::Image>, CriError>> + Send;
    /// Pull, returning the image reference (id) the runtime resolved.
    fn pull_image(
        &self,
        image: &str,
        sandbox_config: Option<api::PodSandboxConfig>,
    ) -> impl Future<Output = Result<String, CriError>> + Send;
}

/// A connection to a CRI runtime (containerd).
#[derive(Clone, Debug)]
pub struct Cri {
    channel: Channel,
}

impl Cri {
    /// Connect to the CRI socket (lazily re-connects on failure, like any tonic channel).
    pub async fn connect(path: &Path) -> Result<Self, CriError> {
        let channel =
            containerd_client::connect(path)
                .await
                .map_err(|source| CriError::Connect {
                    path: path.to_owned(),
                    source,
                })?;
        Ok(Self { channel })
    }

    /// The RuntimeService client (sandboxes, containers, exec, status, version).
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    /// The ImageService client (pull, status, list, remove).
    pub fn image(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }
}

fn image_spec(image: &str) -> api::ImageSpec {
    api::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

impl Runtime for Cri {
    async fn run_pod_sandbox(&self, config: api::PodSandboxConfig) -> Result<String, CriError> {
        let req = api::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        let resp = self
            .runtime()
            .run_pod_sandbox(req)
            .await
            .map_err(call_err("RunPodSandbox"))?;
        Ok(resp.into_inner().pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let req = api::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.runtime()
            .stop_pod_sandbox(req)
            .await
            .map_err(call_err("StopPodSandbox"))?;
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let req = api::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.runtime()
            .remove_pod_sandbox(req)
            .await
            .map_err(call_err("RemovePodSandbox"))?;
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus, CriError> {
        let req = api::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        };
        let resp = self
            .runtime()
            .pod_sandbox_status(req)
            .await
            .map_err(call_err("PodSandboxStatus"))?;
        resp.into_inner().status.ok_or(CriError::Incomplete {
            op: "PodSandboxStatus",
            what: "status",
        })
    }

    async fn list_pod_sandboxes(&self, selector: Labels) -> Result<Vec<api::PodSandbox>, CriError> {
        let filter = (!selector.is_empty()).then(|| api::PodSandboxFilter {
            label_selector: selector,
            ..Default::default()
        });
        let req = api::ListPodSandboxRequest { filter };
        let resp = self
            .runtime()
            .list_pod_sandbox(req)
            .await
            .map_err(call_err("ListPodSandbox"))?;
        Ok(resp.into_inner().items)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let req = api::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let resp = self
            .runtime()
            .create_container(req)
            .await
            .map_err(call_err("CreateContainer"))?;
        Ok(resp.into_inner().container_id)
    }

    async fn start_container(&self, id: &str) -> Result<(), CriError> {
        let req = api::StartContainerRequest {
            container_id: id.to_string(),
        };
        self.runtime()
            .start_container(req)
            .await
            .map_err(call_err("StartContainer"))?;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), CriError> {
        let req = api::StopContainerRequest {
            container_id: id.to_string(),
            timeout: timeout_secs,
        };
        self.runtime()
            .stop_container(req)
            .await
            .map_err(call_err("StopContainer"))?;
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let req = api::RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.runtime()
            .remove_container(req)
            .await
            .map_err(call_err("RemoveContainer"))?;
        Ok(())
    }

    async fn list_containers(&self, selector: Labels) -> Result<Vec<api::Container>, CriError> {
        let filter = (!selector.is_empty()).then(|| api::ContainerFilter {
            label_selector: selector,
            ..Default::default()
        });
        let req = api::ListContainersRequest { filter };
        let resp = self
            .runtime()
            .list_containers(req)
            .await
            .map_err(call_err("ListContainers"))?;
        Ok(resp.into_inner().containers)
    }

    async fn container_status(&self, id: &str) -> Result<api::ContainerStatus, CriError> {
        let req = api::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        let resp = self
            .runtime()
            .container_status(req)
            .await
            .map_err(call_err("ContainerStatus"))?;
        resp.into_inner().status.ok_or(CriError::Incomplete {
            op: "ContainerStatus",
            what: "status",
        })
    }

    async fn image_status(&self, image: &str) -> Result<Option<api::Image>, CriError> {
        let req = api::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        let resp = self
            .image()
            .image_status(req)
            .await
            .map_err(call_err("ImageStatus"))?;
        Ok(resp.into_inner().image)
    }

    async fn pull_image(
        &self,
        image: &str,
        sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String, CriError> {
        let req = api::PullImageRequest {
            image: Some(image_spec(image)),
            auth: None,
            sandbox_config,
        };
        let resp = self
            .image()
            .pull_image(req)
            .await
            .map_err(call_err("PullImage"))?;
        Ok(resp.into_inner().image_ref)
    }
}
