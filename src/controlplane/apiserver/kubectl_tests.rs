//! End-to-end checks of the API server with the real kubectl (skipped when kubectl is missing).
//!
//! `cargo test -p berth --lib controlplane::apiserver::kubectl_tests -- --nocapture`
//! The ignored `manual_server` test serves with a kubeconfig at
//! /tmp/berth-apiserver-manual/kubeconfig until /tmp/berth-apiserver-manual/stop exists.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::PrivateKeyDer;
use tokio_util::sync::CancellationToken;

use super::{bind, ApiServerConfig};

const KUBECTLS: &[&str] = &["/usr/lib/google-cloud-sdk/bin/kubectl.1.27", "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"];

struct TestPki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    admin_cert_pem: String,
    admin_key_pem: String,
}

fn pki() -> TestPki {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "berth-test-ca");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let srv_key = KeyPair::generate().unwrap();
    let mut sp = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    sp.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let srv_cert = sp.signed_by(&srv_key, &issuer).unwrap();

    let admin_key = KeyPair::generate().unwrap();
    let mut ap = CertificateParams::new(Vec::<String>::new()).unwrap();
    ap.distinguished_name = rcgen::DistinguishedName::new();
    ap.distinguished_name.push(DnType::OrganizationName, "system:masters");
    ap.distinguished_name.push(DnType::CommonName, "kubernetes-admin");
    ap.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = ap.signed_by(&admin_key, &issuer).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![srv_cert.der().clone()], PrivateKeyDer::Pkcs8(srv_key.serialize_der().into()))
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    TestPki {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
        client: Arc::new(client),
        admin_cert_pem: admin_cert.pem(),
        admin_key_pem: admin_key.serialize_pem(),
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn write_kubeconfig(dir: &Path, pki: &TestPki, addr: std::net::SocketAddr) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: berth\n  context:\n    cluster: berth\n    user: admin\ncurrent-context: berth\n",
        b64(&pki.ca_pem),
        b64(&pki.admin_cert_pem),
        b64(&pki.admin_key_pem)
    );
    std::fs::write(&path, text).unwrap();
    path
}

struct Running {
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    addr: std::net::SocketAddr,
    pki: TestPki,
}

async fn start(dir: tempfile::TempDir) -> Running {
    let pki = pki();
    let cfg = ApiServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: pki.server.clone(),
        store_path: dir.path().join("store.redb"),
        kubelet_tls: pki.client.clone(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
    };
    let server = bind(cfg).await.unwrap();
    let addr = server.local_addr();
    let kubeconfig = write_kubeconfig(dir.path(), &pki, addr);
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));
    Running { _dir: dir, kubeconfig, stop, task, addr, pki }
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn kubectl(bin: &str, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Out {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut si = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        si.write_all(s.as_bytes()).await.unwrap();
    }
    drop(si);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.expect("kubectl timed out").unwrap();
    let o = Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!("$ kubectl {}\n{}{}", args.join(" "), o.stdout, o.stderr);
    o
}

fn available() -> Vec<&'static str> {
    KUBECTLS.iter().copied().filter(|k| Path::new(k).exists()).collect()
}

