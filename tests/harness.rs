//! Self-tests of the e2e harness, independent of `berth up`: a private containerd in a netns runs
//! a CRI pod from the locally built images (CNI: the distribution's reference plugins), and a
//! local registry serves a real CRI PullImage.
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::containerd::{render_config, ConfigParams, ContainerdOptions};
use common::{Containerd, Netns, Registry};
use k8s_cri::v1 as cri;

#[test]
fn containerd_config_has_private_paths_and_cri_settings() {
    let p = ConfigParams {
        dir: "/tmp/x".into(),
        socket: "/tmp/x/containerd.sock".into(),
        cni_bin_dir: "/tmp/x/cni-bin".into(),
        cni_conf_dir: "/tmp/x/net.d".into(),
        runc_root: "/tmp/x/runc".into(),
        snapshotter: "native".into(),
        restrict_oom_score_adj: true,
        sandbox_image: common::PAUSE_IMAGE.into(),
        registry_port: 5000,
    };
    let c = render_config(&p);
    let v: toml::Value = toml::from_str(&c).expect("valid TOML");
    assert_eq!(v["version"].as_integer(), Some(2));
    assert_eq!(v["root"].as_str(), Some("/tmp/x/root"));
    assert_eq!(v["state"].as_str(), Some("/tmp/x/state"));
    assert_eq!(v["grpc"]["address"].as_str(), Some("/tmp/x/containerd.sock"));
    let cri = &v["plugins"]["io.containerd.grpc.v1.cri"];
    assert_eq!(cri["sandbox_image"].as_str(), Some("berth.local/pause:3.10"));
    assert_eq!(cri["restrict_oom_score_adj"].as_bool(), Some(true));
    assert_eq!(cri["stream_server_address"].as_str(), Some("127.0.0.1"));
    assert_eq!(cri["containerd"]["snapshotter"].as_str(), Some("native"));
    assert_eq!(cri["containerd"]["runtimes"]["runc"]["options"]["Root"].as_str(), Some("/tmp/x/runc"));
    assert_eq!(cri["cni"]["bin_dir"].as_str(), Some("/tmp/x/cni-bin"));
    assert_eq!(cri["cni"]["conf_dir"].as_str(), Some("/tmp/x/net.d"));
    assert_eq!(
        cri["registry"]["mirrors"]["127.0.0.1:5000"]["endpoint"][0].as_str(),
        Some("http://127.0.0.1:5000")
    );
}

fn sandbox_config(name: &str, uid: &str, log_dir: &Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        labels: HashMap::from([
            ("io.kubernetes.pod.name".to_string(), name.to_string()),
            ("io.kubernetes.pod.namespace".to_string(), "default".to_string()),
            ("io.kubernetes.pod.uid".to_string(), uid.to_string()),
        ]),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption::default()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs sandbox + one busybox container via CRI; returns (sandbox id, container id, pod IP).
fn run_pod(c: &Containerd, name: &str, image: &str, cmd: &[&str], log_dir: &Path) -> (String, String, String) {
    let uid = format!("uid-{name}-{}", std::process::id());
    let sc = sandbox_config(name, &uid, log_dir);
    let mut rt = c.runtime_client();
    let sandbox_id = common::wait_until("CRI RunPodSandbox (CNI config picked up)", Duration::from_secs(60), || {
        c.block_on(rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sc.clone()),
            runtime_handler: String::new(),
        }))
        .map(|r| Some(r.into_inner().pod_sandbox_id))
        .map_err(|e| e.message().to_string())
    });
    let ip = c
        .block_on(rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id.clone(),
            verbose: false,
        }))
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    let cc = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "main".into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: image.into(), ..Default::default() }),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: "main/0.log".into(),
        labels: HashMap::from([("io.kubernetes.container.name".to_string(), "main".to_string())]),
        ..Default::default()
    };
    let cid = c
        .block_on(rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.clone(),
            config: Some(cc),
            sandbox_config: Some(sc),
        }))
        .expect("CRI CreateContainer")
        .into_inner()
        .container_id;
    c.block_on(rt.start_container(cri::StartContainerRequest { container_id: cid.clone() }))
        .expect("CRI StartContainer");
    (sandbox_id, cid, ip)
}

fn remove_pod(c: &Containerd, sandbox_id: &str) {
    let mut rt = c.runtime_client();
    c.block_on(rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sandbox_id.into() }))
        .expect("StopPodSandbox");
    c.block_on(rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sandbox_id.into() }))
        .expect("RemovePodSandbox");
}

