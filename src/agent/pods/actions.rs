//! What to do to converge a pod, as data (kubelet's computePodActions in kuberuntime_manager.go).
use k8s_openapi::api::core::v1::{Container, Pod};

use super::kuberuntime::container_hash;
use super::state::{CState, ContainerInfo, PodRuntimeStatus};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillAction {
    pub id: String,
    pub name: String,
    pub reason: String,
}

/// The changes one sync makes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodActions {
    /// Stop every container and sandbox of the pod first.
    pub kill_pod: bool,
    /// Create a new sandbox (with `attempt`).
    pub create_sandbox: bool,
    /// The sandbox to start containers in when no new one is created.
    pub sandbox_id: Option<String>,
    pub attempt: u32,
    /// Indexes into spec.containers to (re)start, in order.
    pub containers_to_start: Vec<usize>,
    /// Containers to stop before starting others.
    pub containers_to_kill: Vec<KillAction>,
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The pod is in a terminal phase: nothing may be (re)started any more.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// kubelet's podSandboxChanged: (create?, attempt, current sandbox id).
fn sandbox_changed(pod: &Pod, rs: &PodRuntimeStatus) -> (bool, u32, Option<String>) {
    let Some(newest) = rs.sandboxes.first() else {
        return (true, 0, None);
    };
    let ready = rs.sandboxes.iter().filter(|s| s.ready).count();
    let next = newest.attempt + 1;
    if ready > 1 || !newest.ready || (!host_network(pod) && newest.ips.is_empty()) {
        return (true, next, Some(newest.id.clone()));
    }
    (false, newest.attempt, Some(newest.id.clone()))
}

fn succeeded(c: &Container, rs: &PodRuntimeStatus) -> bool {
    rs.latest(&c.name)
        .is_some_and(|s| s.state == CState::Exited && s.exit_code == 0)
}

/// kubelet's ShouldContainerBeRestarted for a container that is not running.
pub fn should_restart(pod: &Pod, status: Option<&ContainerInfo>) -> bool {
    let Some(s) = status else { return true };
    match s.state {
        CState::Running => false,
        CState::Created | CState::Unknown => true,
        CState::Exited => match restart_policy(pod) {
            "Never" => false,
            "OnFailure" => s.exit_code != 0,
            _ => true,
        },
    }
}

/// Compute the actions converging `pod` from the runtime state `rs`. Pure.
pub fn compute_pod_actions(pod: &Pod, rs: &PodRuntimeStatus) -> PodActions {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let (create, attempt, sandbox_id) = sandbox_changed(pod, rs);
    let mut a = PodActions {
        kill_pod: create,
        create_sandbox: create,
        sandbox_id: if create { None } else { sandbox_id },
        attempt,
        ..Default::default()
    };
    if is_terminal(pod) {
        // A finished pod only gets its leftovers stopped.
        a.create_sandbox = false;
        a.kill_pod = rs.sandboxes.iter().any(|s| s.ready)
            || rs.containers.iter().any(|c| c.state == CState::Running);
        return a;
    }
    if create {
        let policy = restart_policy(pod);
        if policy == "Never" && attempt != 0 && !rs.containers.is_empty() {
            // The sandbox died after the containers ran: a Never pod is not started again.
            a.create_sandbox = false;
            return a;
        }
        a.containers_to_start = containers
            .iter()
            .enumerate()
            .filter(|(_, c)| !(policy == "OnFailure" && succeeded(c, rs)))
            .map(|(i, _)| i)
            .collect();
        if a.containers_to_start.is_empty() {
            a.create_sandbox = false;
        }
        return a;
    }
    let mut keep = 0;
    for (idx, c) in containers.iter().enumerate() {
        let status = rs.latest(&c.name);
        match status {
            Some(s) if s.state == CState::Running => {
                if !s.hash.is_empty() && s.hash != container_hash(c) {
                    a.containers_to_start.push(idx);
                    a.containers_to_kill.push(KillAction {
                        id: s.id.clone(),
                        name: c.name.clone(),
                        reason: format!("Container {} definition changed", c.name),
                    });
                } else {
                    keep += 1;
                }
            }
            _ => {
                if should_restart(pod, status) {
                    a.containers_to_start.push(idx);
                    if let Some(s) =
                        status.filter(|s| matches!(s.state, CState::Unknown | CState::Created))
                    {
                        a.containers_to_kill.push(KillAction {
                            id: s.id.clone(),
                            name: c.name.clone(),
                            reason: "Container is in unknown state, try killing it before restart"
                                .into(),
                        });
                    }
                }
            }
        }
    }
    if keep == 0 && a.containers_to_start.is_empty() {
        a.kill_pod = true;
    }
    a
}

