//! The kubelet API on :10250 (HTTPS, client certificates from the cluster CA required):
//! `/healthz`, `/containerLogs/{ns}/{pod}/{container}`, `/exec/...`, `/attach/...`, `/portForward/...`.
//!
//! Model: kubelet pkg/kubelet/server/server.go. Pods are found through CRI labels (kubelet's pod
//! manager is not consulted: the pods worth reading are the ones the runtime has). Exec, attach and
//! port-forward ask CRI for a streaming URL (containerd's streaming server) and proxy the upgraded
//! connection there with `streamproxy::forward`, like kubelet's `proxyStream`.
//!
//! Authorization: like kubelet's webhook mode, a SubjectAccessReview per user and `nodes/<sub>`
//! attributes, cached (see [`authz`]).
//!
//! Not done: bearer-token authentication (TokenReview), /metrics, /stats, /pods, /run, log
//! rotation while following.
pub mod authz;
pub mod logs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::agent::pods::kuberuntime::{
    container_log_path, pod_log_directory, restart_count, PodKey, LABEL_CONTAINER_NAME, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, LABEL_POD_UID,
};
use crate::agent::AgentConfig;
use crate::cri::{api as cri_api, Cri, CriError, Runtime};
use crate::streamproxy::{self, Body, BoxError};


/// Shared state of the request handlers.
#[derive(Clone)]
struct State {
    cfg: Arc<AgentConfig>,
    cri: Cri,
    shutdown: CancellationToken,
    authz: Arc<authz::Authorizer>,
}

/// Serve the kubelet API on `cfg.kubelet_listen` until `shutdown`.
pub async fn serve(
    cfg: Arc<AgentConfig>,
    cri: Cri,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(cfg.kubelet_listen)
        .await
        .with_context(|| format!("binding the kubelet API to {}", cfg.kubelet_listen))?;
    tracing::info!(addr = %listener.local_addr()?, "kubelet API listening");
    serve_on(listener, cfg, cri, tls, shutdown).await
}

/// Serve on an already bound listener (tests bind port 0).
pub async fn serve_on(
    listener: TcpListener,
    cfg: Arc<AgentConfig>,
    cri: Cri,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // SubjectAccessReviews go to the API server with the agent's own identity.
    let reviewer = match crate::kubeclient::from_file(&cfg.kubeconfig).await {
        Ok(c) => Some(authz::api_reviewer(c)),
        Err(e) => {
            tracing::warn!(error = %e, "kubelet API: no API client; only system:masters users are authorized");
            None
        }
    };
    let authz = Arc::new(authz::Authorizer::new(&cfg.node_name, reviewer));
    let state = State { cfg, cri, shutdown: shutdown.clone(), authz };
    crate::https::serve(listener, tls, shutdown, move |certs| {
        // The TLS config already requires a certificate from the cluster CA: the user is its
        // subject (CN, O + system:authenticated), authorized per request.
        let state = state.clone();
        let user = crate::controlplane::apiserver::auth::user_from_certs(certs);
        move |req| handle(state.clone(), user.clone(), req)
    })
    .await;
    Ok(())
}

/// The cluster CA (PEM) from a kubeconfig's current cluster: `certificate-authority-data`, or the
/// `certificate-authority` file.
pub fn client_ca_from_kubeconfig(path: &Path) -> anyhow::Result<String> {
    use base64::Engine;
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let cluster_name = kc
        .current_context
        .as_ref()
        .and_then(|c| kc.contexts.iter().find(|n| &n.name == c))
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = kc
        .clusters
        .iter()
        .find(|c| cluster_name.as_ref().is_none_or(|n| &c.name == n))
        .and_then(|c| c.cluster.as_ref())
        .with_context(|| format!("no cluster in {}", path.display()))?;
    if let Some(data) = &cluster.certificate_authority_data {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("decoding certificate-authority-data")?;
        return String::from_utf8(pem).context("certificate-authority-data is not PEM");
    }
    if let Some(file) = &cluster.certificate_authority {
        return std::fs::read_to_string(file).with_context(|| format!("reading {file}"));
    }
    anyhow::bail!(
        "{} has no certificate authority for its cluster",
        path.display()
    )
}

