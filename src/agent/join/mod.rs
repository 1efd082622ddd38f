//! `berth join`: make this host a node of an existing (kubeadm) cluster, in place of
//! `kubeadm join` + kubelet.
//!
//! ```text
//! plan (flags/--config, pure) ─► discovery (cluster-info, JWS, CA pin) ─► kubelet-config (bootstrap token)
//!   ─► client CSR (bootstrap token) ─► node kubeconfig (atomic, 0600) ─► serving CSR or self-signed
//!   ─► agent (foreground, with client-certificate rotation) | systemd unit enabled
//! ```
//! Nothing is written before the client certificate is issued, so a failed join leaves no
//! kubeconfig behind and starts no agent.
pub mod bootstrap;
pub mod discovery;
pub mod kubeadm;
pub mod reset;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use k8s_openapi::api::core::v1::ConfigMap;
use tokio_util::sync::CancellationToken;

use crate::agent::AgentConfig;
use bootstrap::CsrKind;
use discovery::ClusterInfo;
use kubeadm::{ClusterKubeletConfig, Discovery, JoinPlan};

pub use kubeadm::JoinFlags;
pub use reset::ResetArgs;

/// The unit `berth join` enables when systemd runs the host, and its settings file.
pub const SYSTEMD_UNIT: &str = "berth-agent.service";
pub const SYSTEMD_ENV_FILE: &str = "/etc/default/berth-agent";

/// `<state>/kubeconfigs/node.conf`: the node's kubeconfig (the systemd unit's KUBECONFIG).
pub fn node_kubeconfig_path(state_dir: &Path) -> PathBuf {
    crate::pki::kubeconfig_dir(state_dir).join("node.conf")
}

/// `<state>/agent`: the agent's own state (kubelet serving certificate in pki/).
pub fn agent_state_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("agent")
}

/// Whether systemd is the init system (sd_booted(3): /run/systemd/system exists).
pub fn systemd_is_pid1() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// What a successful join produced.
#[derive(Debug, Clone)]
pub struct Joined {
    pub server: String,
    pub kubeconfig: PathBuf,
    pub kubelet: ClusterKubeletConfig,
    /// Whether the kubelet-serving CSR was signed (else the agent self-signs).
    pub serving_cert_signed: bool,
}

/// Write the node kubeconfig (cluster from `server`/`ca_pem`, user system:node:<name>) atomically
/// with mode 0600, its directory 0700 (`pki::write_kubeconfig`).
pub fn write_node_kubeconfig(path: &Path, server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str, node_name: &str) -> anyhow::Result<()> {
    let user = bootstrap::node_user(node_name);
    crate::pki::write_kubeconfig(path, server, ca_pem, cert_pem, key_pem, &user, &format!("{user}@kubernetes"))
        .with_context(|| format!("writing {}", path.display()))
}

/// Replace the client certificate and key of an existing node kubeconfig (rotation).
pub fn write_node_kubeconfig_from(path: &Path, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
    let server_ca = crate::agent::server::client_ca_from_kubeconfig(path)?;
    let kc = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let server = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .with_context(|| format!("{} has no server", path.display()))?;
    let user = kc.auth_infos.first().map(|a| a.name.clone()).unwrap_or_default();
    let node_name = user.strip_prefix(bootstrap::NODE_USER_PREFIX).unwrap_or(&user).to_owned();
    write_node_kubeconfig(path, &server, &server_ca, cert_pem, key_pem, &node_name)
}

/// Read the cluster from a --discovery-file kubeconfig: (cluster, a client when the file holds
/// credentials of its own).
async fn file_discovery(path: &Path) -> anyhow::Result<(ClusterInfo, Option<kube::Client>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading --discovery-file {}", path.display()))?;
    let info = discovery::parse_cluster_kubeconfig(&text).with_context(|| format!("--discovery-file {}", path.display()))?;
    let kc = kube::config::Kubeconfig::from_yaml(&text)?;
    let has_creds = kc.auth_infos.iter().filter_map(|a| a.auth_info.as_ref()).any(|u| {
        u.token.is_some() || u.client_certificate_data.is_some() || u.client_certificate.is_some()
    });
    let client = if has_creds { Some(crate::kubeclient::from_kubeconfig(kc).await?) } else { None };
    Ok((info, client))
}

