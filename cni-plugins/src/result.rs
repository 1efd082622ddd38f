//! The ADD success result, held version-neutral and rendered per requested cniVersion
//! (types/040 for 0.3.0/0.3.1/0.4.0, types/100 for 1.0.0/1.1.0). Pure.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{json, Map, Value};

use crate::version::CniVersion;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container, None on the host.
    pub sandbox: Option<String>,
    /// Keys we do not interpret (socketPath, pciID, ...), passed through.
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IpConfig {
    /// Address with prefix length, e.g. 10.244.0.5/24.
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    /// mtu, advmss, priority, table, scope: passed through untouched.
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    /// The dns object, passed through (we never set it).
    pub dns: Map<String, Value>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("prevResult: {0}")]
pub struct PrevResultError(String);

impl CniResult {
    /// Render for the version the runtime asked for.
    pub fn render(&self, version: CniVersion) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = i.extra.clone();
                o.insert("name".into(), json!(i.name));
                if let Some(mac) = &i.mac {
                    o.insert("mac".into(), json!(mac));
                }
                match i.mtu {
                    Some(mtu) if version.interfaces_have_mtu() => {
                        o.insert("mtu".into(), json!(mtu));
                    }
                    _ => {}
                }
                if let Some(sb) = &i.sandbox {
                    o.insert("sandbox".into(), json!(sb));
                }
                Value::Object(o)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = Map::new();
                if version.ips_have_version() {
                    let v = if ip.address.is_ipv4() { "4" } else { "6" };
                    o.insert("version".into(), json!(v));
                }
                if let Some(idx) = ip.interface {
                    o.insert("interface".into(), json!(idx));
                }
                o.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    o.insert("gateway".into(), json!(gw.to_string()));
                }
                Value::Object(o)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut o = r.extra.clone();
                o.insert("dst".into(), json!(r.dst.to_string()));
                if let Some(gw) = r.gw {
                    o.insert("gw".into(), json!(gw.to_string()));
                }
                Value::Object(o)
            })
            .collect();
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        if !interfaces.is_empty() {
            out.insert("interfaces".into(), Value::Array(interfaces));
        }
        if !ips.is_empty() {
            out.insert("ips".into(), Value::Array(ips));
        }
        if !routes.is_empty() {
            out.insert("routes".into(), Value::Array(routes));
        }
        out.insert("dns".into(), Value::Object(self.dns.clone()));
        Value::Object(out)
    }

    /// Parse a prevResult of any supported version (the `version` key of 0.x ips is ignored).
    pub fn parse(v: &Value) -> Result<CniResult, PrevResultError> {
        let obj = v.as_object().ok_or_else(|| PrevResultError("not an object".into()))?;
        let mut res = CniResult::default();
        for (i, iface) in array(obj, "interfaces")?.iter().enumerate() {
            let o = iface
                .as_object()
                .ok_or_else(|| PrevResultError(format!("interfaces[{i}] is not an object")))?;
            let mut extra = o.clone();
            let name = take_str(&mut extra, "name")?
                .ok_or_else(|| PrevResultError(format!("interfaces[{i}] has no name")))?;
            let mac = take_str(&mut extra, "mac")?;
            let sandbox = take_str(&mut extra, "sandbox")?;
            let mtu = match extra.remove("mtu") {
                None => None,
                Some(Value::Number(n)) => n.as_u64().map(|n| n as u32),
                Some(_) => return Err(PrevResultError(format!("interfaces[{i}].mtu is not a number"))),
            };
            res.interfaces.push(Interface { name, mac, mtu, sandbox, extra });
        }
        for (i, ip) in array(obj, "ips")?.iter().enumerate() {
            let o = ip.as_object().ok_or_else(|| PrevResultError(format!("ips[{i}] is not an object")))?;
            let address = o
                .get("address")
                .and_then(Value::as_str)
                .ok_or_else(|| PrevResultError(format!("ips[{i}] has no address")))?;
            let address: IpNetwork =
                address.parse().map_err(|e| PrevResultError(format!("ips[{i}].address {address:?}: {e}")))?;
            let gateway = match o.get("gateway").and_then(Value::as_str) {
                None | Some("") => None,
                Some(g) => Some(g.parse().map_err(|e| PrevResultError(format!("ips[{i}].gateway {g:?}: {e}")))?),
            };
            let interface = o.get("interface").and_then(Value::as_u64).map(|n| n as usize);
            res.ips.push(IpConfig { address, gateway, interface });
        }
        for (i, r) in array(obj, "routes")?.iter().enumerate() {
            let o = r.as_object().ok_or_else(|| PrevResultError(format!("routes[{i}] is not an object")))?;
            let mut extra = o.clone();
            let dst = take_str(&mut extra, "dst")?
                .ok_or_else(|| PrevResultError(format!("routes[{i}] has no dst")))?;
            let dst: IpNetwork = dst.parse().map_err(|e| PrevResultError(format!("routes[{i}].dst {dst:?}: {e}")))?;
            let gw = match take_str(&mut extra, "gw")? {
                None => None,
                Some(g) if g.is_empty() => None,
                Some(g) => Some(g.parse().map_err(|e| PrevResultError(format!("routes[{i}].gw {g:?}: {e}")))?),
            };
            res.routes.push(Route { dst, gw, extra });
        }
        if let Some(dns) = obj.get("dns") {
            match dns {
                Value::Object(m) => res.dns = m.clone(),
                Value::Null => {}
                _ => return Err(PrevResultError("dns is not an object".into())),
            }
        }
        Ok(res)
    }

    /// Append another attachment's result (an interface plugin after a prevResult):
    /// interface indices of `other` are shifted past ours.
    pub fn append(&mut self, other: CniResult) {
        let offset = self.interfaces.len();
        self.interfaces.extend(other.interfaces);
        self.ips.extend(other.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + offset);
            ip
        }));
        self.routes.extend(other.routes);
        for (k, v) in other.dns {
            self.dns.entry(k).or_insert(v);
        }
    }
}

