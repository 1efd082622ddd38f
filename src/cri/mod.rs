//! The only module that speaks gRPC to containerd (CRI v1). Knows nothing about Pods.
//!
//! `Cri` holds one tonic channel over containerd's unix socket and hands out the generated
//! RuntimeService / ImageService clients (cheap clones sharing the channel).
use std::path::{Path, PathBuf};

pub use k8s_cri::v1 as api;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

/// Errors talking to the container runtime.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("connecting to container runtime at {path}: {source}")]
    Connect { path: PathBuf, source: tonic::transport::Error },
    #[error("CRI {op}: {status}")]
    Call { op: &'static str, status: tonic::Status },
}

/// A connection to a CRI runtime (containerd).
#[derive(Clone, Debug)]
pub struct Cri {
    channel: Channel,
}

impl Cri {
    /// Connect to the CRI socket (lazily re-connects on failure, like any tonic channel).
    pub async fn connect(path: &Path) -> Result<Self, CriError> {
        let channel = containerd_client::connect(path)
            .await
            .map_err(|source| CriError::Connect { path: path.to_owned(), source })?;
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
