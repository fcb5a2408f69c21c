//! A real Docker engine for tests: Debian's containerd and dockerd, started
//! with every path (state, sockets, images) in a temporary directory of
//! their own, no bridge and no iptables rules, and stopped by PID when
//! dropped. Nothing touches a Docker or containerd the machine may run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::process::Proc;
use crate::{Error, Result, io};

/// Debian's Docker client (`docker.io`), which speaks the daemon's API 1.41;
/// a newer client elsewhere on `PATH` would negotiate down as well, but this
/// one is known to match.
const DOCKER_CLI: &str = "/usr/bin/docker";

/// The programs this needs and the Debian packages they come in.
pub const PACKAGES: &[(&str, &str)] = &[
    ("/usr/sbin/dockerd", "docker.io"),
    ("/usr/bin/containerd", "containerd"),
    ("/usr/sbin/runc", "runc"),
    ("/usr/bin/skopeo", "skopeo"),
    ("/usr/sbin/debootstrap", "debootstrap"),
    ("/usr/bin/rpmbuild", "rpm"),
    ("/usr/share/java/commons-io.jar", "libcommons-io-java"),
    ("/usr/share/java/commons-cli.jar", "libcommons-cli-java"),
    ("/usr/bin/unzip", "unzip"),
    // The detail store's shared engine.
    crate::postgres::PACKAGE,
    // k8s-cri and containerd-client generate their gRPC code with protoc.
    ("/usr/bin/protoc", "protobuf-compiler"),
    // The pod sandbox program is compiled statically here.
    ("/usr/bin/gcc", "gcc"),
    ("/usr/lib/x86_64-linux-gnu/libc.a", "libc6-dev"),
    // The local cluster's node: pod networking and kube-proxy.
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("/usr/sbin/iptables", "iptables"),
    ("/usr/sbin/ip", "iproute2"),
    // The registry tests: the CNCF distribution registry and htpasswd.
    ("/usr/bin/docker-registry", "docker-registry"),
    ("/usr/bin/htpasswd", "apache2-utils"),
    // The runtime sensor's eBPF programs: bpf-linker is built against
    // Debian's LLVM 22 (bookworm-security).
    ("/usr/lib/llvm-22/bin/llvm-config", "llvm-22-dev"),
    ("/usr/lib/llvm-22/lib/libPolly.a", "libpolly-22-dev"),
    ("/usr/include/zstd.h", "libzstd-dev"),
    // The runtime sensor's tests run programs from a busybox root filesystem.
    ("/bin/busybox", "busybox-static"),
];

/// Fails naming the missing Debian packages, if any.
pub fn check_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::MissingBinary(format!(
            "Debian packages missing: {} (`cargo xtask test` installs them; or apt-get install {})",
            missing.join(", "),
            missing.join(" ")
        )))
    }
}

/// A running dockerd and the containerd under it.
pub struct Docker {
    dockerd: Proc,
    containerd: Proc,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Docker {
    /// Starts containerd and dockerd and waits until the engine answers.
    pub fn start() -> Result<Docker> {
        check_packages()?;
        // Short paths: unix socket paths must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("sl-docker-")
            .tempdir_in("/tmp")
            .map_err(io("creating the Docker test directory"))?;
        let d = dir.path();
        let ctr_socket = d.join("containerd.sock");
        let config = d.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
                root = d.join("containerd-root").display(),
                state = d.join("containerd-state").display(),
                sock = ctr_socket.display(),
            ),
        )
        .map_err(io("writing containerd's config"))?;
        let mut cmd = Command::new("/usr/bin/containerd");
        cmd.arg("--config").arg(&config);
        let mut containerd = Proc::spawn("containerd", cmd, &d.join("containerd.log"))?;
        wait_for_path(&mut containerd, &ctr_socket, Duration::from_secs(20))?;

