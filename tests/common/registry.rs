//! A local OCI registry (Debian's `docker-registry`, distribution 2.8) inside a node's netns on
//! 127.0.0.1:<port>, storage in a temp dir. [`Registry::push_from`] copies an image there through a
//! containerd (`ctr images tag` + `ctr images push --plain-http`) so a pod using the remote name
//! exercises a real CRI PullImage.
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use super::containerd::Containerd;
use super::netns::Netns;
use super::{dump_log, run_ok, stop_child, try_wait_until};

pub struct Registry {
    dir: Option<tempfile::TempDir>,
    pub port: u16,
    pub log: PathBuf,
    netns_name: String,
    child: Option<Child>,
}

impl Registry {
    pub fn start(ns: &Netns, port: u16) -> Registry {
        let dir = super::temp_dir("berth-registry-");
        let root = dir.path().to_path_buf();
        let storage = root.join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let cfg = root.join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )
        .unwrap();
        let log = root.join("registry.log");
        let logf = std::fs::File::create(&log).unwrap();
        let child = ns
            .command("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("spawn docker-registry (package docker-registry)");
        let mut r = Registry { dir: Some(dir), port, log, netns_name: ns.name.clone(), child: Some(child) };
        let res = try_wait_until("registry to answer /v2/", Duration::from_secs(30), || {
            if let Some(Ok(Some(st))) = r.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("docker-registry exited: {st}"));
            }
            super::http_get_in_netns(&r.netns_name, "127.0.0.1", port, "/v2/").map(Some)
        });
        if let Err(e) = res {
            dump_log("registry", &r.log, 40);
            panic!("{e}");
        }
        r
    }

    /// `127.0.0.1:<port>/<path>`
    pub fn name(&self, path: &str) -> String {
        format!("127.0.0.1:{}/{}", self.port, path)
    }

    /// Pushes containerd image `local` to this registry as `remote` (a full name from
    /// [`Registry::name`]). With `forget_locally`, the remote name is then removed from containerd
    /// again (synchronously garbage-collected), so a later pull has to talk to the registry.
    pub fn push_from(&self, c: &Containerd, local: &str, remote: &str, forget_locally: bool) {
        run_ok(c.ctr().args(["images", "tag", "--force", local, remote]));
        run_ok(c.ctr_in_netns().args(["images", "push", "--plain-http", remote]));
        if forget_locally {
            run_ok(c.ctr().args(["images", "rm", "--sync", remote]));
        }
    }

    /// Imports berth.local/busybox-remote:1.35 into `c`, pushes it here as
    /// 127.0.0.1:<port>/berth/busybox-remote:1.35 and deletes both names from `c` again (with a
    /// synchronous GC, so its layer is gone locally). Returns the remote name.
    pub fn seed_busybox_remote(&self, c: &Containerd) -> String {
        let remote = self.name(&format!("{}:1.35", super::BUSYBOX_REMOTE_REPO));
        c.import(&super::images_dir().join("busybox-remote.oci.tar"));
        self.push_from(c, super::BUSYBOX_REMOTE_LOCAL, &remote, true);
        run_ok(c.ctr().args(["images", "rm", "--sync", super::BUSYBOX_REMOTE_LOCAL]));
        remote
    }

    /// Tags of `repo` in the registry (GET /v2/<repo>/tags/list).
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let body = super::http_get_in_netns(&self.netns_name, "127.0.0.1", self.port, &format!("/v2/{repo}/tags/list"))
            .unwrap_or_default();
        let json = body.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v["tags"].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect()
    }

    pub fn dump_log(&self, n: usize) {
        dump_log("registry", &self.log, n);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_log(20);
        }
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(5));
        }
        drop(self.dir.take());
    }
}
