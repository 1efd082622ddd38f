//! Pure Kubernetes semantics shared by the control plane and the agent (no I/O): resource
//! quantities and the pod QoS class. One implementation each, so the API server, the scheduler
//! and the kubelet side can never disagree.
pub mod qos;
pub mod quantity;