        let socket = d.join("docker.sock");
        let mut cmd = Command::new("/usr/sbin/dockerd");
        cmd.arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--containerd")
            .arg(&ctr_socket)
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                "--storage-driver=overlay2",
                "--exec-opt=native.cgroupdriver=cgroupfs",
            ]);
        let mut dockerd = Proc::spawn("dockerd", cmd, &d.join("dockerd.log"))?;
        wait_for_path(&mut dockerd, &socket, Duration::from_secs(30))?;
        let docker = Docker {
            dockerd,
            containerd,
            socket,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if docker
                .cli()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return Ok(docker);
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    component: "dockerd".into(),
                    seconds: 30,
                    log: docker.dockerd.log.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The engine's API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A scratch directory that lives as long as the engine.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// A `docker` command talking to this engine.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(DOCKER_CLI);
        cmd.arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            // The legacy builder: Debian's 20.10 has no buildx.
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_CONFIG", self.dir.path().join("client"));
        cmd
    }

    /// Runs `docker ARGS`, failing with its output when it fails.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.cli();
        cmd.args(args);
        checked(cmd, &format!("docker {}", args.join(" ")))
    }

    /// Builds an image from a Dockerfile text, with no network, and tags it.
    pub fn build(&self, tag: &str, dockerfile: &str) -> Result<()> {
        let ctx = self
            .dir
            .path()
            .join(format!("build-{}", tag.replace([':', '/'], "_")));
        std::fs::create_dir_all(&ctx).map_err(io("creating a build context"))?;
        std::fs::write(ctx.join("Dockerfile"), dockerfile).map_err(io("writing a Dockerfile"))?;
        let ctx = ctx.display().to_string();
        self.run(&["build", "--network", "none", "--quiet", "--tag", tag, &ctx])
            .map(drop)
    }

    /// Imports a one-layer image holding exactly `files` (path, content;
    /// mode 0644) under `tag`, as `docker import` of a tar made here.
    pub fn import_files(&self, tag: &str, files: &[(&str, &[u8])]) -> Result<()> {
        let with_modes: Vec<(&str, &[u8], u32)> =
            files.iter().map(|(n, d)| (*n, *d, 0o644)).collect();
        self.import_tree(tag, &with_modes)
    }

    /// Like [`Docker::import_files`], with each file's mode.
    pub fn import_tree(&self, tag: &str, files: &[(&str, &[u8], u32)]) -> Result<()> {
        let path = self
            .dir
            .path()
            .join(format!("{}.rootfs.tar", tag.replace([':', '/'], "_")));
        let mut tar = tar::Builder::new(
            std::fs::File::create(&path).map_err(io(format!("creating {}", path.display())))?,
        );
        for (name, data, mode) in files {
            let mut h = tar::Header::new_gnu();
            h.set_path(name)
                .map_err(io(format!("naming {name} in a tar")))?;
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_cksum();
            tar.append(&h, *data)
                .map_err(io(format!("writing {name} to a tar")))?;
        }
        tar.finish().map_err(io("finishing a tar"))?;
        drop(tar);
        self.run(&["import", &path.display().to_string(), tag])
            .map(drop)
    }

    /// `docker save` of one image into a file in the scratch directory.
    pub fn save(&self, tag: &str) -> Result<PathBuf> {
        let out = self
            .dir
            .path()
            .join(format!("{}.tar", tag.replace([':', '/'], "_")));
        let out_s = out.display().to_string();
        self.run(&["save", "--output", &out_s, tag])?;
        Ok(out)
    }

    /// The daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "dockerd log {}:\n{}\ncontainerd log {}:\n{}",
            self.dockerd.log.display(),
            crate::process::tail(&self.dockerd.log, 30),
            self.containerd.log.display(),
            crate::process::tail(&self.containerd.log, 10)
        )
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.dockerd.stop(Duration::from_secs(10));
        self.containerd.stop(Duration::from_secs(5));
        // overlay2 leaves its mounts' directories read-only-ish: remove what
        // is removable; the temp dir's own drop tries again.
        let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
    }
}

pub(crate) fn wait_for_path(proc: &mut Proc, path: &Path, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        proc.check_running()?;
        if Instant::now() > deadline {
            return Err(Error::NotReady {
                component: proc.name.clone(),
                seconds: limit.as_secs(),
                log: proc.log.display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Runs a command to completion, returning its stdout, or an error with its
/// stderr when it fails.
pub fn checked(mut cmd: Command, what: &str) -> Result<String> {
    let out: Output = cmd.output().map_err(io(format!("running {what}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            what: what.to_owned(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
