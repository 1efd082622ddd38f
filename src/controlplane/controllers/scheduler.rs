//! The scheduler loop: watches unbound pods (`fieldSelector=spec.nodeName=`), all pods (for
//! resource accounting) and nodes; binds each pending pod to the best node through
//! `pods/{name}/binding`; reports unschedulable pods with a `FailedScheduling` Event and a
//! `PodScheduled=False` condition (reason `Unschedulable`), and retries them whenever pods or
//! nodes change, plus every [`RESYNC`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::events::{self, EventType};
use super::scheduling::{needs_scheduling, node_infos, schedule};

/// Full re-evaluation period for unschedulable pods even without changes.
pub const RESYNC: Duration = Duration::from_secs(30);
/// How long a pod we bound counts on its node before the watch shows it bound.
const ASSUME_TTL: Duration = Duration::from_secs(30);
/// Retry delay after a failed API call.
const RETRY: Duration = Duration::from_secs(1);

struct Scheduler {
    client: Client,
    name: String,
    /// Every pod: the unbound ones are the queue, the bound ones use node resources.
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// uid -> (pod with spec.nodeName set by us, when).
    assumed: HashMap<String, (Pod, Instant)>,
    /// uid -> last unschedulable message reported.
    reported: HashMap<String, String>,
}

