//! The pod lifecycle (`berth::agent::pods::worker::{sync_pod, terminate}`, PLEG relist, the
//! runtime state reader) against a real containerd from the harness (`common::Containerd` in a
//! `common::Netns`, berth-cni with the conflist the agent writes), without an API server: a
//! running pod (downward-API env, DNS config, limits, log file, adoption by a fresh worker), a
//! crash loop (restart, CrashLoopBackOff, lastState exit code), a failed pull (ErrImagePull then
//! ImagePullBackOff), graceful deletion (sandbox gone, IP released) and orphan teardown.
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::agent::cni_conf;
use berth::agent::pods::events::Recorder;
use berth::agent::pods::kuberuntime::parse_resolv_conf;
use berth::agent::pods::pleg;
use berth::agent::pods::state::{get_pod_status, CState};
use berth::agent::pods::status::{now_time, StatusManager};
use berth::agent::pods::worker::{sync_pod, terminate, PodContext, WorkerState};
use berth::cri::Cri;
use common::{Containerd, Netns};
use k8s_openapi::api::core::v1::{Pod, PodStatus};

/// A Pod from `json` merged over a minimal default/web pod bound to n1 (the crate's unit-test
/// helper `kuberuntime::tests::pod`, which is `#[cfg(test)]` and so not visible here).
fn p(json: serde_json::Value) -> Arc<Pod> {
    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }
    let mut base = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "u-1"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}
    });
    merge(&mut base, json);
    Arc::new(serde_json::from_value(base).unwrap())
}

fn waiting_reason(s: &PodStatus) -> Option<String> {
    s.container_statuses.as_ref()?[0].state.as_ref()?.waiting.as_ref()?.reason.clone()
}

