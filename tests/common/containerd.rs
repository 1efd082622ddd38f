//! A private containerd (Debian's 1.6.x) for one node: root, state, sockets, runc root, CNI conf
//! dir and logs all under a temp dir; started inside the node's netns with nsenter; the test images
//! imported. On Drop: every CRI pod sandbox is stopped and removed (so CNI DEL runs and the pod
//! netns go away), containerd is stopped by PID, leftover runc containers under its private runc
//! root are force-deleted, mounts under the temp dir are unmounted and the dir removed.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use super::netns::Netns;
use super::{dump_log, run, run_ok, stop_child, try_wait_until, umount_below, wait_until};

pub const REGISTRY_PORT: u16 = 5000;

#[derive(Debug, Clone)]
pub struct ContainerdOptions {
    /// CNI bin dir; None: a fresh dir with the workspace's berth-cni (+ `loopback` -> berth-cni).
    pub cni_bin_dir: Option<PathBuf>,
    /// Port of the local registry mirrored as plain HTTP (127.0.0.1:<port>).
    pub registry_port: u16,
    /// Import the test images (pause, busybox) after start.
    pub import_images: bool,
}

impl Default for ContainerdOptions {
    fn default() -> Self {
        ContainerdOptions { cni_bin_dir: None, registry_port: REGISTRY_PORT, import_images: true }
    }
}

/// Inputs of the config file (pure rendering, see [`render_config`]).
#[derive(Debug, Clone)]
pub struct ConfigParams {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub runc_root: PathBuf,
    pub snapshotter: String,
    pub restrict_oom_score_adj: bool,
    pub sandbox_image: String,
    pub registry_port: u16,
}

/// containerd 1.6 config (version 2) for a private instance.
pub fn render_config(p: &ConfigParams) -> String {
    let d = p.dir.display();
    format!(
        r#"# written by Berth's test harness
version = 2
root = "{d}/root"
state = "{d}/state"
plugin_dir = ""
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "{d}/runc-v1"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  restrict_oom_score_adj = {oom}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  disable_cgroup = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snap}"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{runc}"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cbin}"
    conf_dir = "{cconf}"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."127.0.0.1:{port}"]
    endpoint = ["http://127.0.0.1:{port}"]
"#,
        sock = p.socket.display(),
        sandbox = p.sandbox_image,
        oom = p.restrict_oom_score_adj,
        snap = p.snapshotter,
        runc = p.runc_root.display(),
        cbin = p.cni_bin_dir.display(),
        cconf = p.cni_conf_dir.display(),
        port = p.registry_port,
    )
}

/// Makes `dir` a CNI bin dir holding the workspace's berth-cni, plus `loopback` pointing to it.
pub fn make_berth_cni_bin_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let dst = dir.join("berth-cni");
    std::fs::copy(super::berth_cni_bin(), &dst).expect("copy berth-cni");
    let lo = dir.join("loopback");
    if !lo.exists() {
        std::os::unix::fs::symlink("berth-cni", &lo).expect("symlink loopback");
    }
}

/// What the tests need to know about a CRI container.
#[derive(Debug, Clone)]
pub struct CriContainer {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    /// CONTAINER_CREATED / RUNNING / EXITED / UNKNOWN
    pub state: String,
    pub labels: std::collections::HashMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct CriSandbox {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// SANDBOX_READY / SANDBOX_NOTREADY
    pub state: String,
}

pub struct Containerd {
    dir: Option<tempfile::TempDir>,
    pub root: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub runc_root: PathBuf,
    pub snapshotter: String,
    pub restrict_oom_score_adj: bool,
    netns_path: String,
    child: Option<Child>,
    rt: tokio::runtime::Runtime,
}

impl Containerd {
    pub fn start(ns: &Netns) -> Containerd {
        Self::start_with(ns, ContainerdOptions::default())
    }

