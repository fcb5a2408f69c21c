//! etcd + kube-apiserver (+ kube-controller-manager) on loopback.
//!
//! Each control plane lives in its own directory with random free ports, its
//! own CA and tokens, so several can run side by side (one per test). The
//! node components of the full local cluster plug in after
//! [`ControlPlane::start`] the same way the controller manager does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::{Deserialize, Serialize};

use crate::binaries::Binaries;
use crate::certs::{self, Ca};
use crate::process::{Proc, free_port, stop_recorded};
use crate::{Error, Result, io};

/// How to start a control plane.
#[derive(Clone, Debug)]
pub struct Options {
    /// Also run kube-controller-manager (garbage collection of owned
    /// objects, DaemonSet and CronJob status, service-account tokens).
    pub controller_manager: bool,
    /// Also run kube-scheduler (pods reach a node only through it).
    pub scheduler: bool,
    /// Directory to live in; a fresh temporary one when `None`.
    pub dir: Option<PathBuf>,
    /// Install Sightline's CRDs before the controller manager starts, so its
    /// garbage collector knows the kinds from the start (it rediscovers new
    /// kinds only every 30 s).
    pub install_crds: bool,
    /// The address the API server listens on and advertises: loopback, or
    /// the gateway of a node's pod network so that pods reach it (through
    /// the `kubernetes` Service).
    pub address: std::net::Ipv4Addr,
    /// The node that will join, if any: the control plane issues its
    /// credentials (and kube-proxy's).
    pub node: Option<String>,
}

impl Options {
    /// etcd and kube-apiserver alone, no CRDs: for tests of the API itself.
    pub fn api_only() -> Self {
        Self {
            controller_manager: false,
            install_crds: false,
            ..Self::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            controller_manager: true,
            scheduler: false,
            dir: None,
            install_crds: true,
            address: std::net::Ipv4Addr::LOCALHOST,
            node: None,
        }
    }
}

/// A running control plane; dropping it stops every process it started.
pub struct ControlPlane {
    procs: Vec<Proc>,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// Path of the admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The API server URL.
    pub server: String,
    /// The binaries in use.
    pub binaries: Binaries,
    client: kube::Client,
}

/// What `cargo xtask cluster up` leaves behind for `env` and `down`.
#[derive(Serialize, Deserialize, Debug)]
pub struct State {
    /// The cluster's directory.
    pub dir: PathBuf,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Directory with `kubectl` and friends.
    pub bin_dir: PathBuf,
    /// `(component, pid, program)` in start order.
    pub pids: Vec<(String, u32, String)>,
    /// What the node left on the machine, when the cluster has one.
    #[serde(default)]
    pub node: Option<crate::node::Cleanup>,
}

impl State {
    /// The state file inside a cluster directory.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// Reads the state of the cluster in `dir`, if one was started there.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = Self::path(dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Io {
                    what: format!("reading {}", path.display()),
                    source: std::io::Error::other(e),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io {
                what: format!("reading {}", path.display()),
                source: e,
            }),
        }
    }

    /// Writes the state file into the cluster's directory.
    pub fn save(&self) -> Result<()> {
        let path = Self::path(&self.dir);
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Io {
            what: "serializing the cluster state".into(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&path, json).map_err(io(format!("writing {}", path.display())))
    }

    /// Stops every recorded process (newest first) that is still ours;
    /// with a node, the scheduler first and every pod drained, and what
    /// the node left removed at the end. Returns what it did, a line each.
    pub fn stop(&self) -> Vec<String> {
        let mut stopped = Vec::new();
        let mut stop = |name: &str, pid: u32, program: &str| {
            if stop_recorded(pid, program, Duration::from_secs(10)) {
                stopped.push(format!("stopped {name} (pid {pid})"));
            }
        };
        if let Some(node) = &self.node {
            for (name, pid, program) in self.pids.iter().filter(|(n, _, _)| n == "kube-scheduler") {
                stop(name, *pid, program);
            }
            let kubectl = crate::node::Kubectl::at(&self.bin_dir, &self.kubeconfig);
            crate::node::drain(
                &kubectl,
                &node.dir.join("containerd/containerd.sock"),
                Duration::from_secs(60),
            );
        }
        for (name, pid, program) in self.pids.iter().rev() {
            stop(name, *pid, program);
        }
        if let Some(node) = &self.node {
            stopped.extend(node.run().into_iter().map(|w| format!("removed {w}")));
        }
        stopped
    }
}

