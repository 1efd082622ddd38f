//! Netlink I/O: network namespaces, links, addresses, routes (rtnetlink).
//!
//! Namespaces and threads: a netlink socket talks to the network namespace it was *created* in.
//! For the container side we open the socket on a short-lived OS thread that first `setns`es
//! into CNI_NETNS, then hand the socket back and drive it from the main (current-thread) tokio
//! runtime. So no thread running tokio ever changes namespace, and the process's own namespace
//! is never touched.

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};

use rtnetlink::sys::TokioSocket;
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

use crate::error::{code, Coded};
use crate::naming;
use crate::result::Route;

#[derive(Debug, thiserror::Error)]
pub enum NlError {
    #[error("{op}: {source}")]
    Netlink { op: String, source: rtnetlink::Error },
    #[error("{op}: {source}")]
    Io { op: String, source: io::Error },
    #[error("network namespace {0} does not exist")]
    NetnsMissing(String),
    #[error("{0} is not a network namespace")]
    NotNetns(String),
    #[error("CNI_NETNS {0} is the plugin's own network namespace")]
    SameNetns(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InterfaceExists(String),
    #[error("{0}")]
    CheckFailed(String),
}

impl Coded for NlError {
    fn code(&self) -> u32 {
        match self {
            NlError::Netlink { .. } | NlError::Io { .. } => code::IO_FAILURE,
            NlError::NetnsMissing(_) => code::CONTAINER_UNKNOWN,
            NlError::NotNetns(_) | NlError::SameNetns(_) => code::INVALID_NETNS,
            NlError::Conflict(_) => code::INVALID_CONFIG,
            NlError::InterfaceExists(_) => code::INTERFACE_EXISTS,
            NlError::CheckFailed(_) => code::CHECK_FAILED,
        }
    }
    fn msg(&self) -> &'static str {
        match self {
            NlError::Netlink { .. } => "netlink operation failed",
            NlError::Io { .. } => "I/O failure",
            NlError::NetnsMissing(_) => "container network namespace does not exist",
            NlError::NotNetns(_) | NlError::SameNetns(_) => "invalid network namespace",
            NlError::Conflict(_) => "conflicting network state",
            NlError::InterfaceExists(_) => "interface already exists in the container",
            NlError::CheckFailed(_) => "attachment is not as expected",
        }
    }
}

fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NlError {
    let op = op.into();
    move |source| NlError::Netlink { op, source }
}

/// The errno of a netlink error reply, if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

const NSFS_MAGIC: i64 = 0x6e73_6673;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// An open network namespace (CNI_NETNS).
pub struct Netns {
    file: File,
    pub path: String,
}

impl Netns {
    /// Open the namespace at `path`: Ok(None) if it does not exist, NotNetns if it is not one.
    pub fn open(path: &str) -> Result<Option<Netns>, NlError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(NlError::Io { op: format!("open netns {path}"), source: e }),
        };
        // SAFETY: statfs is plain data; fstatfs fills it from an fd we own.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
            return Err(NlError::Io { op: format!("fstatfs {path}"), source: io::Error::last_os_error() });
        }
        let magic = st.f_type as i64;
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
            return Err(NlError::NotNetns(path.to_string()));
        }
        Ok(Some(Netns { file, path: path.to_string() }))
    }

    /// Open, mapping "does not exist" to NetnsMissing, and refusing the plugin's own namespace
    /// (libcni's rule: an ADD there would put the pod interface on the host).
    pub fn open_existing(path: &str) -> Result<Netns, NlError> {
        let ns = Netns::open(path)?.ok_or_else(|| NlError::NetnsMissing(path.to_string()))?;
        if ns.is_current()? {
            return Err(NlError::SameNetns(path.to_string()));
        }
        Ok(ns)
    }

    /// Is this the namespace the plugin itself runs in?
    pub fn is_current(&self) -> Result<bool, NlError> {
        use std::os::unix::fs::MetadataExt;
        let ours = std::fs::metadata("/proc/self/ns/net")
            .map_err(|e| NlError::Io { op: "stat /proc/self/ns/net".into(), source: e })?;
        let theirs = self.file.metadata().map_err(|e| NlError::Io { op: format!("stat {}", self.path), source: e })?;
        Ok(ours.dev() == theirs.dev() && ours.ino() == theirs.ino())
    }

    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub kind: Option<InfoKind>,
    pub controller: Option<u32>,
    pub up: bool,
}

