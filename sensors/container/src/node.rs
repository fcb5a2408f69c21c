//! The node itself, as a cloud agent would report it: one `Node` Asset per
//! Kubernetes Node (identity: the Node's UID) with the host's OS release,
//! kernel, architecture, CPU, memory, DMI strings, virtualization (DMI and
//! CPUID), the cloud the Node's `providerID` names, its container runtimes
//! and kubelet. Facts are read from the host's files the DaemonSet mounts
//! (`/host/etc/os-release`, `/host/sys`) and from `/proc`, which a
//! container shares with its host; they are gathered every minute and
//! written when they change or when the last write is older than the
//! refresh interval.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use sightline_report::facts::{Address, Cpu, NameVersion, NodeFacts};
use sightline_report::{NodeObservation, Observation};
use tracing::{info, warn};

use crate::report::Reporter;

/// The DMI strings reported, by their file under `/sys/class/dmi/id`.
const DMI: &[(&str, &str)] = &[
    ("sys_vendor", "sysVendor"),
    ("product_name", "productName"),
    ("product_version", "productVersion"),
    ("product_serial", "productSerial"),
    ("product_uuid", "productUuid"),
    ("board_vendor", "boardVendor"),
    ("board_name", "boardName"),
    ("bios_vendor", "biosVendor"),
    ("bios_version", "biosVersion"),
    ("chassis_vendor", "chassisVendor"),
    ("chassis_type", "chassisType"),
];

/// Versions of the runtimes the sensor's loops are connected to, by kind.
pub type Runtimes = Arc<Mutex<BTreeMap<String, String>>>;

/// Where the host's files are: `host_root` for os-release and sysfs
/// (`/host` in the DaemonSet), `proc` for `/proc`.
#[derive(Clone, Debug)]
pub struct HostPaths {
    /// The host's root as mounted (`/host`), or `/` outside a pod.
    pub host_root: PathBuf,
    /// `/proc`.
    pub proc: PathBuf,
}

impl HostPaths {
    /// `SIGHTLINE_HOST_ROOT` (default `/host`; `/` when that does not
    /// exist, as when the sensor runs on the host itself).
    pub fn from_env(value: Option<String>) -> HostPaths {
        let root = value.filter(|v| !v.is_empty()).map(PathBuf::from);
        let host_root = match root {
            Some(r) => r,
            None if Path::new("/host").is_dir() => PathBuf::from("/host"),
            None => PathBuf::from("/"),
        };
        HostPaths {
            host_root,
            proc: PathBuf::from("/proc"),
        }
    }
}

/// `model name` and the number of `processor` entries of `/proc/cpuinfo`.
pub fn cpu(cpuinfo: &str) -> (Option<String>, usize) {
    let mut model = None;
    let mut count = 0;
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => count += 1,
            "model name" | "Model" if model.is_none() => {
                model = Some(value.trim().to_owned()).filter(|m| !m.is_empty());
            }
            _ => {}
        }
    }
    (model, count)
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn memory_bytes(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        kib.checked_mul(1024)
    })
}

/// The hypervisor a CPUID vendor signature (leaf 0x40000000) names, in
/// the catalog's words.
pub fn hypervisor_of(signature: &str) -> Option<&'static str> {
    let s = signature.trim_end_matches('\0');
    Some(match s {
        "KVMKVMKVM" | "Linux KVM Hv" => "KVM",
        "TCGTCGTCGTCG" => "QEMU",
        "Microsoft Hv" => "Microsoft Hyper-V",
        "VMwareVMware" => "VMware",
        "XenVMMXenVMM" => "Xen",
        "VBoxVBoxVBox" => "VirtualBox",
        "bhyve bhyve " => "bhyve",
        " lrpepyh  vr" | "prl hyperv  " => "Parallels",
        "ACRNACRNACRN" => "ACRN",
        "QNXQVMBSQG" => "QNX",
        _ => return None,
    })
}