#[test]
fn real_containerd() {
    if !common::e2e_enabled("real_containerd") {
        return;
    }
    let _serial = common::serial();
    let ns = Netns::new();
    let c = Containerd::start(&ns);

    // The pod network: berth-cni with the conflist the agent writes.
    let cni_data_dir = c.root.join("cni-data");
    let subnet_prefix = format!("10.244.{}.", ns.index);
    let pod_cidr: ipnetwork::IpNetwork = format!("{subnet_prefix}0/24").parse().unwrap();
    let conf = cni_conf::render(cni_conf::NETWORK_NAME, "berth0", 1500, pod_cidr, &cni_data_dir).unwrap();
    cni_conf::write_atomic(&c.cni_conf_dir, &conf).unwrap();

    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rt = tokio_rt.block_on(Cri::connect(&c.socket)).expect("CRI connect");
    // containerd loads the conflist asynchronously: wait until the runtime says its network is ready.
    common::wait_until("the runtime and its network to be ready", Duration::from_secs(30), || {
        let h = tokio_rt.block_on(berth::agent::node::runtime_health(&rt, true));
        let errs = berth::agent::node::readiness_errors(&h);
        if errs.is_empty() {
            Ok(Some(()))
        } else {
            Err(errs)
        }
    });

    let dir = c.root.join("pods");
    std::fs::create_dir_all(&dir).unwrap();
    let (status, _status_rx) = StatusManager::channel();
    let (events, mut events_rx) = Recorder::channel();
    let ctx = PodContext {
        rt: rt.clone(),
        node_name: "n1".into(),
        host_ips: vec!["192.168.1.5".into()],
        pod_log_dir: dir.clone(),
        host_dns: parse_resolv_conf("nameserver 10.96.0.10\nsearch svc.example\n"),
        node_memory_bytes: Some(8 << 30),
        status,
        events,
    };
    let suffix = std::process::id();
    let uid = format!("real-{suffix}");
    let web = p(serde_json::json!({
        "metadata": {"name": "web", "uid": uid},
        "spec": {"terminationGracePeriodSeconds": 3, "containers": [{
            "name": "c", "image": common::BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", "echo host=$(hostname) ip=$POD_IP ns=$NS dns=$(grep -c 10.96.0.10 /etc/resolv.conf); trap 'echo bye; exit 0' TERM; while true; do sleep 1; done"],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
            "resources": {"limits": {"cpu": "200m", "memory": "32Mi"}}
        }]}
    }));
    let t0 = Instant::now();
    let before = tokio_rt.block_on(pleg::relist(&rt)).unwrap();
    let mut st = WorkerState::default();
    let (status, requeue) = tokio_rt.block_on(sync_pod(&ctx, &mut st, &web)).unwrap();
    eprintln!("web started in {:?}: phase {:?} ip {:?}", t0.elapsed(), status.phase, status.pod_ip);
    assert_eq!(requeue, None, "{status:?}");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let ip = status.pod_ip.clone().unwrap();
    assert!(ip.starts_with(&subnet_prefix), "{ip} not in {subnet_prefix}0/24");
    let cs = &status.container_statuses.as_ref().unwrap()[0];
    assert!(cs.container_id.as_deref().unwrap().starts_with("containerd://"));
    assert!(cs.image_id.starts_with("sha256:"), "{}", cs.image_id);
    let log = dir.join(format!("default_web_{uid}/c/0.log"));
    let want = format!("host=web ip={ip} ns=default dns=1");
    common::wait_until("the web log line", Duration::from_secs(60), || {
        Ok::<_, String>(std::fs::read_to_string(&log).is_ok_and(|s| s.contains(&want)).then_some(()))
    });
    eprintln!("log: {}", std::fs::read_to_string(&log).unwrap().trim());
    // PLEG sees the new sandbox and container.
    let after = tokio_rt.block_on(pleg::relist(&rt)).unwrap();
    assert!(pleg::diff(&before, &after).iter().any(|e| e.uid() == uid));
    // Agent restart: a fresh worker adopts, nothing restarted.
    let n_before = tokio_rt.block_on(get_pod_status(&rt, &uid)).unwrap().containers.len();
    let (status2, _) = tokio_rt.block_on(sync_pod(&ctx, &mut WorkerState::default(), &web)).unwrap();
    assert_eq!(tokio_rt.block_on(get_pod_status(&rt, &uid)).unwrap().containers.len(), n_before);
    assert_eq!(status2.container_statuses.as_ref().unwrap()[0].container_id, cs.container_id);

    // A crashing container: restarted once, then CrashLoopBackOff with lastState exit 3.
    let cuid = format!("crash-{suffix}");
    let crash = p(serde_json::json!({
        "metadata": {"name": "crash", "uid": cuid},
        "spec": {"containers": [{"name": "c", "image": common::BUSYBOX_IMAGE, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", "echo crashing; exit 3"]}]}
    }));
    let mut cst = WorkerState::default();
    tokio_rt.block_on(sync_pod(&ctx, &mut cst, &crash)).unwrap();
    let exited = |n: usize| {
        let s = tokio_rt.block_on(get_pod_status(&rt, &cuid)).map_err(|e| e.to_string())?;
        let done = s.containers.len() == n && s.containers.iter().all(|c| c.state == CState::Exited);
        Ok::<_, String>(done.then_some(()))
    };
    common::wait_until("first exit", Duration::from_secs(60), || exited(1));
    let (s, _) = tokio_rt.block_on(sync_pod(&ctx, &mut cst, &crash)).unwrap();
    assert_eq!(s.container_statuses.as_ref().unwrap()[0].restart_count, 1);
    common::wait_until("second exit", Duration::from_secs(60), || exited(2));
    let (s, requeue) = tokio_rt.block_on(sync_pod(&ctx, &mut cst, &crash)).unwrap();
    let cs = &s.container_statuses.as_ref().unwrap()[0];
    eprintln!("crash status: {:?} last {:?} requeue {requeue:?}", cs.state, cs.last_state);
    assert_eq!(waiting_reason(&s).as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap().exit_code, 3);
    assert!(dir.join(format!("default_crash_{cuid}/c/1.log")).exists());

    // Pull failure of an image nobody has.
    let puid = format!("pull-{suffix}");
    let pull = p(serde_json::json!({
        "metadata": {"name": "pull", "uid": puid},
        "spec": {"containers": [{"name": "c", "image": "127.0.0.1:1/nope:1"}]}
    }));
    let mut pst = WorkerState::default();
    let (s, _) = tokio_rt.block_on(sync_pod(&ctx, &mut pst, &pull)).unwrap();
    let w = s.container_statuses.as_ref().unwrap()[0].state.clone().unwrap().waiting.unwrap();
    eprintln!("pull: {:?}: {:?}", w.reason, w.message);
    assert_eq!(w.reason.as_deref(), Some("ErrImagePull"));
    let (s, _) = tokio_rt.block_on(sync_pod(&ctx, &mut pst, &pull)).unwrap();
    assert_eq!(waiting_reason(&s).as_deref(), Some("ImagePullBackOff"));

    // Graceful deletion of web: SIGTERM honoured, sandbox removed, IP released (berth-cni keeps
    // one file per allocated IP under <dataDir>/<network name>/).
    let ip_file = cni_data_dir.join(cni_conf::NETWORK_NAME).join(&ip);
    assert!(ip_file.exists(), "no IPAM record {} for {ip}", ip_file.display());
    let mut deleting = (*web).clone();
    deleting.metadata.deletion_timestamp = Some(now_time());
    deleting.metadata.deletion_grace_period_seconds = Some(3);
    let t = Instant::now();
    tokio_rt.block_on(terminate(&ctx, &uid, Some(&Arc::new(deleting)), true)).unwrap();
    eprintln!("web terminated in {:?}", t.elapsed());
    assert!(tokio_rt.block_on(get_pod_status(&rt, &uid)).unwrap().is_empty());
    assert!(!ip_file.exists(), "IP {ip} still allocated");
    // Orphans (gone from the API) are torn down too.
    tokio_rt.block_on(terminate(&ctx, &cuid, None, false)).unwrap();
    tokio_rt.block_on(terminate(&ctx, &puid, None, false)).unwrap();
    assert!(tokio_rt.block_on(get_pod_status(&rt, &cuid)).unwrap().is_empty());
    let mut reasons = vec![];
    while let Ok(e) = events_rx.try_recv() {
        reasons.push(format!("{}:{}", e.pod.name, e.reason));
    }
    eprintln!("events: {reasons:?}");
}
