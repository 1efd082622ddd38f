//! One worker per pod UID (kubelet's pod_workers + SyncPod + killPod). The worker owns the pod's
//! back-off state and last start failures; `sync_pod` is re-entrant: it reads the runtime, computes
//! the actions (pure), executes them, and hands the recomputed status to the status writer.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::actions::{compute_pod_actions, garbage};
use super::backoff::{go_duration, Backoff};
use super::events::{Recorder, NORMAL, WARNING};
use super::kuberuntime::{
    container_config, container_hash, pod_log_directory, sandbox_config, ConfigError, PodKey,
    RuntimeFacts, DEFAULT_GRACE_SECS,
};
use super::state::{get_pod_status, sandbox_info, CState, PodRuntimeStatus};
use super::status::{compute_pod_status, StatusInput, StatusManager, StatusMsg, Waiting};
use crate::cri::{api, CriError, Runtime};

/// Periodic resync of an idle pod (kubelet's syncFrequency is 1 min).
pub const RESYNC: Duration = Duration::from_secs(60);
/// kubelet's minimumGracePeriodInSeconds.
const MIN_GRACE_SECS: i64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Cri(#[from] CriError),
    #[error("teardown of pod {uid}: {errors}")]
    Teardown { uid: String, errors: String },
}

/// What every worker shares.
#[derive(Debug)]
pub struct PodContext<R> {
    pub rt: R,
    pub node_name: String,
    pub host_ips: Vec<String>,
    pub pod_log_dir: PathBuf,
    pub host_dns: api::DnsConfig,
    pub node_memory_bytes: Option<i64>,
    pub status: StatusManager,
    pub events: Recorder,
}

/// A worker's own memory between syncs.
#[derive(Debug, Default)]
pub struct WorkerState {
    pub backoff: Backoff,
    /// Why containers could not be started in the last sync.
    pub waiting: HashMap<String, Waiting>,
    /// Last pull error per image, for the ImagePullBackOff message.
    pub pull_errors: HashMap<String, String>,
}

pub fn now_ns() -> i64 {
    i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX)
}

fn grace_secs(pod: &Pod) -> i64 {
    let g = pod
        .metadata
        .deletion_grace_period_seconds
        .or(pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(DEFAULT_GRACE_SECS);
    g.max(MIN_GRACE_SECS)
}

/// A container that could not be started this time.
struct Wait {
    reason: &'static str,
    message: String,
    retry_in: Duration,
}

fn pull_policy(c: &Container, image: &str) -> String {
    if let Some(p) = &c.image_pull_policy {
        return p.clone();
    }
    // API defaulting: Always for :latest or untagged, else IfNotPresent.
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent".into()
    } else if !last.contains(':') || last.ends_with(":latest") {
        "Always".into()
    } else {
        "IfNotPresent".into()
    }
}

