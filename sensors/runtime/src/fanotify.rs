//! The fanotify enforcer: permission events on the workloads' root
//! filesystems decide exec and file rules in userspace, and a denied
//! `execve` or `open` fails with EPERM.
//!
//! One fanotify group serves every workload. Each workload's root
//! filesystem is marked (`FAN_MARK_FILESYSTEM`, so the container's own
//! mount namespace is covered too) for `FAN_OPEN_EXEC_PERM` when it has
//! exec rules and `FAN_OPEN_PERM` when it has file rules. An event's
//! thread is mapped to its cgroup, so processes outside a workload (the
//! sensor, the runtime, other containers sharing a filesystem) are always
//! allowed.
//!
//! The thread answering events never opens a file by path: the path comes
//! from the event's own descriptor, the contents (for SHA-256 rules) are
//! read through it (up to [`MAX_HASH_BYTES`]), and how the file was
//! opened comes from the flags in `/proc/<tid>/syscall` (registers, which
//! the caller cannot change under us; `openat2`'s flags live in its memory,
//! so such an open counts as reading and writing). Closing the group (the sensor stopping) lets
//! every pending and future open through: enforcement is released.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyResponse, InitFlags, MarkFlags, MaskFlags, Response,
};
use sha2::{Digest, Sha256};
use sightline_crds::runtime_policy::PolicyAction;

use crate::rules::{Hit, RuleSet};

/// What a fanotify decision reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FanViolation {
    /// The workload's cgroup.
    pub cgroup_id: u64,
    /// The thread that tried.
    pub tid: u32,
    /// Path inside the workload.
    pub path: String,
    /// An exec (else an open).
    pub exec: bool,
    /// The open could write.
    pub write: bool,
    /// The rule.
    pub hit: Hit,
    /// The call failed with EPERM.
    pub denied: bool,
}

/// A workload as the enforcer sees it.
#[derive(Clone, Debug)]
pub struct FanWorkload {
    /// Its rules.
    pub rules: Arc<RuleSet>,
    /// The root filesystem as this process reaches it (a path, or
    /// `/proc/<pid>/root`).
    pub root: PathBuf,
    /// Exec rules are decided here.
    pub exec: bool,
    /// File rules are decided here.
    pub file: bool,
}

struct Prepared {
    work: FanWorkload,
    /// `root` resolved to the form descriptor paths take.
    prefix: String,
    /// Device of the root filesystem (the mark).
    dev: u64,
    /// The files the rules' exec paths name, by device and inode, with the
    /// path the rule used: `/bin/sh` is often a link to `/usr/bin/dash`,
    /// and the event's descriptor shows the file the link leads to.
    aliases: HashMap<(u64, u64), String>,
}

#[derive(Default)]
struct State {
    workloads: HashMap<u64, Prepared>,
    /// Marked filesystems by device: the mask and a path to reach them.
    marks: HashMap<u64, (MaskFlags, PathBuf)>,
}

/// Largest program hashed for SHA-256 rules: a larger one (a huge sparse
/// file would keep every permission event on the node waiting) is decided
/// as of unknown contents, which SHA-256 deny rules refuse.
pub const MAX_HASH_BYTES: u64 = 256 << 20;

/// A file's device, inode, modification and change times and size.
type FileVersion = (u64, u64, i64, i64, u64);

struct Shared {
    fan: Fanotify,
    state: RwLock<State>,
    cgroup_root: PathBuf,
    hashes: std::sync::Mutex<HashMap<FileVersion, [u8; 32]>>,
}

/// Why the enforcer is unavailable or an update failed.
#[derive(Debug, thiserror::Error)]
pub enum FanError {
    /// `fanotify_init` failed.
    #[error(
        "fanotify_init with FAN_CLASS_CONTENT: {0} (needs CAP_SYS_ADMIN and CONFIG_FANOTIFY_ACCESS_PERMISSIONS)"
    )]
    Init(nix::Error),
    /// The root could not be resolved or marked.
    #[error("the workload's root filesystem {root}: {problem}")]
    Root {
        /// The root.
        root: PathBuf,
        /// What failed.
        problem: String,
    },
}

