//! kubeadm's side of `join`, as data: the flags (`JoinFlags`), a `JoinConfiguration` file
//! (`--config`, kubeadm.k8s.io/v1beta3 or v1beta4), `--node-labels`, and the cluster's
//! `kube-system/kubelet-config` KubeletConfiguration. All pure.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::discovery::{BootstrapToken, CaPin, DiscoveryError};

/// The ConfigMap kubeadm keeps the cluster-wide KubeletConfiguration in, and its key.
pub const KUBELET_CONFIG_NAMESPACE: &str = "kube-system";
pub const KUBELET_CONFIG_NAME: &str = "kubelet-config";
pub const KUBELET_CONFIG_KEY: &str = "kubelet";

/// Errors in what the user asked for.
#[derive(Debug, thiserror::Error)]
pub enum JoinInputError {
    #[error("--control-plane is not supported: berth joins worker nodes only (use kubeadm join --control-plane on control-plane hosts)")]
    ControlPlane,
    #[error("an API server endpoint (host:port) is required for token discovery")]
    NoEndpoint,
    #[error("--token (or --discovery-token) is required for token discovery")]
    NoToken,
    #[error("using token-based discovery without --discovery-token-ca-cert-hash can be unsafe; set --discovery-token-unsafe-skip-ca-verification to continue anyway")]
    NoCaHash,
    #[error("--discovery-file needs --token (or --tls-bootstrap-token) unless the file holds client credentials")]
    NoBootstrapToken,
    #[error("can not mix '--config' with arguments {0:?}")]
    ConfigMixed(Vec<&'static str>),
    #[error("reading --config {path}: {message}")]
    Config { path: String, message: String },
    #[error("invalid --node-labels {0:?}: {1}")]
    Label(String, String),
    #[error("invalid duration {0:?} (use e.g. 300s, 5m, 1h30m)")]
    Duration(String),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

/// `berth join`'s kubeadm flags (same names and meaning as `kubeadm join`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct JoinFlags {
    /// API server endpoint host:port for token discovery.
    pub endpoint: Option<String>,
    /// Bootstrap token for both discovery and TLS bootstrap (<id>.<secret>).
    #[arg(long)]
    pub token: Option<String>,
    /// Token for discovery only (defaults to --token).
    #[arg(long)]
    pub discovery_token: Option<String>,
    /// Token for the TLS bootstrap only (defaults to --token).
    #[arg(long)]
    pub tls_bootstrap_token: Option<String>,
    /// Pin of the cluster CA: sha256:<hex of the CA's SubjectPublicKeyInfo> (repeatable).
    #[arg(long, value_delimiter = ',')]
    pub discovery_token_ca_cert_hash: Vec<String>,
    /// Join without pinning the CA (token discovery).
    #[arg(long)]
    pub discovery_token_unsafe_skip_ca_verification: bool,
    /// A kubeconfig file to discover the cluster from (file discovery).
    #[arg(long)]
    pub discovery_file: Option<PathBuf>,
    /// Labels to register the Node with (k=v,k2=v2); kubelet's restrictions apply.
    #[arg(long, value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// A kubeadm JoinConfiguration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Refused: berth does not run control-plane components.
    #[arg(long)]
    pub control_plane: bool,
    /// How long discovery may retry (kubeadm's timeouts.discovery).
    #[arg(long, default_value = "5m")]
    pub discovery_timeout: String,
    /// How long to wait for the client certificate (kubeadm's timeouts.tlsBootstrap).
    #[arg(long, default_value = "5m")]
    pub tls_bootstrap_timeout: String,
    /// With the cluster's serverTLSBootstrap: how long to wait for the kubelet-serving certificate
    /// before self-signing one.
    #[arg(long, default_value = "30s")]
    pub serving_cert_timeout: String,
}

/// How the cluster is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    Token { endpoint: String, token: BootstrapToken, pins: Vec<CaPin> },
    File { path: PathBuf },
}

/// A validated join request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinPlan {
    pub discovery: Discovery,
    /// Token for the TLS bootstrap (None: the discovery file holds credentials).
    pub tls_bootstrap_token: Option<BootstrapToken>,
    pub node_name: Option<String>,
    pub cri_socket: Option<PathBuf>,
    pub node_labels: BTreeMap<String, String>,
    pub discovery_timeout: Duration,
    pub tls_bootstrap_timeout: Duration,
    pub serving_cert_timeout: Duration,
}

