//! Worker-level tests: sync_pod / terminate against the fake runtime (no API server).
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::mpsc;

use super::events::{PodEvent, Recorder};
use super::kuberuntime::tests::pod;
use super::status::{StatusManager, StatusMsg};
use super::worker::{sync_pod, terminate, PodContext, WorkerState};
use crate::cri::fake::FakeRuntime;
use crate::cri::Runtime;

struct Harness {
    ctx: PodContext<FakeRuntime>,
    rt: FakeRuntime,
    status_rx: mpsc::UnboundedReceiver<StatusMsg>,
    events_rx: mpsc::UnboundedReceiver<PodEvent>,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let rt = FakeRuntime::new();
    let dir = tempfile::tempdir().unwrap();
    let (status, status_rx) = StatusManager::channel();
    let (events, events_rx) = Recorder::channel();
    let ctx = PodContext {
        rt: rt.clone(),
        node_name: "n1".into(),
        host_ips: vec!["192.168.1.5".into()],
        pod_log_dir: PathBuf::from(dir.path()),
        host_dns: Default::default(),
        node_memory_bytes: None,
        status,
        events,
    };
    Harness {
        ctx,
        rt,
        status_rx,
        events_rx,
        _dir: dir,
    }
}

impl Harness {
    fn reasons(&mut self) -> Vec<String> {
        let mut v = vec![];
        while let Ok(e) = self.events_rx.try_recv() {
            v.push(e.reason);
        }
        v
    }
    fn last_msgs(&mut self) -> Vec<StatusMsg> {
        let mut v = vec![];
        while let Ok(m) = self.status_rx.try_recv() {
            v.push(m);
        }
        v
    }
}

fn p(json: serde_json::Value) -> Arc<Pod> {
    Arc::new(pod(json))
}