/// The running enforcer. Dropping it stops the thread and closes the
/// group, which releases enforcement.
pub struct FanEnforcer {
    shared: Arc<Shared>,
    stop: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FanEnforcer {
    /// Creates the group and starts answering events; violations go to `out`.
    pub fn start(cgroup_root: PathBuf, out: Sender<FanViolation>) -> Result<Self, FanError> {
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_CONTENT
                | InitFlags::FAN_CLOEXEC
                | InitFlags::FAN_NONBLOCK
                | InitFlags::FAN_REPORT_TID
                | InitFlags::FAN_UNLIMITED_QUEUE
                | InitFlags::FAN_UNLIMITED_MARKS,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )
        .map_err(FanError::Init)?;
        let (stop_rx, stop_tx) = nix::unistd::pipe().map_err(FanError::Init)?;
        let shared = Arc::new(Shared {
            fan,
            state: RwLock::new(State::default()),
            cgroup_root,
            hashes: std::sync::Mutex::new(HashMap::new()),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fanotify".into())
            .spawn(move || worker.run(stop_rx, out))
            .map_err(|e| FanError::Init(nix::Error::from_raw(e.raw_os_error().unwrap_or(0))))?;
        Ok(FanEnforcer {
            shared,
            stop: stop_tx,
            thread: Some(thread),
        })
    }

    /// Sets (or replaces) the rules of workload `cgroup_id`, marking its
    /// root filesystem as they need.
    pub fn set(&self, cgroup_id: u64, work: FanWorkload) -> Result<(), FanError> {
        let root = work.root.clone();
        let root_err = |problem: String| FanError::Root {
            root: root.clone(),
            problem,
        };
        // Resolved before taking the lock: nothing that can block on a
        // permission event happens while the answering thread waits for it.
        let dir = File::open(&work.root).map_err(|e| root_err(e.to_string()))?;
        let dev = dir.metadata().map_err(|e| root_err(e.to_string()))?.dev();
        let prefix = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))
            .map_err(|e| root_err(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        // A container's first process joins its cgroup before it enters
        // its root filesystem: until then its root is ours, and marking
        // that would put every exec on the node through this thread.
        if prefix == "/" {
            return Err(root_err(
                "resolves to the sensor's own root: the container has not entered its root filesystem yet (tried again at the next resync)".into(),
            ));
        }
        let aliases = exec_aliases(&work);
        let mut mask = MaskFlags::empty();
        if work.exec {
            mask |= MaskFlags::FAN_OPEN_EXEC_PERM;
        }
        if work.file {
            mask |= MaskFlags::FAN_OPEN_PERM;
        }
        let mut state = self
            .shared
            .state
            .write()
            .map_err(|_| root_err("the enforcer's state is poisoned".into()))?;
        state.workloads.insert(
            cgroup_id,
            Prepared {
                work,
                prefix,
                dev,
                aliases,
            },
        );
        self.remark(&mut state, dev, Some(&dir)).map_err(root_err)
    }

    /// Stops enforcing for a workload.
    pub fn remove(&self, cgroup_id: u64) {
        let Ok(mut state) = self.shared.state.write() else {
            return;
        };
        if let Some(p) = state.workloads.remove(&cgroup_id) {
            let _ = self.remark(&mut state, p.dev, None);
        }
    }

    /// Makes the mark on filesystem `dev` exactly what its workloads need.
    ///
    /// A workload just set (`dir`, its root as resolved) has its
    /// filesystem marked through that descriptor every time, whatever the
    /// state says: device numbers are reused, so the state may describe a
    /// filesystem that is gone (and its mark with it) while a new one has
    /// its number. Removing a mark from a filesystem that is gone is no
    /// failure, and the state never keeps a mark that could not be
    /// confirmed: one workload's end can never leave the next unprotected.
    fn remark(&self, state: &mut State, dev: u64, dir: Option<&File>) -> Result<(), String> {
        let mut want = MaskFlags::empty();
        let mut reach = None;
        for p in state.workloads.values().filter(|p| p.dev == dev) {
            if p.work.exec {
                want |= MaskFlags::FAN_OPEN_EXEC_PERM;
            }
            if p.work.file {
                want |= MaskFlags::FAN_OPEN_PERM;
            }
            reach.get_or_insert_with(|| p.work.root.clone());
        }
        let (had, known) = match state.marks.get(&dev) {
            Some((m, p)) => (*m, Some(p.clone())),
            None => (MaskFlags::empty(), None),
        };
        let fs = MarkFlags::FAN_MARK_FILESYSTEM;
        let mut result = Ok(());
        if let Some(dir) = dir
            && !want.is_empty()
        {
            result = self
                .shared
                .fan
                .mark(
                    MarkFlags::FAN_MARK_ADD | fs,
                    want,
                    dir.as_fd(),
                    None::<&Path>,
                )
                .map_err(|e| format!("fanotify_mark(FAN_MARK_FILESYSTEM): {e}"));
        }
        let removed = had - want;
        if let Some(path) = reach.clone().or(known).filter(|_| !removed.is_empty()) {
            match self.shared.fan.mark(
                MarkFlags::FAN_MARK_REMOVE | fs,
                removed,
                nix::fcntl::AT_FDCWD,
                Some(&path),
            ) {
                // Gone: the filesystem (or the process reaching it), and
                // the mark with it; or the mark was never there.
                Ok(())
                | Err(nix::Error::ENOENT | nix::Error::ESRCH | nix::Error::ENODEV)
                | Err(nix::Error::ENOTDIR) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), "removing a fanotify mark: {e}");
                }
            }
        }
        match (result.is_ok(), want.is_empty(), reach) {
            (_, true, _) | (false, _, _) => {
                state.marks.remove(&dev);
            }
            (true, false, Some(path)) => {
                state.marks.insert(dev, (want, path));
            }
            (true, false, None) => {}
        }
        result
    }
}

