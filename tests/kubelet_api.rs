//! The kubelet API (`berth::agent::server::serve_on`) against a real containerd from the harness
//! (`common::Containerd` in a `common::Netns`, berth-cni as the CNI plugin with the conflist the
//! agent writes).
//!
//! A pod sandbox and a busybox container are created with raw CRI calls; then, over mutual TLS:
//! a client without a certificate is refused, `/healthz`, `/containerLogs` (plain, limitBytes,
//! timestamps, follow, follow ending when the container stops, 404/400/422 error bodies), `/exec`
//! (websocket v4.channel.k8s.io with its output read back, SPDY/3.1 upgrade answered 101, error
//! bodies) and `/attach` through the proxy; and `runtime_health` of the real runtime.
//!
//! containerd's CRI streaming server (where exec/attach are proxied to) listens on 127.0.0.1 of
//! the node's netns, so the kubelet server and its client run on one thread that joined that netns
//! (setns(2) on that thread only, with a current-thread runtime so every socket is created there);
//! they talk over that netns' loopback. The harness guards clean up everything else on Drop.
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::agent::pods::kuberuntime::{
    ANN_RESTART_COUNT, LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
};
use berth::agent::{cni_conf, AgentConfig};
use berth::cri::{api, Cri};
use bytes::Bytes;
use common::{Containerd, Netns};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Create pod default/p1 (uid u-1) with container c1 running `script`; returns the container id.
async fn create_pod(cri: &Cri, log_root: &Path, script: &str) -> String {
    let mut rt = cri.runtime();
    let pod_labels = labels(&[(LABEL_POD_NAME, "p1"), (LABEL_POD_NAMESPACE, "default"), (LABEL_POD_UID, "u-1")]);
    let sandbox_config = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: "p1".into(),
            uid: "u-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "p1".into(),
        log_directory: log_root.join("default_p1_u-1").to_string_lossy().into_owned(),
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
    c_labels.insert(LABEL_CONTAINER_NAME.into(), "c1".into());
    let config = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata { name: "c1".into(), attempt: 0 }),
        image: Some(api::ImageSpec { image: common::BUSYBOX_IMAGE.into(), ..Default::default() }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        labels: c_labels,
        annotations: labels(&[(ANN_RESTART_COUNT, "0")]),
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
    rt.start_container(api::StartContainerRequest { container_id: id.clone() })
        .await
        .expect("StartContainer");
    id
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(addr: std::net::SocketAddr, tls: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await
}

/// GET `path`; returns the status and the body stream.
async fn get(
    addr: std::net::SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(http::StatusCode, hyper::body::Incoming), String> {
    let s = connect(addr, tls.clone()).await.map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path).header("host", "kubelet").body(Empty::new()).unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    Ok((resp.status(), resp.into_body()))
}

async fn get_text(addr: std::net::SocketAddr, tls: &Arc<rustls::ClientConfig>, path: &str) -> (http::StatusCode, String) {
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
            1 | 2 if !payload.is_empty() => out.entry(payload[0]).or_default().extend_from_slice(&payload[1..]),
            _ => {}
        }
    }
}

