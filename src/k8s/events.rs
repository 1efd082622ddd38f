//! core/v1 Events as kubelet's and client-go's event recorders write them: one shape for the
//! agent's pod events and the control plane's (scheduler, node IPAM) events.
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

/// Who reports: `source.component` / `reportingComponent`, and the node for kubelet
/// (`source.host`; `reportingInstance` is the host when there is one, else the component).
#[derive(Debug, Clone, Copy)]
pub struct Reporter<'a> {
    pub component: &'a str,
    pub host: Option<&'a str>,
}

/// What happened: `Normal`/`Warning`, a CamelCase reason, a message.
#[derive(Debug, Clone, Copy)]
pub struct Occurrence<'a> {
    pub type_: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
}

/// client-go's Event name: `<object name>.<hex nanoseconds>`.
pub fn event_name(object_name: &str, now: jiff::Timestamp) -> String {
    format!("{object_name}.{:x}", now.as_nanosecond())
}

/// The first occurrence (count 1) of an Event about `involved`, named `name`, in the involved
/// object's namespace (`default` for cluster-scoped objects, like kubelet's node events).
pub fn first_occurrence(
    involved: ObjectReference,
    name: String,
    reporter: Reporter<'_>,
    what: Occurrence<'_>,
    now: jiff::Timestamp,
) -> Event {
    let namespace = involved.namespace.clone().unwrap_or_else(|| "default".to_owned());
    Event {
        metadata: ObjectMeta { name: Some(name), namespace: Some(namespace), ..Default::default() },
        involved_object: involved,
        reason: Some(what.reason.to_owned()),
        message: Some(what.message.to_owned()),
        type_: Some(what.type_.to_owned()),
        source: Some(EventSource {
            component: Some(reporter.component.to_owned()),
            host: reporter.host.map(str::to_owned),
        }),
        reporting_component: Some(reporter.component.to_owned()),
        reporting_instance: Some(reporter.host.unwrap_or(reporter.component).to_owned()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    }
}
