//! core/v1 Events about pods, posted best-effort by one task (kubelet's event recorder):
//! a repeat of the same (object, fieldPath, type, reason, message) bumps `count` and
//! `lastTimestamp` with a merge patch instead of creating a new Event.
use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::kuberuntime::PodKey;
use crate::k8s::events;
use super::status::now_time;

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";
const MAX_TRACKED: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodEvent {
    pub pod: PodKey,
    /// `spec.containers{name}` for container events.
    pub field_path: Option<String>,
    pub type_: &'static str,
    pub reason: String,
    pub message: String,
}

/// Cheap to clone; never blocks, never fails.
#[derive(Clone, Debug)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<PodEvent>,
}

impl Recorder {
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<PodEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    pub fn pod(&self, pod: &PodKey, type_: &'static str, reason: &str, message: String) {
        self.send(PodEvent {
            pod: pod.clone(),
            field_path: None,
            type_,
            reason: reason.into(),
            message,
        });
    }

    pub fn container(
        &self,
        pod: &PodKey,
        container: &str,
        type_: &'static str,
        reason: &str,
        message: String,
    ) {
        tracing::debug!(pod = %pod.display(), container, reason, %message, "event");
        self.send(PodEvent {
            pod: pod.clone(),
            field_path: Some(format!("spec.containers{{{container}}}")),
            type_,
            reason: reason.into(),
            message,
        });
    }

    fn send(&self, ev: PodEvent) {
        // The receiver only goes away at shutdown; events are best effort.
        let _ = self.tx.send(ev);
    }
}

/// The Event object for a first occurrence (pure).
pub fn build_event(ev: &PodEvent, node: &str, name: String, now: jiff::Timestamp) -> Event {
    let involved = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(ev.pod.name.clone()),
        namespace: Some(ev.pod.namespace.clone()),
        uid: Some(ev.pod.uid.clone()),
        field_path: ev.field_path.clone(),
        ..Default::default()
    };
    events::first_occurrence(
        involved,
        name,
        events::Reporter { component: "kubelet", host: Some(node) },
        events::Occurrence { type_: ev.type_, reason: &ev.reason, message: &ev.message },
        now,
    )
}

/// Post events until shutdown. Errors are logged and dropped.
pub async fn run_recorder(
    client: kube::Client,
    node: String,
    mut rx: mpsc::UnboundedReceiver<PodEvent>,
    shutdown: CancellationToken,
) {
    // (event) -> (name, count)
    let mut seen: HashMap<PodEvent, (String, i32)> = HashMap::new();
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = rx.recv() => match ev { Some(ev) => ev, None => return },
        };
        let api: Api<Event> = Api::namespaced(client.clone(), &ev.pod.namespace);
        if let Some((name, count)) = seen.get_mut(&ev) {
            *count += 1;
            let body = serde_json::json!({"count": *count, "lastTimestamp": now_time()});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "patching event failed; posting a new one");
                    seen.remove(&ev);
                }
            }
        }
        if seen.len() >= MAX_TRACKED {
            seen.clear();
        }
        let now = jiff::Timestamp::now();
        let name = events::event_name(&ev.pod.name, now);
        let obj = build_event(&ev, &node, name.clone(), now);
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {
                seen.insert(ev, (name, 1));
            }
            Err(e) => tracing::debug!(error = %e, reason = %ev.reason, "posting event failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_shape() {
        let ev = PodEvent {
            pod: PodKey {
                namespace: "ns".into(),
                name: "web".into(),
                uid: "u".into(),
            },
            field_path: Some("spec.containers{c}".into()),
            type_: NORMAL,
            reason: "Pulled".into(),
            message: "m".into(),
        };
        let e = build_event(&ev, "node1", "web.1".into(), jiff::Timestamp::now());
        assert_eq!(
            e.involved_object.field_path.as_deref(),
            Some("spec.containers{c}")
        );
        assert_eq!(e.involved_object.uid.as_deref(), Some("u"));
        assert_eq!(e.source.as_ref().unwrap().host.as_deref(), Some("node1"));
        assert_eq!(e.reporting_instance.as_deref(), Some("node1"));
        assert_eq!(e.count, Some(1));
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
    }
}
