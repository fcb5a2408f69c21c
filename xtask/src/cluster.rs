//! `cargo xtask cluster up|down|env` and `cargo xtask demo`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sightline_testenv::controlplane::State;
use sightline_testenv::process::Proc;
use sightline_testenv::{ControlPlane, Options, binaries::cache_dir};

use crate::{root, run};

fn dir() -> PathBuf {
    cache_dir().join("cluster")
}

fn running(state: &State) -> bool {
    state
        .pids
        .iter()
        .all(|(_, pid, _)| std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Starts the local cluster (or reuses a running one) and returns its state.
pub async fn up(control_plane_only: bool) -> Result<State> {
    if !control_plane_only {
        bail!(
            "the full single-node cluster (kubelet, containerd, CNI) is not built yet; \
             run `cargo xtask cluster up --control-plane-only` for etcd, kube-apiserver and kube-controller-manager"
        );
    }
    crate::setup()?;
    if let Some(state) = State::read(&dir())? {
        if running(&state) {
            eprintln!("the local cluster is already running");
            print_env(&state);
            return Ok(state);
        }
        eprintln!("a previous cluster is no longer running; starting a new one");
        state.stop();
        let _ = std::fs::remove_dir_all(dir());
    }
    let cp = ControlPlane::start(Options {
        dir: Some(dir()),
        ..Options::default()
    })
    .await?;
    let state = cp.detach()?;
    eprintln!(
        "local control plane is up (logs and certificates in {})",
        state.dir.display()
    );
    print_env(&state);
    Ok(state)
}

fn print_env(state: &State) {
    println!("export KUBECONFIG={}", state.kubeconfig.display());
    println!("export PATH={}:$PATH", state.bin_dir.display());
}

/// Prints the exports of the running cluster.
pub fn env() -> Result<()> {
    match State::read(&dir())? {
        Some(state) => {
            print_env(&state);
            Ok(())
        }
        None => {
            bail!("no local cluster; start one with `cargo xtask cluster up --control-plane-only`")
        }
    }
}

/// Stops every process the cluster started (by PID) and removes its directory.
pub fn down() -> Result<()> {
    let Some(state) = State::read(&dir())? else {
        eprintln!("no local cluster is running");
        return Ok(());
    };
    for stopped in state.stop() {
        eprintln!("stopped {stopped}");
    }
    std::fs::remove_dir_all(&state.dir)
        .with_context(|| format!("removing {}", state.dir.display()))?;
    eprintln!("local cluster removed");
    Ok(())
}

/// Control plane, CRDs, the operator, the examples, and the inventory.
pub async fn demo() -> Result<()> {
    let mut state = up(true).await?;
    run(Command::new("cargo").args(["build", "--release", "-p", "sightline-operator"]))?;
    let kubectl = |args: &[&str]| -> Result<()> {
        run(Command::new(state.bin_dir.join("kubectl"))
            .env("KUBECONFIG", &state.kubeconfig)
            .args(args))
    };
    let apply = |file: &str| -> Result<()> {
        let path = root().join(file);
        kubectl(&[
            "apply",
            "--server-side",
            "-n",
            "sightline-demo",
            "-f",
            &path.display().to_string(),
        ])
    };
    for ns in ["sightline-system", "sightline-demo"] {
        // Ignore "already exists" on a second run.
        let _ = Command::new(state.bin_dir.join("kubectl"))
            .env("KUBECONFIG", &state.kubeconfig)
            .args(["create", "namespace", ns])
            .output();
    }
    if !state
        .pids
        .iter()
        .any(|(name, _, _)| name == "sightline-operator")
    {
        let binary = crate::target_dir().join("release/sightline-operator");
        let mut cmd = Command::new(&binary);
        cmd.env("KUBECONFIG", &state.kubeconfig).args([
            "--namespace",
            "sightline-system",
            "--http-addr",
            "127.0.0.1:18080",
        ]);
        let proc = Proc::spawn(
            "sightline-operator",
            cmd,
            &state.dir.join("sightline-operator.log"),
        )?;
        state.pids.push((
            "sightline-operator".into(),
            proc.detach(),
            binary.display().to_string(),
        ));
        std::fs::write(State::path(&state.dir), serde_json::to_vec_pretty(&state)?)?;
    }
    for f in [
        "examples/activation-key.yaml",
        "examples/container-sensor.yaml",
        "examples/registry-sensor.yaml",
        "examples/runtime-sensor.yaml",
        "examples/runtime-policy.yaml",
        "examples/connector.yaml",
    ] {
        apply(f)?;
    }
    kubectl(&[
        "wait",
        "-n",
        "sightline-demo",
        "--for=condition=Ready",
        "sensor",
        "--all",
        "--timeout=60s",
    ])?;
    std::thread::sleep(Duration::from_secs(1));
    kubectl(&["get", "akey,sen,ast", "-A"])?;
    kubectl(&["get", "daemonsets,cronjobs", "-n", "sightline-demo"])?;
    println!(
        "\nThe demo cluster is up: etcd, kube-apiserver, kube-controller-manager and the operator \
         (log: {}/sightline-operator.log).\nThere is no node yet, so sensor pods are not scheduled and no \
         Asset is reported; that comes with the local-node issue.\n\nUse it:\n  eval \"$(cargo xtask cluster env)\"\n  kubectl get sensors -A\n\nStop it:\n  cargo xtask cluster down",
        state.dir.display()
    );
    Ok(())
}
