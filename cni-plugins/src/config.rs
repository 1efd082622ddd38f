//! Parsing and validation of the CNI_* environment and the network config on stdin. Pure.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{code, Coded};
use crate::ipam::{Owner, Range, RangeError};
use crate::result::Route;
use crate::version::{self, CniVersion};

pub const DEFAULT_BRIDGE: &str = "berth0";
pub const DEFAULT_MTU: u32 = 1500;
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
pub const BRIDGE_TYPE: &str = "berth-cni";
pub const LOOPBACK_TYPE: &str = "loopback";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("required environment variables [{}] missing", .0.join(","))]
    MissingEnv(Vec<&'static str>),
    #[error("{var}={value:?}: {reason}")]
    InvalidEnv { var: &'static str, value: String, reason: &'static str },
    #[error("CNI_COMMAND={0:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC")]
    UnknownCommand(String),
    #[error("{0}")]
    Decode(String),
    #[error("cniVersion {0:?} is not supported; supported: {sup}", sup = version::SUPPORTED.join(", "))]
    UnsupportedVersion(String),
    #[error("cniVersion {version} does not allow {command}")]
    CommandNotAllowed { command: &'static str, version: CniVersion },
    #[error("unsupported field {key} = {value}")]
    UnsupportedField { key: String, value: String },
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("ipam: {0}")]
    Range(#[from] RangeError),
}

impl Coded for ConfigError {
    fn code(&self) -> u32 {
        match self {
            ConfigError::MissingEnv(_) | ConfigError::InvalidEnv { .. } | ConfigError::UnknownCommand(_) => {
                code::INVALID_ENV
            }
            ConfigError::Decode(_) => code::DECODE_FAILURE,
            ConfigError::UnsupportedVersion(_) | ConfigError::CommandNotAllowed { .. } => code::INCOMPATIBLE_VERSION,
            ConfigError::UnsupportedField { .. } => code::UNSUPPORTED_FIELD,
            ConfigError::Missing(_) | ConfigError::Invalid { .. } | ConfigError::Range(_) => code::INVALID_CONFIG,
        }
    }
    fn msg(&self) -> &'static str {
        match self {
            ConfigError::MissingEnv(_) | ConfigError::InvalidEnv { .. } | ConfigError::UnknownCommand(_) => {
                "invalid environment variables"
            }
            ConfigError::Decode(_) => "failed to decode network config",
            ConfigError::UnsupportedVersion(_) | ConfigError::CommandNotAllowed { .. } => "incompatible CNI version",
            ConfigError::UnsupportedField { .. } => "unsupported field in network config",
            ConfigError::Missing(_) | ConfigError::Invalid { .. } | ConfigError::Range(_) => "invalid network config",
        }
    }
}

/// The CNI_* parameters, validated for the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    /// Empty for commands that do not take it.
    pub container_id: String,
    /// CNI_NETNS; None when unset or empty (allowed for DEL).
    pub netns: Option<String>,
    pub ifname: String,
    pub args: Option<String>,
    pub path: Option<String>,
}

/// Container IDs per spec: alphanumeric first, then alphanumerics, `_`, `.`, `-`.
pub fn valid_container_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Linux interface names: 1..=15 bytes, no `/`, `:` or whitespace, not `.` or `..`.
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

