//! `cargo xtask cluster up|down|env` and `cargo xtask demo`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sightline_testenv::cluster::Cluster;
use sightline_testenv::controlplane::State;
use sightline_testenv::images::{binary_image, sightline_image};
use sightline_testenv::{ControlPlane, Options, binaries::cache_dir};

use crate::{root, run};

fn dir() -> PathBuf {
    cache_dir().join("cluster")
}

fn running(state: &State) -> bool {
    state
        .pids
        .iter()
        .all(|(_, pid, _)| Path::new(&format!("/proc/{pid}")).exists())
}

/// Starts the local cluster (or reuses a running one) and returns its state.
pub async fn up(control_plane_only: bool) -> Result<State> {
    crate::setup()?;
    if let Some(state) = State::read(&dir())? {
        if running(&state) && (control_plane_only || state.node.is_some()) {
            eprintln!("the local cluster is already running");
            print_env(&state);
            return Ok(state);
        }
        eprintln!("stopping the previous local cluster");
        for stopped in state.stop() {
            eprintln!("{stopped}");
        }
        let _ = std::fs::remove_dir_all(dir());
    }
    let started = Instant::now();
    let state = if control_plane_only {
        let mut cp = ControlPlane::start(Options {
            dir: Some(dir()),
            ..Options::default()
        })
        .await?;
        cp.detach()?
    } else {
        let cluster = Cluster::start(Some(dir())).await?;
        eprintln!(
            "node {} is Ready {:.1}s after the start",
            sightline_testenv::node::NODE_NAME,
            cluster.startup.as_secs_f64()
        );
        let mut state = cluster.detach()?;
        // The storage provisioner outlives this command: a process of
        // its own, stopped by `cluster down` like the others.
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["cluster", "provisioner"]);
        let log = state.dir.join("local-provisioner.log");
        let provisioner = sightline_testenv::process::Proc::spawn("local provisioner", cmd, &log)?;
        state.pids.push((
            "local-provisioner".into(),
            provisioner.detach(),
            "provisioner".into(),
        ));
        state.save()?;
        state
    };
    eprintln!(
        "local cluster is up in {:.1}s (logs and certificates in {})",
        started.elapsed().as_secs_f64(),
        state.dir.display()
    );
    print_env(&state);
    Ok(state)
}

fn print_env(state: &State) {
    println!("export KUBECONFIG={}", state.kubeconfig.display());
    println!("export PATH={}:$PATH", state.bin_dir.display());
}

/// Runs the local cluster's storage provisioner until it is stopped.
pub async fn provisioner() -> Result<()> {
    tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(false)
        .init();
    let state = State::read(&dir())?.context("no local cluster")?;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&state.kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    sightline_testenv::node::storage::run(
        client,
        sightline_testenv::cluster::volumes_dir(&state.dir),
    )
    .await?;
    Ok(())
}

/// Prints the exports of the running cluster.
pub fn env() -> Result<()> {
    match State::read(&dir())? {
        Some(state) => {
            print_env(&state);
            Ok(())
        }
        None => bail!("no local cluster; start one with `cargo xtask cluster up`"),
    }
}

/// Stops every process the cluster started (by PID), removes what its node
/// added to the machine, and removes its directory.
pub fn down() -> Result<()> {
    let Some(state) = State::read(&dir())? else {
        eprintln!("no local cluster is running");
        return Ok(());
    };
    for stopped in state.stop() {
        eprintln!("{stopped}");
    }
    std::fs::remove_dir_all(&state.dir)
        .with_context(|| format!("removing {}", state.dir.display()))?;
    eprintln!("local cluster removed");
    Ok(())
}

/// The examples the demo applies: those whose sensors exist today.
const DEMO_EXAMPLES: &[&str] = &[
    "examples/activation-key.yaml",
    "examples/container-sensor.yaml",
    "examples/tag-rule.yaml",
    "examples/runtime-sensor.yaml",
    "examples/runtime-policy.yaml",
    "examples/connector.yaml",
    "examples/image-policy.yaml",
];

