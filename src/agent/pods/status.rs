//! Pod status: computed (pure) from the runtime state, written by one task (kubelet's status
//! manager) as a JSON merge patch to pods/{name}/status, only when it changed. The same task
//! issues the final DELETE (gracePeriodSeconds=0, uid precondition) of terminated pods, so the
//! final status is always written first.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::actions::is_terminal;
use super::kuberuntime::{qos_class, PodKey};
use super::state::{CState, ContainerInfo, PodRuntimeStatus};

/// Why a container is waiting, from the last sync (ErrImagePull, CrashLoopBackOff, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

pub fn time_from_ns(ns: i64) -> Option<Time> {
    if ns <= 0 {
        return None;
    }
    // API times have second precision; truncate so comparisons with read-back values hold.
    jiff::Timestamp::from_second(ns / 1_000_000_000)
        .ok()
        .map(Time)
}

pub fn now_time() -> Time {
    Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_default())
}

fn container_id(c: &ContainerInfo) -> String {
    format!("containerd://{}", c.id)
}

fn terminated(c: &ContainerInfo) -> ContainerState {
    let reason = if !c.reason.is_empty() {
        c.reason.clone()
    } else if c.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: Some(container_id(c)),
            exit_code: c.exit_code,
            reason: Some(reason),
            message: (!c.message.is_empty()).then(|| c.message.clone()),
            started_at: time_from_ns(c.started_at),
            finished_at: time_from_ns(c.finished_at),
            signal: None,
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: message.filter(|m| !m.is_empty()).map(str::to_string),
        }),
        ..Default::default()
    }
}

fn container_status(
    spec: &k8s_openapi::api::core::v1::Container,
    rs: &PodRuntimeStatus,
    wait: Option<&Waiting>,
) -> ContainerStatus {
    let mut history = rs.by_name(&spec.name);
    let current = history.next();
    let previous = history.next();
    let spec_image = spec.image.clone().unwrap_or_default();
    let mut st = ContainerStatus {
        name: spec.name.clone(),
        image: spec_image.clone(),
        ..Default::default()
    };
    let Some(cur) = current else {
        let w = wait.map(|w| (w.reason.as_str(), Some(w.message.as_str())));
        let (reason, msg) = w.unwrap_or(("ContainerCreating", None));
        st.state = Some(waiting(reason, msg));
        st.started = Some(false);
        return st;
    };
    if !cur.image.is_empty() && !cur.image.starts_with("sha256:") {
        st.image = cur.image.clone();
    }
    st.image_id = cur.image_ref.clone();
    st.container_id = Some(container_id(cur));
    st.restart_count = cur.restart_count as i32;
    st.state = Some(match cur.state {
        CState::Running => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time_from_ns(cur.started_at),
            }),
            ..Default::default()
        },
        CState::Exited => terminated(cur),
        CState::Created | CState::Unknown => waiting("ContainerCreating", None),
    });
    if let Some(prev) = previous.filter(|p| p.state == CState::Exited) {
        st.last_state = Some(terminated(prev));
    }
    // A start that failed in the last sync (back-off, pull error, ...) shows as Waiting, and
    // the terminated state it waits to replace moves to lastState.
    if let Some(w) = wait.filter(|_| cur.state != CState::Running) {
        if cur.state == CState::Exited {
            st.last_state = st.state.take();
        }
        st.state = Some(waiting(&w.reason, Some(&w.message)));
    }
    let running = cur.state == CState::Running;
    st.ready = running;
    st.started = Some(running);
    st
}

/// kubelet's getPhase.
pub fn phase(pod: &Pod, statuses: &[ContainerStatus], terminal: bool) -> &'static str {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let (mut running, mut waiting_n, mut stopped, mut succeeded, mut unknown) = (0, 0, 0, 0, 0);
    for s in statuses {
        let state = s.state.as_ref();
        if state.and_then(|s| s.running.as_ref()).is_some() {
            running += 1;
        } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.and_then(|s| s.waiting.as_ref()).is_some() {
            if s.last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .is_some()
            {
                stopped += 1;
            } else {
                waiting_n += 1;
            }
        } else {
            unknown += 1;
        }
    }
    if waiting_n > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if terminal {
            return if stopped == succeeded {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        return match policy {
            "Always" => "Running",
            "OnFailure" if stopped == succeeded => "Succeeded",
            "OnFailure" => "Running",
            _ if stopped == succeeded => "Succeeded",
            _ => "Failed",
        };
    }
    "Pending"
}

fn condition(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: if ok { None } else { reason.map(str::to_string) },
        message: if ok { None } else { message },
        ..Default::default()
    }
}

