//! Pure Kubernetes semantics shared by the control plane and the agent (no I/O): resource
//! quantities, the pod QoS class and the shape of Events. One implementation each, so the API server, the scheduler
//! and the kubelet side can never disagree.
pub mod events;
pub mod labels;
pub mod qos;
pub mod quantity;
