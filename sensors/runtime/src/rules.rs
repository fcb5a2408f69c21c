//! Compiles the `RuntimePolicy` specs that select one workload into one
//! rule set: exec denylist or allowlists, file path prefixes and connect
//! networks, each rule naming the policy it came from. Pure: nothing here
//! touches the kernel.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use sightline_crds::runtime_policy::{PolicyAction, RuntimePolicySpec};

/// The longest path the in-kernel matchers can key (the rest of a path key
/// is its NUL and the directory slash).
pub const MAX_KERNEL_PATH: usize = sightline_runtime_common::KEY_PATH_LEN - 2;

/// A policy, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a rule is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// A program in `process.deny`.
    ExecDeny,
    /// A program outside `process.allow`.
    ExecAllow,
    /// A path prefix in `file.denyWrite`.
    FileWrite,
    /// A path prefix in `file.denyRead`.
    FileRead,
    /// A network in `network.denyConnect`.
    Connect,
}

/// One rule of one policy, as reported in violations.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The policy.
    pub policy: PolicyRef,
    /// The kind of rule.
    pub kind: RuleKind,
    /// The rule's own words: a path, `sha256:…`, a CIDR and ports, or
    /// `process.allow` for an allowlist.
    pub target: String,
    /// Audit or block (after the sensor's `auditOnly` setting).
    pub action: PolicyAction,
}

/// Rule ids, shared by every rule set (the kernel reports ids, userspace
/// looks them up). Id 0 is "no rule".
#[derive(Debug, Default)]
pub struct RuleTable {
    rules: Vec<Rule>,
    ids: std::collections::HashMap<Rule, u32>,
}

impl RuleTable {
    /// The id of `rule`, allocating one the first time.
    pub fn intern(&mut self, rule: Rule) -> u32 {
        if let Some(id) = self.ids.get(&rule) {
            return *id;
        }
        self.rules.push(rule.clone());
        let id = u32::try_from(self.rules.len()).unwrap_or(u32::MAX);
        self.ids.insert(rule, id);
        id
    }

    /// The rule with `id`.
    pub fn get(&self, id: u32) -> Option<&Rule> {
        id.checked_sub(1).and_then(|i| self.rules.get(i as usize))
    }
}

/// A rule reference inside a rule set: its id and action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Id in the [`RuleTable`].
    pub rule: u32,
    /// Audit or block.
    pub action: PolicyAction,
}

impl Hit {
    /// The stronger of two hits (block over audit; the first on a tie).
    pub fn max(a: Option<Hit>, b: Option<Hit>) -> Option<Hit> {
        match (a, b) {
            (Some(a), Some(b))
                if b.action == PolicyAction::Block && a.action == PolicyAction::Audit =>
            {
                Some(b)
            }
            (Some(a), _) => Some(a),
            (None, b) => b,
        }
    }
}

/// One policy's allowlist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    /// Allowed paths.
    pub paths: Vec<String>,
    /// Allowed contents.
    pub sha256: Vec<[u8; 32]>,
    /// What running anything else is.
    pub hit: Option<Hit>,
}

/// A file path prefix and what it denies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePrefix {
    /// Normalized absolute path, without a trailing slash (`/` for the root).
    pub path: String,
    /// Opening for reading.
    pub read: Option<Hit>,
    /// Opening for writing.
    pub write: Option<Hit>,
}

/// A connect rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRule {
    /// Network address, IPv4 mapped into IPv6.
    pub addr: Ipv6Addr,
    /// Prefix length over the (mapped) IPv6 address.
    pub prefix: u8,
    /// Port, 0 for any.
    pub port: u16,
    /// The rule.
    pub hit: Hit,
}

