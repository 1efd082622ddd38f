//! Pod QoS class, as Kubernetes computes it (`pkg/apis/core/helper/qos.GetPodQOS`): over all
//! containers and init containers, only cpu and memory count, zero quantities are ignored;
//! BestEffort when nothing is set, Guaranteed when every container limits both cpu and memory
//! and the summed requests equal the summed limits, else Burstable.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::quantity::parse_milli;

const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];

/// One container's requests and limits (resource name -> quantity string).
#[derive(Debug, Default, Clone, Copy)]
pub struct Resources<'a> {
    pub requests: Option<&'a BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    pub limits: Option<&'a BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
}

impl<'a> From<&'a Container> for Resources<'a> {
    fn from(c: &'a Container) -> Self {
        let r = c.resources.as_ref();
        Resources { requests: r.and_then(|r| r.requests.as_ref()), limits: r.and_then(|r| r.limits.as_ref()) }
    }
}

/// The QoS class of a pod spec: "BestEffort", "Burstable" or "Guaranteed".
pub fn pod_qos_class(spec: Option<&PodSpec>) -> &'static str {
    let containers = spec
        .into_iter()
        .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
        .map(Resources::from);
    qos_class(containers)
}

/// The QoS class of a pod given as JSON (the API server's representation). A spec that does not
/// decode counts as BestEffort; validation rejects such pods anyway.
pub fn pod_json_qos_class(pod: &serde_json::Value) -> &'static str {
    let spec = pod.get("spec").and_then(|s| <PodSpec as serde::Deserialize>::deserialize(s).ok());
    pod_qos_class(spec.as_ref())
}

/// The QoS class from each container's resources.
pub fn qos_class<'a>(containers: impl IntoIterator<Item = Resources<'a>>) -> &'static str {
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    let nonzero = |m: Option<&'a BTreeMap<String, _>>| {
        m.into_iter().flatten().filter_map(|(name, q): (&'a String, &'a k8s_openapi::apimachinery::pkg::api::resource::Quantity)| {
            let name = QOS_RESOURCES.into_iter().find(|r| *r == name.as_str())?;
            // An unparsable quantity is rejected by validation; here it counts as unset.
            let v = parse_milli(&q.0).ok().filter(|v| *v != 0)?;
            Some((name, v))
        })
    };
    for c in containers {
        for (name, v) in nonzero(c.requests) {
            *requests.entry(name).or_default() += v;
        }
        let mut found = 0;
        for (name, v) in nonzero(c.limits) {
            *limits.entry(name).or_default() += v;
            found += 1;
        }
        if found < QOS_RESOURCES.len() {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed && requests.iter().all(|(name, v)| limits.get(name) == Some(v)) && requests.len() == limits.len() {
        return "Guaranteed";
    }
    "Burstable"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn qos(pod: serde_json::Value) -> &'static str {
        pod_json_qos_class(&pod)
    }

    #[test]
    fn best_effort_when_nothing_is_set() {
        assert_eq!(qos(json!({"spec": {"containers": [{"name": "a"}]}})), "BestEffort");
        // zero and non-QoS resources do not count
        let p = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "0", "ephemeral-storage": "1Gi"}}}]}});
        assert_eq!(qos(p), "BestEffort");
    }

    #[test]
    fn guaranteed_needs_equal_cpu_and_memory_limits_everywhere() {
        let g = json!({"spec": {"containers": [{"name": "a", "resources": {
            "requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1024Mi"}}}]}});
        assert_eq!(qos(g), "Guaranteed", "equal quantities in different units");
        // Without the API server's defaulting (requests := limits) the requests are missing.
        let limits_only = json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos(limits_only), "Burstable");
        let cpu_only = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}}]}});
        assert_eq!(qos(cpu_only), "Burstable");
        let lower_request = json!({"spec": {"containers": [{"name": "a", "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos(lower_request), "Burstable");
        let init_unlimited = json!({"spec": {
            "containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos(init_unlimited), "Burstable");
    }
}
