//! The programs and maps. Kernel structures are read at byte offsets that
//! userspace found in the running kernel's BTF ([`OFFSETS`]), so no field
//! layout is compiled in.
//!
//! Each program is `fn prog(ctx) { let _ = try_prog(ctx); }`: a failed read
//! ends the program quietly, and a full ring buffer is counted in [`DROPS`].
//!
//! Enforcing programs decide first and record second: the path is resolved
//! into a per-CPU buffer ([`PATHS`]), the rule looked up and applied, and
//! only then is a record reserved. A full ring buffer loses the record
//! (counted), never the decision; a path that cannot be read is decided by
//! the workload's strongest file rule ([`Workload::unknown_path`]).

use core::ptr::read_volatile;

use aya_ebpf::helpers::generated::{
    bpf_d_path, bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns, bpf_probe_read_kernel,
    bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str, bpf_send_signal,
};
use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid};
use aya_ebpf::macros::{btf_tracepoint, lsm, map, tracepoint};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::{HashMap, LpmTrie, PerCpuArray, RingBuf};
use aya_ebpf::programs::{BtfTracePointContext, LsmContext, TracePointContext};
use sightline_runtime_common::{
    ARGS_LEN, ConnectEvent, ExecEvent, ExitEvent, FULL_PATH_LEN, FileRule, Header, InodeKey,
    KEY_PATH_LEN, NET_KEY_PREFIX_BITS, NetKey, Offsets, OpenEvent, PATH_LEN, PathKey, RuleValue,
    Workload, action, engine, flags, kind, verdict, workload,
};

/// Events for userspace. The size is a default; userspace sets its own.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Records the ring buffer had no room for, per CPU and kind; index 0
/// counts violations whose record was lost (the enforcement still happened).
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(kind::COUNT, 0);

/// Tracked cgroups (the pods on this node) and their rule sets.
#[map]
static WORKLOADS: HashMap<u64, Workload> = HashMap::with_max_entries(65536, 0);

/// Exec rules by executable file.
#[map]
static EXEC_INODES: HashMap<InodeKey, RuleValue> = HashMap::with_max_entries(16384, 0);

/// Exec rules by exact path (keys end with the path's NUL).
#[map]
static EXEC_PATHS: LpmTrie<PathKey, RuleValue> = LpmTrie::with_max_entries(16384, 0);

/// File rules by path prefix. Each entry already holds the strongest action
/// of every shorter prefix of it, so the longest match is the whole answer.
#[map]
static FILE_PREFIXES: LpmTrie<PathKey, FileRule> = LpmTrie::with_max_entries(16384, 0);

/// Connect rules by rule set, port (0 = any) and address prefix.
#[map]
static NET_RULES: LpmTrie<NetKey, RuleValue> = LpmTrie::with_max_entries(16384, 0);

/// A path key is 260 bytes, half the BPF stack: built here instead.
#[map]
static SCRATCH: PerCpuArray<Key<PathKey>> = PerCpuArray::with_max_entries(1, 0);

/// The path of the call being decided, whole (up to `PATH_MAX`), before any
/// record is reserved.
#[map]
static PATHS: PerCpuArray<[u8; FULL_PATH_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// Field offsets, set by userspace before loading (read-only afterwards, so
/// the verifier sees them as constants).
#[unsafe(no_mangle)]
static OFFSETS: Offsets = unsafe { core::mem::zeroed() };

const SIGKILL: u32 = 9;
const EPERM: i32 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const ENOMEM: i64 = 12;
const O_ACCMODE: u32 = 3;
const O_WRONLY: u32 = 1;
const O_RDWR: u32 = 2;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_APPEND: u32 = 0o2000;
/// Arguments of a `syscalls/sys_enter_*` record start here (after the
/// common fields and the syscall number), eight bytes each.
const SYSCALL_ARGS: usize = 16;

#[inline(always)]
fn offsets() -> Offsets {
    // SAFETY: a plain read of a static; volatile so the zero initialiser
    // is not folded in at compile time.
    unsafe { read_volatile(&OFFSETS) }
}

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
fn kread<T: Copy>(base: u64, off: u32) -> Result<T, i64> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper checks the source address; the destination is ours.
    let r = unsafe {
        bpf_probe_read_kernel(
            v.as_mut_ptr().cast(),
            size_of::<T>() as u32,
            (base + off as u64) as *const _,
        )
    };
    if r == 0 || base == 0 {
        if base == 0 {
            return Err(-14);
        }
        // SAFETY: the helper filled all of it.
        Ok(unsafe { v.assume_init() })
    } else {
        Err(r)
    }
}

