//! The contract between the runtime sensor's eBPF programs and its
//! userspace: the records the programs write into the ring buffer, the keys
//! and values of the rule maps, and the constants both sides agree on.
//!
//! Everything is `#[repr(C)]` plain data with explicit padding, so the
//! kernel and userspace see the same bytes; the `user` feature makes the
//! types `aya::Pod` for the userspace maps.
#![no_std]

/// Bytes of a path kept in an event (longer paths are cut, and flagged).
pub const PATH_LEN: usize = 256;
/// Bytes of the buffer a path is resolved into before a rule is looked up
/// (`PATH_MAX`): a path the kernel accepts is never cut before deciding.
pub const FULL_PATH_LEN: usize = 4096;
/// Bytes of the argument list kept in an exec event (NUL-separated).
pub const ARGS_LEN: usize = 256;
/// Bytes of a task's command name.
pub const COMM_LEN: usize = 16;
/// Bytes of path in a rule-map key: an LPM trie key holds at most 256 bytes
/// of data, four of which are the rule set.
pub const KEY_PATH_LEN: usize = 252;
/// Bits of a network rule key before the address: rule set and port.
pub const NET_KEY_PREFIX_BITS: u32 = 48;

/// What a record in the ring buffer is (its first byte).
pub mod kind {
    /// A program started (`execve` succeeded): [`super::ExecEvent`].
    pub const EXEC: u8 = 1;
    /// A process (thread group) ended: [`super::ExitEvent`].
    pub const EXIT: u8 = 2;
    /// A file was opened: [`super::OpenEvent`].
    pub const OPEN: u8 = 3;
    /// A socket connected: [`super::ConnectEvent`].
    pub const CONNECT: u8 = 4;
    /// How many kinds there are (the size of the drop counter array).
    pub const COUNT: u32 = 5;
}

/// What the programs did about an event.
pub mod verdict {
    /// No rule matched.
    pub const NONE: u8 = 0;
    /// An `Audit` rule matched: reported, not prevented.
    pub const AUDIT: u8 = 1;
    /// A `Block` rule matched and the process was sent SIGKILL.
    pub const KILLED: u8 = 2;
    /// A `Block` rule matched and the LSM hook refused the call (EPERM).
    pub const DENIED: u8 = 3;
}

/// What a rule does when it matches.
pub mod action {
    /// No rule (an empty slot).
    pub const NONE: u8 = 0;
    /// Report only.
    pub const AUDIT: u8 = 1;
    /// Prevent and report.
    pub const BLOCK: u8 = 2;
}

/// Which engine enforces one kind of rule of a workload: two bits per kind
/// in [`Workload::engines`].
pub mod engine {
    /// Rules of this kind are not in the BPF maps (none, or fanotify in
    /// userspace handles them).
    pub const NONE: u32 = 0;
    /// The tracepoint programs match, report and kill with SIGKILL.
    pub const SIGNAL: u32 = 1;
    /// The LSM programs match, report and refuse with EPERM.
    pub const LSM: u32 = 2;
    /// Shift of the exec rules' engine.
    pub const EXEC_SHIFT: u32 = 0;
    /// Shift of the file rules' engine.
    pub const FILE_SHIFT: u32 = 2;
    /// Shift of the network rules' engine.
    pub const NET_SHIFT: u32 = 4;
    /// The engine of the kind at `shift` in `engines`.
    pub const fn of(engines: u32, shift: u32) -> u32 {
        (engines >> shift) & 3
    }
}

/// Flags of a [`Workload`].
pub mod workload {
    /// Report every open for writing and every connect of the workload.
    pub const TRACE: u32 = 1;
    /// Exec rules are an allowlist: what matches no rule is denied with
    /// [`super::Workload::allow_action`].
    pub const EXEC_ALLOWLIST: u32 = 2;
    /// The workload has file rules that name reads (so reads are looked up too).
    pub const FILE_READ_RULES: u32 = 4;
}

/// Flags of an event.
pub mod flags {
    /// The path was longer than the record holds and was cut.
    pub const PATH_TRUNCATED: u32 = 1;
    /// The argument list was longer than the record holds and was cut.
    pub const ARGS_TRUNCATED: u32 = 2;
    /// The path could not be read (from the process's memory, or resolved
    /// by the kernel): file rules were decided by the workload's
    /// [`super::Workload::unknown_path`] rule (fail closed).
    pub const PATH_UNREADABLE: u32 = 4;
}

/// The start of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// One of [`kind`].
    pub kind: u8,
    /// One of [`verdict`].
    pub verdict: u8,
    /// Padding.
    pub _pad: [u8; 2],
    /// The rule that matched (userspace's id), when `verdict` is not NONE.
    pub rule: u32,
    /// Process id (thread group id).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Real user id.
    pub uid: u32,
    /// Real group id.
    pub gid: u32,
    /// The cgroup (v2) the task ran in.
    pub cgroup_id: u64,
    /// Nanoseconds since boot (`CLOCK_BOOTTIME`).
    pub time_ns: u64,
    /// Event flags ([`flags`]).
    pub flags: u32,
    /// Padding.
    pub _pad2: u32,
}

