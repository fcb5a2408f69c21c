//! Writes rule sets into the BPF maps for the in-kernel engines (signal and
//! LSM), and takes them out again.
//!
//! A changed rule set gets a fresh id: its keys are written first, then the
//! workloads switch to it, then the old keys go, so the programs never see
//! a half-written set and are never reloaded.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use aya::maps::lpm_trie::Key;
use sightline_crds::runtime_policy::PolicyAction;
use sightline_runtime_common::{
    FileRule, InodeKey, KEY_PATH_LEN, NET_KEY_PREFIX_BITS, NetKey, PathKey, RuleValue, action,
};

use crate::loader::RuleMaps;
use crate::rules::{Hit, RuleSet, under};

/// The keys one rule set occupies, for removal.
#[derive(Default)]
pub struct Written {
    exec_paths: Vec<Key<PathKey>>,
    exec_inodes: Vec<InodeKey>,
    files: Vec<Key<PathKey>>,
    net: Vec<Key<NetKey>>,
}

/// Which rule kinds the kernel enforces for a rule set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InKernel {
    /// Exec rules.
    pub exec: bool,
    /// File rules.
    pub file: bool,
    /// Connect rules.
    pub net: bool,
}

/// A map update failed.
#[derive(Debug, thiserror::Error)]
#[error("writing the {map} map: {source}")]
pub struct MapError {
    map: &'static str,
    #[source]
    source: aya::maps::MapError,
}

fn value(hit: Option<Hit>) -> RuleValue {
    match hit {
        None => RuleValue::default(),
        Some(h) => RuleValue {
            action: match h.action {
                PolicyAction::Audit => action::AUDIT,
                PolicyAction::Block => action::BLOCK,
            },
            _pad: [0; 3],
            rule: h.rule,
        },
    }
}

/// What an open whose path cannot be read meets in the kernel: the
/// strongest read and write rules of the whole set (fail closed).
pub fn unknown_path_rule(set: &RuleSet) -> FileRule {
    let (read, write) = set.strongest_file_rules();
    FileRule {
        read: value(read),
        write: value(write),
    }
}

/// The path key of `path`: `exact` includes its NUL (the whole path and
/// nothing longer), otherwise it is the directory prefix `path/`.
pub fn path_key(ruleset: u32, path: &str, exact: bool) -> Option<Key<PathKey>> {
    let mut bytes = path.as_bytes().to_vec();
    if exact {
        bytes.push(0);
    } else if !path.ends_with('/') {
        bytes.push(b'/');
    }
    if bytes.len() > KEY_PATH_LEN {
        return None;
    }
    let mut data = PathKey {
        ruleset: ruleset.to_be_bytes(),
        path: [0; KEY_PATH_LEN],
    };
    data.path[..bytes.len()].copy_from_slice(&bytes);
    Some(Key::new(u32::try_from((4 + bytes.len()) * 8).ok()?, data))
}

/// The kernel's encoding of a device number (`MKDEV`: major << 20 | minor).
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = ((st_dev >> 32) & 0xffff_f000) | ((st_dev >> 8) & 0xfff);
    let minor = ((st_dev >> 12) & 0xffff_ff00) | (st_dev & 0xff);
    ((major as u32) << 20) | (minor as u32 & 0xf_ffff)
}

/// Writes the parts of `set` the kernel enforces under id `ruleset`.
/// `root` is the workload's root filesystem as this process sees it, when
/// known: exec paths are then also keyed by the inode they resolve to.
pub fn write(
    maps: &mut RuleMaps,
    ruleset: u32,
    set: &RuleSet,
    kernel: InKernel,
    root: Option<&Path>,
) -> Result<Written, MapError> {
    let mut w = Written::default();
    let result = write_into(maps, ruleset, set, kernel, root, &mut w);
    if let Err(e) = result {
        remove(maps, &w);
        return Err(e);
    }
    Ok(w)
}