/// Reads a `T` at `addr` in the current process's memory.
#[inline(always)]
fn uread<T: Copy>(addr: u64) -> Result<T, i64> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper checks the source address; the destination is ours.
    let r = unsafe {
        bpf_probe_read_user(
            v.as_mut_ptr().cast(),
            size_of::<T>() as u32,
            addr as *const _,
        )
    };
    if r == 0 {
        // SAFETY: the helper filled all of it.
        Ok(unsafe { v.assume_init() })
    } else {
        Err(r)
    }
}

#[inline(always)]
fn count_drop(index: u32) {
    if let Some(p) = DROPS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; programs on one CPU do not preempt each other.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn header(kind: u8, cgroup_id: u64) -> Header {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    Header {
        kind,
        verdict: verdict::NONE,
        _pad: [0; 2],
        rule: 0,
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        cgroup_id,
        // SAFETY: no arguments, no memory access.
        time_ns: unsafe { bpf_ktime_get_boot_ns() },
        flags: 0,
        _pad2: 0,
    }
}

#[inline(always)]
fn current_cgroup() -> u64 {
    // SAFETY: no arguments, no memory access.
    unsafe { bpf_get_current_cgroup_id() }
}

#[inline(always)]
fn workload(cgroup_id: u64) -> Option<Workload> {
    // SAFETY: the value is copied out at once.
    unsafe { WORKLOADS.get(&cgroup_id).copied() }
}

/// Applies a matched rule under `engine`: returns the verdict and, for a
/// block under the signal engine, kills the current process.
#[inline(always)]
fn enforce(rule_action: u8, eng: u32) -> u8 {
    match (rule_action, eng) {
        (action::AUDIT, _) => verdict::AUDIT,
        (action::BLOCK, engine::SIGNAL) => {
            // SAFETY: signals the current task only.
            unsafe { bpf_send_signal(SIGKILL) };
            verdict::KILLED
        }
        (action::BLOCK, engine::LSM) => verdict::DENIED,
        _ => verdict::NONE,
    }
}

/// Copies the NUL-terminated `path` (already in kernel memory: a record or
/// [`PATHS`]) into the scratch key for `ruleset`. A path longer than the
/// key keeps its head, which is what prefix rules match.
#[inline(always)]
fn path_key(ruleset: u32, path: *const u8) -> Option<&'static Key<PathKey>> {
    let key = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the per-CPU scratch slot is ours for this program run; the copy
    // is bounded by the key's size.
    unsafe {
        (*key).prefix_len = ((4 + KEY_PATH_LEN) * 8) as u32;
        (*key).data.ruleset = ruleset.to_be_bytes();
        bpf_probe_read_kernel(
            (*key).data.path.as_mut_ptr().cast(),
            KEY_PATH_LEN as u32,
            path.cast(),
        );
        Some(&*key)
    }
}

/// The exec rule verdict for the executable (`dev`, `ino`, path in `name`)
/// of a workload, with the rule that decided it.
#[inline(always)]
fn exec_rule(w: &Workload, dev: u32, ino: u64, name: *const u8) -> Option<RuleValue> {
    let ikey = InodeKey {
        ruleset: w.ruleset,
        dev,
        ino,
    };
    // SAFETY: the value is copied out at once.
    let mut hit = unsafe { EXEC_INODES.get(&ikey).copied() };
    if hit.is_none() {
        let key = path_key(w.ruleset, name)?;
        hit = EXEC_PATHS.get(key).copied();
    }
    if w.flags & workload::EXEC_ALLOWLIST != 0 {
        // In an allowlist a match means allowed.
        return match hit {
            Some(_) => None,
            None => Some(RuleValue {
                action: w.allow_action,
                _pad: [0; 3],
                rule: w.allow_rule,
            }),
        };
    }
    hit
}

