//! berth-cni: a CNI plugin (spec 0.3.0 - 1.1.0) for containerd's CRI plugin.
//!
//! Types handled by the one binary: `berth-cni` (bridge + veth + host-local style IPAM) and
//! `loopback`. Pure parts: [`config`], [`version`], [`result`], [`ipam`] (over an abstract
//! store), [`naming`]; I/O: [`netlink`], [`ipam::DiskStore`]; the commands: [`bridge`],
//! [`loopback`]; [`run`] dispatches one invocation.

pub mod bridge;
pub mod config;
pub mod error;
pub mod harness;
pub mod ipam;
pub mod loopback;
pub mod naming;
pub mod netlink;
pub mod result;
pub mod version;

use serde_json::json;

use config::{Command, Plugin};
use error::{code, CniError};
use version::CniVersion;

/// What the binary prints on stdout and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub exit_code: i32,
}

fn error_output(e: &CniError, version: &str) -> Output {
    let mut stdout = serde_json::to_vec(&e.to_json(version)).expect("json");
    stdout.push(b'\n');
    Output { stdout, exit_code: 1 }
}

/// The version to tag an error with: the input's, when it is one we speak.
fn error_version(stdin: &[u8]) -> &'static str {
    config::sniff_version(stdin)
        .and_then(|v| CniVersion::parse(&v))
        .map_or(version::LATEST, CniVersion::as_str)
}

/// One invocation: environment through `get_env`, network config in `stdin`.
pub fn run(get_env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Output {
    let env = match config::parse_env(get_env) {
        Ok(e) => e,
        Err(e) => return error_output(&e.into(), error_version(stdin)),
    };
    if env.command == Command::Version {
        let v = config::sniff_version(stdin).unwrap_or_else(|| version::LATEST.to_string());
        let mut stdout = serde_json::to_vec(&json!({"cniVersion": v, "supportedVersions": version::SUPPORTED})).expect("json");
        stdout.push(b'\n');
        return Output { stdout, exit_code: 0 };
    }
    let conf = match config::parse_netconf(stdin, env.command) {
        Ok(c) => c,
        Err(e) => return error_output(&e.into(), error_version(stdin)),
    };
    let ver = conf.version;
    let rt = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
        Ok(rt) => rt,
        Err(e) => return error_output(&CniError::new(code::IO_FAILURE, "cannot start runtime", e.to_string()), ver.as_str()),
    };
    let res = rt.block_on(async {
        match (&conf.plugin, env.command) {
            (Plugin::Bridge(b), Command::Add) => bridge::add(&env, &conf, b).await.map(Some),
            (Plugin::Bridge(b), Command::Del) => bridge::del(&env, b).await.map(|_| None),
            (Plugin::Bridge(b), Command::Check) => bridge::check(&env, &conf, b).await.map(|_| None),
            (Plugin::Bridge(b), Command::Gc) => bridge::gc(&conf, b).map(|_| None),
            (Plugin::Bridge(b), Command::Status) => bridge::status(b).map(|_| None),
            (Plugin::Loopback, Command::Add) => loopback::add(&env, &conf).await.map(Some),
            (Plugin::Loopback, Command::Del) => loopback::del(&env).await.map(|_| None),
            (Plugin::Loopback, Command::Check) => loopback::check(&env).await.map(|_| None),
            (Plugin::Loopback, Command::Gc | Command::Status) => Ok(None),
            (_, Command::Version) => unreachable!("handled above"),
        }
    });
    match res {
        Ok(Some(result)) => {
            let mut stdout = serde_json::to_vec(&result.render(ver)).expect("json");
            stdout.push(b'\n');
            Output { stdout, exit_code: 0 }
        }
        Ok(None) => Output { stdout: Vec::new(), exit_code: 0 },
        Err(e) => error_output(&e, ver.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run_with(env: &[(&str, &str)], stdin: &str) -> (serde_json::Value, i32) {
        let m: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let out = run(|k| m.get(k).cloned(), stdin.as_bytes());
        let v = if out.stdout.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&out.stdout).unwrap() };
        (v, out.exit_code)
    }

    #[test]
    fn version_command() {
        let (v, rc) = run_with(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
        assert_eq!(rc, 0);
        assert_eq!(v, json!({"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}));
        let (v, rc) = run_with(&[("CNI_COMMAND", "VERSION")], "");
        assert_eq!(rc, 0);
        assert_eq!(v["cniVersion"], json!("1.1.0"));
    }

    #[test]
    fn errors_are_json_with_exit_1() {
        let (v, rc) = run_with(&[], r#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(rc, 1);
        assert_eq!(v["code"], json!(4));
        assert_eq!(v["cniVersion"], json!("0.4.0"));
        let env = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_NETNS", "/nonexistent/ns"), ("CNI_IFNAME", "eth0")];
        let (v, rc) = run_with(&env, "{not json");
        assert_eq!((v["code"].clone(), rc), (json!(6), 1));
        assert_eq!(v["cniVersion"], json!("1.1.0"));
        let (v, _) = run_with(&env, r#"{"cniVersion":"1.0.0","name":"n","type":"berth-cni"}"#);
        assert_eq!(v["code"], json!(7));
        assert!(v["details"].as_str().unwrap().contains("ipam"));
        let (v, _) = run_with(&env, r#"{"cniVersion":"9.9.9","name":"n","type":"berth-cni"}"#);
        assert_eq!(v["code"], json!(1));
    }

    #[test]
    fn add_with_missing_netns_does_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let conf = format!(
            r#"{{"cniVersion":"1.0.0","name":"n","type":"berth-cni","ipam":{{"subnet":"10.9.0.0/24","dataDir":"{}"}}}}"#,
            tmp.path().display()
        );
        let env = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_NETNS", "/nonexistent/ns"), ("CNI_IFNAME", "eth0")];
        let (v, rc) = run_with(&env, &conf);
        assert_eq!(rc, 1);
        assert_eq!(v["code"], json!(3));
        assert!(!tmp.path().join("n").exists(), "no IPAM state written before the netns was found");
    }

    #[test]
    fn gc_and_status_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("n");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("10.9.0.2"), "keep\neth0").unwrap();
        std::fs::write(dir.join("10.9.0.3"), "gone\neth0").unwrap();
        let conf = format!(
            r#"{{"cniVersion":"1.1.0","name":"n","type":"berth-cni","ipam":{{"subnet":"10.9.0.0/24","dataDir":"{}"}},
               "cni.dev/valid-attachments":[{{"containerID":"keep","ifname":"eth0"}}]}}"#,
            tmp.path().display()
        );
        let (v, rc) = run_with(&[("CNI_COMMAND", "GC")], &conf);
        assert_eq!((v, rc), (serde_json::Value::Null, 0));
        assert!(dir.join("10.9.0.2").exists());
        assert!(!dir.join("10.9.0.3").exists());
        let (v, rc) = run_with(&[("CNI_COMMAND", "STATUS")], &conf);
        assert_eq!((v, rc), (serde_json::Value::Null, 0));
        // A full range makes STATUS report 50.
        let small = format!(
            r#"{{"cniVersion":"1.1.0","name":"s","type":"berth-cni","ipam":{{"subnet":"10.9.0.0/30","dataDir":"{}"}}}}"#,
            tmp.path().display()
        );
        std::fs::create_dir_all(tmp.path().join("s")).unwrap();
        std::fs::write(tmp.path().join("s").join("10.9.0.2"), "x\neth0").unwrap();
        let (v, rc) = run_with(&[("CNI_COMMAND", "STATUS")], &small);
        assert_eq!(rc, 1);
        assert_eq!(v["code"], json!(50));
    }
}