/// A conflist for the reference plugins (bridge + host-local) with IPAM state under `ipam_dir`.
fn write_reference_conflist(c: &Containerd, ns: &Netns, ipam_dir: &Path) {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "harness",
        "plugins": [{
            "type": "bridge", "bridge": "hbr0", "isGateway": true, "ipMasq": false,
            "ipam": {"type": "host-local", "dataDir": ipam_dir,
                     "ranges": [[{"subnet": format!("10.245.{}.0/24", ns.index)}]]}
        }]
    });
    std::fs::write(c.cni_conf_dir.join("10-harness.conflist"), conf.to_string()).unwrap();
}

fn reference_plugins() -> Option<PathBuf> {
    let d = PathBuf::from("/usr/lib/cni");
    (d.join("bridge").exists() && d.join("host-local").exists() && d.join("loopback").exists()).then_some(d)
}

/// The CRI round trip both CNI variants go through: images present, sandbox + httpd container,
/// HTTP from the node, ExecSync, streaming URL on loopback, log file, then stop/remove and the IP
/// released in the IPAM dir.
fn cri_pod_roundtrip(ns: &Netns, c: &Containerd, ipam_dir: &Path, subnet_prefix: &str) {
    eprintln!(
        "containerd pid {:?}: snapshotter={} restrict_oom_score_adj={}",
        c.pid(),
        c.snapshotter,
        c.restrict_oom_score_adj
    );
    let refs = c.image_refs();
    for want in [common::BUSYBOX_IMAGE, common::PAUSE_IMAGE] {
        assert!(refs.iter().any(|r| r == want), "{want} not imported: {refs:?}");
    }
    let logs = c.root.join("pods/default_web_x");
    std::fs::create_dir_all(&logs).unwrap();

    let (sandbox, cid, ip) = run_pod(c, "web", common::BUSYBOX_IMAGE, &["httpd", "-f", "-p", "8080"], &logs);
    assert!(ip.starts_with(subnet_prefix), "pod IP {ip:?} not in {subnet_prefix}*");
    eprintln!("sandbox {sandbox} container {cid} ip {ip}");
    // runc state lives under the private runc root (no collision with a system containerd)
    let runc_state = c.runc_root.join("k8s.io").join(&cid);
    assert!(runc_state.exists(), "{} missing: runc Root option not honoured", runc_state.display());
    assert!(!ipam_records(ipam_dir, &ip).is_empty(), "no IPAM record of {ip} in {}", ipam_dir.display());

    // HTTP from the node netns to the pod
    let resp = common::wait_until("httpd in the pod to answer", Duration::from_secs(30), || {
        common::http_get_in_netns(&ns.name, &ip, 8080, "/").map(Some)
    });
    assert!(resp.contains("berth busybox"), "unexpected response: {resp}");

    // exec through CRI: hostname is the pod's
    let mut rt = c.runtime_client();
    let ex = c
        .block_on(rt.exec_sync(cri::ExecSyncRequest { container_id: cid.clone(), cmd: vec!["hostname".into()], timeout: 10 }))
        .expect("ExecSync")
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&ex.stdout).trim(), "web");
    // the streaming server (what `kubectl exec` goes through) listens on loopback
    let url = c
        .block_on(rt.exec(cri::ExecRequest {
            container_id: cid.clone(),
            cmd: vec!["hostname".into()],
            stdout: true,
            ..Default::default()
        }))
        .expect("Exec")
        .into_inner()
        .url;
    assert!(url.starts_with("http://127.0.0.1:"), "streaming URL {url}");

    // the container's log file (CRI format) is where kubelet expects it
    let log = logs.join("main/0.log");
    assert!(log.exists(), "{} missing", log.display());

    remove_pod(c, &sandbox);
    assert!(c.list_containers().is_empty(), "containers left: {:?}", c.list_containers());
    assert!(c.list_sandboxes().is_empty(), "sandboxes left: {:?}", c.list_sandboxes());
    let left = ipam_records(ipam_dir, &ip);
    assert!(left.is_empty(), "IP {ip} not released: {left:?}");
}

