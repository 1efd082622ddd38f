//! Control plane: API server, store, scheduler and controllers.
//!
//! [`start`] ensures the cluster PKI and the admin kubeconfig, starts the API server, waits until
//! it answers, then starts the controllers with a `kube::Client` (they use the API only, like
//! kube-scheduler and kube-controller-manager). `berth up` and `berth-control-plane` both use it.
pub mod apiserver;
pub mod auth;
pub mod controllers;
pub mod store;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnetwork::IpNetwork;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pki;

/// How long [`start`] waits for the API server to answer `/version`.
pub const API_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Configuration of the whole control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneConfig {
    /// State directory: `pki/`, `kubeconfigs/`, `store.redb`.
    pub state_dir: PathBuf,
    /// API server listen address (e.g. 0.0.0.0:6443).
    pub listen: SocketAddr,
    /// Address clients use: the admin kubeconfig's server URL, and a SAN of the serving cert.
    pub advertise: IpAddr,
    /// Cluster (pod) CIDR for node IPAM.
    pub cluster_cidr: IpNetwork,
    /// Node CIDR mask size.
    pub node_cidr_prefix: u8,
    /// Service CIDR (its first address is `kubernetes.default`).
    pub service_cidr: IpNetwork,
    /// kube-apiserver's `--encryption-provider-config`: an EncryptionConfiguration file for
    /// encryption at rest (None: values stored as plaintext).
    pub encryption_provider_config: Option<PathBuf>,
}

impl ControlPlaneConfig {
    /// `https://<advertise>:<port>`: the URL in kubeconfigs.
    pub fn server_url(&self) -> String {
        url_for(SocketAddr::new(self.advertise, self.listen.port()))
    }

    /// Where in-process clients connect: the listen address, or loopback if it is unspecified.
    pub fn local_url(&self) -> String {
        let ip = match self.listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        url_for(SocketAddr::new(ip, self.listen.port()))
    }

    /// SANs of the serving certificate beyond the defaults: the advertise address, a specific
    /// listen address, the host name, and the first service IP.
    pub fn apiserver_sans(&self) -> Vec<String> {
        let mut sans = vec![self.advertise.to_string()];
        if !self.listen.ip().is_unspecified() {
            sans.push(self.listen.ip().to_string());
        }
        if let Some(ip) = first_service_ip(self.service_cidr) {
            sans.push(ip.to_string());
        }
        if let Ok(h) = hostname::get() {
            let h = h.to_string_lossy().trim().to_lowercase();
            if !h.is_empty()
                && h.parse::<IpAddr>().is_err()
                && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                sans.push(h);
            }
        }
        sans
    }

    /// `<state>/store.redb`.
    pub fn store_path(&self) -> PathBuf {
        self.state_dir.join("store.redb")
    }
}

fn url_for(addr: SocketAddr) -> String {
    format!("https://{addr}")
}

/// The first usable address of the service CIDR (10.96.0.0/12 -> 10.96.0.1).
pub fn first_service_ip(net: IpNetwork) -> Option<IpAddr> {
    match net {
        IpNetwork::V4(n) => u32::from(n.network()).checked_add(1).map(|v| IpAddr::V4(v.into())),
        IpNetwork::V6(n) => u128::from(n.network()).checked_add(1).map(|v| IpAddr::V6(v.into())),
    }
}

/// A running control plane.
pub struct ControlPlane {
    /// `https://<advertise>:<port>` (as in the admin kubeconfig).
    pub server_url: String,
    /// URL in-process clients use (loopback when listening on all addresses).
    pub local_url: String,
    /// `<state>/kubeconfigs/admin.conf`.
    pub admin_kubeconfig: PathBuf,
    pub pki: pki::ClusterPki,
    /// An admin client for the local API server.
    pub client: kube::Client,
    stop: CancellationToken,
    apiserver: JoinHandle<anyhow::Result<()>>,
    controllers: JoinHandle<anyhow::Result<()>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server_url", &self.server_url)
            .field("local_url", &self.local_url)
            .field("admin_kubeconfig", &self.admin_kubeconfig)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Wait until the control plane stops: after the shutdown token given to [`start`] is
    /// cancelled (Ok), or when the API server or the controllers fail (the other part is then
    /// stopped and the error returned).
    pub async fn wait(self) -> anyhow::Result<()> {
        let ControlPlane {
            stop,
            mut apiserver,
            mut controllers,
            ..
        } = self;
        let (first, api_first) = tokio::select! {
            r = &mut apiserver => (r, true),
            r = &mut controllers => (r, false),
        };
        let name = |api: bool| if api { "API server" } else { "controllers" };
        let first = flatten(first).with_context(|| name(api_first));
        if first.is_err() || !stop.is_cancelled() {
            // One part ended on its own: stop the other one too.
            if first.is_ok() {
                tracing::warn!(part = name(api_first), "control plane part exited; stopping the rest");
            }
            stop.cancel();
        }
        let second = if api_first {
            flatten(controllers.await)
        } else {
            flatten(apiserver.await)
        }
        .with_context(|| name(!api_first));
        first.and(second)
    }

