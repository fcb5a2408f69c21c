//! Violations as OCSF 1.1 events, one JSON object per line: Process
//! Activity (1007) for programs, File Activity (1001) for opens and Network
//! Activity (4001) for connections.

use serde_json::{Value, json};
use sightline_crds::runtime_policy::PolicyAction;

use crate::rules::RuleKind;
use crate::sensor::{Activity, Outcome, Violation};

/// Who did it, as far as attribution got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    /// Container id, when the process ran in one.
    pub container_id: Option<String>,
    /// Container name.
    pub container: Option<String>,
    /// Pod name.
    pub pod: Option<String>,
    /// Pod namespace.
    pub namespace: Option<String>,
    /// Pod UID.
    pub pod_uid: Option<String>,
}

/// An OCSF class and activity.
#[derive(Clone, Copy)]
enum Class {
    ProcessLaunch,
    ProcessTerminate,
    FileOpen,
    NetworkOpen,
}

/// The fields every event has: class, category, activity, time, product,
/// device.
fn base(class: Class, node: &str, time: jiff::Timestamp) -> Value {
    let (class_uid, class_name, category_uid, category_name, activity_id, activity_name) =
        match class {
            Class::ProcessLaunch => (1007, "Process Activity", 1, "System Activity", 1, "Launch"),
            Class::ProcessTerminate => (
                1007,
                "Process Activity",
                1,
                "System Activity",
                2,
                "Terminate",
            ),
            Class::FileOpen => (1001, "File Activity", 1, "System Activity", 14, "Open"),
            Class::NetworkOpen => (4001, "Network Activity", 4, "Network Activity", 1, "Open"),
        };
    json!({
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "time": time.as_millisecond(),
        "metadata": {
            "version": "1.1.0",
            "product": {"name": "Sightline runtime sensor", "vendor_name": "Sightline", "version": env!("CARGO_PKG_VERSION")},
        },
        "device": {"hostname": node, "type_id": 0},
    })
}

/// The container and pod an event came from, or the host.
fn attach_owner(e: &mut Value, owner: &Owner) {
    match &owner.container_id {
        Some(id) => {
            let mut cont = json!({"uid": id});
            if let Some(n) = &owner.container {
                cont["name"] = json!(n);
            }
            e["container"] = cont;
        }
        None => e["device"]["type"] = json!("host"),
    }
    if let (Some(ns), Some(pod)) = (&owner.namespace, &owner.pod) {
        e["unmapped"]["k8s"] = json!({"namespace": ns, "pod": pod, "pod_uid": owner.pod_uid});
    }
}

fn file(path: &str, write: bool) -> (Value, Value) {
    (
        json!({"path": path, "name": file_name(path), "type_id": 1}),
        json!(if write { 2 } else { 1 }),
    )
}

fn outbound(e: &mut Value, addr: std::net::IpAddr, port: u16) {
    e["dst_endpoint"] = json!({"ip": addr.to_string(), "port": port});
    e["connection_info"] = json!({"direction_id": 2, "direction": "Outbound"});
}

/// The OCSF event of a violation seen on `node` at `time`.
pub fn event(v: &Violation, owner: &Owner, node: &str, time: jiff::Timestamp) -> Value {
    let class = match &v.activity {
        Activity::Exec { .. } => Class::ProcessLaunch,
        Activity::Open { .. } => Class::FileOpen,
        Activity::Connect { .. } => Class::NetworkOpen,
    };
    let (disposition_id, disposition, status_id, status, action_id, action, verb) = match v.outcome
    {
        Outcome::Reported => (1, "Allowed", 1, "Success", 1, "Allowed", "reported"),
        Outcome::Denied => (2, "Blocked", 2, "Failure", 2, "Denied", "denied"),
        // The process was ended: OCSF's "Terminated" disposition.
        Outcome::Killed => (13, "Terminated", 2, "Failure", 2, "Denied", "killed"),
    };
    let (severity_id, severity) = if v.rule.action == PolicyAction::Block {
        (4, "High")
    } else {
        (3, "Medium")
    };
    let mut e = base(class, node, time);
    for (k, val) in [
        ("severity_id", json!(severity_id)),
        ("severity", json!(severity)),
        ("status_id", json!(status_id)),
        ("status", json!(status)),
        ("action_id", json!(action_id)),
        ("action", json!(action)),
        ("disposition_id", json!(disposition_id)),
        ("disposition", json!(disposition)),
        ("message", json!(message(v))),
        ("actor", json!({"process": {"pid": v.pid}})),
        (
            "policy",
            json!({"name": v.rule.policy.to_string(), "desc": format!("{} {}", kind_word(v.rule.kind), v.rule.target)}),
        ),
        (
            "enrichments",
            json!([{"name": "enforcer", "value": enforcer_name(v.enforcer), "data": {}}]),
        ),
    ] {
        e[k] = val;
    }
    e["metadata"]["labels"] = json!([verb]);
    match &v.activity {
        Activity::Exec { path } => {
            e["process"] = json!({"pid": v.pid, "file": file(path, false).0});
        }
        Activity::Open { path, write } => {
            (e["file"], e["access_mask"]) = file(path, *write);
        }
        Activity::Connect { addr, port } => outbound(&mut e, *addr, *port),
    }
    attach_owner(&mut e, owner);
    e
}

