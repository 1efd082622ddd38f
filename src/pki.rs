//! Cluster PKI: one CA, the API server's serving and kubelet-client certificates, client
//! certificates for users and nodes, kubeconfig files, and the rustls configurations built from
//! them.
//!
//! Layout (kubeadm's names): `<state>/pki/{ca,apiserver,apiserver-kubelet-client,admin}.{crt,key}`
//! and `<state>/kubeconfigs/{admin,node-<name>}.conf`. Keys are ECDSA P-256 (PKCS#8), files with
//! keys are written 0600 via a temporary file and a rename. Everything is create-or-load: the CA is
//! never rotated; leaf certificates are re-issued when they no longer verify against the CA, expire
//! within [`RENEW_BEFORE`], or (serving certificate) no longer cover the wanted SANs.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// CA lifetime (kubeadm: 10 years).
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaf certificate lifetime (kubeadm: 1 year).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A leaf certificate that expires sooner than this is re-issued on load.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Backdating of `notBefore`, for clocks that are a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Names the API server's serving certificate always carries (kubeadm's defaults) besides the
/// caller's and the first service IP.
pub const DEFAULT_APISERVER_SANS: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "10.96.0.1",
];

/// Cluster name written into kubeconfigs.
pub const KUBECONFIG_CLUSTER_NAME: &str = "berth";

/// Errors of this module; every variant names what it acted on.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{what}: {source}")]
    Rcgen { what: String, source: rcgen::Error },
    #[error("{what}: no PEM {kind} found")]
    Pem { what: String, kind: &'static str },
    #[error("{what}: {source}")]
    Tls { what: String, source: rustls::Error },
    #[error("{what}: {source}")]
    Verifier {
        what: String,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("{path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("invalid name {name:?}: {message}")]
    InvalidName { name: String, message: String },
}

type Result<T, E = PkiError> = std::result::Result<T, E>;

/// The cluster CA: certificate and private key, PEM.
#[derive(Clone)]
pub struct CertificateAuthority {
    pub cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Generate a new self-signed CA (CN=kubernetes, like kubeadm's).
    pub fn generate(common_name: &str) -> Result<Self> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        set_validity(&mut params, CA_VALIDITY);
        let key = KeyPair::generate().map_err(rc("generate CA key"))?;
        let cert = params.self_signed(&key).map_err(rc("self-sign CA"))?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Load from PEM strings (checks that the key parses and the certificate is a usable issuer).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let ca = Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        };
        ca.issuer()?;
        Ok(ca)
    }

    /// The CA's private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(rc("parse CA key"))?;
        Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(rc("parse CA certificate"))
    }

    /// DER of the CA certificate.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>> {
        first_cert(&self.cert_pem, "CA certificate")
    }

    fn roots(&self) -> Result<Arc<RootCertStore>> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert_der()?).map_err(tls("add CA to root store"))?;
        Ok(Arc::new(roots))
    }

    /// Issue a leaf certificate for `spec`, returning (cert PEM, key PEM).
    pub fn issue(&self, spec: &LeafSpec) -> Result<(String, String)> {
        let issuer = self.issuer()?;
        let params = spec.params()?;
        let key = KeyPair::generate().map_err(rc("generate key"))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(rc(format!("sign certificate for {}", spec.common_name)))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// What a leaf certificate says about its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    pub common_name: String,
    pub organizations: Vec<String>,
    /// DNS names and IP addresses (as text).
    pub sans: Vec<String>,
    pub server_auth: bool,
    pub client_auth: bool,
}

impl LeafSpec {
    /// A client certificate (clientAuth) for user `cn` in groups `orgs`.
    pub fn client(cn: &str, orgs: &[&str]) -> Self {
        Self {
            common_name: cn.to_owned(),
            organizations: orgs.iter().map(|o| (*o).to_owned()).collect(),
            sans: Vec::new(),
            server_auth: false,
            client_auth: true,
        }
    }

    /// A serving certificate (serverAuth) for `sans`.
    pub fn server(cn: &str, sans: Vec<String>) -> Self {
        Self {
            common_name: cn.to_owned(),
            organizations: Vec::new(),
            sans,
            server_auth: true,
            client_auth: false,
        }
    }

