//! The real upstream control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler built by upstream/build.sh) inside a test's network namespace, configured the
//! way `kubeadm init` configures it, plus the objects `kubeadm init` creates for `kubeadm join`
//! (cluster-info, bootstrap token, the bootstrap RBAC, kubelet-config). Our own equivalents of
//! kubeadm's phases (cmd/kubeadm/app/phases/{certs,controlplane,bootstraptoken,uploadconfig,
//! kubelet}), written from reading them.
//!
//! Deliberate differences from kubeadm, all for a short-lived test cluster: etcd speaks plain
//! HTTP on the namespace's loopback (nothing else can reach it) and skips fsync; the components
//! run as processes, not static pods; controller-manager and scheduler run without leader
//! election (a kube-apiserver restart would otherwise make them exit, and nothing restarts
//! them); kube-apiserver ends open watches 2s into a shutdown
//! (`--shutdown-watch-termination-grace-period`) so a restart takes seconds, not the 60s request
//! timeout; the admin kubeconfig is kubeadm's super-admin (group system:masters).
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth::pki::{self, CertificateAuthority, LeafSpec};

use super::berth::Kubectl;
use super::netns::Netns;
use super::{dump_log, stop_child, try_wait_until, Result};

/// kubeadm's documentation example token (`kubeadm init --token abcdef.0123456789abcdef`).
pub const TOKEN_ID: &str = "abcdef";
pub const TOKEN_SECRET: &str = "0123456789abcdef";
/// The group kubeadm's default bootstrap tokens authenticate as.
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
pub const POD_CIDR: &str = "10.244.0.0/16";
pub const CLUSTER_DNS: &str = "10.96.0.10";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
pub const API_PORT: u16 = 6443;

const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The pinned Kubernetes release, read from upstream/go.mod (e.g. "v1.37.2").
pub fn upstream_version() -> String {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let gomod = super::workspace_root().join("upstream/go.mod");
        let text = std::fs::read_to_string(&gomod).unwrap_or_else(|e| panic!("read {}: {e}", gomod.display()));
        text.lines()
            .map(str::split_whitespace)
            .find_map(|mut w| (w.next() == Some("k8s.io/kubernetes")).then(|| w.next()).flatten())
            .filter(|v| v.starts_with('v'))
            .unwrap_or_else(|| panic!("no k8s.io/kubernetes version in {}", gomod.display()))
            .to_owned()
    })
    .clone()
}

/// /var/cache/berth/upstream/<version>/bin (BERTH_UPSTREAM_CACHE overrides /var/cache/berth,
/// as for upstream/build.sh).
pub fn upstream_bin_dir() -> PathBuf {
    let root = std::env::var_os("BERTH_UPSTREAM_CACHE").map_or_else(|| PathBuf::from("/var/cache/berth"), PathBuf::from);
    root.join("upstream").join(upstream_version()).join("bin")
}

/// An upstream binary (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
/// kube-proxy, kubectl, etcd). When it is missing, runs `bash upstream/build.sh` once per test
/// process (tests/run.sh has normally done that already); panics if the build fails.
pub fn upstream_bin(name: &str) -> PathBuf {
    let path = upstream_bin_dir().join(name);
    if !path.exists() {
        static BUILT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
        let r = BUILT.get_or_init(|| {
            eprintln!("{} missing: running upstream/build.sh (a cold build takes a long time)", path.display());
            let st = Command::new("bash")
                .arg(super::workspace_root().join("upstream/build.sh"))
                .stdin(Stdio::null())
                .status()
                .map_err(|e| format!("cannot run upstream/build.sh: {e}"))?;
            if st.success() {
                Ok(())
            } else {
                Err(format!("upstream/build.sh failed ({st})"))
            }
        });
        if let Err(e) = r {
            panic!("upstream binary {name} unavailable: {e}");
        }
    }
    assert!(path.exists(), "{} missing after upstream/build.sh", path.display());
    path
}

