//! Finding, or building from Go modules, the Kubernetes and etcd binaries.
//!
//! `go install k8s.io/kubernetes/cmd/...` does not work (its go.mod replaces
//! the staging modules with local paths), so `tests/go/kube` is a small module
//! of our own that requires k8s.io/kubernetes and replaces each staging module
//! with its published version; `tests/go/etcd` wraps etcd's main. Builds land
//! in a directory named by a hash of those sources, so a change rebuilds and
//! an unchanged tree never does.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::{Error, Result, io};

/// The Kubernetes release the local cluster runs.
pub const KUBERNETES_VERSION: &str = "v1.34.4";

const SOURCES: &[(&str, &str, &str)] = &[
    ("kube", "go.mod", include_str!("../go/kube/go.mod")),
    ("kube", "go.sum", include_str!("../go/kube/go.sum")),
    ("kube", "main.go", include_str!("../go/kube/main.go")),
    ("etcd", "go.mod", include_str!("../go/etcd/go.mod")),
    ("etcd", "go.sum", include_str!("../go/etcd/go.sum")),
    ("etcd", "main.go", include_str!("../go/etcd/main.go")),
];

/// Where the binaries of each component are.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// etcd.
    pub etcd: PathBuf,
    /// `(program, leading argument)` per Kubernetes component; the multi-call
    /// binary takes the component's name as its first argument.
    kube: Vec<(&'static str, PathBuf, Option<&'static str>)>,
}

const COMPONENTS: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubelet",
    "kubectl",
];

impl Binaries {
    /// Binaries from `KUBEBUILDER_ASSETS` when set, else the cached build
    /// (building it first if needed).
    pub fn ensure() -> Result<Self> {
        match std::env::var_os("KUBEBUILDER_ASSETS") {
            Some(dir) if !dir.is_empty() => Self::from_assets(Path::new(&dir)),
            _ => Self::build_cached(),
        }
    }

    /// Binaries in an envtest-style directory (`etcd`, `kube-apiserver`,
    /// `kubectl`, optionally the other components).
    pub fn from_assets(dir: &Path) -> Result<Self> {
        let etcd = dir.join("etcd");
        if !etcd.is_file() {
            return Err(Error::MissingBinary(format!(
                "KUBEBUILDER_ASSETS={} has no etcd",
                dir.display()
            )));
        }
        let kube = COMPONENTS
            .iter()
            .filter_map(|c| {
                let p = dir.join(c);
                p.is_file().then_some((*c, p, None))
            })
            .collect();
        Ok(Self { etcd, kube })
    }

    /// The directory holding the cached build for the current sources.
    pub fn cached_dir() -> PathBuf {
        let mut h = Sha256::new();
        h.update(KUBERNETES_VERSION);
        for (dir, file, text) in SOURCES {
            h.update(dir);
            h.update(file);
            h.update(text);
        }
        let stamp: String = h
            .finalize()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        cache_dir()
            .join("k8s")
            .join(format!("{KUBERNETES_VERSION}-{stamp}"))
    }

    fn build_cached() -> Result<Self> {
        let root = Self::cached_dir();
        let bin = root.join("bin");
        let (etcd, kube) = (bin.join("etcd"), bin.join("kube"));
        if !etcd.is_file() {
            go_build(&root, "etcd", &etcd, &[])?;
        }
        if !kube.is_file() {
            let minor = KUBERNETES_VERSION.split('.').nth(1).unwrap_or("34");
            let ldflags = format!(
                "-X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION} \
                 -X k8s.io/component-base/version.gitMajor=1 \
                 -X k8s.io/component-base/version.gitMinor={minor} \
                 -X k8s.io/component-base/version.gitTreeState=clean"
            );
            go_build(&root, "kube", &kube, &["-ldflags", &ldflags])?;
        }
        let kube = COMPONENTS
            .iter()
            .map(|c| (*c, kube.clone(), Some(*c)))
            .collect();
        Ok(Self { etcd, kube })
    }