    pub fn start_with(ns: &Netns, opts: ContainerdOptions) -> Containerd {
        let dir = super::temp_dir("berth-ctrd-");
        let root = dir.path().to_path_buf();
        let cni_bin_dir = match &opts.cni_bin_dir {
            Some(d) => d.clone(),
            None => {
                let d = root.join("cni-bin");
                make_berth_cni_bin_dir(&d);
                d
            }
        };
        let cni_conf_dir = root.join("net.d");
        std::fs::create_dir_all(&cni_conf_dir).unwrap();
        let snapshotter = if super::overlayfs_works(&root) { "overlayfs" } else { "native" }.to_string();
        let restrict = super::oom_score_adj_restricted();
        let params = ConfigParams {
            dir: root.clone(),
            socket: root.join("containerd.sock"),
            cni_bin_dir: cni_bin_dir.clone(),
            cni_conf_dir: cni_conf_dir.clone(),
            runc_root: root.join("runc"),
            snapshotter: snapshotter.clone(),
            restrict_oom_score_adj: restrict,
            sandbox_image: super::PAUSE_IMAGE.into(),
            registry_port: opts.registry_port,
        };
        let config = root.join("config.toml");
        std::fs::write(&config, render_config(&params)).unwrap();
        let log = root.join("containerd.log");
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path()))
            .args(["--", "containerd", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("spawn containerd (package containerd)");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut c = Containerd {
            dir: Some(dir),
            root,
            socket: params.socket,
            config,
            log,
            cni_bin_dir,
            cni_conf_dir,
            runc_root: params.runc_root,
            snapshotter,
            restrict_oom_score_adj: restrict,
            netns_path: ns.path(),
            child: Some(child),
            rt,
        };
        c.wait_ready();
        if opts.import_images {
            for a in super::image_archives() {
                c.import(&a);
            }
        }
        c
    }

    fn wait_ready(&mut self) {
        let sock = self.socket.clone();
        let r = try_wait_until("containerd to answer on its socket", Duration::from_secs(30), || {
            if let Some(ch) = self.child.as_mut() {
                if let Ok(Some(st)) = ch.try_wait() {
                    return Err(format!("containerd exited: {st}"));
                }
            }
            if !sock.exists() {
                return Err("socket not there yet".to_string());
            }
            let out = run(Command::new("ctr").arg("-a").arg(&sock).arg("version"));
            if out.status.success() {
                Ok(Some(()))
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
        if let Err(e) = r {
            dump_log("containerd", &self.log, 60);
            panic!("{e}");
        }
        // CRI comes up after the API; wait until it answers too
        let r = try_wait_until("containerd's CRI service", Duration::from_secs(30), || {
            self.list_sandboxes_res().map(|_| Some(()))
        });
        if let Err(e) = r {
            dump_log("containerd", &self.log, 60);
            panic!("{e}");
        }
    }

    /// `ctr -a <sock> -n k8s.io args...` (runs in the host netns: only for local operations).
    pub fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a").arg(&self.socket).args(["-n", "k8s.io"]);
        c
    }

    /// `ctr` inside the node's netns (push/pull talk to 127.0.0.1 of the node).
    pub fn ctr_in_netns(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns_path))
            .args(["--", "ctr", "-a"])
            .arg(&self.socket)
            .args(["-n", "k8s.io"]);
        c
    }

    pub fn import(&self, archive: &Path) {
        run_ok(
            self.ctr()
                .args(["images", "import", "--snapshotter", &self.snapshotter])
                .arg(archive),
        );
    }

    /// Image refs known to containerd in the k8s.io namespace.
    pub fn image_refs(&self) -> Vec<String> {
        run_ok(self.ctr().args(["images", "ls", "-q"]))
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn channel(&self) -> Channel {
        let sock = self.socket.clone();
        self.rt
            .block_on(containerd_client::connect(sock))
            .expect("connect to containerd socket")
    }

    pub fn runtime_client(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel())
    }

    pub fn image_client(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel())
    }