fn write_into(
    maps: &mut RuleMaps,
    ruleset: u32,
    set: &RuleSet,
    kernel: InKernel,
    root: Option<&Path>,
    w: &mut Written,
) -> Result<(), MapError> {
    let err = |map: &'static str| move |source| MapError { map, source };
    if kernel.exec {
        // In allowlist mode a key means "allowed": the paths every
        // allowlist names, minus any that a denylist names.
        let entries: Vec<(&str, Option<Hit>)> = if set.allowlists.is_empty() {
            set.exec_paths
                .iter()
                .map(|(p, h)| (p.as_str(), Some(*h)))
                .collect()
        } else {
            let first = &set.allowlists[0];
            first
                .paths
                .iter()
                .filter(|p| set.allowlists.iter().all(|a| a.paths.contains(p)))
                .filter(|p| !set.exec_paths.contains_key(*p))
                .map(|p| (p.as_str(), first.hit))
                .collect()
        };
        for (path, hit) in entries {
            let v = value(hit);
            if let Some(key) = path_key(ruleset, path, true) {
                maps.exec_paths
                    .insert(&key, v, 0)
                    .map_err(err("EXEC_PATHS"))?;
                w.exec_paths.push(key);
            }
            if let Some(root) = root
                && let Ok(meta) = std::fs::metadata(root.join(path.trim_start_matches('/')))
            {
                let key = InodeKey {
                    ruleset,
                    dev: kernel_dev(meta.dev()),
                    ino: meta.ino(),
                };
                maps.exec_inodes
                    .insert(key, v, 0)
                    .map_err(err("EXEC_INODES"))?;
                w.exec_inodes.push(key);
            }
        }
    }
    if kernel.file {
        for f in &set.files {
            // The trie returns only the longest match, so each entry carries
            // the strongest rule of every prefix above it.
            let mut read = None;
            let mut write = None;
            for g in &set.files {
                if under(&f.path, &g.path) {
                    read = Hit::max(read, g.read);
                    write = Hit::max(write, g.write);
                }
            }
            let v = FileRule {
                read: value(read),
                write: value(write),
            };
            let exact = (f.path != "/")
                .then(|| path_key(ruleset, &f.path, true))
                .flatten();
            for key in exact.into_iter().chain(path_key(ruleset, &f.path, false)) {
                maps.file_prefixes
                    .insert(&key, v, 0)
                    .map_err(err("FILE_PREFIXES"))?;
                w.files.push(key);
            }
        }
    }
    if kernel.net {
        for r in &set.net {
            let data = NetKey {
                ruleset: ruleset.to_be_bytes(),
                port: r.port.to_be_bytes(),
                addr: r.addr.octets(),
            };
            let key = Key::new(NET_KEY_PREFIX_BITS + u32::from(r.prefix), data);
            maps.net_rules
                .insert(&key, value(Some(r.hit)), 0)
                .map_err(err("NET_RULES"))?;
            w.net.push(key);
        }
    }
    Ok(())
}

/// Removes what [`write`] wrote. Missing keys are not an error (a rule set
/// is removed once).
pub fn remove(maps: &mut RuleMaps, w: &Written) {
    for k in &w.exec_paths {
        let _ = maps.exec_paths.remove(k);
    }
    for k in &w.exec_inodes {
        let _ = maps.exec_inodes.remove(k);
    }
    for k in &w.files {
        let _ = maps.file_prefixes.remove(k);
    }
    for k in &w.net {
        let _ = maps.net_rules.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_keys_cover_exact_paths_and_directories() {
        let exact = path_key(7, "/etc/shadow", true).expect("key");
        assert_eq!(exact.prefix_len(), (4 + 12) * 8);
        assert_eq!(&exact.data().path[..12], b"/etc/shadow\0");
        assert_eq!(exact.data().ruleset, [0, 0, 0, 7]);
        let dir = path_key(7, "/etc", false).expect("key");
        assert_eq!(dir.prefix_len(), (4 + 5) * 8);
        assert_eq!(&dir.data().path[..5], b"/etc/");
        assert!(path_key(1, &format!("/{}", "x".repeat(300)), true).is_none());
    }

    #[test]
    fn device_numbers_use_the_kernels_encoding() {
        // 8:1 in glibc's encoding is 0x801; the kernel's is 8 << 20 | 1.
        assert_eq!(kernel_dev(0x801), (8 << 20) | 1);
        // 259:65536 (a large minor).
        // glibc: minor's low byte, major's 12 bits, then minor's upper bits.
        let st = ((259u64 & 0xfff) << 8) | ((65536u64 & !0xff) << 12);
        assert_eq!(kernel_dev(st), (259 << 20) | 65536);
    }
}