    /// A command running `component` (`kube-apiserver`, `kubectl`, …).
    pub fn command(&self, component: &str) -> Result<Command> {
        let (_, program, first) = self.kube.iter().find(|(c, _, _)| *c == component).ok_or_else(
            || Error::MissingBinary(format!("no {component} binary (set KUBEBUILDER_ASSETS to a directory that has one, or unset it to build all components)")),
        )?;
        let mut cmd = Command::new(program);
        if let Some(arg) = first {
            cmd.arg(arg);
        }
        Ok(cmd)
    }

    /// The program and leading argument that run `component`, if any.
    pub fn program(&self, component: &str) -> Option<(PathBuf, Option<String>)> {
        self.kube
            .iter()
            .find(|(c, _, _)| *c == component)
            .map(|(_, p, first)| (p.clone(), first.map(str::to_owned)))
    }

    /// True when `component` is available.
    pub fn has(&self, component: &str) -> bool {
        self.kube.iter().any(|(c, _, _)| *c == component)
    }

    /// Writes `kubectl` (and the other components) into `dir` as small
    /// scripts, so a shell can use them after `cargo xtask cluster env`.
    pub fn link_into(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        for (component, program, first) in &self.kube {
            let script = format!(
                "#!/bin/sh\nexec '{}' {} \"$@\"\n",
                program.display(),
                first.unwrap_or("")
            );
            let path = dir.join(component);
            std::fs::write(&path, script).map_err(io(format!("writing {}", path.display())))?;
            set_executable(&path)?;
        }
        Ok(())
    }
}

/// The helm release the chart tests use.
pub const HELM_VERSION: &str = "v3.19.0";

/// The `helm` binary: `$HELM` when set, else built once with `go install`
/// into the cache.
pub fn helm() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("HELM") {
        return Ok(PathBuf::from(h));
    }
    go_tool(GoTool {
        name: "helm",
        package: "helm.sh/helm/v3/cmd/helm",
        version: HELM_VERSION,
        minutes: "2-5",
    })
}

/// The CoreDNS release the local cluster serves its DNS with.
pub const COREDNS_VERSION: &str = "v1.12.4";

/// The `coredns` binary, built once with `go install` into the cache.
pub fn coredns() -> Result<PathBuf> {
    go_tool(GoTool {
        name: "coredns",
        package: "github.com/coredns/coredns",
        version: COREDNS_VERSION,
        minutes: "1-3",
    })
}

/// A Go program installed from the module proxy.
struct GoTool {
    /// The binary's name.
    name: &'static str,
    /// The package `go install` builds.
    package: &'static str,
    /// Its module version.
    version: &'static str,
    /// How long a cold build takes here, for the notice.
    minutes: &'static str,
}

/// Builds `tool` once into `cache/tools/<name>-<version>/` (in a staging
/// directory moved into place when done, so a half-built binary is never
/// taken) and returns the binary.
fn go_tool(tool: GoTool) -> Result<PathBuf> {
    let GoTool {
        name,
        package,
        version,
        minutes,
    } = tool;
    let dir = cache_dir().join("tools").join(format!("{name}-{version}"));
    let bin = dir.join(name);
    if bin.is_file() {
        return Ok(bin);
    }
    let staging = dir.join(format!("staging-{}", std::process::id()));
    std::fs::create_dir_all(&staging).map_err(io(format!("creating {}", staging.display())))?;
    let log = dir.join("build.log");
    let log_file =
        std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
    let log_err = log_file
        .try_clone()
        .map_err(io("duplicating the build log handle"))?;
    eprintln!(
        "building {name} {version} from Go modules into {}; a cold build takes {minutes} minutes, log: {}",
        bin.display(),
        log.display()
    );
    let child = Command::new(go_command())
        .env("GOBIN", &staging)
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-buildvcs=false")
        .args(["install", &format!("{package}@{version}")])
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(io("running `go install` (is Go installed?)"))?;
    let status = wait_saying_so(child, name, &log)?;
    if !status.success() {
        return Err(Error::GoBuild {
            what: name.into(),
            log: log.display().to_string(),
        });
    }
    std::fs::rename(staging.join(name), &bin)
        .map_err(io(format!("moving {} into place", bin.display())))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(bin)
}