/// Dead containers and sandboxes to remove (kubelet's container GC, simplified): per container
/// name keep the newest two (current + previous, for `lastState` and `logs --previous`); keep
/// the newest sandbox; remove not-ready older sandboxes with nothing running in them.
pub fn garbage(rs: &PodRuntimeStatus) -> (Vec<String>, Vec<String>) {
    let mut containers = Vec::new();
    let mut seen: std::collections::HashMap<&str, usize> = Default::default();
    for c in &rs.containers {
        let n = seen.entry(c.name.as_str()).or_default();
        *n += 1;
        if *n > 2 && c.state == CState::Exited {
            containers.push(c.id.clone());
        }
    }
    let sandboxes = rs
        .sandboxes
        .iter()
        .skip(1)
        .filter(|s| !s.ready)
        .filter(|s| {
            !rs.containers
                .iter()
                .any(|c| c.sandbox_id == s.id && c.state == CState::Running)
        })
        .filter(|s| {
            // keep sandboxes still holding the containers we keep
            !rs.containers
                .iter()
                .any(|c| c.sandbox_id == s.id && !containers.contains(&c.id))
        })
        .map(|s| s.id.clone())
        .collect();
    (containers, sandboxes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::pods::kuberuntime::tests::pod;
    use crate::agent::pods::state::SandboxInfo;

    fn sb(id: &str, attempt: u32, ready: bool, at: i64) -> SandboxInfo {
        SandboxInfo {
            id: id.into(),
            attempt,
            ready,
            created_at: at,
            ips: if ready {
                vec!["10.0.0.2".into()]
            } else {
                vec![]
            },
        }
    }

    fn ctr(p: &Pod, name: &str, state: CState, exit: i32, at: i64, restarts: u32) -> ContainerInfo {
        let spec = p
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .find(|c| c.name == name)
            .unwrap();
        ContainerInfo {
            id: format!("{name}-{at}"),
            sandbox_id: "s1".into(),
            name: name.into(),
            restart_count: restarts,
            state,
            created_at: at,
            started_at: at,
            finished_at: at + 1,
            exit_code: exit,
            reason: String::new(),
            message: String::new(),
            hash: container_hash(spec),
            image: "busybox".into(),
            image_ref: "sha256:x".into(),
        }
    }

    fn rs(sandboxes: Vec<SandboxInfo>, containers: Vec<ContainerInfo>) -> PodRuntimeStatus {
        let mut r = PodRuntimeStatus {
            sandboxes,
            containers,
        };
        r.sort();
        r
    }

    #[test]
    fn new_pod_creates_sandbox_and_all_containers() {
        let p = pod(serde_json::json!({"spec": {"containers": [
            {"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}));
        let a = compute_pod_actions(&p, &PodRuntimeStatus::default());
        assert!(a.create_sandbox && a.kill_pod);
        assert_eq!(a.attempt, 0);
        assert_eq!(a.containers_to_start, vec![0, 1]);
    }

    #[test]
    fn running_pod_is_left_alone() {
        let p = pod(serde_json::json!({}));
        let r = rs(
            vec![sb("s1", 0, true, 1)],
            vec![ctr(&p, "c", CState::Running, 0, 2, 0)],
        );
        let a = compute_pod_actions(&p, &r);
        assert_eq!(
            a,
            PodActions {
                sandbox_id: Some("s1".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn exited_container_restarts_per_policy() {
        for (policy, exit, restart) in [
            ("Always", 0, true),
            ("Always", 1, true),
            ("OnFailure", 0, false),
            ("OnFailure", 2, true),
            ("Never", 1, false),
            ("Never", 0, false),
        ] {
            let p = pod(serde_json::json!({"spec": {"restartPolicy": policy}}));
            let r = rs(
                vec![sb("s1", 0, true, 1)],
                vec![ctr(&p, "c", CState::Exited, exit, 2, 0)],
            );
            let a = compute_pod_actions(&p, &r);
            assert_eq!(
                !a.containers_to_start.is_empty(),
                restart,
                "{policy} exit {exit}"
            );
            assert!(!a.create_sandbox);
            // nothing left to run: the sandbox is stopped
            assert_eq!(a.kill_pod, !restart, "{policy} exit {exit}");
        }
    }

    #[test]
    fn dead_sandbox_is_recreated_with_next_attempt() {
        let p = pod(serde_json::json!({}));
        let r = rs(
            vec![sb("s1", 0, false, 1)],
            vec![ctr(&p, "c", CState::Exited, 137, 2, 0)],
        );
        let a = compute_pod_actions(&p, &r);
        assert!(a.create_sandbox && a.kill_pod);
        assert_eq!(a.attempt, 1);
        assert_eq!(a.containers_to_start, vec![0]);
        // ... but not for restartPolicy Never
        let p = pod(serde_json::json!({"spec": {"restartPolicy": "Never"}}));
        let r = rs(
            vec![sb("s1", 0, false, 1)],
            vec![ctr(&p, "c", CState::Exited, 137, 2, 0)],
        );
        assert!(!compute_pod_actions(&p, &r).create_sandbox);
        // ... nor OnFailure when everything succeeded
        let p = pod(serde_json::json!({"spec": {"restartPolicy": "OnFailure"}}));
        let r = rs(
            vec![sb("s1", 0, false, 1)],
            vec![ctr(&p, "c", CState::Exited, 0, 2, 0)],
        );
        assert!(!compute_pod_actions(&p, &r).create_sandbox);
    }

    #[test]
    fn two_ready_sandboxes_reconcile_to_one() {
        let p = pod(serde_json::json!({}));
        let r = rs(vec![sb("s1", 0, true, 1), sb("s2", 1, true, 5)], vec![]);
        let a = compute_pod_actions(&p, &r);
        assert!(a.kill_pod && a.create_sandbox);
        assert_eq!(a.attempt, 2);
    }

    #[test]
    fn changed_spec_restarts_container() {
        let p = pod(serde_json::json!({}));
        let mut c = ctr(&p, "c", CState::Running, 0, 2, 0);
        c.hash = "old".into();
        let r = rs(vec![sb("s1", 0, true, 1)], vec![c]);
        let a = compute_pod_actions(&p, &r);
        assert_eq!(a.containers_to_start, vec![0]);
        assert_eq!(a.containers_to_kill.len(), 1);
        assert!(!a.kill_pod);
    }

    #[test]
    fn created_but_not_started_is_replaced() {
        let p = pod(serde_json::json!({}));
        let r = rs(
            vec![sb("s1", 0, true, 1)],
            vec![ctr(&p, "c", CState::Created, 0, 2, 0)],
        );
        let a = compute_pod_actions(&p, &r);
        assert_eq!(a.containers_to_start, vec![0]);
        assert_eq!(a.containers_to_kill[0].id, "c-2");
    }

    #[test]
    fn terminal_pod_only_stops() {
        let p = pod(serde_json::json!({"status": {"phase": "Succeeded"}}));
        let r = rs(
            vec![sb("s1", 0, true, 1)],
            vec![ctr(&p, "c", CState::Exited, 0, 2, 0)],
        );
        let a = compute_pod_actions(&p, &r);
        assert!(a.kill_pod && !a.create_sandbox && a.containers_to_start.is_empty());
    }

    #[test]
    fn gc_keeps_two_per_name_and_newest_sandbox() {
        let p = pod(serde_json::json!({}));
        let mut cs: Vec<_> = (0..4)
            .map(|i| ctr(&p, "c", CState::Exited, 1, 10 + i, i as u32))
            .collect();
        cs[0].sandbox_id = "old".into();
        let r = rs(vec![sb("s1", 1, true, 5), sb("old", 0, false, 1)], cs);
        let (c, s) = garbage(&r);
        assert_eq!(c, vec!["c-11".to_string(), "c-10".to_string()]);
        assert_eq!(s, vec!["old".to_string()]);
    }
}
