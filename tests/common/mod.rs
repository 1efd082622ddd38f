//! Test harness for Berth's end-to-end tests: network namespaces as hosts, a private containerd per
//! node, locally built OCI images, a local registry, `berth up`, and the real kubectl.
//!
//! Every guard cleans up on Drop (processes by PID, mounts under its temp dir, the netns, the temp
//! dir); set `BERTH_E2E_KEEP=1` to keep temp dirs (logs) for inspection. Nothing here touches the
//! host's own network namespace: processes are started with `nsenter --net=/var/run/netns/<ns>`.
#![allow(dead_code)]

pub mod berth;
pub mod containerd;
pub mod join;
pub mod netns;
pub mod registry;
pub mod upstream;

use std::ffi::OsStr;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use berth::{Berth, BerthConfig};
#[allow(unused_imports)]
pub use containerd::Containerd;
#[allow(unused_imports)]
pub use netns::Netns;
#[allow(unused_imports)]
pub use registry::Registry;
#[allow(unused_imports)]
pub use upstream::{upstream_bin, UpstreamControlPlane};

pub type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

pub const BUSYBOX_IMAGE: &str = "berth.local/busybox:1.35";
pub const PAUSE_IMAGE: &str = "berth.local/pause:3.10";
/// Built locally like busybox but with its own layer; only ever pulled from the local registry.
pub const BUSYBOX_REMOTE_LOCAL: &str = "berth.local/busybox-remote:1.35";
/// Repository path of that image in the local registry.
pub const BUSYBOX_REMOTE_REPO: &str = "berth/busybox-remote";

/// Returns false (after printing why) when the e2e tests cannot run here: not root.
/// Callers `return` (the test passes as skipped). Everything else fails loudly.
pub fn e2e_enabled(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        eprintln!("SKIP {test}: end-to-end tests need root (network namespaces, containerd); euid={euid}");
        return false;
    }
    if std::env::var_os("BERTH_E2E_SKIP").is_some() {
        eprintln!("SKIP {test}: BERTH_E2E_SKIP is set");
        return false;
    }
    true
}

/// Heavy tests (each runs containerd etc.) take this lock so `cargo test` with its default thread
/// count still runs them one at a time on a 2-core machine.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The workspace root (this package's manifest dir).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `berth` binary cargo built for these tests.
pub fn berth_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth"))
}

/// target/<profile>/, where the workspace's binaries are.
pub fn target_profile_dir() -> PathBuf {
    berth_bin().parent().expect("berth binary has a parent dir").to_path_buf()
}

/// The workspace's `berth-cni` binary (another package, so no CARGO_BIN_EXE_ for it): built with
/// cargo if it is not there yet (tests/run.sh builds the workspace first).
pub fn berth_cni_bin() -> PathBuf {
    static ONCE: OnceLock<PathBuf> = OnceLock::new();
    ONCE.get_or_init(|| {
        let p = target_profile_dir().join("berth-cni");
        if !p.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "berth-cni"]).current_dir(workspace_root());
            if target_profile_dir().file_name() == Some(OsStr::new("release")) {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo build -p berth-cni");
            assert!(st.success(), "cargo build -p berth-cni failed");
        }
        assert!(p.exists(), "{} missing after build", p.display());
        p
    })
    .clone()
}

/// Directory holding the OCI archives built by images/build.sh (built once per test process, or
/// taken from BERTH_E2E_IMAGES when tests/run.sh already built them).
pub fn images_dir() -> PathBuf {
    static ONCE: OnceLock<PathBuf> = OnceLock::new();
    ONCE.get_or_init(|| {
        if let Some(d) = std::env::var_os("BERTH_E2E_IMAGES") {
            let d = PathBuf::from(d);
            if ["busybox.oci.tar", "pause.oci.tar", "busybox-remote.oci.tar"].iter().all(|f| d.join(f).exists()) {
                return d;
            }
        }
        let d = target_profile_dir().join("berth-e2e-images");
        let out = Command::new("bash")
            .arg(workspace_root().join("images/build.sh"))
            .arg(&d)
            .output()
            .expect("run images/build.sh");
        assert!(
            out.status.success(),
            "images/build.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        d
    })
    .clone()
}

/// All OCI archives the tests import into each containerd.
pub fn image_archives() -> Vec<PathBuf> {
    let d = images_dir();
    ["pause.oci.tar", "busybox.oci.tar"].iter().map(|f| d.join(f)).collect()
}

/// A temp dir under /tmp (short paths: unix sockets live in it). Kept if BERTH_E2E_KEEP is set.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    let mut d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("create temp dir");
    if std::env::var_os("BERTH_E2E_KEEP").is_some() {
        d.disable_cleanup(true);
        eprintln!("BERTH_E2E_KEEP: keeping {}", d.path().display());
    }
    d
}

