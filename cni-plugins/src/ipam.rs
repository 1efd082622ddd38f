//! host-local style IPAM.
//!
//! Pure parts: [`Range`] (which addresses may be handed out) and [`next_free`] (round-robin
//! choice), plus the operations [`allocate`], [`release`], [`find`], [`gc`] written over the
//! abstract [`Store`]. I/O part: [`DiskStore`], the on-disk layout of the reference host-local
//! plugin under `<dataDir>/<network>/`:
//! - one file per allocated IP, named by the IP, containing `<containerId>\n<ifname>`;
//! - `last_reserved_ip.0`: the last IP handed out (the round-robin cursor);
//! - `lock`: flock(2)ed exclusively for as long as a `DiskStore` lives, so concurrent
//!   invocations serialise their read-modify-write of the directory.
//!
//! A reservation is written to a temporary file and renamed into place before the IP is used, so
//! a crash leaves either no reservation or a complete one, never a torn file.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;

use crate::error::{code, Coded};

pub const LOCK_FILE: &str = "lock";
pub const CURSOR_FILE: &str = "last_reserved_ip.0";
const TMP_PREFIX: &str = ".tmp-";

/// Who holds an allocation: the (CNI_CONTAINERID, CNI_IFNAME) attachment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Self {
        Owner { container_id: container_id.into(), ifname: ifname.into() }
    }

    /// File content: `<containerId>\n<ifname>`.
    pub fn encode(&self) -> String {
        format!("{}\n{}", self.container_id, self.ifname)
    }

    /// Accepts our format and host-local's (`\r\n` separator, or an id alone).
    pub fn decode(s: &str) -> Owner {
        let mut lines = s.lines().map(|l| l.trim());
        let container_id = lines.next().unwrap_or("").to_string();
        let ifname = lines.next().unwrap_or("").to_string();
        Owner { container_id, ifname }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RangeError {
    #[error("subnet {0} is too small to allocate from")]
    TooSmall(IpNetwork),
    #[error("{what} {ip} is not inside subnet {subnet}")]
    Outside { what: &'static str, ip: IpAddr, subnet: IpNetwork },
    #[error("{what} {ip} is the network or broadcast address of {subnet}")]
    Reserved { what: &'static str, ip: IpAddr, subnet: IpNetwork },
    #[error("rangeStart {start} is after rangeEnd {end}")]
    Inverted { start: IpAddr, end: IpAddr },
    #[error("{what} {ip} is not of the subnet's address family")]
    Family { what: &'static str, ip: IpAddr },
}

/// The addresses of one subnet that may be handed out: `start..=end` minus the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// Normalised (host bits cleared).
    pub subnet: IpNetwork,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

impl Range {
    /// host-local defaults: start = network + 1, end = broadcast - 1 (IPv4) or the last address
    /// (IPv6), gateway = network + 1.
    pub fn new(
        subnet: IpNetwork,
        gateway: Option<IpAddr>,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
    ) -> Result<Range, RangeError> {
        let v4 = subnet.is_ipv4();
        let subnet = IpNetwork::new(subnet.network(), subnet.prefix()).expect("prefix already valid");
        let bits = if v4 { 32 } else { 128 };
        // Need at least two usable addresses (gateway + one pod): /30 for IPv4, /127 for IPv6.
        let max_prefix = if v4 { 30 } else { 127 };
        if subnet.prefix() > max_prefix {
            return Err(RangeError::TooSmall(subnet));
        }
        let net = to_u128(subnet.network());
        let size: u128 = 1u128.checked_shl(bits - subnet.prefix() as u32).unwrap_or(0).wrapping_sub(1);
        let last = net + size; // broadcast for IPv4
        let lo = net + 1;
        let hi = if v4 { last - 1 } else { last };
        let check = |what: &'static str, ip: IpAddr| -> Result<u128, RangeError> {
            if ip.is_ipv4() != v4 {
                return Err(RangeError::Family { what, ip });
            }
            let n = to_u128(ip);
            if n < net || n > last {
                return Err(RangeError::Outside { what, ip, subnet });
            }
            if n < lo || n > hi {
                return Err(RangeError::Reserved { what, ip, subnet });
            }
            Ok(n)
        };
        let gateway = match gateway {
            Some(g) => check("gateway", g)?,
            None => lo,
        };
        let start = match start {
            Some(s) => check("rangeStart", s)?,
            None => lo,
        };
        let end = match end {
            Some(e) => check("rangeEnd", e)?,
            None => hi,
        };
        if start > end {
            return Err(RangeError::Inverted { start: from_u128(start, v4), end: from_u128(end, v4) });
        }
        let r = Range {
            subnet,
            start: from_u128(start, v4),
            end: from_u128(end, v4),
            gateway: from_u128(gateway, v4),
        };
        if r.capacity() == 0 {
            return Err(RangeError::TooSmall(subnet));
        }
        Ok(r)
    }

    fn v4(&self) -> bool {
        self.subnet.is_ipv4()
    }

    /// May `ip` be handed out?
    pub fn allocatable(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.v4() || ip == self.gateway {
            return false;
        }
        let n = to_u128(ip);
        n >= to_u128(self.start) && n <= to_u128(self.end)
    }

    /// How many addresses may be handed out (saturating for huge IPv6 ranges).
    pub fn capacity(&self) -> u128 {
        let span = (to_u128(self.end) - to_u128(self.start)).saturating_add(1);
        if self.allocatable_ignoring_gateway(self.gateway) {
            span - 1
        } else {
            span
        }
    }

    fn allocatable_ignoring_gateway(&self, ip: IpAddr) -> bool {
        let n = to_u128(ip);
        ip.is_ipv4() == self.v4() && n >= to_u128(self.start) && n <= to_u128(self.end)
    }

    /// The address after `ip` in the range, wrapping to `start`.
    fn next(&self, ip: IpAddr) -> IpAddr {
        let n = to_u128(ip);
        if n >= to_u128(self.end) || n < to_u128(self.start) {
            self.start
        } else {
            from_u128(n + 1, self.v4())
        }
    }

    /// Address with this subnet's prefix length, as configured on the interface.
    pub fn with_prefix(&self, ip: IpAddr) -> IpNetwork {
        IpNetwork::new(ip, self.subnet.prefix()).expect("prefix valid for its family")
    }
}

/// Round-robin: the first free address after `last` (or from the start), skipping the
/// gateway and everything in `used`. None when the range is exhausted.
pub fn next_free(range: &Range, used: &HashSet<IpAddr>, last: Option<IpAddr>) -> Option<IpAddr> {
    let mut ip = match last {
        Some(l) if range.allocatable_ignoring_gateway(l) => range.next(l),
        _ => range.start,
    };
    // Every step either lands on a used/excluded address or returns; so after
    // |used| + 2 steps (gateway, one spare) a free one must have been seen, unless the
    // range is smaller than that and fully used.
    let bound = range.capacity().saturating_add(1).min(used.len() as u128 + 2);
    for _ in 0..bound {
        if range.allocatable(ip) && !used.contains(&ip) {
            return Some(ip);
        }
        ip = range.next(ip);
    }
    None
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("no free IP address left in {start}-{end} of {subnet} ({used} in use)")]
    Exhausted { subnet: IpNetwork, start: IpAddr, end: IpAddr, used: usize },
}

impl Coded for IpamError {
    fn code(&self) -> u32 {
        match self {
            IpamError::Io { .. } => code::IO_FAILURE,
            // Transient: addresses come back as pods are deleted.
            IpamError::Exhausted { .. } => code::TRY_AGAIN_LATER,
        }
    }
    fn msg(&self) -> &'static str {
        match self {
            IpamError::Io { .. } => "IPAM store I/O failure",
            IpamError::Exhausted { .. } => "no IP addresses available in range",
        }
    }
}

/// Where allocations live. Implementations must be used under mutual exclusion (DiskStore holds
/// a flock for its whole lifetime).
pub trait Store {
    fn list(&mut self) -> Result<Vec<(IpAddr, Owner)>, IpamError>;
    fn last_reserved(&mut self) -> Result<Option<IpAddr>, IpamError>;
    /// Durably record `ip` as held by `owner` (complete or absent after a crash).
    fn reserve(&mut self, ip: IpAddr, owner: &Owner) -> Result<(), IpamError>;
    fn set_last_reserved(&mut self, ip: IpAddr) -> Result<(), IpamError>;
    /// Remove the reservation; a missing one is not an error.
    fn release(&mut self, ip: IpAddr) -> Result<(), IpamError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpAddr,
    /// The owner already held this address (an ADD repeated without DEL).
    pub reused: bool,
}

/// Reuse the owner's address if it has one in the range, else reserve the next free one.
pub fn allocate<S: Store>(store: &mut S, range: &Range, owner: &Owner) -> Result<Allocation, IpamError> {
    let all = store.list()?;
    if let Some((ip, _)) = all.iter().find(|(ip, o)| o == owner && range.subnet.contains(*ip)) {
        return Ok(Allocation { ip: *ip, reused: true });
    }
    let used: HashSet<IpAddr> = all.iter().map(|(ip, _)| *ip).collect();
    let last = store.last_reserved()?;
    let ip = next_free(range, &used, last).ok_or(IpamError::Exhausted {
        subnet: range.subnet,
        start: range.start,
        end: range.end,
        used: used.iter().filter(|ip| range.allocatable(**ip)).count(),
    })?;
    store.reserve(ip, owner)?;
    store.set_last_reserved(ip)?;
    Ok(Allocation { ip, reused: false })
}

/// Release every address held by `owner`; returns what was released (empty is fine).
pub fn release<S: Store>(store: &mut S, owner: &Owner) -> Result<Vec<IpAddr>, IpamError> {
    let mut released = Vec::new();
    for (ip, o) in store.list()? {
        if &o == owner {
            store.release(ip)?;
            released.push(ip);
        }
    }
    Ok(released)
}

/// Release exactly `ip` if `owner` holds it (undo of a failed ADD).
pub fn release_ip<S: Store>(store: &mut S, ip: IpAddr, owner: &Owner) -> Result<bool, IpamError> {
    if store.list()?.iter().any(|(i, o)| *i == ip && o == owner) {
        store.release(ip)?;
        return Ok(true);
    }
    Ok(false)
}

pub fn find<S: Store>(store: &mut S, owner: &Owner) -> Result<Option<IpAddr>, IpamError> {
    Ok(store.list()?.into_iter().find(|(_, o)| o == owner).map(|(ip, _)| ip))
}

/// Release every address whose owner is not in `valid`. Keeps going on errors and returns the
/// released addresses and the first error.
pub fn gc<S: Store>(store: &mut S, valid: &HashSet<Owner>) -> (Vec<IpAddr>, Option<IpamError>) {
    let all = match store.list() {
        Ok(a) => a,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut released = Vec::new();
    let mut first_err = None;
    for (ip, o) in all {
        if valid.contains(&o) {
            continue;
        }
        match store.release(ip) {
            Ok(()) => released.push(ip),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    (released, first_err)
}

/// Number of allocatable addresses still free.
pub fn free_count<S: Store>(store: &mut S, range: &Range) -> Result<u128, IpamError> {
    let used = store.list()?.iter().filter(|(ip, _)| range.allocatable(*ip)).count() as u128;
    Ok(range.capacity().saturating_sub(used))
}

/// The host-local on-disk store, locked for its lifetime.
pub struct DiskStore {
    dir: PathBuf,
    // Held for the flock; closing the fd releases it.
    _lock: File,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IpamError + 'a {
    move |source| IpamError::Io { op, path: path.to_path_buf(), source }
}

impl DiskStore {
    /// Create `dir` if needed and take the exclusive lock (blocks while another invocation
    /// holds it).
    pub fn open(dir: &Path) -> Result<DiskStore, IpamError> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err("open lock file", &lock_path))?;
        loop {
            // SAFETY: flock on an fd we own; no memory is passed.
            let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(IpamError::Io { op: "flock", path: lock_path, source: e });
            }
        }
        Ok(DiskStore { dir: dir.to_path_buf(), _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Remove temporary files a crashed invocation may have left (GC).
    pub fn remove_stale_tmp(&mut self) -> Result<(), IpamError> {
        for entry in fs::read_dir(&self.dir).map_err(io_err("read directory", &self.dir))? {
            let entry = entry.map_err(io_err("read directory", &self.dir))?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let p = entry.path();
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(IpamError::Io { op: "remove", path: p, source: e }),
                }
            }
        }
        Ok(())
    }

    fn write_atomic(&self, name: &str, content: &[u8]) -> Result<(), IpamError> {
        let tmp = self.dir.join(format!("{TMP_PREFIX}{name}-{}", std::process::id()));
        let dst = self.dir.join(name);
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(content).map_err(io_err("write", &tmp))?;
        drop(f);
        fs::rename(&tmp, &dst).map_err(|source| {
            let _ = fs::remove_file(&tmp);
            IpamError::Io { op: "rename into place", path: dst.clone(), source }
        })
    }
}

impl Store for DiskStore {
    fn list(&mut self) -> Result<Vec<(IpAddr, Owner)>, IpamError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("read directory", &self.dir))? {
            let entry = entry.map_err(io_err("read directory", &self.dir))?;
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<IpAddr>().ok()) else {
                continue;
            };
            let path = entry.path();
            match fs::read_to_string(&path) {
                Ok(s) => out.push((ip, Owner::decode(&s))),
                // Released concurrently by a non-locking tool: not ours any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(IpamError::Io { op: "read", path, source: e }),
            }
        }
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    fn last_reserved(&mut self) -> Result<Option<IpAddr>, IpamError> {
        let p = self.dir.join(CURSOR_FILE);
        match fs::read_to_string(&p) {
            Ok(s) => Ok(s.trim().parse().ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(IpamError::Io { op: "read", path: p, source: e }),
        }
    }

    fn reserve(&mut self, ip: IpAddr, owner: &Owner) -> Result<(), IpamError> {
        self.write_atomic(&ip.to_string(), owner.encode().as_bytes())
    }

    fn set_last_reserved(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        self.write_atomic(CURSOR_FILE, ip.to_string().as_bytes())
    }

    fn release(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        let p = self.dir.join(ip.to_string());
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(IpamError::Io { op: "remove", path: p, source: e }),
        }
    }
}