/// A program started.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    /// The common header.
    pub header: Header,
    /// Parent's process id.
    pub ppid: u32,
    /// Device of the executable (the kernel's encoding: `major << 20 | minor`).
    pub dev: u32,
    /// Inode of the executable.
    pub ino: u64,
    /// Bytes used in `args`.
    pub args_len: u32,
    /// Padding.
    pub _pad: u32,
    /// The path passed to `execve`, NUL-terminated.
    pub filename: [u8; PATH_LEN],
    /// The head of the argument list, NUL-separated.
    pub args: [u8; ARGS_LEN],
    /// The task's command name after exec.
    pub comm: [u8; COMM_LEN],
}

/// A process ended.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExitEvent {
    /// The common header.
    pub header: Header,
    /// The wait status: exit code `<< 8`, or the terminating signal.
    pub code: u32,
    /// Padding.
    pub _pad: u32,
}

/// A file was opened.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OpenEvent {
    /// The common header.
    pub header: Header,
    /// `open` flags.
    pub open_flags: u32,
    /// The directory a relative path is relative to (`AT_FDCWD` = -100).
    pub dfd: i32,
    /// The path as the process passed it, NUL-terminated.
    pub path: [u8; PATH_LEN],
}

/// A socket connected (or tried to).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectEvent {
    /// The common header.
    pub header: Header,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Destination port (host byte order).
    pub port: u16,
    /// Padding.
    pub _pad: u32,
    /// Destination address; IPv4 is mapped (`::ffff:a.b.c.d`).
    pub addr: [u8; 16],
}

/// A tracked cgroup: which rule set applies and how it is enforced. Key: the
/// cgroup id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// The rule set (one per pod) the rule maps are keyed by.
    pub ruleset: u32,
    /// [`workload`] flags.
    pub flags: u32,
    /// Engine per rule kind ([`engine`]).
    pub engines: u32,
    /// Action for programs outside an allowlist.
    pub allow_action: u8,
    /// Padding.
    pub _pad: [u8; 3],
    /// Rule id reported for programs outside an allowlist.
    pub allow_rule: u32,
    /// Padding.
    pub _pad2: u32,
    /// What an open whose path cannot be read or resolved is decided by:
    /// the strongest read and write rules of every prefix, so an
    /// unreadable path fails closed.
    pub unknown_path: FileRule,
}

/// What a matching rule does and which it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleValue {
    /// One of [`action`].
    pub action: u8,
    /// Padding.
    pub _pad: [u8; 3],
    /// Userspace's id of the rule.
    pub rule: u32,
}

/// A file rule prefix: what opening for reading and for writing under it does.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileRule {
    /// Opening for reading.
    pub read: RuleValue,
    /// Opening for writing.
    pub write: RuleValue,
}

/// Key of an exec rule by file: the executable's device and inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    /// Rule set.
    pub ruleset: u32,
    /// Device, in the kernel's encoding.
    pub dev: u32,
    /// Inode.
    pub ino: u64,
}

/// Data of a path key in an LPM trie: the rule set (big-endian, so it is
/// the first 32 bits matched) and the path bytes. An exact path is keyed
/// with its terminating NUL inside the prefix; a directory prefix without.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathKey {
    /// Rule set, big-endian.
    pub ruleset: [u8; 4],
    /// Path bytes, NUL-padded.
    pub path: [u8; KEY_PATH_LEN],
}

/// Data of a network key in an LPM trie: rule set, port (0 = any port) and
/// the IPv6 (or IPv4-mapped) address, all big-endian.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetKey {
    /// Rule set, big-endian.
    pub ruleset: [u8; 4],
    /// Port, big-endian; 0 matches any port.
    pub port: [u8; 2],
    /// Address.
    pub addr: [u8; 16],
}

/// Byte offsets of the kernel structure fields the programs read, found in
/// the running kernel's BTF by userspace (so one object runs on many
/// kernels without CO-RE relocations).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// `task_struct.real_parent`.
    pub task_real_parent: u32,
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `task_struct.exit_code`.
    pub task_exit_code: u32,
    /// `mm_struct.arg_start` (`arg_end` follows it).
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end`.
    pub mm_arg_end: u32,
    /// `linux_binprm.file`.
    pub bprm_file: u32,
    /// `linux_binprm.filename`.
    pub bprm_filename: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `inode.i_ino`.
    pub inode_ino: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `super_block.s_dev`.
    pub sb_dev: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `cgroup.self` + `cgroup_subsys_state.parent`.
    pub cgroup_parent: u32,
    /// `kernfs_node.id`.
    pub kernfs_id: u32,
    /// `file.f_path`.
    pub file_path: u32,
    /// `file.f_flags`.
    pub file_flags: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type here is `#[repr(C)]`, `Copy`, made only of integers
    // and byte arrays with explicit padding fields, so any bit pattern is a
    // valid value and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::Workload {}
    unsafe impl aya::Pod for super::RuleValue {}
    unsafe impl aya::Pod for super::FileRule {}
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::PathKey {}
    unsafe impl aya::Pod for super::NetKey {}
    unsafe impl aya::Pod for super::Offsets {}
}

const _: () = {
    assert!(core::mem::size_of::<Header>() == 48);
    assert!(core::mem::size_of::<PathKey>() == 256);
    assert!(core::mem::size_of::<NetKey>() == 22);
    assert!(core::mem::size_of::<Workload>() == 40);
    assert!(core::mem::size_of::<ExecEvent>() == 48 + 24 + PATH_LEN + ARGS_LEN + COMM_LEN);
};
