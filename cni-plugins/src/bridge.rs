//! Type `berth-cni`: bridge + veth + host-local style IPAM. The commands, composed from the
//! pure parts (config, ipam, result, naming) and the netlink I/O.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_route::link::InfoKind;

use crate::config::{BridgeConf, Env, NetConf};
use crate::error::{code, CniError};
use crate::ipam::{self, DiskStore, Owner};
use crate::naming::host_veth_name;
use crate::netlink::{self, errno, Link, Netns, NlError};
use crate::result::{CniResult, Interface, IpConfig};

fn owner(env: &Env) -> Owner {
    Owner::new(env.container_id.clone(), env.ifname.clone())
}

fn prev_result(conf: &NetConf) -> Result<Option<CniResult>, CniError> {
    conf.prev_result
        .as_ref()
        .map(CniResult::parse)
        .transpose()
        .map_err(|e| CniError::new(code::DECODE_FAILURE, "failed to decode prevResult", e.to_string()))
}

/// ADD. Allocation first (under the store lock, released before any netlink work), then links;
/// on any failure everything this invocation created is undone.
pub async fn add(env: &Env, conf: &NetConf, b: &BridgeConf) -> Result<CniResult, CniError> {
    let prev = prev_result(conf)?;
    let netns_path = env.netns.as_deref().expect("validated: ADD has CNI_NETNS");
    let ns = Netns::open_existing(netns_path)?;
    let owner = owner(env);
    let alloc = {
        let mut store = DiskStore::open(&b.store_dir)?;
        ipam::allocate(&mut store, &b.range, &owner)?
    };
    match plumb(env, b, &ns, alloc.ip).await {
        Ok(ours) => {
            Ok(match prev {
                Some(mut p) => {
                    p.append(ours);
                    p
                }
                None => ours,
            })
        }
        Err(e) => {
            if !alloc.reused {
                // Best effort: the original error is what the runtime needs to see.
                if let Ok(mut store) = DiskStore::open(&b.store_dir) {
                    let _ = ipam::release_ip(&mut store, alloc.ip, &owner);
                }
            }
            Err(e)
        }
    }
}

/// Bridge, veth pair, address and routes. Undoes the veth if a later step fails.
async fn plumb(env: &Env, b: &BridgeConf, ns: &Netns, ip: IpAddr) -> Result<CniResult, CniError> {
    let host = netlink::Nl::here()?;
    let br = host.ensure_bridge(&b.bridge, b.mtu).await?;
    if b.is_gateway {
        host.ensure_gateway_addr(br.index, &b.bridge, b.range.with_prefix(b.range.gateway)).await?;
        netlink::enable_forwarding(b.range.subnet.is_ipv4())?;
    }
    let veth = host_veth_name(&env.container_id, &env.ifname);
    create_veth(&host, &veth, env, b, ns, br.index).await?;
    let res = async {
        let hv = host
            .link(&veth)
            .await?
            .ok_or_else(|| NlError::Conflict(format!("host veth {veth} vanished after creation")))?;
        if b.hairpin {
            host.set_hairpin(hv.index, true).await?;
        }
        let ctr = netlink::Nl::in_netns(ns)?;
        let cl = ctr.link(&env.ifname).await?.ok_or_else(|| {
            NlError::Conflict(format!("container interface {} vanished after creation", env.ifname))
        })?;
        let addr = b.range.with_prefix(ip);
        ctr.add_addr(cl.index, addr).await?;
        ctr.set_up(cl.index, true).await?;
        for r in &b.routes {
            ctr.add_route(cl.index, r).await?;
        }
        Ok::<_, NlError>((hv, cl, addr))
    }
    .await;
    match res {
        Ok((hv, cl, addr)) => Ok(render(b, &br, &hv, &cl, addr, &ns.path)),
        Err(e) => {
            let _ = host.del_link_by_name(&veth).await;
            Err(e.into())
        }
    }
}

/// Create the pair; a stale host-side veth of the same (deterministic) name is left from an
/// earlier attachment of this very (containerId, ifname): remove it and retry once. An
/// interface already named CNI_IFNAME in the container is an error (spec).
async fn create_veth(host: &netlink::Nl, veth: &str, env: &Env, b: &BridgeConf, ns: &Netns, br: u32) -> Result<(), CniError> {
    for attempt in 0..2 {
        match host.create_veth(veth, &env.ifname, b.mtu, ns, br).await {
            Ok(()) => return Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) && attempt == 0 => {
                let ctr = netlink::Nl::in_netns(ns)?;
                if ctr.link(&env.ifname).await?.is_some() {
                    return Err(NlError::InterfaceExists(format!(
                        "interface {} already exists in {}",
                        env.ifname, ns.path
                    ))
                    .into());
                }
                host.del_link_by_name(veth).await?;
            }
            Err(e) => {
                return Err(NlError::Netlink { op: format!("create veth {veth} <-> {}:{}", ns.path, env.ifname), source: e }.into())
            }
        }
    }
    unreachable!("second attempt returns")
}

fn render(b: &BridgeConf, br: &Link, hv: &Link, cl: &Link, addr: IpNetwork, netns: &str) -> CniResult {
    let iface = |l: &Link| Interface {
        name: l.name.clone(),
        mac: Some(l.mac_string()),
        mtu: Some(if l.mtu == 0 { b.mtu } else { l.mtu }),
        sandbox: None,
        extra: Default::default(),
    };
    CniResult {
        interfaces: vec![iface(br), iface(hv), Interface { sandbox: Some(netns.to_string()), ..iface(cl) }],
        ips: vec![IpConfig { address: addr, gateway: Some(b.range.gateway), interface: Some(2) }],
        routes: b.routes.clone(),
        dns: Default::default(),
    }
}