fn array<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], PrevResultError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(PrevResultError(format!("{key} is not an array"))),
    }
}

fn take_str(o: &mut Map<String, Value>, key: &str) -> Result<Option<String>, PrevResultError> {
    match o.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(PrevResultError(format!("{key} is not a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface { name: "berth0".into(), mac: Some("0a:00:00:00:00:01".into()), mtu: Some(1500), ..Default::default() },
                Interface { name: "veth01234567".into(), mac: Some("0a:00:00:00:00:02".into()), mtu: Some(1500), ..Default::default() },
                Interface {
                    name: "eth0".into(),
                    mac: Some("0a:00:00:00:00:03".into()),
                    mtu: Some(1500),
                    sandbox: Some("/var/run/netns/x".into()),
                    ..Default::default()
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.0.5/24".parse().unwrap(),
                gateway: Some("10.244.0.1".parse().unwrap()),
                interface: Some(2),
            }],
            routes: vec![Route { dst: "0.0.0.0/0".parse().unwrap(), gw: Some("10.244.0.1".parse().unwrap()), extra: Map::new() }],
            dns: Map::new(),
        }
    }

    #[test]
    fn render_1_0_0_has_no_ip_version_nor_mtu() {
        let v = sample().render(CniVersion::V1_0_0);
        assert_eq!(
            v,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "berth0", "mac": "0a:00:00:00:00:01"},
                    {"name": "veth01234567", "mac": "0a:00:00:00:00:02"},
                    {"name": "eth0", "mac": "0a:00:00:00:00:03", "sandbox": "/var/run/netns/x"}
                ],
                "ips": [{"interface": 2, "address": "10.244.0.5/24", "gateway": "10.244.0.1"}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}],
                "dns": {}
            })
        );
    }

    #[test]
    fn render_1_1_0_has_mtu() {
        let v = sample().render(CniVersion::V1_1_0);
        assert_eq!(v["interfaces"][2]["mtu"], json!(1500));
        assert!(v["ips"][0].get("version").is_none());
    }

    #[test]
    fn render_0_x_has_ip_version() {
        for ver in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let v = sample().render(ver);
            assert_eq!(v["cniVersion"], json!(ver.as_str()));
            assert_eq!(v["ips"][0]["version"], json!("4"));
            assert_eq!(v["ips"][0]["interface"], json!(2));
            assert!(v["interfaces"][0].get("mtu").is_none());
        }
        let mut r = sample();
        r.ips[0].address = "fd00::5/64".parse().unwrap();
        assert_eq!(r.render(CniVersion::V0_3_1)["ips"][0]["version"], json!("6"));
    }

    #[test]
    fn parse_roundtrips_every_version() {
        for ver in [CniVersion::V0_3_0, CniVersion::V0_4_0, CniVersion::V1_0_0, CniVersion::V1_1_0] {
            let rendered = sample().render(ver);
            let parsed = CniResult::parse(&rendered).unwrap();
            let mut expect = sample();
            if !ver.interfaces_have_mtu() {
                for i in &mut expect.interfaces {
                    i.mtu = None;
                }
            }
            assert_eq!(parsed, expect, "{ver}");
        }
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(CniResult::parse(&json!("x")).is_err());
        assert!(CniResult::parse(&json!({"ips": [{"address": "nope"}]})).is_err());
        assert!(CniResult::parse(&json!({"interfaces": [{"mac": "x"}]})).is_err());
        assert_eq!(CniResult::parse(&json!({})).unwrap(), CniResult::default());
    }

    #[test]
    fn append_shifts_interface_indices() {
        let mut prev = CniResult {
            interfaces: vec![Interface { name: "lo".into(), ..Default::default() }],
            ips: vec![IpConfig { address: "127.0.0.1/8".parse().unwrap(), gateway: None, interface: Some(0) }],
            ..Default::default()
        };
        prev.append(sample());
        assert_eq!(prev.interfaces.len(), 4);
        assert_eq!(prev.ips[0].interface, Some(0));
        assert_eq!(prev.ips[1].interface, Some(3));
    }

    #[test]
    fn passthrough_keys_survive() {
        let v = json!({"cniVersion":"1.1.0","interfaces":[{"name":"x","socketPath":"/s"}],
            "routes":[{"dst":"10.0.0.0/8","priority":5}],"dns":{"nameservers":["10.96.0.10"]}});
        let r = CniResult::parse(&v).unwrap();
        let out = r.render(CniVersion::V1_1_0);
        assert_eq!(out["interfaces"][0]["socketPath"], json!("/s"));
        assert_eq!(out["routes"][0]["priority"], json!(5));
        assert_eq!(out["dns"]["nameservers"][0], json!("10.96.0.10"));
    }
}