// The parts of JoinConfiguration berth reads (v1beta3 and v1beta4 agree on these).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinConfiguration {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    discovery: JcDiscovery,
    #[serde(default)]
    node_registration: JcNodeRegistration,
    control_plane: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JcDiscovery {
    bootstrap_token: Option<JcBootstrapToken>,
    file: Option<JcFile>,
    tls_bootstrap_token: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JcBootstrapToken {
    token: Option<String>,
    api_server_endpoint: Option<String>,
    #[serde(default)]
    ca_cert_hashes: Vec<String>,
    #[serde(default)]
    unsafe_skip_ca_verification: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JcFile {
    kube_config_path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JcNodeRegistration {
    name: Option<String>,
    cri_socket: Option<String>,
    /// v1beta3: a map; v1beta4: a list of {name, value}.
    kubelet_extra_args: Option<serde_json::Value>,
}

/// A Go-style duration: "300s", "5m", "1h30m", "1.5s", "250ms"; a bare number is seconds. Pure.
pub fn parse_duration(s: &str) -> Result<Duration, JoinInputError> {
    let err = || JoinInputError::Duration(s.to_owned());
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return (secs >= 0.0).then(|| Duration::from_secs_f64(secs)).ok_or_else(err);
    }
    let mut total = 0f64;
    let mut rest = t;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(err()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

pub use crate::k8s::labels::is_kubelet_label;

/// A label key's syntax: optional DNS prefix + "/" + name of [A-Za-z0-9._-] (63 max, alnum ends).
fn valid_label_name(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// Parse `--node-labels` items (`k=v`), enforcing kubelet's rule that the kubernetes.io and k8s.io
/// namespaces are off limits except for its own labels (`node-role.kubernetes.io/*` included,
/// as kubelet refuses it). Pure.
pub fn parse_node_labels(items: &[String]) -> Result<BTreeMap<String, String>, JoinInputError> {
    let mut out = BTreeMap::new();
    for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| JoinInputError::Label(item.to_owned(), "expected key=value".into()))?;
        let (prefix, name) = match k.split_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k),
        };
        let prefix_ok = prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(valid_dns_label));
        if !prefix_ok || !valid_label_name(name) {
            return Err(JoinInputError::Label(item.to_owned(), format!("{k:?} is not a valid label key")));
        }
        if !v.is_empty() && !valid_label_name(v) {
            return Err(JoinInputError::Label(item.to_owned(), format!("{v:?} is not a valid label value")));
        }
        if !is_kubelet_label(k) {
            return Err(JoinInputError::Label(
                item.to_owned(),
                format!("kubelet may not set {k:?}: labels in the kubernetes.io and k8s.io namespaces are restricted (NodeRestriction); node-role labels are set by an administrator"),
            ));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

fn valid_dns_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && l.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A CRI endpoint as a socket path (`unix:///run/x.sock` or a plain path). Pure.
pub fn cri_socket_path(s: &str) -> PathBuf {
    PathBuf::from(s.strip_prefix("unix://").unwrap_or(s))
}

/// Validate the flags (and the --config document, when given) into a plan. `config_text` is the
/// content of --config. Pure.
pub fn plan(flags: &JoinFlags, config_text: Option<&str>) -> Result<JoinPlan, JoinInputError> {
    if flags.control_plane {
        return Err(JoinInputError::ControlPlane);
    }
    let mut f = flags.clone();
    let mut node_name = None;
    let mut cri_socket = None;
    if let Some(text) = config_text {
        let mixed: Vec<&'static str> = [
            ("token", f.token.is_some()),
            ("discovery-token", f.discovery_token.is_some()),
            ("tls-bootstrap-token", f.tls_bootstrap_token.is_some()),
            ("discovery-token-ca-cert-hash", !f.discovery_token_ca_cert_hash.is_empty()),
            ("discovery-token-unsafe-skip-ca-verification", f.discovery_token_unsafe_skip_ca_verification),
            ("discovery-file", f.discovery_file.is_some()),
            ("node-labels", !f.node_labels.is_empty()),
            ("endpoint", f.endpoint.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect();
        if !mixed.is_empty() {
            return Err(JoinInputError::ConfigMixed(mixed));
        }
        let path = flags.config.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let cfg_err = |message: String| JoinInputError::Config { path: path.clone(), message };
        let jc: JoinConfiguration = serde_saphyr::from_str(text).map_err(|e| cfg_err(e.to_string()))?;
        if jc.kind != "JoinConfiguration" || !jc.api_version.starts_with("kubeadm.k8s.io/") {
            return Err(cfg_err(format!("expected kind JoinConfiguration of kubeadm.k8s.io, got {:?} {:?}", jc.api_version, jc.kind)));
        }
        if jc.control_plane.is_some() {
            return Err(JoinInputError::ControlPlane);
        }
        if let Some(bt) = jc.discovery.bootstrap_token {
            f.endpoint = bt.api_server_endpoint;
            f.discovery_token = bt.token;
            f.discovery_token_ca_cert_hash = bt.ca_cert_hashes;
            f.discovery_token_unsafe_skip_ca_verification = bt.unsafe_skip_ca_verification;
        }
        if let Some(file) = jc.discovery.file {
            f.discovery_file = file.kube_config_path.map(PathBuf::from);
        }
        f.tls_bootstrap_token = jc.discovery.tls_bootstrap_token.or(f.discovery_token.clone());
        if let Some(t) = jc.discovery.timeout {
            f.discovery_timeout = t;
        }
        node_name = jc.node_registration.name;
        cri_socket = jc.node_registration.cri_socket.as_deref().map(cri_socket_path);
        f.node_labels = extra_arg(jc.node_registration.kubelet_extra_args.as_ref(), "node-labels")
            .map(|v| v.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
    }
    let discovery_token = f.discovery_token.clone().or(f.token.clone());
    let tls_token = f.tls_bootstrap_token.clone().or(f.token.clone());
    let discovery = match &f.discovery_file {
        Some(path) => Discovery::File { path: path.clone() },
        None => {
            let endpoint = f.endpoint.clone().filter(|e| !e.is_empty()).ok_or(JoinInputError::NoEndpoint)?;
            let token = BootstrapToken::parse(&discovery_token.ok_or(JoinInputError::NoToken)?)?;
            let pins = f.discovery_token_ca_cert_hash.iter().map(|h| CaPin::parse(h.trim())).collect::<Result<Vec<_>, _>>()?;
            if pins.is_empty() && !f.discovery_token_unsafe_skip_ca_verification {
                return Err(JoinInputError::NoCaHash);
            }
            Discovery::Token { endpoint, token, pins }
        }
    };
    let tls_bootstrap_token = tls_token.as_deref().map(BootstrapToken::parse).transpose()?;
    Ok(JoinPlan {
        discovery,
        tls_bootstrap_token,
        node_name,
        cri_socket,
        node_labels: parse_node_labels(&f.node_labels)?,
        discovery_timeout: parse_duration(&f.discovery_timeout)?,
        tls_bootstrap_timeout: parse_duration(&f.tls_bootstrap_timeout)?,
        serving_cert_timeout: parse_duration(&f.serving_cert_timeout)?,
    })
}

/// A kubelet flag from kubeletExtraArgs: a map (v1beta3) or a list of {name, value} (v1beta4).
fn extra_arg(args: Option<&serde_json::Value>, name: &str) -> Option<String> {
    match args? {
        serde_json::Value::Object(m) => m.get(name)?.as_str().map(str::to_owned),
        serde_json::Value::Array(items) => items
            .iter()
            .find(|i| i["name"].as_str() == Some(name))
            .and_then(|i| i["value"].as_str().map(str::to_owned)),
        _ => None,
    }
}

/// What berth takes from the cluster's KubeletConfiguration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterKubeletConfig {
    pub cluster_dns: Vec<std::net::IpAddr>,
    pub cluster_domain: String,
    /// serverTLSBootstrap: get the kubelet API's serving certificate through a kubelet-serving
    /// CSR (else kubelet self-signs one, kubeadm's default).
    pub server_tls_bootstrap: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfiguration {
    #[serde(default, rename = "clusterDNS")]
    cluster_dns: Vec<String>,
    cluster_domain: Option<String>,
    #[serde(default, rename = "serverTLSBootstrap")]
    server_tls_bootstrap: bool,
}

/// clusterDNS and clusterDomain of a KubeletConfiguration document (domain defaults to
/// cluster.local, kubeadm's default). Pure.
pub fn parse_kubelet_config(text: &str) -> Result<ClusterKubeletConfig, String> {
    let kc: KubeletConfiguration = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    let cluster_dns = kc
        .cluster_dns
        .iter()
        .map(|s| s.parse().map_err(|_| format!("clusterDNS {s:?} is not an IP address")))
        .collect::<Result<_, _>>()?;
    Ok(ClusterKubeletConfig {
        cluster_dns,
        cluster_domain: kc.cluster_domain.filter(|d| !d.is_empty()).unwrap_or_else(|| "cluster.local".into()),
        server_tls_bootstrap: kc.server_tls_bootstrap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "sha256:0ba6fbe1fb6c4c7d2a6a9fc2a97e0e8d0dd4a4b2d3ef9d1b3fd4c5f1e2a3b4c5";

    fn flags() -> JoinFlags {
        JoinFlags {
            endpoint: Some("10.99.0.2:6443".into()),
            token: Some("abcdef.0123456789abcdef".into()),
            discovery_token_ca_cert_hash: vec![HASH.into()],
            discovery_timeout: "5m".into(),
            tls_bootstrap_timeout: "5m".into(),
            serving_cert_timeout: "30s".into(),
            ..Default::default()
        }
    }

    #[test]
    fn token_discovery_plan() {
        let p = plan(&flags(), None).unwrap();
        let Discovery::Token { endpoint, token, pins } = &p.discovery else { panic!("{p:?}") };
        assert_eq!(endpoint, "10.99.0.2:6443");
        assert_eq!(token.id, "abcdef");
        assert_eq!(pins[0].to_string(), HASH);
        assert_eq!(p.tls_bootstrap_token.as_ref().unwrap().id, "abcdef");
        assert_eq!(p.discovery_timeout, Duration::from_secs(300));
        assert_eq!(p.serving_cert_timeout, Duration::from_secs(30));
    }

    #[test]
    fn kubeadm_refusals() {
        let mut f = flags();
        f.control_plane = true;
        assert!(matches!(plan(&f, None), Err(JoinInputError::ControlPlane)));
        assert!(plan(&f, None).unwrap_err().to_string().contains("--control-plane is not supported"));
        let mut f = flags();
        f.discovery_token_ca_cert_hash.clear();
        assert!(matches!(plan(&f, None), Err(JoinInputError::NoCaHash)));
        f.discovery_token_unsafe_skip_ca_verification = true;
        let p = plan(&f, None).unwrap();
        assert!(matches!(p.discovery, Discovery::Token { ref pins, .. } if pins.is_empty()));
        let mut f = flags();
        f.token = None;
        assert!(matches!(plan(&f, None), Err(JoinInputError::NoToken)));
        let mut f = flags();
        f.endpoint = None;
        assert!(matches!(plan(&f, None), Err(JoinInputError::NoEndpoint)));
        let mut f = flags();
        f.token = Some("bad".into());
        assert!(matches!(plan(&f, None), Err(JoinInputError::Discovery(DiscoveryError::TokenFormat(_)))));
        let mut f = flags();
        f.discovery_token_ca_cert_hash = vec!["md5:00".into()];
        assert!(matches!(plan(&f, None), Err(JoinInputError::Discovery(DiscoveryError::HashFormat(_)))));
    }

    #[test]
    fn separate_tokens_and_file_discovery() {
        let mut f = flags();
        f.token = None;
        f.discovery_token = Some("aaaaaa.0123456789abcdef".into());
        f.tls_bootstrap_token = Some("bbbbbb.0123456789abcdef".into());
        let p = plan(&f, None).unwrap();
        assert!(matches!(&p.discovery, Discovery::Token { token, .. } if token.id == "aaaaaa"));
        assert_eq!(p.tls_bootstrap_token.unwrap().id, "bbbbbb");
        let f = JoinFlags { discovery_file: Some("/etc/berth/discovery.conf".into()), ..JoinFlags { endpoint: None, token: None, ..flags() } };
        let p = plan(&f, None).unwrap();
        assert_eq!(p.discovery, Discovery::File { path: "/etc/berth/discovery.conf".into() });
        assert!(p.tls_bootstrap_token.is_none());
    }

    #[test]
    fn join_configuration_file() {
        let text = format!(
            r#"
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: 10.99.0.2:6443
    token: abcdef.0123456789abcdef
    caCertHashes:
    - {HASH}
  timeout: 2m
nodeRegistration:
  name: worker-1
  criSocket: unix:///run/containerd/containerd.sock
  kubeletExtraArgs:
  - name: node-labels
    value: tier=web,topology.kubernetes.io/zone=a
"#
        );
        let base = JoinFlags { config: Some("/tmp/join.yaml".into()), ..JoinFlags { endpoint: None, token: None, discovery_token_ca_cert_hash: vec![], ..flags() } };
        let p = plan(&base, Some(&text)).unwrap();
        assert!(matches!(&p.discovery, Discovery::Token { endpoint, pins, .. } if endpoint == "10.99.0.2:6443" && pins.len() == 1));
        assert_eq!(p.node_name.as_deref(), Some("worker-1"));
        assert_eq!(p.cri_socket, Some(PathBuf::from("/run/containerd/containerd.sock")));
        assert_eq!(p.node_labels["tier"], "web");
        assert_eq!(p.discovery_timeout, Duration::from_secs(120));
        assert_eq!(p.tls_bootstrap_token.unwrap().id, "abcdef");
        // v1beta3's map form of kubeletExtraArgs.
        let v3 = text.replace("v1beta4", "v1beta3").replace(
            "  kubeletExtraArgs:\n  - name: node-labels\n    value: tier=web,topology.kubernetes.io/zone=a\n",
            "  kubeletExtraArgs:\n    node-labels: tier=db\n",
        );
        assert_eq!(plan(&base, Some(&v3)).unwrap().node_labels["tier"], "db");
        // Mixing with discovery flags, a control-plane section, another kind.
        let mixed = JoinFlags { token: Some("abcdef.0123456789abcdef".into()), ..base.clone() };
        assert!(matches!(plan(&mixed, Some(&text)), Err(JoinInputError::ConfigMixed(v)) if v == ["token"]));
        let cp = format!("{text}controlPlane:\n  localAPIEndpoint:\n    advertiseAddress: 10.0.0.1\n");
        assert!(matches!(plan(&base, Some(&cp)), Err(JoinInputError::ControlPlane)));
        let init = text.replace("JoinConfiguration", "InitConfiguration");
        assert!(matches!(plan(&base, Some(&init)), Err(JoinInputError::Config { .. })));
    }

    #[test]
    fn node_labels_follow_kubelet_rules() {
        let l = parse_node_labels(&["tier=web".into(), "example.com/rack=r1".into(), "node.kubernetes.io/pool=a".into(), "topology.kubernetes.io/zone=z".into(), "empty=".into()]).unwrap();
        assert_eq!(l.len(), 5);
        assert_eq!(l["example.com/rack"], "r1");
        for bad in ["node-role.kubernetes.io/worker=", "kubernetes.io/foo=bar", "foo.k8s.io/x=y", "noequals", "bad key=v", "k=bad value", "-x=y"] {
            assert!(matches!(parse_node_labels(&[bad.into()]), Err(JoinInputError::Label(..))), "{bad}");
        }
        assert!(is_kubelet_label("kubelet.kubernetes.io/x"));
        assert!(is_kubelet_label("kubernetes.io/hostname"));
        assert!(!is_kubelet_label("node-role.kubernetes.io/control-plane"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        for bad in ["", "5x", "m", "-3", "5m3"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kubelet_configuration() {
        let text = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nclusterDNS:\n- 10.96.0.10\nclusterDomain: cluster.local\ncgroupDriver: systemd\n";
        let c = parse_kubelet_config(text).unwrap();
        assert_eq!(c.cluster_dns, ["10.96.0.10".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(c.cluster_domain, "cluster.local");
        assert!(!c.server_tls_bootstrap);
        assert!(parse_kubelet_config(&format!("{text}serverTLSBootstrap: true\n")).unwrap().server_tls_bootstrap);
        let c = parse_kubelet_config("kind: KubeletConfiguration\n").unwrap();
        assert!(c.cluster_dns.is_empty());
        assert_eq!(c.cluster_domain, "cluster.local");
        assert!(parse_kubelet_config("clusterDNS:\n- not-an-ip\n").is_err());
        assert_eq!(cri_socket_path("unix:///run/containerd/containerd.sock"), PathBuf::from("/run/containerd/containerd.sock"));
        assert_eq!(cri_socket_path("/run/c.sock"), PathBuf::from("/run/c.sock"));
    }
}
