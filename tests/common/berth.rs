//! `berth up` inside a node's netns, and the real kubectl pointed at its admin kubeconfig.
//!
//! Flags passed (the contract with src/main.rs):
//!   berth up --state-dir DIR --listen <node-ip>:6443 --node-ip <node-ip> --node-name NAME
//!            --containerd-socket SOCK --cni-conf-dir DIR --cni-bin-dir DIR --cni-data-dir DIR
//!            --pod-log-dir DIR
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::containerd::Containerd;
use super::netns::Netns;
use super::{dump_log, run, stop_child, try_wait_until, wait_until};

/// Where `berth up` keeps its state and what it talks to.
#[derive(Debug, Clone)]
pub struct BerthConfig {
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    pub api_port: u16,
    pub state_dir: PathBuf,
    pub containerd_socket: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub cni_data_dir: PathBuf,
    pub pod_log_dir: PathBuf,
    pub netns_path: String,
}

impl BerthConfig {
    pub fn args(&self) -> Vec<String> {
        vec![
            "up".into(),
            "--state-dir".into(),
            self.state_dir.display().to_string(),
            "--listen".into(),
            format!("{}:{}", self.node_ip, self.api_port),
            "--node-ip".into(),
            self.node_ip.to_string(),
            "--node-name".into(),
            self.node_name.clone(),
            "--containerd-socket".into(),
            self.containerd_socket.display().to_string(),
            "--cni-conf-dir".into(),
            self.cni_conf_dir.display().to_string(),
            "--cni-bin-dir".into(),
            self.cni_bin_dir.display().to_string(),
            "--cni-data-dir".into(),
            self.cni_data_dir.display().to_string(),
            "--pod-log-dir".into(),
            self.pod_log_dir.display().to_string(),
        ]
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.state_dir.join("kubeconfigs/admin.conf")
    }

    /// berth-cni keeps allocations in <cni-data-dir>/<network name "berth">/.
    pub fn ipam_dir(&self) -> PathBuf {
        self.cni_data_dir.join("berth")
    }
}

pub struct Berth {
    pub cfg: BerthConfig,
    pub log: PathBuf,
    child: std::sync::Mutex<Option<Child>>,
    starts: u32,
}