/// The whole flow on the local cluster: images built here and imported
/// into the node, the chart installed, the examples applied, the sensors
/// running, and the inventory printed.
pub async fn demo() -> Result<()> {
    let started = Instant::now();
    let step = |n: u32, what: &str| {
        eprintln!(
            "\n==> [{}] step {n}/7: {what}",
            sightline_testenv::binaries::elapsed(started.elapsed())
        );
    };
    step(
        1,
        "the local cluster (a first run installs packages and builds etcd, Kubernetes and helm from Go modules: 15-30 minutes on two cores; later runs: seconds)",
    );
    let state = up(false).await?;
    let node = state
        .node
        .as_ref()
        .context("the local cluster has no node")?;
    step(
        2,
        "building the operator, sensor and CLI in release mode (a first build takes about 10 minutes)",
    );
    run(crate::cargo().args([
        "build",
        "--release",
        "-p",
        "sightline-operator",
        "-p",
        "sightline-sensor",
        "-p",
        "sightline",
    ]))?;
    step(
        3,
        "images: Sightline's and a Debian 12 workload with old npm and PyPI libraries, imported into the node's containerd",
    );
    let release = crate::target_dir().join("release");
    let socket = node.dir.join("containerd/containerd.sock");
    let images = state.dir.join("images");
    for (name, user) in [
        ("sightline-operator", "65532:65532"),
        ("sightline-sensor", "0:0"),
    ] {
        let archive = binary_image(&images, name, &release.join(name), user)?;
        run(Command::new("/usr/bin/ctr")
            .arg("--address")
            .arg(&socket)
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(&archive))?;
    }
    // Something worth inventorying: a workload on a real Debian 12 image
    // (debootstrap, cached after the first run), with its 100+ packages,
    // and an application layer with libraries real advisories affect.
    let debian = images.join("debian.tar");
    sightline_testenv::archive::docker_archive(
        &["sightline.local/legacy-app:1.0"],
        &[
            sightline_testenv::archive::Layer::from_tar(
                &sightline_testenv::images::debian_rootfs()?,
            )?,
            crate::demo::app_layer(&images)?,
        ],
        &sightline_testenv::archive::RunConfig {
            cmd: vec!["sleep".into(), "infinity".into()],
            ..Default::default()
        },
        &debian,
    )?;
    run(Command::new("/usr/bin/ctr")
        .arg("--address")
        .arg(&socket)
        .args(["--namespace", "k8s.io", "images", "import"])
        .arg(&debian))?;
    let kubectl = |args: &[&str]| -> Result<()> {
        run(Command::new(state.bin_dir.join("kubectl"))
            .env("KUBECONFIG", &state.kubeconfig)
            .args(args))
    };
    step(
        4,
        "installing the chart with helm, importing the demo's advisories as a signed bundle, then the examples",
    );
    let cli = release.join("sightline");
    let (signing_key, public_key) = crate::demo::signing_key(&cli, &state.dir)?;
    let (repo, tag) = split_image(&sightline_image("sightline-operator"));
    let (sensor_repo, _) = split_image(&sightline_image("sightline-sensor"));
    run(Command::new(sightline_testenv::binaries::helm()?)
        .env("KUBECONFIG", &state.kubeconfig)
        .args([
            "upgrade",
            "--install",
            "sightline",
            &root().join("charts/sightline").display().to_string(),
            "--namespace",
            "sightline-system",
            "--create-namespace",
            "--wait",
            "--timeout",
            "3m",
            "--set",
            &format!("operator.image.repository={repo},operator.image.tag={tag},operator.image.pullPolicy=Never"),
            "--set",
            &format!("sensorDefaults.image.repository={sensor_repo},sensorDefaults.image.tag={tag}"),
            "--set",
            "operator.logFormat=text",
            // This node's containerd listens in the cluster's directory, not
            // at one of the usual paths container sensors may mount.
            "--set",
            &format!("sensorPolicy.runtimeSockets[0]=unix://{}", socket.display()),
            // The operator serves only databases signed by the demo's key.
            "--set",
            &format!(
                "vulnerabilityDatabase.enabled=true,vulnerabilityDatabase.bundleKeys[0]={public_key}"
            ),
        ]))?;
    import_demo_advisories(&state, &cli, &signing_key)?;
    let _ = Command::new(state.bin_dir.join("kubectl"))
        .env("KUBECONFIG", &state.kubeconfig)
        .args(["create", "namespace", "sightline-demo"])
        .output();
    let app = root_dir_file(&state.dir, "legacy-app.yaml", LEGACY_APP)?;
    kubectl(&["apply", "--server-side", "-f", &app])?;
    for f in DEMO_EXAMPLES {
        kubectl(&[
            "apply",
            "--server-side",
            "-n",
            "sightline-demo",
            "-f",
            &root().join(f).display().to_string(),
        ])?;
    }
    // The example lists the usual sockets; this node's containerd has its own.
    let runtimes = serde_json::json!({"spec": {"container": {"runtimes": [
        {"type": "containerd", "endpoint": format!("unix://{}", socket.display())}
    ]}}});
    kubectl(&[
        "patch",
        "-n",
        "sightline-demo",
        "sensor",
        "nodes",
        "--type=merge",
        "-p",
        &runtimes.to_string(),
    ])?;
    kubectl(&[
        "wait",
        "-n",
        "sightline-demo",
        "--for=condition=Ready",
        "sensor/nodes",
        "--timeout=180s",
    ])?;
    step(
        5,
        "waiting for the container sensor to report the node and its images",
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let out = Command::new(state.bin_dir.join("kubectl"))
            .env("KUBECONFIG", &state.kubeconfig)
            .args(["get", "assets", "-o", "name"])
            .output()?;
        let names = String::from_utf8_lossy(&out.stdout).into_owned();
        // The node, and the images of the operator, sensor, pause and app.
        let found = names.matches("asset.sightline.dev/containerimage-").count();
        if names.contains("asset.sightline.dev/node-") && found >= 4 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "no Node and image Assets after 3 minutes; see `kubectl -n sightline-demo logs ds/sightline-sensor-nodes`"
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    // The legacy app's findings, from the imported advisories.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = Command::new(state.bin_dir.join("kubectl"))
            .env("KUBECONFIG", &state.kubeconfig)
            .args([
                "get",
                "assets",
                "-o",
                "jsonpath={.items[*].status.findings.vulnerabilities.critical}",
            ])
            .output()?;
        let criticals = String::from_utf8_lossy(&out.stdout).into_owned();
        if criticals
            .split_whitespace()
            .any(|n| n.parse::<i64>().is_ok_and(|n| n > 0))
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the legacy app's image has no critical findings after 2 minutes; see `kubectl -n sightline-demo logs ds/sightline-sensor-nodes` and `kubectl -n sightline-system logs deploy/sightline-operator`"
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    std::thread::sleep(Duration::from_secs(2));
    // The runtime sensor: a policy on the legacy app, and an exec it blocks.
    let policy = root_dir_file(&state.dir, "legacy-app-policy.yaml", LEGACY_APP_POLICY)?;
    kubectl(&["apply", "--server-side", "-f", &policy])?;
    step(
        6,
        "a Block policy on the legacy app: waiting for the runtime sensor to enforce it",
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let out = Command::new(state.bin_dir.join("kubectl"))
            .env("KUBECONFIG", &state.kubeconfig)
            .args([
                "get",
                "rtp",
                "-n",
                "sightline-demo",
                "no-package-manager",
                "-o",
                "jsonpath={.status.nodes[0].enforcer}",
            ])
            .output()?;
        if !out.stdout.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the runtime sensor did not report the policy in 3 minutes; see `kubectl -n sightline-demo logs ds/sightline-sensor-runtime`"
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let exec = Command::new(state.bin_dir.join("kubectl"))
        .env("KUBECONFIG", &state.kubeconfig)
        .args([
            "exec",
            "-n",
            "sightline-demo",
            "deploy/legacy-app",
            "--",
            "apt-get",
            "--version",
        ])
        .output()?;
    println!(
        "\n$ kubectl exec -n sightline-demo deploy/legacy-app -- apt-get --version\n{}{}(exit {})\n",
        String::from_utf8_lossy(&exec.stdout),
        String::from_utf8_lossy(&exec.stderr),
        exec.status.code().unwrap_or(-1)
    );
    std::thread::sleep(Duration::from_secs(3));
    step(7, "the inventory");
    kubectl(&["get", "akey,sen,rtp,imgpol", "-A"])?;
    kubectl(&["get", "assets"])?;
    let query = "findings.vulnerabilities.critical>0";
    let found = Command::new(&cli)
        .env("KUBECONFIG", &state.kubeconfig)
        .args(["search", query])
        .output()?;
    println!(
        "\n$ sightline search '{query}'\n{}{}",
        String::from_utf8_lossy(&found.stdout),
        String::from_utf8_lossy(&found.stderr)
    );
    println!(
        "\nThe demo cluster is up ({took} in all): a real node ({node}) with containerd, the kubelet and kube-proxy, \
         the control plane, the operator installed by Helm, a container sensor and a runtime \
         sensor on the node (logs: {dir}).\n\nUse it:\n  eval \"$(cargo xtask cluster env)\"\n  kubectl get assets\n  \
         kubectl get assets -l sightline.dev/kind=ContainerImage -o wide\n  \
         {cli} search 'kind:ContainerImage AND os.lifecycle.stage:EndOfLife'\n  {cli} inventory\n  \
         kubectl -n sightline-demo logs ds/sightline-sensor-nodes\n  \
         kubectl -n sightline-demo get rtp no-package-manager -o yaml\n  \
         kubectl -n sightline-demo logs ds/sightline-sensor-runtime   # OCSF lines\n\nStop it (every process, the \
         bridge, mounts and iptables rules it added):\n  cargo xtask cluster down",
        took = sightline_testenv::binaries::elapsed(started.elapsed()),
        node = sightline_testenv::node::NODE_NAME,
        dir = state.dir.display(),
        cli = release.join("sightline").display(),
    );
    Ok(())
}

/// A workload on the Debian image, so the inventory holds an end-of-life OS.
const LEGACY_APP: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: legacy-app, namespace: sightline-demo}
spec:
  selector: {matchLabels: {app: legacy-app}}
  template:
    metadata: {labels: {app: legacy-app}}
    spec:
      containers:
        - name: app
          image: sightline.local/legacy-app:1.0
          imagePullPolicy: Never
          command: [sleep, infinity]
"#;

/// What the demo's runtime sensor enforces on the legacy app.
const LEGACY_APP_POLICY: &str = r#"apiVersion: sightline.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: no-package-manager, namespace: sightline-demo}
spec:
  podSelector: {matchLabels: {app: legacy-app}}
  action: Block
  process:
    deny: [{path: /usr/bin/apt-get}, {path: /usr/bin/dpkg}]
  file:
    denyWrite: [/etc]
"#;

/// Imports the demo's advisories (`xtask/demo/advisories`, real GitHub
/// advisories) into the operator the way an air-gapped user would: a
/// database built with `sightline db import`, a bundle signed with the
/// demo's key, and `sightline bundle import` as a ServiceAccount bound to
/// the chart's `sightline-bundle-importer` role, through a port-forward
/// that trusts the CA the chart publishes.
fn import_demo_advisories(state: &State, cli: &Path, signing_key: &Path) -> Result<()> {
    const NS: &str = "sightline-system";
    const ACCOUNT: &str = "sightline-demo-importer";
    let kubectl = |args: &[&str]| -> Result<String> {
        let out = Command::new(state.bin_dir.join("kubectl"))
            .env("KUBECONFIG", &state.kubeconfig)
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let db = state.dir.join("demo-vulns.db");
    let bundle = state.dir.join("demo-vulns.bundle");
    run(Command::new(cli)
        .args(["db", "import"])
        .arg(crate::demo::advisories())
        .arg("--output-file")
        .arg(&db))?;
    run(Command::new(cli)
        .args(["bundle", "export", "--db"])
        .arg(&db)
        .arg("--key")
        .arg(signing_key)
        .arg("--output-file")
        .arg(&bundle))?;
    if kubectl(&["get", "serviceaccount", ACCOUNT, "-n", NS]).is_err() {
        kubectl(&["create", "serviceaccount", ACCOUNT, "-n", NS])?;
        kubectl(&[
            "create",
            "clusterrolebinding",
            ACCOUNT,
            "--clusterrole=sightline-bundle-importer",
            &format!("--serviceaccount={NS}:{ACCOUNT}"),
        ])?;
    }
    let token = kubectl(&["create", "token", ACCOUNT, "-n", NS, "--duration=10m"])?;
    let ca = state.dir.join("operator-ca.crt");
    std::fs::write(
        &ca,
        kubectl(&[
            "get",
            "configmap",
            "sightline-operator-ca",
            "-n",
            NS,
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ])?,
    )?;
    let port = sightline_testenv::process::free_port()?;
    let log = state.dir.join("demo-port-forward.log");
    let mut forward = Command::new(state.bin_dir.join("kubectl"));
    forward.env("KUBECONFIG", &state.kubeconfig).args([
        "port-forward",
        "-n",
        NS,
        "deploy/sightline-operator",
        &format!("{port}:8443"),
    ]);
    let _forward = sightline_testenv::process::Proc::spawn("kubectl port-forward", forward, &log)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Forwarding from")) {
        if Instant::now() > deadline {
            bail!(
                "kubectl port-forward to the operator did not start; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    run(Command::new(cli)
        .env("KUBECONFIG", &state.kubeconfig)
        .env("SIGHTLINE_TOKEN", token.trim())
        .arg("--api-ca")
        .arg(&ca)
        .args(["bundle", "import"])
        .arg(&bundle)
        .args(["--api", &format!("https://127.0.0.1:{port}")]))
    .context("importing the demo's advisories")
}

/// Writes `text` to `dir/name`; returns the path as a string.
fn root_dir_file(dir: &Path, name: &str, text: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.display().to_string())
}

/// `repo:tag` → (`repo`, `tag`).
fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((r, t)) => (r.to_owned(), t.to_owned()),
        None => (image.to_owned(), "latest".to_owned()),
    }
}