/// Everything the status computation needs besides the pod and the runtime state.
#[derive(Debug, Clone, Default)]
pub struct StatusInput {
    pub waiting: HashMap<String, Waiting>,
    pub host_ips: Vec<String>,
    /// The pod is being torn down for good (deleted): phase becomes terminal.
    pub terminal: bool,
}

/// Compute the pod's status from the runtime state (kubelet's generateAPIPodStatus). Pure;
/// lastTransitionTime / startTime are filled by [`merge_stable`].
pub fn compute_pod_status(pod: &Pod, rs: &PodRuntimeStatus, input: &StatusInput) -> PodStatus {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let statuses: Vec<ContainerStatus> = containers
        .iter()
        .map(|c| container_status(c, rs, input.waiting.get(&c.name)))
        .collect();
    let terminal = input.terminal || is_terminal(pod);
    let mut phase = phase(pod, &statuses, terminal).to_string();
    if is_terminal(pod) {
        // never leave a terminal phase
        phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or(phase);
    }
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let sandbox = rs.ready_sandbox();
    let pod_ips: Vec<String> = if host_network {
        input.host_ips.clone()
    } else {
        sandbox.map(|s| s.ips.clone()).unwrap_or_default()
    };
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let completed = phase == "Succeeded";
    let (reason, message) = if completed {
        ("PodCompleted", None)
    } else {
        (
            "ContainersNotReady",
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let all_ready = unready.is_empty() && !completed;
    let scheduled = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled").cloned())
        .unwrap_or_else(|| condition("PodScheduled", true, None, None));
    let conditions = vec![
        condition(
            "PodReadyToStartContainers",
            sandbox.is_some() && (host_network || !pod_ips.is_empty()),
            None,
            None,
        ),
        condition("Initialized", true, None, None),
        condition("Ready", all_ready, Some(reason), message.clone()),
        condition("ContainersReady", all_ready, Some(reason), message),
        scheduled,
    ];
    PodStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        host_ip: input.host_ips.first().cloned(),
        host_ips: (!input.host_ips.is_empty()).then(|| {
            input
                .host_ips
                .iter()
                .map(|ip| HostIP { ip: ip.clone() })
                .collect()
        }),
        pod_ip: pod_ips.first().cloned(),
        pod_ips: (!pod_ips.is_empty())
            .then(|| pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        qos_class: Some(qos_class(pod).to_string()),
        ..Default::default()
    }
}

/// Carry over what must stay stable from the previous status: lastTransitionTime of conditions
/// whose status did not change (else `now`), startTime (set once), and podIP(s) once the sandbox
/// is gone (kubelet keeps reporting the last IPs of a finished pod).
pub fn merge_stable(old: Option<&PodStatus>, mut new: PodStatus, now: &Time) -> PodStatus {
    let old_conds = old.and_then(|o| o.conditions.as_ref());
    for c in new.conditions.iter_mut().flatten() {
        let prev = old_conds.and_then(|cs| cs.iter().find(|o| o.type_ == c.type_));
        if c.last_transition_time.is_none() {
            c.last_transition_time = match prev {
                Some(p) if p.status == c.status => p.last_transition_time.clone(),
                _ => Some(now.clone()),
            };
        }
    }
    new.start_time = old
        .and_then(|o| o.start_time.clone())
        .or_else(|| Some(now.clone()));
    if new.pod_ip.is_none() {
        if let Some(o) = old {
            new.pod_ip = o.pod_ip.clone();
            new.pod_ips = o.pod_ips.clone();
        }
    }
    new
}

/// A request to the status writer.
#[derive(Debug)]
pub enum StatusMsg {
    /// The newest computed status of a pod (`pod` is the API object it was computed for).
    Update {
        key: PodKey,
        pod: Arc<Pod>,
        status: Box<PodStatus>,
    },
    /// Everything of the pod is stopped: DELETE it (grace 0, uid precondition).
    Delete { key: PodKey },
    /// The pod is gone from the API: forget its cache.
    Forget { uid: String },
}

/// Handle to send to the status writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct StatusManager {
    tx: mpsc::UnboundedSender<StatusMsg>,
}

impl StatusManager {
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<StatusMsg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    pub fn send(&self, msg: StatusMsg) {
        let _ = self.tx.send(msg);
    }
}

struct Pending {
    key: PodKey,
    pod: Arc<Pod>,
    status: PodStatus,
}

/// The single writer of pod status. Coalesces updates per pod (newest wins), writes only on
/// change, retries failed writes every second.
pub async fn run_status_writer(
    client: kube::Client,
    mut rx: mpsc::UnboundedReceiver<StatusMsg>,
    shutdown: CancellationToken,
) {
    let mut written: HashMap<String, PodStatus> = HashMap::new();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut deletes: HashMap<String, PodKey> = HashMap::new();
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            msg = rx.recv() => {
                let Some(msg) = msg else { return };
                let mut batch = vec![msg];
                while let Ok(m) = rx.try_recv() { batch.push(m); }
                for m in batch {
                    match m {
                        StatusMsg::Update { key, pod, status } => {
                            pending.insert(key.uid.clone(), Pending { key, pod, status: *status });
                        }
                        StatusMsg::Delete { key } => { deletes.insert(key.uid.clone(), key); }
                        StatusMsg::Forget { uid } => {
                            written.remove(&uid);
                            pending.remove(&uid);
                            deletes.remove(&uid);
                        }
                    }
                }
            }
            _ = retry.tick() => {
                if pending.is_empty() && deletes.is_empty() { continue; }
            }
        }
        flush(&client, &mut written, &mut pending, &mut deletes).await;
    }
}

