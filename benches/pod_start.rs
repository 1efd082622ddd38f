//! Pod start benchmark: `cargo bench --bench pod_start` (root; builds its own node in a network
//! namespace with a private containerd, like the end-to-end tests).
//!
//! Prints one table:
//! - direct CRI: the same sandbox + container (same translation the agent uses) started by calling
//!   CRI straight, one pod after another, with no agent running;
//! - berth: pods created through the API server, create call -> phase Running observed by a watch;
//! - the agent's RSS (a separate `berth agent` process) with 0 pods and with N pods running.
//!
//! BERTH_BENCH_PODS sets N (default 20).
#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::await_condition;

use common::{Containerd, Netns};

const NODE: &str = "bench-node";

fn main() {
    if !common::e2e_enabled("pod_start benchmark") {
        return;
    }
    let n: usize = std::env::var("BERTH_BENCH_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    // Declared first so it is removed last: the containerd guard's teardown still runs CNI DEL,
    // which touches the IPAM directory inside it.
    let work = tempfile::Builder::new().prefix("berth-bench-").tempdir().expect("temp dir");
    let ns = Netns::new();
    let ctd = Containerd::start(&ns);
    // API clients must run inside the node's network namespace. Only a dedicated thread (and the
    // runtime threads it creates, which inherit its namespace) enters it: the main thread stays
    // outside, so the namespace's teardown, which kills what runs inside, never hits this process.
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter_this_thread();
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(run(&ns, &ctd, work.path(), n))
        })
        .join()
        .expect("benchmark thread panicked")
    });
    match report {
        Ok(r) => r.print(n),
        Err(e) => {
            ctd.dump_log(40);
            panic!("benchmark failed: {e:#}");
        }
    }
}

struct Report {
    direct: Vec<Duration>,
    api: Vec<Duration>,
    rss_idle_kib: u64,
    rss_loaded_kib: u64,
}

impl Report {
    fn print(&self, n: usize) {
        let (dp50, dp99) = (percentile(&self.direct, 50), percentile(&self.direct, 99));
        let (ap50, ap99) = (percentile(&self.api, 50), percentile(&self.api, 99));
        println!();
        println!("pod start, {n} pods one after another, image present (ms)");
        println!("| path | p50 | p99 |");
        println!("|---|---|---|");
        println!("| direct CRI: RunPodSandbox + CreateContainer + StartContainer | {:.1} | {:.1} |", ms(dp50), ms(dp99));
        println!("| berth: API create -> Running (watch) | {:.1} | {:.1} |", ms(ap50), ms(ap99));
        println!("| berth overhead over direct CRI | {:+.1} | {:+.1} |", ms(ap50) - ms(dp50), ms(ap99) - ms(dp99));
        println!();
        println!("| agent RSS | MiB |");
        println!("|---|---|");
        println!("| 0 pods | {:.1} |", self.rss_idle_kib as f64 / 1024.0);
        println!("| {n} pods | {:.1} |", self.rss_loaded_kib as f64 / 1024.0);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile.
fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * v.len()).div_ceil(100).max(1);
    v[rank - 1]
}

fn bench_pod(name: &str, uid: Option<String>) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": common::BUSYBOX_IMAGE, "command": ["sleep", "3600"],
                            "imagePullPolicy": "IfNotPresent"}],
        }
    }))
    .expect("pod json")
}

