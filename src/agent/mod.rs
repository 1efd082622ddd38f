//! The node agent: registers the Node, runs the pods bound to it through CRI, serves the kubelet API.
pub mod cni_conf;
pub mod config;
pub mod node;
pub mod pods;
pub mod server;

pub use config::AgentConfig;