/// What CPUID says about virtualization: whether a hypervisor is present
/// (leaf 1, ECX bit 31) and its vendor signature.
#[cfg(target_arch = "x86_64")]
fn cpuid_hypervisor() -> (bool, Option<String>) {
    use std::arch::x86_64::__cpuid;
    let present = __cpuid(1).ecx >> 31 == 1;
    if !present {
        return (false, None);
    }
    let r = __cpuid(0x4000_0000);
    let mut sig = Vec::with_capacity(12);
    for part in [r.ebx, r.ecx, r.edx] {
        sig.extend_from_slice(&part.to_le_bytes());
    }
    (true, Some(String::from_utf8_lossy(&sig).into_owned()))
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_hypervisor() -> (bool, Option<String>) {
    (false, None)
}

/// The cloud a Node's `providerID` names (`aws:///eu-west-1a/i-0…` → `aws`).
pub fn cloud_of(provider_id: &str) -> Option<&str> {
    let (scheme, _) = provider_id.split_once("://")?;
    (!scheme.is_empty()).then_some(scheme)
}

/// OCI's name for this machine's architecture.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The facts of the host, without the Node object's part.
pub fn host_facts(paths: &HostPaths) -> NodeFacts {
    let read = |p: PathBuf| std::fs::read_to_string(p).ok();
    let mut o = NodeFacts::default();
    let os_release = [
        paths.host_root.join("etc/os-release"),
        paths.host_root.join("usr/lib/os-release"),
    ]
    .into_iter()
    .find_map(|p| std::fs::read(&p).ok().map(|b| (b, p)));
    if let Some((bytes, p)) = os_release {
        let osr = sightline_scan::os::parse_os_release(&bytes, &p.display().to_string());
        if !osr.fields.is_empty() {
            o.os_release = Some(osr.fields.into_iter().collect());
        }
    }
    o.kernel_version = read(paths.proc.join("sys/kernel/osrelease")).map(|k| k.trim().to_owned());
    o.architecture = Some(architecture().to_owned());
    if let Some(text) = read(paths.proc.join("cpuinfo")) {
        let (model, count) = cpu(&text);
        o.cpu = Some(Cpu {
            count: count as u64,
            model,
        });
    }
    o.memory_bytes = read(paths.proc.join("meminfo"))
        .as_deref()
        .and_then(memory_bytes);
    let dmi_dir = paths.host_root.join("sys/class/dmi/id");
    o.dmi = DMI
        .iter()
        .filter_map(|(file, key)| {
            let v = read(dmi_dir.join(file))?;
            let v = v.trim();
            (!v.is_empty()).then(|| ((*key).to_owned(), v.to_owned()))
        })
        .collect();
    let (virtualized, signature) = cpuid_hypervisor();
    o.virtualized = Some(virtualized);
    if let Some(sig) = signature {
        match hypervisor_of(&sig) {
            Some(h) => o.hypervisor = Some(h.to_owned()),
            None => o.hypervisor_signature = Some(sig.trim_end_matches('\0').to_owned()),
        }
    }
    o
}

/// Adds what the Node object says: identity, kubelet, cloud, addresses.
pub fn node_facts(o: &mut NodeFacts, node: &Node, runtimes: &BTreeMap<String, String>) {
    o.node_name = node.metadata.name.clone().unwrap_or_default();
    let mut software = Vec::new();
    if let Some(info) = node.status.as_ref().and_then(|s| s.node_info.as_ref()) {
        o.kubelet_version = Some(info.kubelet_version.clone());
        software.push(NameVersion {
            name: "kubelet".into(),
            version: info.kubelet_version.clone(),
        });
        o.os_image = Some(info.os_image.clone());
    }
    let runtimes: Vec<NameVersion> = runtimes
        .iter()
        .map(|(n, v)| NameVersion {
            name: n.clone(),
            version: v.clone(),
        })
        .collect();
    software.extend(runtimes.iter().cloned());
    o.container_runtimes = runtimes;
    o.software = software;
    o.cloud_provider = node
        .spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .and_then(cloud_of)
        .map(str::to_owned);
    if let Some(addrs) = node.status.as_ref().and_then(|s| s.addresses.as_ref()) {
        o.addresses = addrs
            .iter()
            .map(|a| Address {
                type_: a.type_.clone(),
                address: a.address.clone(),
            })
            .collect();
    }
}

/// Reports the node every minute when its facts change, and at least every
/// `refresh`, until the future is dropped.
pub async fn report_loop(
    client: kube::Client,
    reporter: Reporter,
    node_name: String,
    paths: HostPaths,
    runtimes: Runtimes,
    refresh: Duration,
) {
    let nodes: Api<Node> = Api::all(client);
    let mut last: Option<(NodeFacts, Instant)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(60).min(refresh));
    loop {
        tick.tick().await;
        let node = match nodes.get(&node_name).await {
            Ok(n) => n,
            Err(e) => {
                warn!(node = %node_name, error = %e, "cannot read this sensor's Node; its Asset waits");
                continue;
            }
        };
        let Some(uid) = node.metadata.uid.clone() else {
            continue;
        };
        let mut facts = host_facts(&paths);
        let versions = runtimes.lock().map(|m| m.clone()).unwrap_or_default();
        node_facts(&mut facts, &node, &versions);
        let due = last
            .as_ref()
            .is_none_or(|(f, at)| *f != facts || at.elapsed() >= refresh);
        if !due {
            continue;
        }
        let observation = Observation::Node(NodeObservation {
            identity: uid,
            facts: facts.clone(),
        });
        match reporter.send(vec![observation], None).await {
            Ok(receipt) if receipt.refused.is_empty() => {
                if last.is_none()
                    && let Some(a) = receipt.accepted.first()
                {
                    info!(asset = %a.asset, node = %node_name, "reported the node");
                }
                last = Some((facts, Instant::now()));
            }
            // Refusals are logged by the reporter; the next minute tries again.
            Ok(_) => {}
            Err(e) => warn!(node = %node_name, error = %e, "cannot report the node"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_memory_hypervisor_and_cloud() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu(cpuinfo), (Some("AMD EPYC 7B13".into()), 2));
        assert_eq!(cpu(""), (None, 0));
        assert_eq!(
            memory_bytes("MemTotal:       24683652 kB\nMemFree: 1 kB\n"),
            Some(24_683_652 * 1024)
        );
        assert_eq!(memory_bytes("garbage"), None);
        assert_eq!(hypervisor_of("KVMKVMKVM\0\0\0"), Some("KVM"));
        assert_eq!(hypervisor_of("Microsoft Hv"), Some("Microsoft Hyper-V"));
        assert_eq!(hypervisor_of("unheard of!!"), None);
        assert_eq!(cloud_of("aws:///eu-west-1a/i-0abc"), Some("aws"));
        assert_eq!(cloud_of("gce://project/zone/name"), Some("gce"));
        assert_eq!(cloud_of("kind://docker/kind/node"), Some("kind"));
        assert_eq!(cloud_of("no-scheme"), None);
    }

    #[test]
    fn host_facts_from_a_host_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::write(
            root.join("etc/os-release"),
            "ID=debian\nVERSION_ID=\"12\"\n",
        )
        .expect("write");
        std::fs::create_dir_all(root.join("sys/class/dmi/id")).expect("mkdir");
        std::fs::write(root.join("sys/class/dmi/id/sys_vendor"), "Amazon EC2\n").expect("write");
        std::fs::write(root.join("sys/class/dmi/id/product_name"), "m5.large\n").expect("write");
        let proc = root.join("proc");
        std::fs::create_dir_all(proc.join("sys/kernel")).expect("mkdir");
        std::fs::write(proc.join("sys/kernel/osrelease"), "6.1.0-18-amd64\n").expect("write");
        std::fs::write(
            proc.join("cpuinfo"),
            "processor : 0\nmodel name : Intel Xeon\n",
        )
        .expect("write");
        std::fs::write(proc.join("meminfo"), "MemTotal: 1024 kB\n").expect("write");
        let o = host_facts(&HostPaths {
            host_root: root.to_path_buf(),
            proc,
        });
        assert_eq!(
            o.os_release.as_ref().and_then(|r| r.get("VERSION_ID")),
            Some(&"12".to_owned())
        );
        assert_eq!(o.kernel_version.as_deref(), Some("6.1.0-18-amd64"));
        assert_eq!(
            o.cpu,
            Some(Cpu {
                count: 1,
                model: Some("Intel Xeon".into())
            })
        );
        assert_eq!(o.memory_bytes, Some(1024 * 1024));
        assert_eq!(
            o.dmi,
            BTreeMap::from([
                ("sysVendor".to_owned(), "Amazon EC2".to_owned()),
                ("productName".to_owned(), "m5.large".to_owned())
            ])
        );
    }
}