/// kube-system/kubelet-config's clusterDNS and clusterDomain, read with the bootstrap identity
/// (kubeadm grants the bootstrap group get on it). A missing ConfigMap gives the defaults; a 401
/// means the token was refused.
async fn kubelet_config(client: &kube::Client) -> anyhow::Result<ClusterKubeletConfig> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), kubeadm::KUBELET_CONFIG_NAMESPACE);
    match api.get(kubeadm::KUBELET_CONFIG_NAME).await {
        Ok(cm) => {
            let text = cm.data.as_ref().and_then(|d| d.get(kubeadm::KUBELET_CONFIG_KEY)).cloned().unwrap_or_default();
            kubeadm::parse_kubelet_config(&text).map_err(|e| anyhow::anyhow!("kube-system/kubelet-config: {e}"))
        }
        Err(kube::Error::Api(s)) if s.code == 401 => {
            anyhow::bail!("the API server rejected the bootstrap token (401 Unauthorized): the token is wrong or expired")
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 403 => {
            tracing::warn!(code = s.code, "kube-system/kubelet-config not readable; using clusterDomain cluster.local and no cluster DNS");
            Ok(ClusterKubeletConfig { cluster_dns: Vec::new(), cluster_domain: "cluster.local".into(), server_tls_bootstrap: false })
        }
        Err(e) => Err(anyhow::anyhow!("reading kube-system/kubelet-config: {}", discovery::error_chain(&e))),
    }
}

/// Discovery, TLS bootstrap and the serving certificate. Writes the node kubeconfig under
/// `state_dir` only once a client certificate is issued; refuses to run when one exists.
pub async fn join(plan: &JoinPlan, node_name: &str, node_ips: &[IpAddr], state_dir: &Path) -> anyhow::Result<Joined> {
    let kubeconfig = node_kubeconfig_path(state_dir);
    if kubeconfig.exists() {
        anyhow::bail!("{} already exists: this host has joined a cluster; run `berth reset` first", kubeconfig.display());
    }
    let started = std::time::Instant::now();
    let (info, file_client) = match &plan.discovery {
        Discovery::Token { endpoint, token, pins } => {
            if pins.is_empty() {
                tracing::warn!("--discovery-token-unsafe-skip-ca-verification: the cluster CA is not pinned");
            }
            let info = discovery::discover(endpoint, token, pins, plan.discovery_timeout).await?;
            (info, None)
        }
        Discovery::File { path } => file_discovery(path).await?,
    };
    tracing::info!(server = %info.server, elapsed = ?started.elapsed(), "cluster discovered; CA verified");
    let bootstrap_client = match (&plan.tls_bootstrap_token, file_client) {
        (Some(t), _) => discovery::client(&info.server, Some(info.ca_der.clone()), Some(&t.bearer()))?,
        (None, Some(c)) => c,
        (None, None) => return Err(kubeadm::JoinInputError::NoBootstrapToken.into()),
    };
    let kubelet = kubelet_config(&bootstrap_client).await?;
    let (cert, key) =
        bootstrap::request_certificate(&bootstrap_client, CsrKind::Client, node_name, &[], plan.tls_bootstrap_timeout)
            .await
            .context("TLS bootstrap")?;
    write_node_kubeconfig(&kubeconfig, &info.server, &info.ca_pem, &cert, &key, node_name)?;
    tracing::info!(path = %kubeconfig.display(), elapsed = ?started.elapsed(), "node kubeconfig written");

    // The kubelet API's serving certificate: with the cluster's serverTLSBootstrap, signed by the
    // cluster if it approves in time; else self-signed by the agent (kubelet's default).
    let serving_cert_signed = if !kubelet.server_tls_bootstrap {
        tracing::info!("serverTLSBootstrap is off in kube-system/kubelet-config: the kubelet API uses a self-signed certificate");
        false
    } else {
        let node_client = crate::kubeclient::from_file(&kubeconfig).await?;
        let mut sans = vec![node_name.to_owned()];
        sans.extend(node_ips.iter().map(IpAddr::to_string));
        match bootstrap::request_certificate(&node_client, CsrKind::Serving, node_name, &sans, plan.serving_cert_timeout).await {
            Ok((cert, key)) => {
                let dir = agent_state_dir(state_dir).join("pki");
                std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                crate::fsutil::write_atomic(&dir.join("kubelet.key"), key.as_bytes(), 0o600)?;
                crate::fsutil::write_atomic(&dir.join("kubelet.crt"), cert.as_bytes(), 0o644)?;
                true
            }
            Err(e) => {
                tracing::warn!(reason = %e, "no cluster-signed serving certificate; the kubelet API uses a self-signed one");
                false
            }
        }
    };
    Ok(Joined { server: info.server, kubeconfig, kubelet, serving_cert_signed })
}

