//! Issue 6 §4, end to end and unmocked: the real control plane (etcd, kube-apiserver with
//! Node,RBAC + NodeRestriction, kube-controller-manager, kube-scheduler, built by
//! upstream/build.sh) in one network namespace; a Berth node with its own containerd in another,
//! linked like two hosts; `berth join <endpoint> --token … --discovery-token-ca-cert-hash …`; then
//! /usr/bin/kubectl with the admin kubeconfig, and the node's own credentials for what
//! NodeRestriction must refuse. The kube-apiserver audit log (Metadata level) says which API calls
//! the node made; the distinct verb + resource pairs are printed for the README.
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::containerd::wait_no_containers_for_pod;
use common::join::{BerthJoin, JoinConfig};
use common::{Containerd, Netns, UpstreamControlPlane};
use serde_json::Value;

const NODE: &str = "berth-worker";
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const POD_TIMEOUT: Duration = Duration::from_secs(120);

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn get_json(cp: &UpstreamControlPlane, args: &[&str]) -> Option<Value> {
    let out = cp.kubectl().args(args).args(["-o", "json"]).output_raw();
    out.status.success().then(|| json(&String::from_utf8_lossy(&out.stdout)))
}

fn ready(node: &Value) -> Option<String> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str().map(str::to_owned))
}

fn wait_node_ready(cp: &UpstreamControlPlane, j: &mut BerthJoin, timeout: Duration) -> Value {
    common::wait_until(&format!("node {NODE} Ready"), timeout, || {
        if let Err(e) = j.alive() {
            panic!("{e}");
        }
        match get_json(cp, &["get", "node", NODE]) {
            Some(n) if ready(&n).as_deref() == Some("True") => Ok(Some(n)),
            Some(n) => Err(format!("Ready={:?} {}", ready(&n), n["status"]["conditions"])),
            None => Err("node not found".to_owned()),
        }
    })
}

fn lease_renew_time(cp: &UpstreamControlPlane) -> Option<String> {
    get_json(cp, &["-n", "kube-node-lease", "get", "lease", NODE]).and_then(|l| l["spec"]["renewTime"].as_str().map(str::to_owned))
}

fn wait_lease_renewed_after(cp: &UpstreamControlPlane, j: &mut BerthJoin, after: &str) -> String {
    common::wait_until("the node Lease to be renewed", Duration::from_secs(60), || {
        if let Err(e) = j.alive() {
            panic!("{e}");
        }
        match lease_renew_time(cp) {
            Some(t) if t.as_str() > after => Ok(Some(t)),
            other => Err(format!("renewTime {other:?}, not after {after}")),
        }
    })
}

fn pod_manifest(name: &str, message: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": {
            // no token volume: berth does not mount projected service-account tokens yet
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "main", "image": common::BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", format!("echo {message}; exec sleep 3600")],
            }],
        },
    })
    .to_string()
}

fn wait_pod_running(cp: &UpstreamControlPlane, j: &mut BerthJoin, name: &str) -> Value {
    common::wait_until(&format!("pod {name} Running on {NODE}"), POD_TIMEOUT, || {
        if let Err(e) = j.alive() {
            panic!("{e}");
        }
        match get_json(cp, &["get", "pod", name]) {
            Some(p) if p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["ready"] == true => Ok(Some(p)),
            Some(p) => Err(format!("nodeName={} phase={} status={}", p["spec"]["nodeName"], p["status"]["phase"], p["status"])),
            None => Err("pod not found".to_owned()),
        }
    })
}

fn wait_pod_gone(cp: &UpstreamControlPlane, name: &str) {
    common::wait_until(&format!("pod {name} to be gone"), POD_TIMEOUT, || {
        let out = cp.kubectl().args(["get", "pod", name, "-o", "name"]).output_raw();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() && err.contains("NotFound") {
            Ok(Some(()))
        } else {
            Err(format!("{} {err}", String::from_utf8_lossy(&out.stdout).trim()))
        }
    });
}

/// Audit events (one JSON object per line) of `user`.
fn audit_events(cp: &UpstreamControlPlane, user: &str) -> Vec<Value> {
    std::fs::read_to_string(cp.audit_log())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["user"]["username"] == user)
        .collect()
}

fn is_kubectl(e: &Value) -> bool {
    e["userAgent"].as_str().is_some_and(|ua| ua.starts_with("kubectl"))
}