// ---------------------------------------------------------------- processes

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    let _ = try_exec(&ctx);
    0
}

/// The device and inode of the program `bprm` runs (zero where unreadable).
#[inline(always)]
fn exe_inode(bprm: u64, o: &Offsets) -> (u32, u64) {
    let file = kread::<u64>(bprm, o.bprm_file).unwrap_or(0);
    let inode = kread::<u64>(file, o.file_inode).unwrap_or(0);
    let ino = kread::<u64>(inode, o.inode_ino).unwrap_or(0);
    let dev = kread::<u32>(kread::<u64>(inode, o.inode_sb).unwrap_or(0), o.sb_dev).unwrap_or(0);
    (dev, ino)
}

/// Reads the path `bprm` was executed by into `buf` ([`PATHS`]); returns
/// its length with the NUL, or an error (then `buf` holds "").
#[inline(always)]
fn exe_path(bprm: u64, o: &Offsets, buf: *mut [u8; FULL_PATH_LEN]) -> i64 {
    let mut n = -1;
    if let Ok(name) = kread::<u64>(bprm, o.bprm_filename) {
        // SAFETY: the per-CPU buffer is ours for this run; the read is bounded.
        n = unsafe {
            bpf_probe_read_kernel_str(buf.cast(), FULL_PATH_LEN as u32, name as *const _)
        };
    }
    if n < 0 {
        // SAFETY: as above.
        unsafe { (*buf)[0] = 0 };
    }
    n
}

fn try_exec(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let o = offsets();
    let task: u64 = ctx.arg(0);
    let bprm: u64 = ctx.arg(2);
    let cgroup_id = current_cgroup();
    let (dev, ino) = exe_inode(bprm, &o);
    let buf = PATHS.get_ptr_mut(0).ok_or(-ENOMEM)?;
    let n = exe_path(bprm, &o, buf);
    // Decide before reserving: a full ring loses the record, not the kill.
    let mut hit = None;
    if let Some(w) = workload(cgroup_id) {
        let eng = engine::of(w.engines, engine::EXEC_SHIFT);
        if eng == engine::SIGNAL
            && let Some(rule) = exec_rule(&w, dev, ino, buf.cast())
        {
            hit = Some((enforce(rule.action, eng), rule.rule));
        }
    }
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_drop(match hit {
            Some((v, _)) if v != verdict::NONE => 0,
            _ => kind::EXEC as u32,
        });
        return Ok(());
    };
    let e = entry.as_mut_ptr();
    let pflags = path_flags(n);
    // SAFETY: `e` is the reserved record; every field is written before submit.
    unsafe {
        (*e).header = header(kind::EXEC, cgroup_id);
        if let Some((v, rule)) = hit {
            (*e).header.verdict = v;
            (*e).header.rule = rule;
        }
        (*e).header.flags = pflags;
        (*e).ppid = 0;
        (*e).dev = dev;
        (*e).ino = ino;
        (*e).args_len = 0;
        (*e)._pad = 0;
        (*e).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        record_path(&mut (*e).filename, buf.cast(), pflags);
        if let Ok(parent) = kread::<u64>(task, o.task_real_parent) {
            (*e).ppid = kread::<u32>(parent, o.task_tgid).unwrap_or(0);
        }
        if let Ok(mm) = kread::<u64>(task, o.task_mm)
            && let (Ok(start), Ok(end)) = (
                kread::<u64>(mm, o.mm_arg_start),
                kread::<u64>(mm, o.mm_arg_end),
            )
            && end > start
        {
            let mut len = end - start;
            if len > ARGS_LEN as u64 {
                len = ARGS_LEN as u64;
                (*e).header.flags |= flags::ARGS_TRUNCATED;
            }
            // The verifier wants the size provably within the buffer.
            let len = (len as u32) & (ARGS_LEN as u32 * 2 - 1);
            if len <= ARGS_LEN as u32
                && bpf_probe_read_user((*e).args.as_mut_ptr().cast(), len, start as *const _) == 0
            {
                (*e).args_len = len;
            }
        }
    }
    entry.submit(0);
    Ok(())
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // Threads ending are not processes ending.
    if (pid_tgid >> 32) as u32 != pid_tgid as u32 {
        return Ok(());
    }
    let task: u64 = ctx.arg(0);
    let code = kread::<u32>(task, offsets().task_exit_code).unwrap_or(0);
    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        count_drop(kind::EXIT as u32);
        return Ok(());
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved record; every field is written.
    unsafe {
        (*e).header = header(kind::EXIT, current_cgroup());
        (*e).code = code;
        (*e)._pad = 0;
    }
    entry.submit(0);
    Ok(())
}

