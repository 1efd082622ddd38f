//! packaging/quickstart.sh, run for real but inside a network namespace with every path pointed
//! into temp dirs (BERTH_* overrides), against the test's own containerd: it must install
//! berth-cni, import the images, start `berth up`, wait for Ready and print a first kubectl command
//! that works as printed. Then `quickstart.sh --stop` stops what it started.
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::containerd::ContainerdOptions;
use common::{Containerd, Netns};

/// What quickstart.sh started, stopped with `quickstart.sh --stop` (then mounts its containerd left
/// under `dir` are unmounted) when dropped: a failing assertion still stops berth up and
/// containerd before their directories are removed. Declare it after the temp dir and the
/// namespace so it drops first.
struct Started {
    script: PathBuf,
    env: Vec<(String, String)>,
    dir: PathBuf,
}

impl Started {
    fn stop(&self) -> std::process::ExitStatus {
        Command::new("bash")
            .arg(&self.script)
            .arg("--stop")
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .status()
            .expect("run quickstart.sh --stop")
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.stop();
        common::umount_below(&self.dir);
    }
}

#[test]
fn quickstart_script_in_a_netns() {
    if !common::e2e_enabled("quickstart_script_in_a_netns") {
        return;
    }
    let _serial = common::serial();
    let tmp = common::temp_dir("berth-qs-");
    let ns = Netns::new();
    let t = tmp.path();
    // containerd runs CNI plugins from the (still empty) dir quickstart.sh installs berth-cni into
    std::fs::create_dir_all(t.join("cni-bin")).unwrap();
    let c = Containerd::start_with(
        &ns,
        ContainerdOptions { cni_bin_dir: Some(t.join("cni-bin")), ..Default::default() },
    );
    let state = t.join("state");
    let log = t.join("berth.log");
    let env: Vec<(String, String)> = vec![
        ("BERTH_NETNS".into(), ns.name.clone()),
        ("BERTH_STATE_DIR".into(), state.display().to_string()),
        ("BERTH_LOG".into(), log.display().to_string()),
        ("BERTH_RUN_DIR".into(), t.join("run").display().to_string()),
        ("BERTH_PREFIX".into(), t.join("prefix").display().to_string()),
        ("BERTH_CNI_BIN_DIR".into(), t.join("cni-bin").display().to_string()),
        ("BERTH_CNI_CONF_DIR".into(), c.cni_conf_dir.display().to_string()),
        ("BERTH_CNI_DATA_DIR".into(), t.join("cni-data").display().to_string()),
        ("BERTH_POD_LOG_DIR".into(), t.join("pods").display().to_string()),
        ("BERTH_CONTAINERD_SOCKET".into(), c.socket.display().to_string()),
        ("BERTH_CONTAINERD_CONFIG".into(), c.config.display().to_string()),
        ("BERTH_NODE_IP".into(), ns.node_ip.to_string()),
        ("BERTH_NODE_NAME".into(), format!("qs-{}", ns.index)),
        ("BERTH_LISTEN".into(), format!("{}:6443", ns.node_ip)),
        ("BERTH_SKIP_BUILD".into(), "1".into()),
        ("BERTH_BIN_DIR".into(), common::target_profile_dir().display().to_string()),
        ("BERTH_SKIP_PACKAGES".into(), "1".into()),
        ("BERTH_READY_TIMEOUT".into(), "120".into()),
    ];
    let script = common::workspace_root().join("packaging/quickstart.sh");
    let started = Started { script: script.clone(), env: env.clone(), dir: t.to_path_buf() };
    let out = Command::new("bash")
        .arg(&script)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .output()
        .expect("run quickstart.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("quickstart stdout:\n{stdout}\nquickstart stderr:\n{stderr}");
    if !out.status.success() {
        common::dump_log("berth up (quickstart)", &log, 80);
        panic!("quickstart.sh failed: {}", out.status);
    }
    assert!(stdout.contains("Berth is up"), "{stdout}");
    assert!(stdout.contains(&state.join("kubeconfigs/admin.conf").display().to_string()), "{stdout}");
    assert!(t.join("cni-bin/berth-cni").exists());
    assert!(t.join("cni-bin/loopback").exists());

    // the printed first commands work as printed
    let run_line = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.contains(" run web "))
        .unwrap_or_else(|| panic!("no `run web` command printed:\n{stdout}"))
        .to_string();
    let get_nodes = stdout.lines().map(str::trim).find(|l| l.ends_with(" get nodes")).expect("get nodes line");
    let o = common::run_ok(Command::new("bash").arg("-c").arg(get_nodes));
    assert!(o.contains(" Ready"), "{o}");
    common::run_ok(Command::new("bash").arg("-c").arg(&run_line));
    let kubectl_prefix = run_line.split(" run web ").next().unwrap().to_string();
    common::wait_until("web Running via the printed kubectl", Duration::from_secs(120), || {
        let o = common::run(Command::new("bash").arg("-c").arg(format!(
            "{kubectl_prefix} get pod web -o jsonpath={{.status.phase}}"
        )));
        let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if s == "Running" {
            Ok(Some(()))
        } else {
            Err(format!("phase {s:?} {}", String::from_utf8_lossy(&o.stderr)))
        }
    });

    // --stop stops berth up (by its pid file)
    let pid: i32 = std::fs::read_to_string(t.join("run/berth.pid")).unwrap().trim().parse().unwrap();
    assert!(started.stop().success());
    // SAFETY: signal 0 only checks existence.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(!alive || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z ")),
        "berth up (pid {pid}) still running after --stop");
}

