//! Issue 6 §5: the systemd units pass `systemd-analyze verify` (in a scratch root, systemd is never
//! started), and the .deb built by packaging/deb.sh (cargo-deb) holds the binaries, the units, the
//! commented config and sane maintainer scripts (unpacked with dpkg-deb into a scratch dir).
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 2] = ["berth-agent.service", "berth-control-plane.service"];

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A tool on PATH, or None after saying why the test is skipped (fails under CI=true).
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(!ci(), "{name} is missing (Debian package {package}; tests/run.sh installs BERTH_TEST_PKGS)");
        eprintln!("SKIP: {name} not installed (Debian package {package})");
    }
    found
}

/// A scratch root for `systemd-analyze verify --root`: the host's unit directory (for the
/// targets our units refer to), /bin/mkdir, our units and `bin_dir`'s binaries as /usr/bin.
fn scratch_root(dir: &Path, units: &Path, bins: &[(&str, PathBuf)]) -> PathBuf {
    let root = dir.join("root");
    let unit_dir = root.join("lib/systemd/system");
    std::fs::create_dir_all(&unit_dir).unwrap();
    for e in std::fs::read_dir("/lib/systemd/system").unwrap().flatten() {
        let to = unit_dir.join(e.file_name());
        if e.file_type().unwrap().is_symlink() {
            let _ = std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &to);
        } else if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
    for u in UNITS {
        std::fs::copy(units.join(u), unit_dir.join(u)).unwrap();
    }
    for d in ["bin", "usr/bin"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/mkdir", root.join("bin/mkdir")).unwrap();
    for (name, src) in bins {
        std::fs::copy(src, root.join("usr/bin").join(name)).unwrap();
    }
    root
}

fn verify(root: &Path) -> std::process::Output {
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").arg("--man=no").arg(format!("--root={}", root.display()));
    for u in UNITS {
        cmd.arg(root.join("lib/systemd/system").join(u));
    }
    cmd.env("SYSTEMD_LOG_LEVEL", "notice");
    common::run(&mut cmd)
}

/// `key=value` lines of a unit file's `[section]`.
fn unit_values(text: &str, section: &str, key: &str) -> Vec<String> {
    let mut current = "";
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line;
        } else if current == format!("[{section}]") {
            if let Some(v) = line.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
                out.push(v.to_owned());
            }
        }
    }
    out
}

fn check_unit_semantics(dir: &Path) {
    let agent = std::fs::read_to_string(dir.join("berth-agent.service")).unwrap();
    assert_eq!(unit_values(&agent, "Service", "Type"), ["notify"]);
    assert_eq!(unit_values(&agent, "Service", "Restart"), ["always"]);
    assert_eq!(unit_values(&agent, "Service", "KillMode"), ["process"], "pods must survive an agent restart");
    assert!(unit_values(&agent, "Unit", "After").iter().any(|v| v.split_whitespace().any(|u| u == "containerd.service")));
    assert!(unit_values(&agent, "Service", "ExecStart")[0].starts_with("/usr/bin/berth agent"));
    let cp = std::fs::read_to_string(dir.join("berth-control-plane.service")).unwrap();
    assert_eq!(unit_values(&cp, "Service", "Type"), ["notify"]);
    assert_eq!(unit_values(&cp, "Service", "Restart"), ["always"]);
    assert_eq!(unit_values(&cp, "Service", "KillMode"), ["process"]);
    assert!(unit_values(&cp, "Service", "ExecStart")[0].starts_with("/usr/bin/berth-control-plane"));
}