/// Builds a small Go program from the texts of its `go.mod` and
/// `main.go` in `dir` (its modules come from the Go module proxy), and
/// returns the binary: a real Go binary with real build info for tests.
pub fn go_program(dir: &Path, go_mod: &str, main_go: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    std::fs::write(dir.join("go.mod"), go_mod).map_err(io("writing go.mod"))?;
    std::fs::write(dir.join("main.go"), main_go).map_err(io("writing main.go"))?;
    let bin = dir.join("program");
    let mut cmd = Command::new(go_command());
    cmd.current_dir(dir)
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=mod -buildvcs=false")
        .args(["build", "-trimpath", "-o"])
        .arg(&bin)
        .arg(".");
    crate::docker::checked(cmd, &format!("go build in {}", dir.display()))?;
    Ok(bin)
}

/// The spdx-tools release whose validator checks the SPDX documents the
/// CLI writes (the SPDX project's own Python tools).
pub const SPDX_TOOLS_VERSION: &str = "0.8.5";

/// `pyspdxtools`, installed once from PyPI into a virtual environment in
/// the cache.
pub fn spdx_validator() -> Result<PathBuf> {
    let root = cache_dir()
        .join("tools")
        .join(format!("spdx-tools-{SPDX_TOOLS_VERSION}"));
    let bin = root.join("venv/bin/pyspdxtools");
    if bin.is_file() {
        return Ok(bin);
    }
    // A venv records its own path, so it is built where it lives; one left
    // half-made by an interrupted run (no pyspdxtools yet) is made again.
    let venv = root.join("venv");
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::create_dir_all(&root).map_err(io(format!("creating {}", root.display())))?;
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "venv"]).arg(&venv);
    crate::docker::checked(cmd, "python3 -m venv (for spdx-tools)")?;
    let mut cmd = Command::new(venv.join("bin/pip"));
    cmd.args([
        "install",
        "--quiet",
        &format!("spdx-tools=={SPDX_TOOLS_VERSION}"),
    ]);
    crate::docker::checked(cmd, "pip install spdx-tools")?;
    Ok(bin)
}

/// The cargo-auditable release the scanner's tests build Rust binaries with.
pub const CARGO_AUDITABLE_VERSION: &str = "0.7.2";

/// A directory holding `cargo-auditable` (put it first on `PATH` to run
/// `cargo auditable …`), installed once from crates.io into the cache.
pub fn cargo_auditable() -> Result<PathBuf> {
    let root = cache_dir()
        .join("tools")
        .join(format!("cargo-auditable-{CARGO_AUDITABLE_VERSION}"));
    let bin = root.join("bin");
    if bin.join("cargo-auditable").is_file() {
        return Ok(bin);
    }
    let staging = root.join(format!("staging-{}", std::process::id()));
    let mut cmd = Command::new("cargo");
    cmd.args([
        "install",
        "--quiet",
        "--locked",
        "cargo-auditable",
        "--version",
        CARGO_AUDITABLE_VERSION,
        "--root",
    ])
    .arg(&staging)
    // Its own target directory: the caller's (the workspace's) must not be
    // locked or rebuilt by the install.
    .env("CARGO_TARGET_DIR", staging.join("target"));
    crate::docker::checked(cmd, "cargo install cargo-auditable")?;
    std::fs::rename(staging.join("bin"), &bin)
        .map_err(io(format!("moving {} into place", bin.display())))?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(bin)
}