impl Link {
    fn from_msg(m: LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mac: Vec::new(),
            mtu: 0,
            kind: None,
            controller: None,
            up: m.header.flags.contains(LinkFlags::Up),
        };
        for a in m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n,
                LinkAttribute::Address(a) => l.mac = a,
                LinkAttribute::Mtu(m) => l.mtu = m,
                LinkAttribute::Controller(c) => l.controller = Some(c),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            l.kind = Some(k);
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }

    pub fn mac_string(&self) -> String {
        naming::mac_to_string(&self.mac)
    }
}

/// A route as read back from the kernel (main table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
}

/// An rtnetlink connection bound to one network namespace.
pub struct Nl {
    handle: Handle,
}

impl Nl {
    /// A connection in the namespace of the calling thread. Needs a tokio runtime context.
    pub fn here() -> Result<Nl, NlError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| NlError::Io { op: "open netlink socket".into(), source: e })?;
        tokio::spawn(conn);
        Ok(Nl { handle })
    }

    /// A connection whose socket lives in `ns`. Needs a tokio runtime context.
    pub fn in_netns(ns: &Netns) -> Result<Nl, NlError> {
        let fd = ns.raw_fd();
        let path = ns.path.clone();
        let sock: OwnedFd = std::thread::scope(|s| {
            s.spawn(|| -> io::Result<OwnedFd> {
                // SAFETY: setns on a namespace fd we hold open; only this short-lived thread
                // moves, and it exits right after creating the socket.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: plain socket(2); the fd is immediately owned.
                let raw = unsafe {
                    libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE)
                };
                if raw < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(unsafe { OwnedFd::from_raw_fd(raw) })
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("netns helper thread panicked")))
        })
        .map_err(|e| NlError::Io { op: format!("open netlink socket in {path}"), source: e })?;
        // SAFETY: ownership of the netlink socket fd moves into the TokioSocket.
        let socket = unsafe { TokioSocket::from_raw_fd(sock.into_raw_fd()) };
        let (conn, handle, _) = rtnetlink::from_socket(socket);
        tokio::spawn(conn);
        Ok(Nl { handle })
    }

    pub async fn link(&self, name: &str) -> Result<Option<Link>, NlError> {
        let mut s = self.handle.link().get().match_name(name.to_string()).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.map(Link::from_msg)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(nl(format!("get link {name}"))(e)),
        }
    }

    /// The bridge `name`, created (up, with `mtu` and a fixed random MAC, so it does not follow
    /// its ports' addresses) if missing, brought up if down. A non-bridge link of that name is a
    /// conflict.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<Link, NlError> {
        if let Some(l) = self.link(name).await? {
            if l.kind != Some(InfoKind::Bridge) {
                return Err(NlError::Conflict(format!(
                    "link {name} exists and is not a bridge (kind {:?})",
                    l.kind
                )));
            }
            if !l.up || l.mtu != mtu {
                let msg = LinkUnspec::new_with_index(l.index).mtu(mtu).up().build();
                self.handle.link().set(msg).execute().await.map_err(nl(format!("set bridge {name} up, mtu {mtu}")))?;
            }
            return Ok(l);
        }
        let msg = LinkBridge::new(name).mtu(mtu).address(random_mac().to_vec()).build();
        match self.handle.link().add(msg).execute().await {
            Ok(()) => {}
            // Created concurrently by another invocation.
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(nl(format!("create bridge {name}"))(e)),
        }
        let l = self.link(name).await?.ok_or_else(|| NlError::Conflict(format!("bridge {name} vanished after creation")))?;
        if l.kind != Some(InfoKind::Bridge) {
            return Err(NlError::Conflict(format!("link {name} exists and is not a bridge")));
        }
        Ok(l)
    }

    /// Addresses on link `index` (all families).
    pub async fn addrs(&self, index: u32) -> Result<Vec<IpNetwork>, NlError> {
        let mut s = self.handle.address().get().set_link_index_filter(index).execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl(format!("list addresses of link #{index}")))? {
            let prefix = m.header.prefix_len;
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = addr.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = addr {
                if let Ok(n) = IpNetwork::new(ip, prefix) {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    /// Put `addr` on link `index` unless it is there; another IPv4 address on it is a conflict
    /// (the reference bridge plugin's rule without forceAddress).
    pub async fn ensure_gateway_addr(&self, index: u32, link_name: &str, addr: IpNetwork) -> Result<(), NlError> {
        let existing = self.addrs(index).await?;
        if existing.contains(&addr) {
            return Ok(());
        }
        let conflicts = |a: &&IpNetwork| {
            if is_link_local(a.ip()) {
                return false;
            }
            match (a, addr) {
                (IpNetwork::V4(_), IpNetwork::V4(_)) => true,
                (IpNetwork::V6(_), IpNetwork::V6(_)) => a.contains(addr.ip()) || addr.contains(a.ip()),
                _ => false,
            }
        };
        if let Some(other) = existing.iter().find(conflicts) {
            return Err(NlError::Conflict(format!("{link_name} already has IP address {other}, different from {addr}")));
        }
        self.add_addr(index, addr).await
    }

    pub async fn add_addr(&self, index: u32, addr: IpNetwork) -> Result<(), NlError> {
        match self.handle.address().add(index, addr.ip(), addr.prefix()).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(nl(format!("add address {addr} to link #{index}"))(e)),
        }
    }

    /// Create the veth pair: `host` here (up, enslaved to `controller`), `peer` directly inside
    /// `ns` (still down: the kernel refuses to open a veth end before its pair is linked,
    /// ENOTCONN), both with `mtu`. One RTM_NEWLINK; the raw error is returned so the caller can
    /// tell EEXIST apart.
    pub async fn create_veth(
        &self,
        host: &str,
        peer: &str,
        mtu: u32,
        ns: &Netns,
        controller: u32,
    ) -> Result<(), rtnetlink::Error> {
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .mtu(mtu)
            .setns_by_fd(ns.raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .mtu(mtu)
            .controller(controller)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.handle.link().add(msg).execute().await
    }

    pub async fn set_hairpin(&self, index: u32, on: bool) -> Result<(), NlError> {
        let msg = LinkBridgePort::new(index).hairpin(on).build();
        self.handle.link().set_port(msg).execute().await.map_err(nl(format!("set hairpin on link #{index}")))
    }

    pub async fn set_up(&self, index: u32, up: bool) -> Result<(), NlError> {
        let b = LinkUnspec::new_with_index(index);
        let msg = if up { b.up() } else { b.down() }.build();
        self.handle.link().set(msg).execute().await.map_err(nl(format!("set link #{index} up={up}")))
    }

    /// Delete a link; Ok(false) if it was already gone.
    pub async fn del_link(&self, index: u32) -> Result<bool, NlError> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(nl(format!("delete link #{index}"))(e)),
        }
    }

    /// Delete a link by name; Ok(false) if there is none.
    pub async fn del_link_by_name(&self, name: &str) -> Result<bool, NlError> {
        let msg = LinkUnspec::new_with_name(name).build();
        match self.handle.link().del_with_message(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(nl(format!("delete link {name}"))(e)),
        }
    }

    pub async fn add_route(&self, oif: u32, r: &Route) -> Result<(), NlError> {
        let msg = route_message(oif, r);
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(nl(format!("add route {} via {:?} dev #{oif}", r.dst, r.gw))(e)),
        }
    }

    /// Routes of the main table for one family.
    pub async fn routes(&self, v4: bool) -> Result<Vec<KernelRoute>, NlError> {
        let q: RouteMessage = if v4 {
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
        } else {
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        };
        let mut s = self.handle.route().get(q).execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl("list routes"))? {
            let mut table = m.header.table as u32;
            let mut dst = None;
            let mut gw = None;
            let mut oif = None;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(a) => dst = route_addr(a),
                    RouteAttribute::Gateway(a) => gw = route_addr(a),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if table != RouteHeader::RT_TABLE_MAIN as u32 {
                continue;
            }
            let dst = dst.unwrap_or(if v4 { IpAddr::from([0u8; 4]) } else { IpAddr::from([0u16; 8]) });
            if let Ok(dst) = IpNetwork::new(dst, m.header.destination_prefix_length) {
                out.push(KernelRoute { dst, gw, oif });
            }
        }
        Ok(out)
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The RTM_NEWROUTE message for `r` out of `oif` (pure; used by add_route).
pub fn route_message(oif: u32, r: &Route) -> RouteMessage {
    match (r.dst, r.gw) {
        (IpNetwork::V4(d), gw) => {
            let mut b = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                .destination_prefix(d.network(), d.prefix())
                .output_interface(oif);
            if let Some(IpAddr::V4(g)) = gw {
                b = b.gateway(g);
            }
            b.build()
        }
        (IpNetwork::V6(d), gw) => {
            let mut b = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                .destination_prefix(d.network(), d.prefix())
                .output_interface(oif);
            if let Some(IpAddr::V6(g)) = gw {
                b = b.gateway(g);
            }
            b.build()
        }
    }
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> [u8; 6] {
    let mut b = [0u8; 6];
    // SAFETY: getrandom writes at most b.len() bytes into our buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Extremely unlikely; fall back to time and pid, still locally administered.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let x = t as u64 ^ ((std::process::id() as u64) << 32);
        b.copy_from_slice(&x.to_le_bytes()[..6]);
    }
    naming::local_unicast_mac(b)
}

