//! Issue 5 (hostile input), end to end: a running `berth up` in a network namespace, hit over real
//! HTTPS with the admin client certificate (curl inside the netns, rustls for raw connections)
//! with the requests that broke it, each answered with kube-apiserver's status code and Status
//! reason; after each, a write and a watch still work and /readyz is ok. Plus encryption at rest
//! (berth-control-plane with --encryption-provider-config: the store file holds no plaintext
//! secret) and a crash test (kill -9 during 1,000 concurrent acknowledged writes).
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::berth::Berth;
use common::{Containerd, Netns};
use serde_json::{json, Value};

/// The API over curl in the netns, as the admin user.
struct Api {
    netns: String,
    base: String,
    pki: PathBuf,
    tmp: PathBuf,
}

struct Resp {
    code: u16,
    body: Value,
    raw: String,
    headers: String,
}

impl Resp {
    fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }
    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
    /// A Status with this code and reason (reason "" = absent, kube's StatusReasonUnknown).
    fn assert_status(&self, code: u16, reason: &str, what: &str) {
        assert_eq!(self.code, code, "{what}: {}", self.raw.chars().take(600).collect::<String>());
        assert_eq!(self.body["kind"], "Status", "{what}: {}", self.raw.chars().take(600).collect::<String>());
        assert_eq!(self.body["code"], code, "{what}");
        assert_eq!(self.reason(), reason, "{what}: {}", self.message());
    }
}

impl Api {
    fn new(netns: &str, ip: std::net::Ipv4Addr, state: &Path, tmp: &Path) -> Api {
        Api { netns: netns.into(), base: format!("https://{ip}:6443"), pki: state.join("pki"), tmp: tmp.into() }
    }

