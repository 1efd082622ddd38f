//! Berth: a Kubernetes node agent (kubelet + kube-proxy + flannel-style CNI) and a minimal control plane.
pub mod agent;
pub mod controlplane;
pub mod cri;
pub mod pki;
pub mod streamproxy;
pub mod telemetry;