/// "verb resource[/subresource]" (with the API group when not core) of an audit event.
fn verb_resource(e: &Value) -> String {
    let o = &e["objectRef"];
    let mut r = o["resource"].as_str().unwrap_or("(non-resource)").to_owned();
    if let Some(g) = o["apiGroup"].as_str().filter(|g| !g.is_empty()) {
        r = format!("{r}.{g}");
    }
    if let Some(s) = o["subresource"].as_str() {
        r = format!("{r}/{s}");
    }
    if o.is_null() {
        r = e["requestURI"].as_str().unwrap_or("").split('?').next().unwrap_or("").to_owned();
    }
    format!("{} {r}", e["verb"].as_str().unwrap_or(""))
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok())
}

/// A client certificate (PEM cert, key) for system:node:<NODE> in system:nodes, signed by the
/// cluster CA, valid from 10 s ago for `validity`.
fn short_lived_node_cert(cp: &UpstreamControlPlane, validity: Duration) -> (String, String) {
    use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose};
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "system:nodes");
    dn.push(DnType::CommonName, format!("system:node:{NODE}"));
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    p.not_before = now - Duration::from_secs(10);
    p.not_after = now - Duration::from_secs(10) + validity;
    let issuer = Issuer::from_ca_cert_pem(&cp.ca().cert_pem, KeyPair::from_pem(cp.ca().key_pem()).unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// `berth join --config` with a kubeadm JoinConfiguration using file discovery (a kubeconfig
/// holding the cluster's server and CA) and a TLS bootstrap token: the node registers with the
/// configured labels. The node is stopped and deleted again before the main test.
fn join_with_config_file(cp: &UpstreamControlPlane, node_ns: &Netns, c: &Containerd) {
    use base64::Engine;
    let cfg = JoinConfig::new(node_ns, c, "file-node", "file");
    let discovery = cfg.state_dir.parent().unwrap().join("discovery.conf");
    let ca = base64::engine::general_purpose::STANDARD.encode(&cp.ca().cert_pem);
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "kubernetes", "cluster": {"server": cp.server(), "certificate-authority-data": ca}}],
        "contexts": [], "users": [],
    });
    std::fs::write(&discovery, kubeconfig.to_string()).unwrap();
    let config = cfg.state_dir.parent().unwrap().join("join.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  file:\n    kubeConfigPath: {}\n  tlsBootstrapToken: {}\nnodeRegistration:\n  name: file-node\n  kubeletExtraArgs:\n  - name: node-labels\n    value: via=config\n",
            discovery.display(),
            cp.token()
        ),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let mut j = BerthJoin::start(cfg.clone(), &["--config", &config_arg]);
    j.wait_joined(JOIN_TIMEOUT);
    let node = common::wait_until("node file-node registered", Duration::from_secs(60), || {
        if let Err(e) = j.alive() {
            panic!("{e}");
        }
        Ok::<_, String>(get_json(cp, &["get", "node", "file-node"]))
    });
    assert_eq!(node["metadata"]["labels"]["via"], "config", "nodeRegistration.kubeletExtraArgs node-labels");
    j.stop();
    cp.kubectl().args(["delete", "node", "file-node"]).ok();
}

/// The bad inputs: each exits non-zero naming its cause, and writes no kubeconfig.
fn bad_inputs(cp: &UpstreamControlPlane, node_ns: &Netns, c: &Containerd) {
    let cfg = JoinConfig::new(node_ns, c, "bad-node", "bad");
    let endpoint = cp.endpoint();
    let hash = cp.ca_cert_hash();
    let wrong_hash = format!("sha256:{}", "00".repeat(32));
    let wrong_secret = format!("{}.ffffffffffffffff", cp.token().split('.').next().unwrap());
    let unreachable = format!("{}:1", cp.node_ip());
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("wrong token secret", vec![&endpoint, "--token", &wrong_secret, "--discovery-token-ca-cert-hash", &hash], "wrong token secret"),
        ("wrong CA hash", vec![&endpoint, "--token", cp.token(), "--discovery-token-ca-cert-hash", &wrong_hash], "does not match --discovery-token-ca-cert-hash"),
        ("unreachable API server", vec![&unreachable, "--token", cp.token(), "--discovery-token-ca-cert-hash", &hash, "--discovery-timeout", "3s"], "unreachable"),
        ("no CA hash", vec![&endpoint, "--token", cp.token()], "--discovery-token-unsafe-skip-ca-verification"),
        ("--control-plane", vec![&endpoint, "--token", cp.token(), "--discovery-token-ca-cert-hash", &hash, "--control-plane"], "--control-plane is not supported"),
        ("malformed token", vec![&endpoint, "--token", "not-a-token", "--discovery-token-ca-cert-hash", &hash], "invalid bootstrap token"),
    ];
    for (what, args, expect) in cases {
        let out = cfg.join_to_exit(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: berth join succeeded");
        assert!(stderr.contains(expect), "{what}: stderr does not name the cause ({expect:?}):\n{stderr}");
        assert!(!stderr.contains("ffffffffffffffff") && !stderr.contains(&cp.token()[7..]), "{what}: the token secret leaks:\n{stderr}");
        assert!(!cfg.node_kubeconfig().exists(), "{what}: a kubeconfig was written");
        assert!(!stderr.contains("agent starting"), "{what}: an agent was started");
    }
    assert!(get_json(cp, &["get", "node", "bad-node"]).is_none(), "a failed join registered a Node");
}

