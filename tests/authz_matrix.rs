//! Authorization matrix (issue 5), end to end with the real kubectl: identities minted from the
//! cluster CA (admin, a user in no group, a user bound to `view` in one namespace, a user bound
//! to `admin` there, the node identity, a service account bound to `edit` there), each allowed
//! and denied what kube-apiserver (Node,RBAC + NodeRestriction, kubeadm's default policy)
//! allows and denies: secrets, pods, a privileged hostPath pod, Node deletion and patching,
//! RBAC escalation, `kubectl auth can-i` / `whoami`. Against `berth up` also exec through the API
//! and directly on the kubelet API (:10250, SubjectAccessReview). The same API matrix runs
//! against the real kube-apiserver (tests/common/upstream.rs) and the 403 messages of both are
//! compared.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use berth::pki::{self, CertificateAuthority};
use common::berth::{Berth, Kubectl};
use common::{Containerd, Netns, UpstreamControlPlane};

/// What a case must produce.
#[derive(Debug, Clone)]
enum Expect {
    /// Exit 0 (and stdout containing the text, when not empty).
    Allow(String),
    /// A Forbidden error whose message contains the text.
    Deny(String),
    /// `kubectl auth can-i` printing yes / no.
    Yes,
    No,
}

#[derive(Debug, Clone)]
struct Case {
    who: &'static str,
    args: Vec<String>,
    stdin: Option<String>,
    expect: Expect,
}

fn case(who: &'static str, args: &str, expect: Expect) -> Case {
    Case {
        who,
        args: shell_words(args),
        stdin: None,
        expect,
    }
}

/// Split on spaces, keeping '...' quoted parts together.
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn allow() -> Expect {
    Expect::Allow(String::new())
}
fn deny(s: &str) -> Expect {
    Expect::Deny(s.to_string())
}

const PRIVILEGED_POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"priv"},"spec":{"containers":[{"name":"c","image":"berth.local/busybox:1.35","command":["sleep","3600"],"securityContext":{"privileged":true},"volumeMounts":[{"name":"root","mountPath":"/host"}]}],"volumes":[{"name":"root","hostPath":{"path":"/"}}]}}"#;

