//! Relist (kubelet's generic PLEG): every second ListPodSandbox + ListContainers, a pure diff of
//! the old and new snapshots into lifecycle events, which wake the affected pod workers.
//! containerd 1.6 has no CRI container events, so this is the only source of "container died".
use std::collections::{BTreeMap, BTreeSet};

use super::kuberuntime::LABEL_POD_UID;
use super::state::CState;
use crate::cri::{api, CriError, Runtime};

/// What the runtime holds, keyed by object id: (pod uid, state).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub sandboxes: BTreeMap<String, (String, bool)>,
    pub containers: BTreeMap<String, (String, CState)>,
}

impl Snapshot {
    /// Pod uids that own anything in the runtime.
    pub fn uids(&self) -> BTreeSet<String> {
        self.sandboxes
            .values()
            .map(|(u, _)| u.clone())
            .chain(self.containers.values().map(|(u, _)| u.clone()))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleEvent {
    ContainerStarted { uid: String, id: String },
    ContainerDied { uid: String, id: String },
    ContainerRemoved { uid: String, id: String },
    ContainerChanged { uid: String, id: String },
    SandboxChanged { uid: String, id: String },
}

impl LifecycleEvent {
    pub fn uid(&self) -> &str {
        match self {
            LifecycleEvent::ContainerStarted { uid, .. }
            | LifecycleEvent::ContainerDied { uid, .. }
            | LifecycleEvent::ContainerRemoved { uid, .. }
            | LifecycleEvent::ContainerChanged { uid, .. }
            | LifecycleEvent::SandboxChanged { uid, .. } => uid,
        }
    }
}

/// Diff two snapshots (pure). Objects without a pod uid label are not ours and are ignored.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Vec<LifecycleEvent> {
    let mut out = Vec::new();
    for (id, (uid, st)) in &new.containers {
        let (uid, id) = (uid.clone(), id.clone());
        match old.containers.get(&id).map(|(_, s)| *s) {
            Some(prev) if prev == *st => {}
            _ if *st == CState::Running => out.push(LifecycleEvent::ContainerStarted { uid, id }),
            _ if *st == CState::Exited => out.push(LifecycleEvent::ContainerDied { uid, id }),
            _ => out.push(LifecycleEvent::ContainerChanged { uid, id }),
        }
    }
    for (id, (uid, _)) in &old.containers {
        if !new.containers.contains_key(id) {
            out.push(LifecycleEvent::ContainerRemoved {
                uid: uid.clone(),
                id: id.clone(),
            });
        }
    }
    for (id, (uid, ready)) in &new.sandboxes {
        if old.sandboxes.get(id).map(|(_, r)| r) != Some(ready) {
            out.push(LifecycleEvent::SandboxChanged {
                uid: uid.clone(),
                id: id.clone(),
            });
        }
    }
    for (id, (uid, _)) in &old.sandboxes {
        if !new.sandboxes.contains_key(id) {
            out.push(LifecycleEvent::SandboxChanged {
                uid: uid.clone(),
                id: id.clone(),
            });
        }
    }
    out
}

/// One relist: two list calls, nothing per object.
pub async fn relist<R: Runtime>(rt: &R) -> Result<Snapshot, CriError> {
    let sandboxes = rt.list_pod_sandboxes(Default::default()).await?;
    let containers = rt.list_containers(Default::default()).await?;
    let mut s = Snapshot::default();
    for sb in sandboxes {
        if let Some(uid) = sb.labels.get(LABEL_POD_UID) {
            let ready = sb.state == api::PodSandboxState::SandboxReady as i32;
            s.sandboxes.insert(sb.id, (uid.clone(), ready));
        }
    }
    for c in containers {
        if let Some(uid) = c.labels.get(LABEL_POD_UID) {
            s.containers
                .insert(c.id, (uid.clone(), CState::from_cri(c.state)));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(sbs: &[(&str, &str, bool)], cs: &[(&str, &str, CState)]) -> Snapshot {
        Snapshot {
            sandboxes: sbs
                .iter()
                .map(|(id, u, r)| (id.to_string(), (u.to_string(), *r)))
                .collect(),
            containers: cs
                .iter()
                .map(|(id, u, s)| (id.to_string(), (u.to_string(), *s)))
                .collect(),
        }
    }

    #[test]
    fn diff_reports_transitions() {
        let old = snap(
            &[("s1", "a", true), ("s2", "b", true)],
            &[
                ("c1", "a", CState::Running),
                ("c2", "b", CState::Running),
                ("c3", "b", CState::Exited),
            ],
        );
        let new = snap(
            &[("s1", "a", true), ("s2", "b", false)],
            &[
                ("c1", "a", CState::Running),
                ("c2", "b", CState::Exited),
                ("c4", "a", CState::Created),
            ],
        );
        let ev = diff(&old, &new);
        assert_eq!(
            ev,
            vec![
                LifecycleEvent::ContainerDied {
                    uid: "b".into(),
                    id: "c2".into()
                },
                LifecycleEvent::ContainerChanged {
                    uid: "a".into(),
                    id: "c4".into()
                },
                LifecycleEvent::ContainerRemoved {
                    uid: "b".into(),
                    id: "c3".into()
                },
                LifecycleEvent::SandboxChanged {
                    uid: "b".into(),
                    id: "s2".into()
                },
            ]
        );
        assert!(diff(&new, &new).is_empty());
        // From nothing (agent start): everything is news, so every pod gets a sync (adoption).
        let all: BTreeSet<_> = diff(&Snapshot::default(), &old)
            .iter()
            .map(|e| e.uid().to_string())
            .collect();
        assert_eq!(all, old.uids());
    }

    #[tokio::test]
    async fn relist_reads_fake_runtime() {
        use crate::cri::fake::FakeRuntime;
        let rt = FakeRuntime::new();
        let labels: crate::cri::Labels = [(LABEL_POD_UID.to_string(), "u1".to_string())].into();
        let id = rt
            .run_pod_sandbox(api::PodSandboxConfig {
                labels,
                ..Default::default()
            })
            .await
            .unwrap();
        rt.run_pod_sandbox(api::PodSandboxConfig::default())
            .await
            .unwrap(); // not ours
        let s = relist(&rt).await.unwrap();
        assert_eq!(s.sandboxes.len(), 1);
        assert_eq!(s.sandboxes[&id], ("u1".to_string(), true));
    }
}
