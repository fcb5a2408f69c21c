//! A small "container" for the runtime sensor's tests: a root filesystem of
//! its own (a tmpfs holding copies of busybox, so the fanotify mark covers it
//! and nothing else) and a cgroup v2 directory the test creates. Programs run
//! chrooted into it, inside the cgroup.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Error, Result};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on hybrid hosts).
pub fn cgroup2_root() -> Option<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// A root filesystem and a cgroup. `/bin/busybox`, `/bin/sh` and
/// `/bin/echo` are separate copies of busybox (separate inodes); `/etc`
/// holds a `passwd`, `/tmp` is empty.
pub struct Jail {
    _dir: tempfile::TempDir,
    /// The root filesystem.
    pub root: PathBuf,
    /// The cgroup programs run in.
    pub cgroup: PathBuf,
    /// The cgroup directory created for this jail (`cgroup` or its parent).
    top: PathBuf,
    holders: Vec<Child>,
}

impl Jail {
    /// A jail with a cgroup of its own.
    pub fn new() -> Result<Jail> {
        Jail::build(None)
    }

    /// A jail whose cgroup is named `leaf` under a parent of its own, the
    /// way runtimes name a container's cgroup after its id.
    pub fn named(leaf: &str) -> Result<Jail> {
        Jail::build(Some(leaf))
    }

    fn build(leaf: Option<&str>) -> Result<Jail> {
        let dir = tempfile::tempdir().map_err(io("creating the jail's directory"))?;
        let root = dir.path().join("root");
        std::fs::create_dir(&root).map_err(io("creating the jail's root"))?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "sightline-jail"])
            .arg(&root)
            .status()
            .map_err(io("running mount"))?;
        if !status.success() {
            return Err(Error::MissingBinary(
                "mounting a tmpfs for the jail failed: the runtime tests run as root".into(),
            ));
        }
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let cgroups = cgroup2_root()
            .ok_or_else(|| Error::MissingBinary("no cgroup v2 hierarchy is mounted".into()))?;
        let top = cgroups.join(format!("sightline-test-{}-{n}", std::process::id()));
        let cgroup = match leaf {
            Some(l) => top.join(l),
            None => top.clone(),
        };
        let jail = Jail {
            _dir: dir,
            root,
            cgroup,
            top,
            holders: Vec::new(),
        };
        std::fs::create_dir_all(&jail.cgroup)
            .map_err(io(format!("creating the cgroup {}", jail.cgroup.display())))?;
        for d in ["bin", "etc", "tmp"] {
            std::fs::create_dir(jail.root.join(d)).map_err(io("populating the jail"))?;
        }
        for name in ["busybox", "sh", "echo"] {
            std::fs::copy("/bin/busybox", jail.root.join("bin").join(name))
                .map_err(io("copying /bin/busybox (apt-get install busybox-static)"))?;
        }
        std::fs::write(jail.root.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n")
            .map_err(io("writing passwd"))?;
        Ok(jail)
    }

    fn command(&self, script: &str) -> Command {
        self.command_in(&self.cgroup, script)
    }

    fn command_in(&self, cgroup: &Path, script: &str) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!(
                "echo $$ > {} && exec /usr/sbin/chroot {} /bin/sh -c \"$0\"",
                cgroup.join("cgroup.procs").display(),
                self.root.display()
            ))
            .arg(script);
        cmd
    }

    /// Runs `script` with the jail's shell in the cgroup; its stdout and
    /// stderr together.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.sh_in(&self.cgroup, script)
    }

    /// Runs `script` with the jail's shell in another cgroup (one below
    /// [`Jail::pod`], as a pod's second container).
    pub fn sh_in(&self, cgroup: &Path, script: &str) -> Result<String> {
        let out = self
            .command_in(cgroup, script)
            .output()
            .map_err(io("running the jail's shell"))?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// Starts a long-running process in the jail (as a container's main
    /// process would be), stopped when the jail is dropped.
    pub fn hold(&mut self) -> Result<u32> {
        let child = self
            .command("exec /bin/busybox sleep 3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("starting the jail's process"))?;
        let pid = child.id();
        self.holders.push(child);
        Ok(pid)
    }

    /// The cgroup directory created for the jail: for a [`Jail::named`]
    /// jail, the parent of its cgroup, as a pod's cgroup is of its
    /// containers'.
    pub fn pod(&self) -> &Path {
        &self.top
    }

    /// The cgroup's id (its inode).
    pub fn cgroup_id(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(std::fs::metadata(&self.cgroup)
            .map_err(io("reading the cgroup"))?
            .ino())
    }

    /// Whether `path` (inside the jail) exists.
    pub fn exists(&self, path: &str) -> bool {
        self.path(path).exists()
    }

    /// The host path of `path` inside the jail.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        for mut h in self.holders.drain(..) {
            let _ = h.kill();
            let _ = h.wait();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        let _ = std::fs::remove_dir(&self.cgroup);
        if self.top != self.cgroup {
            // Cgroups a test made beside the jail's own, too.
            if let Ok(entries) = std::fs::read_dir(&self.top) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&self.top);
        }
    }
}
