//! End-to-end check of the kubelet API against a real, private containerd (ignored by default;
//! needs root, containerd 1.6, runc, the CNI reference plugins in /usr/lib/cni, gcc + busybox-static
//! for images/build.sh):
//!
//!   cargo test -p berth --lib -- --ignored agent::server::cri_itest
//!
//! containerd runs inside a network namespace made for the test (`berth-node-test`), started with
//! `nsenter --net=...`; its CRI streaming server listens on 127.0.0.1 of that namespace, so the
//! scenario (kubelet server + client) runs on a thread that joined the namespace with setns(2).
//! A pod sandbox and a busybox container are created with raw CRI calls; then `/healthz`,
//! `/containerLogs` (plain, limitBytes, timestamps, follow) and `/exec` (a websocket
//! v4.channel.k8s.io exec whose output is read back, and a SPDY/3.1 upgrade answered 101) go through
//! `serve_on` over mutual TLS. Cleanup (also on failure): sandboxes removed through CRI, containerd
//! and its shims stopped by PID, runc state deleted, mounts under the temp dir unmounted, the netns
//! deleted, the temp dir removed.
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent::AgentConfig;
use crate::cri::{api, Cri};

const NETNS: &str = "berth-node-test";
const BUSYBOX: &str = "berth.local/busybox:1.35";
const PAUSE: &str = "berth.local/pause:3.10";

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The private containerd and everything it owns; Drop cleans up.
struct Env {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
}

impl Env {
    fn setup() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("berth-node-test-")
            .tempdir_in("/tmp")
            .unwrap();
        let root = dir.path().to_path_buf();
        // A stale namespace from an interrupted run: remove it first.
        let _ = Command::new("ip")
            .args(["netns", "del", NETNS])
            .stderr(Stdio::null())
            .status();
        let mut env = Env {
            dir: Some(dir),
            root: root.clone(),
            socket: root.join("containerd.sock"),
            child: None,
        };
        run_ok(Command::new("ip").args(["netns", "add", NETNS]));
        run_ok(Command::new("ip").args(["-n", NETNS, "link", "set", "lo", "up"]));

        // Images (busybox + pause) as OCI archives.
        let images = root.join("images");
        run_ok(
            Command::new("bash")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("images/build.sh"))
                .arg(&images),
        );

        // CNI: the reference plugins (bridge, host-local, loopback) and a conflist for them.
        let cni_bin = root.join("cni-bin");
        std::os::unix::fs::symlink("/usr/lib/cni", &cni_bin).unwrap();
        let cni_conf = root.join("net.d");
        std::fs::create_dir_all(&cni_conf).unwrap();
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0", "name": "nodetest",
            "plugins": [{"type": "bridge", "bridge": "nodetest0", "isGateway": true, "ipMasq": false,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]],
                         "dataDir": root.join("ipam").to_string_lossy()}}]
        });
        std::fs::write(cni_conf.join("10-nodetest.conflist"), conflist.to_string()).unwrap();

        let d = root.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
plugin_dir = ""
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/net.d"
    max_conf_num = 1
"#
        );
        let config_path = root.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(root.join("containerd.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{NETNS}"))
            .args(["--", "containerd", "--config"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        env.child = Some(child);
        let sock = env.socket.clone();
        wait_until("containerd's socket", Duration::from_secs(30), || {
            if let Some(Ok(Some(st))) = env.child.as_mut().map(|c| c.try_wait()) {
                panic!("containerd exited: {st}\n{}", env.log_tail());
            }
            Command::new("ctr")
                .arg("-a")
                .arg(&sock)
                .arg("version")
                .output()
                .ok()
                .filter(|o| o.status.success())
        });
        for img in ["busybox.oci.tar", "pause.oci.tar"] {
            run_ok(
                Command::new("ctr")
                    .arg("-a")
                    .arg(&sock)
                    .args([
                        "-n",
                        "k8s.io",
                        "images",
                        "import",
                        "--snapshotter",
                        "overlayfs",
                    ])
                    .arg(images.join(img)),
            );
        }
        env
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.root.join("containerd.log")).unwrap_or_default();
        let lines: Vec<_> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Stop and remove every sandbox (CNI DEL runs, pod netns are removed).
    fn remove_sandboxes(&self) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let sock = self.socket.clone();
        rt.block_on(async move {
            let Ok(cri) = Cri::connect(&sock).await else {
                return;
            };
            let mut r = cri.runtime();
            let Ok(list) = r
                .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
                .await
            else {
                return;
            };
            for s in list.into_inner().items {
                let _ = r
                    .stop_pod_sandbox(api::StopPodSandboxRequest {
                        pod_sandbox_id: s.id.clone(),
                    })
                    .await;
                let _ = r
                    .remove_pod_sandbox(api::RemovePodSandboxRequest {
                        pod_sandbox_id: s.id,
                    })
                    .await;
            }
        });
    }
}

