//! Loads the eBPF object into the kernel, attaches its programs and hands
//! out its maps.
//!
//! The tracing programs (exec, exit, cgroup lifecycle, open and connect
//! tracepoints) are required. The BPF LSM programs are probed: where the
//! kernel refuses them, the refusal is kept as the reason the `lsm`
//! enforcer is unavailable, and enforcement falls back to fanotify and
//! signals.

use std::path::Path;

use aya::maps::{HashMap, LpmTrie, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, Lsm, TracePoint};
use aya::{Btf as AyaBtf, Ebpf, EbpfLoader};
use sightline_runtime_common::{FileRule, InodeKey, NetKey, Offsets, PathKey, RuleValue, Workload};

use crate::btf::{Btf, BtfError};

/// The object `build.rs` compiled from `sensors/runtime-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sightline-runtime"));

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
const TRACEFS: &str = "/sys/kernel/tracing";

/// Why loading failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The binary was built with `AYA_BUILD_SKIP=1`.
    #[error(
        "this binary was built without its eBPF programs (AYA_BUILD_SKIP); rebuild it with bpf-linker installed"
    )]
    NoObject,
    /// The kernel's BTF is missing or unreadable.
    #[error(
        "reading the kernel's BTF at {VMLINUX}: {0} (the runtime sensor needs a kernel built with CONFIG_DEBUG_INFO_BTF)"
    )]
    KernelBtf(String),
    /// A structure field the programs read is not in the kernel's BTF.
    #[error("the kernel's BTF: {0}")]
    Offsets(#[from] BtfError),
    /// The kernel refused the object (maps) or a required program.
    #[error("{what}: {source}")]
    Kernel {
        /// What was being loaded or attached.
        what: String,
        /// The kernel's (or aya's) error, with the verifier log.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn kernel(
    what: impl Into<String>,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> LoadError {
    let what = what.into();
    move |source| LoadError::Kernel { what, source }
}

/// Whether the BPF LSM enforcer can be used, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LsmStatus {
    /// The LSM programs passed the verifier and are attached.
    Attached,
    /// The kernel refused them; the reason names the hook and the error.
    Unavailable(String),
}

/// Sizes of the maps, set before loading.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    pub ring_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ring_bytes: 8 << 20,
        }
    }
}

/// The rule and workload maps userspace writes.
pub struct RuleMaps {
    /// Tracked cgroups.
    pub workloads: HashMap<MapData, u64, Workload>,
    /// Exec rules by inode.
    pub exec_inodes: HashMap<MapData, InodeKey, RuleValue>,
    /// Exec rules by path.
    pub exec_paths: LpmTrie<MapData, PathKey, RuleValue>,
    /// File rules by path prefix.
    pub file_prefixes: LpmTrie<MapData, PathKey, FileRule>,
    /// Connect rules by address prefix and port.
    pub net_rules: LpmTrie<MapData, NetKey, RuleValue>,
}

/// The loaded programs and their maps. Dropping it detaches everything.
pub struct Loaded {
    /// Keeps the programs attached.
    pub ebpf: Ebpf,
    /// The record stream.
    pub events: RingBuf<MapData>,
    /// Per-CPU counts of records that did not fit the ring, by event kind.
    pub drops: PerCpuArray<MapData, u64>,
    /// Rules and workloads.
    pub rules: RuleMaps,
    /// The LSM enforcer's state.
    pub lsm: LsmStatus,
    /// Tracepoints that this kernel does not have (e.g. `sys_enter_open` on
    /// arm64), which are skipped.
    pub missing_tracepoints: Vec<String>,
}