// -------------------------------------------------------------------- files

/// Whether open `flags` can modify the file.
#[inline(always)]
fn writes(open_flags: u32) -> bool {
    let acc = open_flags & O_ACCMODE;
    acc == O_WRONLY || acc == O_RDWR || open_flags & (O_CREAT | O_TRUNC | O_APPEND) != 0
}

/// The rule of a matched prefix that applies to an open with `open_flags`:
/// the stronger of its read and write rules, as far as the open does each.
#[inline(always)]
fn file_rule(rule: &FileRule, open_flags: u32) -> RuleValue {
    let read = if open_flags & O_ACCMODE == O_WRONLY {
        RuleValue::default()
    } else {
        rule.read
    };
    let write = if writes(open_flags) {
        rule.write
    } else {
        RuleValue::default()
    };
    if write.action >= read.action {
        write
    } else {
        read
    }
}

/// The file rule an open with `open_flags` of the path in `path` meets in
/// workload `w`, when it is not "none". An unreadable path meets the
/// workload's strongest rules.
#[inline(always)]
fn file_decision(
    w: &Workload,
    open_flags: u32,
    path: *const u8,
    unreadable: bool,
) -> Option<RuleValue> {
    let rule = if unreadable {
        w.unknown_path
    } else {
        *FILE_PREFIXES.get(path_key(w.ruleset, path)?)?
    };
    let hit = file_rule(&rule, open_flags);
    (hit.action != action::NONE).then_some(hit)
}

/// Event flags for a path read into [`PATHS`] with result `n` (its length
/// with the NUL, or an error): unreadable, or longer than a record holds.
#[inline(always)]
fn path_flags(n: i64) -> u32 {
    if n < 0 {
        flags::PATH_UNREADABLE
    } else if n > PATH_LEN as i64 {
        flags::PATH_TRUNCATED
    } else {
        0
    }
}

/// Copies the head of the decided path into a record's `dst`, always
/// NUL-terminated.
///
/// # Safety
/// `dst` is a reserved record's path field and `src` is [`PATHS`]' slot.
#[inline(always)]
unsafe fn record_path(dst: &mut [u8; PATH_LEN], src: *const u8, pflags: u32) {
    // SAFETY: both are at least PATH_LEN bytes of kernel memory (caller).
    unsafe {
        if pflags & flags::PATH_UNREADABLE != 0
            || bpf_probe_read_kernel(dst.as_mut_ptr().cast(), PATH_LEN as u32, src.cast()) != 0
        {
            dst[0] = 0;
        }
    }
    dst[PATH_LEN - 1] = 0;
}