    fn curl(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns)).arg("--").arg("curl").args(["-sS", "--max-time", "60"]);
        c.arg("--cacert").arg(self.pki.join("ca.crt"));
        c.arg("--cert").arg(self.pki.join("admin.crt"));
        c.arg("--key").arg(self.pki.join("admin.key"));
        c
    }

    /// One request; `body` is sent from a file (any size); `extra` are more curl arguments.
    fn req(&self, method: &str, path: &str, ctype: &str, body: Option<&[u8]>, extra: &[&str]) -> Resp {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let out = self.tmp.join(format!("resp-{n}"));
        let hdr = self.tmp.join(format!("hdr-{n}"));
        let mut c = self.curl();
        c.args(["-X", method, "-o"]).arg(&out).arg("-D").arg(&hdr).args(["-w", "%{http_code}"]);
        if !ctype.is_empty() {
            c.args(["-H", &format!("Content-Type: {ctype}")]);
        }
        if let Some(b) = body {
            let f = self.tmp.join(format!("body-{n}"));
            std::fs::write(&f, b).unwrap();
            c.arg("--data-binary").arg(format!("@{}", f.display()));
        }
        c.args(extra).arg(format!("{}{path}", self.base));
        let o = common::run(&mut c);
        let code: u16 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or_else(|_| {
            panic!("curl {method} {path}: {} {}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
        });
        let raw = std::fs::read_to_string(&out).unwrap_or_default();
        let headers = std::fs::read_to_string(&hdr).unwrap_or_default();
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&hdr);
        Resp { code, body: serde_json::from_str(&raw).unwrap_or(Value::Null), raw, headers }
    }

    fn get(&self, path: &str) -> Resp {
        self.req("GET", path, "", None, &[])
    }
    fn post(&self, path: &str, v: &Value) -> Resp {
        self.req("POST", path, "application/json", Some(v.to_string().as_bytes()), &[])
    }

    /// A watch from now (curl in the background writing to a file).
    fn watch(&self, path_and_query: &str) -> (Child, PathBuf) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let f = self.tmp.join(format!("watch-{}", N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
        let mut c = self.curl();
        c.args(["-N", "-o"]).arg(&f).arg(format!("{}{path_and_query}", self.base));
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        (c.spawn().expect("curl watch"), f)
    }

    /// After each hostile request: /readyz is ok, a write succeeds and a watch sees it.
    fn assert_still_works(&self, step: &str) {
        let r = self.req("GET", "/readyz?verbose", "", None, &[]);
        assert_eq!(r.code, 200, "{step}: readyz: {}", r.raw);
        assert!(r.raw.contains("[+]etcd ok"), "{step}: {}", r.raw);
        let list = self.get("/api/v1/namespaces/default/configmaps");
        assert_eq!(list.code, 200, "{step}: list {}", list.raw);
        let rv = list.body["metadata"]["resourceVersion"].as_str().unwrap().to_string();
        let (mut w, file) = self.watch(&format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"));
        let name = format!("probe-{}", step.replace(|c: char| !c.is_ascii_alphanumeric(), "-").to_lowercase());
        let c = self.post("/api/v1/namespaces/default/configmaps", &json!({"metadata": {"name": name}, "data": {"step": step}}));
        assert_eq!(c.code, 201, "{step}: write after it: {}", c.raw);
        common::wait_until(&format!("{step}: the watch sees {name}"), Duration::from_secs(20), || {
            let s = std::fs::read_to_string(&file).unwrap_or_default();
            Ok::<_, String>(s.lines().any(|l| l.contains("\"ADDED\"") && l.contains(&format!("\"name\":\"{name}\""))).then_some(()))
        });
        let _ = w.kill();
        let _ = w.wait();
    }
}

/// Peak and current RSS of a process (kB), from /proc/<pid>/status.
fn rss_kb(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn tls_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// How long the server keeps a connection that stops after sending `partial` (after a TLS
/// handshake when `tls`), measured on a thread inside the netns.
fn held_for(netns: &str, ip: std::net::Ipv4Addr, ca: &Path, tls: bool, partial: &'static [u8]) -> Duration {
    let (netns, ca) = (netns.to_string(), ca.to_path_buf());
    std::thread::spawn(move || {
        common::netns::enter_this_thread(&netns);
        let mut tcp = TcpStream::connect((ip, 6443)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        if tls {
            let name = rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::V4(ip).into());
            let conn = rustls::ClientConnection::new(tls_config(&ca), name).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(partial).unwrap();
            s.flush().unwrap();
            let start = Instant::now();
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return start.elapsed(),
                    Ok(_) => {}
                }
            }
        }
        tcp.write_all(partial).unwrap();
        loop {
            match tcp.read(&mut buf) {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .join()
    .unwrap()
}

/// Send `req` over TLS (no client certificate) from inside the netns; the whole answer.
fn raw_request(netns: &str, ip: std::net::Ipv4Addr, ca: &Path, req: Vec<u8>) -> String {
    let (netns, ca) = (netns.to_string(), ca.to_path_buf());
    std::thread::spawn(move || {
        common::netns::enter_this_thread(&netns);
        let mut tcp = TcpStream::connect((ip, 6443)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::V4(ip).into());
        let mut conn = rustls::ClientConnection::new(tls_config(&ca), name).unwrap();
        let mut s = rustls::Stream::new(&mut conn, &mut tcp);
        // The server may answer (and stop reading) before all of it is sent.
        let _ = s.write_all(&req).and_then(|_| s.flush());
        let mut out = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    })
    .join()
    .unwrap()
}

#[test]
fn hostile_requests_are_answered_like_kube_apiserver() {
    if !common::e2e_enabled("hostile_requests_are_answered_like_kube_apiserver") {
        return;
    }
    let _serial = common::serial();
    let ns = Netns::new();
    let c = Containerd::start(&ns);
    let b = Berth::start(&ns, &c);
    let tmp = common::temp_dir("berth-hostile");
    let api = Api::new(&ns.path(), ns.node_ip, &b.cfg.state_dir, tmp.path());
    let pid = b.pid().expect("berth up runs");
    api.assert_still_works("start");

    // 1. gracePeriodSeconds = i64::MAX on DELETE, with dryRun=All and without; and a pod whose
    //    terminationGracePeriodSeconds is i64::MAX deleted with the default. kube answers 200 and
    //    keeps the value (its deletionTimestamp wraps around; ours saturates).
    let pods = "/api/v1/namespaces/default/pods";
    for name in ["grace-a", "grace-b"] {
        let r = api.post(pods, &json!({"metadata": {"name": name}, "spec": {"nodeName": "elsewhere",
            "terminationGracePeriodSeconds": i64::MAX, "containers": [{"name": "c", "image": "busybox"}]}}));
        assert_eq!(r.code, 201, "{}", r.raw);
    }
    let max = i64::MAX;
    let r = api.req("DELETE", &format!("{pods}/grace-a?gracePeriodSeconds={max}&dryRun=All"), "", None, &[]);
    assert_eq!(r.code, 200, "{}", r.raw);
    assert_eq!(r.body["metadata"]["deletionGracePeriodSeconds"], max);
    assert!(api.get(&format!("{pods}/grace-a")).body["metadata"].get("deletionTimestamp").is_none(), "dry run stored nothing");
    api.assert_still_works("grace-dry-run");
    let r = api.req("DELETE", &format!("{pods}/grace-a?gracePeriodSeconds={max}"), "", None, &[]);
    assert_eq!(r.code, 200, "{}", r.raw);
    assert_eq!(r.body["metadata"]["deletionGracePeriodSeconds"], max);
    api.assert_still_works("grace-max");
    let r = api.req("DELETE", &format!("{pods}/grace-b"), "", None, &[]);
    assert_eq!(r.code, 200, "{}", r.raw);
    assert_eq!(r.body["metadata"]["deletionGracePeriodSeconds"], max);
    api.assert_still_works("grace-spec-max");
    let r = api.req("DELETE", &format!("{pods}/grace-a?gracePeriodSeconds=99999999999999999999"), "", None, &[]);
    r.assert_status(400, "BadRequest", "grace out of range");
    assert_eq!(r.message(), r#"strconv.ParseInt: parsing "99999999999999999999": value out of range"#);
    for name in ["grace-a", "grace-b"] {
        let r = api.req("DELETE", &format!("{pods}/{name}?gracePeriodSeconds=0"), "", None, &[]);
        assert_eq!(r.code, 200, "{}", r.raw);
        assert_eq!(api.get(&format!("{pods}/{name}")).code, 404);
    }
    let r = api.post(pods, &json!({"metadata": {"name": "deadline"}, "spec": {"activeDeadlineSeconds": 0,
        "containers": [{"name": "c", "image": "busybox"}]}}));
    r.assert_status(422, "Invalid", "activeDeadlineSeconds 0");
    assert_eq!(r.message(), r#"Pod "deadline" is invalid: spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive"#);

    // 2. The JSON patch copy bomb: a 3 KB patch doubling the object 40 times.
    let cms = "/api/v1/namespaces/default/configmaps";
    assert_eq!(api.post(cms, &json!({"metadata": {"name": "pb"}, "data": {"a": "x"}})).code, 201);
    let mut ops = vec![json!({"op": "add", "path": "/x", "value": {"a": "y".repeat(1000)}})];
    for i in 0..40 {
        ops.push(json!({"op": "copy", "from": "/x", "path": format!("/x/c{i}")}));
    }
    let bomb = Value::Array(ops).to_string();
    let (hwm_before, _) = rss_kb(pid);
    let r = api.req("PATCH", &format!("{cms}/pb"), "application/json-patch+json", Some(bomb.as_bytes()), &[]);
    let (hwm_after, rss_after) = rss_kb(pid);
    eprintln!("copy bomb ({} bytes): berth up peak RSS {hwm_before} kB before, {hwm_after} kB after (RSS now {rss_after} kB)", bomb.len());
    r.assert_status(422, "Invalid", "copy bomb");
    assert_eq!(r.message(), "the server rejected our request due to an error in our request");
    assert!(hwm_after < 1024 * 1024, "peak RSS {hwm_after} kB");
    api.assert_still_works("copy-bomb");
    let many = Value::Array(vec![json!({"op": "test", "path": "/kind", "value": "ConfigMap"}); 10_001]).to_string();
    let r = api.req("PATCH", &format!("{cms}/pb"), "application/json-patch+json", Some(many.as_bytes()), &[]);
    r.assert_status(413, "RequestEntityTooLarge", "10,001 operations");
    assert_eq!(r.message(), "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001");

    // 3. Sizes: a 2.9 MiB ConfigMap (validation: 1 MiB of data), a body over 3 MiB, an object
    //    over etcd's 1.5 MiB after validation.
    let big = json!({"metadata": {"name": "big"}, "data": {"a": "x".repeat(2900 * 1024)}});
    let r = api.post(cms, &big);
    r.assert_status(422, "Invalid", "2.9 MiB ConfigMap");
    assert_eq!(r.message(), r#"ConfigMap "big" is invalid: []: Too long: may not be more than 1048576 bytes"#);
    api.assert_still_works("big-configmap");
    let huge = json!({"metadata": {"name": "huge"}, "data": {"a": "x".repeat(3 * 1024 * 1024 + 10)}});
    let r = api.post(cms, &huge);
    r.assert_status(413, "RequestEntityTooLarge", "body over 3 MiB");
    assert_eq!(r.message(), "Request entity too large: limit is 3145728");
    let pod = json!({"metadata": {"name": "bigpod"}, "spec": {"containers": [{"name": "c", "image": "busybox",
        "env": [{"name": "A", "value": "x".repeat(2 * 1024 * 1024)}]}]}});
    let r = api.post(pods, &pod);
    r.assert_status(500, "", "object over 1.5 MiB");
    assert_eq!(r.message(), "etcdserver: request is too large");
    api.assert_still_works("object-too-large");

    // 4. Validation.
    let r = api.get(&format!("{cms}?labelSelector=a%3D%3Db%3D%3Dc"));
    r.assert_status(400, "BadRequest", "labelSelector=a==b==c");
    assert_eq!(r.message(), "found '==', expected: ',' or 'end of string'");
    let r = api.get(&format!("{cms}?fieldSelector=foo%3Dbar"));
    r.assert_status(400, "BadRequest", "unknown field selector");
    assert_eq!(r.message(), r#""foo" is not a known field selector: only "metadata.name", "metadata.namespace""#);
    let r = api.get(&format!("{cms}/pb?resourceVersion=abc"));
    r.assert_status(500, "", "GET resourceVersion=abc");
    assert_eq!(r.message(), r#"resourceVersion: Invalid value: "abc": strconv.ParseUint: parsing "abc": invalid syntax"#);
    let r = api.get(&format!("{cms}?resourceVersion=abc"));
    r.assert_status(400, "BadRequest", "LIST resourceVersion=abc");
    let r = api.get(&format!("{cms}?resourceVersionMatch=NotOlderThan"));
    r.assert_status(422, "Invalid", "resourceVersionMatch without resourceVersion");
    assert_eq!(r.message(), r#"ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"#);
    let r = api.get(&format!("{cms}?resourceVersion=999999999"));
    r.assert_status(504, "Timeout", "resourceVersion from the future");
    let r = api.post("/api/v1/namespaces/default/services", &json!({"metadata": {"name": "a.b"}, "spec": {"ports": [{"port": 80}]}}));
    r.assert_status(422, "Invalid", "Service name a.b");
    assert_eq!(r.message(), r#"Service "a.b" is invalid: metadata.name: Invalid value: "a.b": must not contain dots"#);
    let r = api.post(cms, &json!({"metadata": {"name": "lbl", "labels": {"k": "v".repeat(1024 * 1024)}}}));
    r.assert_status(422, "Invalid", "1 MiB label value");
    assert!(r.message().ends_with("must be no more than 63 bytes"), "{}", r.message());
    let r = api.post(cms, &json!({"metadata": {"name": "ann", "annotations": {"a": "x".repeat(256 * 1024)}}}));
    r.assert_status(422, "Invalid", "annotations over 256 KiB");
    assert_eq!(r.message(), r#"ConfigMap "ann" is invalid: metadata.annotations: Too long: may not be more than 262144 bytes"#);
    let dup = br#"{"metadata":{"name":"d1","name":"d2"},"data":{"a":"1","a":"2"}}"#;
    let r = api.req("POST", &format!("{cms}?fieldValidation=Strict"), "application/json", Some(dup), &[]);
    r.assert_status(400, "BadRequest", "duplicate fields, Strict");
    assert_eq!(r.message(), r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: duplicate field "metadata.name", duplicate field "data.a""#);
    let r = api.req("POST", cms, "application/json", Some(dup), &[]);
    assert_eq!(r.code, 201, "{}", r.raw);
    assert!(r.headers.to_lowercase().contains(r#"warning: 299 - "duplicate field \"metadata.name\"""#), "{}", r.headers);
    assert_eq!(r.body["metadata"]["name"], "d2");
    api.assert_still_works("validation");

    // 5. 414 / 431 with Status bodies.
    let r = api.get(&format!("{cms}?x={}", "a".repeat(70_000)));
    assert_eq!((r.code, r.body["kind"].as_str()), (414, Some("Status")), "{}", r.raw);
    // curl refuses to send a 1 MiB header: a raw TLS request.
    let big_head = format!("GET {cms} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "h".repeat(1100 * 1024));
    let out = raw_request(&ns.path(), ns.node_ip, &b.cfg.state_dir.join("pki/ca.crt"), big_head.into_bytes());
    assert!(out.starts_with("HTTP/1.1 431 "), "{}", out.chars().take(400).collect::<String>());
    let body: Value = serde_json::from_str(out.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!((body["kind"].as_str(), body["code"].as_u64()), (Some("Status"), Some(431)));
    api.assert_still_works("414-431");

    // 6. Slow clients: no TLS handshake, and half-sent request heads, are cut off in seconds.
    let ca = b.cfg.state_dir.join("pki/ca.crt");
    let t = held_for(&ns.path(), ns.node_ip, &ca, false, b"\x16\x03\x01");
    eprintln!("connection stuck in the TLS handshake closed after {t:?}");
    assert!(t < Duration::from_secs(15), "{t:?}");
    let t = held_for(&ns.path(), ns.node_ip, &ca, true, b"GET /version HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    eprintln!("half-sent request head closed after {t:?}");
    assert!(t < Duration::from_secs(30), "{t:?}");
    api.assert_still_works("slowloris");

    // 7. Health endpoints report the store.
    let r = api.get("/healthz?verbose");
    assert!(r.code == 200 && r.raw.contains("[+]etcd ok") && r.raw.ends_with("healthz check passed\n"), "{}", r.raw);
    assert_eq!(api.get("/livez/etcd").raw, "ok");
    assert!(b.is_running());
}

/// kill -9 of `berth up` during 1,000 concurrent creates; after a restart every acknowledged
/// write is there with the resourceVersion it was acknowledged with, and new writes get newer
/// resourceVersions.
#[test]
fn acknowledged_writes_survive_kill_9() {
    if !common::e2e_enabled("acknowledged_writes_survive_kill_9") {
        return;
    }
    let _serial = common::serial();
    let ns = Netns::new();
    let c = Containerd::start(&ns);
    let mut b = Berth::start(&ns, &c);
    let kubeconfig = b.cfg.admin_kubeconfig();
    let pid = b.pid().expect("running");
    let netns = ns.path();
    let (acked, failed) = std::thread::spawn(move || {
        common::netns::enter_this_thread(&netns);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            use k8s_openapi::api::core::v1::ConfigMap;
            use kube::api::{Api, PostParams};
            let client = berth::kubeclient::from_file(&kubeconfig).await.unwrap();
            let cms: Api<ConfigMap> = Api::namespaced(client, "default");
            let acked = Arc::new(std::sync::Mutex::new(Vec::<(String, u64)>::new()));
            // All 1,000 spawned at once; at most 64 connections' worth in flight.
            let gate = Arc::new(tokio::sync::Semaphore::new(64));
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..1000 {
                let (cms, acked, gate) = (cms.clone(), acked.clone(), gate.clone());
                tasks.spawn(async move {
                    let _permit = gate.acquire().await.unwrap();
                    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("crash-{i}")}, "data": {"i": i.to_string()}})).unwrap();
                    let r = cms.create(&PostParams::default(), &cm).await;
                    if let Ok(o) = r {
                        let rv = o.metadata.resource_version.unwrap().parse::<u64>().unwrap();
                        let mut a = acked.lock().unwrap();
                        a.push((o.metadata.name.unwrap(), rv));
                        // Kill -9 in the middle of the stream of writes.
                        if a.len() == 300 {
                            // SAFETY: kill(2) of the berth up this test started (by PID).
                            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                        }
                        true
                    } else {
                        false
                    }
                });
            }
            let mut failed = 0;
            while let Some(r) = tasks.join_next().await {
                if !r.unwrap() {
                    failed += 1;
                }
            }
            let a = acked.lock().unwrap().clone();
            (a, failed)
        })
    })
    .join()
    .unwrap();
    eprintln!("{} writes acknowledged before/around kill -9, {failed} failed", acked.len());
    assert!(acked.len() >= 300 && failed > 0, "acked {} failed {failed}", acked.len());
    b.stop();
    b.restart();
    let tmp = common::temp_dir("berth-crash");
    let api = Api::new(&ns.path(), ns.node_ip, &b.cfg.state_dir, tmp.path());
    let list = api.get("/api/v1/namespaces/default/configmaps");
    assert_eq!(list.code, 200);
    let stored: std::collections::HashMap<String, u64> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["metadata"]["name"].as_str().unwrap().to_string(), o["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()))
        .collect();
    let mut missing = vec![];
    for (name, rv) in &acked {
        match stored.get(name) {
            Some(s) => assert_eq!(s, rv, "{name}: stored resourceVersion differs from the acknowledged one"),
            None => missing.push(name.clone()),
        }
    }
    assert!(missing.is_empty(), "{} acknowledged writes lost: {missing:?}", missing.len());
    let max_acked = acked.iter().map(|(_, rv)| *rv).max().unwrap();
    let list_rv: u64 = list.body["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(list_rv >= max_acked, "list resourceVersion {list_rv} went back below {max_acked}");
    let r = api.post("/api/v1/namespaces/default/configmaps", &json!({"metadata": {"name": "after-crash"}}));
    assert_eq!(r.code, 201, "{}", r.raw);
    let rv: u64 = r.body["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(rv > list_rv, "resourceVersion {rv} after restart not above {list_rv}");
    eprintln!("{} of {} acknowledged writes present after kill -9 and restart", acked.len() - missing.len(), acked.len());
    api.assert_still_works("after-crash");
}

/// Secrets encrypted at rest with an EncryptionConfiguration (secretbox first, aescbc and
/// identity to read older values): the store file holds no plaintext secret value; the API
/// returns it decrypted, also after a restart; the store and PKI are root-only.
#[test]
fn secrets_are_encrypted_at_rest() {
    if !common::e2e_enabled("secrets_are_encrypted_at_rest") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let _serial = common::serial();
    let ns = Netns::new();
    let tmp = common::temp_dir("berth-encryption");
    let state = tmp.path().join("state");
    let cfg = tmp.path().join("encryption.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n      - secrets\n    providers:\n      - secretbox:\n          keys:\n            - name: key1\n              secret: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n      - aescbc:\n          keys:\n            - name: old\n              secret: MDEyMzQ1Njc4OWFiY2RlZg==\n      - identity: {}\n",
    )
    .unwrap();
    let start = || -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(tmp.path().join("cp.log")).unwrap();
        Command::new("nsenter")
            .arg(format!("--net={}", ns.path()))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_berth-control-plane"))
            .arg("--state-dir")
            .arg(&state)
            .args(["--listen", &format!("{}:6443", ns.node_ip)])
            .arg("--encryption-provider-config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("berth-control-plane")
    };
    let api = Api::new(&ns.path(), ns.node_ip, &state, tmp.path());
    let ready = |child: &mut Child| {
        common::wait_until("berth-control-plane ready", Duration::from_secs(60), || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("berth-control-plane exited: {st}\n{}", common::tail(&tmp.path().join("cp.log"), 40));
            }
            if !state.join("pki/admin.key").exists() {
                return Ok::<_, String>(None);
            }
            Ok((api.get("/readyz").code == 200).then_some(()))
        })
    };
    let mut cp = start();
    ready(&mut cp);
    // base64 of "hunter2-top-secret-marker"
    let marker = "aHVudGVyMi10b3Atc2VjcmV0LW1hcmtlcg==";
    let r = api.post("/api/v1/namespaces/default/secrets", &json!({"metadata": {"name": "s1"}, "data": {"password": marker}}));
    assert_eq!(r.code, 201, "{}", r.raw);
    let r = api.post("/api/v1/namespaces/default/configmaps", &json!({"metadata": {"name": "plain"}, "data": {"v": "not-a-secret-visible"}}));
    assert_eq!(r.code, 201, "{}", r.raw);
    assert_eq!(api.get("/api/v1/namespaces/default/secrets/s1").body["data"]["password"], marker);
    common::stop_child(&mut cp, Duration::from_secs(20));

    let store = state.join("store.redb");
    let raw = std::fs::read(&store).unwrap();
    let has = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(!has(marker.as_bytes()), "the store file holds the secret value in plaintext");
    assert!(!has(b"hunter2"), "the store file holds the decoded secret");
    assert!(has(b"k8s:enc:secretbox:v1:key1:"), "secrets are stored with kube's envelope prefix");
    assert!(has(b"not-a-secret-visible"), "other resources stay plaintext");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o600);
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("pki")), 0o700);
    assert_eq!(mode(&state.join("pki/ca.key")), 0o600);

    let mut cp = start();
    ready(&mut cp);
    assert_eq!(api.get("/api/v1/namespaces/default/secrets/s1").body["data"]["password"], marker);
    common::stop_child(&mut cp, Duration::from_secs(20));
}
