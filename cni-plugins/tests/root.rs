//! Root-only end-to-end tests of the built `berth-cni` binary. Each test makes its own "node"
//! network namespace (where the plugin runs, so the bridge and host veths live there) and "pod"
//! namespaces; all are deleted on drop, also on failure. Without root they print
//! "skipped: needs root" and pass.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_cni::harness::{is_root, run_plugin, Invocation, NetnsGuard, Ran};
use berth_cni::naming::host_veth_name;
use serde_json::{json, Value};

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth-cni"))
}

fn ns_name(tag: &str) -> String {
    format!("berth-cni-test-{}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst), tag)
}

macro_rules! require_root {
    () => {
        if !is_root() {
            println!("skipped: needs root");
            return;
        }
    };
}

struct Node {
    ns: NetnsGuard,
    data: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        Node { ns: NetnsGuard::new(ns_name("node")).unwrap(), data: tempfile::tempdir().unwrap() }
    }

    fn conf(&self, version: &str, subnet: &str) -> Value {
        json!({"cniVersion": version, "name": "berth", "type": "berth-cni", "bridge": "berth0", "mtu": 1500,
               "isGateway": true, "hairpinMode": true, "runtimeConfig": {"portMappings": []},
               "ipam": {"subnet": subnet, "dataDir": self.data.path()}})
    }

    fn store(&self) -> PathBuf {
        self.data.path().join("berth")
    }

    fn ip_files(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.store()) else { return vec![] };
        rd.filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    fn run(&self, command: &str, id: &str, netns: &str, ifname: &str, conf: &Value) -> Ran {
        let stdin = serde_json::to_vec(conf).unwrap();
        run_plugin(
            &bin(),
            &self.ns.path(),
            &Invocation { command, container_id: id, netns, ifname, cni_path: "/opt/cni/bin", stdin: &stdin },
        )
        .unwrap()
    }

    fn link_exists(&self, name: &str) -> bool {
        self.ns.exec(&["ip", "link", "show", name]).0
    }
}