/// Join the node's network namespace on the calling thread only (setns(2) with CLONE_NEWNET).
/// The kubelet server + client part; runs on a thread inside the node's netns. The pod is running.
async fn scenario(work: PathBuf, socket: PathBuf, log_root: PathBuf, cni_conf_dir: PathBuf, cni_data_dir: PathBuf, cid: String) {
    let cri = Cri::connect(&socket).await.expect("CRI connect");

    // PKI and a node kubeconfig whose CA the kubelet server trusts for clients.
    let pki = berth::pki::ensure_cluster_pki(&work.join("pki"), &["127.0.0.1".to_owned()]).unwrap();
    let (ncert, nkey) = berth::pki::issue_client_cert(&pki.ca, "system:node:n1", &["system:nodes"]).unwrap();
    let kubeconfig = work.join("node.conf");
    std::fs::write(
        &kubeconfig,
        berth::pki::kubeconfig_json("https://127.0.0.1:6443", &pki.ca.cert_pem, &ncert, &nkey, "node", "default"),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = Arc::new(AgentConfig {
        node_name: "n1".into(),
        node_ip: "127.0.0.1".parse().unwrap(),
        kubeconfig,
        containerd_socket: socket.clone(),
        cni_conf_dir,
        cni_data_dir,
        pod_log_dir: log_root.clone(),
        state_dir: work.join("agent"),
        kubelet_listen: addr,
        bridge: "berth0".into(),
        mtu: 1500,
        kubelet_version: "v1.33.0".into(),
        node_labels: Default::default(),
        cluster_dns: Vec::new(),
        cluster_domain: "cluster.local".into(),
    });
    let server_tls = berth::agent::server::tls_config(&cfg).expect("kubelet TLS config");
    assert!(work.join("agent/pki/kubelet.crt").exists());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(berth::agent::server::serve_on(
        listener,
        cfg.clone(),
        cri.clone(),
        server_tls,
        shutdown.clone(),
    ));
    let tls = berth::pki::kubelet_client_tls_config(&pki).unwrap();

    // healthz, and a client without a certificate is refused.
    assert_eq!(get_text(addr, &tls, "/healthz").await, (http::StatusCode::OK, "ok".to_owned()));
    let no_cert = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
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

    // Logs: poll (with a deadline) until the first tick is in the log.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = get_text(addr, &tls, "/containerLogs/default/p1/c1").await.1;
        if text.contains("tick 1") {
            break;
        }
        // poll interval, not synchronisation: the log content decides
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // stdout and stderr are separate pipes: only the order within a stream is fixed ("oops" may
    // land before or after "hello"), so the first stdout line is "hello".
    let lines: Vec<&str> = text.lines().collect();
    let stdout_lines: Vec<&str> = lines.iter().copied().filter(|l| *l != "oops").collect();
    assert!(
        stdout_lines.starts_with(&["hello"]) && lines.contains(&"oops") && lines.contains(&"tick 1"),
        "{text:?}"
    );
    // limitBytes=3: the first three bytes of the log ("hel", or "oop" when stderr won the race).
    let first3 = if lines[0] == "hello" { "hel" } else { "oop" };
    assert_eq!(get_text(addr, &tls, "/containerLogs/default/p1/c1?limitBytes=3").await.1, first3, "{text:?}");
    let (st, ts) = get_text(addr, &tls, "/containerLogs/default/p1/c1?timestamps=true&tailLines=1").await;
    assert_eq!(st, 200);
    let (stamp, _) = ts.split_once(' ').unwrap();
    assert!(
        ts.lines().count() == 1 && stamp.parse::<jiff::Timestamp>().is_ok() && stamp.len() == 30,
        "{ts:?}"
    );
    let (st, body) = get_text(addr, &tls, "/containerLogs/default/nope/c1").await;
    assert_eq!((st.as_u16(), body.as_str()), (404, "pod \"nope\" does not exist"));
    let (st, body) = get_text(addr, &tls, "/containerLogs/default/p1/c1?previous=true").await;
    assert_eq!(
        (st.as_u16(), body.as_str()),
        (400, "previous terminated container \"c1\" in pod \"p1\" not found")
    );
    assert_eq!(get_text(addr, &tls, "/containerLogs/default/p1/c1?tailLines=-1").await.0, 422);

    // follow: new lines arrive while the container runs.
    let (st, mut body) = get(addr, &tls, "/containerLogs/default/p1/c1?follow=true&tailLines=0").await.unwrap();
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
    assert!(!seen.contains("hello"), "tailLines=0 starts at the end: {seen:?}");
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
        head.to_ascii_lowercase().contains("sec-websocket-protocol: v4.channel.k8s.io"),
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
    let status = String::from_utf8_lossy(ch.get(&3).map(Vec::as_slice).unwrap_or_default()).into_owned();
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
    assert!(t.is_ok(), "attach delivered {:?}", String::from_utf8_lossy(&got));
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
    assert!(lower.contains("x-stream-protocol-version: v4.channel.k8s.io"), "{head}");
    drop(s);

    // Errors: unknown pod, not an upgrade, no streams, unknown container.
    let (st, body) = get_text(addr, &tls, "/exec/default/nope/c1?command=true&output=1").await;
    assert_eq!((st.as_u16(), body.as_str()), (404, "pod does not exist"));
    let (st, body) = get_text(addr, &tls, "/exec/default/p1/c1?command=true&output=1").await;
    assert_eq!((st.as_u16(), body.as_str()), (400, "Upgrade request required"));
    let (st, _) = get_text(addr, &tls, "/exec/default/p1/c1?command=true").await;
    assert_eq!(st, 400);
    let (st, body) = get_text(addr, &tls, "/exec/default/p1/zzz?command=true&output=1").await;
    assert_eq!((st.as_u16(), body.as_str()), (500, "container not found (\"zzz\")"));

    // follow ends when the container stops.
    let (_, mut body) = get(addr, &tls, "/containerLogs/default/p1/c1?follow=true&tailLines=1").await.unwrap();
    cri.runtime()
        .stop_container(api::StopContainerRequest { container_id: cid.clone(), timeout: 1 })
        .await
        .expect("StopContainer");
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(f) = body.frame().await {
            f.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "follow did not end after the container stopped");

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
fn kubelet_api_against_private_containerd() {
    if !common::e2e_enabled("kubelet_api_against_private_containerd") {
        return;
    }
    let _serial = common::serial();
    let _ = tracing_subscriber::fmt().with_env_filter("berth=debug").with_test_writer().try_init();
    let ns = Netns::new();
    let c = Containerd::start(&ns);

    // The pod network: berth-cni with the conflist the agent writes, IPAM state in the temp dir.
    let work = c.root.join("kubelet-api");
    let log_root = work.join("pods");
    let cni_data_dir = work.join("cni-data");
    let pod_cidr: ipnetwork::IpNetwork = format!("10.244.{}.0/24", ns.index).parse().unwrap();
    let conf = cni_conf::render(cni_conf::NETWORK_NAME, "berth0", 1500, pod_cidr, &cni_data_dir).unwrap();
    cni_conf::write_atomic(&c.cni_conf_dir, &conf).unwrap();

    // Runtime health and the pod, over the unix socket from this thread (host netns is fine for
    // a unix socket path). The runtime is dropped before the netns thread starts its own.
    let cid = {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let cri = rt.block_on(Cri::connect(&c.socket)).expect("CRI connect");
        // The node status inputs from the real runtime: version and both conditions ready
        // (containerd loads the conflist written above asynchronously: poll until it has).
        let health = common::wait_until("the runtime and its network to be ready", Duration::from_secs(30), || {
            let h = rt.block_on(berth::agent::node::runtime_health(&cri, true));
            if berth::agent::node::readiness_errors(&h).is_empty() {
                Ok(Some(h))
            } else {
                Err(format!("{h:?}: {:?}", berth::agent::node::readiness_errors(&h)))
            }
        });
        assert!(health.runtime_version.starts_with("containerd://1.6"), "{health:?}");
        assert!(berth::agent::node::readiness_errors(&health).is_empty(), "{health:?}");
        let script = "echo hello; echo oops >&2; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done";
        rt.block_on(create_pod(&cri, &log_root, script))
    };

    let ns_path = ns.path();
    let (socket, conf_dir) = (c.socket.clone(), c.cni_conf_dir.clone());
    let result = std::thread::spawn(move || {
        common::netns::enter_this_thread(&ns_path);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(scenario(work, socket, log_root, conf_dir, cni_data_dir, cid));
    })
    .join();
    // The thread has ended (its netns membership with it); the guards clean up on drop.
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
