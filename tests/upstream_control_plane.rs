//! The upstream control plane guard (tests/common/upstream.rs) against the real binaries of
//! upstream/build.sh: it comes up kubeadm-style, and what `kubeadm join` / a kubelet's TLS
//! bootstrap rely on works — anonymous discovery of a signed cluster-info, a bootstrap token that
//! may post a node-client CSR, which the controller-manager approves and signs.
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::upstream::{self, UpstreamControlPlane, TOKEN_ID};
use common::{run_ok, wait_until, Netns};

const NODE: &str = "upstream-test-node";

#[test]
fn upstream_control_plane_bootstraps_a_node_client_certificate() {
    if !common::e2e_enabled("upstream_control_plane_bootstraps_a_node_client_certificate") {
        return;
    }
    let _serial = common::serial();

    let version = run_ok(Command::new(common::upstream_bin("kube-apiserver")).arg("--version"));
    assert_eq!(version.trim(), format!("Kubernetes {}", upstream::upstream_version()));

    let ns = Netns::new();
    // a second "host" on the same wire, from which discovery happens (as `kubeadm join` would)
    let node_ns = Netns::new();
    ns.connect(&node_ns);
    let t0 = Instant::now();
    let cp = UpstreamControlPlane::start(&ns).expect("start the upstream control plane");
    eprintln!("MEASURE guard start: {:.1}s", t0.elapsed().as_secs_f64());

    // the admin kubeconfig works with /usr/bin/kubectl
    let namespaces = cp.kubectl().args(["get", "namespaces", "-o", "name"]).ok();
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(namespaces.lines().any(|l| l == format!("namespace/{n}")), "{n} missing in:\n{namespaces}");
    }

    // the bootstrap signer signs cluster-info for the token
    let jws_key = format!("jws-kubeconfig-{TOKEN_ID}");
    wait_until("cluster-info to carry the token's JWS", Duration::from_secs(60), || {
        let out = cp.kubectl().args(["-n", "kube-public", "get", "configmap", "cluster-info", "-o", "json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        Ok::<_, String>(v["data"][&jws_key].as_str().map(|s| s.to_owned()))
    });

    // anonymous discovery over HTTPS from the other host: cluster-info is readable, a secret is not
    let ca = cp.ca_cert();
    let url = |path: &str| format!("{}{path}", cp.server());
    let (code, body) = curl(&node_ns, &ca, &url("/version"));
    assert_eq!(code, 200, "GET /version from the connected netns: {body}");
    assert!(body.contains(&format!("\"gitVersion\": \"{}\"", upstream::upstream_version())), "{body}");
    let (code, body) = curl(&node_ns, &ca, &url("/api/v1/namespaces/kube-public/configmaps/cluster-info"));
    assert_eq!(code, 200, "anonymous GET of cluster-info: {body}");
    let cm: serde_json::Value = serde_json::from_str(&body).unwrap();
    let kubeconfig = cm["data"]["kubeconfig"].as_str().expect("cluster-info has a kubeconfig");
    assert!(kubeconfig.contains(&format!("server: {}", cp.server())), "{kubeconfig}");
    let jws = cm["data"][&jws_key].as_str().expect("anonymous sees the JWS");
    assert_eq!(jws.split('.').count(), 3, "detached JWS header..signature: {jws}");
    let (code, body) = curl(&node_ns, &ca, &url("/api/v1/namespaces/kube-system/secrets"));
    assert_eq!(code, 403, "anonymous must not list secrets: {body}");

    // the CA pin is the sha256 of the CA's SubjectPublicKeyInfo (kubeadm's documented pipeline)
    let openssl_hash = run_ok(Command::new("sh").arg("-c").arg(format!(
        "openssl x509 -pubkey -noout -in {} | openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1",
        ca.display()
    )));
    assert_eq!(cp.ca_cert_hash(), format!("sha256:{}", openssl_hash.trim()));

    // TLS bootstrap with the token: post a node-client CSR, it gets approved and issued
    let work = common::temp_dir("berth-upstream-test-");
    let bootstrap = work.path().join("bootstrap.conf");
    write_token_kubeconfig(&bootstrap, &cp.server(), &ca, cp.token());
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("system:node:{NODE}"));
    let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let csr_name = format!("node-csr-{NODE}");
    let csr = serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": { "name": csr_name },
        "spec": {
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
            "request": base64::engine::general_purpose::STANDARD.encode(&csr_pem),
        },
    });
    let out = cp.kubectl_with(&bootstrap).args(["create", "-f", "-"]).stdin(&csr.to_string());
    assert!(out.status.success(), "create CSR with the bootstrap token: {}", String::from_utf8_lossy(&out.stderr));

    let issued = wait_until("the node-client CSR to be approved and issued", Duration::from_secs(60), || {
        let out = cp.kubectl_with(&bootstrap).args(["get", "csr", &csr_name, "-o", "json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        let approved = v["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Approved" && c["status"] == "True"));
        let cert = v["status"]["certificate"].as_str().filter(|c| !c.is_empty());
        match (approved, cert) {
            (true, Some(c)) => Ok(Some(c.to_owned())),
            _ => Err(format!("status: {}", v["status"])),
        }
    });
    let cert_pem = base64::engine::general_purpose::STANDARD.decode(issued).unwrap();
    let cert_file = work.path().join("node.crt");
    let key_file = work.path().join("node.key");
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let verify = run_ok(Command::new("openssl").arg("verify").arg("-CAfile").arg(&ca).arg(&cert_file));
    assert!(verify.contains(": OK"), "{verify}");

    // the issued certificate authenticates as the node
    let node_conf = work.path().join("node.conf");
    berth::pki::write_kubeconfig(
        &node_conf,
        &cp.server(),
        &std::fs::read_to_string(&ca).unwrap(),
        &String::from_utf8(cert_pem).unwrap(),
        &key.serialize_pem(),
        NODE,
        NODE,
    )
    .unwrap();
    let whoami = cp.kubectl_with(&node_conf).args(["auth", "whoami", "-o", "json"]).ok();
    let who: serde_json::Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], format!("system:node:{NODE}"));
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("\"system:nodes\""), "{groups}");

    for c in ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"] {
        let pid = cp.pid(c).expect("component running");
        eprintln!("MEASURE {c} RSS: {} KiB", vm_rss_kib(pid));
    }

    // the audit log (Metadata level) names the bootstrap token user creating the CSR
    let bootstrap_user = format!("system:bootstrap:{TOKEN_ID}");
    let audit = std::fs::read_to_string(cp.audit_log()).unwrap();
    let csr_create = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| {
            e["user"]["username"] == bootstrap_user.as_str()
                && e["verb"] == "create"
                && e["objectRef"]["resource"] == "certificatesigningrequests"
        })
        .unwrap_or_else(|| panic!("no audit event of {bootstrap_user} creating a CSR in {}", cp.audit_log().display()));
    assert_eq!(csr_create["level"], "Metadata");
    assert_eq!(csr_create["responseStatus"]["code"], 201);

    // a kube-apiserver restart keeps the cluster's state; the other components ride it out
    let mut cp = cp;
    let old_pid = cp.pid("kube-apiserver");
    cp.restart_apiserver();
    assert_ne!(cp.pid("kube-apiserver"), old_pid);
    let out = cp.kubectl_with(&bootstrap).args(["get", "csr", &csr_name, "-o", "name"]).ok();
    assert_eq!(out.trim(), format!("certificatesigningrequest.certificates.k8s.io/{csr_name}"));
    for c in ["etcd", "kube-controller-manager", "kube-scheduler"] {
        let pid = cp.pid(c).unwrap();
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "{c} died across the kube-apiserver restart");
    }
}

/// Anonymous HTTPS GET with curl inside `ns`, trusting `ca`; (HTTP status, body).
fn curl(ns: &Netns, ca: &Path, url: &str) -> (u16, String) {
    let out = ns
        .command("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "curl {url}: {text} {}", String::from_utf8_lossy(&out.stderr));
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A kubeconfig that authenticates with a bearer token (what a kubelet's bootstrap-kubeconfig is).
fn write_token_kubeconfig(path: &Path, server: &str, ca: &Path, token: &str) {
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{ "name": "kubernetes", "cluster": { "server": server, "certificate-authority": ca } }],
        "users": [{ "name": "tls-bootstrap-token-user", "user": { "token": token } }],
        "contexts": [{ "name": "bootstrap", "context": { "cluster": "kubernetes", "user": "tls-bootstrap-token-user" } }],
        "current-context": "bootstrap",
    });
    std::fs::write(path, doc.to_string()).unwrap();
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