    fn params(&self) -> Result<CertificateParams> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = self.sans.iter().map(|s| san(s)).collect::<Result<_>>()?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        for o in &self.organizations {
            params.distinguished_name.push(DnType::OrganizationName, o.as_str());
        }
        params
            .distinguished_name
            .push(DnType::CommonName, self.common_name.as_str());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        if self.server_auth {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if self.client_auth {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, LEAF_VALIDITY);
        Ok(params)
    }
}

fn san(s: &str) -> Result<SanType> {
    match s.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => Ok(SanType::DnsName(s.to_owned().try_into().map_err(
            |e: rcgen::Error| PkiError::InvalidName {
                name: s.to_owned(),
                message: e.to_string(),
            },
        )?)),
    }
}

/// Everything `ensure_cluster_pki` created or loaded.
#[derive(Clone)]
pub struct ClusterPki {
    pub dir: PathBuf,
    pub ca: CertificateAuthority,
    pub apiserver_cert_pem: String,
    pub apiserver_key_pem: String,
    pub apiserver_kubelet_client_cert_pem: String,
    pub apiserver_kubelet_client_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// The SANs of the serving certificate (deduplicated, in order).
    pub apiserver_sans: Vec<String>,
}

impl std::fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPki")
            .field("dir", &self.dir)
            .field("apiserver_sans", &self.apiserver_sans)
            .finish_non_exhaustive()
    }
}

/// `<state_dir>/pki`.
pub fn pki_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("pki")
}

/// `<state_dir>/kubeconfigs`.
pub fn kubeconfig_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("kubeconfigs")
}

/// `<state_dir>/kubeconfigs/admin.conf`.
pub fn admin_kubeconfig_path(state_dir: &Path) -> PathBuf {
    kubeconfig_dir(state_dir).join("admin.conf")
}

/// `<state_dir>/kubeconfigs/node-<name>.conf`.
pub fn node_kubeconfig_path(state_dir: &Path, node_name: &str) -> PathBuf {
    kubeconfig_dir(state_dir).join(format!("node-{node_name}.conf"))
}

/// The API server's SANs: `extra` first, then [`DEFAULT_APISERVER_SANS`], deduplicated.
pub fn apiserver_sans(extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in extra
        .iter()
        .map(String::as_str)
        .chain(DEFAULT_APISERVER_SANS.iter().copied())
    {
        let s = s.trim();
        if !s.is_empty() && !out.iter().any(|o| o.eq_ignore_ascii_case(s)) {
            out.push(s.to_owned());
        }
    }
    out
}

/// Create or load the cluster PKI in `pki_dir`. Idempotent: an existing CA is always kept; leaf
/// certificates are kept while they verify against the CA, are not about to expire and (serving
/// certificate) cover every wanted SAN.
pub fn ensure_cluster_pki(pki_dir: &Path, sans: &[String]) -> Result<ClusterPki> {
    create_dir(pki_dir)?;
    fix_key_modes(pki_dir)?;
    let ca_crt = pki_dir.join("ca.crt");
    let ca_key = pki_dir.join("ca.key");
    let ca = if ca_crt.exists() && ca_key.exists() {
        let ca = CertificateAuthority::from_pem(&read(&ca_crt)?, &read(&ca_key)?)?;
        tracing::debug!(path = %ca_crt.display(), "loaded cluster CA");
        ca
    } else if ca_crt.exists() || ca_key.exists() {
        return Err(PkiError::Io {
            path: ca_crt,
            source: std::io::Error::other("only one of ca.crt / ca.key exists; refusing to replace the CA"),
        });
    } else {
        let ca = CertificateAuthority::generate("kubernetes")?;
        write_file(&ca_key, ca.key_pem.as_bytes(), 0o600)?;
        write_file(&ca_crt, ca.cert_pem.as_bytes(), 0o644)?;
        tracing::info!(path = %ca_crt.display(), "generated cluster CA");
        ca
    };

    let sans = apiserver_sans(sans);
    let (apiserver_cert_pem, apiserver_key_pem) = ensure_leaf(
        &ca,
        pki_dir,
        "apiserver",
        &LeafSpec::server("kube-apiserver", sans.clone()),
        |cert| serving_cert_valid(&ca, cert, &sans),
    )?;
    let kubelet_client_spec = LeafSpec::client("kube-apiserver-kubelet-client", &["system:masters"]);
    let (kc_cert, kc_key) = ensure_leaf(&ca, pki_dir, "apiserver-kubelet-client", &kubelet_client_spec, |cert| {
        client_cert_valid(&ca, cert)
    })?;
    let admin_spec = LeafSpec::client("kubernetes-admin", &["system:masters"]);
    let (admin_cert, admin_key) = ensure_leaf(&ca, pki_dir, "admin", &admin_spec, |cert| client_cert_valid(&ca, cert))?;

    Ok(ClusterPki {
        dir: pki_dir.to_owned(),
        ca,
        apiserver_cert_pem,
        apiserver_key_pem,
        apiserver_kubelet_client_cert_pem: kc_cert,
        apiserver_kubelet_client_key_pem: kc_key,
        admin_cert_pem: admin_cert,
        admin_key_pem: admin_key,
        apiserver_sans: sans,
    })
}