/// One running component.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// etcd + kube-apiserver + kube-controller-manager + kube-scheduler in a netns, kubeadm-style.
/// Dropping it stops them (by PID, scheduler first, etcd last) and removes its directory unless
/// BERTH_E2E_KEEP is set.
pub struct UpstreamControlPlane {
    procs: Vec<Proc>,
    netns_path: String,
    node_ip: Ipv4Addr,
    ca: CertificateAuthority,
    dir: tempfile::TempDir,
    token: String,
}

impl UpstreamControlPlane {
    /// Generates the PKI and configuration, starts the four components in `ns` (listening on its
    /// node IP, :6443), creates the join objects, and waits until /readyz passes (RBAC bootstrap
    /// included), controller-manager and scheduler are healthy and the bootstrap signer has signed
    /// cluster-info for the token.
    pub fn start(ns: &Netns) -> Result<Self> {
        let started = Instant::now();
        for bin in ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"] {
            upstream_bin(bin);
        }
        let dir = super::temp_dir("berth-upstream-");
        let ca = CertificateAuthority::generate("kubernetes")?;
        let mut cp = UpstreamControlPlane {
            procs: Vec::new(),
            netns_path: ns.path(),
            node_ip: ns.node_ip,
            ca,
            dir,
            token: format!("{TOKEN_ID}.{TOKEN_SECRET}"),
        };
        cp.write_pki()?;
        cp.write_configs()?;
        let r = cp.boot();
        if let Err(e) = r {
            cp.dump_logs(60);
            return Err(e);
        }
        eprintln!(
            "upstream control plane {} ready in {:.1}s (dir {})",
            upstream_version(),
            started.elapsed().as_secs_f64(),
            cp.dir().display()
        );
        Ok(cp)
    }

    fn boot(&mut self) -> Result<()> {
        self.spawn("etcd")?;
        self.spawn("kube-apiserver")?;
        self.wait_apiserver_ready()?;
        self.spawn("kube-controller-manager")?;
        self.spawn("kube-scheduler")?;
        self.create_join_objects()?;
        self.wait_healthz("kube-controller-manager", 10257)?;
        self.wait_healthz("kube-scheduler", 10259)?;
        let key = format!("jws-kubeconfig-{TOKEN_ID}");
        self.wait("the bootstrap signer to sign kube-public/cluster-info", |cp| {
            let out = cp
                .kubectl()
                .args(["-n", "kube-public", "get", "configmap", "cluster-info", "-o", "json"])
                .output_raw();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            Ok(v["data"][&key].is_string().then_some(()))
        })
    }

    /// "https://<node ip>:6443"
    pub fn server(&self) -> String {
        format!("https://{}", self.endpoint())
    }

    /// "<node ip>:6443", the `berth join` / `kubeadm join` argument.
    pub fn endpoint(&self) -> String {
        format!("{}:{API_PORT}", self.node_ip)
    }

    pub fn node_ip(&self) -> Ipv4Addr {
        self.node_ip
    }

    /// The bootstrap token "abcdef.0123456789abcdef".
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `--discovery-token-ca-cert-hash`: "sha256:<hex of the CA's SubjectPublicKeyInfo>".
    pub fn ca_cert_hash(&self) -> String {
        use rcgen::PublicKeyData;
        let key = rcgen::KeyPair::from_pem(self.ca.key_pem()).expect("CA key parses");
        let spki = key.subject_public_key_info();
        let sha256 = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
            .tls13()
            .expect("a TLS 1.3 suite")
            .common
            .hash_provider;
        let digest = sha256.hash(&spki);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// The cluster CA certificate (PEM), <dir>/pki/ca.crt.
    pub fn ca_cert(&self) -> PathBuf {
        self.pki_dir().join("ca.crt")
    }

    /// The cluster CA (to issue extra certificates in tests).
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// Cluster-admin kubeconfig (kubeadm's super-admin.conf: group system:masters).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir().join("admin.conf")
    }

    /// /usr/bin/kubectl inside the namespace with the admin kubeconfig.
    pub fn kubectl(&self) -> Kubectl {
        self.kubectl_with(&self.admin_kubeconfig())
    }

    /// /usr/bin/kubectl inside the namespace with another kubeconfig.
    pub fn kubectl_with(&self, kubeconfig: &Path) -> Kubectl {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path))
            .arg("--")
            .arg("/usr/bin/kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--request-timeout=20s");
        Kubectl::from_command(cmd)
    }

    /// A command running `program` inside the control plane's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns_path)).arg("--").arg(program);
        c
    }

    /// The Metadata-level audit log of kube-apiserver (JSON lines, audit.k8s.io/v1 Event).
    pub fn audit_log(&self) -> PathBuf {
        self.dir().join("audit.log")
    }

    /// The log file of a component ("etcd", "kube-apiserver", ...).
    pub fn log(&self, component: &str) -> PathBuf {
        self.dir().join(format!("{component}.log"))
    }

    /// PID of a running component.
    pub fn pid(&self, component: &str) -> Option<u32> {
        self.procs.iter().find(|p| p.name == component).map(|p| p.child.id())
    }

    /// Stops kube-apiserver (SIGTERM, by PID), starts it again with the same flags and waits
    /// until it is ready. etcd, controller-manager and scheduler keep running.
    pub fn restart_apiserver(&mut self) {
        let t0 = Instant::now();
        if let Some(i) = self.procs.iter().position(|p| p.name == "kube-apiserver") {
            let mut p = self.procs.remove(i);
            stop_child(&mut p.child, Duration::from_secs(20));
        }
        let stopped = t0.elapsed();
        let r = self.spawn("kube-apiserver").and_then(|()| self.wait_apiserver_ready());
        if let Err(e) = r {
            self.dump_logs(60);
            panic!("restart kube-apiserver: {e}");
        }
        eprintln!(
            "kube-apiserver restarted: stopped in {:.1}s, ready again {:.1}s later",
            stopped.as_secs_f64(),
            (t0.elapsed() - stopped).as_secs_f64()
        );
    }

    /// The guard's directory: pki/, *.conf, etcd data, component logs, audit.log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Prints the tail of every component's log to stderr.
    pub fn dump_logs(&self, n: usize) {
        for name in ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"] {
            let log = self.log(name);
            if log.exists() {
                dump_log(name, &log, n);
            }
        }
    }

    fn pki_dir(&self) -> PathBuf {
        self.dir().join("pki")
    }

    fn write_pki(&self) -> Result<()> {
        let pki = self.pki_dir();
        std::fs::create_dir_all(&pki)?;
        write(&pki.join("ca.crt"), &self.ca.cert_pem, 0o644)?;
        write(&pki.join("ca.key"), self.ca.key_pem(), 0o600)?;
        // kubeadm's apiserver certificate SANs: node name, kubernetes.default..., the first
        // service IP and the advertise address (plus loopback for the in-netns probes).
        let mut sans: Vec<String> = ["kubernetes", "kubernetes.default", "kubernetes.default.svc"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        sans.push(format!("kubernetes.default.svc.{CLUSTER_DOMAIN}"));
        sans.extend(["localhost".to_owned(), "10.96.0.1".to_owned(), self.node_ip.to_string(), "127.0.0.1".to_owned()]);
        let leaves = [
            ("apiserver", LeafSpec::server("kube-apiserver", sans)),
            // kubeadm: no organisation; the ClusterRoleBinding kubeadm:apiserver-kubelet-client
            // grants system:kubelet-api-admin (created below).
            ("apiserver-kubelet-client", LeafSpec::client("kube-apiserver-kubelet-client", &[])),
            ("admin", LeafSpec::client("kubernetes-super-admin", &["system:masters"])),
            ("controller-manager", LeafSpec::client("system:kube-controller-manager", &[])),
            ("scheduler", LeafSpec::client("system:kube-scheduler", &[])),
        ];
        for (name, spec) in &leaves {
            let (cert, key) = self.ca.issue(spec)?;
            write(&pki.join(format!("{name}.crt")), &cert, 0o644)?;
            write(&pki.join(format!("{name}.key")), &key, 0o600)?;
        }
        // service-account signing key pair (kubeadm: sa.key / sa.pub)
        let sa = rcgen::KeyPair::generate()?;
        write(&pki.join("sa.key"), &sa.serialize_pem(), 0o600)?;
        write(&pki.join("sa.pub"), &sa.public_key_pem(), 0o644)?;
        Ok(())
    }

    fn write_configs(&self) -> Result<()> {
        let pki = self.pki_dir();
        let read = |f: &str| std::fs::read_to_string(pki.join(f));
        for (conf, cert, user) in [
            ("admin.conf", "admin", "kubernetes-super-admin"),
            ("controller-manager.conf", "controller-manager", "system:kube-controller-manager"),
            ("scheduler.conf", "scheduler", "system:kube-scheduler"),
        ] {
            pki::write_kubeconfig(
                &self.dir().join(conf),
                &self.server(),
                &self.ca.cert_pem,
                &read(&format!("{cert}.crt"))?,
                &read(&format!("{cert}.key"))?,
                user,
                &format!("{user}@kubernetes"),
            )?;
        }
        write(&self.dir().join("audit-policy.yaml"), AUDIT_POLICY, 0o644)?;
        Ok(())
    }

    /// The command line of a component, as kubeadm's static pod manifests have it.
    fn args(&self, name: &str) -> Vec<String> {
        let d = self.dir();
        let p = |f: &str| self.pki_dir().join(f).display().to_string();
        let conf = |f: &str| d.join(f).display().to_string();
        let ip = self.node_ip;
        let v: Vec<String> = match name {
            "etcd" => vec![
                "--name=default".into(),
                format!("--data-dir={}", d.join("etcd").display()),
                "--listen-client-urls=http://127.0.0.1:2379".into(),
                "--advertise-client-urls=http://127.0.0.1:2379".into(),
                "--listen-peer-urls=http://127.0.0.1:2380".into(),
                "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
                "--initial-cluster=default=http://127.0.0.1:2380".into(),
                "--snapshot-count=10000".into(),
                "--unsafe-no-fsync".into(),
            ],
            "kube-apiserver" => vec![
                format!("--advertise-address={ip}"),
                "--allow-privileged=true".into(),
                "--authorization-mode=Node,RBAC".into(),
                format!("--client-ca-file={}", p("ca.crt")),
                "--enable-admission-plugins=NodeRestriction".into(),
                "--enable-bootstrap-token-auth=true".into(),
                "--etcd-servers=http://127.0.0.1:2379".into(),
                format!("--kubelet-client-certificate={}", p("apiserver-kubelet-client.crt")),
                format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
                "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname".into(),
                format!("--secure-port={API_PORT}"),
                format!("--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}"),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--audit-policy-file={}", conf("audit-policy.yaml")),
                format!("--audit-log-path={}", self.audit_log().display()),
                "--audit-log-maxsize=200".into(),
                // end open watches 2s into a shutdown instead of waiting out the 60s request
                // timeout (a static pod's kubelet would SIGKILL it after 30s anyway)
                "--shutdown-watch-termination-grace-period=2s".into(),
            ],
            "kube-controller-manager" => vec![
                "--allocate-node-cidrs=true".into(),
                format!("--authentication-kubeconfig={}", conf("controller-manager.conf")),
                format!("--authorization-kubeconfig={}", conf("controller-manager.conf")),
                "--bind-address=127.0.0.1".into(),
                format!("--client-ca-file={}", p("ca.crt")),
                format!("--cluster-cidr={POD_CIDR}"),
                "--cluster-name=kubernetes".into(),
                format!("--cluster-signing-cert-file={}", p("ca.crt")),
                format!("--cluster-signing-key-file={}", p("ca.key")),
                "--controllers=*,bootstrapsigner,tokencleaner".into(),
                format!("--kubeconfig={}", conf("controller-manager.conf")),
                "--leader-elect=false".into(),
                format!("--root-ca-file={}", p("ca.crt")),
                format!("--service-account-private-key-file={}", p("sa.key")),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--use-service-account-credentials=true".into(),
            ],
            "kube-scheduler" => vec![
                format!("--authentication-kubeconfig={}", conf("scheduler.conf")),
                format!("--authorization-kubeconfig={}", conf("scheduler.conf")),
                "--bind-address=127.0.0.1".into(),
                format!("--kubeconfig={}", conf("scheduler.conf")),
                "--leader-elect=false".into(),
            ],
            other => panic!("unknown component {other}"),
        };
        v
    }

    fn spawn(&mut self, name: &'static str) -> Result<()> {
        let log = self.log(name);
        let out = File::options().create(true).append(true).open(&log)?;
        let child = self
            .command(upstream_bin(name))
            .args(self.args(name))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("start {name}: {e}"))?;
        self.procs.push(Proc { name, child, log });
        Ok(())
    }

    /// Fails when a component has exited (its log tail in the message).
    fn check_alive(&mut self) -> std::result::Result<(), String> {
        for p in &mut self.procs {
            if let Ok(Some(st)) = p.child.try_wait() {
                return Err(format!("{} exited ({st}):\n{}", p.name, super::tail(&p.log, 30)));
            }
        }
        Ok(())
    }

    /// Polls `f` until Some, failing early if a component died.
    fn wait<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&Self) -> std::result::Result<Option<T>, String>,
    ) -> Result<T> {
        let mut dead = None;
        let r = try_wait_until(what, START_TIMEOUT, || {
            if let Err(e) = self.check_alive() {
                dead = Some(e);
                return Ok(Some(None));
            }
            f(self).map(|v| v.map(Some))
        })?;
        match (r, dead) {
            (Some(v), _) => Ok(v),
            (None, Some(e)) => Err(format!("waiting for {what}: {e}").into()),
            (None, None) => unreachable!("wait ended without a value or a dead component"),
        }
    }

    fn wait_apiserver_ready(&mut self) -> Result<()> {
        // /readyz includes poststarthook/rbac/bootstrap-roles and the bootstrap priority classes
        let url = format!("{}/readyz", self.server());
        self.wait("kube-apiserver /readyz", |cp| {
            let out = cp.curl_admin(&url)?;
            Ok((out.trim() == "ok").then_some(()))
        })
    }

    fn wait_healthz(&mut self, name: &str, port: u16) -> Result<()> {
        let url = format!("https://127.0.0.1:{port}/healthz");
        self.wait(&format!("{name} /healthz"), |cp| {
            let out = cp.command("curl").args(["-sSk", "--max-time", "5", &url]).stdin(Stdio::null()).output();
            let out = out.map_err(|e| e.to_string())?;
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && body.trim() == "ok" {
                Ok(Some(()))
            } else {
                Err(format!("{body} {}", String::from_utf8_lossy(&out.stderr)))
            }
        })
    }

    /// GET with the admin client certificate (curl, inside the namespace); the body on success.
    fn curl_admin(&self, url: &str) -> std::result::Result<String, String> {
        let pki = self.pki_dir();
        let out = self
            .command("curl")
            .args(["-sS", "--max-time", "5", "--fail-with-body", "--cacert"])
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(pki.join("admin.crt"))
            .arg("--key")
            .arg(pki.join("admin.key"))
            .arg(url)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(body)
        } else {
            Err(format!("{body} {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// What `kubeadm init` creates for joining nodes (phases bootstrap-token, upload-config
    /// kubeadm/kubelet), applied through kubectl with the admin kubeconfig.
    fn create_join_objects(&mut self) -> Result<()> {
        let objects = join_objects(&self.server(), &self.ca.cert_pem, &cluster_configuration(&self.endpoint()));
        let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": objects });
        let input = serde_json::to_string(&list)?;
        // retried: the RBAC/namespace controllers may still be settling right after /readyz
        self.wait("kubectl apply of the kubeadm join objects", |cp| {
            let out = cp.kubectl().args(["apply", "-f", "-"]).stdin(&input);
            if out.status.success() {
                Ok(Some(()))
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        })
    }
}

impl Drop for UpstreamControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs(80);
        }
        // reverse start order: scheduler, controller-manager, apiserver, etcd
        while let Some(mut p) = self.procs.pop() {
            stop_child(&mut p.child, Duration::from_secs(15));
        }
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Metadata level for every request; no RequestReceived stage (one line per request).
const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
";

/// The `kubelet` key of kube-system/kubelet-config: kubeadm's defaulted KubeletConfiguration.
fn kubelet_configuration() -> String {
    format!(
        "\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
  webhook:
    cacheAuthorizedTTL: 0s
    cacheUnauthorizedTTL: 0s
cgroupDriver: systemd
clusterDNS:
- {CLUSTER_DNS}
clusterDomain: {CLUSTER_DOMAIN}
containerRuntimeEndpoint: \"\"
cpuManagerReconcilePeriod: 0s
crashLoopBackOff: {{}}
evictionPressureTransitionPeriod: 0s
fileCheckFrequency: 0s
healthzBindAddress: 127.0.0.1
healthzPort: 10248
httpCheckFrequency: 0s
imageMaximumGCAge: 0s
imageMinimumGCAge: 0s
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: \"0\"
    text:
      infoBufferSize: \"0\"
  verbosity: 0
memorySwap: {{}}
nodeStatusReportFrequency: 0s
nodeStatusUpdateFrequency: 0s
rotateCertificates: true
runtimeRequestTimeout: 0s
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
staticPodPath: /etc/kubernetes/manifests
streamingConnectionIdleTimeout: 0s
syncFrequency: 0s
volumeStatsAggPeriod: 0s
"
    )
}

/// The `ClusterConfiguration` key of kube-system/kubeadm-config (what `kubeadm join` reads).
fn cluster_configuration(endpoint: &str) -> String {
    format!(
        "\
apiServer: {{}}
apiVersion: kubeadm.k8s.io/v1beta4
caCertificateValidityPeriod: 87600h0m0s
certificateValidityPeriod: 8760h0m0s
certificatesDir: /etc/kubernetes/pki
clusterName: kubernetes
controlPlaneEndpoint: {endpoint}
controllerManager: {{}}
dns: {{}}
encryptionAlgorithm: ECDSA-P256
etcd:
  local:
    dataDir: /var/lib/etcd
imageRepository: registry.k8s.io
kind: ClusterConfiguration
kubernetesVersion: {}
networking:
  dnsDomain: {CLUSTER_DOMAIN}
  podSubnet: {POD_CIDR}
  serviceSubnet: {SERVICE_CIDR}
proxy: {{}}
scheduler: {{}}
",
        upstream_version()
    )
}

/// The kube-public/cluster-info kubeconfig: the CA and the server, no users (kubeadm's shape).
fn cluster_info_kubeconfig(server: &str, ca_pem: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: \"\"
contexts: null
current-context: \"\"
kind: Config
preferences: {{}}
users: null
"
    )
}

fn rbac_ref(kind: &str, name: &str) -> serde_json::Value {
    serde_json::json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name })
}