/// TLS for the kubelet API: a self-signed serving certificate kept in `<state_dir>/pki/kubelet.{crt,key}`
/// (created on first use, SANs node name + node IP), client certificates required from the CA in
/// the agent's kubeconfig.
pub fn tls_config(cfg: &AgentConfig) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut ips = vec![cfg.node_ip];
    if !cfg.kubelet_listen.ip().is_unspecified() && cfg.kubelet_listen.ip() != cfg.node_ip {
        ips.push(cfg.kubelet_listen.ip());
    }
    let (cert_pem, key_pem) =
        crate::pki::ensure_kubelet_serving_cert(&cfg.state_dir.join("pki"), &cfg.node_name, &ips)?;
    let ca = client_ca_from_kubeconfig(&cfg.kubeconfig)?;
    Ok(crate::pki::kubelet_server_tls_config(&cert_pem, &key_pem, &ca)?)
}

// ---------------------------------------------------------------------------------------------
// Routing.

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(
            Full::new(body.into())
                .map_err(|n| match n {})
                .boxed_unsync(),
        )
        .expect("static response parts")
}

/// A route of the kubelet API. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Healthz,
    ContainerLogs {
        namespace: String,
        pod: String,
        container: String,
    },
    Exec(StreamTarget),
    Attach(StreamTarget),
    PortForward {
        namespace: String,
        pod: String,
        uid: Option<String>,
    },
    NotFound,
}

/// The container a streaming request is for (`/{ns}/{pod}[/{uid}]/{container}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTarget {
    pub namespace: String,
    pub pod: String,
    pub uid: Option<String>,
    pub container: String,
}

fn decode(seg: &str) -> String {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8_lossy()
        .into_owned()
}

/// Match a path to a route. Pure.
pub fn route(path: &str) -> Route {
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let target = |rest: &[&str]| match rest {
        [ns, pod, c] => Some(StreamTarget {
            namespace: ns.to_string(),
            pod: pod.to_string(),
            uid: None,
            container: c.to_string(),
        }),
        [ns, pod, uid, c] => Some(StreamTarget {
            namespace: ns.to_string(),
            pod: pod.to_string(),
            uid: Some(uid.to_string()),
            container: c.to_string(),
        }),
        _ => None,
    };
    match s.as_slice() {
        ["healthz"] => Route::Healthz,
        ["containerLogs", ns, pod, c] => Route::ContainerLogs {
            namespace: ns.to_string(),
            pod: pod.to_string(),
            container: c.to_string(),
        },
        ["exec", rest @ ..] => target(rest).map(Route::Exec).unwrap_or(Route::NotFound),
        ["attach", rest @ ..] => target(rest).map(Route::Attach).unwrap_or(Route::NotFound),
        ["portForward", ns, pod] => Route::PortForward {
            namespace: ns.to_string(),
            pod: pod.to_string(),
            uid: None,
        },
        ["portForward", ns, pod, uid] => Route::PortForward {
            namespace: ns.to_string(),
            pod: pod.to_string(),
            uid: Some(uid.to_string()),
        },
        _ => Route::NotFound,
    }
}