/// Load `<name>.crt/.key` if `valid(cert)` and the key parses, else issue and write new ones.
fn ensure_leaf(
    ca: &CertificateAuthority,
    dir: &Path,
    name: &str,
    spec: &LeafSpec,
    valid: impl Fn(&str) -> bool,
) -> Result<(String, String)> {
    let crt = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    if crt.exists() && key.exists() {
        let cert_pem = read(&crt)?;
        let key_pem = read(&key)?;
        if valid(&cert_pem) && KeyPair::from_pem(&key_pem).is_ok() && cert_matches_key(&cert_pem, &key_pem) {
            return Ok((cert_pem, key_pem));
        }
        tracing::info!(cert = %crt.display(), "certificate invalid, expiring or with other names; re-issuing");
    }
    let (cert_pem, key_pem) = ca.issue(spec)?;
    write_file(&key, key_pem.as_bytes(), 0o600)?;
    write_file(&crt, cert_pem.as_bytes(), 0o644)?;
    tracing::info!(cert = %crt.display(), cn = %spec.common_name, "issued certificate");
    Ok((cert_pem, key_pem))
}

/// Whether the certificate's public key is the key's (so a half-written pair is not used).
fn cert_matches_key(cert_pem: &str, key_pem: &str) -> bool {
    let Ok(key) = KeyPair::from_pem(key_pem) else {
        return false;
    };
    let Ok(der) = first_cert(cert_pem, "certificate") else {
        return false;
    };
    // The SubjectPublicKeyInfo's bit string ends with the raw public key.
    let raw = key.public_key_raw();
    der.as_ref().windows(raw.len()).any(|w| w == raw)
}

/// "now + RENEW_BEFORE" for verifiers: a certificate must still be valid then.
fn renew_horizon() -> UnixTime {
    UnixTime::since_unix_epoch(unix_now() + RENEW_BEFORE)
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies against `ca` for clientAuth, valid through the renewal horizon.
fn client_cert_valid(ca: &CertificateAuthority, cert_pem: &str) -> bool {
    let check = || -> Result<()> {
        let verifier = WebPkiClientVerifier::builder_with_provider(ca.roots()?, ring())
            .build()
            .map_err(|source| PkiError::Verifier {
                what: "client verifier".into(),
                source,
            })?;
        let chain = certs(cert_pem, "certificate")?;
        verifier
            .verify_client_cert(&chain[0], &chain[1..], renew_horizon())
            .map_err(tls("verify"))?;
        Ok(())
    };
    check().is_ok()
}

/// Verifies against `ca` for serverAuth for every name in `sans`, through the renewal horizon.
fn serving_cert_valid(ca: &CertificateAuthority, cert_pem: &str, sans: &[String]) -> bool {
    let check = || -> Result<()> {
        let verifier = WebPkiServerVerifier::builder_with_provider(ca.roots()?, ring())
            .build()
            .map_err(|source| PkiError::Verifier {
                what: "server verifier".into(),
                source,
            })?;
        let chain = certs(cert_pem, "certificate")?;
        for name in sans {
            let server_name = ServerName::try_from(name.as_str()).map_err(|e| PkiError::InvalidName {
                name: name.clone(),
                message: e.to_string(),
            })?;
            verifier
                .verify_server_cert(&chain[0], &chain[1..], &server_name, &[], renew_horizon())
                .map_err(tls(format!("verify for {name}")))?;
        }
        Ok(())
    };
    match check() {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "existing serving certificate not usable");
            false
        }
    }
}

