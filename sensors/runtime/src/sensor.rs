//! The node's enforcement state: which workloads (cgroups) are tracked,
//! their compiled rules, and which engine enforces each kind of rule.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use sightline_crds::runtime_policy::{PolicyAction, RuntimePolicySpec};
use sightline_crds::sensor::Enforcer;
use sightline_runtime_common::{Workload as KWorkload, action, engine, kind, workload};

use crate::event::{Event, Verdict, decode};
use crate::fanotify::{FanEnforcer, FanViolation, FanWorkload};
use crate::kmaps::{self, InKernel, Written};
use crate::loader::{self, Limits, LoadError, LsmStatus};
use crate::rules::{self, PolicyRef, Rule, RuleError, RuleTable};

/// How the sensor runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Enforcers in order of preference (the Sensor's `runtime.enforcers`).
    pub enforcers: Vec<Enforcer>,
    /// `enforcement: AuditOnly`: blocks are reported, not enforced.
    pub audit_only: bool,
    /// Where the cgroup v2 hierarchy is mounted.
    pub cgroup_root: PathBuf,
    /// Map sizes.
    pub limits: Limits,
    /// How programs are hashed for SHA-256 rules.
    pub hashing: crate::fanotify::Hashing,
    /// What happens if the fanotify enforcer stops answering (the daemon
    /// exits, which releases every waiting open).
    pub on_stall: crate::fanotify::StallHandler,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            enforcers: vec![Enforcer::Lsm, Enforcer::Fanotify, Enforcer::Signal],
            audit_only: false,
            cgroup_root: cgroup2_root().unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup")),
            limits: Limits::default(),
            hashing: crate::fanotify::Hashing::default(),
            on_stall: crate::fanotify::StallHandler::exit(),
        }
    }
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on hybrid hosts), from this process's mount table.
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

/// The path a violation shows when the kernel could not read or resolve it
/// (the call was decided by the workload's strongest file rule).
pub const UNREADABLE_PATH: &str = "<unreadable path>";

/// A workload to enforce rules on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadSpec {
    /// Its cgroup v2 directory (under [`Options::cgroup_root`]).
    pub cgroup: PathBuf,
    /// Its root filesystem as this process reaches it (`/proc/<pid>/root`
    /// of a process in it, or a path); without it the fanotify enforcer
    /// cannot serve the workload.
    pub root: Option<PathBuf>,
    /// The policies that select it.
    pub policies: Vec<(PolicyRef, RuntimePolicySpec)>,
    /// A pod's cgroup, guarded before its containers are known. The rules
    /// are written for the pod's cgroup and for any cgroup below it that
    /// no other workload tracks; a container's cgroup created below it
    /// later inherits them in the kernel (the `cgroup_mkdir` program)
    /// before anything runs in it, so a container is held from its first
    /// exec. Only in-kernel engines serve a guard (the fanotify enforcer
    /// needs the container's root), and exec allowlists are left to the
    /// container's own workload: the pod's sandbox runs programs no
    /// allowlist names.
    pub guard: bool,
}

/// How a workload's rules are enforced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// The cgroup id.
    pub cgroup_id: u64,
    /// Engine for exec rules (when there are any).
    pub exec: Option<Enforcer>,
    /// Engine for file rules.
    pub file: Option<Enforcer>,
    /// Engine for connect rules.
    pub net: Option<Enforcer>,
    /// Rules that could not be compiled (their policies do not apply).
    pub errors: Vec<RuleError>,
    /// Why a preferred engine was not used.
    pub notes: Vec<String>,
    /// Why the rules chosen for this workload do not hold on it now (the
    /// fanotify enforcer could not mark its root); retried at the next
    /// apply.
    pub unprotected: Option<String>,
}

/// What the workload did against a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Ran a program.
    Exec {
        /// The program's path.
        path: String,
    },
    /// Opened a file.
    Open {
        /// The path.
        path: String,
        /// For writing.
        write: bool,
    },
    /// Connected.
    Connect {
        /// Destination.
        addr: std::net::IpAddr,
        /// Port.
        port: u16,
    },
}