fn query_pairs(req: &http::Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

async fn handle(
    state: State,
    user: Option<crate::controlplane::apiserver::auth::User>,
    req: http::Request<Incoming>,
) -> Response<Body> {
    if let Err(refusal) = state
        .authz
        .authorize(user.as_ref(), req.method().as_str(), req.uri().path())
        .await
    {
        return match refusal {
            authz::Refusal::Unauthorized => full(StatusCode::UNAUTHORIZED, "Unauthorized"),
            authz::Refusal::Forbidden(text) => full(StatusCode::FORBIDDEN, text),
            authz::Refusal::Error(text) => full(StatusCode::INTERNAL_SERVER_ERROR, text),
        };
    }
    let route = route(req.uri().path());
    tracing::debug!(method = %req.method(), path = %req.uri().path(), ?route, "kubelet API request");
    let get_only = matches!(route, Route::Healthz | Route::ContainerLogs { .. });
    if get_only && req.method() != Method::GET && req.method() != Method::HEAD {
        return full(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed");
    }
    match route {
        Route::Healthz => full(StatusCode::OK, "ok"),
        Route::NotFound => full(StatusCode::NOT_FOUND, "404 page not found\n"),
        Route::ContainerLogs {
            namespace,
            pod,
            container,
        } => container_logs(&state, &namespace, &pod, &container, &query_pairs(&req)).await,
        Route::Exec(t) => streaming(&state, req, StreamKind::Exec, t).await,
        Route::Attach(t) => streaming(&state, req, StreamKind::Attach, t).await,
        Route::PortForward {
            namespace,
            pod,
            uid,
        } => {
            let t = StreamTarget {
                namespace,
                pod,
                uid,
                container: String::new(),
            };
            streaming(&state, req, StreamKind::PortForward, t).await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Finding pods and containers through CRI labels.

/// A CRI failure answered like kubelet's `streaming.WriteError`: NotFound -> 404, else 500.
fn cri_error(status: impl Into<tonic::Status>) -> Response<Body> {
    let status = status.into();
    let code = match status.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    full(
        code,
        format!(
            "rpc error: code = {:?} desc = {}",
            status.code(),
            status.message()
        ),
    )
}

/// The pod's newest sandbox (ready ones first), if the runtime knows the pod.
async fn find_sandbox(
    cri: &Cri,
    namespace: &str,
    pod: &str,
    uid: Option<&str>,
) -> Result<Option<cri_api::PodSandbox>, CriError> {
    let mut labels = HashMap::from([
        (LABEL_POD_NAMESPACE.to_owned(), namespace.to_owned()),
        (LABEL_POD_NAME.to_owned(), pod.to_owned()),
    ]);
    if let Some(uid) = uid {
        labels.insert(LABEL_POD_UID.to_owned(), uid.to_owned());
    }
    let mut items = cri.list_pod_sandboxes(labels).await?;
    let ready = cri_api::PodSandboxState::SandboxReady as i32;
    items.sort_by_key(|s| (s.state == ready, s.created_at));
    Ok(items.pop())
}

/// The pod's containers of that name, newest first (restartCount, then creation time).
async fn find_containers(
    cri: &Cri,
    sandbox: &cri_api::PodSandbox,
    container: &str,
) -> Result<Vec<cri_api::Container>, CriError> {
    let mut labels = HashMap::from([(LABEL_CONTAINER_NAME.to_owned(), container.to_owned())]);
    for k in [LABEL_POD_NAMESPACE, LABEL_POD_NAME, LABEL_POD_UID] {
        if let Some(v) = sandbox.labels.get(k) {
            labels.insert(k.to_owned(), v.clone());
        }
    }
    let mut items = cri.list_containers(labels).await?;
    sort_newest_first(&mut items);
    Ok(items)
}

/// Sort containers newest first: by restartCount annotation (or metadata attempt), then creation time.
pub fn sort_newest_first(items: &mut [cri_api::Container]) {
    let key = |c: &cri_api::Container| {
        let restarts = restart_count(&c.annotations, c.metadata.as_ref().map_or(0, |m| m.attempt));
        (restarts, c.created_at)
    };
    items.sort_by_key(|c| std::cmp::Reverse(key(c)));
}

// ---------------------------------------------------------------------------------------------
// Logs.

struct CriRunning {
    cri: Cri,
    id: String,
}

impl logs::ContainerRunning for CriRunning {
    async fn running(&mut self) -> bool {
        self.cri
            .container_status(&self.id)
            .await
            .is_ok_and(|s| s.state == cri_api::ContainerState::ContainerRunning as i32)
    }
}

/// The log file of a container: the absolute log_path from CRI ContainerStatus, or kubelet's
/// layout <pod_log_dir>/<ns>_<pod>_<uid>/<container>/<restartCount>.log.
pub fn log_path(
    pod_log_dir: &Path,
    status_log_path: &str,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
    restart_count: u32,
) -> PathBuf {
    if Path::new(status_log_path).is_absolute() {
        return PathBuf::from(status_log_path);
    }
    let key = PodKey { namespace: namespace.to_owned(), name: pod.to_owned(), uid: uid.to_owned() };
    let dir = pod_log_directory(pod_log_dir, &key);
    if status_log_path.is_empty() {
        dir.join(container_log_path(container, restart_count))
    } else {
        dir.join(status_log_path)
    }
}

async fn container_logs(
    state: &State,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
) -> Response<Body> {
    if pod.is_empty() {
        return full(StatusCode::BAD_REQUEST, r#"{"message": "Missing podID."}"#);
    }
    if container.is_empty() {
        return full(
            StatusCode::BAD_REQUEST,
            r#"{"message": "Missing container name."}"#,
        );
    }
    let opts = match logs::parse_log_options(query, jiff::Timestamp::now()) {
        Ok(o) => o,
        Err(e @ logs::LogQueryError::Decode) => {
            return full(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e @ logs::LogQueryError::Invalid) => {
            return full(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
    };
    let sandbox = match find_sandbox(&state.cri, namespace, pod, None).await {
        Ok(Some(s)) => s,
        Ok(None) => return full(StatusCode::NOT_FOUND, format!("pod {pod:?} does not exist")),
        Err(e) => return cri_error(e),
    };
    let containers = match find_containers(&state.cri, &sandbox, container).await {
        Ok(c) => c,
        Err(e) => return cri_error(e),
    };
    let idx = usize::from(opts.previous);
    let Some(c) = containers.get(idx) else {
        let msg = if opts.previous {
            format!("previous terminated container {container:?} in pod {pod:?} not found")
        } else {
            format!("container {container:?} in pod {pod:?} is waiting to start: ContainerCreating")
        };
        return full(StatusCode::BAD_REQUEST, msg);
    };
    let status = match state.cri.container_status(&c.id).await {
        Ok(s) => s,
        Err(e) => return cri_error(e),
    };
    let uid = sandbox
        .labels
        .get(LABEL_POD_UID)
        .cloned()
        .unwrap_or_default();
    let restarts = restart_count(&c.annotations, c.metadata.as_ref().map_or(0, |m| m.attempt));
    let path = log_path(
        &state.cfg.pod_log_dir,
        &status.log_path,
        namespace,
        pod,
        &uid,
        container,
        restarts,
    );
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            return full(
                StatusCode::BAD_REQUEST,
                format!(
                    "failed to try resolving symlinks in path {:?}: {e}",
                    path.display().to_string()
                ),
            )
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let running = CriRunning {
        cri: state.cri.clone(),
        id: c.id.clone(),
    };
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = logs::stream_file(path.clone(), file, opts, running, tx, shutdown).await {
            tracing::warn!(path = %path.display(), error = %e, "reading container log");
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .expect("static response parts")
}

// ---------------------------------------------------------------------------------------------
// Exec, attach, port-forward.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Exec,
    Attach,
    PortForward,
}

/// Stream options of exec/attach (remotecommand `NewOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOpts {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Parse exec/attach query params (`command`, `input`, `output`, `error`, `tty`; "1" = on) like
/// kubelet's remotecommand `NewOptions`. Pure.
pub fn parse_stream_opts(pairs: &[(String, String)]) -> Result<StreamOpts, String> {
    let flag = |k: &str| pairs.iter().any(|(n, v)| n == k && v == "1");
    let mut o = StreamOpts {
        command: pairs
            .iter()
            .filter(|(n, _)| n == "command")
            .map(|(_, v)| v.clone())
            .collect(),
        stdin: flag("input"),
        stdout: flag("output"),
        stderr: flag("error"),
        tty: flag("tty"),
    };
    if !(o.stdin || o.stdout || o.stderr) {
        return Err("you must specify at least 1 of stdin, stdout, stderr".to_owned());
    }
    if o.tty && o.stderr {
        // kubelet: "Access to exec with tty and stderr is not supported, bypassing stderr"
        o.stderr = false;
    }
    Ok(o)
}

async fn streaming(
    state: &State,
    req: http::Request<Incoming>,
    kind: StreamKind,
    t: StreamTarget,
) -> Response<Body> {
    let pairs = query_pairs(&req);
    let opts = if kind == StreamKind::PortForward {
        StreamOpts::default()
    } else {
        match parse_stream_opts(&pairs) {
            Ok(o) => o,
            Err(e) => return full(StatusCode::BAD_REQUEST, e),
        }
    };
    if kind == StreamKind::Exec && opts.command.is_empty() {
        return full(StatusCode::BAD_REQUEST, "you must specify a command");
    }
    let sandbox = match find_sandbox(&state.cri, &t.namespace, &t.pod, t.uid.as_deref()).await {
        Ok(Some(s)) => s,
        Ok(None) => return full(StatusCode::NOT_FOUND, "pod does not exist"),
        Err(e) => return cri_error(e),
    };
    let mut rt = state.cri.runtime();
    let url = match kind {
        StreamKind::PortForward => {
            let ports = pairs
                .iter()
                .filter(|(n, _)| n == "port")
                .filter_map(|(_, v)| v.parse().ok())
                .collect();
            rt.port_forward(cri_api::PortForwardRequest {
                pod_sandbox_id: sandbox.id.clone(),
                port: ports,
            })
            .await
            .map(|r| r.into_inner().url)
        }
        StreamKind::Exec | StreamKind::Attach => {
            let running = cri_api::ContainerState::ContainerRunning as i32;
            let containers = match find_containers(&state.cri, &sandbox, &t.container).await {
                Ok(c) => c,
                Err(e) => return cri_error(e),
            };
            let Some(c) = containers.into_iter().find(|c| c.state == running) else {
                return full(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("container not found ({:?})", t.container),
                );
            };
            if kind == StreamKind::Exec {
                let r = cri_api::ExecRequest {
                    container_id: c.id,
                    cmd: opts.command,
                    tty: opts.tty,
                    stdin: opts.stdin,
                    stdout: opts.stdout,
                    stderr: opts.stderr,
                };
                rt.exec(r).await.map(|r| r.into_inner().url)
            } else {
                let r = cri_api::AttachRequest {
                    container_id: c.id,
                    stdin: opts.stdin,
                    tty: opts.tty,
                    stdout: opts.stdout,
                    stderr: opts.stderr,
                };
                rt.attach(r).await.map(|r| r.into_inner().url)
            }
        }
    };
    let url = match url {
        Ok(u) => u,
        Err(e) => return cri_error(e),
    };
    let mut target = match url::Url::parse(&url) {
        Ok(u) => u,
        Err(e) => {
            return full(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("runtime returned a bad streaming URL {url:?}: {e}"),
            )
        }
    };
    if !streamproxy::is_upgrade_request(req.headers()) {
        // UpgradeAwareHandler with upgradeRequired=true.
        return full(StatusCode::BAD_REQUEST, "Upgrade request required");
    }
    // UpgradeAwareHandler keeps the request's query on the location.
    target.set_query(req.uri().query());
    match streamproxy::forward(req, target, None).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(error = %e, "proxying a stream to the runtime");
            full(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::pods::kuberuntime::ANN_RESTART_COUNT;

    fn pairs(q: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn routes() {
        assert_eq!(route("/healthz"), Route::Healthz);
        assert_eq!(
            route("/containerLogs/default/web-1/nginx"),
            Route::ContainerLogs {
                namespace: "default".into(),
                pod: "web-1".into(),
                container: "nginx".into()
            }
        );
        assert_eq!(
            route("/exec/ns/p/c"),
            Route::Exec(StreamTarget {
                namespace: "ns".into(),
                pod: "p".into(),
                uid: None,
                container: "c".into()
            })
        );
        assert_eq!(
            route("/attach/ns/p/u-1/c"),
            Route::Attach(StreamTarget {
                namespace: "ns".into(),
                pod: "p".into(),
                uid: Some("u-1".into()),
                container: "c".into()
            })
        );
        assert_eq!(
            route("/portForward/ns/p"),
            Route::PortForward {
                namespace: "ns".into(),
                pod: "p".into(),
                uid: None
            }
        );
        assert_eq!(route("/exec/ns/p"), Route::NotFound);
        assert_eq!(route("/containerLogs/ns/p"), Route::NotFound);
        assert_eq!(route("/"), Route::NotFound);
    }

    #[test]
    fn stream_options() {
        let o = parse_stream_opts(&pairs(
            "command=sh&command=-c&command=echo%20hi&input=1&output=1&error=1&tty=1",
        ))
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && o.tty);
        assert!(!o.stderr, "tty drops stderr like kubelet");
        let o = parse_stream_opts(&pairs("command=ls&output=1&error=1")).unwrap();
        assert!(o.stdout && o.stderr && !o.stdin && !o.tty);
        assert!(parse_stream_opts(&pairs("command=ls&tty=1")).is_err());
        assert!(
            parse_stream_opts(&pairs("command=ls&output=true")).is_err(),
            "only \"1\" turns a stream on"
        );
    }

    fn container(
        id: &str,
        restarts: Option<&str>,
        attempt: u32,
        created: i64,
    ) -> cri_api::Container {
        let mut c = cri_api::Container {
            id: id.into(),
            created_at: created,
            metadata: Some(cri_api::ContainerMetadata {
                name: "c".into(),
                attempt,
            }),
            ..Default::default()
        };
        if let Some(r) = restarts {
            c.annotations
                .insert(ANN_RESTART_COUNT.into(), r.into());
        }
        c
    }

    #[test]
    fn newest_container_first() {
        let mut v = vec![
            container("a", Some("0"), 0, 10),
            container("c", Some("2"), 2, 5),
            container("b", Some("1"), 1, 30),
        ];
        sort_newest_first(&mut v);
        let ids: Vec<_> = v.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        let mut v = vec![
            container("x", None, 0, 1),
            container("y", None, 0, 2),
            container("z", None, 1, 0),
        ];
        sort_newest_first(&mut v);
        let ids: Vec<_> = v.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["z", "y", "x"]);
    }

    #[test]
    fn log_paths() {
        let root = Path::new("/var/log/pods");
        assert_eq!(
            log_path(root, "/abs/0.log", "ns", "p", "u", "c", 0),
            PathBuf::from("/abs/0.log")
        );
        assert_eq!(
            log_path(root, "", "ns", "p", "u", "c", 3),
            PathBuf::from("/var/log/pods/ns_p_u/c/3.log")
        );
        assert_eq!(
            log_path(root, "c/1.log", "ns", "p", "u", "c", 3),
            PathBuf::from("/var/log/pods/ns_p_u/c/1.log")
        );
    }

    #[test]
    fn ca_from_kubeconfig() {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
        let kc = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster:\n    server: https://x\n    certificate-authority: /nonexistent\n\
             - name: berth\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {b64}\n\
             contexts:\n- name: ctx\n  context:\n    cluster: berth\n    user: u\ncurrent-context: ctx\nusers:\n- name: u\n  user: {{}}\n"
        );
        let p = dir.path().join("kc");
        std::fs::write(&p, kc).unwrap();
        assert_eq!(client_ca_from_kubeconfig(&p).unwrap(), pem);
    }
}
