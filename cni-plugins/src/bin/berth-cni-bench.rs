//! ADD / DEL latency of berth-cni beside the reference plugins (bridge + host-local from
//! containernetworking-plugins) in the same run, same namespaces, same conditions.
//!
//! Needs root. Everything happens in two network namespaces it creates and deletes
//! (`berth-cni-bench-<pid>-node` where the plugins run, `...-pod` as the container).
//!
//! Usage: berth-cni-bench [--iterations N] [--berth-cni PATH] [--ref-dir DIR]
//! Build with `cargo build --release -p berth-cni` and run target/release/berth-cni-bench.

use std::path::PathBuf;
use std::time::Duration;

use berth_cni::harness::{is_root, percentile, run_plugin, Invocation, NetnsGuard};
use serde_json::json;

struct Plugin {
    label: &'static str,
    bin: PathBuf,
    cni_path: String,
    conf: Vec<u8>,
    add: Vec<Duration>,
    del: Vec<Duration>,
    both: Vec<Duration>,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    let iterations: usize = arg(&args, "--iterations").and_then(|s| s.parse().ok()).unwrap_or(100);
    let ours = arg(&args, "--berth-cni").map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_exe().expect("current exe").with_file_name("berth-cni")
    });
    let ref_dir = arg(&args, "--ref-dir").unwrap_or_else(|| "/usr/lib/cni".into());
    let data = tempfile_dir();
    let node = NetnsGuard::new(format!("berth-cni-bench-{}-node", std::process::id())).expect("create node netns");
    let pod = NetnsGuard::new(format!("berth-cni-bench-{}-pod", std::process::id())).expect("create pod netns");

    let mut plugins = [
        Plugin {
            label: "berth-cni",
            bin: ours.clone(),
            cni_path: ours.parent().unwrap().display().to_string(),
            conf: serde_json::to_vec(&json!({"cniVersion": "1.0.0", "name": "berth", "type": "berth-cni",
                "bridge": "berth0", "mtu": 1500, "isGateway": true, "hairpinMode": true,
                "ipam": {"subnet": "10.244.0.0/24", "gateway": "10.244.0.1", "dataDir": data.join("berth")}}))
            .unwrap(),
            add: vec![],
            del: vec![],
            both: vec![],
        },
        Plugin {
            label: "reference bridge+host-local",
            bin: PathBuf::from(&ref_dir).join("bridge"),
            cni_path: ref_dir.clone(),
            conf: serde_json::to_vec(&json!({"cniVersion": "1.0.0", "name": "ref", "type": "bridge",
                "bridge": "cni0", "mtu": 1500, "isGateway": true, "hairpinMode": true,
                "ipam": {"type": "host-local", "subnet": "10.245.0.0/24", "gateway": "10.245.0.1",
                         "dataDir": data.join("ref")}}))
            .unwrap(),
            add: vec![],
            del: vec![],
            both: vec![],
        },
    ];
    let warmup = 5;
    println!("berth-cni-bench: {iterations} ADD+DEL per plugin (+{warmup} warm-up), interleaved, plugin exec'd inside a node netns");
    for i in 0..iterations + warmup {
        for p in plugins.iter_mut() {
            let id = format!("bench{i}");
            let pod_path = pod.path();
            let inv = |command| Invocation {
                command,
                container_id: &id,
                netns: &pod_path,
                ifname: "eth0",
                cni_path: &p.cni_path,
                stdin: &p.conf,
            };
            let add = run_plugin(&p.bin, &node.path(), &inv("ADD")).expect("spawn");
            assert_eq!(add.exit_code, 0, "{} ADD failed: {} {}", p.label, add.stdout, add.stderr);
            let del = run_plugin(&p.bin, &node.path(), &inv("DEL")).expect("spawn");
            assert_eq!(del.exit_code, 0, "{} DEL failed: {} {}", p.label, del.stdout, del.stderr);
            if i >= warmup {
                p.add.push(add.elapsed);
                p.del.push(del.elapsed);
                p.both.push(add.elapsed + del.elapsed);
            }
        }
    }
    println!();
    println!("| plugin | ADD p50 ms | ADD p99 ms | DEL p50 ms | DEL p99 ms | ADD+DEL p50 ms | ADD+DEL p99 ms |");
    println!("|---|---|---|---|---|---|---|");
    for p in plugins.iter_mut() {
        p.add.sort();
        p.del.sort();
        p.both.sort();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            p.label,
            ms(percentile(&p.add, 50.0)),
            ms(percentile(&p.add, 99.0)),
            ms(percentile(&p.del, 50.0)),
            ms(percentile(&p.del, 99.0)),
            ms(percentile(&p.both, 50.0)),
            ms(percentile(&p.both, 99.0)),
        );
    }
    let ratio = |f: fn(&Plugin) -> &Vec<Duration>| {
        percentile(f(&plugins[1]), 50.0).as_secs_f64() / percentile(f(&plugins[0]), 50.0).as_secs_f64()
    };
    println!();
    println!(
        "speed-up at p50 (reference / berth-cni): ADD {:.1}x, DEL {:.1}x, ADD+DEL {:.1}x",
        ratio(|p| &p.add),
        ratio(|p| &p.del),
        ratio(|p| &p.both)
    );
    drop(pod);
    drop(node);
    let _ = std::fs::remove_dir_all(&data);
}

/// A private scratch directory (no tempfile dependency outside tests).
fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("berth-cni-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}