/// Make the image present according to the pull policy; returns the image reference to run.
async fn ensure_image<R: Runtime>(
    ctx: &PodContext<R>,
    st: &mut WorkerState,
    key: &PodKey,
    c: &Container,
    sb_cfg: &api::PodSandboxConfig,
    now: i64,
) -> Result<String, Wait> {
    let image = c.image.clone().unwrap_or_default();
    if image.is_empty() {
        return Err(Wait {
            reason: "InvalidImageName",
            message: "container has no image".into(),
            retry_in: RESYNC,
        });
    }
    let policy = pull_policy(c, &image);
    let present = match ctx.rt.image_status(&image).await {
        Ok(p) => p,
        Err(e) => {
            ctx.events.container(
                key,
                &c.name,
                WARNING,
                "InspectFailed",
                format!("Failed to inspect image \"{image}\": {}", e.message()),
            );
            return Err(Wait {
                reason: "ImageInspectError",
                message: e.message(),
                retry_in: Duration::from_secs(5),
            });
        }
    };
    if policy != "Always" {
        if let Some(img) = present {
            ctx.events.container(
                key,
                &c.name,
                NORMAL,
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            );
            return Ok(if img.id.is_empty() { image } else { img.id });
        }
        if policy == "Never" {
            let message =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            ctx.events
                .container(key, &c.name, WARNING, "ErrImageNeverPull", message.clone());
            return Err(Wait {
                reason: "ErrImageNeverPull",
                message,
                retry_in: RESYNC,
            });
        }
    }
    let bkey = format!("pull_{}_{image}", key.uid);
    if let Some(left) = st.backoff.remaining_since_update(&bkey, now) {
        let event = format!("Back-off pulling image \"{image}\"");
        ctx.events
            .container(key, &c.name, NORMAL, "BackOff", event.clone());
        let message = match st.pull_errors.get(&image) {
            Some(err) => format!("{event}: ErrImagePull: {err}"),
            None => event,
        };
        return Err(Wait {
            reason: "ImagePullBackOff",
            message,
            retry_in: left,
        });
    }
    ctx.events.container(
        key,
        &c.name,
        NORMAL,
        "Pulling",
        format!("Pulling image \"{image}\""),
    );
    let started = Instant::now();
    match ctx.rt.pull_image(&image, Some(sb_cfg.clone())).await {
        Ok(image_ref) => {
            st.backoff.reset(&bkey);
            st.pull_errors.remove(&image);
            let took = started.elapsed().as_secs_f64();
            ctx.events.container(key, &c.name, NORMAL, "Pulled", format!("Successfully pulled image \"{image}\" in {took:.3}s ({took:.3}s including waiting)"));
            Ok(if image_ref.is_empty() {
                image
            } else {
                image_ref
            })
        }
        Err(e) => {
            st.backoff.next(&bkey, now);
            let message = e.message();
            st.pull_errors.insert(image.clone(), message.clone());
            tracing::warn!(pod = %key.display(), %image, error = %message, "image pull failed");
            ctx.events.container(
                key,
                &c.name,
                WARNING,
                "Failed",
                format!("Failed to pull image \"{image}\": {message}"),
            );
            ctx.events.container(
                key,
                &c.name,
                WARNING,
                "Failed",
                "Error: ErrImagePull".into(),
            );
            // Come back soon so the status moves on to ImagePullBackOff, like kubelet's.
            Err(Wait {
                reason: "ErrImagePull",
                message,
                retry_in: Duration::from_secs(1),
            })
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn start_container<R: Runtime>(
    ctx: &PodContext<R>,
    st: &mut WorkerState,
    pod: &Pod,
    key: &PodKey,
    c: &Container,
    sandbox_id: &str,
    sb_cfg: &api::PodSandboxConfig,
    rs: &PodRuntimeStatus,
    facts: &RuntimeFacts,
    now: i64,
) -> Result<(), Wait> {
    let latest = rs.latest(&c.name);
    // Crash back-off (kubelet's doBackOff), counted from when the last instance finished.
    if let Some(prev) = latest.filter(|p| p.state == CState::Exited) {
        let bkey = format!(
            "{}_{}_{}_{}_{}",
            key.name,
            key.namespace,
            key.uid,
            c.name,
            container_hash(c)
        );
        if let Some(left) = st.backoff.remaining_since(&bkey, prev.finished_at, now) {
            let message = format!(
                "back-off {} restarting failed container={} pod={}",
                go_duration(st.backoff.get(&bkey)),
                c.name,
                key.display()
            );
            ctx.events.container(
                key,
                &c.name,
                WARNING,
                "BackOff",
                format!(
                    "Back-off restarting failed container {} in pod {}",
                    c.name,
                    key.display()
                ),
            );
            return Err(Wait {
                reason: "CrashLoopBackOff",
                message,
                retry_in: left,
            });
        }
        st.backoff.next(&bkey, now);
    }
    let image_ref = ensure_image(ctx, st, key, c, sb_cfg, now).await?;
    let restart_count = latest.map(|l| l.restart_count + 1).unwrap_or(0);
    let ekey = format!("err_{}_{}", key.uid, c.name);
    let fail = |st: &mut WorkerState, reason: &'static str, message: String| {
        ctx.events
            .container(key, &c.name, WARNING, "Failed", format!("Error: {message}"));
        st.backoff.next(&ekey, now);
        Wait {
            reason,
            message,
            retry_in: st.backoff.get(&ekey),
        }
    };
    let config = match container_config(pod, key, c, restart_count, &image_ref, facts) {
        Ok(cfg) => cfg,
        Err(e) => return Err(fail(st, "CreateContainerConfigError", e.to_string())),
    };
    let log_dir = pod_log_directory(&ctx.pod_log_dir, key).join(&c.name);
    if let Err(e) = tokio::fs::create_dir_all(&log_dir).await {
        tracing::warn!(path = %log_dir.display(), error = %e, "creating container log directory");
    }
    let id = match ctx
        .rt
        .create_container(sandbox_id, config, sb_cfg.clone())
        .await
    {
        Ok(id) => id,
        Err(e) => return Err(fail(st, "CreateContainerError", e.message())),
    };
    ctx.events.container(
        key,
        &c.name,
        NORMAL,
        "Created",
        format!("Created container: {}", c.name),
    );
    if let Err(e) = ctx.rt.start_container(&id).await {
        return Err(fail(st, "RunContainerError", e.message()));
    }
    st.backoff.reset(&ekey);
    ctx.events.container(
        key,
        &c.name,
        NORMAL,
        "Started",
        format!("Started container {}", c.name),
    );
    tracing::info!(pod = %key.display(), container = %c.name, id = %id, restart_count, "container started");
    Ok(())
}

/// Stop every live container (in parallel, with the grace period) and every sandbox of the pod.
async fn kill_pod<R: Runtime>(
    ctx: &PodContext<R>,
    key: Option<&PodKey>,
    rs: &PodRuntimeStatus,
    grace: i64,
) -> Vec<CriError> {
    let live = rs.containers.iter().filter(|c| c.state != CState::Exited);
    let stops = live.map(|c| async move {
        if let Some(key) = key {
            ctx.events.container(
                key,
                &c.name,
                NORMAL,
                "Killing",
                format!("Stopping container {}", c.name),
            );
        }
        match ctx.rt.stop_container(&c.id, grace).await {
            Err(e) if !e.is_not_found() => Some(e),
            _ => None,
        }
    });
    let mut errors: Vec<CriError> = futures::future::join_all(stops)
        .await
        .into_iter()
        .flatten()
        .collect();
    for s in &rs.sandboxes {
        if let Err(e) = ctx.rt.stop_pod_sandbox(&s.id).await {
            if !e.is_not_found() {
                errors.push(e);
            }
        }
    }
    errors
}

/// Converge one pod (kubelet's SyncPod). Returns the status it computed and when to come back.
pub async fn sync_pod<R: Runtime>(
    ctx: &PodContext<R>,
    st: &mut WorkerState,
    pod: &Arc<Pod>,
) -> Result<(PodStatus, Option<Duration>), SyncError> {
    let key = PodKey::of(pod)?;
    let now = now_ns();
    let rs = get_pod_status(&ctx.rt, &key.uid).await?;
    let actions = compute_pod_actions(pod, &rs);
    tracing::debug!(pod = %key.display(), ?actions, "sync");
    let mut changed = false;
    let mut requeue: Option<Duration> = None;
    let mut waiting: HashMap<String, Waiting> = HashMap::new();

    let live = rs.sandboxes.iter().any(|s| s.ready)
        || rs.containers.iter().any(|c| c.state != CState::Exited);
    if actions.kill_pod && live {
        changed = true;
        for e in kill_pod(ctx, Some(&key), &rs, grace_secs(pod)).await {
            tracing::warn!(pod = %key.display(), error = %e, "stopping pod");
        }
    }
    for k in &actions.containers_to_kill {
        changed = true;
        ctx.events.container(
            &key,
            &k.name,
            NORMAL,
            "Killing",
            format!("{}, will be restarted", k.reason),
        );
        if let Err(e) = ctx.rt.stop_container(&k.id, grace_secs(pod)).await {
            tracing::warn!(pod = %key.display(), container = %k.name, error = %e, "stopping container");
        }
    }

    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let mut sandbox = if actions.create_sandbox {
        None
    } else {
        actions.sandbox_id.clone()
    };
    let sb_cfg = sandbox_config(pod, &key, actions.attempt, &ctx.pod_log_dir, &ctx.host_dns);
    let mut pod_ips = rs
        .ready_sandbox()
        .map(|s| s.ips.clone())
        .unwrap_or_default();
    if actions.create_sandbox && !actions.containers_to_start.is_empty() {
        changed = true;
        let dir = pod_log_directory(&ctx.pod_log_dir, &key);
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            tracing::warn!(path = %dir.display(), error = %e, "creating pod log directory");
        }
        match ctx.rt.run_pod_sandbox(sb_cfg.clone()).await {
            Ok(id) => {
                tracing::info!(pod = %key.display(), sandbox = %id, attempt = actions.attempt, "sandbox started");
                pod_ips = match ctx.rt.pod_sandbox_status(&id).await {
                    Ok(s) => sandbox_info(&s).ips,
                    Err(_) => vec![],
                };
                st.backoff.reset(&format!("sandbox_{}", key.uid));
                sandbox = Some(id);
            }
            Err(e) => {
                let bkey = format!("sandbox_{}", key.uid);
                st.backoff.next(&bkey, now);
                requeue = Some(st.backoff.get(&bkey));
                tracing::warn!(pod = %key.display(), error = %e, "creating sandbox failed");
                ctx.events.pod(
                    &key,
                    WARNING,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {}", e.message()),
                );
            }
        }
    }

    if let Some(sandbox_id) = sandbox.as_deref() {
        let facts = RuntimeFacts {
            pod_ips,
            host_ips: ctx.host_ips.clone(),
            node_name: ctx.node_name.clone(),
            node_memory_bytes: ctx.node_memory_bytes,
        };
        for &idx in &actions.containers_to_start {
            let c = &containers[idx];
            changed = true;
            if let Err(w) =
                start_container(ctx, st, pod, &key, c, sandbox_id, &sb_cfg, &rs, &facts, now).await
            {
                requeue = Some(requeue.map_or(w.retry_in, |r| r.min(w.retry_in)));
                waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: w.reason.into(),
                        message: w.message,
                    },
                );
            }
        }
    }
    st.waiting = waiting;
    st.backoff.gc(now);

    let rs = if changed {
        get_pod_status(&ctx.rt, &key.uid).await?
    } else {
        rs
    };
    let (dead_containers, dead_sandboxes) = garbage(&rs);
    for id in dead_containers {
        let _ = ctx.rt.remove_container(&id).await;
    }
    for id in dead_sandboxes {
        let _ = ctx.rt.remove_pod_sandbox(&id).await;
    }
    let input = StatusInput {
        waiting: st.waiting.clone(),
        host_ips: ctx.host_ips.clone(),
        terminal: false,
    };
    let status = compute_pod_status(pod, &rs, &input);
    ctx.status.send(StatusMsg::Update {
        key,
        pod: pod.clone(),
        status: Box::new(status.clone()),
    });
    Ok((status, requeue))
}

