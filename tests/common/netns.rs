//! A network namespace standing in for one host ("node"): `berth-e2e-<pid>-<n>`, lo up, and an
//! interface `node0` with the node IP 10.99.<n>.2/24 (a dummy link when the kernel has the dummy
//! driver, else one end of a veth pair whose both ends stay inside the namespace), plus a default
//! route via 10.99.<n>.1 so "the default-route interface" exists. Deleted on Drop after every
//! process still inside it has been killed (all of them were started by this test).
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{run, run_ok};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    pub name: String,
    /// n in 10.99.<n>.2
    pub index: u8,
    pub node_ip: Ipv4Addr,
}

impl Netns {
    pub fn new() -> Netns {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let index = (n % 250 + 1) as u8;
        let name = format!("berth-e2e-{}-{}", std::process::id(), n);
        let node_ip = Ipv4Addr::new(10, 99, index, 2);
        // a stale namespace of the same name can only be ours from a PID reuse; replace it
        let _ = run(Command::new("ip").args(["netns", "del", &name]));
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name, index, node_ip };
        ns.ip(&["link", "set", "lo", "up"]);
        let dummy = run(Command::new("ip").args(["-n", &ns.name, "link", "add", "node0", "type", "dummy"]));
        if !dummy.status.success() {
            // no dummy driver (e.g. no kernel modules): a veth pair, both ends inside
            ns.ip(&["link", "add", "node0", "type", "veth", "peer", "name", "node0-peer"]);
            ns.ip(&["link", "set", "node0-peer", "up"]);
        }
        ns.ip(&["addr", "add", &format!("{node_ip}/24"), "dev", "node0"]);
        ns.ip(&["link", "set", "node0", "up"]);
        ns.ip(&["route", "add", "default", "via", &format!("10.99.{index}.1"), "dev", "node0", "onlink"]);
        ns
    }

    /// `ip -n <ns> args...`, must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A Command that runs `program` inside this namespace (network only, via nsenter, so /sys and
    /// the cgroup mounts stay as they are; containerd and runc need them).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path())).arg("--").arg(program);
        c
    }

    /// Move the calling thread (only it, and threads it creates afterwards) into this namespace.
    /// The main test thread must stay outside: dropping the namespace kills what runs inside.
    pub fn enter_this_thread(&self) {
        enter_this_thread(&self.path());
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// PIDs of processes whose network namespace is this one.
    pub fn pids(&self) -> Vec<i32> {
        let out = run(Command::new("ip").args(["netns", "pids", &self.name]));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Links this namespace with `other` like two hosts on one wire: a veth pair created inside
    /// the two namespaces (never in the host's), a /30 from 10.98.0.0/16 on it, and a route on
    /// each side to the other side's node IP (sourced from the own node IP), so `self.node_ip`
    /// and `other.node_ip` reach each other. Returns the link addresses (this side, other side).
    /// The link goes away with either namespace.
    pub fn connect(&self, other: &Netns) -> (IpAddr, IpAddr) {
        static LINKS: AtomicU32 = AtomicU32::new(0);
        let k = LINKS.fetch_add(1, Ordering::SeqCst) % 16384;
        // 10.98.0.0/16 in /30s: link k uses .4k+1 and .4k+2
        let base = 4 * k;
        let addr = |host: u32| Ipv4Addr::new(10, 98, ((base + host) >> 8) as u8, ((base + host) & 0xff) as u8);
        let (mine, theirs) = (addr(1), addr(2));
        let (a, b) = (format!("vl{k}a"), format!("vl{k}b"));
        self.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &other.name]);
        self.ip(&["addr", "add", &format!("{mine}/30"), "dev", &a]);
        other.ip(&["addr", "add", &format!("{theirs}/30"), "dev", &b]);
        self.ip(&["link", "set", &a, "up"]);
        other.ip(&["link", "set", &b, "up"]);
        let (my_ip, their_ip) = (self.node_ip.to_string(), other.node_ip.to_string());
        self.ip(&["route", "add", &format!("{their_ip}/32"), "via", &theirs.to_string(), "dev", &a, "src", &my_ip]);
        other.ip(&["route", "add", &format!("{my_ip}/32"), "via", &mine.to_string(), "dev", &b, "src", &their_ip]);
        (IpAddr::V4(mine), IpAddr::V4(theirs))
    }

    /// SIGTERM, then SIGKILL after `grace`, every process still inside (all started by the test).
    pub fn kill_all(&self, grace: Duration) {
        let pids = self.pids();
        if pids.is_empty() {
            return;
        }
        for p in &pids {
            // SAFETY: kill(2) on PIDs living in a namespace this test created.
            unsafe { libc::kill(*p, libc::SIGTERM) };
        }
        let _ = super::try_wait_until("processes in netns to exit", grace, || {
            Ok::<_, ()>(self.pids().is_empty().then_some(()))
        });
        for p in self.pids() {
            // SAFETY: as above.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let _ = super::try_wait_until("processes in netns to die", Duration::from_secs(5), || {
            Ok::<_, ()>(self.pids().is_empty().then_some(()))
        });
    }
}


impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all(Duration::from_secs(5));
        let _ = run(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

/// [`Netns::enter_this_thread`] by path (for threads that cannot borrow the guard).
pub fn enter_this_thread(path: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns(2) with a valid fd; it changes the network namespace of this thread only.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}
