//! The CNI conflist the agent writes for containerd (10-berth.conflist, see docs/CONTRACTS.md).
//!
//! `render` is pure; `write_atomic` puts the file in place with a tmp file + rename (containerd
//! watches the directory and must never see a half-written file), and leaves an identical file alone.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use serde::Serialize;

/// File name of the conflist inside the CNI conf dir.
pub const FILE_NAME: &str = "10-berth.conflist";
/// Network name (also the IPAM state subdirectory).
pub const NETWORK_NAME: &str = "berth";
/// The plugin binary containerd executes.
pub const PLUGIN_TYPE: &str = "berth-cni";

/// Errors writing the conflist.
#[derive(Debug, thiserror::Error)]
pub enum CniConfError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod CIDR {0} has no host addresses")]
    NoHosts(IpNetwork),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfList<'a> {
    cni_version: &'a str,
    name: &'a str,
    plugins: [Plugin<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Plugin<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    bridge: &'a str,
    mtu: u32,
    is_gateway: bool,
    hairpin_mode: bool,
    ipam: Ipam<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Ipam<'a> {
    subnet: String,
    gateway: String,
    data_dir: &'a str,
}

/// The first host address of `cidr` (network address + 1), used as the bridge gateway.
pub fn gateway(cidr: IpNetwork) -> Result<IpAddr, CniConfError> {
    match cidr {
        IpNetwork::V4(n) => {
            if n.prefix() >= 31 {
                return Err(CniConfError::NoHosts(cidr));
            }
            Ok(IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 1)))
        }
        IpNetwork::V6(n) => {
            if n.prefix() >= 127 {
                return Err(CniConfError::NoHosts(cidr));
            }
            Ok(IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + 1)))
        }
    }
}

/// Render the conflist for `pod_cidr` (normalised to its network address). Pure.
pub fn render(
    network_name: &str,
    bridge: &str,
    mtu: u32,
    pod_cidr: IpNetwork,
    data_dir: &Path,
) -> Result<String, CniConfError> {
    let gw = gateway(pod_cidr)?;
    let subnet = IpNetwork::new(pod_cidr.network(), pod_cidr.prefix()).expect("prefix is valid");
    let data_dir = data_dir.to_string_lossy();
    let conf = ConfList {
        cni_version: "1.0.0",
        name: network_name,
        plugins: [Plugin {
            kind: PLUGIN_TYPE,
            bridge,
            mtu,
            is_gateway: true,
            hairpin_mode: true,
            ipam: Ipam {
                subnet: subnet.to_string(),
                gateway: gw.to_string(),
                data_dir: &data_dir,
            },
        }],
    };
    let mut s = serde_json::to_string_pretty(&conf).expect("plain structs serialize");
    s.push('\n');
    Ok(s)
}

/// Write `contents` to `<dir>/10-berth.conflist` atomically. Returns `false` (and touches nothing)
/// when the file already holds exactly `contents`.
pub fn write_atomic(dir: &Path, contents: &str) -> Result<bool, CniConfError> {
    let path = dir.join(FILE_NAME);
    if let Ok(existing) = std::fs::read(&path) {
        if existing == contents.as_bytes() {
            return Ok(false);
        }
    }
    fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CniConfError {
        let path = path.to_owned();
        move |source| CniConfError::Io { op, path, source }
    }
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    crate::fsutil::write_atomic(&path, contents.as_bytes(), 0o644).map_err(io("writing", &path))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_contract_conflist() {
        let s = render(
            "berth",
            "berth0",
            1500,
            "10.244.0.0/24".parse().unwrap(),
            Path::new("/var/lib/cni/networks"),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let want = serde_json::json!({"cniVersion":"1.0.0","name":"berth","plugins":[{"type":"berth-cni",
            "bridge":"berth0","mtu":1500,"isGateway":true,"hairpinMode":true,"ipam":{"subnet":"10.244.0.0/24",
            "gateway":"10.244.0.1","dataDir":"/var/lib/cni/networks"}}]});
        assert_eq!(v, want);
        assert!(s.ends_with('\n'));
        // Field order follows the contract (cniVersion first, type first in the plugin).
        assert!(s.find("cniVersion").unwrap() < s.find("plugins").unwrap());
    }

    #[test]
    fn gateway_is_first_host_and_cidr_is_normalised() {
        let s = render(
            "n",
            "br",
            1450,
            "10.244.3.77/24".parse().unwrap(),
            Path::new("/d"),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["plugins"][0]["ipam"]["subnet"], "10.244.3.0/24");
        assert_eq!(v["plugins"][0]["ipam"]["gateway"], "10.244.3.1");
        assert_eq!(v["plugins"][0]["mtu"], 1450);
        assert_eq!(
            gateway("10.1.0.0/16".parse().unwrap()).unwrap().to_string(),
            "10.1.0.1"
        );
        assert_eq!(
            gateway("fd00:10:244::/64".parse().unwrap())
                .unwrap()
                .to_string(),
            "fd00:10:244::1"
        );
        assert!(gateway("10.0.0.0/31".parse().unwrap()).is_err());
        assert!(gateway("10.0.0.5/32".parse().unwrap()).is_err());
    }

    #[test]
    fn write_atomic_skips_identical() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("net.d");
        assert!(write_atomic(&sub, "a\n").unwrap());
        let path = sub.join(FILE_NAME);
        let m1 = std::fs::metadata(&path).unwrap();
        assert!(!write_atomic(&sub, "a\n").unwrap());
        let m2 = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            m1.ino(),
            m2.ino(),
            "identical contents must not be rewritten"
        );
        assert!(write_atomic(&sub, "b\n").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
        let names: Vec<_> = std::fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from(FILE_NAME)],
            "no tmp file left behind"
        );
    }
}