/// Runs the scenario from the brief against every installed kubectl version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scenario() {
    let bins = available();
    if bins.is_empty() {
        eprintln!("skipped: no kubectl found");
        return;
    }
    for bin in bins {
        let r = start(tempfile::tempdir().unwrap()).await;
        let k = |args: &'static [&'static str]| kubectl(bin, &r.kubeconfig, args, None);

        let o = k(&["get", "ns"]).await;
        assert!(o.ok, "{}", o.stderr);
        for ns in super::INITIAL_NAMESPACES {
            assert!(o.stdout.contains(ns));
        }
        assert!(o.stdout.starts_with("NAME") && o.stdout.contains("STATUS") && o.stdout.contains("Active"));

        let o = k(&["run", "web", "--image=x/busybox:1", "--", "sleep", "1"]).await;
        assert!(o.ok, "{}", o.stderr);
        assert!(o.stdout.contains("pod/web created"));

        let o = k(&["get", "pods", "-o", "wide"]).await;
        assert!(o.ok, "{}", o.stderr);
        let header: Vec<&str> = o.stdout.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]);
        assert!(o.stdout.contains("web") && o.stdout.contains("0/1") && o.stdout.contains("Pending"));

        let o = k(&["get", "pods"]).await;
        let header: Vec<&str> = o.stdout.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);

        let o = k(&["get", "pod", "web", "-o", "yaml"]).await;
        assert!(o.ok, "{}", o.stderr);
        for s in ["imagePullPolicy: IfNotPresent", "restartPolicy: Always", "qosClass: BestEffort", "- sleep", "resourceVersion:", "uid:", "node.kubernetes.io/not-ready"] {
            assert!(o.stdout.contains(s), "missing {s}");
        }

        let o = k(&["label", "pod", "web", "a=b"]).await;
        assert!(o.ok, "{}", o.stderr);
        let o = k(&["get", "pods", "-l", "a=b", "-o", "name"]).await;
        assert_eq!(o.stdout.trim(), "pod/web");
        let o = k(&["get", "pods", "-l", "a!=b", "-o", "name"]).await;
        assert_eq!(o.stdout.trim(), "");
        let o = k(&["get", "pods", "--field-selector", "spec.nodeName=", "-o", "name"]).await;
        assert_eq!(o.stdout.trim(), "pod/web");

        let o = k(&["annotate", "pod", "web", "x=y"]).await;
        assert!(o.ok, "{}", o.stderr);
        let o = k(&["get", "pod", "nope"]).await;
        assert!(!o.ok && o.stderr.contains(r#"pods "nope" not found"#), "{}", o.stderr);
        let o = k(&["run", "web", "--image=x/busybox:1"]).await;
        assert!(!o.ok && o.stderr.contains(r#"pods "web" already exists"#), "{}", o.stderr);

        // Malformed and invalid manifests.
        let o = kubectl(bin, &r.kubeconfig, &["create", "-f", "-"], Some("{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"bad\"}, \"spec\": {\"containers\": [")).await;
        assert!(!o.ok);
        let o = kubectl(bin, &r.kubeconfig, &["create", "-f", "-", "--validate=false"], Some("apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers: []\n")).await;
        assert!(!o.ok && o.stderr.contains("is invalid") && o.stderr.contains("spec.containers: Required value"), "{}", o.stderr);

        let o = k(&["get", "nodes"]).await;
        assert!(o.ok, "{}", o.stderr);
        assert!(o.stderr.contains("No resources found"));

        // Bind it (as a scheduler would) so deletion is graceful, then watch it terminate.
        let bind = serde_json::json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web"}, "target": {"kind": "Node", "name": "n1"}});
        let o = kubectl(bin, &r.kubeconfig, &["create", "--raw", "/api/v1/namespaces/default/pods/web/binding", "-f", "-"], Some(&bind.to_string())).await;
        assert!(o.ok, "{}", o.stderr);
        let o = kubectl(bin, &r.kubeconfig, &["create", "--raw", "/api/v1/namespaces/default/pods/web/binding", "-f", "-"], Some(&bind.to_string())).await;
        assert!(!o.ok && o.stderr.contains("already assigned"), "{}", o.stderr);

        let kc = r.kubeconfig.clone();
        let watcher = tokio::spawn(async move { kubectl(bin, &kc, &["get", "pods", "-w", "--request-timeout=6s"], None).await });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let o = k(&["delete", "pod", "web", "--wait=false"]).await;
        assert!(o.ok && o.stdout.contains(r#"pod "web" deleted"#), "{}", o.stderr);
        let o = k(&["get", "pod", "web"]).await;
        assert!(o.stdout.contains("Terminating"), "graceful deletion keeps a bound pod");
        // The agent's final delete: grace period 0 removes it.
        let o = k(&["delete", "pod", "web", "--grace-period=0", "--force"]).await;
        assert!(o.ok, "{}", o.stderr);
        let o = k(&["get", "pods"]).await;
        assert!(o.stderr.contains("No resources found"));
        let w = watcher.await.unwrap();
        assert!(w.stdout.contains("Terminating"), "watch shows Terminating: {}", w.stdout);
        let header_lines = w.stdout.lines().filter(|l| l.starts_with("NAME")).count();
        assert_eq!(header_lines, 1, "headers printed once");

        let o = k(&["delete", "ns", "default"]).await;
        assert!(!o.ok && o.stderr.contains("forbidden"), "{}", o.stderr);
        let o = k(&["create", "configmap", "c1", "--from-literal=a=b", "-n", "nope"]).await;
        assert!(!o.ok && o.stderr.contains(r#"namespaces "nope" not found"#), "{}", o.stderr);
        let o = k(&["create", "configmap", "c1", "--from-literal=a=b"]).await;
        assert!(o.ok, "{}", o.stderr);
        let o = k(&["get", "cm"]).await;
        assert!(o.stdout.contains("c1"));
        let o = k(&["api-resources"]).await;
        assert!(o.ok && o.stdout.contains("leases") && o.stdout.contains("po "), "{}", o.stderr);

        r.stop.cancel();
        r.task.await.unwrap().unwrap();
    }
}

/// Unauthenticated requests get a 401 Status.
#[tokio::test]
async fn anonymous_is_unauthorized() {
    let r = start(tempfile::tempdir().unwrap()).await;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut r.pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/api/v1/pods").header("host", "x").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 401);
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["reason"], "Unauthorized");
    let req = http::Request::get("/healthz").header("host", "x").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    r.stop.cancel();
    r.task.await.unwrap().unwrap();
}

/// A server for poking at by hand (see the module docs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "serves until /tmp/berth-apiserver-manual/stop exists"]
async fn manual_server() {
    let dir = PathBuf::from("/tmp/berth-apiserver-manual");
    let _ = std::fs::remove_file(dir.join("stop"));
    std::fs::create_dir_all(&dir).unwrap();
    let r = start(tempfile::tempdir().unwrap()).await;
    std::fs::copy(&r.kubeconfig, dir.join("kubeconfig")).unwrap();
    println!("kubeconfig at {}", dir.join("kubeconfig").display());
    let deadline = Instant::now() + Duration::from_secs(1800);
    while !dir.join("stop").exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    r.stop.cancel();
    r.task.await.unwrap().unwrap();
}
