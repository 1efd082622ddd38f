//! `berth reset`: undo what `berth join` and the agent set up on this host (kubeadm reset's
//! counterpart): the node credentials and agent state, the CNI conflist and IPAM state, the
//! systemd settings file, our bridge and our nftables tables. Everything is looked for at the
//! paths given (tests pass temp dirs), removed only when present, and reported. Best effort: every
//! step is tried and the failures are returned together.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::agent::cni_conf;

/// Where reset looks (defaults are the agent's).
#[derive(clap::Args, Debug, Clone)]
pub struct ResetArgs {
    /// Agent state directory (join wrote kubeconfigs/node.conf and agent/ there).
    #[arg(long, default_value = "/var/lib/berth")]
    pub state_dir: PathBuf,
    /// CNI conf dir holding 10-berth.conflist.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// IPAM state directory (berth-cni keeps <dir>/berth/).
    #[arg(long, default_value = "/var/lib/cni/networks")]
    pub cni_data_dir: PathBuf,
    /// The settings file join writes for the systemd unit.
    #[arg(long, default_value = super::SYSTEMD_ENV_FILE)]
    pub env_file: PathBuf,
    /// Our bridge.
    #[arg(long, default_value = "berth0")]
    pub bridge: String,
    /// Leave links and nftables alone.
    #[arg(long)]
    pub skip_network: bool,
}

/// The files and directories reset removes, in order. Pure.
pub fn file_targets(a: &ResetArgs) -> Vec<PathBuf> {
    vec![
        super::node_kubeconfig_path(&a.state_dir),
        super::agent_state_dir(&a.state_dir),
        a.cni_conf_dir.join(cni_conf::FILE_NAME),
        a.cni_data_dir.join(cni_conf::NETWORK_NAME),
        a.env_file.clone(),
    ]
}

/// Our links (the bridge and the VXLAN device of the overlay) and nftables tables.
pub fn network_targets(a: &ResetArgs) -> (Vec<String>, Vec<(&'static str, &'static str)>) {
    (vec![a.bridge.clone(), "berth.1".to_owned()], vec![("ip", "berth"), ("ip6", "berth")])
}

fn remove_path(p: &Path) -> std::io::Result<bool> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map(|()| true),
        Ok(_) => std::fs::remove_file(p).map(|()| true),
    }
}

fn quiet(cmd: &mut Command) -> std::io::Result<std::process::Output> {
    cmd.stdin(std::process::Stdio::null()).output()
}

/// Run the reset; returns what was removed (one line each) or every failure.
pub fn reset(a: &ResetArgs) -> Result<Vec<String>, Vec<String>> {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    if super::systemd_is_pid1() {
        match quiet(Command::new("systemctl").args(["disable", "--now", super::SYSTEMD_UNIT])) {
            Ok(o) if o.status.success() => removed.push(format!("stopped and disabled {}", super::SYSTEMD_UNIT)),
            Ok(o) => tracing::debug!(stderr = %String::from_utf8_lossy(&o.stderr), "systemctl disable"),
            Err(e) => errors.push(format!("systemctl disable {}: {e}", super::SYSTEMD_UNIT)),
        }
    }
    for p in file_targets(a) {
        match remove_path(&p) {
            Ok(true) => removed.push(format!("removed {}", p.display())),
            Ok(false) => {}
            Err(e) => errors.push(format!("removing {}: {e}", p.display())),
        }
    }
    if !a.skip_network {
        let (links, tables) = network_targets(a);
        for link in links {
            let present = quiet(Command::new("ip").args(["link", "show", "dev", &link])).is_ok_and(|o| o.status.success());
            if !present {
                continue;
            }
            match quiet(Command::new("ip").args(["link", "delete", "dev", &link])) {
                Ok(o) if o.status.success() => removed.push(format!("deleted link {link}")),
                Ok(o) => errors.push(format!("deleting link {link}: {}", String::from_utf8_lossy(&o.stderr).trim())),
                Err(e) => errors.push(format!("ip link delete {link}: {e}")),
            }
        }
        for (family, table) in tables {
            let present = quiet(Command::new("nft").args(["list", "table", family, table])).is_ok_and(|o| o.status.success());
            if !present {
                continue;
            }
            match quiet(Command::new("nft").args(["delete", "table", family, table])) {
                Ok(o) if o.status.success() => removed.push(format!("deleted nftables table {family} {table}")),
                Ok(o) => errors.push(format!("deleting nftables table {family} {table}: {}", String::from_utf8_lossy(&o.stderr).trim())),
                Err(e) => errors.push(format!("nft delete table {family} {table}: {e}")),
            }
        }
    }
    if errors.is_empty() {
        Ok(removed)
    } else {
        errors.splice(0..0, removed.into_iter().map(|r| format!("(done) {r}")));
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(root: &Path) -> ResetArgs {
        ResetArgs {
            state_dir: root.join("state"),
            cni_conf_dir: root.join("net.d"),
            cni_data_dir: root.join("networks"),
            env_file: root.join("default/berth-agent"),
            bridge: "berth0".into(),
            skip_network: true,
        }
    }

    #[test]
    fn removes_only_what_is_ours_and_present() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(dir.path());
        let kc = super::super::node_kubeconfig_path(&a.state_dir);
        std::fs::create_dir_all(kc.parent().unwrap()).unwrap();
        std::fs::write(&kc, "x").unwrap();
        let agent = super::super::agent_state_dir(&a.state_dir).join("pki");
        std::fs::create_dir_all(&agent).unwrap();
        std::fs::write(agent.join("kubelet.key"), "k").unwrap();
        std::fs::create_dir_all(&a.cni_conf_dir).unwrap();
        std::fs::write(a.cni_conf_dir.join(cni_conf::FILE_NAME), "{}").unwrap();
        let other = a.cni_conf_dir.join("99-other.conflist");
        std::fs::write(&other, "{}").unwrap();
        let ca = a.state_dir.join("pki/ca.crt");
        std::fs::create_dir_all(ca.parent().unwrap()).unwrap();
        std::fs::write(&ca, "ca").unwrap();

        let removed = reset(&a).unwrap();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(removed[0].contains("node.conf"), "{removed:?}");
        assert!(!kc.exists() && !agent.exists() && !a.cni_conf_dir.join(cni_conf::FILE_NAME).exists());
        assert!(other.exists(), "another network's conflist is not ours");
        assert!(ca.exists(), "the state dir's control-plane PKI is not join's");
        // A second reset finds nothing.
        assert_eq!(reset(&a).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn targets() {
        let a = args(Path::new("/r"));
        let t = file_targets(&a);
        assert!(t.contains(&PathBuf::from("/r/net.d/10-berth.conflist")));
        assert!(t.contains(&PathBuf::from("/r/networks/berth")));
        let (links, tables) = network_targets(&a);
        assert_eq!(links[0], "berth0");
        assert!(tables.contains(&("ip", "berth")));
    }
}