/// Polls `f` until it returns Some, or fails with the last observation after `timeout`.
/// `f` returns Ok(Some(v)) when done, Ok(None) to retry, Err to retry (remembered for the message).
pub fn wait_until<T, E: Debug>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> std::result::Result<Option<T>, E>,
) -> T {
    match try_wait_until(what, timeout, &mut f) {
        Ok(v) => v,
        Err(msg) => panic!("{msg}"),
    }
}

/// Like [`wait_until`] but returns the timeout as an error message instead of panicking.
pub fn try_wait_until<T, E: Debug>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> std::result::Result<Option<T>, E>,
) -> std::result::Result<T, String> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    let mut last;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => last = "condition not met".into(),
            Err(e) => last = format!("{e:?}"),
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}; last: {last}"));
        }
        // poll interval, not synchronisation: the condition decides
        std::thread::sleep(delay.min(deadline.saturating_duration_since(Instant::now())));
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// Runs a command to completion, capturing output (stdin closed).
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run {cmd:?}: {e}"),
    }
}

/// Runs a command; panics with its stderr unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends SIGTERM to `child` (by PID), waits up to `grace`, then SIGKILLs it. Reaps it.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: plain kill(2) on a PID we spawned and have not reaped yet.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Last `n` lines of a file ("" if unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Prints a log's tail to stderr (shown by cargo test for failing tests).
pub fn dump_log(label: &str, path: &Path, n: usize) {
    eprintln!("----- {label}: last {n} lines of {} -----", path.display());
    eprintln!("{}", tail(path, n));
    eprintln!("----- end of {label} -----");
}

/// Unmounts everything mounted at or below `dir` (deepest first, lazily), so it can be removed.
pub fn umount_below(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        let c = std::ffi::CString::new(p.clone()).unwrap();
        // SAFETY: umount2 with a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when this process may not lower oom_score_adj (no CAP_SYS_RESOURCE, e.g. inside some
/// containers/VMs): containerd's CRI then needs `restrict_oom_score_adj = true`, else runc fails
/// every sandbox with "can't get final child's PID from pipe".
pub fn oom_score_adj_restricted() -> bool {
    let cap_missing = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("CapEff:"))
                .and_then(|l| u64::from_str_radix(l["CapEff:".len()..].trim(), 16).ok())
        })
        .map(|caps| caps & (1 << 24) == 0) // CAP_SYS_RESOURCE = 24
        .unwrap_or(true);
    // Try it for real in a child: lowering the value needs CAP_SYS_RESOURCE.
    let write_fails = !Command::new("sh")
        .arg("-c")
        .arg("v=$(cat /proc/self/oom_score_adj); [ \"$v\" -gt -1000 ] || exit 1; echo $((v-1)) > /proc/self/oom_score_adj")
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    cap_missing || write_fails
}

/// Whether overlayfs mounts work on the filesystem holding `dir` (else containerd uses `native`).
pub fn overlayfs_works(dir: &Path) -> bool {
    let base = dir.join(".overlay-probe");
    let (l, u, w, m) = (base.join("l"), base.join("u"), base.join("w"), base.join("m"));
    for d in [&l, &u, &w, &m] {
        if std::fs::create_dir_all(d).is_err() {
            return false;
        }
    }
    let ok = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={},upperdir={},workdir={}", l.display(), u.display(), w.display()))
        .arg(&m)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        umount_below(&m);
    }
    let _ = std::fs::remove_dir_all(&base);
    ok
}

/// `curl` inside a netns: GET url, returns (status line ok?, body). Falls back to bash /dev/tcp
/// when curl is missing.
pub fn http_get_in_netns(ns: &str, host: &str, port: u16, path: &str) -> std::result::Result<String, String> {
    let have_curl = Path::new("/usr/bin/curl").exists();
    let out = if have_curl {
        Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{ns}"))
            .args(["curl", "-sS", "-i", "--max-time", "5"])
            .arg(format!("http://{host}:{port}{path}"))
            .stdin(Stdio::null())
            .output()
    } else {
        let script = format!(
            "exec 3<>/dev/tcp/{host}/{port} && printf 'GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n' >&3 && timeout 5 cat <&3"
        );
        Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{ns}"))
            .args(["bash", "-c", &script])
            .stdin(Stdio::null())
            .output()
    };
    let out = out.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() && text.starts_with("HTTP/") {
        Ok(text)
    } else {
        Err(format!("{} {}", text, String::from_utf8_lossy(&out.stderr)))
    }
}
