//! TLS bootstrap and rotation through the certificates.k8s.io/v1 CSR API, as kubelet does it
//! (k8s.io/client-go/util/certificate, pkg/kubelet/certificate): an ECDSA P-256 key, a CSR for
//! `CN=system:node:<name>, O=system:nodes` to the `kubernetes.io/kube-apiserver-client-kubelet`
//! signer (client) or `kubernetes.io/kubelet-serving` (serving, with the node's names and IPs),
//! then wait until it is approved and `status.certificate` is set. Rotation renews the client
//! certificate at a jittered 70–90 % of its lifetime with the current certificate.
//!
//! CSR building, outcomes, the rotation deadline and the issued-certificate checks are pure.
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};

/// The groups and user prefix of node identities.
pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";

/// Why getting a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("building the CSR: {0}")]
    Build(String),
    #[error("creating the CSR: {0}")]
    Create(String),
    #[error("the CSR {name} was denied: {message}")]
    Denied { name: String, message: String },
    #[error("the CSR {name} failed: {message}")]
    Failed { name: String, message: String },
    #[error("the CSR {name} was not approved and signed within {timeout:?} (is the CSR approver running, are node CSRs auto-approved?)")]
    Timeout { name: String, timeout: Duration },
    #[error("the certificate issued for CSR {name} is not usable: {message}")]
    BadCertificate { name: String, message: String },
    #[error("reading the CSR {name}: {message}")]
    Get { name: String, message: String },
}

/// Which certificate a CSR asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrKind {
    /// The node's client certificate for the API server.
    Client,
    /// The kubelet API's serving certificate.
    Serving,
}

impl CsrKind {
    pub fn signer(self) -> &'static str {
        match self {
            Self::Client => "kubernetes.io/kube-apiserver-client-kubelet",
            Self::Serving => "kubernetes.io/kubelet-serving",
        }
    }

    /// Key usages (kubelet's, for an ECDSA key: no key encipherment).
    pub fn usages(self) -> Vec<String> {
        let last = match self {
            Self::Client => "client auth",
            Self::Serving => "server auth",
        };
        vec!["digital signature".to_owned(), last.to_owned()]
    }
}

/// `system:node:<name>`.
pub fn node_user(node_name: &str) -> String {
    format!("{NODE_USER_PREFIX}{node_name}")
}

/// A new P-256 key and a PEM CSR for node `node_name` (`sans`: DNS names or IPs, serving only). Pure
/// apart from the key's randomness. Returns (CSR PEM, key PEM).
pub fn build_csr(kind: CsrKind, node_name: &str, sans: &[String]) -> Result<(String, String), BootstrapError> {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
    let err = |e: rcgen::Error| BootstrapError::Build(e.to_string());
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, NODES_GROUP);
    dn.push(DnType::CommonName, node_user(node_name));
    params.distinguished_name = dn;
    if kind == CsrKind::Serving {
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => s.clone().try_into().map(SanType::DnsName).map_err(err),
            })
            .collect::<Result<_, _>>()?;
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let csr = params.serialize_request(&key).map_err(err)?;
    Ok((csr.pem().map_err(err)?, key.serialize_pem()))
}

/// The CSR object kubelet posts (generateName `csr-`). Pure.
pub fn csr_object(kind: CsrKind, csr_pem: &str) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: ObjectMeta { generate_name: Some("csr-".into()), ..Default::default() },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.as_bytes().to_vec()),
            signer_name: kind.signer().to_owned(),
            usages: Some(kind.usages()),
            ..Default::default()
        },
        status: None,
    }
}

/// Where a CSR stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrOutcome {
    Pending,
    Issued(String),
    Denied(String),
    Failed(String),
}

/// The state of a CSR from its status: Denied/Failed conditions win, then a set certificate
/// (signers set it after approval). Pure.
pub fn csr_outcome(csr: &CertificateSigningRequest) -> CsrOutcome {
    let Some(status) = &csr.status else { return CsrOutcome::Pending };
    for c in status.conditions.iter().flatten() {
        let message = || format!("{}: {}", c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default());
        match c.type_.as_str() {
            "Denied" if c.status != "False" => return CsrOutcome::Denied(message()),
            "Failed" if c.status != "False" => return CsrOutcome::Failed(message()),
            _ => {}
        }
    }
    match &status.certificate {
        Some(ByteString(b)) if !b.is_empty() => CsrOutcome::Issued(String::from_utf8_lossy(b).into_owned()),
        _ => CsrOutcome::Pending,
    }
}

/// notBefore and notAfter of the first certificate in `pem`. Pure.
pub fn validity(pem: &str) -> Result<(SystemTime, SystemTime), String> {
    let der = crate::pki::certs(pem, "certificate").map_err(|e| e.to_string())?.remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let v = cert.validity();
    let t = |secs: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    Ok((t(v.not_before.timestamp()), t(v.not_after.timestamp())))
}

/// When to renew a certificate valid from `not_before` to `not_after` (client-go's
/// nextRotationDeadline: notBefore + a random 70–90 % of the lifetime; `jitter` in [0, 1]). Pure.
pub fn rotation_deadline(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let total = not_after.duration_since(not_before).unwrap_or_default();
    not_before + total.mul_f64(0.7 + 0.2 * jitter.clamp(0.0, 1.0))
}