/// Everything that applies to one workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// Denied programs by exact path.
    pub exec_paths: BTreeMap<String, Hit>,
    /// Denied programs by content.
    pub exec_sha256: BTreeMap<[u8; 32], Hit>,
    /// Allowlists; a program must be in each.
    pub allowlists: Vec<Allowlist>,
    /// File prefixes, sorted by path.
    pub files: Vec<FilePrefix>,
    /// Connect rules.
    pub net: Vec<NetRule>,
    /// The policies that contributed, for status reporting.
    pub policies: Vec<PolicyRef>,
}

impl RuleSet {
    /// Whether any rule is about reading files (reads are then checked too).
    pub fn has_read_rules(&self) -> bool {
        self.files.iter().any(|f| f.read.is_some())
    }

    /// Whether there are exec rules.
    pub fn has_exec_rules(&self) -> bool {
        !self.exec_paths.is_empty() || !self.exec_sha256.is_empty() || !self.allowlists.is_empty()
    }

    /// The file rule for an open of `path` (absolute, inside the workload):
    /// the strongest over every prefix that contains it.
    pub fn file_hit(&self, path: &str, write: bool, read: bool) -> Option<Hit> {
        let mut best = None;
        for f in &self.files {
            if under(path, &f.path) {
                if write {
                    best = Hit::max(best, f.write);
                }
                if read {
                    best = Hit::max(best, f.read);
                }
            }
        }
        best
    }

    /// The strongest read and the strongest write rule over every prefix:
    /// what an open of a path that cannot be known meets.
    pub fn strongest_file_rules(&self) -> (Option<Hit>, Option<Hit>) {
        self.files.iter().fold((None, None), |(r, w), f| {
            (Hit::max(r, f.read), Hit::max(w, f.write))
        })
    }

    /// The exec rule for a program at `path` with contents `sha256` (when
    /// known; computing it is the caller's choice, see [`RuleSet::needs_sha256`]).
    pub fn exec_hit(&self, path: &str, sha256: Option<&[u8; 32]>) -> Option<Hit> {
        let mut best = self.exec_paths.get(path).copied();
        if let Some(sum) = sha256 {
            best = Hit::max(best, self.exec_sha256.get(sum).copied());
        }
        for a in &self.allowlists {
            let allowed =
                a.paths.iter().any(|p| p == path) || sha256.is_some_and(|s| a.sha256.contains(s));
            if !allowed {
                best = Hit::max(best, a.hit);
            }
        }
        best
    }

    /// As [`RuleSet::exec_hit`] for a program whose contents could not be
    /// hashed (larger than the enforcer hashes, or unreadable): every
    /// SHA-256 deny rule counts as matching, so an unknown program fails
    /// closed (an allowlist already admits only what it names).
    pub fn exec_hit_unhashed(&self, path: &str) -> Option<Hit> {
        self.exec_sha256
            .values()
            .fold(self.exec_hit(path, None), |best, h| {
                Hit::max(best, Some(*h))
            })
    }

    /// Whether deciding an exec needs the program's SHA-256.
    pub fn needs_sha256(&self) -> bool {
        !self.exec_sha256.is_empty() || self.allowlists.iter().any(|a| !a.sha256.is_empty())
    }

    /// The connect rule for a destination.
    pub fn net_hit(&self, addr: IpAddr, port: u16) -> Option<Hit> {
        let v6 = mapped(addr);
        let bits = u128::from(v6);
        let mut best: Option<(u8, Hit)> = None;
        for r in &self.net {
            if (r.port == 0 || r.port == port) && prefix_eq(bits, u128::from(r.addr), r.prefix) {
                let better = match best {
                    None => true,
                    Some((len, _)) => r.prefix > len,
                };
                if better {
                    best = Some((r.prefix, r.hit));
                }
            }
        }
        best.map(|(_, h)| h)
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix.min(128)));
    a & mask == b & mask
}

