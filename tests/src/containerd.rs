//! A real containerd with its CRI plugin, as a kubelet uses it: Debian's
//! containerd and runc, every path (root, state, socket, CNI config) in a
//! directory of its own, cgroupfs, and a sandbox ("pause") image built
//! here and imported at start, since none can be pulled. Stopped by PID
//! when dropped; nothing touches a containerd the machine may run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::docker::{checked, wait_for_path};
use crate::process::Proc;
use crate::{Result, images, io};

/// The sandbox image every pod's first container runs.
pub const PAUSE_IMAGE: &str = "sightline.local/pause:1.0";

/// A running containerd.
pub struct Containerd {
    proc: Option<Proc>,
    socket: PathBuf,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// Where a containerd keeps its files.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Its directory (config, root, state, log).
    pub dir: PathBuf,
    /// The CNI configuration directory (`net.d`) CRI reads.
    pub cni_conf_dir: PathBuf,
    /// Where CRI finds the CNI plugins (Debian's `/usr/lib/cni` when `None`).
    pub cni_bin_dir: Option<PathBuf>,
}

impl Containerd {
    /// Starts a containerd in a temporary directory of its own.
    pub fn start() -> Result<Containerd> {
        // Short paths: unix socket paths must stay under 108 bytes.
        let temp = tempfile::Builder::new()
            .prefix("sl-ctrd-")
            .tempdir_in("/tmp")
            .map_err(io("creating the containerd test directory"))?;
        let layout = Layout {
            dir: temp.path().to_path_buf(),
            cni_conf_dir: temp.path().join("net.d"),
            cni_bin_dir: None,
        };
        let mut c = Self::start_in(&layout)?;
        c._temp = Some(temp);
        Ok(c)
    }

    /// Starts a containerd whose files live in `layout`, and imports the
    /// sandbox image.
    pub fn start_in(layout: &Layout) -> Result<Containerd> {
        crate::docker::check_packages()?;
        let d = &layout.dir;
        std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
        std::fs::create_dir_all(&layout.cni_conf_dir)
            .map_err(io(format!("creating {}", layout.cni_conf_dir.display())))?;
        let socket = d.join("containerd.sock");
        let config = d.join("containerd.toml");
        let cni_bin = layout
            .cni_bin_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/usr/lib/cni"));
        std::fs::write(
            &config,
            config_text(d, &socket, &layout.cni_conf_dir, &cni_bin),
        )
        .map_err(io("writing containerd's config"))?;
        let mut cmd = Command::new("/usr/bin/containerd");
        cmd.arg("--config").arg(&config);
        let mut proc = Proc::spawn("containerd", cmd, &d.join("containerd.log"))?;
        wait_for_path(&mut proc, &socket, Duration::from_secs(20))?;
        let c = Containerd {
            proc: Some(proc),
            socket,
            dir: d.clone(),
            _temp: None,
        };
        let pause = images::pause_image(d)?;
        c.import(&pause)?;
        Ok(c)
    }

    /// The socket (CRI and containerd's own API).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The socket as a CRI endpoint, `unix://…`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The PID, to check on it (0 once detached).
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, |p| p.pid)
    }

    /// A `ctr` command in CRI's namespace of this containerd.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("/usr/bin/ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io"]);
        cmd
    }

    /// Imports a `docker save` (or OCI) archive into CRI's namespace,
    /// unpacked for running.
    pub fn import(&self, archive: &Path) -> Result<()> {
        let mut cmd = self.ctr();
        cmd.args(["images", "import"]).arg(archive);
        checked(cmd, &format!("ctr images import {}", archive.display())).map(drop)
    }

    /// Imports an image archive without unpacking its layers (so layers
    /// containerd could not apply, as a hostile image's, are kept as they are).
    pub fn import_without_unpacking(&self, archive: &Path) -> Result<()> {
        let mut cmd = self.ctr();
        cmd.args(["images", "import", "--no-unpack"]).arg(archive);
        checked(
            cmd,
            &format!("ctr images import --no-unpack {}", archive.display()),
        )
        .map(drop)
    }

    /// Stops it (SIGTERM, then SIGKILL), keeping its files, and starts it
    /// again on them: what a node's containerd restart looks like.
    pub fn restart(&mut self) -> Result<()> {
        if let Some(p) = self.proc.as_mut() {
            p.stop(Duration::from_secs(10));
        }
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = Command::new("/usr/bin/containerd");
        cmd.arg("--config").arg(self.dir.join("containerd.toml"));
        let mut proc = Proc::spawn("containerd", cmd, &self.dir.join("containerd.log"))?;
        wait_for_path(&mut proc, &self.socket, Duration::from_secs(20))?;
        self.proc = Some(proc);
        Ok(())
    }

    /// The end of its log, for failure messages.
    pub fn logs(&self) -> String {
        let log = self.dir.join("containerd.log");
        format!(
            "containerd log {}:\n{}",
            log.display(),
            crate::process::tail(&log, 30)
        )
    }

    /// Forgets the process so dropping this leaves it running (the local
    /// cluster outlives `cargo xtask cluster up`); returns its PID.
    pub fn detach(mut self) -> u32 {
        self.proc.take().map_or(0, Proc::detach)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            // Containers outlive containerd (each has its own shim): end
            // every task and remove it, so its processes, shim and mounts
            // go, then stop containerd.
            self.remove_everything();
            p.stop(Duration::from_secs(10));
        }
    }
}

impl Containerd {
    /// Kills and removes every task and container in CRI's namespace.
    fn remove_everything(&self) {
        let ids = |what: &str| -> Vec<String> {
            let mut cmd = self.ctr();
            cmd.args([what, "ls", "--quiet"]);
            checked(cmd, "ctr ls")
                .map(|out| out.lines().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let tasks = ids("tasks");
        for id in &tasks {
            let mut cmd = self.ctr();
            cmd.args(["tasks", "kill", "--signal", "SIGKILL", id]);
            let _ = checked(cmd, "ctr tasks kill");
        }
        for id in &tasks {
            let mut cmd = self.ctr();
            cmd.args(["tasks", "delete", "--force", id]);
            let _ = checked(cmd, "ctr tasks delete");
        }
        for id in ids("containers") {
            let mut cmd = self.ctr();
            cmd.args(["containers", "delete", &id]);
            let _ = checked(cmd, "ctr containers delete");
        }
    }
}

/// containerd's configuration: CRI with runc under cgroupfs (these VMs run
/// hybrid cgroups, where crun fails), `restrict_oom_score_adj` (no
/// `CAP_SYS_RESOURCE` here), the local sandbox image, Debian's CNI
/// plugins, and no registry mirrors (nothing is pulled).
fn config_text(dir: &Path, socket: &Path, cni_conf_dir: &Path, cni_bin_dir: &Path) -> String {
    let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  max_container_log_line_size = 16384
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  BinaryName = "/usr/sbin/runc"
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{cni}"
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        sock = socket.display(),
        cni = cni_conf_dir.display(),
        cni_bin = cni_bin_dir.display(),
    )
}