/// What came of a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Reported only (an `Audit` rule).
    Reported,
    /// The call failed with EPERM.
    Denied,
    /// The process was killed with SIGKILL.
    Killed,
}

/// One violation of one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The cgroup of the process.
    pub cgroup_id: u64,
    /// Process (or thread) id.
    pub pid: u32,
    /// What it did.
    pub activity: Activity,
    /// The rule.
    pub rule: Rule,
    /// What happened.
    pub outcome: Outcome,
    /// Which engine decided.
    pub enforcer: Enforcer,
}

/// What the sensor saw.
#[derive(Clone, Debug)]
pub enum Report {
    /// An event from the programs.
    Event(Event),
    /// A rule was violated.
    Violation(Violation),
}

struct Tracked {
    ruleset: u32,
    written: Written,
    cgroups: Vec<u64>,
    fan: bool,
    /// A pod's guard ([`WorkloadSpec::guard`]), not a container.
    guard: bool,
    /// The fanotify enforcer refused the workload (its root not ready):
    /// the same spec is applied again at the next resync, not cached.
    fan_failed: bool,
    /// What was applied, and how: applying the same spec again (every
    /// resync) changes nothing and returns this.
    spec: WorkloadSpec,
    applied: Applied,
}

/// The sensor's kernel side and enforcement state. Dropping it detaches the
/// programs and closes the fanotify group: enforcement is released.
pub struct Sensor {
    loaded: loader::Loaded,
    fan: Option<FanEnforcer>,
    fan_error: Option<String>,
    fan_rx: Receiver<FanViolation>,
    table: RuleTable,
    tracked: HashMap<u64, Tracked>,
    next_ruleset: u32,
    opts: Options,
}