/// The API matrix for a cluster whose node identity is `system:node:<node>`.
fn api_matrix(node: &str) -> Vec<Case> {
    let n = node;
    let u = |s: &str| s.replace("{N}", n);
    let mut v = vec![
        // Secrets.
        case("admin", "get secrets -n team", allow()),
        case("nobody", "get secrets -n team", deny(r#"secrets is forbidden: User "nobody" cannot list resource "secrets" in API group "" in the namespace "team""#)),
        case("viewer", "get secrets -n team", deny(r#"User "viewer" cannot list resource "secrets" in API group "" in the namespace "team""#)),
        case("viewer", "get secret s-ref -n team", deny(r#"secrets "s-ref" is forbidden: User "viewer" cannot get resource "secrets""#)),
        case("node", "get secret s-ref -n team", allow()),
        case("node", "get secret s-other -n team", deny(&u(r#"secrets "s-other" is forbidden: User "system:node:{N}" cannot get resource "secrets" in API group "" in the namespace "team": node: no relationship found between node '{N}' and this object"#))),
        case("node", "get secrets -n team", deny(&u(r#"User "system:node:{N}" cannot list resource "secrets" in API group "" in the namespace "team""#))),
        case("sa", "get secret s-other -n team", allow()),
        case("sa", "get secrets -n default", deny(r#"User "system:serviceaccount:team:bot" cannot list resource "secrets" in API group "" in the namespace "default""#)),
        // Pods.
        case("viewer", "get pods -n team", allow()),
        case("viewer", "get pods -n default", deny(r#"pods is forbidden: User "viewer" cannot list resource "pods" in API group "" in the namespace "default""#)),
        case("nobody", "get pods -n default", deny(r#"pods is forbidden: User "nobody" cannot list resource "pods" in API group "" in the namespace "default""#)),
        case("node", "get pods -A", deny(&u(r#"pods is forbidden: User "system:node:{N}" cannot list resource "pods" in API group "" at the cluster scope: node: can only list/watch pods with spec.nodeName field selector"#))),
        case("node", &u("get pods -A --field-selector spec.nodeName={N}"), allow()),
        case("node", "get pod ref -n team", allow()),
        // Nodes.
        case("admin", "delete node other-node --dry-run=server", allow()),
        case("nobody", "delete node other-node", deny(r#"nodes "other-node" is forbidden: User "nobody" cannot delete resource "nodes" in API group "" at the cluster scope"#)),
        case("node", "delete node other-node", deny(&u(r#"nodes "other-node" is forbidden: User "system:node:{N}" cannot delete resource "nodes" in API group "" at the cluster scope"#))),
        case("sa", "delete node other-node", deny(r#"User "system:serviceaccount:team:bot" cannot delete resource "nodes""#)),
        case("viewer", "get nodes", deny(r#"nodes is forbidden: User "viewer" cannot list resource "nodes" in API group "" at the cluster scope"#)),
        case("node", &u("get node {N}"), allow()),
        case("node", "get node other-node", deny(&u(r#"nodes "other-node" is forbidden: User "system:node:{N}" cannot get resource "nodes" in API group "" at the cluster scope: node: node '{N}' cannot read 'other-node', only its own Node object"#))),
        // kubectl patch GETs first, which the Node authorizer refuses (the PATCH itself: see raw_checks).
        case("node", "patch node other-node --type=merge -p {\"metadata\":{\"labels\":{\"x\":\"y\"}}}", deny(&u(r#"nodes "other-node" is forbidden: User "system:node:{N}" cannot get resource "nodes" in API group "" at the cluster scope: node: node '{N}' cannot read 'other-node', only its own Node object"#))),
        case("node", &u("label node {N} example.com/matrix=yes --overwrite"), allow()),
        case("node", &u("label node {N} node-restriction.kubernetes.io/x=y"), deny(&u(r#"nodes "{N}" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/x"#))),
        // kubectl auth can-i / whoami.
        case("admin", "auth can-i * *", Expect::Yes),
        case("nobody", "auth can-i list pods", Expect::No),
        case("nobody", "auth can-i create selfsubjectaccessreviews.authorization.k8s.io", Expect::Yes),
        case("viewer", "auth can-i list pods -n team", Expect::Yes),
        case("viewer", "auth can-i list pods -n default", Expect::No),
        case("viewer", "auth can-i create pods --subresource=exec -n team", Expect::No),
        case("viewer", "auth can-i get pods --subresource=log -n team", Expect::Yes),
        case("sa", "auth can-i create pods --subresource=exec -n team", Expect::Yes),
        case("sa", "auth can-i get secrets -n team", Expect::Yes),
        case("node", "auth can-i get secret/s-ref -n team", Expect::Yes),
        case("node", "auth can-i get secret/s-other -n team", Expect::No),
        case("lead", "auth can-i create rolebindings -n team", Expect::Yes),
        case("lead", "auth can-i create clusterrolebindings", Expect::No),
        case("sa", "auth whoami -o jsonpath={.status.userInfo.username}", Expect::Allow("system:serviceaccount:team:bot".into())),
        case("viewer", "auth can-i --list -n team", Expect::Allow("pods/log".into())),
        // Impersonation (kubectl --as): admin may, others may not.
        case("admin", "auth can-i list pods -n team --as viewer", Expect::Yes),
        case("admin", "auth can-i list pods -n default --as viewer", Expect::No),
        case("admin", "auth can-i create pods --subresource=exec -n team --as system:serviceaccount:team:bot", Expect::Yes),
        case("admin", "get secrets -n team --as viewer", deny(r#"User "viewer" cannot list resource "secrets" in API group "" in the namespace "team""#)),
        // (A denied impersonation is left out: kube-apiserver 1.37's constrained impersonation words
        // it `cannot impersonate-on:user-info:list resource "pods"`, berth says `users "viewer" is forbidden`.)
        // RBAC escalation prevention.
        case("lead", "create rolebinding lead-view --clusterrole=view --user=someone -n team", allow()),
        case("lead", "create rolebinding lead-ca --clusterrole=cluster-admin --user=someone -n team", deny(r#"rolebindings.rbac.authorization.k8s.io "lead-ca" is forbidden: user "lead" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held"#)),
        case("lead", "create role lead-nodes --verb=get --resource=nodes -n team", deny(r#"roles.rbac.authorization.k8s.io "lead-nodes" is forbidden: user "lead" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held"#)),
        case("lead", "create role lead-pods --verb=get --resource=pods -n team", allow()),
        case("sa", "create rolebinding sa-view --clusterrole=view --user=someone -n team", deny(r#"rolebindings.rbac.authorization.k8s.io is forbidden: User "system:serviceaccount:team:bot" cannot create resource "rolebindings" in API group "rbac.authorization.k8s.io" in the namespace "team""#)),
        case("nobody", "get clusterroles", deny(r#"clusterroles.rbac.authorization.k8s.io is forbidden: User "nobody" cannot list resource "clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope"#)),
        case("admin", "get clusterrole view -o jsonpath={.rules[*].resources}", Expect::Allow("pods/log".into())),
    ];
    // The privileged hostPath pod (server-side dry run).
    for (who, expect) in [
        ("admin", allow()),
        ("nobody", deny(r#"pods is forbidden: User "nobody" cannot create resource "pods" in API group "" in the namespace "team""#)),
        ("viewer", deny(r#"User "viewer" cannot create resource "pods""#)),
        ("node", deny(&u(r#"pods "priv" is forbidden: pod does not have "kubernetes.io/config.mirror" annotation, node "{N}" can only create mirror pods"#))),
        ("sa", allow()),
    ] {
        v.push(Case {
            who,
            args: shell_words("create --dry-run=server -n team -f -"),
            stdin: Some(PRIVILEGED_POD.into()),
            expect,
        });
    }
    v
}

/// An identity's kubeconfig and PEM files.
struct Identity {
    kubeconfig: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn mint(dir: &Path, ca: &CertificateAuthority, server: &str, label: &str, cn: &str, orgs: &[&str]) -> Identity {
    let (cert, key) = pki::issue_client_cert(ca, cn, orgs).expect("issue client cert");
    let kubeconfig = dir.join(format!("{label}.conf"));
    std::fs::write(&kubeconfig, pki::kubeconfig_json(server, &ca.cert_pem, &cert, &key, label, label)).unwrap();
    let (c, k) = (dir.join(format!("{label}.crt")), dir.join(format!("{label}.key")));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    Identity { kubeconfig, cert: c, key: k }
}

fn identities(dir: &Path, ca: &CertificateAuthority, server: &str, node: &str, admin: PathBuf) -> BTreeMap<&'static str, Identity> {
    let mut m = BTreeMap::new();
    m.insert("admin", Identity { kubeconfig: admin, cert: PathBuf::new(), key: PathBuf::new() });
    m.insert("nobody", mint(dir, ca, server, "nobody", "nobody", &[]));
    m.insert("viewer", mint(dir, ca, server, "viewer", "viewer", &[]));
    m.insert("lead", mint(dir, ca, server, "lead", "lead", &[]));
    m.insert("node", mint(dir, ca, server, "node", &format!("system:node:{node}"), &["system:nodes"]));
    m.insert(
        "sa",
        mint(dir, ca, server, "sa", "system:serviceaccount:team:bot", &["system:serviceaccounts", "system:serviceaccounts:team"]),
    );
    m
}

/// The objects the matrix reads: namespace team, two secrets, bindings, a pod bound to `node`
/// that references s-ref, a second Node. `kubectl` runs as admin.
fn setup(kubectl: &dyn Fn() -> Kubectl, node: &str, create_own_node: bool) {
    let ok = |args: &str| {
        kubectl().args(shell_words(args)).ok();
    };
    ok("create namespace team");
    ok("create secret generic s-ref --from-literal=k=v -n team");
    ok("create secret generic s-other --from-literal=k=v -n team");
    ok("create rolebinding viewer-view --clusterrole=view --user=viewer -n team");
    ok("create rolebinding lead-admin --clusterrole=admin --user=lead -n team");
    ok("create rolebinding bot-edit --clusterrole=edit --serviceaccount=team:bot -n team");
    let mut nodes = vec!["other-node".to_string()];
    if create_own_node {
        nodes.push(node.to_string());
    }
    for n in nodes {
        let out = kubectl()
            .args(["create", "-f", "-"])
            .stdin(&format!(r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{n}"}}}}"#));
        assert!(out.status.success(), "create node {n}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"ref","namespace":"team"}},"spec":{{"nodeName":"{node}","imagePullSecrets":[{{"name":"s-ref"}}],"containers":[{{"name":"c","image":"berth.local/busybox:1.35","command":["sleep","3600"]}}]}}}}"#
    );
    // kube-apiserver's ServiceAccount admission needs team's default ServiceAccount, which its
    // controller creates asynchronously: retry until the pod is accepted.
    common::wait_until("pod team/ref created", Duration::from_secs(60), || {
        let out = kubectl().args(["create", "-f", "-"]).stdin(&pod);
        if out.status.success() {
            Ok(Some(()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
}

/// The outcome of a case: Ok(()) or what went wrong.
fn check(c: &Case, out: &Output) -> Result<(), String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = || format!("{} kubectl {:?}: exit {:?}\nstdout: {stdout}\nstderr: {stderr}", c.who, c.args, out.status.code());
    match &c.expect {
        Expect::Allow(text) => {
            if !out.status.success() || !stdout.contains(text.as_str()) {
                return Err(format!("expected success{}: {}", if text.is_empty() { String::new() } else { format!(" with {text:?}") }, shown()));
            }
        }
        Expect::Deny(text) => {
            // kubectl prints "Error from server (Forbidden): ..." or, for `create <kind>`,
            // "error: failed to create <kind>: ... is forbidden: ...".
            let forbidden = stderr.contains("(Forbidden)") || stderr.contains(" is forbidden: ");
            if out.status.success() || !forbidden || !stderr.contains(text.as_str()) {
                return Err(format!("expected Forbidden with {text:?}: {}", shown()));
            }
        }
        Expect::Yes | Expect::No => {
            // "no" may carry the authorizer's reason: "no - <reason>".
            let (want, ok) = if matches!(c.expect, Expect::Yes) {
                ("yes", stdout.trim() == "yes")
            } else {
                ("no", stdout.trim() == "no" || stdout.starts_with("no - "))
            };
            if !ok {
                return Err(format!("expected {want}: {}", shown()));
            }
        }
    }
    Ok(())
}

/// Run the cases; return (failures, the stderr of each denied case by index).
fn run_matrix(cases: &[Case], kubectl_as: &dyn Fn(&str) -> Kubectl) -> (Vec<String>, BTreeMap<usize, String>) {
    let mut failures = Vec::new();
    let mut denials = BTreeMap::new();
    for (i, c) in cases.iter().enumerate() {
        let k = kubectl_as(c.who).args(&c.args);
        let out = match &c.stdin {
            Some(s) => k.stdin(s),
            None => k.output_raw(),
        };
        if let Err(e) = check(c, &out) {
            eprintln!("MATRIX FAIL #{i}: {e}");
            failures.push(format!("#{i} {e}"));
        } else {
            eprintln!("matrix ok #{i}: {} {:?}", c.who, c.args);
        }
        if !out.status.success() {
            denials.insert(i, String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
    }
    (failures, denials)
}

/// curl on the kubelet API with a client certificate, inside the node's netns: (status, body).
fn kubelet_curl(netns: &str, id: &Identity, method: &str, url: &str) -> (u16, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .arg("--")
        .args(["curl", "-sk", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--cert"])
        .arg(&id.cert)
        .arg("--key")
        .arg(&id.key)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// PATCH of another Node as the node identity, straight to the API (kubectl would GET first):
/// NodeRestriction answers 403 with kube-apiserver's Status.
fn raw_checks(
    curl: &dyn Fn(&[&str]) -> Command,
    server: &str,
    ids: &BTreeMap<&'static str, Identity>,
    node: &str,
) -> Vec<String> {
    let id = &ids["node"];
    let (cert, key) = (id.cert.display().to_string(), id.key.display().to_string());
    let url = format!("{server}/api/v1/nodes/other-node");
    let out = curl(&[
        "-sk", "--max-time", "20", "--cert", &cert, "--key", &key, "-X", "PATCH",
        "-H", "Content-Type: application/merge-patch+json",
        "-d", r#"{"metadata":{"labels":{"x":"y"}}}"#, &url,
    ])
    .output()
    .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let want = format!(r#"nodes "other-node" is forbidden: node "{node}" is not allowed to modify node "other-node""#);
    if v["code"] != 403 || v["reason"] != "Forbidden" || v["message"] != want.as_str() {
        return vec![format!("PATCH another node as the node: {body}, want 403 {want:?}")];
    }
    vec![]
}

/// Where the denial messages of two runs differ (same cases, same node name substituted).
fn compare(ours: &BTreeMap<usize, String>, theirs: &BTreeMap<usize, String>, cases: &[Case]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let a = ours.get(&i);
        let b = theirs.get(&i);
        if a != b {
            out.push(format!("#{i} {} {:?}:\n  berth:          {a:?}\n  kube-apiserver: {b:?}", c.who, c.args));
        }
    }
    out
}

/// ClusterRole name -> atomic rules (group, resource, verb, name / "URL", path, verb, ""), and
/// ClusterRoleBinding name -> (role, sorted subjects), from `kubectl get
/// clusterroles,clusterrolebindings -o json`.
type Atoms = std::collections::BTreeSet<(String, String, String, String)>;
fn policy_atoms(json: &str) -> (BTreeMap<String, Atoms>, BTreeMap<String, String>) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let (mut roles, mut bindings) = (BTreeMap::new(), BTreeMap::new());
    let strs = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|s| s.as_str()).map(str::to_string).collect()
    };
    for it in v["items"].as_array().into_iter().flatten() {
        let name = it["metadata"]["name"].as_str().unwrap_or("").to_string();
        if it["kind"] == "ClusterRole" {
            let mut atoms = Atoms::new();
            for r in it["rules"].as_array().into_iter().flatten() {
                let mut names = strs(&r["resourceNames"]);
                if names.is_empty() {
                    names.push(String::new());
                }
                for verb in strs(&r["verbs"]) {
                    for g in strs(&r["apiGroups"]) {
                        for res in strs(&r["resources"]) {
                            for n in &names {
                                atoms.insert((g.clone(), res.clone(), verb.clone(), n.clone()));
                            }
                        }
                    }
                    for u in strs(&r["nonResourceURLs"]) {
                        atoms.insert(("URL".into(), u, verb.clone(), String::new()));
                    }
                }
            }
            roles.insert(name, atoms);
        } else {
            let mut subjects: Vec<String> = it["subjects"].as_array().into_iter().flatten().map(|s| format!("{}/{}/{}", s["kind"], s["namespace"], s["name"])).collect();
            subjects.sort();
            bindings.insert(name, format!("{} {subjects:?}", it["roleRef"]["name"]));
        }
    }
    (roles, bindings)
}

/// Differences between berth's and kube-apiserver's default policy, for the objects both have.
fn policy_differences(berth: &str, upstream: &str) -> Vec<String> {
    let (br, bb) = policy_atoms(berth);
    let (ur, ub) = policy_atoms(upstream);
    let mut out = Vec::new();
    for (name, atoms) in &br {
        if let Some(theirs) = ur.get(name) {
            let missing: Vec<_> = theirs.difference(atoms).collect();
            let extra: Vec<_> = atoms.difference(theirs).collect();
            if !missing.is_empty() || !extra.is_empty() {
                out.push(format!("ClusterRole {name}: missing {missing:?}, extra {extra:?}"));
            }
        }
    }
    for (name, b) in &bb {
        if let Some(u) = ub.get(name) {
            if u != b {
                out.push(format!("ClusterRoleBinding {name}: berth {b}, kube-apiserver {u}"));
            }
        }
    }
    out
}

/// Berth's answers, compared with kube-apiserver's in the same test.
struct BerthRun {
    /// The matrix's denial texts by case index (node name replaced by `{N}`).
    denials: BTreeMap<usize, String>,
    /// `kubectl get clusterroles,clusterrolebindings -o json`.
    policy: String,
}

/// The matrix against `berth up`, then the same API matrix against the real kube-apiserver
/// (upstream/build.sh), which must give the same error texts and the same default policy.
#[test]
fn authz_matrix() {
    if !common::e2e_enabled("authz_matrix") {
        return;
    }
    let _serial = common::serial();
    let ours = authz_matrix_berth();
    authz_matrix_kube_apiserver(&ours);
}

fn authz_matrix_berth() -> BerthRun {
    let ns = Netns::new();
    let c = Containerd::start(&ns);
    let b = Berth::start(&ns, &c);
    let node = b.wait_node_ready(Duration::from_secs(120));
    let state = &b.cfg.state_dir;
    let ca = CertificateAuthority::from_pem(
        &std::fs::read_to_string(state.join("pki/ca.crt")).unwrap(),
        &std::fs::read_to_string(state.join("pki/ca.key")).unwrap(),
    )
    .expect("cluster CA");
    let dir = common::temp_dir("authz-matrix");
    let server = format!("https://{}:6443", b.cfg.node_ip);
    let ids = identities(dir.path(), &ca, &server, &node, b.cfg.admin_kubeconfig());
    let kubectl_as = |who: &str| b.kubectl().arg("--kubeconfig").arg(&ids[who].kubeconfig);

    // The default policy is in place (kubeadm's roles and bindings).
    let roles = b.kubectl().args(["get", "clusterroles", "-o", "name"]).ok();
    for r in ["cluster-admin", "admin", "edit", "view", "system:basic-user", "system:discovery", "system:node", "system:kube-scheduler"] {
        assert!(roles.lines().any(|l| l == format!("clusterrole.rbac.authorization.k8s.io/{r}")), "{r} missing:\n{roles}");
    }

    let policy = b.kubectl().args(["get", "clusterroles,clusterrolebindings", "-o", "json"]).ok();
    setup(&|| b.kubectl(), &node, false);
    common::wait_until("pod team/ref Running", Duration::from_secs(120), || {
        let out = b.kubectl().args(["get", "pod", "ref", "-n", "team", "-o", "jsonpath={.status.phase}"]).output_raw();
        let phase = String::from_utf8_lossy(&out.stdout).into_owned();
        if phase == "Running" {
            Ok(Some(()))
        } else {
            Err(format!("phase {phase:?} {}", String::from_utf8_lossy(&out.stderr)))
        }
    });

    let cases = api_matrix(&node);
    let (mut failures, denials) = run_matrix(&cases, &kubectl_as);
    let generic: BTreeMap<usize, String> = denials.iter().map(|(i, s)| (*i, s.replace(&node, "{N}"))).collect();

    // Exec through the API server (kubectl exec: GET the pod, then POST pods/exec).
    let exec = |who: &str| kubectl_as(who).args(["exec", "ref", "-n", "team", "--", "echo", "matrix"]).output_raw();
    let mut exec_cases = vec![
        Case { who: "admin", args: vec![], stdin: None, expect: Expect::Allow("matrix".into()) },
        Case { who: "sa", args: vec![], stdin: None, expect: Expect::Allow("matrix".into()) },
        Case { who: "nobody", args: vec![], stdin: None, expect: deny(r#"pods "ref" is forbidden: User "nobody" cannot get resource "pods""#) },
        Case { who: "viewer", args: vec![], stdin: None, expect: deny(r#"pods "ref" is forbidden: User "viewer" cannot create resource "pods/exec" in API group "" in the namespace "team""#) },
    ];
    exec_cases.push(Case {
        who: "node",
        args: vec![],
        stdin: None,
        expect: deny(&format!(r#"pods "ref" is forbidden: User "system:node:{node}" cannot create resource "pods/exec""#)),
    });
    for c in &exec_cases {
        if let Err(e) = check(c, &exec(c.who)) {
            failures.push(format!("exec: {e}"));
        }
    }

    // Directly on the kubelet API: SubjectAccessReview nodes/proxy (the admin is system:masters).
    let kubelet = format!("https://{}:10250", b.cfg.node_ip);
    let exec_url = format!("{kubelet}/exec/team/ref/c?command=echo&command=hi&output=1");
    let admin_cert = mint(dir.path(), &ca, &server, "admin-cert", "kubernetes-admin", &["system:masters"]);
    let (code, body) = kubelet_curl(&b.cfg.netns_path, &admin_cert, "POST", &exec_url);
    if code != 400 || !body.contains("Upgrade request required") {
        failures.push(format!("kubelet exec as admin: {code} {body:?} (want 400 Upgrade request required: authorized)"));
    }
    for (who, cn) in [("nobody", "nobody".to_string()), ("node", format!("system:node:{node}")), ("sa", "system:serviceaccount:team:bot".into()), ("viewer", "viewer".into())] {
        let (code, body) = kubelet_curl(&b.cfg.netns_path, &ids[who], "POST", &exec_url);
        let want = format!("Forbidden (user={cn}, verb=create, resource=nodes, subresource(s)=[proxy])");
        if code != 403 || body.trim() != want {
            failures.push(format!("kubelet exec as {who}: {code} {body:?}, want 403 {want:?}"));
        }
    }
    let (code, body) = kubelet_curl(&b.cfg.netns_path, &ids["nobody"], "GET", &format!("{kubelet}/containerLogs/team/ref/c"));
    if code != 403 {
        failures.push(format!("kubelet logs as nobody: {code} {body:?}"));
    }
    let (code, body) = kubelet_curl(&b.cfg.netns_path, &ids["nobody"], "GET", &format!("{kubelet}/healthz"));
    if code != 403 || !body.contains("subresource(s)=[healthz proxy]") {
        failures.push(format!("kubelet healthz as nobody: {code} {body:?}"));
    }
    // Grant nodes/proxy through RBAC to a user the kubelet has not cached a denial for: its
    // review allows it.
    let kadmin = mint(dir.path(), &ca, &server, "kadmin", "kadmin", &[]);
    b.kubectl().args(["create", "clusterrolebinding", "kadmin", "--clusterrole=system:kubelet-api-admin", "--user=kadmin"]).ok();
    let (code, body) = kubelet_curl(&b.cfg.netns_path, &kadmin, "GET", &format!("{kubelet}/containerLogs/team/ref/c"));
    if code != 200 {
        failures.push(format!("kubelet logs as kadmin with system:kubelet-api-admin: {code} {body:?}"));
    }
    failures.extend(raw_checks(&|args: &[&str]| {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", b.cfg.netns_path)).arg("--").arg("curl").args(args);
        c
    }, &server, &ids, &node));

    // Admin keeps working: writes and a watch.
    b.kubectl().args(["create", "configmap", "after-matrix", "-n", "team", "--from-literal=a=b"]).ok();
    let cms = b.kubectl().args(["get", "configmaps", "-n", "team", "-o", "name"]).ok();
    assert!(cms.contains("configmap/after-matrix"), "{cms}");
    b.kubectl().args(["delete", "pod", "ref", "-n", "team", "--wait=false"]).ok();
    assert!(failures.is_empty(), "{} matrix failures:\n{}", failures.len(), failures.join("\n"));
    BerthRun { denials: generic, policy }
}

fn authz_matrix_kube_apiserver(ours: &BerthRun) {
    let ns = Netns::new();
    let up = UpstreamControlPlane::start(&ns).unwrap_or_else(|e| panic!("upstream control plane: {e}"));
    let node = "matrix-node";
    let dir = common::temp_dir("authz-matrix-upstream");
    // kube-apiserver's bootstrap policy, compared with berth's below (roles and bindings both have).
    let roles = up.kubectl().args(["get", "clusterroles,clusterrolebindings", "-o", "json"]).ok();
    let ids = identities(dir.path(), up.ca(), &up.server(), node, up.admin_kubeconfig());
    let kubectl_as = |who: &str| up.kubectl_with(&ids[who].kubeconfig);
    setup(&|| up.kubectl(), node, true);
    let cases = api_matrix(node);
    let (mut failures, denials) = run_matrix(&cases, &kubectl_as);
    failures.extend(raw_checks(&|args: &[&str]| {
        let mut c = up.command("curl");
        c.args(args);
        c
    }, &up.server(), &ids, node));
    let generic: BTreeMap<usize, String> = denials.iter().map(|(i, s)| (*i, s.replace(node, "{N}"))).collect();
    let diff = compare(&ours.denials, &generic, &cases);
    eprintln!("berth vs kube-apiserver: {} of {} cases differ in their error text", diff.len(), cases.len());
    for d in &diff {
        eprintln!("{d}");
    }
    failures.extend(diff.into_iter().map(|d| format!("error text differs from berth's: {d}")));
    // The default policy: every ClusterRole and binding both create carries the same rules and
    // subjects.
    let diff = policy_differences(&ours.policy, &roles);
    eprintln!("default policy: {} differences", diff.len());
    failures.extend(diff);
    if failures.is_empty() {
        return;
    }
    up.dump_logs(40);
    panic!("{} matrix failures against kube-apiserver:\n{}", failures.len(), failures.join("\n"));
}