    /// Runs a future on this guard's runtime (for direct CRI calls in tests).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn list_sandboxes_res(&self) -> Result<Vec<CriSandbox>, String> {
        let sock = self.socket.clone();
        self.rt.block_on(async move {
            let ch = containerd_client::connect(sock).await.map_err(|e| e.to_string())?;
            let mut c = RuntimeServiceClient::new(ch);
            let r = c
                .list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest { filter: None })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            Ok(r.items
                .into_iter()
                .map(|s| {
                    let m = s.metadata.unwrap_or_default();
                    CriSandbox {
                        id: s.id,
                        name: m.name,
                        namespace: m.namespace,
                        uid: m.uid,
                        state: k8s_cri::v1::PodSandboxState::try_from(s.state)
                            .map(|x| x.as_str_name().to_string())
                            .unwrap_or_else(|_| s.state.to_string()),
                    }
                })
                .collect())
        })
    }

    /// CRI ListPodSandbox.
    pub fn list_sandboxes(&self) -> Vec<CriSandbox> {
        self.list_sandboxes_res().expect("CRI ListPodSandbox")
    }

    /// CRI ListContainers.
    pub fn list_containers(&self) -> Vec<CriContainer> {
        let sock = self.socket.clone();
        self.rt
            .block_on(async move {
                let ch = containerd_client::connect(sock).await.map_err(|e| e.to_string())?;
                let mut c = RuntimeServiceClient::new(ch);
                let r = c
                    .list_containers(k8s_cri::v1::ListContainersRequest { filter: None })
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                Ok::<_, String>(
                    r.containers
                        .into_iter()
                        .map(|c| {
                            let m = c.metadata.unwrap_or_default();
                            CriContainer {
                                id: c.id,
                                sandbox_id: c.pod_sandbox_id,
                                name: m.name,
                                attempt: m.attempt,
                                state: k8s_cri::v1::ContainerState::try_from(c.state)
                                    .map(|x| x.as_str_name().to_string())
                                    .unwrap_or_else(|_| c.state.to_string()),
                                labels: c.labels,
                            }
                        })
                        .collect(),
                )
            })
            .expect("CRI ListContainers")
    }

    /// Stops and removes every pod sandbox through CRI (containers go with them).
    pub fn remove_all_sandboxes(&self) -> Result<(), String> {
        let sock = self.socket.clone();
        let fut = async move {
            let ch = containerd_client::connect(sock).await.map_err(|e| e.to_string())?;
            let mut c = RuntimeServiceClient::new(ch);
            let items = c
                .list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest { filter: None })
                .await
                .map_err(|e| e.to_string())?
                .into_inner()
                .items;
            let mut errs = vec![];
            for s in items {
                if let Err(e) = c
                    .stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest { pod_sandbox_id: s.id.clone() })
                    .await
                {
                    errs.push(format!("stop {}: {e}", s.id));
                }
                if let Err(e) = c
                    .remove_pod_sandbox(k8s_cri::v1::RemovePodSandboxRequest { pod_sandbox_id: s.id.clone() })
                    .await
                {
                    errs.push(format!("remove {}: {e}", s.id));
                }
            }
            if errs.is_empty() {
                Ok(())
            } else {
                Err(errs.join("; "))
            }
        };
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(60), fut).await })
            .unwrap_or_else(|_| Err("timed out".into()))
    }

    /// Whether the containerd process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Force-deletes containers left in the private runc root (after containerd is gone).
    fn runc_force_cleanup(&self) {
        let Ok(rd) = std::fs::read_dir(&self.runc_root) else { return };
        for ns_dir in rd.flatten() {
            let out = run(Command::new("runc").arg("--root").arg(ns_dir.path()).args(["list", "-q"]));
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = run(Command::new("runc")
                    .arg("--root")
                    .arg(ns_dir.path())
                    .args(["delete", "--force", id]));
            }
        }
    }

    /// Prints the tail of containerd's log (for failing tests).
    pub fn dump_log(&self, n: usize) {
        dump_log("containerd", &self.log, n);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_log(40);
        }
        if self.is_running() {
            if let Err(e) = self.remove_all_sandboxes() {
                eprintln!("harness: removing CRI sandboxes at teardown: {e}");
            }
        }
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
        self.runc_force_cleanup();
        umount_below(&self.root);
        // TempDir's own Drop removes the directory (unless BERTH_E2E_KEEP)
        drop(self.dir.take());
    }
}

/// Waits until containerd (via CRI) lists no container whose pod name label is `pod`.
pub fn wait_no_containers_for_pod(c: &Containerd, pod: &str, timeout: Duration) {
    wait_until(&format!("CRI containers of pod {pod} to be removed"), timeout, || {
        let left: Vec<_> = c
            .list_containers()
            .into_iter()
            .filter(|x| x.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some(pod))
            .collect();
        if left.is_empty() {
            Ok(Some(()))
        } else {
            Err(format!("{left:?}"))
        }
    });
}