/// Issue a client certificate for user `cn` in groups `orgs`: (cert PEM, key PEM).
pub fn issue_client_cert(ca: &CertificateAuthority, cn: &str, orgs: &[&str]) -> Result<(String, String)> {
    ca.issue(&LeafSpec::client(cn, orgs))
}

/// Write a kubeconfig (JSON, which kubectl and kube-rs read as YAML) with one cluster
/// ([`KUBECONFIG_CLUSTER_NAME`]), one user and one context, mode 0600.
pub fn write_kubeconfig(
    path: &Path,
    server_url: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    user: &str,
    context: &str,
) -> Result<()> {
    let text = kubeconfig_json(server_url, ca_pem, cert_pem, key_pem, user, context);
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    write_file(path, text.as_bytes(), 0o600)
}

/// The kubeconfig document (pure).
pub fn kubeconfig_json(
    server_url: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    user: &str,
    context: &str,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{
            "name": KUBECONFIG_CLUSTER_NAME,
            "cluster": { "server": server_url, "certificate-authority-data": b64(ca_pem) }
        }],
        "users": [{
            "name": user,
            "user": { "client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem) }
        }],
        "contexts": [{
            "name": context,
            "context": { "cluster": KUBECONFIG_CLUSTER_NAME, "user": user }
        }],
        "current-context": context,
    });
    let mut s = serde_json::to_string_pretty(&doc).expect("kubeconfig serializes");
    s.push('\n');
    s
}

/// Whether the kubeconfig at `path` points at `server_url`, trusts `ca` and holds a client
/// certificate for `cn` (checked loosely: the CN bytes appear in it) that `ca` signed.
fn kubeconfig_current(path: &Path, server_url: &str, ca: &CertificateAuthority, cn: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    let cluster = &doc["clusters"][0]["cluster"];
    if cluster["server"].as_str() != Some(server_url) {
        return false;
    }
    let dec = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .and_then(|b| String::from_utf8(b).ok())
    };
    let (Some(ca_pem), Some(cert), Some(key)) = (
        dec(&cluster["certificate-authority-data"]),
        dec(&doc["users"][0]["user"]["client-certificate-data"]),
        dec(&doc["users"][0]["user"]["client-key-data"]),
    ) else {
        return false;
    };
    let same_ca = matches!((first_cert(&ca_pem, "ca"), ca.cert_der()), (Ok(a), Ok(b)) if a == b);
    let has_cn = first_cert(&cert, "cert").is_ok_and(|d| contains(d.as_ref(), cn.as_bytes()));
    same_ca && has_cn && client_cert_valid(ca, &cert) && cert_matches_key(&cert, &key)
}

/// Write `<state>/kubeconfigs/admin.conf` for the cluster admin (re-using the admin certificate
/// from `pki`), unless an equivalent one is there. Returns its path.
pub fn ensure_admin_kubeconfig(state_dir: &Path, pki: &ClusterPki, server_url: &str) -> Result<PathBuf> {
    let path = admin_kubeconfig_path(state_dir);
    let current = kubeconfig_current(&path, server_url, &pki.ca, "kubernetes-admin")
        && std::fs::read_to_string(&path).is_ok_and(|t| {
            t.contains(&base64::engine::general_purpose::STANDARD.encode(pki.admin_cert_pem.as_bytes()))
        });
    if !current {
        write_kubeconfig(
            &path,
            server_url,
            &pki.ca.cert_pem,
            &pki.admin_cert_pem,
            &pki.admin_key_pem,
            "kubernetes-admin",
            "kubernetes-admin@berth",
        )?;
        tracing::info!(path = %path.display(), "wrote admin kubeconfig");
    }
    Ok(path)
}