#[inline(always)]
fn on_open(dfd: i32, path: u64, open_flags: u32) -> Result<(), i64> {
    let cgroup_id = current_cgroup();
    let Some(w) = workload(cgroup_id) else {
        return Ok(());
    };
    let eng = engine::of(w.engines, engine::FILE_SHIFT);
    let write = writes(open_flags);
    let check = eng == engine::SIGNAL && (write || w.flags & workload::FILE_READ_RULES != 0);
    let trace = write && w.flags & workload::TRACE != 0;
    if !check && !trace {
        return Ok(());
    }
    let buf = PATHS.get_ptr_mut(0).ok_or(-ENOMEM)?;
    // SAFETY: the per-CPU buffer is ours for this run; the read is bounded.
    let n = unsafe { bpf_probe_read_user_str(buf.cast(), FULL_PATH_LEN as u32, path as *const _) };
    let pflags = path_flags(n);
    // Decide before reserving: a full ring loses the record, not the kill.
    let hit = if check {
        file_decision(&w, open_flags, buf.cast(), n < 0)
    } else {
        None
    };
    let v = hit.map_or(verdict::NONE, |h| enforce(h.action, eng));
    if v == verdict::NONE && !trace {
        return Ok(());
    }
    let Some(mut entry) = EVENTS.reserve::<OpenEvent>(0) else {
        count_drop(if v == verdict::NONE {
            kind::OPEN as u32
        } else {
            0
        });
        return Ok(());
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved record; every field is written before submit.
    unsafe {
        (*e).header = header(kind::OPEN, cgroup_id);
        (*e).header.verdict = v;
        (*e).header.rule = hit.map_or(0, |h| h.rule);
        (*e).header.flags = pflags;
        (*e).open_flags = open_flags;
        (*e).dfd = dfd;
        record_path(&mut (*e).path, buf.cast(), pflags);
    }
    entry.submit(0);
    Ok(())
}

#[inline(always)]
fn arg<T>(ctx: &TracePointContext, n: usize) -> Result<T, i64> {
    // SAFETY: syscall tracepoint records hold six 8-byte arguments.
    unsafe { ctx.read_at::<T>(SYSCALL_ARGS + 8 * n).map_err(|e| e as i64) }
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    let _ = (|| {
        on_open(
            arg::<u64>(&ctx, 0)? as i32,
            arg(&ctx, 1)?,
            arg::<u64>(&ctx, 2)? as u32,
        )
    })();
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    let _ = (|| {
        // `struct open_how` starts with the u64 flags.
        let how: u64 = arg(&ctx, 2)?;
        let open_flags = uread::<u64>(how)? as u32;
        on_open(arg::<u64>(&ctx, 0)? as i32, arg(&ctx, 1)?, open_flags)
    })();
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    let _ = (|| on_open(-100, arg(&ctx, 0)?, arg::<u64>(&ctx, 1)? as u32))();
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_creat")]
pub fn sys_enter_creat(ctx: TracePointContext) -> u32 {
    let _ = (|| on_open(-100, arg(&ctx, 0)?, O_CREAT | O_WRONLY | O_TRUNC))();
    0
}

// ------------------------------------------------------------------ network

/// The destination of a `sockaddr`, as (family, port, IPv4-mapped address).
#[inline(always)]
fn sockaddr<F: Fn(u64) -> Result<[u8; 24], i64>>(
    read: F,
    addr: u64,
) -> Result<(u16, u16, [u8; 16]), i64> {
    let raw = read(addr)?;
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    let mut ip = [0u8; 16];
    match family {
        AF_INET => {
            ip[10] = 0xff;
            ip[11] = 0xff;
            ip[12..16].copy_from_slice(&raw[4..8]);
        }
        AF_INET6 => ip.copy_from_slice(&raw[8..24]),
        _ => return Err(0),
    }
    Ok((family, port, ip))
}

/// The connect rule verdict for a destination.
#[inline(always)]
fn net_rule(ruleset: u32, port: u16, addr: [u8; 16]) -> Option<RuleValue> {
    let mut key = Key::new(
        NET_KEY_PREFIX_BITS + 128,
        NetKey {
            ruleset: ruleset.to_be_bytes(),
            port: port.to_be_bytes(),
            addr,
        },
    );
    let on_port = NET_RULES.get(&key).copied();
    key.data.port = [0, 0];
    let any_port = NET_RULES.get(&key).copied();
    match (on_port, any_port) {
        (Some(a), Some(b)) => Some(if a.action >= b.action { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = try_connect(&ctx);
    0
}

fn try_connect(ctx: &TracePointContext) -> Result<(), i64> {
    let cgroup_id = current_cgroup();
    let Some(w) = workload(cgroup_id) else {
        return Ok(());
    };
    let eng = engine::of(w.engines, engine::NET_SHIFT);
    let trace = w.flags & workload::TRACE != 0;
    if eng != engine::SIGNAL && !trace {
        return Ok(());
    }
    let (family, port, addr) = sockaddr(uread::<[u8; 24]>, arg(ctx, 1)?)?;
    let rule = if eng == engine::SIGNAL {
        net_rule(w.ruleset, port, addr)
    } else {
        None
    };
    if rule.is_none() && !trace {
        return Ok(());
    }
    let verdict = rule.map_or(verdict::NONE, |r| enforce(r.action, eng));
    emit_connect(
        cgroup_id,
        family,
        port,
        addr,
        verdict,
        rule.map_or(0, |r| r.rule),
    );
    Ok(())
}

#[inline(always)]
fn emit_connect(cgroup_id: u64, family: u16, port: u16, addr: [u8; 16], v: u8, rule: u32) {
    let Some(mut entry) = EVENTS.reserve::<ConnectEvent>(0) else {
        count_drop(if v == verdict::NONE {
            kind::CONNECT as u32
        } else {
            0
        });
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved record; every field is written.
    unsafe {
        (*e).header = header(kind::CONNECT, cgroup_id);
        (*e).header.verdict = v;
        (*e).header.rule = rule;
        (*e).family = family;
        (*e).port = port;
        (*e)._pad = 0;
        (*e).addr = addr;
    }
    entry.submit(0);
}

// ------------------------------------------------------------------ cgroups

/// A cgroup created under a tracked one (a container in a pod) inherits its
/// workload at once, before anything can run in it.
#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: BtfTracePointContext) -> i32 {
    let _ = try_cgroup_mkdir(&ctx);
    0
}

fn try_cgroup_mkdir(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let o = offsets();
    let cgrp: u64 = ctx.arg(0);
    let id = kread::<u64>(kread::<u64>(cgrp, o.cgroup_kn)?, o.kernfs_id)?;
    // `cgroup.self` is the first member, so the parent css is the parent cgroup.
    let parent = kread::<u64>(cgrp, o.cgroup_parent)?;
    let parent_id = kread::<u64>(kread::<u64>(parent, o.cgroup_kn)?, o.kernfs_id)?;
    if let Some(w) = workload(parent_id) {
        WORKLOADS.insert(&id, &w, 0)?;
    }
    Ok(())
}

#[btf_tracepoint(function = "cgroup_rmdir")]
pub fn cgroup_rmdir(ctx: BtfTracePointContext) -> i32 {
    let _ = (|| -> Result<(), i64> {
        let o = offsets();
        let cgrp: u64 = ctx.arg(0);
        let id = kread::<u64>(kread::<u64>(cgrp, o.cgroup_kn)?, o.kernfs_id)?;
        WORKLOADS.remove(&id).map_err(i64::from)
    })();
    0
}

// -------------------------------------------------------------- LSM enforcer

/// `bprm_check_security`: refuse a denied program before it replaces the
/// process image.
#[lsm(hook = "bprm_check_security")]
pub fn lsm_bprm_check(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    try_lsm_bprm(&ctx).unwrap_or(0)
}

fn try_lsm_bprm(ctx: &LsmContext) -> Result<i32, i64> {
    let o = offsets();
    let cgroup_id = current_cgroup();
    let Some(w) = workload(cgroup_id) else {
        return Ok(0);
    };
    if engine::of(w.engines, engine::EXEC_SHIFT) != engine::LSM {
        return Ok(0);
    }
    let bprm: u64 = ctx.arg(0);
    let (dev, ino) = exe_inode(bprm, &o);
    let buf = PATHS.get_ptr_mut(0).ok_or(-ENOMEM)?;
    let n = exe_path(bprm, &o, buf);
    // Decide before reserving: an allowed program is reported by the exec
    // tracepoint once it runs; a refused one is refused with or without
    // its record.
    let Some(rule) = exec_rule(&w, dev, ino, buf.cast()) else {
        return Ok(0);
    };
    let v = enforce(rule.action, engine::LSM);
    let ret = if v == verdict::DENIED { -EPERM } else { 0 };
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_drop(0);
        return Ok(ret);
    };
    let e = entry.as_mut_ptr();
    let pflags = path_flags(n);
    // SAFETY: `e` is the reserved record; every field is written before submit.
    unsafe {
        (*e).header = header(kind::EXEC, cgroup_id);
        (*e).header.verdict = v;
        (*e).header.rule = rule.rule;
        (*e).header.flags = pflags;
        (*e).ppid = 0;
        (*e).dev = dev;
        (*e).ino = ino;
        (*e).args_len = 0;
        (*e)._pad = 0;
        (*e).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        record_path(&mut (*e).filename, buf.cast(), pflags);
    }
    entry.submit(0);
    Ok(ret)
}

/// `file_open`: refuse a denied open with the path resolved by the kernel,
/// whatever the process passed. Not sleepable: sleepable programs may not
/// use LPM tries, and `bpf_d_path` is allowed on this hook either way.
#[lsm(hook = "file_open")]
pub fn lsm_file_open(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    try_lsm_file_open(&ctx).unwrap_or(0)
}

fn try_lsm_file_open(ctx: &LsmContext) -> Result<i32, i64> {
    let o = offsets();
    let cgroup_id = current_cgroup();
    let Some(w) = workload(cgroup_id) else {
        return Ok(0);
    };
    if engine::of(w.engines, engine::FILE_SHIFT) != engine::LSM {
        return Ok(0);
    }
    let file: u64 = ctx.arg(0);
    // Flags that cannot be read count as reading and writing.
    let open_flags = kread::<u32>(file, o.file_flags).unwrap_or(O_RDWR);
    let write = writes(open_flags);
    if !write && w.flags & workload::FILE_READ_RULES == 0 {
        return Ok(0);
    }
    let buf = PATHS.get_ptr_mut(0).ok_or(-ENOMEM)?;
    // SAFETY: the per-CPU buffer is ours for this run; `bpf_d_path` writes
    // at most its size.
    let n = unsafe {
        bpf_d_path(
            (file + o.file_path as u64) as *mut _,
            buf.cast(),
            FULL_PATH_LEN as u32,
        )
    };
    let Some(hit) = file_decision(&w, open_flags, buf.cast(), n < 0) else {
        return Ok(0);
    };
    let v = enforce(hit.action, engine::LSM);
    let ret = if v == verdict::DENIED { -EPERM } else { 0 };
    let Some(mut entry) = EVENTS.reserve::<OpenEvent>(0) else {
        count_drop(0);
        return Ok(ret);
    };
    let e = entry.as_mut_ptr();
    let pflags = path_flags(n);
    // SAFETY: `e` is the reserved record; every field is written before submit.
    unsafe {
        (*e).header = header(kind::OPEN, cgroup_id);
        (*e).header.verdict = v;
        (*e).header.rule = hit.rule;
        (*e).header.flags = pflags;
        (*e).open_flags = open_flags;
        (*e).dfd = -100;
        record_path(&mut (*e).path, buf.cast(), pflags);
    }
    entry.submit(0);
    Ok(ret)
}

/// `socket_connect`: refuse a denied destination before the connection.
#[lsm(hook = "socket_connect")]
pub fn lsm_socket_connect(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(3);
    if prev != 0 {
        return prev;
    }
    try_lsm_connect(&ctx).unwrap_or(0)
}

fn try_lsm_connect(ctx: &LsmContext) -> Result<i32, i64> {
    let cgroup_id = current_cgroup();
    let Some(w) = workload(cgroup_id) else {
        return Ok(0);
    };
    if engine::of(w.engines, engine::NET_SHIFT) != engine::LSM {
        return Ok(0);
    }
    let address: u64 = ctx.arg(1);
    let (family, port, addr) = sockaddr(|a| kread::<[u8; 24]>(a, 0), address)?;
    let Some(rule) = net_rule(w.ruleset, port, addr) else {
        return Ok(0);
    };
    let v = enforce(rule.action, engine::LSM);
    emit_connect(cgroup_id, family, port, addr, v, rule.rule);
    Ok(if v == verdict::DENIED { -EPERM } else { 0 })
}
