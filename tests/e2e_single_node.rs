//! Issue 2's acceptance test, end to end and unmocked: one node (a network namespace) with its own
//! containerd, a local registry, `berth up`, and the real kubectl (the /usr/bin/kubectl dispatcher,
//! plus kubectl 1.27 and 1.33 for the read paths).
mod common;

use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::berth::Berth;
use common::containerd::{wait_no_containers_for_pod, REGISTRY_PORT};
use common::{Containerd, Netns, Registry};
use serde_json::Value;

const POD_START: Duration = Duration::from_secs(120);

fn waiting_reason(p: &Value, container: usize) -> String {
    p["status"]["containerStatuses"][container]["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn restart_count(p: &Value) -> i64 {
    p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(-1)
}

fn container_id(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["containerID"].as_str().unwrap_or("").to_string()
}

fn is_running(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["podIP"].as_str().is_some_and(|s| !s.is_empty())
        && p["status"]["containerStatuses"][0]["state"]["running"].is_object()
}

/// The `kubectl get pods` row of `name` (whitespace-split columns).
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"))
        .split_whitespace()
        .collect()
}

/// Files in the IPAM dir that record `ip` (named after it, host-local style, or mentioning it).
fn ipam_entries_for(dir: &Path, ip: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
    rd.flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // host-local style bookkeeping, not an allocation
            if name.starts_with("last_reserved_ip") || name == "lock" {
                return false;
            }
            name == ip
                || (e.path().is_file()
                    && std::fs::read_to_string(e.path()).is_ok_and(|s| {
                        s.split(|c: char| !(c.is_ascii_digit() || c == '.')).any(|w| w == ip)
                    }))
        })
        .map(|e| e.path().display().to_string())
        .collect()
}

/// Waits until `kubectl get pods` prints a STATUS for `pod` that satisfies `f`.
fn wait_status_column(b: &Berth, pod: &str, timeout: Duration, f: impl Fn(&str) -> bool) {
    let table = common::wait_until(&format!("kubectl get pods STATUS of {pod}"), timeout, || {
        let t = b.kubectl().args(["get", "pods"]).ok();
        let status = row(&t, pod).get(2).map(|s| s.to_string()).unwrap_or_default();
        if f(&status) {
            Ok(Some(t))
        } else {
            Err(format!("STATUS {status:?}"))
        }
    });
    eprintln!("{table}");
}