/// Read and validate the environment through `get` (std::env::var in the binary).
pub fn parse_env(get: impl Fn(&str) -> Option<String>) -> Result<Env, ConfigError> {
    let get = |k: &str| get(k).filter(|v| !v.is_empty());
    let command = match get("CNI_COMMAND").as_deref() {
        None => return Err(ConfigError::MissingEnv(vec!["CNI_COMMAND"])),
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some("VERSION") => Command::Version,
        Some("STATUS") => Command::Status,
        Some("GC") => Command::Gc,
        Some(other) => return Err(ConfigError::UnknownCommand(other.to_string())),
    };
    let (need_id, need_netns, need_if) = match command {
        Command::Add | Command::Check => (true, true, true),
        Command::Del => (true, false, true),
        Command::Version | Command::Status | Command::Gc => (false, false, false),
    };
    let container_id = get("CNI_CONTAINERID");
    let netns = get("CNI_NETNS");
    let ifname = get("CNI_IFNAME");
    let mut missing = Vec::new();
    if need_id && container_id.is_none() {
        missing.push("CNI_CONTAINERID");
    }
    if need_netns && netns.is_none() {
        missing.push("CNI_NETNS");
    }
    if need_if && ifname.is_none() {
        missing.push("CNI_IFNAME");
    }
    if !missing.is_empty() {
        return Err(ConfigError::MissingEnv(missing));
    }
    let container_id = container_id.unwrap_or_default();
    let ifname = ifname.unwrap_or_default();
    if need_id && !valid_container_id(&container_id) {
        return Err(ConfigError::InvalidEnv {
            var: "CNI_CONTAINERID",
            value: container_id,
            reason: "must start with an alphanumeric character, followed by alphanumerics, '_', '.' or '-'",
        });
    }
    if need_if && !valid_ifname(&ifname) {
        return Err(ConfigError::InvalidEnv {
            var: "CNI_IFNAME",
            value: ifname,
            reason: "not a valid interface name (1-15 bytes, no '/', ':' or whitespace)",
        });
    }
    if let Some(ns) = &netns {
        if !ns.starts_with('/') {
            return Err(ConfigError::InvalidEnv { var: "CNI_NETNS", value: ns.clone(), reason: "must be an absolute path" });
        }
    }
    Ok(Env { command, container_id, netns, ifname, args: get("CNI_ARGS"), path: get("CNI_PATH") })
}