/// Waits until the last process listens on `port` and is still running a
/// moment later (so it is ours, not another process's, that answers).
async fn wait_listening(procs: &mut [Proc], port: u16, log: &Path) -> Result<()> {
    let start = Instant::now();
    let Some(p) = procs.last_mut() else {
        return Ok(());
    };
    loop {
        p.check_running()?;
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return p.check_running();
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(Error::NotReady {
                component: p.name.clone(),
                seconds: 30,
                log: log.display().to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl ControlPlane {
    /// Starts a control plane, building the binaries first if needed.
    pub async fn start(opts: Options) -> Result<Self> {
        let binaries = tokio::task::spawn_blocking(Binaries::ensure)
            .await
            .map_err(|e| Error::Io {
                what: "building binaries".into(),
                source: std::io::Error::other(e),
            })??;
        let (tmp, dir) = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
                (None, d.clone())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("sightline-cp-")
                    .tempdir()
                    .map_err(io("creating a temporary directory"))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let pki = Pki::write(&dir, opts.address, opts.node.as_deref())?;
        let mut procs = Vec::new();

        let (client_port, peer_port) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = std::process::Command::new(&binaries.etcd);
        etcd.args([
            "--name=default",
            &format!("--data-dir={}", dir.join("etcd").display()),
            &format!("--listen-client-urls={etcd_url}"),
            &format!("--advertise-client-urls={etcd_url}"),
            &format!("--listen-peer-urls={peer_url}"),
            &format!("--initial-advertise-peer-urls={peer_url}"),
            &format!("--initial-cluster=default={peer_url}"),
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]);
        procs.push(Proc::spawn("etcd", etcd, &dir.join("etcd.log"))?);
        wait_listening(&mut procs, client_port, &dir.join("etcd.log")).await?;

        let port = free_port()?;
        let address = opts.address;
        let server = format!("https://{address}:{port}");
        let mut apiserver = binaries.command("kube-apiserver")?;
        apiserver.args([
            &format!("--etcd-servers={etcd_url}"),
            &format!("--bind-address={address}"),
            &format!("--advertise-address={address}"),
            &format!("--secure-port={port}"),
            &format!("--cert-dir={}", dir.join("certs").display()),
            &format!("--tls-cert-file={}", pki.serving_cert.display()),
            &format!("--tls-private-key-file={}", pki.serving_key.display()),
            &format!("--client-ca-file={}", pki.ca.display()),
            &format!("--token-auth-file={}", pki.tokens.display()),
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            &format!("--service-account-key-file={}", pki.sa_pub.display()),
            &format!(
                "--service-account-signing-key-file={}",
                pki.sa_key.display()
            ),
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true",
            "--profiling=false",
            // How it authenticates to kubelets (for logs and exec); kubelets
            // trust the cluster CA.
            &format!(
                "--kubelet-client-certificate={}",
                pki.kubelet_client_cert.display()
            ),
            &format!("--kubelet-client-key={}", pki.kubelet_client_key.display()),
            "--kubelet-preferred-address-types=InternalIP",
            "--v=1",
        ]);
        procs.push(Proc::spawn(
            "kube-apiserver",
            apiserver,
            &dir.join("kube-apiserver.log"),
        )?);

        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &server, &pki.ca_pem, &pki.admin_token)?;
        for (file, token) in [
            ("kubelet.kubeconfig", &pki.node_token),
            ("kube-proxy.kubeconfig", &pki.proxy_token),
            ("coredns.kubeconfig", &pki.dns_token),
        ] {
            write_kubeconfig(&dir.join(file), &server, &pki.ca_pem, token)?;
        }
        let client = client_for(&kubeconfig).await?;
        let mut cp = Self {
            procs,
            dir,
            _tmp: tmp,
            kubeconfig,
            server,
            binaries,
            client,
        };
        cp.wait_apiserver_ready(Duration::from_secs(90)).await?;

        if opts.install_crds {
            crate::helpers::install_crds(&cp.client).await?;
        }
        if opts.controller_manager {
            cp.start_controller_manager(&pki).await?;
        }
        if opts.scheduler {
            cp.start_scheduler(&pki)?;
        }
        Ok(cp)
    }

    fn start_scheduler(&mut self, pki: &Pki) -> Result<()> {
        let kubeconfig = self.dir.join("kube-scheduler.kubeconfig");
        write_kubeconfig(&kubeconfig, &self.server, &pki.ca_pem, &pki.scheduler_token)?;
        let mut cmd = self.binaries.command("kube-scheduler")?;
        cmd.args([
            &format!("--kubeconfig={}", kubeconfig.display()),
            &format!("--authentication-kubeconfig={}", kubeconfig.display()),
            &format!("--authorization-kubeconfig={}", kubeconfig.display()),
            "--bind-address=127.0.0.1",
            &format!("--secure-port={}", free_port()?),
            "--leader-elect=false",
            "--v=1",
        ]);
        self.procs.push(Proc::spawn(
            "kube-scheduler",
            cmd,
            &self.dir.join("kube-scheduler.log"),
        )?);
        Ok(())
    }

    async fn wait_apiserver_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            for p in &mut self.procs {
                p.check_running()?;
            }
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| Error::Io {
                    what: "building a request".into(),
                    source: std::io::Error::other(e),
                })?;
            if let Ok(text) = self.client.request_text(req).await
                && text.trim() == "ok"
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::NotReady {
                    component: "kube-apiserver".into(),
                    seconds: timeout.as_secs(),
                    log: self.dir.join("kube-apiserver.log").display().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn start_controller_manager(&mut self, pki: &Pki) -> Result<()> {
        let kubeconfig = self.dir.join("kube-controller-manager.kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &self.server,
            &pki.ca_pem,
            &pki.controller_manager_token,
        )?;
        let mut kcm = self.binaries.command("kube-controller-manager")?;
        kcm.args([
            &format!("--kubeconfig={}", kubeconfig.display()),
            &format!("--authentication-kubeconfig={}", kubeconfig.display()),
            &format!("--authorization-kubeconfig={}", kubeconfig.display()),
            "--bind-address=127.0.0.1",
            &format!("--secure-port={}", free_port()?),
            &format!("--cert-dir={}", self.dir.join("certs-kcm").display()),
            "--leader-elect=false",
            &format!(
                "--service-account-private-key-file={}",
                pki.sa_key.display()
            ),
            &format!("--root-ca-file={}", pki.ca.display()),
            "--use-service-account-credentials=true",
            "--concurrent-gc-syncs=5",
            "--v=1",
        ]);
        self.procs.push(Proc::spawn(
            "kube-controller-manager",
            kcm,
            &self.dir.join("kube-controller-manager.log"),
        )?);
        // The root CA publisher writing kube-root-ca.crt into `default` shows
        // the controllers are running and talking to the API server.
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), "default");
        let start = Instant::now();
        let timeout = Duration::from_secs(90);
        loop {
            for p in &mut self.procs {
                p.check_running()?;
            }
            if cms
                .get_opt("kube-root-ca.crt")
                .await
                .ok()
                .flatten()
                .is_some()
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::NotReady {
                    component: "kube-controller-manager".into(),
                    seconds: timeout.as_secs(),
                    log: self
                        .dir
                        .join("kube-controller-manager.log")
                        .display()
                        .to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A client authenticated as cluster admin.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Writes a kubeconfig that authenticates with `token` (for example a
    /// ServiceAccount's, to act as a less privileged user) and returns its path.
    pub fn kubeconfig_for_token(&self, name: &str, token: &str) -> Result<PathBuf> {
        let ca_path = self.dir().join("pki/ca.crt");
        let ca = std::fs::read_to_string(&ca_path)
            .map_err(io(format!("reading {}", ca_path.display())))?;
        let path = self.dir().join(format!("{name}.kubeconfig"));
        write_kubeconfig(&path, &self.server, &ca, token)?;
        Ok(path)
    }

    /// The control plane's directory (logs, certificates, kubeconfig).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `kubectl` pointed at this control plane.
    pub fn kubectl(&self) -> Result<std::process::Command> {
        let mut cmd = self.binaries.command("kubectl")?;
        cmd.env("KUBECONFIG", &self.kubeconfig);
        Ok(cmd)
    }

    /// Leaves the processes running and returns what is needed to stop them
    /// later; the directory is kept.
    pub fn detach(&mut self) -> Result<State> {
        let bin_dir = self.dir.join("bin");
        self.binaries.link_into(&bin_dir)?;
        let mut pids = Vec::new();
        for p in std::mem::take(&mut self.procs) {
            let program = if p.name == "etcd" {
                self.binaries.etcd.display().to_string()
            } else {
                p.name.clone()
            };
            let name = p.name.clone();
            pids.push((name, p.detach(), program));
        }
        let state = State {
            dir: self.dir.clone(),
            kubeconfig: self.kubeconfig.clone(),
            bin_dir,
            pids,
            node: None,
        };
        state.save()?;
        if let Some(t) = self._tmp.take() {
            let _ = t.keep();
        }
        Ok(state)
    }

    /// Stops one component (the scheduler, before a node is drained).
    pub fn stop_component(&mut self, name: &str) {
        if let Some(i) = self.procs.iter().position(|p| p.name == name) {
            let mut p = self.procs.remove(i);
            p.stop(Duration::from_secs(10));
        }
    }

    /// Stops every process, newest first.
    pub fn stop(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            p.stop(Duration::from_secs(10));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Pki {
    ca: PathBuf,
    ca_pem: String,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    kubelet_client_cert: PathBuf,
    kubelet_client_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
    tokens: PathBuf,
    admin_token: String,
    controller_manager_token: String,
    scheduler_token: String,
    node_token: String,
    proxy_token: String,
    dns_token: String,
}

impl Pki {
    fn write(dir: &Path, address: std::net::Ipv4Addr, node: Option<&str>) -> Result<Self> {
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki).map_err(io(format!("creating {}", pki.display())))?;
        let ca = Ca::new()?;
        let address = address.to_string();
        let serving = ca.serving(
            "kube-apiserver",
            &[
                "127.0.0.1",
                &address,
                "localhost",
                "10.96.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )?;
        let kubelet_client = ca.client("kube-apiserver-kubelet-client", &["system:masters"])?;
        let admin_token = random_token();
        let controller_manager_token = random_token();
        let scheduler_token = random_token();
        let node_token = random_token();
        let proxy_token = random_token();
        let dns_token = random_token();
        let mut tokens = format!(
            "{admin_token},sightline-admin,sightline-admin,\"system:masters\"\n\
             {controller_manager_token},system:kube-controller-manager,system:kube-controller-manager\n\
             {scheduler_token},system:kube-scheduler,system:kube-scheduler\n\
             {proxy_token},system:kube-proxy,system:kube-proxy\n\
             {dns_token},system:coredns,system:coredns\n"
        );
        if let Some(node) = node {
            // The Node authorizer knows a kubelet by this name and group.
            tokens.push_str(&format!(
                "{node_token},system:node:{node},system:node:{node},\"system:nodes\"\n"
            ));
        }
        let (sa_key, sa_pub) = certs::service_account_key()?;
        let files = [
            ("ca.crt", ca.cert_pem()),
            ("apiserver.crt", serving.cert),
            ("apiserver.key", serving.key),
            ("apiserver-kubelet-client.crt", kubelet_client.cert),
            ("apiserver-kubelet-client.key", kubelet_client.key),
            ("sa.key", sa_key),
            ("sa.pub", sa_pub),
            ("tokens.csv", tokens),
        ];
        for (name, content) in &files {
            let path = pki.join(name);
            std::fs::write(&path, content).map_err(io(format!("writing {}", path.display())))?;
        }
        Ok(Self {
            ca: pki.join("ca.crt"),
            ca_pem: ca.cert_pem(),
            serving_cert: pki.join("apiserver.crt"),
            serving_key: pki.join("apiserver.key"),
            kubelet_client_cert: pki.join("apiserver-kubelet-client.crt"),
            kubelet_client_key: pki.join("apiserver-kubelet-client.key"),
            sa_key: pki.join("sa.key"),
            sa_pub: pki.join("sa.pub"),
            tokens: pki.join("tokens.csv"),
            admin_token,
            controller_manager_token,
            scheduler_token,
            node_token,
            proxy_token,
            dns_token,
        })
    }
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_kubeconfig(path: &Path, server: &str, ca_pem: &str, token: &str) -> Result<()> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sightline-local\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: sightline-local\n  context:\n    cluster: sightline-local\n    user: admin\ncurrent-context: sightline-local\n"
    );
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

/// A client for the kubeconfig at `path`.
pub async fn client_for(path: &Path) -> Result<kube::Client> {
    let err = |message: String| Error::Kubeconfig {
        path: path.display().to_string(),
        message,
    };
    let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| Error::Kube {
        what: "building a client".into(),
        source: e,
    })
}