/// Check an issued certificate: it parses, carries our public key and names `system:node:<name>`
/// in `system:nodes`. Pure.
pub fn check_issued(cert_pem: &str, key_pem: &str, node_name: &str) -> Result<(), String> {
    let der = crate::pki::certs(cert_pem, "issued certificate").map_err(|e| e.to_string())?.remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| e.to_string())?;
    if cert.tbs_certificate.subject_pki.raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
        return Err("its public key is not the key of the CSR".into());
    }
    let cn = cert.subject().iter_common_name().next().and_then(|c| c.as_str().ok()).unwrap_or_default().to_owned();
    if cn != node_user(node_name) {
        return Err(format!("its subject CN is {cn:?}, expected {:?}", node_user(node_name)));
    }
    let in_group = cert.subject().iter_organization().any(|o| o.as_str() == Ok(NODES_GROUP));
    if !in_group {
        return Err(format!("its subject has no O={NODES_GROUP}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// I/O.

/// Post a CSR of `kind` for `node_name` with `client` and wait until it is issued, denied or
/// `timeout` passes. Returns (certificate PEM, key PEM); the key never leaves memory otherwise.
pub async fn request_certificate(
    client: &kube::Client,
    kind: CsrKind,
    node_name: &str,
    sans: &[String],
    timeout: Duration,
) -> Result<(String, String), BootstrapError> {
    let (csr_pem, key_pem) = build_csr(kind, node_name, sans)?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let created = api
        .create(&PostParams::default(), &csr_object(kind, &csr_pem))
        .await
        .map_err(|e| BootstrapError::Create(super::discovery::error_chain(&e)))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, signer = kind.signer(), "posted certificate signing request");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut current = created;
    loop {
        match csr_outcome(&current) {
            CsrOutcome::Issued(cert) => {
                check_issued(&cert, &key_pem, node_name)
                    .map_err(|message| BootstrapError::BadCertificate { name: name.clone(), message })?;
                tracing::info!(csr = %name, "certificate issued");
                return Ok((cert, key_pem));
            }
            CsrOutcome::Denied(message) => return Err(BootstrapError::Denied { name, message }),
            CsrOutcome::Failed(message) => return Err(BootstrapError::Failed { name, message }),
            CsrOutcome::Pending => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BootstrapError::Timeout { name, timeout });
        }
        tokio::time::sleep(Duration::from_millis(500).min(deadline - tokio::time::Instant::now())).await;
        match api.get(&name).await {
            Ok(c) => current = c,
            Err(e) if super::discovery::is_unreachable(&e) => {
                tracing::warn!(csr = %name, error = %e, "reading the CSR; retrying");
            }
            Err(e) => return Err(BootstrapError::Get { name, message: e.to_string() }),
        }
    }
}

/// The client certificate (PEM) of a kubeconfig's first user.
pub fn kubeconfig_client_cert(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    use base64::Engine;
    let kc = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let user = kc.auth_infos.first().and_then(|a| a.auth_info.as_ref()).context("the kubeconfig has no user")?;
    if let Some(data) = &user.client_certificate_data {
        let pem = base64::engine::general_purpose::STANDARD.decode(data.trim()).context("client-certificate-data")?;
        return String::from_utf8(pem).context("client-certificate-data is not PEM");
    }
    let file = user.client_certificate.as_ref().context("the kubeconfig's user has no client certificate")?;
    std::fs::read_to_string(file).with_context(|| format!("reading {file}"))
}

/// A number in [0, 1) from the clock, for the rotation jitter (no RNG dependency needed).
fn jitter() -> f64 {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// Wait until the client certificate in `kubeconfig` is due for renewal, renew it with the
/// current credentials (retrying with back-off until it works) and replace the kubeconfig
/// atomically. Returns true once rotated, false when `shutdown` fired first.
pub async fn rotate_client_cert_when_due(
    kubeconfig: &std::path::Path,
    node_name: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<bool> {
    let cert = kubeconfig_client_cert(kubeconfig)?;
    let (nb, na) = validity(&cert).map_err(|e| anyhow::anyhow!("client certificate of {}: {e}", kubeconfig.display()))?;
    let deadline = rotation_deadline(nb, na, jitter());
    let wait = deadline.duration_since(SystemTime::now()).unwrap_or_default();
    tracing::info!(expires = %jiff::Timestamp::try_from(na).map(|t| t.to_string()).unwrap_or_default(), renew_in = ?wait, "client certificate rotation scheduled");
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(false),
        _ = tokio::time::sleep(wait) => {}
    }
    let mut delay = Duration::from_secs(1);
    loop {
        let attempt = async {
            let client = crate::kubeclient::from_file(kubeconfig).await?;
            let (cert, key) =
                request_certificate(&client, CsrKind::Client, node_name, &[], Duration::from_secs(300)).await?;
            super::write_node_kubeconfig_from(kubeconfig, &cert, &key)
        };
        match attempt.await {
            Ok(()) => {
                tracing::info!(kubeconfig = %kubeconfig.display(), "client certificate rotated");
                return Ok(true);
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "rotating the client certificate"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(300));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::{CertificateSigningRequestCondition, CertificateSigningRequestStatus};

    fn parse_csr(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        assert_eq!(p.label, "CERTIFICATE REQUEST");
        p.contents
    }

    #[test]
    fn client_csr_subject_and_key() {
        let (pem, key) = build_csr(CsrKind::Client, "node-a", &[]).unwrap();
        use x509_parser::prelude::FromDer;
        let der = parse_csr(&pem);
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        csr.verify_signature().unwrap();
        let subject = csr.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:node-a"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
        // ECDSA P-256.
        let spki = &csr.certification_request_info.subject_pki;
        assert_eq!(spki.algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
        assert!(key.contains("PRIVATE KEY"));
        let obj = csr_object(CsrKind::Client, &pem);
        assert_eq!(obj.spec.signer_name, "kubernetes.io/kube-apiserver-client-kubelet");
        assert_eq!(obj.spec.usages.as_deref().unwrap(), ["digital signature", "client auth"]);
        assert_eq!(obj.metadata.generate_name.as_deref(), Some("csr-"));
        let json = serde_json::to_value(&obj).unwrap();
        assert_eq!(json["apiVersion"], "certificates.k8s.io/v1");
    }

    #[test]
    fn serving_csr_has_sans() {
        let (pem, _) = build_csr(CsrKind::Serving, "node-a", &["node-a".into(), "10.0.0.5".into()]).unwrap();
        let der = parse_csr(&pem);
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        use x509_parser::prelude::FromDer;
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for g in &san.general_names {
                    match g {
                        GeneralName::DNSName(d) => dns.push(d.to_string()),
                        GeneralName::IPAddress(b) => ips.push(b.to_vec()),
                        _ => {}
                    }
                }
            }
        }
        assert_eq!(dns, ["node-a"]);
        assert_eq!(ips, [vec![10u8, 0, 0, 5]]);
        assert_eq!(CsrKind::Serving.signer(), "kubernetes.io/kubelet-serving");
        assert_eq!(CsrKind::Serving.usages(), ["digital signature", "server auth"]);
    }

    fn with_status(conds: &[(&str, &str)], cert: Option<&str>) -> CertificateSigningRequest {
        CertificateSigningRequest {
            status: Some(CertificateSigningRequestStatus {
                conditions: Some(
                    conds
                        .iter()
                        .map(|(t, s)| CertificateSigningRequestCondition {
                            type_: (*t).into(),
                            status: (*s).into(),
                            reason: Some("R".into()),
                            message: Some("M".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                certificate: cert.map(|c| ByteString(c.as_bytes().to_vec())),
            }),
            ..csr_object(CsrKind::Client, "x")
        }
    }

    #[test]
    fn outcomes() {
        assert_eq!(csr_outcome(&csr_object(CsrKind::Client, "x")), CsrOutcome::Pending);
        assert_eq!(csr_outcome(&with_status(&[("Approved", "True")], None)), CsrOutcome::Pending);
        assert_eq!(csr_outcome(&with_status(&[("Approved", "True")], Some("PEM"))), CsrOutcome::Issued("PEM".into()));
        assert_eq!(csr_outcome(&with_status(&[("Denied", "True")], None)), CsrOutcome::Denied("R: M".into()));
        assert_eq!(csr_outcome(&with_status(&[("Approved", "True"), ("Failed", "True")], Some("PEM"))), CsrOutcome::Failed("R: M".into()));
    }

    #[test]
    fn deadline_is_between_70_and_90_percent() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let na = nb + Duration::from_secs(1000);
        assert_eq!(rotation_deadline(nb, na, 0.0), nb + Duration::from_secs(700));
        assert_eq!(rotation_deadline(nb, na, 1.0), nb + Duration::from_secs(900));
        assert_eq!(rotation_deadline(nb, na, 7.0), nb + Duration::from_secs(900));
        assert_eq!(rotation_deadline(na, nb, 0.5), na, "an inverted validity renews at once");
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }

    #[test]
    fn issued_certificate_checks() {
        let ca = crate::pki::CertificateAuthority::generate("kubernetes").unwrap();
        let (_, key) = build_csr(CsrKind::Client, "node-a", &[]).unwrap();
        // A certificate for another key (the CA issues with a key of its own).
        let (cert, other_key) = crate::pki::issue_client_cert(&ca, "system:node:node-a", &["system:nodes"]).unwrap();
        assert!(check_issued(&cert, &other_key, "node-a").is_ok());
        assert!(check_issued(&cert, &key, "node-a").unwrap_err().contains("public key"));
        assert!(check_issued(&cert, &other_key, "node-b").unwrap_err().contains("CN"));
        let (cert, k) = crate::pki::issue_client_cert(&ca, "system:node:node-a", &["system:masters"]).unwrap();
        assert!(check_issued(&cert, &k, "node-a").unwrap_err().contains("system:nodes"));
        let (nb, na) = validity(&cert).unwrap();
        assert!(nb < na && na > SystemTime::now());
    }
}