/// Bridge plugin settings (type `berth-cni`).
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeConf {
    pub bridge: String,
    pub mtu: u32,
    pub is_gateway: bool,
    pub hairpin: bool,
    pub range: Range,
    /// Routes to install in the container (ipam.routes, or a default route via the gateway).
    pub routes: Vec<Route>,
    /// `<dataDir>/<network name>`.
    pub store_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Plugin {
    Bridge(BridgeConf),
    Loopback,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub version: CniVersion,
    pub name: String,
    pub plugin: Plugin,
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` (GC only).
    pub valid_attachments: Option<HashSet<Owner>>,
}

/// Best effort: the cniVersion string of a config that may not parse otherwise, to tag errors.
pub fn sniff_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BridgeRaw {
    bridge: Option<String>,
    mtu: Option<u32>,
    is_gateway: Option<bool>,
    hairpin_mode: Option<bool>,
    ipam: Option<IpamRaw>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpamRaw {
    #[serde(rename = "type")]
    kind: Option<String>,
    subnet: Option<String>,
    gateway: Option<String>,
    range_start: Option<String>,
    range_end: Option<String>,
    data_dir: Option<String>,
    ranges: Option<Vec<Vec<RangeRaw>>>,
    routes: Option<Vec<RouteRaw>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RangeRaw {
    subnet: String,
    gateway: Option<String>,
    range_start: Option<String>,
    range_end: Option<String>,
}

#[derive(Deserialize)]
struct RouteRaw {
    dst: String,
    gw: Option<String>,
}

#[derive(Deserialize)]
struct AttachmentRaw {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

fn parse_ip(field: &'static str, s: &str) -> Result<IpAddr, ConfigError> {
    s.parse().map_err(|_| ConfigError::Invalid { field, reason: format!("{s:?} is not an IP address") })
}

fn parse_net(field: &'static str, s: &str) -> Result<IpNetwork, ConfigError> {
    s.parse().map_err(|_| ConfigError::Invalid { field, reason: format!("{s:?} is not a CIDR") })
}

/// Parse the stdin config for `command`. VERSION does not come here.
pub fn parse_netconf(stdin: &[u8], command: Command) -> Result<NetConf, ConfigError> {
    let v: Value = serde_json::from_slice(stdin).map_err(|e| ConfigError::Decode(format!("stdin is not JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| ConfigError::Decode("stdin is not a JSON object".into()))?;
    let version = match obj.get("cniVersion") {
        None | Some(Value::Null) => return Err(ConfigError::UnsupportedVersion(String::new())),
        Some(Value::String(s)) => CniVersion::parse(s).ok_or_else(|| ConfigError::UnsupportedVersion(s.clone()))?,
        Some(other) => return Err(ConfigError::Decode(format!("cniVersion is not a string: {other}"))),
    };
    let allowed = match command {
        Command::Check => version.allows_check(),
        Command::Gc | Command::Status => version.allows_gc_and_status(),
        _ => true,
    };
    if !allowed {
        return Err(ConfigError::CommandNotAllowed { command: command.as_str(), version });
    }
    let name = match obj.get("name") {
        None | Some(Value::Null) => return Err(ConfigError::Missing("name")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ConfigError::Decode("name is not a string".into())),
    };
    // The name becomes a directory under dataDir: the spec's character set, nothing else.
    if !valid_container_id(&name) {
        return Err(ConfigError::Invalid {
            field: "name",
            reason: format!("{name:?} must start with an alphanumeric character, followed by alphanumerics, '_', '.' or '-'"),
        });
    }
    let plugin_type = match obj.get("type") {
        None | Some(Value::Null) => return Err(ConfigError::Missing("type")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ConfigError::Decode("type is not a string".into())),
    };
    let prev_result = obj.get("prevResult").filter(|v| !v.is_null()).cloned();
    let valid_attachments = match obj.get("cni.dev/valid-attachments") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let list: Vec<AttachmentRaw> = serde_json::from_value(v.clone())
                .map_err(|e| ConfigError::Decode(format!("cni.dev/valid-attachments: {e}")))?;
            Some(list.into_iter().map(|a| Owner::new(a.container_id, a.ifname)).collect())
        }
    };
    if command == Command::Gc && valid_attachments.is_none() {
        // Releasing everything because the list is missing would be destructive.
        return Err(ConfigError::Missing("cni.dev/valid-attachments"));
    }
    let plugin = match plugin_type.as_str() {
        LOOPBACK_TYPE => Plugin::Loopback,
        BRIDGE_TYPE => Plugin::Bridge(parse_bridge(&v, &name)?),
        other => {
            return Err(ConfigError::Invalid {
                field: "type",
                reason: format!("{other:?} is not handled by this binary (berth-cni or loopback)"),
            })
        }
    };
    Ok(NetConf { version, name, plugin, prev_result, valid_attachments })
}

fn parse_bridge(v: &Value, name: &str) -> Result<BridgeConf, ConfigError> {
    let raw: BridgeRaw = serde_json::from_value(v.clone()).map_err(|e| ConfigError::Decode(e.to_string()))?;
    let bridge = raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
    if !valid_ifname(&bridge) {
        return Err(ConfigError::Invalid { field: "bridge", reason: format!("{bridge:?} is not a valid interface name") });
    }
    let mtu = raw.mtu.unwrap_or(DEFAULT_MTU);
    if !(68..=65535).contains(&mtu) {
        return Err(ConfigError::Invalid { field: "mtu", reason: format!("{mtu} is outside 68..65535") });
    }
    let ipam = raw.ipam.ok_or(ConfigError::Missing("ipam"))?;
    match ipam.kind.as_deref() {
        None | Some("") | Some("host-local") | Some(BRIDGE_TYPE) => {}
        Some(other) => {
            return Err(ConfigError::UnsupportedField { key: "ipam.type".into(), value: format!("{other:?} (IPAM is built in, host-local style)") })
        }
    }
    let (subnet, gateway, start, end) = match (ipam.subnet, ipam.ranges) {
        (Some(s), None) => (s, ipam.gateway, ipam.range_start, ipam.range_end),
        (None, Some(mut sets)) if sets.len() == 1 && sets[0].len() == 1 => {
            let r = sets.remove(0).remove(0);
            (r.subnet, r.gateway, r.range_start, r.range_end)
        }
        (None, Some(sets)) => {
            return Err(ConfigError::UnsupportedField {
                key: "ipam.ranges".into(),
                value: format!("{} range sets (exactly one range is supported)", sets.len()),
            })
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid { field: "ipam", reason: "give either subnet or ranges, not both".into() })
        }
        (None, None) => return Err(ConfigError::Missing("ipam.subnet")),
    };
    let subnet = parse_net("ipam.subnet", &subnet)?;
    let gateway = gateway.filter(|g| !g.is_empty()).map(|g| parse_ip("ipam.gateway", &g)).transpose()?;
    let start = start.filter(|s| !s.is_empty()).map(|s| parse_ip("ipam.rangeStart", &s)).transpose()?;
    let end = end.filter(|s| !s.is_empty()).map(|s| parse_ip("ipam.rangeEnd", &s)).transpose()?;
    let range = Range::new(subnet, gateway, start, end)?;
    let routes = match ipam.routes {
        None => {
            let dst = if range.subnet.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
            vec![Route { dst: dst.parse().expect("literal"), gw: Some(range.gateway), extra: Default::default() }]
        }
        Some(rs) => rs
            .into_iter()
            .map(|r| {
                let dst = parse_net("ipam.routes.dst", &r.dst)?;
                let gw = match r.gw.filter(|g| !g.is_empty()) {
                    Some(g) => parse_ip("ipam.routes.gw", &g)?,
                    None => range.gateway,
                };
                if dst.is_ipv4() != range.subnet.is_ipv4() || gw.is_ipv4() != range.subnet.is_ipv4() {
                    return Err(ConfigError::Invalid {
                        field: "ipam.routes",
                        reason: format!("{} via {gw} is not of the subnet's address family", r.dst),
                    });
                }
                Ok(Route { dst, gw: Some(gw), extra: Default::default() })
            })
            .collect::<Result<_, _>>()?,
    };
    let data_dir = PathBuf::from(ipam.data_dir.filter(|d| !d.is_empty()).unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()));
    if !data_dir.is_absolute() {
        return Err(ConfigError::Invalid { field: "ipam.dataDir", reason: format!("{} is not an absolute path", data_dir.display()) });
    }
    Ok(BridgeConf {
        bridge,
        mtu,
        is_gateway: raw.is_gateway.unwrap_or(false),
        hairpin: raw.hairpin_mode.unwrap_or(false),
        store_dir: data_dir.join(name),
        range,
        routes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, ConfigError> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_env(|k| m.get(k).cloned())
    }

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"berth","type":"berth-cni","bridge":"berth0","mtu":1450,
        "isGateway":true,"hairpinMode":true,"runtimeConfig":{"portMappings":[]},"args":{"x":1},
        "ipam":{"subnet":"10.244.0.0/24","gateway":"10.244.0.1","dataDir":"/tmp/cni"}}"#;

    #[test]
    fn env_per_command() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "abc"), ("CNI_NETNS", "/run/netns/x"), ("CNI_IFNAME", "eth0")]).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.netns.as_deref(), Some("/run/netns/x"));
        assert_eq!(
            env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]),
            Err(ConfigError::MissingEnv(vec!["CNI_CONTAINERID", "CNI_NETNS"]))
        );
        // DEL without netns is fine.
        let e = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "abc"), ("CNI_NETNS", ""), ("CNI_IFNAME", "eth0")]).unwrap();
        assert_eq!(e.netns, None);
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "GC")]).is_ok());
        assert_eq!(env(&[]), Err(ConfigError::MissingEnv(vec!["CNI_COMMAND"])));
        let e = env(&[("CNI_COMMAND", "ADDD")]).unwrap_err();
        assert_eq!(e.code(), code::INVALID_ENV);
        let e = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "-bad"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert!(matches!(e, ConfigError::InvalidEnv { var: "CNI_CONTAINERID", .. }));
        let e = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "ok"), ("CNI_IFNAME", "much-too-long-name")]).unwrap_err();
        assert!(matches!(e, ConfigError::InvalidEnv { var: "CNI_IFNAME", .. }));
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "ok"), ("CNI_NETNS", "rel"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert!(matches!(e, ConfigError::InvalidEnv { var: "CNI_NETNS", .. }));
    }

    #[test]
    fn names() {
        assert!(valid_container_id("a"));
        assert!(valid_container_id("0123abc_.-x"));
        assert!(!valid_container_id(""));
        assert!(!valid_container_id("_a"));
        assert!(!valid_container_id("a/b"));
        assert!(valid_ifname("eth0"));
        assert!(!valid_ifname("a b"));
        assert!(!valid_ifname(".."));
        assert!(!valid_ifname("0123456789abcdef"));
    }

    #[test]
    fn full_config() {
        let c = parse_netconf(CONF.as_bytes(), Command::Add).unwrap();
        assert_eq!(c.version, CniVersion::V1_0_0);
        assert_eq!(c.name, "berth");
        let Plugin::Bridge(b) = c.plugin else { panic!() };
        assert_eq!(b.bridge, "berth0");
        assert_eq!(b.mtu, 1450);
        assert!(b.is_gateway && b.hairpin);
        assert_eq!(b.range.gateway.to_string(), "10.244.0.1");
        assert_eq!(b.store_dir, PathBuf::from("/tmp/cni/berth"));
        assert_eq!(b.routes.len(), 1);
        assert_eq!(b.routes[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(b.routes[0].gw.unwrap().to_string(), "10.244.0.1");
    }

    #[test]
    fn defaults_and_contract_config() {
        let c = parse_netconf(
            br#"{"cniVersion":"0.3.1","name":"berth","type":"berth-cni","ipam":{"subnet":"10.244.3.0/24"}}"#,
            Command::Add,
        )
        .unwrap();
        let Plugin::Bridge(b) = c.plugin else { panic!() };
        assert_eq!(b.bridge, DEFAULT_BRIDGE);
        assert_eq!(b.mtu, DEFAULT_MTU);
        assert!(!b.is_gateway && !b.hairpin);
        assert_eq!(b.store_dir, PathBuf::from("/var/lib/cni/networks/berth"));
        assert_eq!(b.range.gateway.to_string(), "10.244.3.1");
    }

    #[test]
    fn loopback_config() {
        let c = parse_netconf(br#"{"cniVersion":"0.3.1","name":"cni-loopback","type":"loopback"}"#, Command::Add).unwrap();
        assert_eq!(c.plugin, Plugin::Loopback);
    }

    #[test]
    fn host_local_ranges_and_routes() {
        let c = parse_netconf(
            br#"{"cniVersion":"1.1.0","name":"n","type":"berth-cni","ipam":{"type":"host-local",
              "ranges":[[{"subnet":"10.1.0.0/16","rangeStart":"10.1.2.10","rangeEnd":"10.1.2.20"}]],
              "routes":[{"dst":"10.96.0.0/12"},{"dst":"0.0.0.0/0","gw":"10.1.0.254"}]}}"#,
            Command::Add,
        )
        .unwrap();
        let Plugin::Bridge(b) = c.plugin else { panic!() };
        assert_eq!(b.range.start.to_string(), "10.1.2.10");
        assert_eq!(b.routes.len(), 2);
        assert_eq!(b.routes[0].gw.unwrap().to_string(), "10.1.0.1");
        assert_eq!(b.routes[1].gw.unwrap().to_string(), "10.1.0.254");
    }

    fn err(conf: &str, cmd: Command) -> ConfigError {
        parse_netconf(conf.as_bytes(), cmd).unwrap_err()
    }

    #[test]
    fn bad_configs_get_the_right_codes() {
        let add = Command::Add;
        assert_eq!(err("{", add).code(), code::DECODE_FAILURE);
        assert_eq!(err("[]", add).code(), code::DECODE_FAILURE);
        assert_eq!(err(r#"{"name":"n","type":"berth-cni"}"#, add).code(), code::INCOMPATIBLE_VERSION);
        assert_eq!(err(r#"{"cniVersion":"0.2.0","name":"n","type":"berth-cni"}"#, add).code(), code::INCOMPATIBLE_VERSION);
        assert_eq!(err(r#"{"cniVersion":"1.0.0","type":"berth-cni"}"#, add), ConfigError::Missing("name"));
        assert_eq!(err(r#"{"cniVersion":"1.0.0","name":"../x","type":"berth-cni"}"#, add).code(), code::INVALID_CONFIG);
        assert_eq!(err(r#"{"cniVersion":"1.0.0","name":"n","type":"macvlan"}"#, add).code(), code::INVALID_CONFIG);
        assert_eq!(err(r#"{"cniVersion":"1.0.0","name":"n","type":"berth-cni"}"#, add), ConfigError::Missing("ipam"));
        let base = |ipam: &str| format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"berth-cni","ipam":{ipam}}}"#);
        assert_eq!(err(&base("{}"), add), ConfigError::Missing("ipam.subnet"));
        assert_eq!(err(&base(r#"{"subnet":"10.0.0.0/33"}"#), add).code(), code::INVALID_CONFIG);
        assert_eq!(err(&base(r#"{"subnet":"10.0.0.0/31"}"#), add).code(), code::INVALID_CONFIG);
        assert_eq!(err(&base(r#"{"subnet":"10.0.0.0/24","gateway":"10.0.1.1"}"#), add).code(), code::INVALID_CONFIG);
        assert_eq!(err(&base(r#"{"subnet":"10.0.0.0/24","dataDir":"rel"}"#), add).code(), code::INVALID_CONFIG);
        assert_eq!(err(&base(r#"{"subnet":10}"#), add).code(), code::DECODE_FAILURE);
        assert_eq!(err(&base(r#"{"type":"dhcp","subnet":"10.0.0.0/24"}"#), add).code(), code::UNSUPPORTED_FIELD);
        let e = err(&base(r#"{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"fd00::/64"}]]}"#), add);
        assert_eq!(e.code(), code::UNSUPPORTED_FIELD);
        assert!(e.to_string().contains("ipam.ranges"));
        let mtu = r#"{"cniVersion":"1.0.0","name":"n","type":"berth-cni","mtu":10,"ipam":{"subnet":"10.0.0.0/24"}}"#;
        assert_eq!(err(mtu, add).code(), code::INVALID_CONFIG);
        let mtu = r#"{"cniVersion":"1.0.0","name":"n","type":"berth-cni","mtu":"x","ipam":{"subnet":"10.0.0.0/24"}}"#;
        assert_eq!(err(mtu, add).code(), code::DECODE_FAILURE);
        let br = r#"{"cniVersion":"1.0.0","name":"n","type":"berth-cni","bridge":"a/b","ipam":{"subnet":"10.0.0.0/24"}}"#;
        assert_eq!(err(br, add).code(), code::INVALID_CONFIG);
    }

    #[test]
    fn version_gates_commands() {
        let c = |v: &str| format!(r#"{{"cniVersion":"{v}","name":"n","type":"berth-cni","ipam":{{"subnet":"10.0.0.0/24"}},"cni.dev/valid-attachments":[]}}"#);
        assert_eq!(err(&c("0.3.1"), Command::Check).code(), code::INCOMPATIBLE_VERSION);
        assert!(parse_netconf(c("0.4.0").as_bytes(), Command::Check).is_ok());
        assert_eq!(err(&c("1.0.0"), Command::Gc).code(), code::INCOMPATIBLE_VERSION);
        assert_eq!(err(&c("1.0.0"), Command::Status).code(), code::INCOMPATIBLE_VERSION);
        assert!(parse_netconf(c("1.1.0").as_bytes(), Command::Gc).is_ok());
    }

    #[test]
    fn gc_attachments() {
        let c = parse_netconf(
            br#"{"cniVersion":"1.1.0","name":"n","type":"berth-cni","ipam":{"subnet":"10.0.0.0/24"},
               "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
            Command::Gc,
        )
        .unwrap();
        assert!(c.valid_attachments.unwrap().contains(&Owner::new("a", "eth0")));
        let e = err(r#"{"cniVersion":"1.1.0","name":"n","type":"berth-cni","ipam":{"subnet":"10.0.0.0/24"}}"#, Command::Gc);
        assert_eq!(e, ConfigError::Missing("cni.dev/valid-attachments"));
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff_version(br#"{"cniVersion":"0.4.0"}"#).as_deref(), Some("0.4.0"));
        assert_eq!(sniff_version(b"nope"), None);
    }
}