/// DEL: best effort and idempotent. Tries every step, returns the first error.
pub async fn del(env: &Env, b: &BridgeConf) -> Result<(), CniError> {
    let mut first: Option<CniError> = None;
    if let Err(e) = del_links(env).await {
        first.get_or_insert(e);
    }
    let released = DiskStore::open(&b.store_dir).and_then(|mut s| ipam::release(&mut s, &owner(env)));
    if let Err(e) = released {
        first.get_or_insert(e.into());
    }
    first.map_or(Ok(()), Err)
}

async fn del_links(env: &Env) -> Result<(), CniError> {
    // Inside the container if it still exists (deleting one end removes the pair)...
    if let Some(path) = env.netns.as_deref() {
        match Netns::open(path) {
            Ok(Some(ns)) => {
                let ctr = netlink::Nl::in_netns(&ns)?;
                if let Some(l) = ctr.link(&env.ifname).await? {
                    if l.kind == Some(InfoKind::Veth) {
                        ctr.del_link(l.index).await?;
                        return Ok(());
                    }
                }
            }
            // Gone (or no longer a namespace): its interfaces went with it.
            Ok(None) | Err(NlError::NotNetns(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // ...else by the host-side name (a pair whose netns vanished, or a half-done ADD).
    let host = netlink::Nl::here()?;
    host.del_link_by_name(&host_veth_name(&env.container_id, &env.ifname)).await?;
    Ok(())
}

/// CHECK: the reservation, the container interface with its address and routes, the host veth
/// on the bridge, and whatever prevResult says about our interface.
pub async fn check(env: &Env, conf: &NetConf, b: &BridgeConf) -> Result<(), CniError> {
    let fail = |m: String| -> CniError { NlError::CheckFailed(m).into() };
    let prev = prev_result(conf)?;
    let netns_path = env.netns.as_deref().expect("validated: CHECK has CNI_NETNS");
    let ip = {
        let mut store = DiskStore::open(&b.store_dir)?;
        ipam::find(&mut store, &owner(env))?
    }
    .ok_or_else(|| fail(format!("no IP address reserved for {}/{}", env.container_id, env.ifname)))?;
    let ns = Netns::open_existing(netns_path)?;
    let ctr = netlink::Nl::in_netns(&ns)?;
    let cl = ctr
        .link(&env.ifname)
        .await?
        .ok_or_else(|| fail(format!("interface {} missing in {netns_path}", env.ifname)))?;
    if !cl.up {
        return Err(fail(format!("interface {} in {netns_path} is down", env.ifname)));
    }
    let addrs = ctr.addrs(cl.index).await?;
    let want = b.range.with_prefix(ip);
    if !addrs.contains(&want) {
        return Err(fail(format!("{} in {netns_path} lacks address {want} (has {addrs:?})", env.ifname)));
    }
    let kroutes = ctr.routes(b.range.subnet.is_ipv4()).await?;
    for r in &b.routes {
        let found = kroutes.iter().any(|k| k.dst == r.dst && k.gw == r.gw && k.oif == Some(cl.index));
        if !found {
            return Err(fail(format!("route {} via {:?} missing on {} in {netns_path}", r.dst, r.gw, env.ifname)));
        }
    }
    if let Some(prev) = prev {
        for ipc in &prev.ips {
            let ours = ipc
                .interface
                .and_then(|i| prev.interfaces.get(i))
                .is_some_and(|i| i.name == env.ifname && i.sandbox.as_deref() == Some(netns_path));
            if ours && !addrs.contains(&ipc.address) {
                return Err(fail(format!("prevResult address {} missing on {}", ipc.address, env.ifname)));
            }
        }
    }
    let host = netlink::Nl::here()?;
    let br = host
        .link(&b.bridge)
        .await?
        .filter(|l| l.kind == Some(InfoKind::Bridge))
        .ok_or_else(|| fail(format!("bridge {} missing", b.bridge)))?;
    let veth = host_veth_name(&env.container_id, &env.ifname);
    let hv = host.link(&veth).await?.ok_or_else(|| fail(format!("host veth {veth} missing")))?;
    if hv.controller != Some(br.index) {
        return Err(fail(format!("host veth {veth} is not attached to {}", b.bridge)));
    }
    Ok(())
}

/// GC: release reservations of attachments the runtime no longer knows.
pub fn gc(conf: &NetConf, b: &BridgeConf) -> Result<(), CniError> {
    let valid = conf.valid_attachments.clone().unwrap_or_default();
    let mut store = DiskStore::open(&b.store_dir)?;
    let tmp = store.remove_stale_tmp();
    let (_released, err) = ipam::gc(&mut store, &valid);
    if let Some(e) = err {
        return Err(e.into());
    }
    tmp.map_err(Into::into)
}

/// STATUS: the store is writable and the range has room.
pub fn status(b: &BridgeConf) -> Result<(), CniError> {
    let not_available = |d: String| CniError::new(code::NOT_AVAILABLE, "plugin is not available", d);
    let mut store = DiskStore::open(&b.store_dir).map_err(|e| not_available(e.to_string()))?;
    let probe = store.dir().join(format!(".tmp-status-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| not_available(format!("{} is not writable: {e}", store.dir().display())))?;
    let _ = std::fs::remove_file(&probe);
    let free = ipam::free_count(&mut store, &b.range).map_err(|e| not_available(e.to_string()))?;
    if free == 0 {
        return Err(not_available(format!("no free IP address left in {}", b.range.subnet)));
    }
    Ok(())
}
