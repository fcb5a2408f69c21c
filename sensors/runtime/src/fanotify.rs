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
//! One thread reads events and hands each to a small pool of deciding
//! threads ([`WORKERS`]), so a slow decision (a large program hashed) holds
//! one event, not every marked open on the node. An event not decided
//! within [`EVENT_DEADLINE`] is answered by policy (refused for a workload
//! the rules cover, allowed otherwise), and a watchdog ends the enforcer
//! if a thread ends or every deciding thread is stuck ([`STALL_AFTER`]).
//!
//! The threads answering events never open a file by path: the path comes
//! from the event's own descriptor, the contents (for SHA-256 rules) are
//! read through it (up to [`Hashing::max_bytes`]), and how the file was
//! opened comes from the flags in `/proc/<tid>/syscall` (registers, which
//! the caller cannot change under us; `openat2`'s flags live in its memory,
//! so such an open counts as reading and writing). Closing the group (the sensor stopping) lets
//! every pending and future open through: enforcement is released.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyEvent, FanotifyResponse, InitFlags, MarkFlags, MaskFlags,
    Response,
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
    /// The files under the rules' file prefixes, by device and inode, with
    /// their path there: a hard link elsewhere (`ln /etc/shadow /tmp/x`)
    /// is the same inode, so the rule follows it.
    protected: HashMap<(u64, u64), String>,
}

#[derive(Default)]
struct State {
    workloads: HashMap<u64, Prepared>,
    /// Marked filesystems by device: the mask and a path to reach them.
    marks: HashMap<u64, (MaskFlags, PathBuf)>,
}

/// How programs are hashed for SHA-256 rules (the Sensor's
/// `runtime.maxHashMiB` and `runtime.unhashed`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hashing {
    /// Largest program hashed: a larger one (a huge sparse file would keep
    /// every permission event on the node waiting) is of unknown contents.
    pub max_bytes: u64,
    /// Whether SHA-256 deny rules refuse a program of unknown contents
    /// (larger than `max_bytes`, or unreadable).
    pub refuse_unknown: bool,
}

impl Default for Hashing {
    fn default() -> Self {
        Hashing {
            max_bytes: 256 << 20,
            refuse_unknown: true,
        }
    }
}

/// A file's device, inode, modification and change times and size.
type FileVersion = (u64, u64, i64, i64, u64);

struct Shared {
    fan: Fanotify,
    state: RwLock<State>,
    cgroup_root: PathBuf,
    hashing: Hashing,
    hashes: std::sync::Mutex<HashMap<FileVersion, [u8; 32]>>,
    /// Per deciding thread: when it started on the event it holds
    /// (milliseconds since `epoch`, plus one), 0 while it waits for one.
    busy: [AtomicU64; WORKERS],
    epoch: Instant,
    /// Events read and not yet done with, by sequence number.
    pending: Mutex<HashMap<u64, Arc<InFlight>>>,
    next: AtomicU64,
    /// Running threads: the reader and the deciding ones.
    alive: AtomicUsize,
    /// The enforcer is being dropped.
    stopping: AtomicBool,
    /// Faults injected by tests: the next event panics; the next
    /// `fault_stall_events` events wait this many milliseconds.
    fault_panic: AtomicBool,
    fault_stall_ms: AtomicU64,
    fault_stall_events: AtomicU64,
}

/// An event read from the group and not yet answered.
struct InFlight {
    event: FanotifyEvent,
    tid: i32,
    /// When it was read (milliseconds since `epoch`, plus one).
    read_at: u64,
    /// Answered already (by its deciding thread, or at its deadline).
    answered: AtomicBool,
}

/// Threads deciding events.
pub const WORKERS: usize = 4;

/// How long one event may wait for its decision before it is answered by
/// policy: refused for a workload the rules cover, allowed otherwise.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(5);

/// How long every deciding thread may hold its event before the watchdog
/// calls the enforcement stopped (each event is answered at its deadline
/// meanwhile, but new ones would each wait that long).
pub const STALL_AFTER: Duration = Duration::from_secs(10);