fn subject(kind: &str, name: &str) -> serde_json::Value {
    serde_json::json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name })
}

fn cluster_role_binding(name: &str, role: &str, subjects: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": { "name": name },
        "roleRef": rbac_ref("ClusterRole", role),
        "subjects": subjects,
    })
}

/// A Role allowing `get` of one ConfigMap, and its RoleBinding to `subjects` (kubeadm's pattern
/// for cluster-info, kubelet-config and kubeadm-config).
fn configmap_reader(ns: &str, name: &str, configmap: &str, subjects: Vec<serde_json::Value>) -> [serde_json::Value; 2] {
    [
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": { "name": name, "namespace": ns },
            "rules": [{ "apiGroups": [""], "resources": ["configmaps"], "resourceNames": [configmap], "verbs": ["get"] }],
        }),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": { "name": name, "namespace": ns },
            "roleRef": rbac_ref("Role", name),
            "subjects": subjects,
        }),
    ]
}

fn config_map(ns: &str, name: &str, key: &str, value: String) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": name, "namespace": ns },
        "data": { key: value },
    })
}

/// Every object of kubeadm's bootstrap-token and upload-config phases (pure).
fn join_objects(server: &str, ca_pem: &str, cluster_config: &str) -> Vec<serde_json::Value> {
    let bootstrappers = || subject("Group", BOOTSTRAP_GROUP);
    let nodes = || subject("Group", "system:nodes");
    let expiration = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    let mut v = vec![
        // phases/bootstraptoken/clusterinfo
        config_map("kube-public", "cluster-info", "kubeconfig", cluster_info_kubeconfig(server, ca_pem)),
        // the bootstrap token (kubeadm's default TTL: 24h)
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": { "name": format!("bootstrap-token-{TOKEN_ID}"), "namespace": "kube-system" },
            "stringData": {
                "description": "The default bootstrap token generated by 'kubeadm init'.",
                "token-id": TOKEN_ID,
                "token-secret": TOKEN_SECRET,
                "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "usage-bootstrap-authentication": "true",
                "usage-bootstrap-signing": "true",
                "auth-extra-groups": BOOTSTRAP_GROUP,
            },
        }),
        // phases/bootstraptoken/node: bootstrap tokens may post CSRs, their node-client CSRs are
        // approved, so are nodes' renewals; they may get nodes (join checks for a name clash)
        cluster_role_binding("kubeadm:kubelet-bootstrap", "system:node-bootstrapper", vec![bootstrappers()]),
        cluster_role_binding(
            "kubeadm:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![bootstrappers()],
        ),
        cluster_role_binding(
            "kubeadm:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![nodes()],
        ),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": { "name": "kubeadm:get-nodes" },
            "rules": [{ "apiGroups": [""], "resources": ["nodes"], "verbs": ["get"] }],
        }),
        cluster_role_binding("kubeadm:get-nodes", "kubeadm:get-nodes", vec![bootstrappers()]),
        // the API server's kubelet client may use the kubelet API (logs, exec, ...)
        cluster_role_binding(
            "kubeadm:apiserver-kubelet-client",
            "system:kubelet-api-admin",
            vec![subject("User", "kube-apiserver-kubelet-client")],
        ),
        // phases/uploadconfig and phases/kubelet
        config_map("kube-system", "kubeadm-config", "ClusterConfiguration", cluster_config.to_owned()),
        config_map("kube-system", "kubelet-config", "kubelet", kubelet_configuration()),
    ];
    v.extend(configmap_reader(
        "kube-public",
        "kubeadm:bootstrap-signer-clusterinfo",
        "cluster-info",
        vec![subject("User", "system:anonymous")],
    ));
    v.extend(configmap_reader(
        "kube-system",
        "kubeadm:nodes-kubeadm-config",
        "kubeadm-config",
        vec![bootstrappers(), nodes()],
    ));
    v.extend(configmap_reader("kube-system", "kubeadm:kubelet-config", "kubelet-config", vec![nodes(), bootstrappers()]));
    v
}