/// IPv4 mapped into IPv6 (`::ffff:a.b.c.d`), IPv6 as is.
pub fn mapped(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Whether `path` is `prefix` or inside it, by whole components.
pub fn under(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A rule that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RuntimePolicy {policy}: {field}: {problem}")]
pub struct RuleError {
    /// The policy.
    pub policy: PolicyRef,
    /// Where in the spec (`spec.file.denyWrite[2]`).
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

/// Lexically normalizes an absolute path: no `.`, `..` or repeated or
/// trailing slashes.
pub fn normalize(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    if path.contains('\0') {
        return Err(format!("{path:?} contains a NUL byte"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

fn parse_sha256(s: &str) -> Result<[u8; 32], String> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return Err(format!("{s:?} is not 64 hex digits"));
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).map_err(|_| format!("{s:?} is not hex"))?;
        out[i] = u8::from_str_radix(hex, 16).map_err(|_| format!("{s:?} is not hex"))?;
    }
    Ok(out)
}

/// Parses `a.b.c.d/n` or `x::/n` into a mapped address and prefix length.
pub fn parse_cidr(s: &str) -> Result<(Ipv6Addr, u8), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not in CIDR notation (address/length)"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("{s:?}: {len:?} is not a prefix length"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("{s:?}: the prefix length is over {max}"));
    }
    let (v6, prefix) = match addr {
        IpAddr::V4(v4) => (v4.to_ipv6_mapped(), 96 + len),
        IpAddr::V6(v6) => (v6, len),
    };
    let bits = u128::from(v6);
    let masked = if prefix == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(prefix)))
    };
    Ok((Ipv6Addr::from(masked), prefix))
}

/// Compiles every policy selecting a workload. `audit_only` turns `Block`
/// into `Audit` (the sensor's `enforcement: AuditOnly`). A bad rule fails
/// the whole policy it is in (reported on that policy), and the other
/// policies still apply.
pub fn compile(
    policies: &[(PolicyRef, RuntimePolicySpec)],
    audit_only: bool,
    table: &mut RuleTable,
) -> (RuleSet, Vec<RuleError>) {
    let mut set = RuleSet::default();
    let mut errors = Vec::new();
    for (policy, spec) in policies {
        let mut one = RuleSet::default();
        match compile_one(policy, spec, audit_only, table, &mut one) {
            Ok(()) => merge(&mut set, one, policy),
            Err(e) => errors.push(e),
        }
    }
    set.files.sort_by(|a, b| a.path.cmp(&b.path));
    (set, errors)
}

fn merge(set: &mut RuleSet, one: RuleSet, policy: &PolicyRef) {
    for (path, hit) in one.exec_paths {
        let cur = set.exec_paths.get(&path).copied();
        if let Some(h) = Hit::max(cur, Some(hit)) {
            set.exec_paths.insert(path, h);
        }
    }
    for (sum, hit) in one.exec_sha256 {
        let cur = set.exec_sha256.get(&sum).copied();
        if let Some(h) = Hit::max(cur, Some(hit)) {
            set.exec_sha256.insert(sum, h);
        }
    }
    set.allowlists.extend(one.allowlists);
    for f in one.files {
        match set.files.iter_mut().find(|g| g.path == f.path) {
            Some(g) => {
                g.read = Hit::max(g.read, f.read);
                g.write = Hit::max(g.write, f.write);
            }
            None => set.files.push(f),
        }
    }
    for r in one.net {
        match set
            .net
            .iter_mut()
            .find(|n| n.addr == r.addr && n.prefix == r.prefix && n.port == r.port)
        {
            Some(n) => {
                if let Some(h) = Hit::max(Some(n.hit), Some(r.hit)) {
                    n.hit = h;
                }
            }
            None => set.net.push(r),
        }
    }
    set.policies.push(policy.clone());
}