/// Why the sensor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The programs did not load.
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl Sensor {
    /// Loads the programs and probes the enforcers.
    pub fn start(opts: Options) -> Result<Self, StartError> {
        let loaded = loader::load(opts.limits)?;
        let (tx, fan_rx) = channel();
        let (fan, fan_error) = if opts.enforcers.contains(&Enforcer::Fanotify) {
            match FanEnforcer::start(
                opts.cgroup_root.clone(),
                opts.hashing,
                tx,
                opts.on_stall.clone(),
            ) {
                Ok(f) => (Some(f), None),
                Err(e) => (None, Some(e.to_string())),
            }
        } else {
            (None, Some("not in the sensor's enforcers".into()))
        };
        Ok(Sensor {
            loaded,
            fan,
            fan_error,
            fan_rx,
            table: RuleTable::default(),
            tracked: HashMap::new(),
            next_ruleset: 1,
            opts,
        })
    }

    /// How many tracked workloads are not protected as their rules say
    /// (see [`Applied::unprotected`]).
    pub fn unprotected(&self) -> usize {
        self.tracked
            .values()
            .filter(|t| t.applied.unprotected.is_some())
            .count()
    }

    /// The fanotify enforcer, when it runs (tests inject faults through it).
    #[doc(hidden)]
    pub fn fanotify_enforcer(&self) -> Option<&FanEnforcer> {
        self.fan.as_ref()
    }

    /// Why the LSM enforcer is not used, if it is not.
    pub fn lsm_reason(&self) -> Option<String> {
        if !self.opts.enforcers.contains(&Enforcer::Lsm) {
            return Some("lsm: not in the sensor's enforcers".into());
        }
        match &self.loaded.lsm {
            LsmStatus::Attached => None,
            LsmStatus::Unavailable(r) => Some(format!("lsm: {r}")),
        }
    }

    /// Why the fanotify enforcer is not used, if it is not.
    pub fn fanotify_reason(&self) -> Option<String> {
        self.fan_error.as_ref().map(|e| format!("fanotify: {e}"))
    }

    /// The rule with id `id`.
    pub fn rule(&self, id: u32) -> Option<&Rule> {
        self.table.get(id)
    }

    fn lsm(&self) -> bool {
        self.opts.enforcers.contains(&Enforcer::Lsm) && self.loaded.lsm == LsmStatus::Attached
    }

    /// The engine for a kind of rule: the first preferred one that works.
    fn choose(&self, fanotify_ok: bool, notes: &mut Vec<String>, what: &str) -> Option<Enforcer> {
        for e in &self.opts.enforcers {
            match e {
                Enforcer::Lsm if self.lsm() => return Some(Enforcer::Lsm),
                Enforcer::Fanotify if fanotify_ok => return Some(Enforcer::Fanotify),
                Enforcer::Signal => return Some(Enforcer::Signal),
                _ => {}
            }
        }
        notes.push(format!("no enforcer available for {what} rules"));
        None
    }

    /// Starts (or updates) enforcing `spec`'s policies on its cgroup and
    /// every cgroup below it. The programs stay loaded; only maps change.
    pub fn apply(&mut self, spec: &WorkloadSpec) -> Result<Applied, String> {
        let meta = std::fs::metadata(&spec.cgroup)
            .map_err(|e| format!("the cgroup {}: {e}", spec.cgroup.display()))?;
        let cgroup_id = meta.ino();
        if let Some(t) = self.tracked.get(&cgroup_id)
            && t.spec == *spec
            && !t.fan_failed
        {
            return Ok(t.applied.clone());
        }
        let (set, errors) = rules::compile(&spec.policies, self.opts.audit_only, &mut self.table);
        let mut applied = Applied {
            cgroup_id,
            errors,
            ..Applied::default()
        };
        let fan_ok = !spec.guard && self.fan.is_some() && spec.root.is_some();
        if self.fan.is_some() && spec.root.is_none() && !spec.guard {
            applied
                .notes
                .push("fanotify: the workload's root filesystem is not known".into());
        }
        if set.has_exec_rules() {
            applied.exec = self.choose(fan_ok, &mut applied.notes, "exec");
        }
        if !set.files.is_empty() {
            applied.file = self.choose(fan_ok, &mut applied.notes, "file");
        }
        if !set.net.is_empty() {
            applied.net = self.choose(false, &mut applied.notes, "connect");
        }
        if set.needs_sha256() && applied.exec == Some(Enforcer::Signal) {
            applied
                .notes
                .push("signal: SHA-256 exec rules are not matched in the kernel (they need the fanotify or lsm enforcer)".into());
        }
        let kernel_engine = |e: Option<Enforcer>| match e {
            Some(Enforcer::Signal) => engine::SIGNAL,
            Some(Enforcer::Lsm) => engine::LSM,
            _ => engine::NONE,
        };
        let in_kernel = InKernel {
            exec: matches!(applied.exec, Some(Enforcer::Signal | Enforcer::Lsm)),
            file: matches!(applied.file, Some(Enforcer::Signal | Enforcer::Lsm)),
            net: matches!(applied.net, Some(Enforcer::Signal | Enforcer::Lsm)),
        };
        let ruleset = self.next_ruleset;
        self.next_ruleset = self.next_ruleset.wrapping_add(1).max(1);
        let written = kmaps::write(
            &mut self.loaded.rules,
            ruleset,
            &set,
            in_kernel,
            spec.root.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        let mut flags = workload::TRACE;
        let allowlist = !spec.guard && !set.allowlists.is_empty();
        if allowlist {
            flags |= workload::EXEC_ALLOWLIST;
        }
        if set.has_read_rules() {
            flags |= workload::FILE_READ_RULES;
        }
        let allow = set
            .allowlists
            .first()
            .and_then(|a| a.hit)
            .filter(|_| allowlist);
        let kw = KWorkload {
            ruleset,
            flags,
            engines: kernel_engine(applied.exec) << engine::EXEC_SHIFT
                | kernel_engine(applied.file) << engine::FILE_SHIFT
                | kernel_engine(applied.net) << engine::NET_SHIFT,
            allow_action: match allow.map(|h| h.action) {
                Some(PolicyAction::Block) => action::BLOCK,
                Some(PolicyAction::Audit) => action::AUDIT,
                None => action::NONE,
            },
            _pad: [0; 3],
            allow_rule: allow.map_or(0, |h| h.rule),
            _pad2: 0,
            unknown_path: kmaps::unknown_path_rule(&set),
        };
        let mut cgroups = descendants(&spec.cgroup);
        let others = self.held_by_others(cgroup_id);
        if spec.guard {
            // Containers already tracked keep their own rules.
            cgroups.retain(|id| *id == cgroup_id || !others.contains(id));
        }
        for id in &cgroups {
            if let Err(e) = self.loaded.rules.workloads.insert(id, kw, 0) {
                kmaps::remove(&mut self.loaded.rules, &written);
                return Err(format!("writing the WORKLOADS map: {e}"));
            }
        }
        let rules = Arc::new(set);
        let fan_exec = applied.exec == Some(Enforcer::Fanotify);
        let fan_file = applied.file == Some(Enforcer::Fanotify);
        let mut fan_failed = false;
        if let (Some(fan), Some(root)) = (&self.fan, &spec.root) {
            if fan_exec || fan_file {
                let work = FanWorkload {
                    rules: rules.clone(),
                    root: root.clone(),
                    exec: fan_exec,
                    file: fan_file,
                };
                if let Err(e) = fan.set(cgroup_id, work) {
                    applied.notes.push(format!("fanotify: {e}"));
                    applied.unprotected = Some(format!("fanotify: {e}"));
                    fan_failed = true;
                }
            } else {
                fan.remove(cgroup_id);
            }
        }
        if let Some(old) = self.tracked.insert(
            cgroup_id,
            Tracked {
                ruleset,
                written,
                cgroups: cgroups.clone(),
                fan: fan_exec || fan_file,
                guard: spec.guard,
                fan_failed,
                spec: spec.clone(),
                applied: applied.clone(),
            },
        ) {
            // A guard's old cgroups may be containers tracked since.
            for id in old
                .cgroups
                .iter()
                .filter(|id| !cgroups.contains(id) && !others.contains(id))
            {
                let _ = self.loaded.rules.workloads.remove(id);
            }
            kmaps::remove(&mut self.loaded.rules, &old.written);
            debug_assert_ne!(old.ruleset, ruleset);
        }
        Ok(applied)
    }

    /// Stops enforcing on a workload.
    pub fn remove(&mut self, cgroup_id: u64) {
        let others = self.held_by_others(cgroup_id);
        if let Some(old) = self.tracked.remove(&cgroup_id) {
            if old.fan
                && let Some(fan) = &self.fan
            {
                fan.remove(cgroup_id);
            }
            for id in old.cgroups.iter().filter(|id| !others.contains(id)) {
                let _ = self.loaded.rules.workloads.remove(id);
            }
            kmaps::remove(&mut self.loaded.rules, &old.written);
        }
    }

    /// The cgroups whose kernel entries belong to tracked workloads other
    /// than `cgroup_id`'s (a guard and its pod's containers overlap).
    fn held_by_others(&self, cgroup_id: u64) -> std::collections::HashSet<u64> {
        self.tracked
            .iter()
            .filter(|(id, _)| **id != cgroup_id)
            .flat_map(|(_, t)| t.cgroups.iter().copied())
            .collect()
    }

    /// The cgroup ids of tracked workloads (containers and guarded pods).
    pub fn tracked(&self) -> Vec<u64> {
        self.tracked.keys().copied().collect()
    }

    /// Whether the workload of cgroup `cgroup_id` is tracked.
    pub fn tracks(&self, cgroup_id: u64) -> bool {
        self.tracked.contains_key(&cgroup_id)
    }

    /// How many tracked workloads are containers, and how many are pods
    /// guarded before their containers are known.
    pub fn counts(&self) -> (usize, usize) {
        let guards = self.tracked.values().filter(|t| t.guard).count();
        (self.tracked.len() - guards, guards)
    }

    /// The ring buffer, to wait on its descriptor.
    pub fn ring(&self) -> &RingBuf<MapData> {
        &self.loaded.events
    }

    /// Drains what the programs and the fanotify enforcer reported.
    pub fn drain(&mut self, mut f: impl FnMut(Report)) -> usize {
        let mut n = 0;
        loop {
            let record = match self.loaded.events.next() {
                Some(r) => r.to_vec(),
                None => break,
            };
            n += 1;
            match decode(&record) {
                Ok(ev) => {
                    if let Some(v) = self.violation_of(&ev) {
                        f(Report::Violation(v));
                    }
                    f(Report::Event(ev));
                }
                Err(e) => tracing::warn!("a ring buffer record: {e}"),
            }
        }
        while let Ok(v) = self.fan_rx.try_recv() {
            n += 1;
            if let Some(rule) = self.table.get(v.hit.rule).cloned() {
                f(Report::Violation(Violation {
                    cgroup_id: v.cgroup_id,
                    pid: v.tid,
                    activity: if v.exec {
                        Activity::Exec { path: v.path }
                    } else {
                        Activity::Open {
                            path: v.path,
                            write: v.write,
                        }
                    },
                    rule,
                    outcome: if v.denied {
                        Outcome::Denied
                    } else {
                        Outcome::Reported
                    },
                    enforcer: Enforcer::Fanotify,
                }));
            }
        }
        n
    }

    fn violation_of(&self, ev: &Event) -> Option<Violation> {
        let c = ev.common();
        let (outcome, enforcer) = match c.verdict {
            Verdict::None => return None,
            Verdict::Audit => (
                Outcome::Reported,
                if self.lsm() {
                    Enforcer::Lsm
                } else {
                    Enforcer::Signal
                },
            ),
            Verdict::Killed => (Outcome::Killed, Enforcer::Signal),
            Verdict::Denied => (Outcome::Denied, Enforcer::Lsm),
        };
        let shown = |path: &str| {
            if c.path_unreadable {
                UNREADABLE_PATH.to_string()
            } else if c.path_truncated {
                format!("{path}…")
            } else {
                path.to_string()
            }
        };
        let activity = match ev {
            Event::Exec(e) => Activity::Exec {
                path: shown(&e.filename),
            },
            Event::Open(o) => Activity::Open {
                path: shown(&o.path),
                write: crate::fanotify::open_access(o.flags).1,
            },
            Event::Connect(n) => Activity::Connect {
                addr: n.addr,
                port: n.port,
            },
            Event::Exit(_) => return None,
        };
        Some(Violation {
            cgroup_id: c.cgroup_id,
            pid: c.pid,
            activity,
            rule: self.table.get(c.rule)?.clone(),
            outcome,
            enforcer,
        })
    }

    /// Records lost because the ring buffer was full, by kind (summed over
    /// CPUs). Index 0 counts violations whose record was lost (enforced
    /// all the same).
    pub fn drops(&self) -> [u64; kind::COUNT as usize] {
        let mut out = [0u64; kind::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = drops_at(&self.loaded.drops, i as u32) {
                *slot = values;
            }
        }
        out
    }
}

fn drops_at(map: &PerCpuArray<MapData, u64>, i: u32) -> Result<u64, aya::maps::MapError> {
    Ok(map.get(&i, 0)?.iter().sum())
}

/// The first cgroup directory under `root` whose name `is_it` accepts,
/// looking into those `descend` accepts, at most `depth` levels down.
pub fn search_cgroups(
    root: &Path,
    depth: usize,
    is_it: impl Fn(&str) -> bool,
    descend: impl Fn(&str) -> bool,
) -> Option<PathBuf> {
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, level)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name();
            let name = name.to_string_lossy();
            if is_it(&name) {
                return Some(e.path());
            }
            if level < depth && descend(&name) {
                stack.push((e.path(), level + 1));
            }
        }
    }
    None
}

/// A cgroup and every cgroup below it, by id.
fn descendants(dir: &Path) -> Vec<u64> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(m) = std::fs::metadata(&d) {
            out.push(m.ino());
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    out
}