impl Berth {
    /// Starts `berth up` for the node `ns` with its containerd `c`; waits until the API answers.
    ///
    /// Its state, CNI data and pod logs live under containerd's temp dir (`<containerd root>/berth-up`),
    /// so they are removed only after containerd's teardown (whose CNI DEL still writes there).
    pub fn start(ns: &Netns, c: &Containerd) -> Berth {
        let root = c.root.join("berth-up");
        std::fs::create_dir_all(&root).unwrap();
        let cfg = BerthConfig {
            node_name: format!("node-{}", ns.index),
            node_ip: ns.node_ip,
            api_port: 6443,
            state_dir: root.join("state"),
            containerd_socket: c.socket.clone(),
            cni_conf_dir: c.cni_conf_dir.clone(),
            cni_bin_dir: c.cni_bin_dir.clone(),
            cni_data_dir: root.join("cni-data"),
            pod_log_dir: root.join("pods"),
            netns_path: ns.path(),
        };
        for d in [&cfg.state_dir, &cfg.cni_data_dir, &cfg.pod_log_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        let log = root.join("berth.log");
        let mut b = Berth { cfg, log, child: std::sync::Mutex::new(None), starts: 0 };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let mut logf = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        use std::io::Write;
        let _ = writeln!(logf, "===== harness: start #{} of berth up =====", self.starts);
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.cfg.netns_path))
            .arg("--")
            .arg(super::berth_bin())
            .args(self.cfg.args())
            .env("RUST_LOG", std::env::var("BERTH_E2E_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        *self.child.lock().unwrap() = Some(cmd.spawn().expect("spawn berth up"));
        self.wait_api();
    }

    /// Waits until the admin kubeconfig exists and the API server answers through kubectl.
    pub fn wait_api(&mut self) {
        let kc = self.cfg.admin_kubeconfig();
        let r = try_wait_until("berth up's API server (kubectl get --raw /version)", Duration::from_secs(60), || {
            self.alive()?;
            if !kc.exists() {
                return Err(format!("{} not written yet", kc.display()));
            }
            let out = self.kubectl().args(["get", "--raw", "/version"]).output_raw();
            if out.status.success() {
                Ok(Some(()))
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
        if let Err(e) = r {
            self.dump_log(80);
            panic!("{e}");
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(|c| c.id())
    }

    pub fn is_running(&self) -> bool {
        self.alive().is_ok()
    }

    /// Err when `berth up` is not running (exited, or never started).
    pub fn alive(&self) -> Result<(), String> {
        match self.child.lock().unwrap().as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(st))) => Err(format!("berth up exited: {st}")),
            Some(Err(e)) => Err(format!("berth up: {e}")),
            None => Err("berth up is not running".into()),
        }
    }

    /// Panics (the log tail is printed by Drop) when `berth up` died during a wait.
    fn assert_alive(&self) {
        if let Err(e) = self.alive() {
            panic!("{e}");
        }
    }

    /// SIGTERM by PID; waits for the exit (SIGKILL after 30 s). Returns whether it exited by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.lock().unwrap().take() else { return true };
        // SAFETY: kill(2) on our own child's PID, not yet reaped.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let r = try_wait_until("berth up to exit after SIGTERM", Duration::from_secs(30), || {
            c.try_wait().map(|s| s.map(|_| ()))
        });
        if r.is_err() {
            let _ = c.kill();
            let _ = c.wait();
            return false;
        }
        true
    }

    /// Starts `berth up` again with the same flags and state.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// kubectl (the /usr/bin/kubectl dispatcher) with the admin kubeconfig, inside the netns.
    pub fn kubectl(&self) -> Kubectl {
        self.kubectl_bin("/usr/bin/kubectl")
    }

    /// A specific kubectl binary, e.g. /usr/lib/google-cloud-sdk/bin/kubectl.1.27.
    pub fn kubectl_bin(&self, bin: impl AsRef<Path>) -> Kubectl {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.cfg.netns_path))
            .arg("--")
            .arg(bin.as_ref())
            .arg("--kubeconfig")
            .arg(self.cfg.admin_kubeconfig())
            .arg("--request-timeout=20s");
        Kubectl { cmd }
    }

    /// Waits until the node is Ready; returns its name.
    pub fn wait_node_ready(&self, timeout: Duration) -> String {
        let name = self.cfg.node_name.clone();
        wait_until(&format!("node {name} Ready"), timeout, || {
            self.assert_alive();
            let out = self
                .kubectl()
                .args(["get", "node", &name, "-o", r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#])
                .output_raw();
            let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && s == "True" {
                Ok(Some(()))
            } else {
                Err(format!("Ready={s:?} {}", String::from_utf8_lossy(&out.stderr)))
            }
        });
        name
    }

    /// A pod as JSON (None if kubectl fails, e.g. NotFound).
    pub fn pod_json(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.kubectl().args(["get", "pod", name, "-o", "json"]).output_raw();
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    fn assert_alive_then<T>(&self, f: impl FnOnce() -> T) -> T {
        self.assert_alive();
        f()
    }

    /// Waits until `f(pod JSON)` holds; returns the pod JSON.
    pub fn wait_pod(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_until(&format!("pod {name}: {what}"), timeout, || match self.assert_alive_then(|| self.pod_json(name)) {
            Some(p) if f(&p) => Ok(Some(p)),
            Some(p) => Err(format!("phase={} status={}", p["status"]["phase"], p["status"])),
            None => Err("pod not found / kubectl failed".to_string()),
        })
    }

    /// Waits until the pod is gone (kubectl get says NotFound).
    pub fn wait_pod_gone(&self, name: &str, timeout: Duration) {
        wait_until(&format!("pod {name} to be deleted"), timeout, || {
            self.assert_alive();
            let out = self.kubectl().args(["get", "pod", name, "-o", "name"]).output_raw();
            let err = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() && err.contains("NotFound") {
                Ok(Some(()))
            } else {
                Err(format!("still there: {} {}", String::from_utf8_lossy(&out.stdout).trim(), err.trim()))
            }
        });
    }

    pub fn dump_log(&self, n: usize) {
        dump_log("berth up", &self.log, n);
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_log(120);
        }
        let child = match self.child.get_mut() {
            Ok(c) => c.take(),
            Err(e) => e.into_inner().take(),
        };
        if let Some(mut c) = child {
            stop_child(&mut c, Duration::from_secs(20));
        }
    }
}

/// A kubectl invocation being built.
pub struct Kubectl {
    cmd: Command,
}

impl Kubectl {
    /// Wraps a prepared kubectl command (program, namespace and kubeconfig already set).
    pub(super) fn from_command(cmd: Command) -> Kubectl {
        Kubectl { cmd }
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, a: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(a);
        self
    }

    /// Feeds `input` on stdin (e.g. `-f -` manifests).
    pub fn stdin(mut self, input: &str) -> Output {
        use std::io::Write;
        self.cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.cmd.spawn().expect("spawn kubectl");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().expect("wait kubectl")
    }

    pub fn output_raw(mut self) -> Output {
        run(&mut self.cmd)
    }

    /// Runs; panics (with stdout/stderr) unless it succeeds; returns stdout.
    pub fn ok(mut self) -> String {
        let out = run(&mut self.cmd);
        if !out.status.success() {
            panic!(
                "{:?} failed ({}):\nstdout: {}\nstderr: {}",
                self.cmd,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        eprintln!("$ kubectl {}", display_args(&self.cmd));
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        eprint!("{s}");
        s
    }
}

fn display_args(cmd: &Command) -> String {
    cmd.get_args()
        .skip_while(|a| *a != "--request-timeout=20s")
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