#[test]
fn systemd_units_verify() {
    if tool("systemd-analyze", "systemd").is_none() {
        return;
    }
    let units = common::workspace_root().join("systemd");
    check_unit_semantics(&units);
    let dir = tempfile::tempdir().unwrap();
    let bins = [
        ("berth", PathBuf::from(env!("CARGO_BIN_EXE_berth"))),
        ("berth-control-plane", PathBuf::from(env!("CARGO_BIN_EXE_berth-control-plane"))),
    ];
    let root = scratch_root(dir.path(), &units, &bins);
    let out = verify(&root);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The check can fail: without the binaries it must.
    std::fs::remove_file(root.join("usr/bin/berth")).unwrap();
    let out = verify(&root);
    assert!(!out.status.success(), "verify passed although /usr/bin/berth is missing");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/usr/bin/berth"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Builds the .deb with packaging/deb.sh from the binaries this test run already has (no second
/// build), unpacks it, and checks it.
#[test]
fn deb_package_contents() {
    if tool("dpkg-deb", "dpkg").is_none() {
        return;
    }
    let bin_dir = common::target_profile_dir();
    let cni = common::berth_cni_bin();
    assert!(cni.starts_with(&bin_dir), "{} outside {}", cni.display(), bin_dir.display());
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out = common::run(
        Command::new("bash")
            .arg(common::workspace_root().join("packaging/deb.sh"))
            .arg("--from")
            .arg(&bin_dir)
            .arg("--output")
            .arg(&out_dir),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("cargo-deb unavailable") && !ci() {
        eprintln!("SKIP: {stderr}");
        return;
    }
    assert!(out.status.success(), "packaging/deb.sh failed:\n{}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    let debs: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = &debs[0];
    eprintln!("built {} ({} KiB)", deb.display(), std::fs::metadata(deb).unwrap().len() / 1024);

    let root = dir.path().join("root");
    let ctrl = dir.path().join("control");
    common::run_ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
    common::run_ok(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&ctrl));

    // Files.
    use std::os::unix::fs::PermissionsExt;
    for (path, exec) in [
        ("usr/bin/berth", true),
        ("usr/bin/berth-control-plane", true),
        ("opt/cni/bin/berth-cni", true),
        ("lib/systemd/system/berth-agent.service", false),
        ("lib/systemd/system/berth-control-plane.service", false),
        ("etc/berth/config.toml", false),
    ] {
        let m = std::fs::metadata(root.join(path)).unwrap_or_else(|e| panic!("{path} missing from the package: {e}"));
        assert_eq!(m.permissions().mode() & 0o111 != 0, exec, "{path} mode {:o}", m.permissions().mode());
    }
    for u in UNITS {
        assert_eq!(
            std::fs::read(root.join("lib/systemd/system").join(u)).unwrap(),
            std::fs::read(common::workspace_root().join("systemd").join(u)).unwrap(),
            "{u} differs from systemd/{u}"
        );
    }
    let version = common::run_ok(Command::new(root.join("usr/bin/berth")).arg("--version"));
    assert!(version.starts_with("berth "), "{version}");
    let help = common::run_ok(Command::new(root.join("usr/bin/berth")).args(["join", "--help"]));
    assert!(help.contains("--discovery-token-ca-cert-hash"), "{help}");
    // The config is valid TOML and every setting in it is commented out.
    let config = std::fs::read_to_string(root.join("etc/berth/config.toml")).unwrap();
    let parsed: toml::Table = toml::from_str(&config).expect("config.toml parses");
    assert!(parsed.values().all(|v| v.as_table().is_some_and(|t| t.is_empty())), "{parsed:?}");
    assert!(config.lines().filter(|l| l.contains(" = ")).all(|l| l.trim_start().starts_with('#')));

    // Control data and maintainer scripts.
    let control = std::fs::read_to_string(ctrl.join("control")).unwrap();
    assert!(control.lines().any(|l| l == "Package: berth"), "{control}");
    let depends = control.lines().find_map(|l| l.strip_prefix("Depends: ")).unwrap_or_default();
    for d in ["containerd", "iproute2", "nftables"] {
        assert!(depends.contains(d), "Depends lacks {d}: {depends}");
    }
    let conffiles = std::fs::read_to_string(ctrl.join("conffiles")).unwrap();
    assert!(conffiles.lines().any(|l| l == "/etc/berth/config.toml"), "{conffiles}");
    for script in ["postinst", "prerm", "postrm"] {
        let p = ctrl.join(script);
        let m = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{script} missing: {e}"));
        assert!(m.permissions().mode() & 0o111 != 0, "{script} not executable");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("#!/bin/sh"), "{script}: {text}");
        assert!(text.contains("set -e"), "{script}");
        common::run_ok(Command::new("sh").arg("-n").arg(&p));
        // Never enables or starts a unit on install: `berth join` does that.
        assert!(!text.contains("systemctl enable") && !text.contains("systemctl start"), "{script}: {text}");
    }
    let postinst = std::fs::read_to_string(ctrl.join("postinst")).unwrap();
    assert!(postinst.contains("ln -s berth-cni /opt/cni/bin/loopback"), "{postinst}");

    // The packaged units verify against the packaged binaries.
    if tool("systemd-analyze", "systemd").is_some() {
        let bins = [
            ("berth", root.join("usr/bin/berth")),
            ("berth-control-plane", root.join("usr/bin/berth-control-plane")),
        ];
        let vroot = scratch_root(&dir.path().join("verify"), &root.join("lib/systemd/system"), &bins);
        let out = verify(&vroot);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