/// PIDs of processes whose command line mentions `needle` (the shims of our containerd).
fn pids_mentioning(needle: &str) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let mut s = Vec::new();
        if std::fs::File::open(e.path().join("cmdline"))
            .and_then(|mut f| f.read_to_end(&mut s))
            .is_ok()
            && String::from_utf8_lossy(&s).contains(needle)
        {
            v.push(pid);
        }
    }
    v
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.remove_sandboxes();
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on the PID of our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Shims started by our containerd carry our socket path in their arguments.
        for pid in pids_mentioning(&self.root.to_string_lossy()) {
            if pid as u32 != std::process::id() {
                // SAFETY: kill(2) on a shim of the containerd this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let runc_root = self.root.join("runc");
        if let Ok(out) = Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["list", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "-f", id])
                    .status();
            }
        }
        // Unmount everything below the temp dir, deepest first.
        let prefix = self.root.to_string_lossy().into_owned();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
        if let Some(d) = self.dir.take() {
            let _ = d.close();
        }
    }
}

/// Join the test's network namespace on this thread.
fn enter_netns() {
    let f = std::fs::File::open(format!("/var/run/netns/{NETNS}")).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: setns(2) with a valid fd; only this thread changes namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Create pod default/p1 (uid u-1) with container c1 running `script`; returns the container id.
async fn create_pod(cri: &Cri, log_root: &Path, script: &str) -> String {
    let mut rt = cri.runtime();
    let pod_labels = labels(&[
        (super::LABEL_POD_NAME, "p1"),
        (super::LABEL_POD_NAMESPACE, "default"),
        (super::LABEL_POD_UID, "u-1"),
    ]);
    let sandbox_config = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: "p1".into(),
            uid: "u-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "p1".into(),
        log_directory: log_root
            .join("default_p1_u-1")
            .to_string_lossy()
            .into_owned(),
        labels: pod_labels.clone(),
        linux: Some(api::LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let sandbox = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    let mut c_labels = pod_labels;
    c_labels.insert(super::LABEL_CONTAINER_NAME.into(), "c1".into());
    let config = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: "c1".into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        labels: c_labels,
        annotations: labels(&[(super::ANNOTATION_RESTART_COUNT, "0")]),
        log_path: "c1/0.log".into(),
        linux: Some(api::LinuxContainerConfig::default()),
        ..Default::default()
    };
    let id = rt
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: sandbox,
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    rt.start_container(api::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("StartContainer");
    id
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
}

/// GET `path`; returns the status and the body stream.
async fn get(
    addr: std::net::SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(http::StatusCode, hyper::body::Incoming), String> {
    let s = connect(addr, tls.clone())
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(s))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "kubelet")
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    Ok((resp.status(), resp.into_body()))
}

async fn get_text(
    addr: std::net::SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
) -> (http::StatusCode, String) {
    let (st, body) = get(addr, tls, path).await.unwrap();
    let b = body.collect().await.unwrap().to_bytes();
    (st, String::from_utf8_lossy(&b).into_owned())
}

/// Write a raw HTTP/1.1 request and read the response head.
async fn raw_upgrade(s: &mut Tls, request: &str) -> String {
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "EOF in response head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Read server websocket frames until close/EOF: (channel -> bytes) for v4.channel.k8s.io.
async fn read_ws_channels(s: &mut Tls) -> HashMap<u8, Vec<u8>> {
    let mut out: HashMap<u8, Vec<u8>> = HashMap::new();
    loop {
        let mut h = [0u8; 2];
        if s.read_exact(&mut h).await.is_err() {
            return out;
        }
        let opcode = h[0] & 0x0f;
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] & 0x7f {
            126 => s.read_u16().await.unwrap() as usize,
            127 => s.read_u64().await.unwrap() as usize,
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        match opcode {
            8 => return out,
            1 | 2 if !payload.is_empty() => out
                .entry(payload[0])
                .or_default()
                .extend_from_slice(&payload[1..]),
            _ => {}
        }
    }
}

async fn scenario(root: PathBuf, socket: PathBuf) {
    let cri = Cri::connect(&socket).await.expect("CRI connect");
    // CRI answers a little after the socket appears.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cri
        .runtime()
        .version(api::VersionRequest {
            version: "v1".into(),
        })
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "CRI did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The node status inputs from the real runtime: version and both conditions ready.
    let health = crate::agent::node::runtime_health(&cri, true).await;
    assert!(
        health.runtime_version.starts_with("containerd://1.6"),
        "{health:?}"
    );
    assert!(
        crate::agent::node::readiness_errors(&health).is_empty(),
        "{health:?}"
    );
    let log_root = root.join("pods");
    let script =
        "echo hello; echo oops >&2; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done";
    let cid = create_pod(&cri, &log_root, script).await;

    // PKI and a node kubeconfig whose CA the kubelet server trusts for clients.
    let pki = crate::pki::ensure_cluster_pki(&root.join("pki"), &["127.0.0.1".to_owned()]).unwrap();
    let (ncert, nkey) =
        crate::pki::issue_client_cert(&pki.ca, "system:node:n1", &["system:nodes"]).unwrap();
    let kubeconfig = root.join("node.conf");
    std::fs::write(
        &kubeconfig,
        crate::pki::kubeconfig_json(
            "https://127.0.0.1:6443",
            &pki.ca.cert_pem,
            &ncert,
            &nkey,
            "node",
            "default",
        ),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = Arc::new(AgentConfig {
        node_name: "n1".into(),
        node_ip: "127.0.0.1".parse().unwrap(),
        kubeconfig,
        containerd_socket: socket.clone(),
        cni_conf_dir: root.join("net.d"),
        cni_data_dir: root.join("ipam"),
        pod_log_dir: log_root.clone(),
        state_dir: root.join("agent"),
        kubelet_listen: addr,
        bridge: "berth0".into(),
        mtu: 1500,
        kubelet_version: "v1.33.0".into(),
    });
    let server_tls = super::tls_config(&cfg).expect("kubelet TLS config");
    assert!(root.join("agent/pki/kubelet.crt").exists());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(super::serve_on(
        listener,
        cfg.clone(),
        cri.clone(),
        server_tls,
        shutdown.clone(),
    ));
    let tls = crate::pki::kubelet_client_tls_config(&pki).unwrap();

    // healthz, and a client without a certificate is refused.
    assert_eq!(
        get_text(addr, &tls, "/healthz").await,
        (http::StatusCode::OK, "ok".to_owned())
    );
    let no_cert = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_no_client_auth(),
    );
    assert!(
        get(addr, &no_cert, "/healthz").await.is_err(),
        "a client without a certificate must be refused"
    );

    // Logs.
    let mut text = String::new();
    for _ in 0..100 {
        text = get_text(addr, &tls, "/containerLogs/default/p1/c1").await.1;
        if text.contains("tick 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // stdout and stderr are separate pipes: only the order within a stream is fixed.
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.starts_with(&["hello"]) && lines.contains(&"oops") && lines.contains(&"tick 1"),
        "{text:?}"
    );
    assert_eq!(
        get_text(addr, &tls, "/containerLogs/default/p1/c1?limitBytes=3")
            .await
            .1,
        "hel"
    );
    let (st, ts) = get_text(
        addr,
        &tls,
        "/containerLogs/default/p1/c1?timestamps=true&tailLines=1",
    )
    .await;
    assert_eq!(st, 200);
    let (stamp, _) = ts.split_once(' ').unwrap();
    assert!(
        ts.lines().count() == 1 && stamp.parse::<jiff::Timestamp>().is_ok() && stamp.len() == 30,
        "{ts:?}"
    );
    let (st, body) = get_text(addr, &tls, "/containerLogs/default/nope/c1").await;
    assert_eq!(
        (st.as_u16(), body.as_str()),
        (404, "pod \"nope\" does not exist")
    );
    let (st, body) = get_text(addr, &tls, "/containerLogs/default/p1/c1?previous=true").await;
    assert_eq!(
        (st.as_u16(), body.as_str()),
        (
            400,
            "previous terminated container \"c1\" in pod \"p1\" not found"
        )
    );
    assert_eq!(
        get_text(addr, &tls, "/containerLogs/default/p1/c1?tailLines=-1")
            .await
            .0,
        422
    );

    // follow: new lines arrive while the container runs.
    let (st, mut body) = get(
        addr,
        &tls,
        "/containerLogs/default/p1/c1?follow=true&tailLines=0",
    )
    .await
    .unwrap();
    assert_eq!(st, 200);
    let mut seen = String::new();
    let t = tokio::time::timeout(Duration::from_secs(10), async {
        while seen.matches("tick").count() < 2 {
            let f = body.frame().await.expect("stream ended early").unwrap();
            if let Ok(d) = f.into_data() {
                seen.push_str(&String::from_utf8_lossy(&d));
            }
        }
    })
    .await;
    assert!(t.is_ok(), "follow delivered only {seen:?}");
    assert!(
        !seen.contains("hello"),
        "tailLines=0 starts at the end: {seen:?}"
    );
    drop(body);

    // exec over websocket (v4.channel.k8s.io): the output comes back through the proxy.
    let mut s = connect(addr, tls.clone()).await.unwrap();
    let head = raw_upgrade(
        &mut s,
        "GET /exec/default/p1/c1?command=sh&command=-c&command=echo%20out%3B%20echo%20err%20%3E%262&output=1&error=1 HTTP/1.1\r\n\
         Host: kubelet\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: v4.channel.k8s.io"),
        "{head}"
    );
    let ch = tokio::time::timeout(Duration::from_secs(20), read_ws_channels(&mut s))
        .await
        .expect("exec finished");
    assert_eq!(
        String::from_utf8_lossy(ch.get(&1).map(Vec::as_slice).unwrap_or_default()),
        "out\n",
        "{ch:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(ch.get(&2).map(Vec::as_slice).unwrap_or_default()),
        "err\n",
        "{ch:?}"
    );
    let status =
        String::from_utf8_lossy(ch.get(&3).map(Vec::as_slice).unwrap_or_default()).into_owned();
    assert!(status.contains("Success"), "status channel: {status:?}");

    // attach over websocket: the container's stdout ("tick N" lines) arrives on channel 1.
    let mut s = connect(addr, tls.clone()).await.unwrap();
    let head = raw_upgrade(
        &mut s,
        "GET /attach/default/p1/c1?output=1 HTTP/1.1\r\nHost: kubelet\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut got = Vec::new();
    let t = tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&got).contains("tick") {
            let mut h = [0u8; 2];
            s.read_exact(&mut h).await.unwrap();
            let len = match h[1] & 0x7f {
                126 => s.read_u16().await.unwrap() as usize,
                127 => s.read_u64().await.unwrap() as usize,
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.unwrap();
            if h[0] & 0x0f == 2 && payload.first() == Some(&1) {
                got.extend_from_slice(&payload[1..]);
            }
        }
    })
    .await;
    assert!(
        t.is_ok(),
        "attach delivered {:?}",
        String::from_utf8_lossy(&got)
    );
    drop(s);

    // exec over SPDY/3.1 (what kubectl falls back to): containerd's server switches protocols.
    let mut s = connect(addr, tls.clone()).await.unwrap();
    let head = raw_upgrade(
        &mut s,
        "POST /exec/default/p1/c1?command=true&output=1 HTTP/1.1\r\nHost: kubelet\r\nConnection: Upgrade\r\n\
         Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
         X-Stream-Protocol-Version: v3.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 101"), "{head}");
    assert!(lower.contains("upgrade: spdy/3.1"), "{head}");
    assert!(
        lower.contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    drop(s);

    // Errors: unknown pod, not an upgrade, no streams.
    let (st, body) = get_text(addr, &tls, "/exec/default/nope/c1?command=true&output=1").await;
    assert_eq!((st.as_u16(), body.as_str()), (404, "pod does not exist"));
    let (st, body) = get_text(addr, &tls, "/exec/default/p1/c1?command=true&output=1").await;
    assert_eq!(
        (st.as_u16(), body.as_str()),
        (400, "Upgrade request required")
    );
    let (st, _) = get_text(addr, &tls, "/exec/default/p1/c1?command=true").await;
    assert_eq!(st, 400);
    let (st, body) = get_text(addr, &tls, "/exec/default/p1/zzz?command=true&output=1").await;
    assert_eq!(
        (st.as_u16(), body.as_str()),
        (500, "container not found (\"zzz\")")
    );

    // follow ends when the container stops.
    let (_, mut body) = get(
        addr,
        &tls,
        "/containerLogs/default/p1/c1?follow=true&tailLines=1",
    )
    .await
    .unwrap();
    cri.runtime()
        .stop_container(api::StopContainerRequest {
            container_id: cid.clone(),
            timeout: 1,
        })
        .await
        .expect("StopContainer");
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(f) = body.frame().await {
            f.unwrap();
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "follow did not end after the container stopped"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
}

#[derive(Debug)]
struct AnyServer;
impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[test]
#[ignore = "needs root, containerd 1.6, runc, /usr/lib/cni; starts a private containerd in netns berth-node-test"]
fn kubelet_api_against_private_containerd() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("berth=debug")
        .with_test_writer()
        .try_init();
    let env = Env::setup();
    let (root, socket) = (env.root.clone(), env.socket.clone());
    let result = std::thread::spawn(move || {
        enter_netns();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(scenario(root, socket));
    })
    .join();
    if result.is_err() {
        eprintln!("containerd log tail:\n{}", env.log_tail());
    }
    drop(env);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