async fn flush(
    client: &kube::Client,
    written: &mut HashMap<String, PodStatus>,
    pending: &mut HashMap<String, Pending>,
    deletes: &mut HashMap<String, PodKey>,
) {
    let now = now_time();
    for (uid, p) in std::mem::take(pending) {
        let old = written.get(&uid).or(p.pod.status.as_ref());
        let status = merge_stable(old, p.status.clone(), &now);
        if old == Some(&status) {
            written.insert(uid, status);
            continue;
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &p.key.namespace);
        let body = serde_json::json!({ "status": status });
        match api
            .patch_status(&p.key.name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {
                tracing::debug!(pod = %p.key.display(), phase = ?status.phase, "pod status written");
                written.insert(uid, status);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                written.remove(&uid);
            }
            Err(e) => {
                tracing::warn!(pod = %p.key.display(), error = %e, "writing pod status failed; retrying");
                pending.insert(uid, p);
            }
        }
    }
    // Deletes go after the final status writes of the same batch.
    for (uid, key) in std::mem::take(deletes) {
        if pending.contains_key(&uid) {
            deletes.insert(uid, key);
            continue;
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &key.namespace);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(key.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&key.name, &dp).await {
            Ok(_) => tracing::info!(pod = %key.display(), "pod terminated and deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = %key.display(), error = %e, "deleting pod failed; retrying");
                deletes.insert(uid, key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::pods::kuberuntime::tests::pod;
    use crate::agent::pods::state::SandboxInfo;

    const S: i64 = 1_000_000_000;

    fn info(name: &str, state: CState, exit: i32, at: i64, restarts: u32) -> ContainerInfo {
        ContainerInfo {
            id: format!("{name}{at}"),
            sandbox_id: "s".into(),
            name: name.into(),
            restart_count: restarts,
            state,
            created_at: at * S,
            started_at: at * S,
            finished_at: if state == CState::Exited {
                (at + 1) * S
            } else {
                0
            },
            exit_code: exit,
            reason: String::new(),
            message: String::new(),
            hash: String::new(),
            image: "docker.io/library/busybox:latest".into(),
            image_ref: "sha256:abc".into(),
        }
    }

    fn rs(containers: Vec<ContainerInfo>, ready: bool) -> PodRuntimeStatus {
        let mut r = PodRuntimeStatus {
            sandboxes: vec![SandboxInfo {
                id: "s".into(),
                attempt: 0,
                ready,
                created_at: 1,
                ips: if ready {
                    vec!["10.244.0.7".into()]
                } else {
                    vec![]
                },
            }],
            containers,
        };
        r.sort();
        r
    }

    fn input() -> StatusInput {
        StatusInput {
            host_ips: vec!["192.168.1.5".into()],
            ..Default::default()
        }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn pending_before_anything_runs() {
        let p = pod(serde_json::json!({}));
        let s = compute_pod_status(&p, &PodRuntimeStatus::default(), &input());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ContainerCreating")
        );
        assert_eq!(cond(&s, "PodReadyToStartContainers").status, "False");
        assert_eq!(
            cond(&s, "Ready").message.as_deref(),
            Some("containers with unready status: [c]")
        );
        assert_eq!(s.host_ip.as_deref(), Some("192.168.1.5"));
        assert!(s.pod_ip.is_none());
    }

    #[test]
    fn running_pod() {
        let p = pod(serde_json::json!({}));
        let s = compute_pod_status(
            &p,
            &rs(vec![info("c", CState::Running, 0, 5, 0)], true),
            &input(),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready && cs.started == Some(true));
        assert_eq!(cs.container_id.as_deref(), Some("containerd://c5"));
        assert_eq!(cs.image, "docker.io/library/busybox:latest");
        assert_eq!(cs.image_id, "sha256:abc");
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.0.7"));
        assert_eq!(s.pod_ips.as_ref().unwrap().len(), 1);
        for t in [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        ] {
            assert_eq!(cond(&s, t).status, "True", "{t}");
        }
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
    }

    #[test]
    fn crash_loop_shows_waiting_with_last_state() {
        let p = pod(serde_json::json!({}));
        let r = rs(
            vec![
                info("c", CState::Exited, 1, 5, 0),
                info("c", CState::Exited, 2, 9, 1),
            ],
            true,
        );
        let mut inp = input();
        inp.waiting.insert(
            "c".into(),
            Waiting {
                reason: "CrashLoopBackOff".into(),
                message: "back-off 10s restarting failed container=c pod=web_default(u-1)".into(),
            },
        );
        let s = compute_pod_status(&p, &r, &inp);
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 1);
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (2, Some("Error")));
        assert_eq!(s.phase.as_deref(), Some("Running")); // restartPolicy Always
        assert_eq!(cond(&s, "Ready").status, "False");
    }

    #[test]
    fn phases_of_finished_pods() {
        let done = |policy: &str, exit: i32| {
            let p = pod(serde_json::json!({"spec": {"restartPolicy": policy}}));
            compute_pod_status(
                &p,
                &rs(vec![info("c", CState::Exited, exit, 5, 0)], false),
                &input(),
            )
            .phase
            .unwrap()
        };
        assert_eq!(done("Never", 0), "Succeeded");
        assert_eq!(done("Never", 1), "Failed");
        assert_eq!(done("OnFailure", 0), "Succeeded");
        assert_eq!(done("OnFailure", 1), "Running");
        assert_eq!(done("Always", 0), "Running");
        let p = pod(serde_json::json!({}));
        let s = compute_pod_status(
            &p,
            &rs(vec![info("c", CState::Exited, 143, 5, 0)], false),
            &StatusInput {
                terminal: true,
                ..input()
            },
        );
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let p = pod(serde_json::json!({"spec": {"restartPolicy": "Never"}}));
        let s = compute_pod_status(
            &p,
            &rs(vec![info("c", CState::Exited, 0, 5, 0)], false),
            &input(),
        );
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
    }

    #[test]
    fn image_pull_error_is_pending() {
        let p = pod(serde_json::json!({}));
        let mut inp = input();
        inp.waiting.insert(
            "c".into(),
            Waiting {
                reason: "ErrImagePull".into(),
                message: "not found".into(),
            },
        );
        let s = compute_pod_status(&p, &rs(vec![], true), &inp);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let w = s.container_statuses.as_ref().unwrap()[0]
            .state
            .as_ref()
            .unwrap()
            .waiting
            .clone()
            .unwrap();
        assert_eq!(
            (w.reason.as_deref(), w.message.as_deref()),
            (Some("ErrImagePull"), Some("not found"))
        );
    }

    #[test]
    fn transition_times_and_start_time_are_stable() {
        let p = pod(serde_json::json!({}));
        let t1 = Time(jiff::Timestamp::from_second(100).unwrap());
        let t2 = Time(jiff::Timestamp::from_second(200).unwrap());
        let pending = compute_pod_status(&p, &rs(vec![], true), &input());
        let a = merge_stable(None, pending.clone(), &t1);
        assert_eq!(a.start_time, Some(t1.clone()));
        let b = merge_stable(Some(&a), pending, &t2);
        assert_eq!(a, b, "unchanged status must compare equal (no write)");
        let running = compute_pod_status(
            &p,
            &rs(vec![info("c", CState::Running, 0, 5, 0)], true),
            &input(),
        );
        let c = merge_stable(Some(&b), running, &t2);
        assert_eq!(c.start_time, Some(t1.clone()));
        assert_eq!(cond(&c, "Ready").last_transition_time, Some(t2.clone()));
        assert_eq!(
            cond(&c, "Initialized").last_transition_time,
            Some(t1.clone())
        );
        // sandbox gone: keep the last IP
        let gone = compute_pod_status(
            &p,
            &rs(vec![info("c", CState::Exited, 0, 5, 0)], false),
            &input(),
        );
        assert_eq!(
            merge_stable(Some(&c), gone, &t2).pod_ip.as_deref(),
            Some("10.244.0.7")
        );
    }
}