/// Reads the kernel's BTF, loads the object with the offsets it needs and
/// attaches every program.
pub fn load(limits: Limits) -> Result<Loaded, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    raise_memlock();
    ensure_mounted("tracefs", TRACEFS, "events");
    let raw = std::fs::read(VMLINUX).map_err(|e| LoadError::KernelBtf(e.to_string()))?;
    let offsets: Offsets = Btf::parse(&raw)?.offsets()?;
    let btf = AyaBtf::from_sys_fs().map_err(|e| LoadError::KernelBtf(e.to_string()))?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("OFFSETS", &offsets, true)
        .map_max_entries("EVENTS", limits.ring_bytes)
        .load(OBJECT)
        .map_err(|e| kernel("loading the eBPF object")(Box::new(e)))?;

    for (program, function) in [
        ("sched_process_exec", "sched_process_exec"),
        ("sched_process_exit", "sched_process_exit"),
        ("cgroup_mkdir", "cgroup_mkdir"),
        ("cgroup_rmdir", "cgroup_rmdir"),
    ] {
        let what = format!("the tp_btf/{function} program");
        let p: &mut BtfTracePoint = program_mut(&mut ebpf, program)?;
        p.load(function, &btf)
            .map_err(|e| kernel(format!("loading {what}"))(Box::new(e)))?;
        p.attach()
            .map_err(|e| kernel(format!("attaching {what}"))(Box::new(e)))?;
    }
    let mut missing_tracepoints = Vec::new();
    for (name, required) in [
        ("sys_enter_openat", true),
        ("sys_enter_openat2", false),
        ("sys_enter_open", false),
        ("sys_enter_creat", false),
        ("sys_enter_connect", true),
    ] {
        if !required
            && !Path::new(TRACEFS)
                .join("events/syscalls")
                .join(name)
                .exists()
        {
            missing_tracepoints.push(name.to_string());
            continue;
        }
        let what = format!("the tracepoint syscalls/{name}");
        let p: &mut TracePoint = program_mut(&mut ebpf, name)?;
        p.load()
            .map_err(|e| kernel(format!("loading {what}"))(Box::new(e)))?;
        p.attach("syscalls", name)
            .map_err(|e| kernel(format!("attaching {what}"))(Box::new(e)))?;
    }
    let lsm = probe_lsm(&mut ebpf, &btf);

    let events = RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?)
        .map_err(|e| kernel("the EVENTS map")(Box::new(e)))?;
    let drops = PerCpuArray::try_from(take_map(&mut ebpf, "DROPS")?)
        .map_err(|e| kernel("the DROPS map")(Box::new(e)))?;
    let rules = RuleMaps {
        workloads: HashMap::try_from(take_map(&mut ebpf, "WORKLOADS")?)
            .map_err(|e| kernel("the WORKLOADS map")(Box::new(e)))?,
        exec_inodes: HashMap::try_from(take_map(&mut ebpf, "EXEC_INODES")?)
            .map_err(|e| kernel("the EXEC_INODES map")(Box::new(e)))?,
        exec_paths: LpmTrie::try_from(take_map(&mut ebpf, "EXEC_PATHS")?)
            .map_err(|e| kernel("the EXEC_PATHS map")(Box::new(e)))?,
        file_prefixes: LpmTrie::try_from(take_map(&mut ebpf, "FILE_PREFIXES")?)
            .map_err(|e| kernel("the FILE_PREFIXES map")(Box::new(e)))?,
        net_rules: LpmTrie::try_from(take_map(&mut ebpf, "NET_RULES")?)
            .map_err(|e| kernel("the NET_RULES map")(Box::new(e)))?,
    };
    Ok(Loaded {
        ebpf,
        events,
        drops,
        rules,
        lsm,
        missing_tracepoints,
    })
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or_else(|| LoadError::Kernel {
        what: format!("the program {name}"),
        source: "not in the eBPF object".into(),
    })?;
    p.try_into()
        .map_err(|e| kernel(format!("the program {name}"))(Box::new(e)))
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(name).ok_or_else(|| LoadError::Kernel {
        what: format!("the map {name}"),
        source: "not in the eBPF object".into(),
    })
}

/// Loads and attaches the three LSM programs; the first refusal is the
/// reason the enforcer is unavailable (and none stays attached).
fn probe_lsm(ebpf: &mut Ebpf, btf: &AyaBtf) -> LsmStatus {
    ensure_mounted("securityfs", "/sys/kernel/security", "lsm");
    let active = std::fs::read_to_string("/sys/kernel/security/lsm")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut links = Vec::new();
    for (program, hook) in [
        ("lsm_bprm_check", "bprm_check_security"),
        ("lsm_file_open", "file_open"),
        ("lsm_socket_connect", "socket_connect"),
    ] {
        let result = (|| -> Result<(), String> {
            let p: &mut Lsm = program_mut(ebpf, program).map_err(|e| e.to_string())?;
            p.load(hook, btf).map_err(|e| error_chain(&e))?;
            links.push((program, p.attach().map_err(|e| error_chain(&e))?));
            Ok(())
        })();
        if let Err(reason) = result {
            for (program, link) in links {
                if let Ok(p) = program_mut::<Lsm>(ebpf, program) {
                    let _ = p.detach(link);
                }
            }
            let lsms = if active.is_empty() {
                "securityfs does not list the active LSMs".to_string()
            } else if active.split(',').any(|l| l == "bpf") {
                format!("active LSMs: {active}")
            } else {
                format!("`bpf` is not among the active LSMs ({active}); boot with lsm=...,bpf")
            };
            return LsmStatus::Unavailable(format!(
                "the kernel refused the BPF LSM program for {hook}: {reason} ({lsms})"
            ));
        }
    }
    LsmStatus::Attached
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s.trim_end().to_string()
}

/// Kernels before 5.11 charge BPF maps to `RLIMIT_MEMLOCK`; later ones do
/// not, and raising it needs `CAP_SYS_RESOURCE`, so failure only warns.
fn raise_memlock() {
    use nix::sys::resource::{Resource, setrlimit};
    if let Err(e) = setrlimit(
        Resource::RLIMIT_MEMLOCK,
        nix::sys::resource::RLIM_INFINITY,
        nix::sys::resource::RLIM_INFINITY,
    ) {
        tracing::debug!("raising RLIMIT_MEMLOCK: {e} (not needed on kernels >= 5.11)");
    }
}

/// The syscall tracepoints live in tracefs and the list of active LSMs in
/// securityfs; mount them where the kernel's documentation puts them when
/// nothing is there yet (`probe` is a file the mounted filesystem has).
fn ensure_mounted(fs: &str, at: &str, probe: &str) {
    if Path::new(at).join(probe).exists() {
        return;
    }
    if let Err(e) = nix::mount::mount(
        Some(fs),
        at,
        Some(fs),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    ) {
        tracing::warn!("mounting {fs} at {at}: {e}");
    }
}