fn compile_one(
    policy: &PolicyRef,
    spec: &RuntimePolicySpec,
    audit_only: bool,
    table: &mut RuleTable,
    out: &mut RuleSet,
) -> Result<(), RuleError> {
    let action = if audit_only {
        PolicyAction::Audit
    } else {
        spec.action
    };
    let err = |field: String, problem: String| RuleError {
        policy: policy.clone(),
        field,
        problem,
    };
    let mut hit = |kind: RuleKind, target: String| Hit {
        rule: table.intern(Rule {
            policy: policy.clone(),
            kind,
            target,
            action,
        }),
        action,
    };
    if let Some(process) = &spec.process {
        if process.allow.is_some() && process.deny.is_some() {
            return Err(err(
                "spec.process".into(),
                "allow and deny are mutually exclusive".into(),
            ));
        }
        for (i, m) in process.deny.iter().flatten().enumerate() {
            let field = format!("spec.process.deny[{i}]");
            match (&m.path, &m.sha256) {
                (Some(p), None) => {
                    let p = exec_path(p).map_err(|e| err(field, e))?;
                    let h = hit(RuleKind::ExecDeny, p.clone());
                    out.exec_paths.insert(p, h);
                }
                (None, Some(s)) => {
                    let sum = parse_sha256(s).map_err(|e| err(field, e))?;
                    let h = hit(RuleKind::ExecDeny, format!("sha256:{s}"));
                    out.exec_sha256.insert(sum, h);
                }
                _ => return Err(err(field, "needs exactly one of path or sha256".into())),
            }
        }
        if let Some(allow) = &process.allow {
            let mut list = Allowlist {
                hit: Some(hit(RuleKind::ExecAllow, "process.allow".into())),
                ..Allowlist::default()
            };
            for (i, m) in allow.iter().enumerate() {
                let field = format!("spec.process.allow[{i}]");
                match (&m.path, &m.sha256) {
                    (Some(p), None) => list.paths.push(exec_path(p).map_err(|e| err(field, e))?),
                    (None, Some(s)) => list
                        .sha256
                        .push(parse_sha256(s).map_err(|e| err(field, e))?),
                    _ => return Err(err(field, "needs exactly one of path or sha256".into())),
                }
            }
            out.allowlists.push(list);
        }
    }
    if let Some(file) = &spec.file {
        for (field, paths, write) in [
            ("denyWrite", &file.deny_write, true),
            ("denyRead", &file.deny_read, false),
        ] {
            for (i, p) in paths.iter().enumerate() {
                let field = format!("spec.file.{field}[{i}]");
                let path = normalize(p).map_err(|e| err(field.clone(), e))?;
                if path.len() > MAX_KERNEL_PATH {
                    return Err(err(
                        field,
                        format!("paths longer than {MAX_KERNEL_PATH} bytes cannot be matched"),
                    ));
                }
                let kind = if write {
                    RuleKind::FileWrite
                } else {
                    RuleKind::FileRead
                };
                let h = Some(hit(kind, path.clone()));
                let entry = match out.files.iter_mut().position(|f| f.path == path) {
                    Some(i) => &mut out.files[i],
                    None => {
                        out.files.push(FilePrefix {
                            path,
                            read: None,
                            write: None,
                        });
                        let last = out.files.len() - 1;
                        &mut out.files[last]
                    }
                };
                if write {
                    entry.write = Hit::max(entry.write, h);
                } else {
                    entry.read = Hit::max(entry.read, h);
                }
            }
        }
    }
    if let Some(net) = &spec.network {
        for (i, m) in net.deny_connect.iter().enumerate() {
            let field = format!("spec.network.denyConnect[{i}]");
            let (addr, prefix) =
                parse_cidr(&m.cidr.0).map_err(|e| err(format!("{field}.cidr"), e))?;
            let mut ports = Vec::new();
            for (j, p) in m.ports.iter().enumerate() {
                let port = u16::try_from(*p).ok().filter(|p| *p != 0).ok_or_else(|| {
                    err(
                        format!("{field}.ports[{j}]"),
                        format!("{p} is not a port (1-65535)"),
                    )
                })?;
                ports.push(port);
            }
            let target = if ports.is_empty() {
                m.cidr.0.clone()
            } else {
                format!(
                    "{} ports {}",
                    m.cidr.0,
                    ports
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            };
            let h = hit(RuleKind::Connect, target);
            if ports.is_empty() {
                ports.push(0);
            }
            for port in ports {
                out.net.push(NetRule {
                    addr,
                    prefix,
                    port,
                    hit: h,
                });
            }
        }
    }
    Ok(())
}

fn exec_path(p: &str) -> Result<String, String> {
    let path = normalize(p)?;
    if path == "/" {
        return Err("/ is not a program".into());
    }
    if path.len() > MAX_KERNEL_PATH {
        return Err(format!(
            "paths longer than {MAX_KERNEL_PATH} bytes cannot be matched"
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_crds::net::Cidr;
    use sightline_crds::runtime_policy::{
        ConnectMatch, FileRules, NetworkRules, ProcessMatch, ProcessRules,
    };

    fn pref(name: &str) -> PolicyRef {
        PolicyRef {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn path(p: &str) -> ProcessMatch {
        ProcessMatch {
            path: Some(p.into()),
            sha256: None,
        }
    }

    fn deny_exec(action: PolicyAction, paths: &[&str]) -> RuntimePolicySpec {
        RuntimePolicySpec {
            action,
            process: Some(ProcessRules {
                deny: Some(paths.iter().map(|p| path(p)).collect()),
                allow: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn block_wins_over_audit_for_the_same_program() {
        let mut t = RuleTable::default();
        let (set, errors) = compile(
            &[
                (pref("a"), deny_exec(PolicyAction::Audit, &["/bin/nc"])),
                (pref("b"), deny_exec(PolicyAction::Block, &["/bin//nc"])),
            ],
            false,
            &mut t,
        );
        assert!(errors.is_empty());
        let hit = set.exec_hit("/bin/nc", None).expect("a hit");
        assert_eq!(hit.action, PolicyAction::Block);
        assert_eq!(t.get(hit.rule).map(|r| r.policy.name.as_str()), Some("b"));
        assert_eq!(set.exec_hit("/bin/ls", None), None);
    }

    #[test]
    fn audit_only_downgrades_block() {
        let mut t = RuleTable::default();
        let (set, _) = compile(
            &[(pref("a"), deny_exec(PolicyAction::Block, &["/bin/nc"]))],
            true,
            &mut t,
        );
        assert_eq!(
            set.exec_hit("/bin/nc", None).map(|h| h.action),
            Some(PolicyAction::Audit)
        );
    }

    #[test]
    fn allowlists_deny_everything_else_and_each_applies() {
        let mut t = RuleTable::default();
        let sum = "ab".repeat(32);
        let spec = |paths: &[&str]| RuntimePolicySpec {
            action: PolicyAction::Block,
            process: Some(ProcessRules {
                deny: None,
                allow: Some(
                    paths
                        .iter()
                        .map(|p| path(p))
                        .chain([ProcessMatch {
                            path: None,
                            sha256: Some(sum.clone()),
                        }])
                        .collect(),
                ),
            }),
            ..Default::default()
        };
        let (set, _) = compile(
            &[
                (pref("a"), spec(&["/bin/sh", "/bin/ls"])),
                (pref("b"), spec(&["/bin/sh"])),
            ],
            false,
            &mut t,
        );
        assert_eq!(set.exec_hit("/bin/sh", None), None);
        let ls = set
            .exec_hit("/bin/ls", None)
            .expect("ls is outside b's list");
        assert_eq!(t.get(ls.rule).map(|r| r.policy.name.as_str()), Some("b"));
        assert_eq!(
            set.exec_hit("/tmp/x", Some(&[0xab; 32])),
            None,
            "allowed by content"
        );
        assert!(set.needs_sha256());
    }

    #[test]
    fn file_prefixes_match_whole_components() {
        let mut t = RuleTable::default();
        let spec = RuntimePolicySpec {
            action: PolicyAction::Block,
            file: Some(FileRules {
                deny_write: vec!["/etc/".into(), "/var/log/app".into()],
                deny_read: vec!["/etc/shadow".into()],
            }),
            ..Default::default()
        };
        let (set, errors) = compile(&[(pref("a"), spec)], false, &mut t);
        assert!(errors.is_empty());
        assert!(set.file_hit("/etc/passwd", true, false).is_some());
        assert!(set.file_hit("/etc", true, false).is_some());
        assert!(set.file_hit("/etcetera/x", true, false).is_none());
        assert!(set.file_hit("/etc/passwd", false, true).is_none());
        assert!(set.file_hit("/etc/shadow", false, true).is_some());
        assert!(set.file_hit("/var/log/app/x.log", true, false).is_some());
        assert!(set.file_hit("/var/log/application", true, false).is_none());
        assert!(set.has_read_rules());
    }

    #[test]
    fn networks_match_longest_prefix_and_ports() {
        let mut t = RuleTable::default();
        let spec = RuntimePolicySpec {
            action: PolicyAction::Block,
            network: Some(NetworkRules {
                deny_connect: vec![
                    ConnectMatch {
                        cidr: Cidr("127.0.0.0/8".into()),
                        ports: vec![8080],
                    },
                    ConnectMatch {
                        cidr: Cidr("2001:db8::/32".into()),
                        ports: vec![],
                    },
                ],
            }),
            ..Default::default()
        };
        let (set, errors) = compile(&[(pref("a"), spec)], false, &mut t);
        assert!(errors.is_empty());
        let lo = |s: &str| s.parse::<IpAddr>().expect("address");
        assert!(set.net_hit(lo("127.1.2.3"), 8080).is_some());
        assert!(set.net_hit(lo("127.1.2.3"), 8081).is_none());
        assert!(set.net_hit(lo("10.0.0.1"), 8080).is_none());
        assert!(set.net_hit(lo("2001:db8::1"), 1).is_some());
        assert!(set.net_hit(lo("::ffff:127.0.0.1"), 8080).is_some());
    }

    #[test]
    fn bad_rules_name_the_policy_and_field_and_spare_other_policies() {
        let mut t = RuleTable::default();
        let bad = RuntimePolicySpec {
            network: Some(NetworkRules {
                deny_connect: vec![ConnectMatch {
                    cidr: Cidr("10.0.0.0/33".into()),
                    ports: vec![],
                }],
            }),
            ..Default::default()
        };
        let long = RuntimePolicySpec {
            file: Some(FileRules {
                deny_write: vec![format!("/{}", "x".repeat(300))],
                deny_read: vec![],
            }),
            ..Default::default()
        };
        let (set, errors) = compile(
            &[
                (pref("bad"), bad),
                (pref("long"), long),
                (pref("good"), deny_exec(PolicyAction::Block, &["/bin/nc"])),
            ],
            false,
            &mut t,
        );
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].field, "spec.network.denyConnect[0].cidr");
        assert!(errors[0].to_string().contains("ns/bad"), "{}", errors[0]);
        assert_eq!(errors[1].field, "spec.file.denyWrite[0]");
        assert_eq!(set.policies, vec![pref("good")]);
        assert!(set.exec_hit("/bin/nc", None).is_some());
    }

    #[test]
    fn paths_normalize_lexically() {
        assert_eq!(normalize("/a/./b//c/../d/").as_deref(), Ok("/a/b/d"));
        assert_eq!(normalize("/").as_deref(), Ok("/"));
        assert!(normalize("rel").is_err());
        assert_eq!(
            parse_cidr("10.1.2.3/8").map(|(a, p)| (a.to_string(), p)),
            Ok(("::ffff:10.0.0.0".into(), 104))
        );
    }
}