    /// Stop (cancel) the control plane without waiting.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

fn flatten(r: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    r.map_err(|e| anyhow::anyhow!("task failed: {e}"))?
}

/// Start the control plane: PKI, admin kubeconfig, API server (waits until it answers
/// `/version`), controllers. Everything stops when `shutdown` is cancelled.
pub async fn start(cfg: ControlPlaneConfig, shutdown: CancellationToken) -> anyhow::Result<ControlPlane> {
    let pki_dir = pki::pki_dir(&cfg.state_dir);
    let sans = cfg.apiserver_sans();
    let cluster_pki = tokio::task::spawn_blocking(move || pki::ensure_cluster_pki(&pki_dir, &sans))
        .await?
        .context("cluster PKI")?;

    let api_cfg = apiserver::ApiServerConfig {
        listen: cfg.listen,
        tls: pki::server_tls_config(&cluster_pki)?,
        store_path: cfg.store_path(),
        kubelet_tls: pki::kubelet_client_tls_config(&cluster_pki)?,
    };
    let encryption = match &cfg.encryption_provider_config {
        Some(p) => Some(std::sync::Arc::new(
            crate::controlplane::store::encryption::EncryptionConfig::load(p)
                .context("--encryption-provider-config")?,
        )),
        None => None,
    };
    let server = apiserver::bind_with_encryption(api_cfg, encryption)
        .await
        .context("API server")?;
    // With --listen ...:0 the real port is only known now.
    let cfg = ControlPlaneConfig {
        listen: server.local_addr(),
        ..cfg
    };
    let server_url = cfg.server_url();
    let local_url = cfg.local_url();
    let admin_kubeconfig =
        pki::ensure_admin_kubeconfig(&cfg.state_dir, &cluster_pki, &server_url).context("admin kubeconfig")?;

    let stop = shutdown.child_token();
    tracing::info!(listen = %cfg.listen, url = %server_url, "starting API server");
    let mut apiserver = tokio::spawn(server.run(stop.clone()));

    let client = match admin_client(&cluster_pki, &local_url).await {
        Ok(c) => c,
        Err(e) => {
            stop.cancel();
            let _ = apiserver.await;
            return Err(e);
        }
    };
    // Wait for /version, unless the API server dies first.
    let deadline = Instant::now() + API_READY_TIMEOUT;
    loop {
        tokio::select! {
            r = &mut apiserver => {
                stop.cancel();
                return Err(flatten(r).err().unwrap_or_else(|| anyhow::anyhow!("exited during start-up")))
                    .context("API server");
            }
            v = client.apiserver_version() => match v {
                Ok(info) => {
                    tracing::info!(version = %info.git_version, "API server ready");
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "API server not ready yet");
                }
                Err(e) => {
                    stop.cancel();
                    return Err(anyhow::anyhow!(e)).context(format!("API server at {local_url} not ready after {API_READY_TIMEOUT:?}"));
                }
            },
            _ = shutdown.cancelled() => {
                stop.cancel();
                let _ = apiserver.await;
                anyhow::bail!("shut down during start-up");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.cancelled() => {}
        }
    }

    let ctrl_cfg = controllers::ControllersConfig {
        cluster_cidr: cfg.cluster_cidr,
        node_cidr_prefix: cfg.node_cidr_prefix,
        service_cidr: Some(cfg.service_cidr),
        ..Default::default()
    };
    let controllers = tokio::spawn(controllers::run(client.clone(), ctrl_cfg, stop.clone()));
    Ok(ControlPlane {
        server_url,
        local_url,
        admin_kubeconfig,
        pki: cluster_pki,
        client,
        stop,
        apiserver,
        controllers,
    })
}

/// [`start`], then [`ControlPlane::wait`].
pub async fn run(cfg: ControlPlaneConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(cfg, shutdown).await?.wait().await
}

/// A `kube::Client` for `url` with the admin identity (built in memory).
pub async fn admin_client(cluster_pki: &pki::ClusterPki, url: &str) -> anyhow::Result<kube::Client> {
    let text = pki::kubeconfig_json(
        url,
        &cluster_pki.ca.cert_pem,
        &cluster_pki.admin_cert_pem,
        &cluster_pki.admin_key_pem,
        "kubernetes-admin",
        "kubernetes-admin@berth",
    );
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).context("admin kubeconfig")?;
    crate::kubeclient::from_kubeconfig(kubeconfig).await.context("admin client")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(listen: &str, advertise: &str) -> ControlPlaneConfig {
        ControlPlaneConfig {
            state_dir: "/tmp/x".into(),
            listen: listen.parse().unwrap(),
            advertise: advertise.parse().unwrap(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            node_cidr_prefix: 24,
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            encryption_provider_config: None,
        }
    }

    #[test]
    fn urls_and_sans() {
        let c = cfg("0.0.0.0:6443", "192.168.1.10");
        assert_eq!(c.server_url(), "https://192.168.1.10:6443");
        assert_eq!(c.local_url(), "https://127.0.0.1:6443");
        let sans = c.apiserver_sans();
        assert_eq!(sans[0], "192.168.1.10");
        assert!(sans.contains(&"10.96.0.1".to_owned()));
        let c = cfg("127.0.0.2:7443", "127.0.0.2");
        assert_eq!(c.local_url(), "https://127.0.0.2:7443");
        assert!(c.apiserver_sans().contains(&"127.0.0.2".to_owned()));
        let c = cfg("[::]:6443", "fd00::1");
        assert_eq!(c.server_url(), "https://[fd00::1]:6443");
        assert_eq!(c.local_url(), "https://[::1]:6443");
    }

    #[test]
    fn service_ip() {
        assert_eq!(
            first_service_ip("10.96.0.0/12".parse().unwrap()),
            Some("10.96.0.1".parse().unwrap())
        );
        assert_eq!(
            first_service_ip("10.100.5.0/16".parse().unwrap()),
            Some("10.100.0.1".parse().unwrap())
        );
    }

    /// Poll `f` until it yields Some, or panic after `secs`.
    async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The whole control plane in-process on a loopback port: PKI, API server, scheduler and
    /// node IPAM, driven through a kube::Client.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn end_to_end_schedule_and_ipam() {
        use k8s_openapi::api::core::v1::{Node, Pod};
        use kube::api::{Api, PostParams};

        let dir = tempfile::tempdir().unwrap();
        let cfg = ControlPlaneConfig {
            state_dir: dir.path().to_owned(),
            ..cfg("127.0.0.1:0", "127.0.0.1")
        };
        let shutdown = CancellationToken::new();
        let cp = start(cfg, shutdown.clone()).await.unwrap();
        assert!(cp.admin_kubeconfig.exists());
        let client = cp.client.clone();
        let nodes: Api<Node> = Api::all(client.clone());
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

        // A pod before any node: unschedulable, with kube-scheduler's message.
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "web", "image": "busybox",
                "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}}}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"conditions": [{"type": "Ready", "status": "False"}],
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        // First "no nodes available", then, once the node is seen, the not-ready message.
        let want = "0/1 nodes are available: 1 node(s) were not ready.";
        eventually(20, "PodScheduled=False (node not ready)", || async {
            let p = pods.get("web").await.ok()?;
            let c = p.status?.conditions?.into_iter().find(|c| c.type_ == "PodScheduled")?;
            (c.status == "False" && c.reason.as_deref() == Some("Unschedulable") && c.message.as_deref() == Some(want))
                .then_some(())
        })
        .await;

        // IPAM gives the node the first /24.
        let cidr = eventually(20, "podCIDR", || async { nodes.get("n1").await.ok()?.spec?.pod_cidr }).await;
        assert_eq!(cidr, "10.244.0.0/24");

        // Node becomes Ready (status subresource): the pod is bound.
        let patch = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        nodes
            .patch_status(
                "n1",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap();
        let bound = eventually(20, "binding", || async { pods.get("web").await.ok()?.spec?.node_name }).await;
        assert_eq!(bound, "n1");

        // A second node gets the next block.
        let mut n2 = node.clone();
        n2.metadata.name = Some("n2".into());
        nodes.create(&PostParams::default(), &n2).await.unwrap();
        let cidr = eventually(20, "podCIDR n2", || async {
            nodes.get("n2").await.ok()?.spec?.pod_cidr
        })
        .await;
        assert_eq!(cidr, "10.244.1.0/24");

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), cp.wait())
            .await
            .expect("stops in time")
            .unwrap();
    }
}