/// Files in an IPAM dir recording `ip` (named after it, host-local style, or mentioning it).
fn ipam_records(dir: &Path, ip: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            // host-local style bookkeeping, not an allocation
            if name.starts_with("last_reserved_ip") || name == "lock" {
                return false;
            }
            name == ip
                || (p.is_file()
                    && std::fs::read_to_string(p).is_ok_and(|s| {
                        s.split(|c: char| !(c.is_ascii_digit() || c == '.')).any(|w| w == ip)
                    }))
        })
        .collect()
}

#[test]
fn containerd_in_netns_runs_cri_pod_from_local_images() {
    if !common::e2e_enabled("containerd_in_netns_runs_cri_pod_from_local_images") {
        return;
    }
    let _serial = common::serial();
    let Some(plugins) = reference_plugins() else {
        panic!("reference CNI plugins missing in /usr/lib/cni (package containernetworking-plugins)");
    };
    let ns = Netns::new();
    let c = Containerd::start_with(&ns, ContainerdOptions { cni_bin_dir: Some(plugins), ..Default::default() });
    let ipam = c.root.join("ipam");
    write_reference_conflist(&c, &ns, &ipam);
    cri_pod_roundtrip(&ns, &c, &ipam.join("harness"), &format!("10.245.{}.", ns.index));
}

/// The same round trip with the workspace's berth-cni and the conflist the agent writes
/// (docs/CONTRACTS.md), before any `berth up` is involved.
#[test]
fn containerd_runs_cri_pod_with_berth_cni() {
    if !common::e2e_enabled("containerd_runs_cri_pod_with_berth_cni") {
        return;
    }
    let _serial = common::serial();
    let ns = Netns::new();
    let c = Containerd::start(&ns);
    assert!(c.cni_bin_dir.join("berth-cni").exists() && c.cni_bin_dir.join("loopback").exists());
    let data = c.root.join("cni-data");
    use berth::agent::cni_conf;
    let cidr = format!("10.244.{}.0/24", ns.index).parse().unwrap();
    let conf = cni_conf::render(cni_conf::NETWORK_NAME, "berth0", 1500, cidr, &data).unwrap();
    cni_conf::write_atomic(&c.cni_conf_dir, &conf).unwrap();
    cri_pod_roundtrip(&ns, &c, &data.join("berth"), &format!("10.244.{}.", ns.index));
}

#[test]
fn local_registry_serves_real_cri_pull() {
    if !common::e2e_enabled("local_registry_serves_real_cri_pull") {
        return;
    }
    let _serial = common::serial();
    let ns = Netns::new();
    let c = Containerd::start_with(
        &ns,
        ContainerdOptions { cni_bin_dir: reference_plugins(), ..Default::default() },
    );
    let reg = Registry::start(&ns, common::containerd::REGISTRY_PORT);
    let remote = reg.seed_busybox_remote(&c);
    assert_eq!(reg.tags(common::BUSYBOX_REMOTE_REPO), vec!["1.35".to_string()]);
    let refs = c.image_refs();
    assert!(!refs.iter().any(|r| r.contains("busybox-remote")), "still local: {refs:?}");

    let mut img = c.image_client();
    let spec = cri::ImageSpec { image: remote.clone(), ..Default::default() };
    let before = c
        .block_on(img.image_status(cri::ImageStatusRequest { image: Some(spec.clone()), verbose: false }))
        .expect("ImageStatus")
        .into_inner();
    assert!(before.image.is_none(), "image present before pull");
    let pulled = c
        .block_on(img.pull_image(cri::PullImageRequest { image: Some(spec.clone()), ..Default::default() }))
        .expect("CRI PullImage through the local registry")
        .into_inner();
    assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");
    let after = c
        .block_on(img.image_status(cri::ImageStatusRequest { image: Some(spec), verbose: false }))
        .expect("ImageStatus")
        .into_inner();
    let tags = after.image.map(|i| i.repo_tags).unwrap_or_default();
    assert!(tags.contains(&remote), "repo tags {tags:?}");

    // a name the registry does not have: a NotFound-ish pull error (what ErrImagePull reports)
    let missing = c.block_on(img.pull_image(cri::PullImageRequest {
        image: Some(cri::ImageSpec { image: reg.name("berth/nope:0.0"), ..Default::default() }),
        ..Default::default()
    }));
    let err = missing.expect_err("pulling a nonexistent image must fail");
    eprintln!("missing image pull error: {}", err.message());
    assert!(err.message().contains("not found"), "{}", err.message());
}