/// Tear the pod down for good: stop containers (grace period), stop and remove sandboxes (CNI DEL
/// frees the IP). With `pod` (graceful deletion) the final status is written and the pod DELETEd.
pub async fn terminate<R: Runtime>(
    ctx: &PodContext<R>,
    uid: &str,
    pod: Option<&Arc<Pod>>,
    delete_from_api: bool,
) -> Result<(), SyncError> {
    let key = pod.and_then(|p| PodKey::of(p).ok());
    let rs = get_pod_status(&ctx.rt, uid).await?;
    let grace = pod.map(|p| grace_secs(p)).unwrap_or(MIN_GRACE_SECS);
    let mut errors = kill_pod(ctx, key.as_ref(), &rs, grace).await;
    if let (Some(pod), Some(key), true) = (pod, key.as_ref(), delete_from_api) {
        let rs = get_pod_status(&ctx.rt, uid).await.unwrap_or(rs.clone());
        let input = StatusInput {
            waiting: HashMap::new(),
            host_ips: ctx.host_ips.clone(),
            terminal: true,
        };
        let status = compute_pod_status(pod, &rs, &input);
        ctx.status.send(StatusMsg::Update {
            key: key.clone(),
            pod: pod.clone(),
            status: Box::new(status),
        });
    }
    for s in &rs.sandboxes {
        if let Err(e) = ctx.rt.remove_pod_sandbox(&s.id).await {
            if !e.is_not_found() {
                errors.push(e);
            }
        }
    }
    if !errors.is_empty() {
        let errors = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(SyncError::Teardown {
            uid: uid.to_string(),
            errors,
        });
    }
    if !rs.is_empty() {
        tracing::info!(uid, pod = ?key.as_ref().map(|k| k.display()), "pod torn down");
    }
    match (delete_from_api, key) {
        (true, Some(key)) => ctx.status.send(StatusMsg::Delete { key }),
        (false, key) => {
            ctx.status.send(StatusMsg::Forget {
                uid: uid.to_string(),
            });
            if let Some(key) = key {
                let dir = pod_log_directory(&ctx.pod_log_dir, &key);
                let _ = tokio::fs::remove_dir_all(&dir).await;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The newest thing the API says about a pod.
#[derive(Debug, Clone)]
pub enum PodUpdate {
    /// Converge to this (or terminate it, once it has a deletionTimestamp).
    Sync(Arc<Pod>),
    /// Gone from the API (deleted, force-deleted, or unknown to it): tear down, then exit.
    /// Carries the last object when there is one (its grace period applies).
    Gone(Option<Arc<Pod>>),
}

impl PodUpdate {
    pub fn is_gone(&self) -> bool {
        matches!(self, PodUpdate::Gone(_))
    }
}

/// The worker loop: newest update wins (a `watch` channel coalesces), sync, sleep until the next
/// update, relist wake-up (same channel, value unchanged), back-off expiry or resync.
pub async fn run_worker<R: Runtime>(
    ctx: Arc<PodContext<R>>,
    uid: String,
    mut rx: watch::Receiver<PodUpdate>,
    shutdown: CancellationToken,
) {
    let mut st = WorkerState::default();
    let mut last_pod: Option<Arc<Pod>> = None;
    let mut err_wait = Duration::from_secs(1);
    loop {
        let update = rx.borrow_and_update().clone();
        let result = match &update {
            PodUpdate::Sync(pod) if pod.metadata.deletion_timestamp.is_some() => {
                last_pod = Some(pod.clone());
                terminate(&ctx, &uid, Some(pod), true).await.map(|_| None)
            }
            PodUpdate::Sync(pod) => {
                last_pod = Some(pod.clone());
                sync_pod(&ctx, &mut st, pod).await.map(|(_, r)| r)
            }
            PodUpdate::Gone(pod) => {
                let pod = pod.as_ref().or(last_pod.as_ref());
                match terminate(&ctx, &uid, pod, false).await {
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
        };
        let wait = match result {
            Ok(requeue) => {
                err_wait = Duration::from_secs(1);
                requeue.unwrap_or(RESYNC).min(RESYNC)
            }
            Err(e) => {
                tracing::warn!(uid = %uid, error = %e, retry_in = ?err_wait, "pod sync failed");
                let w = err_wait;
                err_wait = (err_wait * 2).min(Duration::from_secs(30));
                w
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