#[test]
fn berth_joins_an_upstream_control_plane() {
    if !common::e2e_enabled("berth_joins_an_upstream_control_plane") {
        return;
    }
    let _serial = common::serial();
    let cp_ns = Netns::new();
    let node_ns = Netns::new();
    cp_ns.connect(&node_ns);
    let mut cp = UpstreamControlPlane::start(&cp_ns).expect("upstream control plane");
    let c = Containerd::start(&node_ns);

    bad_inputs(&cp, &node_ns, &c);
    join_with_config_file(&cp, &node_ns, &c);

    // --- join -----------------------------------------------------------------------------
    // serverTLSBootstrap on, so the kubelet API's certificate comes from a kubelet-serving CSR
    // (approved below by the admin, as kubeadm's docs have it).
    let mut kcm = get_json(&cp, &["-n", "kube-system", "get", "configmap", "kubelet-config"]).unwrap();
    let kubelet = kcm["data"]["kubelet"].as_str().unwrap().to_owned();
    kcm["data"]["kubelet"] = Value::String(format!("{kubelet}serverTLSBootstrap: true\n"));
    let out = cp.kubectl().args(["replace", "-f", "-"]).stdin(&kcm.to_string());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = JoinConfig::new(&node_ns, &c, NODE, "ok");
    let node_kubeconfig = cfg.node_kubeconfig();
    let (endpoint, hash) = (cp.endpoint(), cp.ca_cert_hash());
    let t0 = Instant::now();
    let mut j = BerthJoin::start(
        cfg.clone(),
        &[
            &endpoint,
            "--token",
            cp.token(),
            "--discovery-token-ca-cert-hash",
            &hash,
            "--node-labels",
            "tier=berth,topology.kubernetes.io/zone=z1",
            "--serving-cert-timeout",
            "90s",
        ],
    );
    j.wait_joined(JOIN_TIMEOUT);
    let join_time = t0.elapsed();
    let serving_csr = common::wait_until("the node's kubelet-serving CSR", Duration::from_secs(60), || {
        if let Err(e) = j.alive() {
            panic!("{e}");
        }
        let csrs = get_json(&cp, &["get", "csr"]).unwrap();
        let found = csrs["items"].as_array().unwrap().iter().find_map(|c| {
            (c["spec"]["signerName"] == "kubernetes.io/kubelet-serving" && c["spec"]["username"] == format!("system:node:{NODE}"))
                .then(|| c["metadata"]["name"].as_str().unwrap().to_owned())
        });
        Ok::<_, String>(found)
    });
    cp.kubectl().args(["certificate", "approve", &serving_csr]).ok();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&node_kubeconfig).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "node kubeconfig mode");
    }
    let node = wait_node_ready(&cp, &mut j, READY_TIMEOUT);
    let ready_time = t0.elapsed();
    eprintln!("join: kubeconfig after {:.1}s, node Ready after {:.1}s", join_time.as_secs_f64(), ready_time.as_secs_f64());

    // What a kubelet reports.
    let st = &node["status"];
    let info = &st["nodeInfo"];
    assert!(info["containerRuntimeVersion"].as_str().unwrap().starts_with("containerd://"), "{info}");
    assert!(info["kubeletVersion"].as_str().unwrap().starts_with('v'), "{info}");
    assert_eq!(info["operatingSystem"], "linux");
    assert!(!info["bootID"].as_str().unwrap().is_empty(), "{info}");
    for k in ["cpu", "memory", "pods", "ephemeral-storage"] {
        assert!(st["capacity"][k].is_string(), "capacity.{k}: {st}");
        assert!(st["allocatable"][k].is_string(), "allocatable.{k}: {st}");
    }
    let addrs: Vec<(String, String)> = st["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["type"].as_str().unwrap().to_owned(), a["address"].as_str().unwrap().to_owned()))
        .collect();
    assert!(addrs.contains(&("InternalIP".into(), node_ns.node_ip.to_string())), "{addrs:?}");
    assert!(addrs.contains(&("Hostname".into(), NODE.into())), "{addrs:?}");
    assert_eq!(st["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], NODE);
    assert_eq!(labels["tier"], "berth", "--node-labels");
    assert_eq!(labels["topology.kubernetes.io/zone"], "z1", "--node-labels");
    // The kubelet API serves the cluster-signed certificate: curl verifies it with the cluster CA.
    let healthz = cp
        .command("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(cp.ca_cert())
        .arg("--cert")
        .arg(cp.dir().join("pki/apiserver-kubelet-client.crt"))
        .arg("--key")
        .arg(cp.dir().join("pki/apiserver-kubelet-client.key"))
        .arg(format!("https://{}:10250/healthz", node_ns.node_ip))
        .output()
        .unwrap();
    assert!(healthz.status.success(), "kubelet API certificate not verified by the cluster CA: {}", String::from_utf8_lossy(&healthz.stderr));
    assert_eq!(String::from_utf8_lossy(&healthz.stdout).trim(), "ok");
    let pod_cidr = node["spec"]["podCIDR"].as_str().expect("podCIDR from --allocate-node-cidrs");
    assert!(pod_cidr.starts_with("10.244."), "{pod_cidr}");
    // The node's client certificate came from the CSR API.
    let csrs = get_json(&cp, &["get", "csr"]).unwrap();
    let client_csr = csrs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet" && c["spec"]["username"].as_str().is_some_and(|u| u.starts_with("system:bootstrap:")))
        .unwrap_or_else(|| panic!("no bootstrap CSR in {csrs}"));
    assert!(client_csr["status"]["certificate"].is_string(), "{client_csr}");

    // --- Lease ----------------------------------------------------------------------------
    let first = common::wait_until("the node Lease", Duration::from_secs(30), || Ok::<_, String>(lease_renew_time(&cp)));
    wait_lease_renewed_after(&cp, &mut j, &first);

    // --- a pod placed by the real scheduler -----------------------------------------------
    common::wait_until("the default ServiceAccount", Duration::from_secs(60), || {
        Ok::<_, String>(get_json(&cp, &["-n", "default", "get", "serviceaccount", "default"]).map(|_| ()))
    });
    let out = cp.kubectl().args(["apply", "-f", "-"]).stdin(&pod_manifest("web", "hello-from-berth"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pod = wait_pod_running(&cp, &mut j, "web");
    assert_eq!(pod["spec"]["nodeName"], NODE, "placed by kube-scheduler");
    let pod_ip = pod["status"]["podIP"].as_str().unwrap_or_default();
    let net: ipnetwork::Ipv4Network = pod_cidr.parse().unwrap();
    assert!(net.contains(pod_ip.parse().unwrap()), "pod IP {pod_ip} outside {pod_cidr}");
    let logs = common::wait_until("kubectl logs web", Duration::from_secs(30), || {
        let out = cp.kubectl().args(["logs", "web"]).output_raw();
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        if s.contains("hello-from-berth") {
            Ok(Some(s))
        } else {
            Err(format!("{s} {}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    assert!(logs.contains("hello-from-berth"));
    let exec = cp.kubectl().args(["exec", "web", "--", "sh", "-c", "echo exec-$((40+2))"]).ok();
    assert_eq!(exec.trim(), "exec-42");

    // --- NodeRestriction holds --------------------------------------------------------------
    let other_node = serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "other-node"}}).to_string();
    assert!(cp.kubectl().args(["apply", "-f", "-"]).stdin(&other_node).status.success());
    let foreign_pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "foreign", "namespace": "default"},
        "spec": {"nodeName": "other-node", "automountServiceAccountToken": false,
                 "containers": [{"name": "c", "image": common::BUSYBOX_IMAGE}]},
    })
    .to_string();
    assert!(cp.kubectl().args(["apply", "-f", "-"]).stdin(&foreign_pod).status.success());
    let as_node = || cp.kubectl_with(&node_kubeconfig);
    let denied: Vec<(&str, Vec<&str>)> = vec![
        ("label another Node", vec!["label", "node", "other-node", "owned=yes"]),
        ("patch another Node's status", vec!["patch", "node", "other-node", "--subresource=status", "--type=merge", "-p", r#"{"status":{"capacity":{"pods":"1"}}}"#]),
        ("delete another Node", vec!["delete", "node", "other-node", "--wait=false"]),
        ("give itself a node-role label", vec!["label", "node", NODE, "node-role.kubernetes.io/control-plane="]),
        ("patch the status of a pod on another node", vec!["patch", "pod", "foreign", "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Failed"}}"#]),
        ("delete a pod on another node", vec!["delete", "pod", "foreign", "--wait=false"]),
        ("list all pods", vec!["get", "pods", "-A"]),
    ];
    for (what, args) in denied {
        let out = as_node().args(&args).output_raw();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && (err.contains("Forbidden") || err.contains("forbidden")), "the node could {what}: {err}");
    }
    // ...and suffices: its own Node and pods are readable with its credentials.
    as_node().args(["get", "node", NODE]).ok();
    as_node().args(["get", "pods", "-A", "--field-selector", &format!("spec.nodeName={NODE}")]).ok();

    // --- deleting the pod through the API stops it ------------------------------------------
    cp.kubectl().args(["delete", "pod", "web", "--wait=false"]).ok();
    wait_pod_gone(&cp, "web");
    wait_no_containers_for_pod(&c, "web", POD_TIMEOUT);

    // --- the agent rides out a kube-apiserver restart ----------------------------------------
    let before = lease_renew_time(&cp).unwrap();
    cp.restart_apiserver();
    j.alive().expect("agent survived the kube-apiserver restart");
    wait_lease_renewed_after(&cp, &mut j, &before);
    wait_node_ready(&cp, &mut j, READY_TIMEOUT);
    let out = cp.kubectl().args(["apply", "-f", "-"]).stdin(&pod_manifest("after-restart", "still-here"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_pod_running(&cp, &mut j, "after-restart");
    let rss = j.pid().and_then(vm_rss_kib);
    cp.kubectl().args(["delete", "pod", "after-restart", "--wait=false"]).ok();
    wait_pod_gone(&cp, "after-restart");

    // --- restarted the way systemd runs it (`berth agent` on the joined credentials), the agent
    // adopts the running pod instead of restarting it (the reason for KillMode=process) --------
    let out = cp.kubectl().args(["apply", "-f", "-"]).stdin(&pod_manifest("survivor", "survives"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p = wait_pod_running(&cp, &mut j, "survivor");
    let container = p["status"]["containerStatuses"][0]["containerID"].as_str().unwrap().to_owned();
    let before = lease_renew_time(&cp).unwrap();
    j.restart_as_agent();
    wait_lease_renewed_after(&cp, &mut j, &before);
    wait_node_ready(&cp, &mut j, READY_TIMEOUT);
    let p = wait_pod_running(&cp, &mut j, "survivor");
    assert_eq!(p["status"]["containerStatuses"][0]["containerID"], container.as_str(), "the container was replaced");
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    cp.kubectl().args(["delete", "pod", "survivor", "--wait=false"]).ok();
    wait_pod_gone(&cp, "survivor");
    wait_no_containers_for_pod(&c, "survivor", POD_TIMEOUT);

    // --- client certificate rotation: a node certificate near its end is renewed through the CSR
    // API with the current credentials (auto-approved as selfnodeclient), the kubeconfig is
    // replaced and the agent carries on with the new certificate after the old one expired ------
    let short_lived = Duration::from_secs(60);
    let (cert, key) = short_lived_node_cert(&cp, short_lived);
    let (_, old_expiry) = berth::agent::join::bootstrap::validity(&cert).unwrap();
    berth::agent::join::write_node_kubeconfig(&node_kubeconfig, &cp.server(), &cp.ca().cert_pem, &cert, &key, NODE).unwrap();
    j.restart_as_agent();
    let rotated = common::wait_until("the client certificate to be rotated", Duration::from_secs(120), || {
        if let Err(e) = j.alive() {
            panic!("{e}");
        }
        let now = berth::agent::join::bootstrap::kubeconfig_client_cert(&node_kubeconfig).map_err(|e| e.to_string())?;
        let (_, expiry) = berth::agent::join::bootstrap::validity(&now)?;
        Ok::<_, String>((now != cert && expiry > old_expiry + Duration::from_secs(3600)).then_some(now))
    });
    assert!(rotated.contains("BEGIN CERTIFICATE"));
    // Renewals after the old certificate expired prove the agent uses the new one.
    let expired_at = jiff::Timestamp::try_from(old_expiry).unwrap().to_string();
    wait_lease_renewed_after(&cp, &mut j, &expired_at);
    wait_node_ready(&cp, &mut j, READY_TIMEOUT);
    assert!(j.log_text().contains("client certificate rotated"));

    // --- no 403 for the agent; the calls it made ----------------------------------------------
    let log = j.log_text();
    // (not a bare "403": resourceVersions, UIDs and durations in the log contain those digits)
    let forbidden: Vec<&str> = log
        .lines()
        .filter(|l| ["code: 403", "403 Forbidden", "status=403", "\"code\":403", "Forbidden", "forbidden"].iter().any(|p| l.contains(p)))
        .collect();
    assert!(forbidden.is_empty(), "the agent was refused:\n{}", forbidden.join("\n"));
    let user = format!("system:node:{NODE}");
    let events = audit_events(&cp, &user);
    let agent_events: Vec<&Value> = events.iter().filter(|e| !is_kubectl(e)).collect();
    assert!(!agent_events.is_empty(), "no audit events of {user} in {}", cp.audit_log().display());
    let refused: Vec<String> = agent_events
        .iter()
        .filter(|e| e["responseStatus"]["code"] == 403)
        .map(|e| format!("{} {}", verb_resource(e), e["responseStatus"]["message"]))
        .collect();
    assert!(refused.is_empty(), "403s for the agent in the audit log:\n{}", refused.join("\n"));
    let calls: BTreeSet<String> = agent_events.iter().map(|e| verb_resource(e)).collect();
    let bootstrap: BTreeSet<String> =
        audit_events(&cp, "system:bootstrap:abcdef").iter().filter(|e| !is_kubectl(e)).map(verb_resource).collect();
    let anonymous: BTreeSet<String> = audit_events(&cp, "system:anonymous").iter().map(verb_resource).collect();
    eprintln!("API calls of the joined node ({user}), distinct verb + resource from the audit log:");
    for c in &calls {
        eprintln!("  {c}");
    }
    eprintln!("API calls with the bootstrap token (system:bootstrap:abcdef): {bootstrap:?}");
    eprintln!("anonymous API calls (discovery): {anonymous:?}");
    eprintln!(
        "numbers: join (kubeconfig written) {:.1}s, node Ready {:.1}s, agent RSS {} KiB",
        join_time.as_secs_f64(),
        ready_time.as_secs_f64(),
        rss.map_or("?".into(), |r| r.to_string())
    );
    for must in ["create nodes", "patch nodes/status", "update leases.coordination.k8s.io", "patch pods/status", "watch pods"] {
        assert!(calls.iter().any(|c| c == must), "expected the agent to {must}; it made {calls:?}");
    }
    assert!(bootstrap.contains("create certificatesigningrequests.certificates.k8s.io"), "{bootstrap:?}");
    assert!(anonymous.contains("get configmaps"), "{anonymous:?}");

    // --- berth reset --------------------------------------------------------------------------
    j.stop();
    let env_file = cfg.state_dir.join("default-berth-agent");
    let args: Vec<String> = [
        "reset",
        "--state-dir",
        &cfg.state_dir.display().to_string(),
        "--cni-conf-dir",
        &cfg.cni_conf_dir.display().to_string(),
        "--cni-data-dir",
        &cfg.cni_data_dir.display().to_string(),
        "--env-file",
        &env_file.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = cfg.command(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("$ berth reset\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "berth reset failed");
    assert!(stdout.contains("node.conf"), "{stdout}");
    assert!(stdout.contains("10-berth.conflist"), "{stdout}");
    assert!(!node_kubeconfig.exists());
    assert!(!cfg.cni_conf_dir.join("10-berth.conflist").exists());
}