#[test]
fn single_node_kubectl_scenario() {
    if !common::e2e_enabled("single_node_kubectl_scenario") {
        return;
    }
    let _serial = common::serial();
    let t0 = Instant::now();
    let step = |s: &str| eprintln!("\n=== [{:>5.1}s] {s}", t0.elapsed().as_secs_f64());

    step("node netns, containerd, registry, berth up");
    let ns = Netns::new();
    let c = Containerd::start(&ns);
    let reg = Registry::start(&ns, REGISTRY_PORT);
    let remote_image = reg.seed_busybox_remote(&c);
    let mut b = Berth::start(&ns, &c);

    step("kubectl get nodes: Ready");
    let node = b.wait_node_ready(Duration::from_secs(120));
    let nodes = b.kubectl().args(["get", "nodes"]).ok();
    let r = row(&nodes, &node);
    assert_eq!(r.get(1), Some(&"Ready"), "{nodes}");
    let pod_cidr = b.kubectl().args(["get", "node", &node, "-o", "jsonpath={.spec.podCIDR}"]).ok();
    let pod_cidr = ipnetwork::IpNetwork::from_str(pod_cidr.trim()).expect("node.spec.podCIDR");
    let internal_ip = b
        .kubectl()
        .args(["get", "node", &node, "-o", r#"jsonpath={.status.addresses[?(@.type=="InternalIP")].address}"#])
        .ok();
    assert_eq!(internal_ip.trim(), ns.node_ip.to_string());

    step("kubectl run web: Running with an IP from the node's podCIDR");
    b.kubectl()
        .args(["run", "web", &format!("--image={}", common::BUSYBOX_IMAGE), "--", "httpd", "-f", "-p", "8080"])
        .ok();
    let web = b.wait_pod("web", "Running with a pod IP", POD_START, is_running);
    let web_ip: IpAddr = web["status"]["podIP"].as_str().unwrap().parse().expect("podIP");
    assert!(pod_cidr.contains(web_ip), "pod IP {web_ip} outside podCIDR {pod_cidr}");
    assert_eq!(web["spec"]["nodeName"].as_str(), Some(node.as_str()));
    let wide = b.kubectl().args(["get", "pods", "-o", "wide"]).ok();
    let r = row(&wide, "web");
    assert_eq!(r[1], "1/1", "{wide}");
    assert_eq!(r[2], "Running", "{wide}");
    assert!(r.contains(&web_ip.to_string().as_str()), "IP column: {wide}");
    let jp = b.kubectl().args(["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]).ok();
    assert_eq!(jp.trim(), web_ip.to_string());
    // contracts: the agent's conflist in containerd's conf dir, kubelet's pod log layout
    let conflist = c.cni_conf_dir.join("10-berth.conflist");
    assert!(conflist.exists(), "{} missing", conflist.display());
    let uid = web["metadata"]["uid"].as_str().expect("uid");
    let web_log = b.cfg.pod_log_dir.join(format!("default_web_{uid}")).join("web/0.log");
    assert!(web_log.exists(), "{} missing", web_log.display());

    step("HTTP from the node to the pod");
    let resp = common::wait_until("web to answer HTTP", Duration::from_secs(30), || {
        common::http_get_in_netns(&ns.name, &web_ip.to_string(), 8080, "/").map(Some)
    });
    assert!(resp.starts_with("HTTP/1."), "{resp}");
    assert!(resp.contains("berth busybox"), "{resp}");

    step("kubectl logs / exec");
    b.kubectl().args(["logs", "web"]).ok();
    let host = b.kubectl().args(["exec", "web", "--", "hostname"]).ok();
    assert_eq!(host.trim(), "web");
    let web_cid = container_id(&web);
    let web_restarts = restart_count(&web);
    assert!(!web_cid.is_empty(), "containerID missing: {}", web["status"]);
    let ipam_dir = b.cfg.ipam_dir();
    let ipam_before = ipam_entries_for(&ipam_dir, &web_ip.to_string());
    assert!(!ipam_before.is_empty(), "no IPAM record of {web_ip} in {}", ipam_dir.display());

    step("bad input: image that does not exist -> ErrImagePull / ImagePullBackOff + Event");
    // a name the local registry does not have: the registry answers 404 (no DNS, no timeouts)
    let missing_image = reg.name("berth/does-not-exist:0.1");
    b.kubectl().args(["run", "missing", &format!("--image={missing_image}"), "--", "sleep", "3600"]).ok();
    b.wait_pod("missing", "ErrImagePull or ImagePullBackOff", POD_START, |p| {
        matches!(waiting_reason(p, 0).as_str(), "ErrImagePull" | "ImagePullBackOff")
    });
    b.wait_pod("missing", "ImagePullBackOff", POD_START, |p| waiting_reason(p, 0) == "ImagePullBackOff");
    wait_status_column(&b, "missing", Duration::from_secs(30), |s| s.contains("ImagePull"));
    common::wait_until("an Event about the failed pull", Duration::from_secs(60), || {
        let ev: Value = serde_json::from_str(&b.kubectl().args(["get", "events", "-o", "json"]).ok())
            .map_err(|e| e.to_string())?;
        let found = ev["items"].as_array().into_iter().flatten().find(|e| {
            e["involvedObject"]["name"] == "missing"
                && e["type"] == "Warning"
                && e["message"].as_str().unwrap_or("").contains(&missing_image)
        });
        Ok::<_, String>(found.cloned())
    });
    // informational (describe also lists the pod's events through a field selector)
    let d = b.kubectl().args(["describe", "pod", "missing"]).output_raw();
    eprintln!("{}{}", String::from_utf8_lossy(&d.stdout), String::from_utf8_lossy(&d.stderr));

    step("bad input: container exiting 1 under restartPolicy Always -> CrashLoopBackOff");
    b.kubectl()
        .args(["run", "crash", &format!("--image={}", common::BUSYBOX_IMAGE), "--restart=Always", "--"])
        .args(["sh", "-c", "echo crashing; exit 1"])
        .ok();
    b.wait_pod("crash", "CrashLoopBackOff with restartCount >= 1", POD_START, |p| {
        waiting_reason(p, 0) == "CrashLoopBackOff" && restart_count(p) >= 1
    });
    // (between back-offs the row briefly shows Error/Running: poll the printed STATUS)
    wait_status_column(&b, "crash", Duration::from_secs(60), |s| s == "CrashLoopBackOff");
    let crash_logs = b.kubectl().args(["logs", "crash"]).output_raw();
    let prev_logs = b.kubectl().args(["logs", "crash", "--previous"]).output_raw();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&crash_logs.stdout),
        String::from_utf8_lossy(&prev_logs.stdout)
    );
    assert!(all.contains("crashing"), "crash logs: {all:?}");

    step("bad input: malformed / invalid objects -> kube-apiserver style 4xx Status");
    let bad = b
        .kubectl()
        .args(["create", "--validate=false", "-f", "-"])
        .stdin(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"invalid"},"spec":{"containers":[]}}"#);
    let err = String::from_utf8_lossy(&bad.stderr);
    eprintln!("invalid pod -> {err}");
    // kubectl prints a 422 Invalid Status as kube-apiserver words it
    assert!(!bad.status.success(), "{err}");
    assert!(err.contains(r#"The Pod "invalid" is invalid"#) && err.contains("spec.containers"), "{err}");
    let bad = b
        .kubectl()
        .args(["create", "--validate=false", "-f", "-"])
        .stdin(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"Not_A_DNS_Name"},"spec":{"containers":[{"name":"c","image":"x"}]}}"#);
    let err = String::from_utf8_lossy(&bad.stderr);
    eprintln!("bad name -> {err}");
    assert!(!bad.status.success(), "{err}");
    assert!(err.contains("is invalid") && err.contains("metadata.name"), "{err}");
    let garbage = ns.node_ip.to_string(); // any non-JSON body
    let tmp = common::temp_dir("berth-e2e-body-");
    let body = tmp.path().join("garbage.json");
    std::fs::write(&body, format!("{{ this is not json {garbage}")).unwrap();
    let bad = b
        .kubectl()
        .args(["create", "--raw", "/api/v1/namespaces/default/pods", "-f"])
        .arg(&body)
        .output_raw();
    let err = String::from_utf8_lossy(&bad.stderr);
    eprintln!("garbage body -> {err}");
    assert!(!bad.status.success() && err.contains("Error from server (BadRequest)"), "{err}");

    step("kill berth up (SIGTERM) and start it again: objects kept, web not restarted");
    let sandboxes_before: Vec<_> = c.list_sandboxes().into_iter().filter(|s| s.name == "web").collect();
    assert_eq!(sandboxes_before.len(), 1, "{sandboxes_before:?}");
    let crash_restarts = restart_count(&b.pod_json("crash").expect("crash pod"));
    assert!(b.stop(), "berth up did not exit within 30 s of SIGTERM");
    b.restart();
    b.wait_node_ready(Duration::from_secs(120));
    let names = b.kubectl().args(["get", "pods", "-o", "name"]).ok();
    for p in ["pod/web", "pod/missing", "pod/crash"] {
        assert!(names.lines().any(|l| l == p), "{p} lost across restart: {names}");
    }

    step("a pod pulled from the local registry runs (agent alive after the restart)");
    b.kubectl()
        .args(["run", "remote", &format!("--image={remote_image}"), "--"])
        .args(["sh", "-c", "cat /etc/berth-image; exec sleep 3600"])
        .ok();
    b.wait_pod("remote", "Running", POD_START, is_running);
    let logs = common::wait_until("remote's log line", Duration::from_secs(30), || {
        let l = b.kubectl().args(["logs", "remote"]).ok();
        Ok::<_, ()>(l.contains(common::BUSYBOX_REMOTE_LOCAL).then_some(l))
    });
    assert!(logs.contains(common::BUSYBOX_REMOTE_LOCAL));
    // the restarted agent manages containers again (crash restarted once more)...
    b.wait_pod("crash", "restartCount to grow after the restart", Duration::from_secs(180), |p| {
        restart_count(p) > crash_restarts
    });
    // ...and left web's alone
    let web_after = b.pod_json("web").expect("web after restart");
    assert!(is_running(&web_after), "web not running after restart: {}", web_after["status"]);
    assert_eq!(container_id(&web_after), web_cid, "web's container was replaced by the restart");
    assert_eq!(restart_count(&web_after), web_restarts, "web's restartCount changed");
    let web_cri: Vec<_> = c
        .list_containers()
        .into_iter()
        .filter(|x| x.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some("web"))
        .collect();
    assert_eq!(web_cri.len(), 1, "web's CRI containers after restart: {web_cri:?}");
    assert_eq!(web_cri[0].state, "CONTAINER_RUNNING", "{web_cri:?}");
    assert!(web_cid.ends_with(&web_cri[0].id), "status containerID {web_cid} vs CRI {}", web_cri[0].id);
    let sandboxes_after: Vec<_> = c.list_sandboxes().into_iter().filter(|s| s.name == "web").collect();
    assert_eq!(
        sandboxes_after.iter().map(|s| &s.id).collect::<Vec<_>>(),
        sandboxes_before.iter().map(|s| &s.id).collect::<Vec<_>>(),
        "web's sandbox was replaced by the restart"
    );
    common::http_get_in_netns(&ns.name, &web_ip.to_string(), 8080, "/").expect("web still answers");

    step("other kubectl versions: 1.27 and 1.33");
    for v in ["1.27", "1.33"] {
        let bin = format!("/usr/lib/google-cloud-sdk/bin/kubectl.{v}");
        if !Path::new(&bin).exists() {
            panic!("{bin} missing");
        }
        let nodes = b.kubectl_bin(&bin).args(["get", "nodes"]).ok();
        assert_eq!(row(&nodes, &node)[1], "Ready", "kubectl {v}: {nodes}");
        let wide = b.kubectl_bin(&bin).args(["get", "pods", "-o", "wide"]).ok();
        assert_eq!(row(&wide, "web")[2], "Running", "kubectl {v}: {wide}");
    }

    step("kubectl delete pod web: containers, sandbox and IP released");
    // (busybox httpd as PID 1 ignores SIGTERM: this takes the 30 s grace period, as with kubelet)
    b.kubectl().args(["delete", "pod", "web"]).ok();
    b.wait_pod_gone("web", Duration::from_secs(90));
    wait_no_containers_for_pod(&c, "web", Duration::from_secs(30));
    common::wait_until("web's sandbox removed through CRI", Duration::from_secs(30), || {
        let left: Vec<_> = c.list_sandboxes().into_iter().filter(|s| s.name == "web").collect();
        if left.is_empty() {
            Ok(Some(()))
        } else {
            Err(format!("{left:?}"))
        }
    });
    let left = ipam_entries_for(&ipam_dir, &web_ip.to_string());
    assert!(left.is_empty(), "IP {web_ip} still allocated: {left:?}");
    assert!(
        common::http_get_in_netns(&ns.name, &web_ip.to_string(), 8080, "/").is_err(),
        "web still answers after delete"
    );

    step("done");
    drop(b);
    drop(reg);
    drop(c);
    drop(ns);
}
