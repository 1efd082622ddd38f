//! Berth: a Kubernetes node agent (kubelet + kube-proxy + flannel-style CNI) and a minimal control plane.
pub mod agent;
pub mod cli;
pub mod controlplane;
pub mod cri;
pub mod fsutil;
pub mod https;
pub mod k8s;
pub mod kubeclient;
pub mod pki;
pub mod sdnotify;
pub mod shutdown;
pub mod streamproxy;
pub mod telemetry;

/// The Kubernetes version berth implements and reports (API server /version, node kubeletVersion).
pub const KUBERNETES_VERSION: &str = "v1.33.0";
