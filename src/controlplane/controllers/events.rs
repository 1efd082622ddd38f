//! core/v1 Events, the way client-go's event recorder writes them.

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};

use crate::k8s::events;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The Event object for `obj` (pure). Name `<obj>.<hex nanos>` like client-go.
pub fn build_event<K>(
    obj: &K,
    component: &str,
    type_: EventType,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> Event
where
    K: Resource<DynamicType = ()>,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let involved = ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: Some(name.clone()),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        ..Default::default()
    };
    events::first_occurrence(
        involved,
        events::event_name(&name, now),
        events::Reporter { component, host: None },
        events::Occurrence { type_: type_.as_str(), reason, message },
        now,
    )
}

/// Post an Event about `obj` (namespaced objects: in their namespace; cluster-scoped ones: in
/// `default`, like kubelet's node events). Failures are logged, not returned.
pub async fn record<K>(client: &Client, obj: &K, component: &str, type_: EventType, reason: &str, message: &str)
where
    K: Resource<DynamicType = ()>,
{
    let ev = build_event(obj, component, type_, reason, message, jiff::Timestamp::now());
    // first_occurrence always sets the namespace.
    let api: Api<Event> = Api::namespaced(client.clone(), ev.metadata.namespace.as_deref().unwrap_or_default());
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::warn!(object = %obj.name_any(), reason, error = %e, "could not record event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod};

    #[test]
    fn event_shape() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("ns1".into());
        pod.metadata.uid = Some("u1".into());
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let ev = build_event(
            &pod,
            "default-scheduler",
            EventType::Warning,
            "FailedScheduling",
            "msg",
            now,
        );
        assert_eq!(ev.metadata.namespace.as_deref(), Some("ns1"));
        assert!(ev.metadata.name.as_deref().unwrap().starts_with("web."));
        assert_eq!(ev.involved_object.kind.as_deref(), Some("Pod"));
        assert_eq!(ev.involved_object.api_version.as_deref(), Some("v1"));
        assert_eq!(ev.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        let mut node = Node::default();
        node.metadata.name = Some("n1".into());
        let ev = build_event(
            &node,
            "node-ipam-controller",
            EventType::Normal,
            "CIDRNotAvailable",
            "m",
            now,
        );
        assert_eq!(ev.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(ev.involved_object.namespace, None);
    }
}