fn waiting_reason(s: &PodStatus) -> Option<String> {
    s.container_statuses.as_ref()?[0]
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

#[tokio::test]
async fn starts_pod_and_is_idempotent() {
    let mut h = harness();
    h.rt.add_image("busybox:1");
    let pod = p(serde_json::json!({"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}));
    let mut st = WorkerState::default();
    let (status, requeue) = sync_pod(&h.ctx, &mut st, &pod).await.unwrap();
    assert_eq!(requeue, None);
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("10.244.0.2"));
    let calls = h.rt.calls();
    assert_eq!(
        calls,
        vec![
            "RunPodSandbox web",
            "CreateContainer c",
            "StartContainer c2"
        ]
    );
    assert_eq!(h.reasons(), vec!["Pulled", "Created", "Started"]);
    assert!(h._dir.path().join("default_web_u-1/c").is_dir());
    // Second sync: nothing to do.
    h.rt.clear_calls();
    sync_pod(&h.ctx, &mut st, &pod).await.unwrap();
    assert!(h.rt.calls().is_empty());
    // A new worker (agent restart) adopts the running container: nothing restarted.
    let mut fresh = WorkerState::default();
    let (status, _) = sync_pod(&h.ctx, &mut fresh, &pod).await.unwrap();
    assert!(h.rt.calls().is_empty());
    assert_eq!(
        status.container_statuses.as_ref().unwrap()[0].restart_count,
        0
    );
    assert!(matches!(
        h.last_msgs().last(),
        Some(StatusMsg::Update { .. })
    ));
}

#[tokio::test]
async fn crash_loop_back_off() {
    let mut h = harness();
    h.rt.add_image("busybox:1");
    let pod = p(serde_json::json!({"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}));
    let mut st = WorkerState::default();
    sync_pod(&h.ctx, &mut st, &pod).await.unwrap();
    let first = h.rt.container_ids()[0].clone();
    // first crash: restarted at once (kubelet starts the back-off at 10 s after this)
    h.rt.exit(&first, 1);
    let (status, _) = sync_pod(&h.ctx, &mut st, &pod).await.unwrap();
    let cs = &status.container_statuses.as_ref().unwrap()[0];
    assert_eq!(cs.restart_count, 1);
    assert!(cs.state.as_ref().unwrap().running.is_some());
    assert_eq!(
        cs.last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        1
    );
    // second crash right away: in back-off
    let second = h.rt.container_ids()[1].clone();
    h.rt.exit(&second, 2);
    h.rt.clear_calls();
    let (status, requeue) = sync_pod(&h.ctx, &mut st, &pod).await.unwrap();
    assert!(!h
        .rt
        .calls()
        .iter()
        .any(|c| c.starts_with("CreateContainer")));
    assert_eq!(waiting_reason(&status).as_deref(), Some("CrashLoopBackOff"));
    let cs = &status.container_statuses.as_ref().unwrap()[0];
    let msg = cs
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert_eq!(
        msg,
        "back-off 10s restarting failed container=c pod=web_default(u-1)"
    );
    assert_eq!(
        cs.last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        2
    );
    assert_eq!(cs.restart_count, 1);
    assert!(requeue.unwrap() <= std::time::Duration::from_secs(10));
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(h.reasons().contains(&"BackOff".to_string()));
}

#[tokio::test]
async fn restart_policy_never_completes_and_stops_sandbox() {
    let mut h = harness();
    h.rt.add_image("busybox:1");
    let pod = p(
        serde_json::json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1"}]}}),
    );
    let mut st = WorkerState::default();
    sync_pod(&h.ctx, &mut st, &pod).await.unwrap();
    h.rt.exit(&h.rt.container_ids()[0], 0);
    let (status, _) = sync_pod(&h.ctx, &mut st, &pod).await.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    assert!(h.rt.calls().iter().any(|c| c.starts_with("StopPodSandbox")));
    h.rt.clear_calls();
    sync_pod(&h.ctx, &mut st, &pod).await.unwrap();
    assert!(h.rt.calls().is_empty(), "{:?}", h.rt.calls());
    let _ = h.reasons();
}

#[tokio::test]
async fn image_pull_failure_then_back_off() {
    let mut h = harness();
    let pod = p(serde_json::json!({"spec": {"containers": [{"name": "c", "image": "nope:1"}]}}));
    h.rt.fail_next(
        "PullImage",
        "failed to resolve reference \"nope:1\": not found",
    );
    let mut st = WorkerState::default();
    let (status, _) = sync_pod(&h.ctx, &mut st, &pod).await.unwrap();
    assert_eq!(waiting_reason(&status).as_deref(), Some("ErrImagePull"));
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(h.reasons(), vec!["Pulling", "Failed", "Failed"]);
    let (status, requeue) = sync_pod(&h.ctx, &mut st, &pod).await.unwrap();
    assert_eq!(waiting_reason(&status).as_deref(), Some("ImagePullBackOff"));
    assert!(requeue.unwrap() > std::time::Duration::from_secs(5));
    assert_eq!(h.reasons(), vec!["BackOff"]);
    // Never + absent image
    let pod = p(
        serde_json::json!({"metadata": {"uid": "u-2", "name": "n"}, "spec": {"containers": [{"name": "c", "image": "absent:1", "imagePullPolicy": "Never"}]}}),
    );
    let (status, _) = sync_pod(&h.ctx, &mut WorkerState::default(), &pod)
        .await
        .unwrap();
    assert_eq!(
        waiting_reason(&status).as_deref(),
        Some("ErrImageNeverPull")
    );
}

#[tokio::test]
async fn create_failure_is_reported_and_retried() {
    let mut h = harness();
    h.rt.add_image("busybox:1");
    let pod = p(serde_json::json!({"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}));
    h.rt.fail_next("CreateContainer", "no space left");
    let mut st = WorkerState::default();
    let (status, requeue) = sync_pod(&h.ctx, &mut st, &pod).await.unwrap();
    assert_eq!(
        waiting_reason(&status).as_deref(),
        Some("CreateContainerError")
    );
    assert_eq!(requeue, Some(std::time::Duration::from_secs(10)));
    let (status, _) = sync_pod(&h.ctx, &mut st, &pod).await.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let _ = h.reasons();
    let bad = p(
        serde_json::json!({"metadata": {"uid": "u-3", "name": "bad"}, "spec": {"containers": [{"name": "c", "image": "busybox:1",
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]}]}}),
    );
    let (status, _) = sync_pod(&h.ctx, &mut WorkerState::default(), &bad)
        .await
        .unwrap();
    assert_eq!(
        waiting_reason(&status).as_deref(),
        Some("CreateContainerConfigError")
    );
}

#[tokio::test]
async fn graceful_deletion_stops_removes_and_deletes() {
    let mut h = harness();
    h.rt.add_image("busybox:1");
    let pod = p(
        serde_json::json!({"spec": {"terminationGracePeriodSeconds": 7, "containers": [{"name": "c", "image": "busybox:1"}]}}),
    );
    sync_pod(&h.ctx, &mut WorkerState::default(), &pod)
        .await
        .unwrap();
    let _ = h.last_msgs();
    let _ = h.reasons();
    h.rt.clear_calls();
    let deleting = p(
        serde_json::json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 5},
        "spec": {"terminationGracePeriodSeconds": 7, "containers": [{"name": "c", "image": "busybox:1"}]}}),
    );
    terminate(&h.ctx, "u-1", Some(&deleting), true)
        .await
        .unwrap();
    let calls = h.rt.calls();
    assert_eq!(calls[0], "StopContainer c2 5");
    assert!(calls.contains(&"StopPodSandbox sb1".to_string()));
    assert!(calls.contains(&"RemovePodSandbox sb1".to_string()));
    assert!(h.rt.sandbox_ids().is_empty());
    let msgs = h.last_msgs();
    match &msgs[..] {
        [StatusMsg::Update { status, .. }, StatusMsg::Delete { key }] => {
            assert_eq!(key.uid, "u-1");
            let cs = &status.container_statuses.as_ref().unwrap()[0];
            assert!(cs.state.as_ref().unwrap().terminated.is_some());
            assert_eq!(status.phase.as_deref(), Some("Failed"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(h.reasons(), vec!["Killing"]);
}

#[tokio::test]
async fn orphan_is_torn_down() {
    let mut h = harness();
    h.rt.add_image("busybox:1");
    let pod = p(serde_json::json!({"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}));
    sync_pod(&h.ctx, &mut WorkerState::default(), &pod)
        .await
        .unwrap();
    terminate(&h.ctx, "u-1", None, false).await.unwrap();
    assert!(h.rt.sandbox_ids().is_empty());
    assert!(h
        .rt
        .list_containers(Default::default())
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        h.last_msgs().last(),
        Some(StatusMsg::Forget { .. })
    ));
}

#[tokio::test]
async fn dead_sandbox_is_recreated_and_restart_count_continues() {
    let mut h = harness();
    h.rt.add_image("busybox:1");
    let pod = p(serde_json::json!({"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}));
    let mut st = WorkerState::default();
    sync_pod(&h.ctx, &mut st, &pod).await.unwrap();
    h.rt.stop_pod_sandbox("sb1").await.unwrap(); // e.g. the host rebooted
    let (status, _) = sync_pod(&h.ctx, &mut st, &pod).await.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("10.244.0.3"));
    assert_eq!(
        status.container_statuses.as_ref().unwrap()[0].restart_count,
        1
    );
    let _ = h.reasons();
}

#[tokio::test]
async fn direct_start_for_benchmarks() {
    let h = harness();
    h.rt.add_image("busybox:1");
    let pod =
        pod(serde_json::json!({"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}));
    let d = super::start_pod_direct(&h.rt, &pod, h._dir.path(), &Default::default())
        .await
        .unwrap();
    assert_eq!(d.container_ids.len(), 1);
    super::stop_pod_direct(&h.rt, &d).await.unwrap();
    assert!(h.rt.sandbox_ids().is_empty());
}

/// The whole agent loop minus HTTP: watch events from a channel through a reflector, the relist
/// loop over the fake runtime, workers, status messages.
#[tokio::test]
async fn dispatcher_adopts_cleans_orphans_starts_and_deletes() {
    use kube::runtime::{reflector, watcher};
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    let h = harness();
    let Harness {
        ctx,
        rt,
        mut status_rx,
        _dir,
        ..
    } = h;
    rt.add_image("busybox:1");
    // Left over from before the agent restarted: a pod the API still has, and one it does not.
    let adopt = pod(
        serde_json::json!({"metadata": {"name": "adopt", "uid": "a1"}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}),
    );
    let orphan = pod(
        serde_json::json!({"metadata": {"name": "orphan", "uid": "o1"}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}),
    );
    let adopted = super::start_pod_direct(&rt, &adopt, _dir.path(), &Default::default())
        .await
        .unwrap();
    super::start_pod_direct(&rt, &orphan, _dir.path(), &Default::default())
        .await
        .unwrap();
    rt.clear_calls();

    let shutdown = tokio_util::sync::CancellationToken::new();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel::<watcher::Event<Pod>>();
    let events = futures::stream::unfold(ev_rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, watcher::Error>(e), rx))
    });
    let (store, writer) = reflector::store();
    let stream = reflector(writer, events);
    let (pleg_tx, pleg_rx) = mpsc::channel::<BTreeSet<String>>(4);
    let relist = tokio::spawn(super::relist_loop(rt.clone(), pleg_tx, shutdown.clone()));
    let ctx = Arc::new(ctx);
    let disp = tokio::spawn(super::dispatch(
        ctx,
        stream,
        store,
        pleg_rx,
        shutdown.clone(),
    ));

    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    ev_tx.send(watcher::Event::Init).unwrap();
    ev_tx
        .send(watcher::Event::InitApply(adopt.clone()))
        .unwrap();
    ev_tx.send(watcher::Event::InitDone).unwrap();
    let rt2 = rt.clone();
    until("orphan torn down", || {
        let ids = rt2.sandbox_ids();
        ids == vec![adopted.sandbox_id.clone()]
    })
    .await;
    assert!(!rt
        .calls()
        .iter()
        .any(|c| c.starts_with("StopContainer ") && c.contains(&adopted.container_ids[0])));
    assert!(
        !rt.calls().iter().any(|c| c.starts_with("CreateContainer")),
        "{:?}",
        rt.calls()
    );

    // A new pod is started.
    let fresh = pod(
        serde_json::json!({"metadata": {"name": "fresh", "uid": "f1"}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}),
    );
    ev_tx.send(watcher::Event::Apply(fresh.clone())).unwrap();
    let rt2 = rt.clone();
    until("fresh started", || {
        rt2.calls().iter().any(|c| c == "CreateContainer c")
    })
    .await;

    // Its container dies: the relist wakes the worker, which restarts it (first crash: no back-off).
    let rt2 = rt.clone();
    until("fresh running", || rt2.container_ids().len() == 2).await;
    let fresh_id = rt.container_ids()[1].clone();
    rt.exit(&fresh_id, 1);
    let rt2 = rt.clone();
    until("fresh restarted", || rt2.container_ids().len() == 3).await;

    // Graceful deletion: stopped, removed, final status then DELETE.
    let mut deleting = fresh.clone();
    deleting.metadata.deletion_timestamp = Some(super::status::now_time());
    deleting.metadata.deletion_grace_period_seconds = Some(30);
    ev_tx.send(watcher::Event::Apply(deleting.clone())).unwrap();
    let mut saw_delete = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !saw_delete {
        assert!(Instant::now() < deadline, "no Delete for fresh");
        if let Ok(Some(StatusMsg::Delete { key })) =
            tokio::time::timeout(Duration::from_millis(100), status_rx.recv()).await
        {
            saw_delete = key.uid == "f1";
        }
    }
    assert_eq!(rt.sandbox_ids(), vec![adopted.sandbox_id.clone()]);
    ev_tx.send(watcher::Event::Delete(deleting)).unwrap();

    // A pod deleted while the watch was broken: missing from the re-list, so torn down.
    let lost = pod(
        serde_json::json!({"metadata": {"name": "lost", "uid": "l1"}, "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}),
    );
    ev_tx.send(watcher::Event::Apply(lost)).unwrap();
    let rt2 = rt.clone();
    until("lost started", || rt2.sandbox_ids().len() == 2).await;
    ev_tx.send(watcher::Event::Init).unwrap();
    ev_tx
        .send(watcher::Event::InitApply(adopt.clone()))
        .unwrap();
    ev_tx.send(watcher::Event::InitDone).unwrap();
    let rt2 = rt.clone();
    let keep = adopted.sandbox_id.clone();
    until("lost torn down", || rt2.sandbox_ids() == vec![keep.clone()]).await;

    // Adopted pod still has its original container, never restarted.
    let rs = super::state::get_pod_status(&rt, "a1").await.unwrap();
    assert_eq!(rs.containers.len(), 1);
    assert_eq!(rs.containers[0].id, adopted.container_ids[0]);

    shutdown.cancel();
    disp.await.unwrap();
    relist.await.unwrap();
    // Shutdown leaves running containers alone.
    let rs = super::state::get_pod_status(&rt, "a1").await.unwrap();
    assert_eq!(rs.containers[0].state, super::state::CState::Running);
}