/// In-memory store for unit tests of the allocation logic.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    pub allocs: std::collections::BTreeMap<IpAddr, Owner>,
    pub last: Option<IpAddr>,
}

impl Store for MemStore {
    fn list(&mut self) -> Result<Vec<(IpAddr, Owner)>, IpamError> {
        Ok(self.allocs.iter().map(|(ip, o)| (*ip, o.clone())).collect())
    }
    fn last_reserved(&mut self) -> Result<Option<IpAddr>, IpamError> {
        Ok(self.last)
    }
    fn reserve(&mut self, ip: IpAddr, owner: &Owner) -> Result<(), IpamError> {
        self.allocs.insert(ip, owner.clone());
        Ok(())
    }
    fn set_last_reserved(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        self.last = Some(ip);
        Ok(())
    }
    fn release(&mut self, ip: IpAddr) -> Result<(), IpamError> {
        self.allocs.remove(&ip);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn r24() -> Range {
        Range::new("10.244.0.0/24".parse().unwrap(), Some(ip("10.244.0.1")), None, None).unwrap()
    }

    #[test]
    fn range_defaults() {
        let r = Range::new("10.244.0.7/24".parse().unwrap(), None, None, None).unwrap();
        assert_eq!(r.subnet.to_string(), "10.244.0.0/24");
        assert_eq!(r.start, ip("10.244.0.1"));
        assert_eq!(r.end, ip("10.244.0.254"));
        assert_eq!(r.gateway, ip("10.244.0.1"));
        assert_eq!(r.capacity(), 253);
        assert!(!r.allocatable(ip("10.244.0.0")));
        assert!(!r.allocatable(ip("10.244.0.1")));
        assert!(!r.allocatable(ip("10.244.0.255")));
        assert!(r.allocatable(ip("10.244.0.2")));
        assert!(!r.allocatable(ip("10.245.0.2")));
        assert!(!r.allocatable(ip("fd00::2")));
        assert_eq!(r.with_prefix(ip("10.244.0.9")).to_string(), "10.244.0.9/24");
    }

    #[test]
    fn range_validation() {
        let n = |s: &str| s.parse::<IpNetwork>().unwrap();
        assert!(matches!(Range::new(n("10.0.0.0/31"), None, None, None), Err(RangeError::TooSmall(_))));
        assert!(Range::new(n("10.0.0.0/30"), None, None, None).is_ok());
        assert!(matches!(
            Range::new(n("10.0.0.0/24"), Some(ip("10.0.1.1")), None, None),
            Err(RangeError::Outside { .. })
        ));
        assert!(matches!(
            Range::new(n("10.0.0.0/24"), None, Some(ip("10.0.0.0")), None),
            Err(RangeError::Reserved { .. })
        ));
        assert!(matches!(
            Range::new(n("10.0.0.0/24"), None, None, Some(ip("10.0.0.255"))),
            Err(RangeError::Reserved { .. })
        ));
        assert!(matches!(
            Range::new(n("10.0.0.0/24"), None, Some(ip("10.0.0.50")), Some(ip("10.0.0.40"))),
            Err(RangeError::Inverted { .. })
        ));
        assert!(matches!(
            Range::new(n("10.0.0.0/24"), Some(ip("fd00::1")), None, None),
            Err(RangeError::Family { .. })
        ));
        // Only the gateway in the range: nothing to hand out.
        assert!(matches!(
            Range::new(n("10.0.0.0/24"), None, Some(ip("10.0.0.1")), Some(ip("10.0.0.1"))),
            Err(RangeError::TooSmall(_))
        ));
    }

    #[test]
    fn ipv6_range() {
        let r = Range::new("fd00:10:244::/64".parse().unwrap(), None, None, None).unwrap();
        assert_eq!(r.gateway, ip("fd00:10:244::1"));
        assert_eq!(r.end, ip("fd00:10:244::ffff:ffff:ffff:ffff"));
        let used = HashSet::new();
        assert_eq!(next_free(&r, &used, None), Some(ip("fd00:10:244::2")));
        assert_eq!(next_free(&r, &used, Some(r.end)), Some(ip("fd00:10:244::2")));
    }

    #[test]
    fn next_free_round_robin_skips_gateway_and_used() {
        let r = r24();
        let mut used = HashSet::new();
        assert_eq!(next_free(&r, &used, None), Some(ip("10.244.0.2")));
        assert_eq!(next_free(&r, &used, Some(ip("10.244.0.2"))), Some(ip("10.244.0.3")));
        used.insert(ip("10.244.0.3"));
        used.insert(ip("10.244.0.4"));
        assert_eq!(next_free(&r, &used, Some(ip("10.244.0.2"))), Some(ip("10.244.0.5")));
        // Wraps past the end, skipping the gateway at the start.
        assert_eq!(next_free(&r, &used, Some(ip("10.244.0.254"))), Some(ip("10.244.0.2")));
        // A cursor outside the range restarts at the beginning.
        assert_eq!(next_free(&r, &used, Some(ip("192.168.0.1"))), Some(ip("10.244.0.2")));
    }

    #[test]
    fn next_free_exhausted() {
        let r = Range::new("10.0.0.0/29".parse().unwrap(), None, None, None).unwrap();
        let used: HashSet<IpAddr> = (2..=6).map(|i| ip(&format!("10.0.0.{i}"))).collect();
        assert_eq!(r.capacity(), 5);
        assert_eq!(next_free(&r, &used, Some(ip("10.0.0.4"))), None);
        let mut fewer = used.clone();
        fewer.remove(&ip("10.0.0.3"));
        assert_eq!(next_free(&r, &fewer, Some(ip("10.0.0.4"))), Some(ip("10.0.0.3")));
    }

    #[test]
    fn custom_range_bounds() {
        let r = Range::new(
            "10.0.0.0/24".parse().unwrap(),
            Some(ip("10.0.0.1")),
            Some(ip("10.0.0.100")),
            Some(ip("10.0.0.101")),
        )
        .unwrap();
        assert_eq!(r.capacity(), 2);
        let mut s = MemStore::default();
        let a = allocate(&mut s, &r, &Owner::new("a", "eth0")).unwrap();
        let b = allocate(&mut s, &r, &Owner::new("b", "eth0")).unwrap();
        assert_eq!((a.ip, b.ip), (ip("10.0.0.100"), ip("10.0.0.101")));
        let e = allocate(&mut s, &r, &Owner::new("c", "eth0")).unwrap_err();
        assert!(matches!(e, IpamError::Exhausted { used: 2, .. }));
        assert_eq!(e.code(), code::TRY_AGAIN_LATER);
    }

    #[test]
    fn allocate_reuses_and_releases() {
        let r = r24();
        let mut s = MemStore::default();
        let a = Owner::new("ctr-a", "eth0");
        let b = Owner::new("ctr-b", "eth0");
        let first = allocate(&mut s, &r, &a).unwrap();
        assert_eq!(first, Allocation { ip: ip("10.244.0.2"), reused: false });
        assert_eq!(allocate(&mut s, &r, &a).unwrap(), Allocation { ip: ip("10.244.0.2"), reused: true });
        let second = allocate(&mut s, &r, &b).unwrap();
        assert_eq!(second.ip, ip("10.244.0.3"));
        assert_eq!(find(&mut s, &b).unwrap(), Some(ip("10.244.0.3")));
        assert_eq!(release(&mut s, &a).unwrap(), vec![ip("10.244.0.2")]);
        assert!(release(&mut s, &a).unwrap().is_empty());
        // Round robin: the freed .2 is not reused before the cursor wraps.
        let c = allocate(&mut s, &r, &Owner::new("ctr-c", "eth0")).unwrap();
        assert_eq!(c.ip, ip("10.244.0.4"));
        // Same container, other interface: its own address.
        let b1 = allocate(&mut s, &r, &Owner::new("ctr-b", "eth1")).unwrap();
        assert_eq!(b1.ip, ip("10.244.0.5"));
        assert!(!release_ip(&mut s, ip("10.244.0.5"), &b).unwrap());
        assert!(release_ip(&mut s, ip("10.244.0.5"), &Owner::new("ctr-b", "eth1")).unwrap());
        assert_eq!(free_count(&mut s, &r).unwrap(), 253 - 2);
    }

    #[test]
    fn gc_keeps_only_valid() {
        let r = r24();
        let mut s = MemStore::default();
        for id in ["a", "b", "c"] {
            allocate(&mut s, &r, &Owner::new(id, "eth0")).unwrap();
        }
        let valid: HashSet<Owner> = [Owner::new("b", "eth0"), Owner::new("a", "eth1")].into_iter().collect();
        let (released, err) = gc(&mut s, &valid);
        assert!(err.is_none());
        assert_eq!(released, vec![ip("10.244.0.2"), ip("10.244.0.4")]);
        assert_eq!(s.allocs.len(), 1);
    }

    #[test]
    fn owner_encoding() {
        let o = Owner::new("abc", "eth0");
        assert_eq!(o.encode(), "abc\neth0");
        assert_eq!(Owner::decode("abc\neth0"), o);
        assert_eq!(Owner::decode("abc\r\neth0"), o);
        assert_eq!(Owner::decode("abc"), Owner::new("abc", ""));
    }

    #[test]
    fn disk_store_layout_and_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("berth");
        let r = r24();
        {
            let mut s = DiskStore::open(&dir).unwrap();
            let a = allocate(&mut s, &r, &Owner::new("ctr", "eth0")).unwrap();
            assert_eq!(a.ip, ip("10.244.0.2"));
        }
        assert_eq!(fs::read_to_string(dir.join("10.244.0.2")).unwrap(), "ctr\neth0");
        assert_eq!(fs::read_to_string(dir.join(CURSOR_FILE)).unwrap(), "10.244.0.2");
        assert!(dir.join(LOCK_FILE).exists());
        // A host-local style file is understood.
        fs::write(dir.join("10.244.0.9"), "other\r\neth0").unwrap();
        fs::write(dir.join(".tmp-10.244.0.7-1"), "junk").unwrap();
        let mut s = DiskStore::open(&dir).unwrap();
        assert_eq!(find(&mut s, &Owner::new("other", "eth0")).unwrap(), Some(ip("10.244.0.9")));
        s.remove_stale_tmp().unwrap();
        assert!(!dir.join(".tmp-10.244.0.7-1").exists());
        assert_eq!(release(&mut s, &Owner::new("ctr", "eth0")).unwrap(), vec![ip("10.244.0.2")]);
        assert!(!dir.join("10.244.0.2").exists());
    }

    #[test]
    fn disk_store_serialises_threads() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("net");
        let r = r24();
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let dir = dir.clone();
                let r = r.clone();
                std::thread::spawn(move || {
                    // Each thread opens its own lock fd, so flock excludes them like processes.
                    let mut s = DiskStore::open(&dir).unwrap();
                    allocate(&mut s, &r, &Owner::new(format!("c{i}"), "eth0")).unwrap().ip
                })
            })
            .collect();
        let ips: HashSet<IpAddr> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(ips.len(), 16);
    }
}