impl Drop for FanEnforcer {
    fn drop(&mut self) {
        let _ = nix::unistd::write(&self.stop, b"x");
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn run(&self, stop: OwnedFd, out: Sender<FanViolation>) {
        let me = std::process::id() as i32;
        loop {
            let mut fds = [
                PollFd::new(self.fan.as_fd(), PollFlags::POLLIN),
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!("polling the fanotify group: {e}");
                    return;
                }
            }
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                return;
            }
            let events = match self.fan.read_events() {
                Ok(ev) => ev,
                Err(nix::Error::EAGAIN | nix::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!("reading fanotify events: {e}");
                    continue;
                }
            };
            for ev in events {
                let Some(fd) = ev.fd() else { continue };
                let mut response = Response::FAN_ALLOW;
                if ev.pid() != me
                    && let Some(v) = self.decide(ev.pid(), fd, ev.mask())
                {
                    if v.denied {
                        response = Response::FAN_DENY;
                    }
                    let _ = out.send(v);
                }
                if let Err(e) = self.fan.write_response(FanotifyResponse::new(fd, response)) {
                    tracing::error!("answering a fanotify event: {e}");
                }
            }
        }
    }

    fn decide(&self, tid: i32, fd: BorrowedFd<'_>, mask: MaskFlags) -> Option<FanViolation> {
        let cgroup_id = cgroup_of(&self.cgroup_root, tid)?;
        let state = self.state.read().ok()?;
        let p = state.workloads.get(&cgroup_id)?;
        let full = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let path = inside(&p.prefix, &full.to_string_lossy())?;
        let exec = mask.contains(MaskFlags::FAN_OPEN_EXEC_PERM);
        let (hit, write) = if exec {
            if !p.work.exec {
                return None;
            }
            let rules = &p.work.rules;
            let needs = rules.needs_sha256();
            let sum = if needs { self.sha256(fd) } else { None };
            let hit_for = |name: &str| match (needs, sum.as_ref()) {
                // Too large to hash, or unreadable: decided as unknown.
                (true, None) => rules.exec_hit_unhashed(name),
                (_, sum) => rules.exec_hit(name, sum),
            };
            let by_path = hit_for(&path);
            let alias = nix::sys::stat::fstat(fd)
                .ok()
                .and_then(|st| p.aliases.get(&(st.st_dev, st.st_ino)));
            let hit = match alias {
                None => by_path,
                Some(name) => {
                    let by_name = hit_for(name);
                    if rules.allowlists.is_empty() {
                        // Denied under either name.
                        Hit::max(by_path, by_name)
                    } else if by_path.is_none() || by_name.is_none() {
                        // Allowed under either name.
                        None
                    } else {
                        by_path
                    }
                }
            };
            (hit, false)
        } else {
            if !p.work.file {
                return None;
            }
            let (read, write) = access(tid);
            (
                p.work
                    .rules
                    .file_hit(&path, write, read && p.work.rules.has_read_rules()),
                write,
            )
        };
        let hit = hit?;
        Some(FanViolation {
            cgroup_id,
            tid: tid as u32,
            path,
            exec,
            write,
            hit,
            denied: hit.action == PolicyAction::Block,
        })
    }

    /// The SHA-256 of the file behind `fd`, cached by identity and change
    /// time; `None` for a file larger than [`MAX_HASH_BYTES`] (every event
    /// on the node waits while this thread reads) or unreadable.
    fn sha256(&self, fd: BorrowedFd<'_>) -> Option<[u8; 32]> {
        let dup = fd.try_clone_to_owned().ok()?;
        let file = File::from(dup);
        let m = file.metadata().ok()?;
        if m.size() > MAX_HASH_BYTES {
            return None;
        }
        let key = (
            m.dev(),
            m.ino(),
            m.mtime_nsec() + m.mtime() * 1_000_000_000,
            m.ctime(),
            m.size(),
        );
        if let Some(h) = self.hashes.lock().ok()?.get(&key) {
            return Some(*h);
        }
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut off = 0u64;
        loop {
            let n = file.read_at(&mut buf, off).ok()?;
            if n == 0 {
                break;
            }
            // It grew while being read.
            if off + n as u64 > MAX_HASH_BYTES {
                return None;
            }
            hasher.update(&buf[..n]);
            off += n as u64;
        }
        let sum: [u8; 32] = hasher.finalize().into();
        let mut cache = self.hashes.lock().ok()?;
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(key, sum);
        Some(sum)
    }
}

