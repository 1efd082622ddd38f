//! `berth join` inside a node's netns, against a cluster reached over a `Netns::connect` link.
//!
//! Flags passed (the contract with src/main.rs): the kubeadm flags the test gives, plus
//!   --node-name NAME --node-ip IP --state-dir DIR --containerd-socket SOCK --cni-conf-dir DIR
//!   --cni-bin-dir DIR --cni-data-dir DIR --pod-log-dir DIR --foreground
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::containerd::Containerd;
use super::netns::Netns;
use super::{dump_log, stop_child, try_wait_until};

/// Where the joined node keeps its state and what it talks to.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    pub state_dir: PathBuf,
    pub containerd_socket: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub cni_data_dir: PathBuf,
    pub pod_log_dir: PathBuf,
    pub netns_path: String,
    pub log: PathBuf,
}

impl JoinConfig {
    /// A node `name` in `ns` with containerd `c`; its state lives under containerd's temp dir (so it
    /// goes after containerd's teardown, whose CNI DEL still writes there). `tag` separates runs.
    pub fn new(ns: &Netns, c: &Containerd, name: &str, tag: &str) -> JoinConfig {
        let root = c.root.join(format!("berth-join-{tag}"));
        let cfg = JoinConfig {
            node_name: name.to_owned(),
            node_ip: ns.node_ip,
            state_dir: root.join("state"),
            containerd_socket: c.socket.clone(),
            cni_conf_dir: c.cni_conf_dir.clone(),
            cni_bin_dir: c.cni_bin_dir.clone(),
            cni_data_dir: root.join("cni-data"),
            pod_log_dir: root.join("pods"),
            netns_path: ns.path(),
            log: root.join("berth-join.log"),
        };
        for d in [&cfg.state_dir, &cfg.cni_data_dir, &cfg.pod_log_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        cfg
    }

    /// The node flags after the kubeadm ones.
    pub fn node_args(&self) -> Vec<String> {
        let p = |p: &Path| p.display().to_string();
        vec![
            "--node-name".into(),
            self.node_name.clone(),
            "--node-ip".into(),
            self.node_ip.to_string(),
            "--state-dir".into(),
            p(&self.state_dir),
            "--containerd-socket".into(),
            p(&self.containerd_socket),
            "--cni-conf-dir".into(),
            p(&self.cni_conf_dir),
            "--cni-bin-dir".into(),
            p(&self.cni_bin_dir),
            "--cni-data-dir".into(),
            p(&self.cni_data_dir),
            "--pod-log-dir".into(),
            p(&self.pod_log_dir),
            "--foreground".into(),
        ]
    }

    /// The node kubeconfig join writes.
    pub fn node_kubeconfig(&self) -> PathBuf {
        self.state_dir.join("kubeconfigs/node.conf")
    }

    /// `berth <args…>` inside the node's netns.
    pub fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path))
            .arg("--")
            .arg(super::berth_bin())
            .args(args)
            .env("RUST_LOG", std::env::var("BERTH_E2E_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .env_remove("RUST_BACKTRACE")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null());
        cmd
    }

    /// `berth join <kubeadm args> <node args>` run to completion (for inputs that must fail).
    pub fn join_to_exit(&self, kubeadm: &[&str]) -> Output {
        let mut args: Vec<String> = vec!["join".into()];
        args.extend(kubeadm.iter().map(|s| (*s).to_owned()));
        args.extend(self.node_args());
        let out = self.command(&args).output().expect("run berth join");
        eprintln!(
            "$ berth join {}\n-> {}\nstdout: {}\nstderr (tail): {}",
            kubeadm.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).lines().rev().take(8).collect::<Vec<_>>().join("\n")
        );
        out
    }
}

/// A running `berth join … --foreground` (discovery, bootstrap, then the agent).
pub struct BerthJoin {
    pub cfg: JoinConfig,
    child: Option<Child>,
    starts: u32,
    kubeadm: Vec<String>,
}

impl BerthJoin {
    /// Starts `berth join <kubeadm args>` for `cfg`; returns at once (see [`BerthJoin::wait_joined`]).
    pub fn start(cfg: JoinConfig, kubeadm: &[&str]) -> BerthJoin {
        let mut j = BerthJoin { cfg, child: None, starts: 0, kubeadm: kubeadm.iter().map(|s| (*s).to_owned()).collect() };
        j.spawn_args(&j.join_args());
        j
    }

    fn join_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["join".into()];
        args.extend(self.kubeadm.iter().cloned());
        args.extend(self.cfg.node_args());
        args
    }

    fn spawn_args(&mut self, args: &[String]) {
        self.starts += 1;
        let mut logf = std::fs::OpenOptions::new().create(true).append(true).open(&self.cfg.log).unwrap();
        use std::io::Write;
        let _ = writeln!(logf, "===== harness: start #{} of berth {} =====", self.starts, args[0]);
        let child = self
            .cfg
            .command(args)
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("spawn berth join");
        self.child = Some(child);
    }

    /// Restarts the node as systemd would after join: `berth agent` on the written kubeconfig.
    pub fn restart_as_agent(&mut self) {
        self.stop();
        let mut args: Vec<String> = vec!["agent".into(), "--kubeconfig".into(), self.cfg.node_kubeconfig().display().to_string()];
        let node = self.cfg.node_args();
        // `berth agent` takes the node flags except join's own --foreground; its state dir is
        // join's agent/ subdirectory.
        let mut it = node.into_iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--foreground" => {}
                "--state-dir" => {
                    let dir = it.next().unwrap();
                    args.extend(["--state-dir".into(), format!("{dir}/agent")]);
                }
                _ => args.push(a),
            }
        }
        args.push("--rotate-certificates".into());
        self.spawn_args(&args);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Err when the process is not running.
    pub fn alive(&mut self) -> Result<(), String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(st))) => Err(format!("berth exited: {st}\n{}", super::tail(&self.cfg.log, 30))),
            Some(Err(e)) => Err(format!("berth: {e}")),
            None => Err("berth is not running".into()),
        }
    }

    /// Waits until the node kubeconfig is written (the TLS bootstrap finished).
    pub fn wait_joined(&mut self, timeout: Duration) {
        let kc = self.cfg.node_kubeconfig();
        let r = try_wait_until("berth join to write the node kubeconfig", timeout, || {
            self.alive()?;
            Ok::<_, String>(kc.exists().then_some(()))
        });
        if let Err(e) = r {
            self.dump_log(80);
            panic!("{e}");
        }
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.cfg.log).unwrap_or_default()
    }

    /// SIGTERM by PID, SIGKILL after 30 s.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(30));
        }
    }

    pub fn dump_log(&self, n: usize) {
        dump_log("berth join", &self.cfg.log, n);
    }
}

impl Drop for BerthJoin {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_log(150);
        }
        self.stop();
    }
}