/// The unit's settings file: the node kubeconfig (overriding the unit's default KUBECONFIG) and
/// the `berth agent` flags that run this node.
pub fn systemd_env_file(kubeconfig: &Path, agent_args: &[String]) -> String {
    let quoted: Vec<String> = agent_args
        .iter()
        .map(|a| if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c)) { a.clone() } else { format!("'{}'", a.replace('\'', "")) })
        .collect();
    format!(
        "# Written by `berth join`; read by {SYSTEMD_UNIT}. `berth reset` removes it.\nKUBECONFIG={}\nBERTH_AGENT_ARGS=\"{}\"\n",
        kubeconfig.display(),
        quoted.join(" ")
    )
}

/// Write the settings file and enable + start the unit (`berth join` on a systemd host).
pub fn enable_systemd_unit(env_file: &Path, kubeconfig: &Path, agent_args: &[String]) -> anyhow::Result<()> {
    if let Some(dir) = env_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::fsutil::write_atomic(env_file, systemd_env_file(kubeconfig, agent_args).as_bytes(), 0o644)
        .with_context(|| format!("writing {}", env_file.display()))?;
    let out = std::process::Command::new("systemctl").args(["enable", "--now", SYSTEMD_UNIT]).output().context("running systemctl")?;
    if !out.status.success() {
        anyhow::bail!("systemctl enable --now {SYSTEMD_UNIT}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Run the agent until `shutdown`; with `rotate`, renew the client certificate when due and
/// restart the agent's parts on the new credentials (running pods are adopted, not restarted).
pub async fn run_agent(cfg: Arc<AgentConfig>, rotate: bool, shutdown: CancellationToken) -> anyhow::Result<()> {
    loop {
        let stop = shutdown.child_token();
        let agent = crate::agent::run(cfg.clone(), stop.clone());
        if !rotate {
            return agent.await;
        }
        let mut agent = std::pin::pin!(agent);
        tokio::select! {
            r = &mut agent => return r,
            rotated = bootstrap::rotate_client_cert_when_due(&cfg.kubeconfig, &cfg.node_name, &shutdown) => {
                match rotated {
                    Ok(true) => {
                        tracing::info!("restarting the agent's API clients on the rotated certificate");
                        stop.cancel();
                        agent.await?;
                        if shutdown.is_cancelled() {
                            return Ok(());
                        }
                    }
                    Ok(false) => return agent.await,
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "client certificate rotation disabled");
                        return agent.await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let s = Path::new("/var/lib/berth");
        assert_eq!(node_kubeconfig_path(s), PathBuf::from("/var/lib/berth/kubeconfigs/node.conf"));
        assert_eq!(agent_state_dir(s), PathBuf::from("/var/lib/berth/agent"));
    }

    #[test]
    fn env_file_quotes_what_needs_it() {
        let t = systemd_env_file(Path::new("/s/kubeconfigs/node.conf"), &["--node-name".into(), "n1".into(), "--node-labels".into(), "a=b c".into()]);
        assert!(t.contains("BERTH_AGENT_ARGS=\"--node-name n1 --node-labels 'a=b c'\""), "{t}");
        assert!(t.contains("\nKUBECONFIG=/s/kubeconfigs/node.conf\n"), "{t}");
    }

    #[test]
    fn kubeconfig_is_written_0600_and_rotated_in_place() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = node_kubeconfig_path(dir.path());
        let ca = crate::pki::CertificateAuthority::generate("kubernetes").unwrap();
        let (cert, key) = crate::pki::issue_client_cert(&ca, "system:node:n1", &["system:nodes"]).unwrap();
        write_node_kubeconfig(&path, "https://10.0.0.1:6443", &ca.cert_pem, &cert, &key, "n1").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(bootstrap::kubeconfig_client_cert(&path).unwrap(), cert);
        let (cert2, key2) = crate::pki::issue_client_cert(&ca, "system:node:n1", &["system:nodes"]).unwrap();
        write_node_kubeconfig_from(&path, &cert2, &key2).unwrap();
        assert_eq!(bootstrap::kubeconfig_client_cert(&path).unwrap(), cert2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("https://10.0.0.1:6443") && text.contains("system:node:n1"));
        assert_eq!(crate::agent::server::client_ca_from_kubeconfig(&path).unwrap(), ca.cert_pem);
    }
}