async fn run(ns: &Netns, ctd: &Containerd, work: &Path, n: usize) -> anyhow::Result<Report> {
    // 1. Direct CRI, no agent running. The network config is the one the agent writes for the
    //    first node's pod CIDR (10.244.0.0/24), with the same IPAM directory.
    let ipam_dir = work.join("ipam");
    let conflist = berth::agent::cni_conf::render(
        berth::agent::cni_conf::NETWORK_NAME,
        "berth0",
        1500,
        "10.244.0.0/24".parse()?,
        &ipam_dir,
    )?;
    berth::agent::cni_conf::write_atomic(&ctd.cni_conf_dir, &conflist)?;
    let cri = berth::cri::Cri::connect(&ctd.socket).await?;
    let ready = |h: &berth::agent::node::RuntimeHealth| berth::agent::node::readiness_errors(h).is_empty();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready(&berth::agent::node::runtime_health(&cri, true).await) {
        anyhow::ensure!(Instant::now() < deadline, "containerd did not load the CNI config within 30s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dns = berth::agent::pods::host_dns_config(Path::new("/etc/resolv.conf"));
    let direct_logs = work.join("direct-pods");
    let mut direct = Vec::with_capacity(n);
    let mut sandboxes = Vec::new();
    for i in 0..n {
        let pod = bench_pod(&format!("direct-{i}"), Some(uuid::Uuid::new_v4().to_string()));
        let t0 = Instant::now();
        let started = berth::agent::pods::start_pod_direct(&cri, &pod, &direct_logs, &dns).await?;
        direct.push(t0.elapsed());
        sandboxes.push(started);
    }
    for started in &sandboxes {
        berth::agent::pods::stop_pod_direct(&cri, started).await?;
    }

    // 2. Control plane and agent as separate processes, so the agent's RSS is its own.
    let ip = ns.node_ip.to_string();
    let state = work.join("state");
    let bins = common::target_profile_dir();
    let mut cp = Proc::spawn(
        ns,
        &bins.join("berth-control-plane"),
        &["--state-dir", path(&state), "--listen", &format!("{ip}:6443"), "--advertise-address", &ip],
        &work.join("control-plane.log"),
    );
    let admin = berth::pki::admin_kubeconfig_path(&state);
    let server = format!("https://{ip}:6443");
    common::wait_until("admin kubeconfig", Duration::from_secs(60), || Ok::<_, String>(admin.exists().then_some(())));
    let client = berth::kubeclient::from_file(&admin).await?;
    let node_kubeconfig = berth::pki::ensure_node_kubeconfig(&state, NODE, &server)?;
    let agent_state = work.join("agent");
    let mut agent = Proc::spawn(
        ns,
        &common::berth_bin(),
        &[
            "agent", "--kubeconfig", path(&node_kubeconfig), "--node-name", NODE, "--node-ip", &ip,
            "--containerd-socket", path(&ctd.socket), "--cni-conf-dir", path(&ctd.cni_conf_dir),
            "--cni-bin-dir", path(&ctd.cni_bin_dir), "--cni-data-dir", path(&ipam_dir),
            "--pod-log-dir", path(&work.join("pods")), "--state-dir", path(&agent_state),
        ],
        &work.join("agent.log"),
    );
    let nodes: Api<Node> = Api::all(client.clone());
    tokio::time::timeout(Duration::from_secs(60), await_condition(nodes, NODE, node_ready))
        .await
        .map_err(|_| anyhow::anyhow!("node not Ready within 60s; agent log {}", work.join("agent.log").display()))??;
    let rss_idle_kib = rss_kib(agent.pid())?;

    // 3. Pods through the API, one after another.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut api = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("api-{i}");
        let t0 = Instant::now();
        pods.create(&PostParams::default(), &bench_pod(&name, None)).await?;
        tokio::time::timeout(Duration::from_secs(60), await_condition(pods.clone(), &name, pod_running))
            .await
            .map_err(|_| anyhow::anyhow!("pod {name} not Running within 60s"))??;
        api.push(t0.elapsed());
    }
    let rss_loaded_kib = rss_kib(agent.pid())?;

    for i in 0..n {
        let _ = pods.delete(&format!("api-{i}"), &DeleteParams::default().grace_period(0)).await;
    }
    agent.stop();
    cp.stop();
    Ok(Report { direct, api, rss_idle_kib, rss_loaded_kib })
}

fn node_ready(node: Option<&Node>) -> bool {
    node.and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_running(pod: Option<&Pod>) -> bool {
    pod.and_then(|p| p.status.as_ref()).and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))
}

/// A child process inside the node's namespace, stopped (SIGTERM, then SIGKILL) on drop.
struct Proc {
    child: Option<Child>,
}

impl Proc {
    fn spawn(ns: &Netns, bin: &PathBuf, args: &[&str], log: &Path) -> Proc {
        let logf = std::fs::File::create(log).expect("log file");
        let child = ns
            .command(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log fd"))
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Proc { child: Some(child) }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            common::stop_child(&mut child, Duration::from_secs(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}
