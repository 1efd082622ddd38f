//! Pod lifecycle (kubelet's): watch this node's pods, one worker per pod UID converging it through
//! CRI, a 1 s relist (PLEG) waking workers when containers change, one status writer, Events.
//!
//! ```text
//! watcher(spec.nodeName=<node>) ──► dispatcher ──watch chan per uid──► worker: sync_pod / terminate
//!          relist every 1 s ──diff──┘                                     │  (actions: pure)
//!                                                              status writer ◄┘ ──► pods/{name}/status
//! ```
//! Layout: `kuberuntime` (Pod -> CRI configs, pure), `actions` (computePodActions, pure), `state`
//! (runtime view of a pod), `pleg` (relist + pure diff), `status` (pure status + the writer),
//! `backoff`, `events`, `worker`.
//!
//! Restart safety: nothing is keyed by agent memory. A worker reads the runtime by the
//! `io.kubernetes.pod.uid` label and keeps running containers whose spec hash matches; restart
//! counts come from the container annotation. Runtime objects of pods the API no longer has are
//! torn down only after the first full list of pods arrived.
pub mod actions;
pub mod backoff;
pub mod events;
pub mod kuberuntime;
pub mod pleg;
pub mod state;
pub mod status;
pub mod worker;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::agent::AgentConfig;
use crate::cri::{api, CriError, Runtime};
use kuberuntime::{container_config, sandbox_config, PodKey, RuntimeFacts};
use worker::{PodContext, PodUpdate};

/// Host resolv.conf, as the DNS config of pods (no cluster DNS yet).
pub fn host_dns_config(path: &Path) -> api::DnsConfig {
    match std::fs::read_to_string(path) {
        Ok(text) => kuberuntime::parse_resolv_conf(&text),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "reading resolv.conf; pods get no DNS servers");
            api::DnsConfig::default()
        }
    }
}

fn node_memory_bytes() -> Option<i64> {
    use procfs::Current;
    procfs::Meminfo::current().ok().and_then(|m| i64::try_from(m.mem_total).ok())
}

/// Run the pod lifecycle until `shutdown`. Never kills running containers on the way out.
pub async fn run(
    client: kube::Client,
    cri: crate::cri::Cri,
    cfg: Arc<AgentConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(client, cri, cfg, shutdown).await
}

/// [`run`] over any [`Runtime`].
pub async fn run_with<R: Runtime>(
    client: kube::Client,
    rt: R,
    cfg: Arc<AgentConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.pod_log_dir)
        .with_context(|| format!("creating pod log directory {}", cfg.pod_log_dir.display()))?;
    let (status, status_rx) = status::StatusManager::channel();
    let (events, events_rx) = events::Recorder::channel();
    let ctx = Arc::new(PodContext {
        rt: rt.clone(),
        node_name: cfg.node_name.clone(),
        host_ips: vec![cfg.node_ip.to_string()],
        pod_log_dir: cfg.pod_log_dir.clone(),
        host_dns: host_dns_config(Path::new("/etc/resolv.conf")),
        node_memory_bytes: node_memory_bytes(),
        status,
        events,
    });
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(status::run_status_writer(
        client.clone(),
        status_rx,
        shutdown.clone(),
    ));
    tasks.spawn(events::run_recorder(
        client.clone(),
        cfg.node_name.clone(),
        events_rx,
        shutdown.clone(),
    ));
    let (pleg_tx, pleg_rx) = mpsc::channel::<BTreeSet<String>>(4);
    tasks.spawn(relist_loop(rt, pleg_tx, shutdown.clone()));

    let api: Api<Pod> = Api::all(client);
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    let (store, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, wc)).default_backoff();
    tracing::info!(node = %cfg.node_name, "pod lifecycle started");
    dispatch(ctx, stream, store, pleg_rx, shutdown).await;
    tasks.shutdown().await;
    tracing::info!("pod lifecycle stopped");
    Ok(())
}

/// Route pod watch events and relist wake-ups to per-uid workers until `shutdown`; then stop the
/// workers (never the containers).
pub(crate) async fn dispatch<R, S, E>(
    ctx: Arc<PodContext<R>>,
    stream: S,
    store: reflector::Store<Pod>,
    mut pleg_rx: mpsc::Receiver<BTreeSet<String>>,
    shutdown: CancellationToken,
) where
    R: Runtime,
    S: futures::Stream<Item = Result<watcher::Event<Pod>, E>> + Send,
    E: std::fmt::Display,
{
    let mut stream = std::pin::pin!(stream);
    let mut d = Dispatcher {
        ctx,
        workers: HashMap::new(),
        tasks: tokio::task::JoinSet::new(),
        shutdown: shutdown.child_token(),
    };
    let mut synced = false;
    let mut listed: HashSet<String> = HashSet::new();
    let mut deferred: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = stream.next() => match ev {
                None => break,
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch"),
                Some(Ok(watcher::Event::Init)) => listed.clear(),
                Some(Ok(watcher::Event::InitApply(pod))) => {
                    if let Some(uid) = pod.metadata.uid.clone() {
                        listed.insert(uid.clone());
                        d.update(uid, PodUpdate::Sync(Arc::new(pod)));
                    }
                }
                Some(Ok(watcher::Event::Apply(pod))) => {
                    if let Some(uid) = pod.metadata.uid.clone() {
                        d.update(uid, PodUpdate::Sync(Arc::new(pod)));
                    }
                }
                Some(Ok(watcher::Event::Delete(pod))) => {
                    if let Some(uid) = pod.metadata.uid.clone() {
                        d.update(uid, PodUpdate::Gone(Some(Arc::new(pod))));
                    }
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    synced = true;
                    // Pods that vanished while the watch was down.
                    let gone: Vec<String> = d.workers.iter()
                        .filter(|(uid, tx)| !listed.contains(*uid) && !tx.borrow().is_gone())
                        .map(|(uid, _)| uid.clone()).collect();
                    for uid in gone { d.update(uid, PodUpdate::Gone(None)); }
                    for uid in std::mem::take(&mut deferred) { d.wake(&uid, &store); }
                }
            },
            Some(uids) = pleg_rx.recv() => {
                for uid in uids {
                    if synced || d.workers.contains_key(&uid) { d.wake(&uid, &store); } else { deferred.insert(uid); }
                }
                d.reap();
            }
            Some(_) = d.tasks.join_next(), if !d.tasks.is_empty() => {}
        }
    }
    d.shutdown.cancel();
    d.tasks.shutdown().await;
}