/// The fresh-host path: no containerd answering, so quickstart.sh writes its containerd config
/// (restrict_oom_score_adj and snapshotter detected), starts containerd itself in the background
/// (inside the netns, root/state/socket in a temp dir), then berth up; `--stop` stops both.
#[test]
fn quickstart_script_starts_its_own_containerd() {
    if !common::e2e_enabled("quickstart_script_starts_its_own_containerd") {
        return;
    }
    let _serial = common::serial();
    let tmp = common::temp_dir("berth-qs2-");
    let ns = Netns::new();
    let t = tmp.path().to_path_buf();
    let p = |s: &str| t.join(s).display().to_string();
    let env: Vec<(String, String)> = vec![
        ("BERTH_NETNS".into(), ns.name.clone()),
        ("BERTH_STATE_DIR".into(), p("state")),
        ("BERTH_LOG".into(), p("berth.log")),
        ("BERTH_RUN_DIR".into(), p("run")),
        ("BERTH_PREFIX".into(), p("prefix")),
        ("BERTH_CNI_BIN_DIR".into(), p("cni-bin")),
        ("BERTH_CNI_CONF_DIR".into(), p("net.d")),
        ("BERTH_CNI_DATA_DIR".into(), p("cni-data")),
        ("BERTH_POD_LOG_DIR".into(), p("pods")),
        ("BERTH_CONTAINERD_SOCKET".into(), p("ctrd/containerd.sock")),
        ("BERTH_CONTAINERD_CONFIG".into(), p("ctrd/config.toml")),
        ("BERTH_CONTAINERD_ROOT".into(), p("ctrd/root")),
        ("BERTH_CONTAINERD_STATE".into(), p("ctrd/state")),
        ("BERTH_CONTAINERD_LOG".into(), p("ctrd/containerd.log")),
        ("BERTH_NODE_IP".into(), ns.node_ip.to_string()),
        ("BERTH_NODE_NAME".into(), format!("qs-{}", ns.index)),
        ("BERTH_LISTEN".into(), format!("{}:6443", ns.node_ip)),
        ("BERTH_SKIP_BUILD".into(), "1".into()),
        ("BERTH_BIN_DIR".into(), common::target_profile_dir().display().to_string()),
        ("BERTH_SKIP_PACKAGES".into(), "1".into()),
        ("BERTH_READY_TIMEOUT".into(), "120".into()),
    ];
    let script = common::workspace_root().join("packaging/quickstart.sh");
    let started = Started { script: script.clone(), env: env.clone(), dir: t.clone() };
    let out = Command::new("bash")
        .arg(&script)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .output()
        .expect("run quickstart.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("quickstart stdout:\n{stdout}\nquickstart stderr:\n{stderr}");
    if !out.status.success() {
        common::dump_log("berth up (quickstart)", &t.join("berth.log"), 60);
        common::dump_log("containerd (quickstart)", &t.join("ctrd/containerd.log"), 40);
        panic!("quickstart.sh failed: {}", out.status);
    }
    let cfg = std::fs::read_to_string(t.join("ctrd/config.toml")).expect("containerd config written");
    let want_oom = format!("restrict_oom_score_adj = {}", common::oom_score_adj_restricted());
    assert!(cfg.contains(&want_oom), "expected `{want_oom}` in:\n{cfg}");
    assert!(cfg.contains(r#"sandbox_image = "berth.local/pause:3.10""#), "{cfg}");
    assert!(t.join("run/containerd.pid").exists());
    let get_nodes = stdout.lines().map(str::trim).find(|l| l.ends_with(" get nodes")).expect("get nodes line");
    let o = common::run_ok(Command::new("bash").arg("-c").arg(get_nodes));
    assert!(o.contains(" Ready"), "{o}");
    let ctrd_pid: i32 = std::fs::read_to_string(t.join("run/containerd.pid")).unwrap().trim().parse().unwrap();
    started.stop();
    assert!(!t.join("run/containerd.pid").exists());
    // SAFETY: signal 0 only checks existence.
    let gone = unsafe { libc::kill(ctrd_pid, 0) } != 0
        || std::fs::read_to_string(format!("/proc/{ctrd_pid}/stat")).is_ok_and(|s| s.contains(") Z "));
    assert!(gone, "containerd (pid {ctrd_pid}) still running after --stop");
}