/// Every exec path the rules name, resolved in the workload's root (links
/// followed), by device and inode.
fn exec_aliases(work: &FanWorkload) -> HashMap<(u64, u64), String> {
    let mut out = HashMap::new();
    if !work.exec {
        return out;
    }
    let rules = &work.rules;
    let named = rules
        .exec_paths
        .keys()
        .chain(rules.allowlists.iter().flat_map(|a| a.paths.iter()));
    for path in named {
        if let Ok(m) = std::fs::metadata(work.root.join(path.trim_start_matches('/'))) {
            out.insert((m.dev(), m.ino()), path.clone());
        }
    }
    out
}

/// The path of `full` (as this process's descriptors show it) inside a
/// root whose own path shows as `prefix`.
fn inside(prefix: &str, full: &str) -> Option<String> {
    if prefix == "/" {
        return Some(full.to_string());
    }
    let rest = full.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("/".into())
    } else if rest.starts_with('/') {
        Some(rest.to_string())
    } else {
        None
    }
}

/// The cgroup (v2) id of a thread: the inode of its directory.
pub fn cgroup_of(cgroup_root: &Path, tid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = cgroup_root.join(path.trim_start_matches('/'));
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

/// Whether the open a blocked thread is in reads and writes, from its
/// syscall and flags. Unknown ways of opening count as both.
fn access(tid: i32) -> (bool, bool) {
    // The event can reach us before its thread has finished going to sleep
    // on the answer; until it has, the kernel shows the syscall as
    // "running". That takes microseconds.
    let mut text = String::new();
    for attempt in 0..10_000 {
        match std::fs::read_to_string(format!("/proc/{tid}/syscall")) {
            Ok(t) if t.starts_with("running") => {
                if attempt > 100 {
                    std::thread::sleep(std::time::Duration::from_micros(10));
                } else {
                    std::thread::yield_now();
                }
            }
            Ok(t) => {
                text = t;
                break;
            }
            Err(_) => return (true, true),
        }
    }
    // "NR arg1 … arg6 sp pc": the number in decimal, the rest in hex.
    let mut words = text.split_whitespace();
    let Some(nr) = words.next().and_then(|w| w.parse::<u64>().ok()) else {
        return (true, true);
    };
    let nums: Vec<u64> = std::iter::once(nr)
        .chain(
            words.map(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).unwrap_or(u64::MAX)),
        )
        .collect();
    let arg = |i: usize| nums.get(i).copied();
    let flags = match nr {
        // The kernel opening a program for execve/execveat: a read.
        #[cfg(target_arch = "x86_64")]
        59 | 322 => return (true, false),
        #[cfg(target_arch = "aarch64")]
        221 | 281 => return (true, false),
        #[cfg(target_arch = "x86_64")]
        2 => arg(2),
        #[cfg(target_arch = "x86_64")]
        85 => return (false, true),
        #[cfg(target_arch = "x86_64")]
        257 => arg(3),
        #[cfg(target_arch = "aarch64")]
        56 => arg(3),
        // openat2's flags are in the caller's memory, which another of its
        // threads may change between our read and the kernel's: unknown.
        _ => None,
    };
    match flags {
        Some(f) => open_access(f as u32),
        None => (true, true),
    }
}

/// Reads and writes implied by `open` flags.
pub fn open_access(flags: u32) -> (bool, bool) {
    let acc = flags & 3;
    let write = acc == 1 || acc == 2 || flags & (0o100 | 0o1000 | 0o2000) != 0;
    let read = acc != 1;
    (read, write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_taken_relative_to_the_root() {
        assert_eq!(
            inside("/run/c/rootfs", "/run/c/rootfs/etc/passwd").as_deref(),
            Some("/etc/passwd")
        );
        assert_eq!(
            inside("/run/c/rootfs", "/run/c/rootfs").as_deref(),
            Some("/")
        );
        assert_eq!(
            inside("/run/c/rootfs", "/run/c/rootfsx/etc").as_deref(),
            None
        );
        assert_eq!(inside("/", "/etc/x").as_deref(), Some("/etc/x"));
    }

    #[test]
    fn open_flags_say_read_and_write() {
        assert_eq!(open_access(0), (true, false));
        assert_eq!(open_access(1), (false, true));
        assert_eq!(open_access(2), (true, true));
        assert_eq!(open_access(0o100), (true, true), "O_CREAT");
        assert_eq!(open_access(0o2000 | 1), (false, true), "O_APPEND");
    }
}
