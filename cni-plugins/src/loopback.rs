//! Type `loopback`: bring `lo` up in the container (containerd 1.6 calls it before the pod
//! network). Mirrors the reference plugin's result: `lo` with a zero MAC and its addresses.

use crate::config::{Env, NetConf};
use crate::error::{code, CniError};
use crate::netlink::{Netns, Nl, NlError};
use crate::result::{CniResult, Interface, IpConfig};

const LO: &str = "lo";

pub async fn add(env: &Env, conf: &NetConf) -> Result<CniResult, CniError> {
    let prev = conf
        .prev_result
        .as_ref()
        .map(CniResult::parse)
        .transpose()
        .map_err(|e| CniError::new(code::DECODE_FAILURE, "failed to decode prevResult", e.to_string()))?;
    let path = env.netns.as_deref().expect("validated: ADD has CNI_NETNS");
    let ns = Netns::open_existing(path)?;
    let nl = Nl::in_netns(&ns)?;
    let lo = nl.link(LO).await?.ok_or_else(|| NlError::Conflict(format!("no {LO} in {path}")))?;
    nl.set_up(lo.index, true).await?;
    let addrs = nl.addrs(lo.index).await?;
    if let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(NlError::Conflict(format!("{LO} in {path} has non-loopback address {a}")).into());
    }
    // A chained loopback passes the previous result through untouched.
    if let Some(p) = prev {
        return Ok(p);
    }
    let mut ips = Vec::new();
    for v4 in [true, false] {
        if let Some(a) = addrs.iter().find(|a| a.is_ipv4() == v4) {
            ips.push(IpConfig { address: *a, gateway: None, interface: Some(0) });
        }
    }
    Ok(CniResult {
        interfaces: vec![Interface {
            name: LO.into(),
            mac: Some("00:00:00:00:00:00".into()),
            sandbox: Some(path.to_string()),
            ..Default::default()
        }],
        ips,
        ..Default::default()
    })
}

/// DEL: set `lo` down; a missing netns (or lo) is fine.
pub async fn del(env: &Env) -> Result<(), CniError> {
    let Some(path) = env.netns.as_deref() else { return Ok(()) };
    let ns = match Netns::open(path) {
        Ok(Some(ns)) => ns,
        Ok(None) | Err(NlError::NotNetns(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let nl = Nl::in_netns(&ns)?;
    if let Some(lo) = nl.link(LO).await? {
        nl.set_up(lo.index, false).await?;
    }
    Ok(())
}

pub async fn check(env: &Env) -> Result<(), CniError> {
    let path = env.netns.as_deref().expect("validated: CHECK has CNI_NETNS");
    let ns = Netns::open_existing(path)?;
    let nl = Nl::in_netns(&ns)?;
    match nl.link(LO).await? {
        Some(lo) if lo.up => Ok(()),
        Some(_) => Err(NlError::CheckFailed(format!("{LO} in {path} is down")).into()),
        None => Err(NlError::CheckFailed(format!("no {LO} in {path}")).into()),
    }
}