/// Sightline's cache directory, outside the work tree:
/// `$SIGHTLINE_CACHE_DIR`, else `$XDG_CACHE_HOME/sightline`, else `~/.cache/sightline`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SIGHTLINE_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("sightline");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache").join("sightline")
}

/// The `go` command: from `PATH`, else the usual install location.
pub fn go_command() -> PathBuf {
    let usual = Path::new("/usr/local/go/bin/go");
    let in_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("go").is_file()))
        .unwrap_or(false);
    if !in_path && usual.is_file() {
        usual.to_path_buf()
    } else {
        PathBuf::from("go")
    }
}

/// How often a long build says it is still going.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits for a build, saying every [`HEARTBEAT`] how long it has run and
/// how much its log has grown, so nobody takes a cold build for a hang.
fn wait_saying_so(
    mut child: std::process::Child,
    what: &str,
    log: &Path,
) -> Result<std::process::ExitStatus> {
    let started = std::time::Instant::now();
    let mut said = started;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(io(format!("waiting for the {what} build")))?
        {
            eprintln!("built {what} in {}", elapsed(started.elapsed()));
            return Ok(status);
        }
        if said.elapsed() >= HEARTBEAT {
            said = std::time::Instant::now();
            let lines = std::fs::read(log).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
            eprintln!(
                "  still building {what}: {} so far, {lines} lines of build log",
                elapsed(started.elapsed())
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A duration as people read it: `45s`, `3m05s`, `1h02m`.
pub fn elapsed(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn go_build(root: &Path, module: &str, out: &Path, extra: &[&str]) -> Result<()> {
    let src = root.join("src").join(module);
    std::fs::create_dir_all(&src).map_err(io(format!("creating {}", src.display())))?;
    for (dir, file, text) in SOURCES.iter().filter(|(d, _, _)| *d == module) {
        let path = src.join(file);
        std::fs::write(&path, text).map_err(io(format!("writing {dir}/{file}")))?;
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    let log = root.join(format!("build-{module}.log"));
    let log_file =
        std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
    let log_err = log_file
        .try_clone()
        .map_err(io("duplicating the build log handle"))?;
    // Build to a unique temporary name and rename, so concurrent builders
    // never see a half-written binary.
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    eprintln!(
        "building {module} ({KUBERNETES_VERSION}) from Go modules into {}; a cold build takes 10-25 minutes, log: {}",
        out.display(),
        log.display()
    );
    let child = Command::new(go_command())
        .current_dir(&src)
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=mod -buildvcs=false")
        .args(["build", "-trimpath"])
        .args(extra)
        .arg("-o")
        .arg(&tmp)
        .arg(".")
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(io("running `go build` (is Go installed?)"))?;
    let status = wait_saying_so(child, module, &log)?;
    if !status.success() {
        return Err(Error::GoBuild {
            what: module.to_owned(),
            log: log.display().to_string(),
        });
    }
    std::fs::rename(&tmp, out).map_err(io(format!("moving {} into place", out.display())))?;
    Ok(())
}

pub(crate) fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(io(format!("making {} executable", path.display())))
}

/// A binary of this workspace, built by the same `cargo test` or `cargo
/// build` run that built the caller (a test binary in `target/<profile>/
/// deps`, or a program in `target/<profile>`).
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(io("locating the running program"))?;
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        if d.file_name().is_some_and(|n| n == "deps") {
            dir = d.parent();
            continue;
        }
        break;
    }
    Err(Error::MissingBinary(format!(
        "{name} is not built next to {} (`cargo test --workspace` and `cargo xtask test` build it; or run `cargo build -p {}`)",
        exe.display(),
        match name {
            "sightline-operator" => "sightline-operator",
            "sightline-sensor" => "sightline-sensor",
            other => other,
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::elapsed;
    use std::time::Duration;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(elapsed(Duration::from_secs(45)), "45s");
        assert_eq!(elapsed(Duration::from_secs(185)), "3m05s");
        assert_eq!(elapsed(Duration::from_secs(3720)), "1h02m");
    }
}
