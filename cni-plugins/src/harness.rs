//! Helpers shared by the root tests and the benchmark: named network namespaces that delete
//! themselves, and running a CNI plugin binary *inside* a "node" namespace (so the bridge and
//! host-side veths never appear in the machine's own namespace).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `ip netns add <name>` now, `ip netns del <name>` on drop (also when a test panics).
pub struct NetnsGuard {
    pub name: String,
}

impl NetnsGuard {
    pub fn new(name: impl Into<String>) -> io::Result<NetnsGuard> {
        let name = name.into();
        let st = Command::new("ip").args(["netns", "add", &name]).status()?;
        if !st.success() {
            return Err(io::Error::other(format!("ip netns add {name}: {st}")));
        }
        Ok(NetnsGuard { name })
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Run a command inside this namespace (`ip netns exec`), returning (success, stdout).
    pub fn exec(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .expect("run ip netns exec");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// One plugin invocation's parameters.
pub struct Invocation<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub cni_path: &'a str,
    pub stdin: &'a [u8],
}

/// Outcome of one invocation.
#[derive(Debug)]
pub struct Ran {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Ran {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or(serde_json::Value::Null)
    }
}

/// Exec `bin` with the CNI environment, its process moved into the network namespace
/// `node_ns_path` before exec (what `ip netns exec` does, without the extra process).
/// `elapsed` covers spawn to exit.
pub fn run_plugin(bin: &Path, node_ns_path: &str, inv: &Invocation) -> io::Result<Ran> {
    let ns = File::open(node_ns_path)?;
    let ns_fd = ns.as_raw_fd();
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", inv.command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_PATH", inv.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setns is async-signal-safe; on failure the child reports an error and does not
    // exec, so the plugin never runs in the caller's namespace.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(inv.stdin)?;
    }
    let out = child.wait_with_output()?;
    let elapsed = start.elapsed();
    drop(ns);
    Ok(Ran {
        exit_code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
    })
}

/// Percentile (nearest rank) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