/// Turn on forwarding for the family in the current network namespace (as the reference bridge
/// plugin does when isGateway), writing only if it is off.
pub fn enable_forwarding(v4: bool) -> Result<(), NlError> {
    let p = if v4 { "/proc/sys/net/ipv4/ip_forward" } else { "/proc/sys/net/ipv6/conf/all/forwarding" };
    let cur = std::fs::read_to_string(p).map_err(|e| NlError::Io { op: format!("read {p}"), source: e })?;
    if cur.trim() == "1" {
        return Ok(());
    }
    std::fs::write(p, "1").map_err(|e| NlError::Io { op: format!("write {p}"), source: e })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::AddressFamily;

    #[test]
    fn route_messages() {
        let r = Route { dst: "0.0.0.0/0".parse().unwrap(), gw: Some("10.244.0.1".parse().unwrap()), extra: Default::default() };
        let m = route_message(7, &r);
        assert_eq!(m.header.destination_prefix_length, 0);
        assert_eq!(m.header.address_family, AddressFamily::Inet);
        assert!(m.attributes.contains(&RouteAttribute::Oif(7)));
        assert!(m.attributes.contains(&RouteAttribute::Gateway(RouteAddress::Inet("10.244.0.1".parse().unwrap()))));
        let r = Route { dst: "fd00::/8".parse().unwrap(), gw: None, extra: Default::default() };
        let m = route_message(3, &r);
        assert_eq!(m.header.destination_prefix_length, 8);
        assert_eq!(m.header.address_family, AddressFamily::Inet6);
    }

    #[test]
    fn link_parsing() {
        let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Bridge)
            .name("br".to_string())
            .mtu(1400)
            .address(vec![2, 0, 0, 0, 0, 1])
            .up()
            .build();
        let l = Link::from_msg(msg);
        assert_eq!(l.name, "br");
        assert_eq!(l.mtu, 1400);
        assert_eq!(l.kind, Some(InfoKind::Bridge));
        assert!(l.up);
        assert_eq!(l.mac_string(), "02:00:00:00:00:01");
    }

    #[test]
    fn random_macs_are_local_unicast() {
        let m = random_mac();
        assert_eq!(m[0] & 0x03, 0x02);
    }
}