/// Run the scheduler until `shutdown`.
pub async fn run(client: Client, scheduler_name: String, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (pods, pods_w) = reflector::store::<Pod>();
    let (nodes, nodes_w) = reflector::store::<Node>();
    let notify = Arc::new(Notify::new());

    let pods_stream = reflector::reflector(
        pods_w,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .map_ok(|_| ())
    .boxed();
    let nodes_stream = reflector::reflector(
        nodes_w,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .map_ok(|_| ())
    .boxed();
    let mut merged = futures::stream::select_all([pods_stream, nodes_stream]);
    let driver = {
        let notify = notify.clone();
        async move {
            while let Some(item) = merged.next().await {
                match item {
                    Ok(()) => notify.notify_one(),
                    Err(e) => tracing::warn!(error = %e, "scheduler watch failed; retrying"),
                }
            }
        }
    };

    let mut sched = Scheduler {
        client,
        name: scheduler_name,
        pods: pods.clone(),
        nodes: nodes.clone(),
        assumed: HashMap::new(),
        reported: HashMap::new(),
    };
    let main = async {
        let ready = async {
            pods.wait_until_ready().await?;
            nodes.wait_until_ready().await
        };
        ready.await.map_err(|e| anyhow::anyhow!("scheduler caches: {e}"))?;
        tracing::info!(scheduler = %sched.name, "scheduler caches synced");
        loop {
            let wait = sched.pass().await.unwrap_or(RESYNC);
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        _ = driver => anyhow::bail!("scheduler watch streams ended"),
        r = main => r,
    }
}

fn uid(p: &Pod) -> &str {
    p.metadata.uid.as_deref().unwrap_or("")
}

fn is_bound(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

impl Scheduler {
    /// One scheduling pass over every pending pod. Returns an early retry delay if some API call
    /// failed.
    async fn pass(&mut self) -> Option<Duration> {
        let nodes = self.nodes.state();
        let all = self.pods.state();
        let bound: HashSet<&str> = all.iter().filter(|p| is_bound(p)).map(|p| uid(p)).collect();
        let known: HashSet<&str> = all.iter().map(|p| uid(p)).collect();
        self.assumed.retain(|u, (_, at)| {
            !bound.contains(u.as_str()) && (known.contains(u.as_str()) || at.elapsed() < ASSUME_TTL)
        });

        let mut pending: Vec<Arc<Pod>> = all
            .iter()
            .filter(|p| needs_scheduling(p, &self.name))
            .filter(|p| !self.assumed.contains_key(uid(p)))
            .cloned()
            .collect();
        let pending_uids: HashSet<String> = pending.iter().map(|p| uid(p).to_owned()).collect();
        self.reported.retain(|u, _| pending_uids.contains(u));
        if pending.is_empty() {
            return None;
        }
        // Higher priority first, then oldest first (kube-scheduler's queue order).
        pending.sort_by(|a, b| {
            let prio = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            prio(b)
                .cmp(&prio(a))
                .then_with(|| {
                    a.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0)
                        .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
                })
                .then_with(|| a.name_any().cmp(&b.name_any()))
        });

        let assumed: Vec<Pod> = self.assumed.values().map(|(p, _)| p.clone()).collect();
        let node_refs: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
        let pod_refs: Vec<&Pod> = all
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| is_bound(p))
            .chain(assumed.iter())
            .collect();
        let mut infos = node_infos(&node_refs, &pod_refs);

        let mut retry = None;
        for pod in pending {
            match schedule(&pod, &infos) {
                Ok(i) => {
                    let node = infos[i].name().to_owned();
                    match self.bind(&pod, &node).await {
                        Ok(()) => {
                            let mut placed = (*pod).clone();
                            if let Some(s) = placed.spec.as_mut() {
                                s.node_name = Some(node.clone());
                            }
                            infos[i].add_pod(&placed);
                            self.assumed.insert(uid(&pod).to_owned(), (placed, Instant::now()));
                            self.reported.remove(uid(&pod));
                            let msg = format!(
                                "Successfully assigned {}/{} to {node}",
                                pod.namespace().unwrap_or_default(),
                                pod.name_any()
                            );
                            tracing::info!(pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()), %node, "bound pod");
                            events::record(
                                &self.client,
                                pod.as_ref(),
                                &self.name,
                                EventType::Normal,
                                "Scheduled",
                                &msg,
                            )
                            .await;
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                            tracing::debug!(pod = %pod.name_any(), code = s.code, "pod changed or went away before binding");
                        }
                        Err(e) => {
                            tracing::warn!(pod = %pod.name_any(), %node, error = %e, "binding failed");
                            let msg = format!("Binding rejected: {e}");
                            events::record(
                                &self.client,
                                pod.as_ref(),
                                &self.name,
                                EventType::Warning,
                                "FailedScheduling",
                                &msg,
                            )
                            .await;
                            retry = Some(RETRY);
                        }
                    }
                }
                Err(fit) => {
                    let msg = fit.to_string();
                    if self.reported.get(uid(&pod)) == Some(&msg) {
                        continue;
                    }
                    tracing::info!(pod = %pod.name_any(), reason = %msg, "pod unschedulable");
                    events::record(
                        &self.client,
                        pod.as_ref(),
                        &self.name,
                        EventType::Warning,
                        "FailedScheduling",
                        &msg,
                    )
                    .await;
                    match self.set_unschedulable(&pod, &msg).await {
                        Ok(()) => {
                            self.reported.insert(uid(&pod).to_owned(), msg);
                        }
                        Err(e) => {
                            tracing::warn!(pod = %pod.name_any(), error = %e, "could not set PodScheduled condition");
                            retry = Some(RETRY);
                        }
                    }
                }
            }
        }
        retry
    }

    async fn bind(&self, pod: &Pod, node: &str) -> Result<(), kube::Error> {
        let ns = pod.namespace().unwrap_or_else(|| "default".to_owned());
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let binding = Binding {
            metadata: ObjectMeta {
                name: pod.metadata.name.clone(),
                namespace: Some(ns.clone()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_owned()),
                ..Default::default()
            },
        };
        let _: serde_json::Value = api
            .create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding)
            .await?;
        Ok(())
    }

    async fn set_unschedulable(&self, pod: &Pod, message: &str) -> Result<(), kube::Error> {
        let conditions = unschedulable_conditions(pod, message, jiff::Timestamp::now());
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            &pod.namespace().unwrap_or_else(|| "default".into()),
        );
        // A merge patch replaces the whole list, so send every condition.
        let patch = serde_json::json!({ "status": { "conditions": conditions } });
        api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

/// The pod's conditions with PodScheduled=False/Unschedulable set (pure). The transition time
/// is kept when the condition was already False.
pub fn unschedulable_conditions(pod: &Pod, message: &str, now: jiff::Timestamp) -> Vec<PodCondition> {
    let mut conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let prev = conditions.iter().position(|c| c.type_ == "PodScheduled");
    let transition = prev
        .and_then(|i| conditions.get(i))
        .filter(|c| c.status == "False")
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    let cond = PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.to_owned()),
        last_transition_time: Some(transition),
        last_probe_time: None,
        observed_generation: None,
    };
    match prev {
        Some(i) => conditions[i] = cond,
        None => conditions.push(cond),
    }
    conditions
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;

    #[test]
    fn conditions_replace_and_keep_transition() {
        let t0 = jiff::Timestamp::from_second(1_000).unwrap();
        let t1 = jiff::Timestamp::from_second(2_000).unwrap();
        let mut pod = Pod::default();
        let c = unschedulable_conditions(&pod, "m1", t0);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].reason.as_deref(), Some("Unschedulable"));
        pod.status = Some(PodStatus {
            conditions: Some(vec![
                PodCondition {
                    type_: "Other".into(),
                    status: "True".into(),
                    ..Default::default()
                },
                c[0].clone(),
            ]),
            ..Default::default()
        });
        let c = unschedulable_conditions(&pod, "m2", t1);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].type_, "Other");
        assert_eq!(c[1].message.as_deref(), Some("m2"));
        assert_eq!(c[1].last_transition_time, Some(Time(t0)));
    }
}