fn host_has_link(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn ping(from: &NetnsGuard, ip: &str) -> bool {
    from.exec(&["busybox", "ping", "-c1", "-W1", ip]).0
}

#[test]
fn add_check_del_1_0_0() {
    require_root!();
    let node = Node::new();
    let pod = NetnsGuard::new(ns_name("pod")).unwrap();
    let conf = node.conf("1.0.0", "10.244.0.0/24");
    let id = "0123456789abcdef";
    let add = node.run("ADD", id, &pod.path(), "eth0", &conf);
    assert_eq!(add.exit_code, 0, "{add:?}");
    let r = add.json();
    let veth = host_veth_name(id, "eth0");
    assert_eq!(r["cniVersion"], json!("1.0.0"));
    let ifaces = r["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 3);
    assert_eq!(ifaces[0]["name"], json!("berth0"));
    assert_eq!(ifaces[1]["name"], json!(veth));
    assert!(ifaces[1].get("sandbox").is_none());
    assert_eq!(ifaces[2]["name"], json!("eth0"));
    assert_eq!(ifaces[2]["sandbox"], json!(pod.path()));
    for i in ifaces {
        assert_eq!(i["mac"].as_str().unwrap().len(), 17);
        assert!(i.get("mtu").is_none(), "mtu is 1.1.0 only");
    }
    assert_eq!(r["ips"], json!([{"address": "10.244.0.2/24", "gateway": "10.244.0.1", "interface": 2}]));
    assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}]));
    assert_eq!(r["dns"], json!({}));

    // Configured: address and default route in the pod, bridge with the gateway in the node,
    // nothing in the machine's own namespace.
    let (_, addrs) = pod.exec(&["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("10.244.0.2/24"), "{addrs}");
    let (_, routes) = pod.exec(&["ip", "route"]);
    assert!(routes.contains("default via 10.244.0.1 dev eth0"), "{routes}");
    let (_, br) = node.ns.exec(&["ip", "-o", "addr", "show", "dev", "berth0"]);
    assert!(br.contains("10.244.0.1/24"), "{br}");
    let (_, hp) = node.ns.exec(&["bridge", "-d", "link", "show", "dev", &veth]);
    assert!(hp.contains("hairpin on"), "{hp}");
    assert!(!host_has_link(&veth));
    assert!(ping(&node.ns, "10.244.0.2"), "node -> pod ping");
    assert_eq!(std::fs::read_to_string(node.store().join("10.244.0.2")).unwrap(), format!("{id}\neth0"));

    // CHECK with prevResult passes.
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = r.clone();
    let check = node.run("CHECK", id, &pod.path(), "eth0", &check_conf);
    assert_eq!(check.exit_code, 0, "{check:?}");
    assert!(check.stdout.is_empty());

    // CHECK notices a missing address.
    pod.exec(&["ip", "addr", "del", "10.244.0.2/24", "dev", "eth0"]);
    let check = node.run("CHECK", id, &pod.path(), "eth0", &check_conf);
    assert_eq!(check.exit_code, 1);
    assert_eq!(check.json()["code"], json!(100));

    // DEL removes everything, twice is fine.
    for _ in 0..2 {
        let del = node.run("DEL", id, &pod.path(), "eth0", &check_conf);
        assert_eq!(del.exit_code, 0, "{del:?}");
        assert!(del.stdout.is_empty());
        assert!(!node.link_exists(&veth));
        assert!(!pod.exec(&["ip", "link", "show", "eth0"]).0);
        assert!(node.ip_files().is_empty());
    }
    // The bridge stays (shared by all pods).
    assert!(node.link_exists("berth0"));
}

#[test]
fn result_shapes_per_version() {
    require_root!();
    let node = Node::new();
    let pod = NetnsGuard::new(ns_name("pod")).unwrap();
    for (i, v) in ["0.3.0", "0.3.1", "0.4.0", "1.1.0"].iter().enumerate() {
        let id = format!("shape{i}");
        let conf = node.conf(v, "10.244.0.0/24");
        let add = node.run("ADD", &id, &pod.path(), "eth0", &conf);
        assert_eq!(add.exit_code, 0, "{v}: {add:?}");
        let r = add.json();
        assert_eq!(r["cniVersion"], json!(v));
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
        let ip = &r["ips"][0];
        assert_eq!(ip["interface"], json!(2));
        assert_eq!(ip["gateway"], json!("10.244.0.1"));
        if v.starts_with("0.") {
            assert_eq!(ip["version"], json!("4"), "{v}");
        } else {
            assert!(ip.get("version").is_none());
            assert_eq!(r["interfaces"][2]["mtu"], json!(1500));
        }
        if *v == "0.3.0" || *v == "0.3.1" {
            // CHECK does not exist before 0.4.0.
            let check = node.run("CHECK", &id, &pod.path(), "eth0", &conf);
            assert_eq!(check.json()["code"], json!(1));
        }
        let del = node.run("DEL", &id, &pod.path(), "eth0", &conf);
        assert_eq!(del.exit_code, 0, "{del:?}");
    }
    assert!(node.ip_files().is_empty());
}

#[test]
fn loopback_up_and_down() {
    require_root!();
    let node = Node::new();
    let pod = NetnsGuard::new(ns_name("pod")).unwrap();
    let conf = json!({"cniVersion": "0.3.1", "name": "cni-loopback", "type": "loopback"});
    let add = node.run("ADD", "lo1", &pod.path(), "eth0", &conf);
    assert_eq!(add.exit_code, 0, "{add:?}");
    let r = add.json();
    assert_eq!(r["interfaces"], json!([{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": pod.path()}]));
    assert_eq!(r["ips"][0], json!({"version": "4", "interface": 0, "address": "127.0.0.1/8"}));
    let (_, lo) = pod.exec(&["ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains(",UP") || lo.contains("<LOOPBACK,UP"), "{lo}");
    assert!(ping(&pod, "127.0.0.1"));
    let mut c = conf.clone();
    c["cniVersion"] = json!("1.0.0");
    assert_eq!(node.run("CHECK", "lo1", &pod.path(), "eth0", &c).exit_code, 0);
    assert_eq!(node.run("DEL", "lo1", &pod.path(), "eth0", &conf).exit_code, 0);
    let (_, lo) = pod.exec(&["ip", "-o", "link", "show", "lo"]);
    assert!(!lo.contains("UP,"), "{lo}");
    // DEL with a missing or empty netns is fine.
    assert_eq!(node.run("DEL", "lo1", "/var/run/netns/berth-cni-test-nonexistent", "eth0", &conf).exit_code, 0);
    assert_eq!(node.run("DEL", "lo1", "", "eth0", &conf).exit_code, 0);
}

#[test]
fn concurrent_adds_get_distinct_ips() {
    require_root!();
    let node = Node::new();
    let pods: Vec<NetnsGuard> = (0..20).map(|_| NetnsGuard::new(ns_name("cpod")).unwrap()).collect();
    let conf = node.conf("1.0.0", "10.244.0.0/24");
    let results: Vec<Ran> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let node = &node;
                let conf = &conf;
                s.spawn(move || node.run("ADD", &format!("conc{i}"), &p.path(), "eth0", conf))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips = HashSet::new();
    for r in &results {
        assert_eq!(r.exit_code, 0, "{r:?}");
        ips.insert(r.json()["ips"][0]["address"].as_str().unwrap().to_string());
    }
    assert_eq!(ips.len(), 20, "{ips:?}");
    assert_eq!(node.ip_files().len(), 20);
    for ip in &ips {
        assert!(ping(&node.ns, ip.split('/').next().unwrap()), "ping {ip}");
    }
    std::thread::scope(|s| {
        for (i, p) in pods.iter().enumerate() {
            let node = &node;
            let conf = &conf;
            s.spawn(move || {
                let r = node.run("DEL", &format!("conc{i}"), &p.path(), "eth0", conf);
                assert_eq!(r.exit_code, 0, "{r:?}");
            });
        }
    });
    assert!(node.ip_files().is_empty());
}

#[test]
fn bad_input_is_a_json_error_and_leaves_nothing() {
    require_root!();
    let node = Node::new();
    let pod = NetnsGuard::new(ns_name("pod")).unwrap();
    let inv = |stdin: &[u8], id: &str| {
        run_plugin(
            &bin(),
            &node.ns.path(),
            &Invocation { command: "ADD", container_id: id, netns: &pod.path(), ifname: "eth0", cni_path: "", stdin },
        )
        .unwrap()
    };
    let r = inv(b"{\"cniVersion\":\"1.0.0\",", "bad1");
    assert_eq!(r.exit_code, 1);
    assert_eq!(r.json()["code"], json!(6));
    assert_eq!(r.json()["cniVersion"], json!("1.1.0"));
    let r = inv(br#"{"cniVersion":"1.0.0","name":"berth","type":"berth-cni","ipam":{"subnet":"nope"}}"#, "bad2");
    assert_eq!(r.exit_code, 1);
    assert_eq!(r.json()["code"], json!(7));
    assert_eq!(r.json()["cniVersion"], json!("1.0.0"));
    let r = inv(br#"{"cniVersion":"1.0.0","name":"berth","type":"berth-cni","ipam":{"subnet":"10.0.0.0/24"}}"#, "-bad");
    assert_eq!(r.json()["code"], json!(4));
    // Nothing was created.
    assert!(!node.link_exists("berth0"));
    assert!(!pod.exec(&["ip", "link", "show", "eth0"]).0);

    // Missing netns: code 3, no reservation.
    let conf = node.conf("1.0.0", "10.244.0.0/24");
    let r = node.run("ADD", "nons", "/var/run/netns/berth-cni-test-nonexistent", "eth0", &conf);
    assert_eq!(r.json()["code"], json!(3), "{r:?}");
    assert!(node.ip_files().is_empty());

    // A non-bridge link named like the bridge: code 7, reservation undone.
    assert!(node.ns.exec(&["ip", "link", "add", "berth0", "type", "veth", "peer", "name", "berth0p"]).0);
    let r = node.run("ADD", "conflict", &pod.path(), "eth0", &conf);
    assert_eq!(r.json()["code"], json!(7), "{r:?}");
    assert!(node.ip_files().is_empty());
    node.ns.exec(&["ip", "link", "del", "berth0"]);
}

#[test]
fn exhausted_range_and_existing_interface() {
    require_root!();
    let node = Node::new();
    let pod1 = NetnsGuard::new(ns_name("pod")).unwrap();
    let pod2 = NetnsGuard::new(ns_name("pod")).unwrap();
    // /30: gateway .1, one pod address .2.
    let conf = node.conf("1.0.0", "10.250.0.0/30");
    assert_eq!(node.run("ADD", "one", &pod1.path(), "eth0", &conf).exit_code, 0);
    let r = node.run("ADD", "two", &pod2.path(), "eth0", &conf);
    assert_eq!(r.exit_code, 1);
    assert_eq!(r.json()["code"], json!(11), "{r:?}");
    assert!(!node.link_exists(&host_veth_name("two", "eth0")));
    // STATUS reports the exhaustion.
    let mut c = conf.clone();
    c["cniVersion"] = json!("1.1.0");
    assert_eq!(node.run("STATUS", "", "", "", &c).json()["code"], json!(50));

    // ADD for an interface that already exists in the container: error, the first attachment
    // keeps its address and link.
    let r = node.run("ADD", "three", &pod1.path(), "eth0", &node.conf("1.0.0", "10.251.0.0/24"));
    assert_eq!(r.exit_code, 1, "{r:?}");
    let again = node.run("ADD", "one", &pod1.path(), "eth0", &conf);
    assert_eq!(again.json()["code"], json!(101), "{again:?}");
    assert_eq!(node.ip_files(), vec!["10.250.0.2".to_string()]);
    assert!(ping(&node.ns, "10.250.0.2"));
}

#[test]
fn del_after_netns_is_gone_and_gc() {
    require_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0", "10.244.0.0/24");
    let keep = NetnsGuard::new(ns_name("pod")).unwrap();
    assert_eq!(node.run("ADD", "keep", &keep.path(), "eth0", &conf).exit_code, 0);
    let gone_path;
    {
        let gone = NetnsGuard::new(ns_name("pod")).unwrap();
        gone_path = gone.path();
        assert_eq!(node.run("ADD", "gone", &gone.path(), "eth0", &conf).exit_code, 0);
    }
    assert!(!Path::new(&gone_path).exists());
    assert_eq!(node.ip_files().len(), 2);
    // GC with only "keep" valid releases "gone"'s address.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let r = node.run("GC", "", "", "", &gc);
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert_eq!(node.ip_files(), vec!["10.244.0.2".to_string()]);
    // DEL for the vanished netns still succeeds (twice).
    for _ in 0..2 {
        let r = node.run("DEL", "gone", &gone_path, "eth0", &conf);
        assert_eq!(r.exit_code, 0, "{r:?}");
    }
    assert!(!node.link_exists(&host_veth_name("gone", "eth0")));
    assert_eq!(node.run("STATUS", "", "", "", &conf).exit_code, 0);
    assert_eq!(node.run("DEL", "keep", &keep.path(), "eth0", &conf).exit_code, 0);
    assert!(node.ip_files().is_empty());
}

#[test]
fn own_netns_is_refused() {
    require_root!();
    let node = Node::new();
    let conf = node.conf("1.0.0", "10.244.0.0/24");
    // CNI_NETNS pointing at the namespace the plugin runs in.
    let r = node.run("ADD", "self", &node.ns.path(), "eth9", &conf);
    assert_eq!(r.exit_code, 1);
    assert_eq!(r.json()["code"], json!(8), "{r:?}");
    assert!(!node.link_exists("eth9"));
    assert!(node.ip_files().is_empty());
}

#[test]
fn chaining_prev_result_in_and_out() {
    require_root!();
    let node = Node::new();
    let pod = NetnsGuard::new(ns_name("pod")).unwrap();
    // berth-cni after another plugin: its result is appended to prevResult.
    let mut conf = node.conf("1.0.0", "10.244.0.0/24");
    conf["prevResult"] = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": pod.path()}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0}], "dns": {"nameservers": ["10.96.0.10"]}});
    let add = node.run("ADD", "chain", &pod.path(), "eth0", &conf);
    assert_eq!(add.exit_code, 0, "{add:?}");
    let r = add.json();
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 4);
    assert_eq!(r["ips"][0]["interface"], json!(0));
    assert_eq!(r["ips"][1]["interface"], json!(3));
    assert_eq!(r["interfaces"][3]["name"], json!("eth0"));
    assert_eq!(r["dns"]["nameservers"], json!(["10.96.0.10"]));

    // A reference plugin after berth-cni consumes our result as its prevResult.
    let tuning = Path::new("/usr/lib/cni/tuning");
    if tuning.exists() {
        let tconf = json!({"cniVersion": "1.0.0", "name": "berth", "type": "tuning",
            "sysctl": {"net.ipv4.conf.eth0.rp_filter": "2"}, "prevResult": r});
        let stdin = serde_json::to_vec(&tconf).unwrap();
        let t = run_plugin(
            tuning,
            &node.ns.path(),
            &Invocation { command: "ADD", container_id: "chain", netns: &pod.path(), ifname: "eth0", cni_path: "/usr/lib/cni", stdin: &stdin },
        )
        .unwrap();
        assert_eq!(t.exit_code, 0, "{t:?}");
        assert_eq!(t.json()["ips"], r["ips"]);
        let (_, v) = pod.exec(&["cat", "/proc/sys/net/ipv4/conf/eth0/rp_filter"]);
        assert_eq!(v.trim(), "2");
    }
    assert_eq!(node.run("DEL", "chain", &pod.path(), "eth0", &conf).exit_code, 0);
    assert!(node.ip_files().is_empty());
}

#[test]
fn failure_midway_is_undone() {
    require_root!();
    let node = Node::new();
    let pod = NetnsGuard::new(ns_name("pod")).unwrap();
    // The route's gateway is not on the pod's subnet: the kernel refuses it after the veth pair
    // and the address exist, so ADD must take them back and release the reservation.
    let mut conf = node.conf("1.0.0", "10.244.0.0/24");
    conf["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0", "gw": "10.99.0.1"}]);
    let r = node.run("ADD", "midway", &pod.path(), "eth0", &conf);
    assert_eq!(r.exit_code, 1, "{r:?}");
    assert_eq!(r.json()["code"], json!(5), "{r:?}");
    assert!(r.json()["details"].as_str().unwrap().contains("add route"), "{r:?}");
    assert!(!node.link_exists(&host_veth_name("midway", "eth0")));
    assert!(!pod.exec(&["ip", "link", "show", "eth0"]).0);
    assert!(node.ip_files().is_empty());
    // And a correct ADD afterwards works in the same namespace.
    let ok = node.run("ADD", "midway", &pod.path(), "eth0", &node.conf("1.0.0", "10.244.0.0/24"));
    assert_eq!(ok.exit_code, 0, "{ok:?}");
}