/// Write `<state>/kubeconfigs/node-<name>.conf` with a client certificate for
/// `system:node:<name>` in `system:nodes`, signed by the CA in `<state>/pki` (which must exist),
/// unless a current one is there. Returns its path.
pub fn ensure_node_kubeconfig(state_dir: &Path, node_name: &str, server_url: &str) -> Result<PathBuf> {
    let dir = pki_dir(state_dir);
    let ca = CertificateAuthority::from_pem(&read(&dir.join("ca.crt"))?, &read(&dir.join("ca.key"))?)?;
    let path = node_kubeconfig_path(state_dir, node_name);
    let user = format!("system:node:{node_name}");
    if kubeconfig_current(&path, server_url, &ca, &user) {
        return Ok(path);
    }
    let (cert, key) = issue_client_cert(&ca, &user, &["system:nodes"])?;
    write_kubeconfig(
        &path,
        server_url,
        &ca.cert_pem,
        &cert,
        &key,
        &user,
        &format!("{user}@berth"),
    )?;
    tracing::info!(path = %path.display(), node = node_name, "wrote node kubeconfig");
    Ok(path)
}

/// TLS for the API server: its serving certificate, ALPN http/1.1, client certificates verified
/// against the cluster CA but optional (unauthenticated requests reach the server, which answers
/// 401 itself).
pub fn server_tls_config(pki: &ClusterPki) -> Result<Arc<rustls::ServerConfig>> {
    let verifier = WebPkiClientVerifier::builder_with_provider(pki.ca.roots()?, ring())
        .allow_unauthenticated()
        .build()
        .map_err(|source| PkiError::Verifier {
            what: "API server client verifier".into(),
            source,
        })?;
    let mut chain = certs(&pki.apiserver_cert_pem, "API server certificate")?;
    chain.push(pki.ca.cert_der()?);
    let key = private_key(&pki.apiserver_key_pem, "API server key")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .map_err(tls("protocol versions"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls("API server certificate"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// TLS for the API server's connections to kubelets: presents the apiserver-kubelet-client
/// certificate and does not verify the kubelet's serving certificate (kube-apiserver without
/// `--kubelet-certificate-authority`), though handshake signatures are still checked.
pub fn kubelet_client_tls_config(pki: &ClusterPki) -> Result<Arc<rustls::ClientConfig>> {
    let provider = ring();
    let chain = certs(&pki.apiserver_kubelet_client_cert_pem, "kubelet client certificate")?;
    let key = private_key(&pki.apiserver_kubelet_client_key_pem, "kubelet client key")?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls("protocol versions"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
        .with_client_auth_cert(chain, key)
        .map_err(tls("kubelet client certificate"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A self-signed serving certificate for a kubelet API (SANs: the node name and `ips`):
/// (cert PEM, key PEM).
pub fn self_signed_serving_cert(node_name: &str, ips: &[IpAddr]) -> Result<(String, String)> {
    let mut sans = vec![node_name.to_owned()];
    sans.extend(ips.iter().map(IpAddr::to_string));
    let mut params = LeafSpec::server(node_name, sans).params()?;
    params.use_authority_key_identifier_extension = false;
    let key = KeyPair::generate().map_err(rc("generate kubelet serving key"))?;
    let cert = params
        .self_signed(&key)
        .map_err(rc("self-sign kubelet serving certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The kubelet API's self-signed serving certificate kept in `dir` as kubelet.crt / kubelet.key
/// (key 0600): loaded when both are there, else made by [`self_signed_serving_cert`] and
/// written. Returns (cert PEM, key PEM).
pub fn ensure_kubelet_serving_cert(dir: &Path, node_name: &str, ips: &[IpAddr]) -> Result<(String, String)> {
    let (crt, key) = (dir.join("kubelet.crt"), dir.join("kubelet.key"));
    if let (Ok(c), Ok(k)) = (read(&crt), read(&key)) {
        return Ok((c, k));
    }
    let (c, k) = self_signed_serving_cert(node_name, ips)?;
    create_dir(dir)?;
    write_file(&key, k.as_bytes(), 0o600)?;
    write_file(&crt, c.as_bytes(), 0o644)?;
    Ok((c, k))
}

/// TLS for the kubelet API: the given serving certificate, ALPN http/1.1, and a client
/// certificate signed by `client_ca_pem` required.
pub fn kubelet_server_tls_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>> {
    let mut roots = RootCertStore::empty();
    for c in certs(client_ca_pem, "client CA")? {
        roots.add(c).map_err(tls("add client CA"))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), ring())
        .build()
        .map_err(|source| PkiError::Verifier {
            what: "kubelet client verifier".into(),
            source,
        })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .map_err(tls("protocol versions"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(cert_pem, "kubelet serving certificate")?,
            private_key(key_pem, "kubelet serving key")?,
        )
        .map_err(tls("kubelet serving certificate"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts any server certificate; verifies handshake signatures with the provider.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// All certificates in a PEM string.
pub fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let v: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(|c| c.ok())
        .collect();
    if v.is_empty() {
        return Err(PkiError::Pem {
            what: what.to_owned(),
            kind: "CERTIFICATE",
        });
    }
    Ok(v)
}

fn first_cert(pem: &str, what: &str) -> Result<CertificateDer<'static>> {
    Ok(certs(pem, what)?.remove(0))
}

/// The private key in a PEM string (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| PkiError::Pem {
        what: what.to_owned(),
        kind: "PRIVATE KEY",
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = rcgen::date_time_ymd(1970, 1, 1) + unix_now();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
}

fn rc(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |source| PkiError::Rcgen { what, source }
}

fn tls(what: impl Into<String>) -> impl FnOnce(rustls::Error) -> PkiError {
    let what = what.into();
    move |source| PkiError::Tls { what, source }
}

/// Create `dir` (and parents) and restrict it to root (0700): it holds private keys. An existing
/// directory's mode is fixed too.
fn create_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| PkiError::Io {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

/// Restrict every existing `*.key` in `dir` to 0600 (files written by older versions or by hand).
fn fix_key_modes(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let entries = std::fs::read_dir(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })?;
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "key") && p.is_file() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                .map_err(|source| PkiError::Io { path: p.clone(), source })?;
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Write `data` to `path` with `mode`, atomically ([`crate::fsutil::write_atomic`]).
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    crate::fsutil::write_atomic(path, data, mode).map_err(|source| PkiError::Io { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Drive an in-memory handshake to completion (or error).
    fn handshake(
        client: &mut rustls::ClientConnection,
        server: &mut rustls::ServerConnection,
    ) -> Result<(), rustls::Error> {
        for _ in 0..20 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                server.read_tls(&mut buf.as_slice()).unwrap();
                server.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                client.read_tls(&mut buf.as_slice()).unwrap();
                client.process_new_packets()?;
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    fn client_config(ca: &CertificateAuthority, auth: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
        let b = rustls::ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(ca.roots().unwrap());
        let mut cfg = match auth {
            Some((c, k)) => b
                .with_client_auth_cert(certs(c, "c").unwrap(), private_key(k, "k").unwrap())
                .unwrap(),
            None => b.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }

    #[test]
    fn sans_default_and_dedup() {
        let s = apiserver_sans(&["192.168.1.5".into(), "localhost".into(), "myhost".into()]);
        assert_eq!(s[0], "192.168.1.5");
        assert_eq!(s[2], "myhost");
        assert_eq!(s.iter().filter(|x| *x == "localhost").count(), 1);
        for d in DEFAULT_APISERVER_SANS {
            assert!(s.iter().any(|x| x == d), "{d}");
        }
    }

    #[test]
    fn ca_signs_leaves_and_reload_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let pki_path = dir.path().join("pki");
        let pki = ensure_cluster_pki(&pki_path, &["10.1.2.3".into(), "cp.example".into()]).unwrap();

        // Leaves verify against the CA (signature, EKU, validity) ...
        assert!(client_cert_valid(&pki.ca, &pki.admin_cert_pem));
        assert!(client_cert_valid(&pki.ca, &pki.apiserver_kubelet_client_cert_pem));
        assert!(serving_cert_valid(
            &pki.ca,
            &pki.apiserver_cert_pem,
            &pki.apiserver_sans
        ));
        assert!(pki.apiserver_sans.iter().any(|s| s == "10.1.2.3"));
        // ... and not against another CA.
        let other = CertificateAuthority::generate("other").unwrap();
        assert!(!client_cert_valid(&other, &pki.admin_cert_pem));
        // Subjects.
        let admin = first_cert(&pki.admin_cert_pem, "").unwrap();
        assert!(contains(admin.as_ref(), b"kubernetes-admin") && contains(admin.as_ref(), b"system:masters"));
        let kc = first_cert(&pki.apiserver_kubelet_client_cert_pem, "").unwrap();
        assert!(contains(kc.as_ref(), b"kube-apiserver-kubelet-client"));
        // Server cert lacks a name it was not issued for.
        assert!(!serving_cert_valid(
            &pki.ca,
            &pki.apiserver_cert_pem,
            &["elsewhere.example".into()]
        ));

        for f in ["ca.key", "apiserver.key", "apiserver-kubelet-client.key", "admin.key"] {
            assert_eq!(mode(&pki_path.join(f)), 0o600, "{f}");
        }

        assert_eq!(mode(&pki_path), 0o700);
        // Modes loosened by hand (or an older version) are fixed at the next start.
        {
            use std::os::unix::fs::PermissionsExt;
            let loosen = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
            loosen(&pki_path, 0o755);
            loosen(&pki_path.join("ca.key"), 0o644);
        }

        // Reload: same everything.
        let again = ensure_cluster_pki(&pki_path, &["10.1.2.3".into(), "cp.example".into()]).unwrap();
        assert_eq!(mode(&pki_path), 0o700);
        assert_eq!(mode(&pki_path.join("ca.key")), 0o600);
        assert_eq!(again.ca.cert_pem, pki.ca.cert_pem);
        assert_eq!(again.ca.key_pem, pki.ca.key_pem);
        assert_eq!(again.apiserver_cert_pem, pki.apiserver_cert_pem);
        assert_eq!(again.admin_cert_pem, pki.admin_cert_pem);
        assert_eq!(again.admin_key_pem, pki.admin_key_pem);

        // New SAN: serving cert re-issued, CA and clients kept.
        let third = ensure_cluster_pki(&pki_path, &["10.1.2.4".into()]).unwrap();
        assert_eq!(third.ca.cert_pem, pki.ca.cert_pem);
        assert_ne!(third.apiserver_cert_pem, pki.apiserver_cert_pem);
        assert!(serving_cert_valid(
            &third.ca,
            &third.apiserver_cert_pem,
            &["10.1.2.4".into()]
        ));
        assert_eq!(third.admin_cert_pem, pki.admin_cert_pem);
    }

    #[test]
    fn issued_client_cert_and_kubeconfigs() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure_cluster_pki(&pki_dir(dir.path()), &[]).unwrap();
        let (c, k) = issue_client_cert(&pki.ca, "system:node:n1", &["system:nodes"]).unwrap();
        assert!(client_cert_valid(&pki.ca, &c));
        assert!(cert_matches_key(&c, &k));
        assert!(!cert_matches_key(&c, &pki.admin_key_pem));

        let url = "https://127.0.0.1:6443";
        let admin = ensure_admin_kubeconfig(dir.path(), &pki, url).unwrap();
        assert_eq!(admin, dir.path().join("kubeconfigs/admin.conf"));
        assert_eq!(mode(&admin), 0o600);
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&admin).unwrap()).unwrap();
        assert_eq!(doc["clusters"][0]["cluster"]["server"], url);
        assert_eq!(doc["current-context"], "kubernetes-admin@berth");
        let before = std::fs::read_to_string(&admin).unwrap();
        ensure_admin_kubeconfig(dir.path(), &pki, url).unwrap();
        assert_eq!(before, std::fs::read_to_string(&admin).unwrap());

        let node = ensure_node_kubeconfig(dir.path(), "n1", url).unwrap();
        assert_eq!(node, dir.path().join("kubeconfigs/node-n1.conf"));
        assert_eq!(mode(&node), 0o600);
        let before = std::fs::read_to_string(&node).unwrap();
        ensure_node_kubeconfig(dir.path(), "n1", url).unwrap();
        assert_eq!(before, std::fs::read_to_string(&node).unwrap(), "kept when current");
        ensure_node_kubeconfig(dir.path(), "n1", "https://10.0.0.1:6443").unwrap();
        assert_ne!(
            before,
            std::fs::read_to_string(&node).unwrap(),
            "rewritten for another server"
        );
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&node).unwrap()).unwrap();
        let cert = base64::engine::general_purpose::STANDARD
            .decode(doc["users"][0]["user"]["client-certificate-data"].as_str().unwrap())
            .unwrap();
        let der = first_cert(std::str::from_utf8(&cert).unwrap(), "").unwrap();
        assert!(contains(der.as_ref(), b"system:node:n1") && contains(der.as_ref(), b"system:nodes"));
    }

    #[test]
    fn apiserver_handshake_with_and_without_client_cert() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure_cluster_pki(&pki_dir(dir.path()), &[]).unwrap();
        let server_cfg = server_tls_config(&pki).unwrap();

        for name in ["127.0.0.1", "kubernetes.default.svc"] {
            let client_cfg = client_config(&pki.ca, Some((&pki.admin_cert_pem, &pki.admin_key_pem)));
            let mut client =
                rustls::ClientConnection::new(client_cfg, ServerName::try_from(name).unwrap().to_owned()).unwrap();
            let mut server = rustls::ServerConnection::new(server_cfg.clone()).unwrap();
            handshake(&mut client, &mut server).unwrap();
            let peer = server.peer_certificates().expect("client cert presented");
            assert_eq!(peer[0], first_cert(&pki.admin_cert_pem, "").unwrap());
            assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]));
        }

        // Anonymous clients get through TLS (the API server answers 401).
        let mut client =
            rustls::ClientConnection::new(client_config(&pki.ca, None), ServerName::try_from("localhost").unwrap())
                .unwrap();
        let mut server = rustls::ServerConnection::new(server_cfg.clone()).unwrap();
        handshake(&mut client, &mut server).unwrap();
        assert!(server.peer_certificates().is_none());

        // A client certificate from another CA is rejected.
        let other = CertificateAuthority::generate("other").unwrap();
        let (c, k) = issue_client_cert(&other, "mallory", &["system:masters"]).unwrap();
        let mut client = rustls::ClientConnection::new(
            client_config(&pki.ca, Some((&c, &k))),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut server = rustls::ServerConnection::new(server_cfg).unwrap();
        assert!(handshake(&mut client, &mut server).is_err());
    }

    #[test]
    fn kubelet_serving_cert_is_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ips = ["10.0.0.7".parse().unwrap()];
        let first = ensure_kubelet_serving_cert(dir.path(), "node-1", &ips).unwrap();
        let again = ensure_kubelet_serving_cert(dir.path(), "node-1", &ips).unwrap();
        assert_eq!(first, again, "loaded, not re-made");
        let mode = std::fs::metadata(dir.path().join("kubelet.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn kubelet_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure_cluster_pki(&pki_dir(dir.path()), &[]).unwrap();
        let (cert, key) = self_signed_serving_cert("node-1", &["10.0.0.7".parse().unwrap()]).unwrap();
        let server_cfg = kubelet_server_tls_config(&cert, &key, &pki.ca.cert_pem).unwrap();

        // The API server's client: presents its cert, does not verify the self-signed one.
        let mut client = rustls::ClientConnection::new(
            kubelet_client_tls_config(&pki).unwrap(),
            ServerName::try_from("10.0.0.7").unwrap(),
        )
        .unwrap();
        let mut server = rustls::ServerConnection::new(server_cfg.clone()).unwrap();
        handshake(&mut client, &mut server).unwrap();
        assert_eq!(
            server.peer_certificates().unwrap()[0],
            first_cert(&pki.apiserver_kubelet_client_cert_pem, "").unwrap()
        );

        // Without a client certificate the kubelet refuses.
        let mut roots = RootCertStore::empty();
        roots.add(first_cert(&cert, "").unwrap()).unwrap();
        let anon = rustls::ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client =
            rustls::ClientConnection::new(Arc::new(anon), ServerName::try_from("node-1").unwrap()).unwrap();
        let mut server = rustls::ServerConnection::new(server_cfg).unwrap();
        assert!(handshake(&mut client, &mut server).is_err());
    }

    #[test]
    fn kubeconfig_json_shape() {
        let s = kubeconfig_json("https://h:6443", "CA", "CERT", "KEY", "u", "ctx");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["kind"], "Config");
        assert_eq!(v["clusters"][0]["cluster"]["certificate-authority-data"], "Q0E=");
        assert_eq!(v["users"][0]["name"], "u");
        assert_eq!(v["users"][0]["user"]["client-key-data"], "S0VZ");
        assert_eq!(v["contexts"][0]["context"]["user"], "u");
        assert_eq!(v["contexts"][0]["context"]["cluster"], KUBECONFIG_CLUSTER_NAME);
    }
}