/// What happens when answering stops (a thread ended, or every deciding
/// thread held its event longer than [`STALL_AFTER`]). The daemon's ends the process: the
/// kernel then closes the group, which lets every waiting open through, and
/// Kubernetes starts the sensor again; nothing on the node hangs.
#[derive(Clone)]
pub struct StallHandler(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for StallHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StallHandler")
    }
}

impl StallHandler {
    /// Logs why and ends the process (exit code 70).
    pub fn exit() -> StallHandler {
        StallHandler(Arc::new(|why: &str| {
            tracing::error!(
                "{why}: exiting so that the kernel releases every waiting open (the sensor is restarted)"
            );
            std::process::exit(70);
        }))
    }
}

/// Counts a thread gone however it ends (a panic included).
struct Alive<'a>(&'a AtomicUsize);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl FanEnforcer {
    /// Creates the group and starts answering events; violations go to
    /// `out`; `on_stall` is called (once) if answering stops.
    pub fn start(
        cgroup_root: PathBuf,
        hashing: Hashing,
        out: Sender<FanViolation>,
        on_stall: StallHandler,
    ) -> Result<Self, FanError> {
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
            hashing,
            hashes: std::sync::Mutex::new(HashMap::new()),
            busy: std::array::from_fn(|_| AtomicU64::new(0)),
            epoch: Instant::now(),
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            alive: AtomicUsize::new(WORKERS + 1),
            stopping: AtomicBool::new(false),
            fault_panic: AtomicBool::new(false),
            fault_stall_ms: AtomicU64::new(0),
            fault_stall_events: AtomicU64::new(0),
        });
        let spawn_err =
            |e: std::io::Error| FanError::Init(nix::Error::from_raw(e.raw_os_error().unwrap_or(0)));
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let mut threads = Vec::new();
        for slot in 0..WORKERS {
            let (worker, jobs, out) = (shared.clone(), jobs_rx.clone(), out.clone());
            let t = std::thread::Builder::new()
                .name(format!("fanotify-{slot}"))
                .spawn(move || {
                    let _alive = Alive(&worker.alive);
                    worker.work(slot, &jobs, &out);
                })
                .map_err(spawn_err)?;
            threads.push(t);
        }
        let reader = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("fanotify".into())
                .spawn(move || {
                    let _alive = Alive(&reader.alive);
                    reader.read(stop_rx, jobs_tx);
                })
                .map_err(spawn_err)?,
        );
        let watched = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("fanotify-watchdog".into())
                .spawn(move || watched.watch(&on_stall))
                .map_err(spawn_err)?,
        );
        Ok(FanEnforcer {
            shared,
            stop: stop_tx,
            threads,
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
        // its root filesystem: until then its root is the node's (or, for
        // a sensor outside a container, ours), and marking that would put
        // every exec on the node through this thread. (A root shown as
        // `/` is normal: another mount namespace's root reads so.)
        let identity = |m: &std::fs::Metadata| (m.dev(), m.ino());
        let node_roots = ["/proc/1/root", "/"]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| identity(&m));
        let this = dir.metadata().map_err(|e| root_err(e.to_string()))?;
        if node_roots.into_iter().any(|n| n == identity(&this)) {
            return Err(root_err(
                "is the node's root: the container has not entered its root filesystem yet (tried again at the next resync)".into(),
            ));
        }
        let aliases = exec_aliases(&work);
        let protected = protected_files(&work);
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
                protected,
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

impl FanEnforcer {
    /// For tests: the next event's decision panics.
    #[doc(hidden)]
    pub fn inject_panic(&self) {
        self.shared.fault_panic.store(true, Ordering::SeqCst);
    }

    /// For tests: the next `events` events are each held for `d` before
    /// they are decided.
    #[doc(hidden)]
    pub fn inject_stall(&self, d: Duration, events: u64) {
        self.shared
            .fault_stall_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
        self.shared
            .fault_stall_events
            .store(events, Ordering::SeqCst);
    }
}

impl Drop for FanEnforcer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = nix::unistd::write(&self.stop, b"x");
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Shared {
    /// Milliseconds since `epoch`, plus one (0 means "not busy").
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Watches the threads until the enforcer stops: answers by policy
    /// each event past its deadline, and calls `on_stall` once if a thread
    /// ended or every deciding thread holds its event too long.
    fn watch(&self, on_stall: &StallHandler) {
        while !self.stopping.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            if self.alive.load(Ordering::SeqCst) < WORKERS + 1 {
                (on_stall.0)("a thread answering fanotify events ended");
                return;
            }
            let now = self.now_ms();
            let deadline = EVENT_DEADLINE.as_millis() as u64;
            let late: Vec<Arc<InFlight>> = self
                .pending
                .lock()
                .map(|p| {
                    p.values()
                        .filter(|j| {
                            !j.answered.load(Ordering::SeqCst)
                                && now.saturating_sub(j.read_at) > deadline
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for job in late {
                let response = self.fallback(job.tid);
                if self.answer(&job, response) {
                    tracing::warn!(
                        tid = job.tid,
                        refused = response == Response::FAN_DENY,
                        "a fanotify event was not decided within {}s: answered by policy",
                        EVENT_DEADLINE.as_secs()
                    );
                }
            }
            // The shortest hold among the deciding threads, if all hold one.
            let held = self.busy.iter().try_fold(u64::MAX, |least, b| {
                let since = b.load(Ordering::SeqCst);
                (since != 0).then(|| least.min(now.saturating_sub(since)))
            });
            if let Some(held) = held
                && held > STALL_AFTER.as_millis() as u64
            {
                (on_stall.0)(&format!(
                    "no fanotify event answered: every deciding thread has held its event for {}s or more",
                    held / 1000
                ));
                return;
            }
        }
    }

    /// Answers `job` unless it was answered already; whether this did.
    fn answer(&self, job: &InFlight, response: Response) -> bool {
        if job.answered.swap(true, Ordering::SeqCst) {
            return false;
        }
        if let Some(fd) = job.event.fd()
            && let Err(e) = self.fan.write_response(FanotifyResponse::new(fd, response))
        {
            tracing::error!("answering a fanotify event: {e}");
        }
        true
    }

    /// The answer when deciding failed (a panic): deny an event of a
    /// workload the rules cover, allow anyone else's.
    fn fallback(&self, tid: i32) -> Response {
        let covered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cgroup_of(&self.cgroup_root, tid).is_some_and(|id| {
                self.state
                    .read()
                    .is_ok_and(|s| s.workloads.contains_key(&id))
            })
        }));
        if covered.unwrap_or(false) {
            Response::FAN_DENY
        } else {
            Response::FAN_ALLOW
        }
    }

    /// Decides one event, containing a panic (which fails closed for a
    /// covered workload) so the thread goes on answering.
    fn decide_guarded(
        &self,
        tid: i32,
        fd: BorrowedFd<'_>,
        mask: MaskFlags,
    ) -> Result<Option<FanViolation>, Response> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let stalled = self
                .fault_stall_events
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if stalled {
                let ms = self.fault_stall_ms.load(Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(ms));
            }
            if self.fault_panic.swap(false, Ordering::SeqCst) {
                panic!("injected fault");
            }
            self.decide(tid, fd, mask)
        }))
        .map_err(|_| {
            tracing::error!(
                tid,
                "deciding a fanotify event panicked; answered as a failure"
            );
            self.fallback(tid)
        })
    }

    /// Reads events and hands them to the deciding threads; the
    /// sensor's own opens are allowed at once.
    fn read(&self, stop: OwnedFd, jobs: Sender<(u64, Arc<InFlight>)>) {
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
            for event in events {
                let tid = event.pid();
                let job = Arc::new(InFlight {
                    event,
                    tid,
                    read_at: self.now_ms(),
                    answered: AtomicBool::new(false),
                });
                if job.event.fd().is_none() {
                    continue;
                }
                if tid == me {
                    self.answer(&job, Response::FAN_ALLOW);
                    continue;
                }
                let seq = self.next.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut p) = self.pending.lock() {
                    p.insert(seq, job.clone());
                }
                if jobs.send((seq, job)).is_err() {
                    return;
                }
            }
        }
    }

    /// Decides and answers events until the reader stops.
    fn work(
        &self,
        slot: usize,
        jobs: &Mutex<Receiver<(u64, Arc<InFlight>)>>,
        out: &Sender<FanViolation>,
    ) {
        loop {
            // The lock is released once a job is taken.
            let next = match jobs.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return,
            };
            let Ok((seq, job)) = next else { return };
            self.busy[slot].store(self.now_ms(), Ordering::SeqCst);
            if let Some(fd) = job.event.fd() {
                let (response, violation) = match self.decide_guarded(job.tid, fd, job.event.mask())
                {
                    Ok(Some(v)) if v.denied => (Response::FAN_DENY, Some(v)),
                    Ok(v) => (Response::FAN_ALLOW, v),
                    Err(fallback) => (fallback, None),
                };
                // Past its deadline, the event was answered by policy.
                if self.answer(&job, response)
                    && let Some(v) = violation
                {
                    let _ = out.send(v);
                }
            }
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&seq);
            }
            self.busy[slot].store(0, Ordering::SeqCst);
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
                (true, None) if self.hashing.refuse_unknown => rules.exec_hit_unhashed(name),
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
            let read = read && p.work.rules.has_read_rules();
            let by_path = p.work.rules.file_hit(&path, write, read);
            // Under another name (a hard link), the rules of its own.
            let by_inode = nix::sys::stat::fstat(fd)
                .ok()
                .and_then(|st| p.protected.get(&(st.st_dev, st.st_ino)))
                .and_then(|name| p.work.rules.file_hit(name, write, read));
            (Hit::max(by_path, by_inode), write)
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
    /// time; `None` for a file larger than [`Hashing::max_bytes`] (every
    /// event on the node waits while this thread reads) or unreadable.
    fn sha256(&self, fd: BorrowedFd<'_>) -> Option<[u8; 32]> {
        let dup = fd.try_clone_to_owned().ok()?;
        let file = File::from(dup);
        let m = file.metadata().ok()?;
        let max = self.hashing.max_bytes;
        if m.size() > max {
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
            if off + n as u64 > max {
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

/// Most files indexed under a workload's file rules; past it, hard links
/// to the files not indexed are not followed (and a warning says so).
pub const MAX_PROTECTED_FILES: usize = 100_000;

/// Every regular file under the rules' file prefixes in the workload's
/// root (not following links, not leaving the root's filesystem), by
/// device and inode, with its path inside the root.
fn protected_files(work: &FanWorkload) -> HashMap<(u64, u64), String> {
    let mut out = HashMap::new();
    if !work.file {
        return out;
    }
    let Ok(root_dev) = std::fs::metadata(&work.root).map(|m| m.dev()) else {
        return out;
    };
    let mut stack: Vec<String> = work.rules.files.iter().map(|f| f.path.clone()).collect();
    while let Some(inner) = stack.pop() {
        if out.len() >= MAX_PROTECTED_FILES {
            tracing::warn!(
                root = %work.root.display(),
                "more than {MAX_PROTECTED_FILES} files under the file rules: hard links to the rest are not followed"
            );
            break;
        }
        let host = work.root.join(inner.trim_start_matches('/'));
        let Ok(m) = std::fs::symlink_metadata(&host) else {
            continue;
        };
        if m.dev() != root_dev {
            continue;
        }
        if m.is_file() {
            out.entry((m.dev(), m.ino())).or_insert(inner);
        } else if m.is_dir()
            && let Ok(entries) = std::fs::read_dir(&host)
        {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                stack.push(if inner == "/" {
                    format!("/{name}")
                } else {
                    format!("{inner}/{name}")
                });
            }
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