struct Dispatcher<R: Runtime> {
    ctx: Arc<PodContext<R>>,
    workers: HashMap<String, watch::Sender<PodUpdate>>,
    tasks: tokio::task::JoinSet<()>,
    shutdown: CancellationToken,
}

impl<R: Runtime> Dispatcher<R> {
    /// Hand the newest state of a pod to its worker, starting one if needed.
    fn update(&mut self, uid: String, pod: PodUpdate) {
        if let Some(tx) = self.workers.get(&uid) {
            if tx.send(pod.clone()).is_ok() {
                return;
            }
        }
        let (tx, rx) = watch::channel(pod);
        self.tasks.spawn(worker::run_worker(
            self.ctx.clone(),
            uid.clone(),
            rx,
            self.shutdown.clone(),
        ));
        self.workers.insert(uid, tx);
    }

    /// The runtime changed for `uid`: wake its worker, or start one (adoption, or teardown of
    /// an orphan the API does not know).
    fn wake(&mut self, uid: &str, store: &reflector::Store<Pod>) {
        if let Some(tx) = self.workers.get(uid) {
            if !tx.is_closed() {
                tx.send_modify(|_| {});
                return;
            }
        }
        let pod = store.find(|p| p.metadata.uid.as_deref() == Some(uid));
        if pod.is_none() {
            tracing::info!(
                uid,
                "runtime holds a pod the API does not know; tearing it down"
            );
        }
        let update = match pod {
            Some(p) => PodUpdate::Sync(Arc::new((*p).clone())),
            None => PodUpdate::Gone(None),
        };
        self.update(uid.to_string(), update);
    }

    /// Forget workers that finished.
    fn reap(&mut self) {
        self.workers.retain(|_, tx| !tx.is_closed());
    }
}

pub(crate) async fn relist_loop<R: Runtime>(
    rt: R,
    tx: mpsc::Sender<BTreeSet<String>>,
    shutdown: CancellationToken,
) {
    let mut prev = pleg::Snapshot::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match pleg::relist(&rt).await {
            Ok(snap) => {
                if failing {
                    tracing::info!("container runtime reachable again");
                    failing = false;
                }
                let uids: BTreeSet<String> = pleg::diff(&prev, &snap)
                    .iter()
                    .map(|e| e.uid().to_string())
                    .collect();
                prev = snap;
                if !uids.is_empty() && tx.send(uids).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "relist failed; retrying every second");
                    failing = true;
                }
            }
        }
    }
}

/// Ids of what [`start_pod_direct`] started.
#[derive(Debug, Clone)]
pub struct DirectPod {
    pub sandbox_id: String,
    pub container_ids: Vec<String>,
}

/// Start a pod's sandbox and containers straight through CRI with the same translation the
/// agent uses, without the API server, workers, events or status (the benchmark's baseline).
/// Images must be present (the image reference is taken from ImageStatus).
pub async fn start_pod_direct<R: Runtime>(
    rt: &R,
    pod: &Pod,
    pod_log_dir: &Path,
    host_dns: &api::DnsConfig,
) -> Result<DirectPod, DirectError> {
    let key = PodKey::of(pod)?;
    let sb_cfg = sandbox_config(pod, &key, 0, pod_log_dir, host_dns);
    let _ = tokio::fs::create_dir_all(&sb_cfg.log_directory).await;
    let sandbox_id = rt.run_pod_sandbox(sb_cfg.clone()).await?;
    let ips = state::sandbox_info(&rt.pod_sandbox_status(&sandbox_id).await?).ips;
    let facts = RuntimeFacts {
        pod_ips: ips,
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    let mut container_ids = Vec::new();
    for c in pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
    {
        let image = c.image.clone().unwrap_or_default();
        let image_ref = rt
            .image_status(&image)
            .await?
            .map(|i| i.id)
            .unwrap_or(image);
        let cfg = container_config(pod, &key, c, 0, &image_ref, &facts)?;
        let id = rt
            .create_container(&sandbox_id, cfg, sb_cfg.clone())
            .await?;
        rt.start_container(&id).await?;
        container_ids.push(id);
    }
    Ok(DirectPod {
        sandbox_id,
        container_ids,
    })
}

/// Stop and remove what [`start_pod_direct`] started.
pub async fn stop_pod_direct<R: Runtime>(rt: &R, p: &DirectPod) -> Result<(), CriError> {
    for id in &p.container_ids {
        rt.stop_container(id, 0).await?;
    }
    rt.stop_pod_sandbox(&p.sandbox_id).await?;
    rt.remove_pod_sandbox(&p.sandbox_id).await
}

#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error(transparent)]
    Config(#[from] kuberuntime::ConfigError),
    #[error(transparent)]
    Cri(#[from] CriError),
}

#[cfg(test)]
mod tests;