/// The OCSF event of something the programs saw (with
/// `SIGHTLINE_RUNTIME_EVENTS=all`): Process Activity Launch and Terminate,
/// File Activity Open (for writing, and reads of paths a rule names),
/// Network Activity Open, attributed to a container or the host.
pub fn activity(
    ev: &crate::event::Event,
    owner: &Owner,
    node: &str,
    time: jiff::Timestamp,
) -> Value {
    use crate::event::Event;
    let c = ev.common();
    let class = match ev {
        Event::Exec(_) => Class::ProcessLaunch,
        Event::Exit(_) => Class::ProcessTerminate,
        Event::Open(_) => Class::FileOpen,
        Event::Connect(_) => Class::NetworkOpen,
    };
    let mut e = base(class, node, time);
    e["severity_id"] = json!(1);
    e["severity"] = json!("Informational");
    e["actor"] = json!({"process": {"pid": c.pid, "user": {"uid": c.uid.to_string()}}});
    match ev {
        Event::Exec(x) => {
            e["process"] = json!({
                "pid": c.pid,
                "cmd_line": x.args.join(" "),
                "name": x.comm,
                "file": file(&x.filename, false).0,
                "parent_process": {"pid": x.ppid},
                "user": {"uid": c.uid.to_string()},
            });
            e["unmapped"] =
                json!({"inode": x.ino, "dev": x.dev, "args_truncated": x.args_truncated});
        }
        Event::Exit(x) => {
            // A wait status: the exit code in the second byte, or the signal.
            let mut p = json!({"pid": c.pid});
            if x.status & 0x7f == 0 {
                p["exit_code"] = json!(x.status >> 8);
            } else {
                p["unmapped"] = json!({"signal": x.status & 0x7f});
            }
            e["process"] = p;
        }
        Event::Open(x) => {
            (e["file"], e["access_mask"]) = file(&x.path, crate::fanotify::open_access(x.flags).1);
        }
        Event::Connect(x) => outbound(&mut e, x.addr, x.port),
    }
    attach_owner(&mut e, owner);
    e
}

/// The name an enforcer has in the API (`lsm`, `fanotify`, `signal`).
pub fn enforcer_name(e: sightline_crds::sensor::Enforcer) -> &'static str {
    use sightline_crds::sensor::Enforcer;
    match e {
        Enforcer::Lsm => "lsm",
        Enforcer::Fanotify => "fanotify",
        Enforcer::Signal => "signal",
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn kind_word(k: RuleKind) -> &'static str {
    match k {
        RuleKind::ExecDeny => "process.deny",
        RuleKind::ExecAllow => "process.allow",
        RuleKind::FileWrite => "file.denyWrite",
        RuleKind::FileRead => "file.denyRead",
        RuleKind::Connect => "network.denyConnect",
    }
}

/// One sentence about a violation (Kubernetes Events, logs).
pub fn message(v: &Violation) -> String {
    let what = match &v.activity {
        Activity::Exec { path } => format!("exec of {path}"),
        Activity::Open { path, write: true } => format!("open of {path} for writing"),
        Activity::Open { path, write: false } => format!("open of {path} for reading"),
        Activity::Connect { addr, port } => format!("connect to {addr} port {port}"),
    };
    let outcome = match v.outcome {
        Outcome::Reported => "reported",
        Outcome::Denied => "denied (EPERM)",
        Outcome::Killed => "blocked: the process was killed (SIGKILL)",
    };
    format!(
        "{what} {outcome} by RuntimePolicy {} ({} {}, {} enforcer, pid {})",
        v.rule.policy,
        kind_word(v.rule.kind),
        v.rule.target,
        enforcer_name(v.enforcer),
        v.pid
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{PolicyRef, Rule};
    use sightline_crds::sensor::Enforcer;

    #[test]
    fn a_denied_exec_is_process_activity_blocked() {
        let v = Violation {
            cgroup_id: 7,
            pid: 42,
            activity: Activity::Exec {
                path: "/bin/nc".into(),
            },
            rule: Rule {
                policy: PolicyRef {
                    namespace: "shop".into(),
                    name: "no-nc".into(),
                },
                kind: RuleKind::ExecDeny,
                target: "/bin/nc".into(),
                action: PolicyAction::Block,
            },
            outcome: Outcome::Denied,
            enforcer: Enforcer::Fanotify,
        };
        let owner = Owner {
            container_id: Some("abc".into()),
            pod: Some("web-0".into()),
            namespace: Some("shop".into()),
            ..Owner::default()
        };
        let e = event(&v, &owner, "node-1", jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(e["class_uid"], 1007);
        assert_eq!(e["type_uid"], 100701);
        assert_eq!(e["disposition"], "Blocked");
        assert_eq!(e["process"]["file"]["path"], "/bin/nc");
        assert_eq!(e["container"]["uid"], "abc");
        assert_eq!(e["unmapped"]["k8s"]["pod"], "web-0");
        assert_eq!(e["policy"]["name"], "shop/no-nc");
        assert_eq!(
            message(&v),
            "exec of /bin/nc denied (EPERM) by RuntimePolicy shop/no-nc (process.deny /bin/nc, fanotify enforcer, pid 42)"
        );
    }
}
