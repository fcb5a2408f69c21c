//! RuntimePolicy enforcement against the running kernel (as root): programs
//! run chrooted into a small root filesystem of their own (a tmpfs holding
//! busybox) inside a cgroup the test creates.

// The jail helpers fail the test that uses them.
#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sightline_crds::net::Cidr;
use sightline_crds::runtime_policy::{
    ConnectMatch, FileRules, NetworkRules, PolicyAction, ProcessMatch, ProcessRules,
    RuntimePolicySpec,
};
use sightline_crds::sensor::Enforcer;
use sightline_runtime_common::kind;
use sightline_runtime_sensor::fanotify::Hashing;
use sightline_runtime_sensor::loader::Limits;
use sightline_runtime_sensor::rules::PolicyRef;
use sightline_runtime_sensor::sensor::{
    Activity, Options, Outcome, Report, Sensor, UNREADABLE_PATH, Violation, WorkloadSpec,
};
use sightline_testenv::jail::Jail;

fn jail() -> Jail {
    Jail::new().expect("creating the jail")
}

fn sh(jail: &Jail, script: &str) -> String {
    jail.sh(script).expect("running the jail's shell")
}

fn workload(jail: &Jail, policies: Vec<(PolicyRef, RuntimePolicySpec)>) -> WorkloadSpec {
    WorkloadSpec {
        cgroup: jail.cgroup.clone(),
        root: Some(jail.root.clone()),
        policies,
        guard: false,
    }
}

fn policy(name: &str) -> PolicyRef {
    PolicyRef {
        namespace: "test".into(),
        name: name.into(),
    }
}

/// Denies `/bin/denied`, writes under `/etc`, and connecting to `port`.
fn deny_all(action: PolicyAction, port: u16) -> RuntimePolicySpec {
    RuntimePolicySpec {
        action,
        process: Some(ProcessRules {
            deny: Some(vec![ProcessMatch {
                path: Some("/bin/echo".into()),
                sha256: None,
            }]),
            allow: None,
        }),
        file: Some(FileRules {
            deny_write: vec!["/etc".into()],
            deny_read: vec![],
        }),
        network: Some(NetworkRules {
            deny_connect: vec![ConnectMatch {
                cidr: Cidr("127.0.0.1/32".into()),
                ports: vec![i32::from(port)],
            }],
        }),
        ..Default::default()
    }
}

/// A loopback listener counting the bytes it receives.
struct Server {
    port: u16,
    received: Arc<Mutex<usize>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(0));
        let count = received.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut buf = Vec::new();
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = conn.read_to_end(&mut buf);
                *count.lock().expect("lock") += buf.len();
            }
        });
        Server { port, received }
    }

    fn received(&self) -> usize {
        *self.received.lock().expect("lock")
    }
}

/// The violations reported for `cgroup`, waiting until `n` arrived and a
/// little longer for any extra (a duplicate would show up).
fn violations(sensor: &mut Sensor, cgroup_id: u64, n: usize) -> Vec<Violation> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut settle = None;
    loop {
        sensor.drain(|r| {
            if let Report::Violation(v) = r
                && v.cgroup_id == cgroup_id
            {
                out.push(v);
            }
        });
        let now = Instant::now();
        if out.len() >= n && settle.is_none() {
            settle = Some(now + Duration::from_millis(500));
        }
        if settle.is_some_and(|s| now >= s) || now >= deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn by_activity(vs: &[Violation]) -> HashMap<String, Vec<&Violation>> {
    let mut m: HashMap<String, Vec<&Violation>> = HashMap::new();
    for v in vs {
        let key = match &v.activity {
            Activity::Exec { path } => format!("exec {path}"),
            Activity::Open { path, .. } => format!("open {path}"),
            Activity::Connect { addr, port } => format!("connect {addr}:{port}"),
        };
        m.entry(key).or_default().push(v);
    }
    m
}

// Each step in a subshell: the signal enforcer kills the process that
// violates, and the shell itself writes for `>`.
const SCRIPT: &str = "/bin/echo ran-denied; echo exec=$?; \
     /bin/busybox echo ran-allowed; \
     (echo data > /etc/new); echo write=$?; \
     (/bin/busybox cat /etc/passwd > /tmp/out); echo read=$?; \
     (echo hello | /bin/busybox nc 127.0.0.1 $PORT); echo connect=$?";

fn script(port: u16) -> String {
    SCRIPT.replace("$PORT", &port.to_string())
}

#[test]
fn block_denies_exec_and_write_with_eperm_kills_connect_and_releases_on_removal() {
    let jail = jail();
    let server = Server::start();
    let mut sensor = Sensor::start(Options::default()).expect("starting the sensor");
    let applied = sensor
        .apply(&workload(
            &jail,
            vec![(policy("block"), deny_all(PolicyAction::Block, server.port))],
        ))
        .expect("applying the policy");
    assert_eq!(applied.exec, Some(Enforcer::Fanotify), "{applied:?}");
    assert_eq!(applied.file, Some(Enforcer::Fanotify), "{applied:?}");
    assert_eq!(applied.net, Some(Enforcer::Signal), "{applied:?}");

    let out = sh(&jail, &script(server.port));
    assert!(!out.contains("ran-denied"), "{out}");
    assert!(
        out.contains("exec=126"),
        "EPERM from execve makes the shell say 126: {out}"
    );
    assert!(out.contains("/bin/echo: Operation not permitted"), "{out}");
    assert!(out.contains("ran-allowed"), "{out}");
    assert!(out.contains("write=1") || out.contains("write=2"), "{out}");
    assert!(out.contains("read=0"), "reads are not denied: {out}");
    assert!(
        out.contains("connect=137"),
        "nc is killed by SIGKILL (128 + 9): {out}"
    );
    // fanotify decides an open after O_CREAT made the file (as the
    // `file_open` LSM hook would): the file may exist, empty; nothing is
    // written to it.
    let written = std::fs::metadata(jail.path("/etc/new")).map_or(0, |m| m.len());
    assert_eq!(written, 0, "the denied write wrote nothing");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.received(), 0, "the killed connect sent nothing");

    let id = jail.cgroup_id().expect("cgroup");
    let vs = violations(&mut sensor, id, 3);
    let m = by_activity(&vs);
    assert_eq!(m.len(), 3, "{vs:#?}");
    let exec = &m["exec /bin/echo"];
    assert_eq!(exec.len(), 1, "{vs:#?}");
    assert_eq!(
        (exec[0].outcome, exec[0].enforcer),
        (Outcome::Denied, Enforcer::Fanotify)
    );
    assert_eq!(exec[0].rule.policy, policy("block"));
    let write = &m["open /etc/new"];
    assert_eq!(write.len(), 1, "{vs:#?}");
    assert_eq!(write[0].outcome, Outcome::Denied);
    assert!(matches!(
        write[0].activity,
        Activity::Open { write: true, .. }
    ));
    let connect = &m[&format!("connect 127.0.0.1:{}", server.port)];
    assert_eq!(connect.len(), 1, "{vs:#?}");
    assert_eq!(
        (connect[0].outcome, connect[0].enforcer),
        (Outcome::Killed, Enforcer::Signal)
    );

    sensor.remove(id);
    let out = sh(&jail, &script(server.port));
    assert!(out.contains("ran-denied"), "{out}");
    assert!(out.contains("write=0"), "{out}");
    assert!(out.contains("connect=0"), "{out}");
    assert_eq!(
        std::fs::read_to_string(jail.path("/etc/new")).expect("written"),
        "data\n"
    );
    assert!(violations(&mut sensor, id, 0).is_empty());
}

#[test]
fn audit_runs_everything_and_reports_each_violation_once() {
    let jail = jail();
    let server = Server::start();
    let mut sensor = Sensor::start(Options::default()).expect("starting the sensor");
    sensor
        .apply(&workload(
            &jail,
            vec![(policy("audit"), deny_all(PolicyAction::Audit, server.port))],
        ))
        .expect("applying the policy");
    let out = sh(&jail, &script(server.port));
    for expected in ["ran-denied", "exec=0", "write=0", "read=0", "connect=0"] {
        assert!(out.contains(expected), "{expected}: {out}");
    }
    let vs = violations(&mut sensor, jail.cgroup_id().expect("cgroup"), 3);
    let m = by_activity(&vs);
    assert_eq!(m.len(), 3, "{vs:#?}");
    for (what, list) in &m {
        assert_eq!(
            list.len(),
            1,
            "{what} reported {} times: {vs:#?}",
            list.len()
        );
        assert_eq!(list[0].outcome, Outcome::Reported);
        assert_eq!(list[0].rule.action, PolicyAction::Audit);
    }
    assert_eq!(server.received(), "hello\n".len());
}

#[test]
fn the_signal_enforcer_kills_denied_programs_before_they_run() {
    let jail = jail();
    let server = Server::start();
    let mut sensor = Sensor::start(Options {
        enforcers: vec![Enforcer::Signal],
        ..Options::default()
    })
    .expect("starting the sensor");
    let applied = sensor
        .apply(&workload(
            &jail,
            vec![(policy("block"), deny_all(PolicyAction::Block, server.port))],
        ))
        .expect("applying the policy");
    assert_eq!(
        (applied.exec, applied.file),
        (Some(Enforcer::Signal), Some(Enforcer::Signal))
    );
    let out = sh(&jail, &script(server.port));
    assert!(!out.contains("ran-denied"), "{out}");
    assert!(out.contains("exec=137"), "killed by SIGKILL: {out}");
    assert!(out.contains("ran-allowed"), "{out}");
    assert!(out.contains("write=137"), "{out}");
    assert!(out.contains("connect=137"), "{out}");
    let vs = violations(&mut sensor, jail.cgroup_id().expect("cgroup"), 3);
    let m = by_activity(&vs);
    let exec = &m["exec /bin/echo"];
    assert_eq!(exec.len(), 1, "{vs:#?}");
    assert_eq!(
        (exec[0].outcome, exec[0].enforcer),
        (Outcome::Killed, Enforcer::Signal)
    );
    assert_eq!(m["open /etc/new"].len(), 1, "{vs:#?}");
}

#[test]
fn an_allowlist_lets_only_listed_programs_run() {
    for enforcers in [vec![Enforcer::Fanotify], vec![Enforcer::Signal]] {
        let jail = jail();
        let mut sensor = Sensor::start(Options {
            enforcers: enforcers.clone(),
            ..Options::default()
        })
        .expect("starting the sensor");
        let allow = ["/bin/sh", "/bin/busybox", "/usr/sbin/chroot"]
            .into_iter()
            .map(|p| ProcessMatch {
                path: Some(p.into()),
                sha256: None,
            })
            .collect();
        let spec = RuntimePolicySpec {
            action: PolicyAction::Block,
            process: Some(ProcessRules {
                deny: None,
                allow: Some(allow),
            }),
            ..Default::default()
        };
        let applied = sensor
            .apply(&workload(&jail, vec![(policy("allow"), spec)]))
            .expect("apply");
        assert_eq!(applied.exec, enforcers.first().copied());
        let out = sh(
            &jail,
            "/bin/busybox echo listed; /bin/echo unlisted; echo rc=$?",
        );
        assert!(out.contains("listed"), "{enforcers:?}: {out}");
        assert!(!out.contains("unlisted"), "{enforcers:?}: {out}");
        let expected = if enforcers[0] == Enforcer::Fanotify {
            "rc=126"
        } else {
            "rc=137"
        };
        assert!(out.contains(expected), "{enforcers:?}: {out}");
        let vs = violations(&mut sensor, jail.cgroup_id().expect("cgroup"), 1);
        assert_eq!(vs.len(), 1, "{vs:#?}");
        assert_eq!(
            vs[0].activity,
            Activity::Exec {
                path: "/bin/echo".into()
            }
        );
        assert_eq!(vs[0].rule.target, "process.allow");
    }
}

#[test]
fn a_sha256_rule_denies_the_program_by_content_under_any_name() {
    let jail = jail();
    use sha2::Digest;
    std::fs::write(jail.path("/bin/other"), b"#!/bin/sh\necho other-ran\n").expect("script");
    let sum = hex(&sha2::Sha256::digest(
        std::fs::read(jail.path("/bin/other")).expect("read"),
    ));
    std::fs::copy(jail.path("/bin/other"), jail.path("/tmp/renamed")).expect("copy");
    let mut sensor = Sensor::start(Options::default()).expect("starting the sensor");
    let spec = RuntimePolicySpec {
        action: PolicyAction::Block,
        process: Some(ProcessRules {
            deny: Some(vec![ProcessMatch {
                path: None,
                sha256: Some(sum),
            }]),
            allow: None,
        }),
        ..Default::default()
    };
    sensor
        .apply(&workload(&jail, vec![(policy("sha"), spec)]))
        .expect("apply");
    let out = sh(
        &jail,
        "chmod +x /bin/other /tmp/renamed; /tmp/renamed; echo rc=$?; /bin/busybox echo fine",
    );
    assert!(!out.contains("other-ran"), "{out}");
    assert!(out.contains("rc=126"), "{out}");
    assert!(out.contains("fine"), "{out}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn stopping_the_sensor_releases_enforcement() {
    let jail = jail();
    let server = Server::start();
    let mut sensor = Sensor::start(Options::default()).expect("starting the sensor");
    sensor
        .apply(&workload(
            &jail,
            vec![(policy("block"), deny_all(PolicyAction::Block, server.port))],
        ))
        .expect("apply");
    assert!(sh(&jail, &script(server.port)).contains("exec=126"));
    // What the kernel does when the sensor's process ends: the fanotify
    // group closes and the programs detach. Nothing is pinned.
    drop(sensor);
    let out = sh(&jail, &script(server.port));
    assert!(
        out.contains("ran-denied") && out.contains("write=0") && out.contains("connect=0"),
        "{out}"
    );
    assert!(
        !Path::new("/sys/fs/bpf/sightline").exists(),
        "no pinned programs or maps"
    );
}

#[test]
fn the_lsm_enforcer_is_probed_and_its_refusal_reported() {
    let sensor = Sensor::start(Options::default()).expect("starting the sensor");
    match sensor.lsm_reason() {
        None => {} // This kernel runs BPF LSM programs: they passed the verifier.
        Some(reason) => {
            assert!(reason.contains("bprm_check_security"), "{reason}");
            assert!(
                reason.contains("Operation not permitted")
                    || reason.contains("not among the active LSMs"),
                "the kernel's own words: {reason}"
            );
        }
    }
}

#[test]
fn a_rule_on_a_link_denies_the_program_it_leads_to() {
    // Debian's /bin/sh is a link to dash; the kernel opens the file the
    // link leads to, and that is what fanotify reports.
    let jail = jail();
    std::os::unix::fs::symlink("echo", jail.path("/bin/link")).expect("symlink");
    let mut sensor = Sensor::start(Options::default()).expect("starting the sensor");
    let spec = RuntimePolicySpec {
        action: PolicyAction::Block,
        process: Some(ProcessRules {
            deny: Some(vec![ProcessMatch {
                path: Some("/bin/link".into()),
                sha256: None,
            }]),
            allow: None,
        }),
        ..Default::default()
    };
    let applied = sensor
        .apply(&workload(&jail, vec![(policy("link"), spec)]))
        .expect("apply");
    assert_eq!(applied.exec, Some(Enforcer::Fanotify));
    let out = sh(
        &jail,
        "/bin/link via-link; echo rc=$?; /bin/echo direct; echo rc=$?; /bin/busybox echo other",
    );
    assert!(
        !out.contains("via-link") && !out.contains("direct\n"),
        "{out}"
    );
    assert_eq!(out.matches("rc=126").count(), 2, "{out}");
    assert!(out.contains("other"), "{out}");
}

#[test]
fn pods_that_come_and_go_never_leave_a_later_pod_unprotected() {
    // As the daemon does for pods: the root is reached through the pod's
    // process (`/proc/PID/root`), and the pod is gone (its process dead,
    // its filesystem unmounted) before its rules are removed. A new
    // filesystem then often gets the number the old one had.
    let mut sensor = Sensor::start(Options::default()).expect("starting the sensor");
    let block = deny_all(PolicyAction::Block, 9);
    for round in 0..20 {
        let mut jail = jail();
        let pid = jail.hold().expect("the pod's process");
        // Once chrooted, the process is the pod's (as runc starts it).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/root"))
            .ok()
            .as_deref()
            != Some(jail.root.as_path())
        {
            assert!(
                Instant::now() < deadline,
                "the pod's process never entered its root"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let spec = WorkloadSpec {
            cgroup: jail.cgroup.clone(),
            root: Some(format!("/proc/{pid}/root").into()),
            policies: vec![(policy("block"), block.clone())],
            guard: false,
        };
        let applied = sensor.apply(&spec).expect("applying the policy");
        assert_eq!(applied.exec, Some(Enforcer::Fanotify), "{applied:?}");
        let out = sh(&jail, "/bin/echo ran-denied; echo exec=$?");
        assert!(
            !out.contains("ran-denied") && out.contains("exec=126"),
            "round {round}: the pod's denied program ran: {out} ({applied:?})"
        );
        let id = jail.cgroup_id().expect("cgroup");
        drop(jail);
        sensor.remove(id);
    }
}

#[test]
fn a_root_that_is_still_the_nodes_is_not_marked_until_it_is_the_containers() {
    // A container's first process is in its cgroup before it enters its
    // root filesystem; until then `/proc/PID/root` is the node's. Here a
    // link stands for it: first to the node's root, then to the jail's.
    let jail = jail();
    let dir = tempfile::tempdir().expect("a directory");
    let link = dir.path().join("root");
    std::os::unix::fs::symlink("/", &link).expect("symlink");
    let mut sensor = Sensor::start(Options::default()).expect("starting the sensor");
    let spec = WorkloadSpec {
        cgroup: jail.cgroup.clone(),
        root: Some(link.clone()),
        policies: vec![(policy("block"), deny_all(PolicyAction::Block, 9))],
        guard: false,
    };
    let applied = sensor.apply(&spec).expect("applying the policy");
    assert!(
        applied
            .notes
            .iter()
            .any(|n| n.contains("has not entered its root filesystem")),
        "{applied:?}"
    );
    assert!(applied.unprotected.is_some(), "{applied:?}");
    assert_eq!(sensor.unprotected(), 1, "counted for the metric");
    // Once the container is in its root, the same spec applied again (the
    // next resync) protects it: the refusal was not cached.
    std::fs::remove_file(&link).expect("unlink");
    std::os::unix::fs::symlink(&jail.root, &link).expect("symlink");
    let again = sensor.apply(&spec).expect("applying again");
    assert!(
        again.notes.is_empty() && again.unprotected.is_none(),
        "{again:?}"
    );
    assert_eq!(sensor.unprotected(), 0);
    let out = sh(&jail, "/bin/echo ran-denied; echo exec=$?");
    assert!(out.contains("exec=126"), "{out}");
}

#[test]
fn a_program_too_large_to_hash_is_refused_by_sha256_rules_without_stalling() {
    // A 64 GiB sparse "program": hashing it would hold every permission
    // event on the node for minutes. Above the cap its contents are
    // unknown, which a SHA-256 deny rule refuses.
    let jail = jail();
    let huge = std::fs::File::create(jail.path("/bin/huge")).expect("create");
    huge.set_len(64 << 30).expect("a sparse file");
    drop(huge);
    let mut sensor = Sensor::start(Options::default()).expect("starting the sensor");
    let spec = RuntimePolicySpec {
        action: PolicyAction::Block,
        process: Some(ProcessRules {
            deny: Some(vec![ProcessMatch {
                path: None,
                sha256: Some("ab".repeat(32)),
            }]),
            allow: None,
        }),
        ..Default::default()
    };
    sensor
        .apply(&workload(&jail, vec![(policy("sha"), spec)]))
        .expect("apply");
    let started = Instant::now();
    let out = sh(
        &jail,
        "chmod +x /bin/huge; /bin/huge; echo rc=$?; /bin/echo fine",
    );
    assert!(out.contains("rc=126") && out.contains("fine"), "{out}");
    let id = jail.cgroup_id().expect("cgroup");
    let vs = violations(&mut sensor, id, 1);
    let m = by_activity(&vs);
    let exec = m
        .get("exec /bin/huge")
        .expect("the huge program's exec reported");
    assert_eq!(exec[0].outcome, Outcome::Denied, "{vs:#?}");
    // Not a speed check: hashing 64 GiB would take minutes, not seconds.
    assert!(started.elapsed() < Duration::from_secs(60), "stalled");
}

#[test]
fn the_hash_cap_and_the_decision_for_unhashed_programs_are_settings() {
    // busybox padded by 1 MiB, under a cap just above busybox's size (the
    // jail's shell is busybox), is not hashed: `Deny` refuses it under a
    // SHA-256 deny rule, `Allow` lets it run. Under a 64 MiB cap it is
    // hashed, and contents decide.
    use sha2::Digest;
    let jail = jail();
    let mut big = std::fs::read("/bin/busybox").expect("busybox");
    let cap = big.len() as u64 + 4096;
    big.resize(big.len() + (1 << 20), 0);
    let big_sum = hex(&sha2::Sha256::digest(&big));
    // Named after an applet, so busybox knows what to run.
    std::fs::write(jail.path("/bin/true"), &big).expect("writing the big program");
    let spec = |sum: &str| RuntimePolicySpec {
        action: PolicyAction::Block,
        process: Some(ProcessRules {
            deny: Some(vec![ProcessMatch {
                path: None,
                sha256: Some(sum.into()),
            }]),
            allow: None,
        }),
        ..Default::default()
    };
    let run = "chmod +x /bin/true; /bin/true; echo big=$?";
    for (refuse_unknown, expected) in [(true, "big=126"), (false, "big=0")] {
        let mut sensor = Sensor::start(Options {
            enforcers: vec![Enforcer::Fanotify],
            hashing: Hashing {
                max_bytes: cap,
                refuse_unknown,
            },
            ..Options::default()
        })
        .expect("starting the sensor");
        sensor
            .apply(&workload(
                &jail,
                vec![(policy("sha"), spec(&"ab".repeat(32)))],
            ))
            .expect("apply");
        let out = sh(&jail, run);
        assert!(
            out.contains(expected),
            "refuse_unknown={refuse_unknown}: {out}"
        );
    }
    // Under the cap, contents decide: the padded program's own sum denies
    // it, and busybox's copies run.
    let mut sensor = Sensor::start(Options {
        enforcers: vec![Enforcer::Fanotify],
        hashing: Hashing {
            max_bytes: 64 << 20,
            refuse_unknown: true,
        },
        ..Options::default()
    })
    .expect("starting the sensor");
    sensor
        .apply(&workload(&jail, vec![(policy("sha"), spec(&big_sum))]))
        .expect("apply");
    let out = sh(&jail, "/bin/true; echo big=$?; /bin/echo ran; echo echo=$?");
    assert!(
        out.contains("big=126") && out.contains("ran") && out.contains("echo=0"),
        "{out}"
    );
}

/// Opens `path` with openat2 asking to write, while another thread keeps
/// rewriting the request to read-only in the caller's memory (the kernel
/// has already copied it): Python's ctypes releases its lock during the
/// call, so the rewrite lands while the open waits for the enforcer.
const OPENAT2_RACE: &str = r#"
import ctypes, fcntl, os, sys, threading
procs, path, n = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
with open(procs, "w") as f:
    f.write(str(os.getpid()))
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
class How(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]
how = How(0, 0, 0)
stop = False
def flip():
    while not stop:
        how.flags = os.O_RDONLY
threading.Thread(target=flip, daemon=True).start()
writes = denied = 0
for _ in range(n):
    how.flags = os.O_WRONLY
    fd = libc.syscall(ctypes.c_long(437), ctypes.c_int(-100), ctypes.c_char_p(path),
                      ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        denied += ctypes.get_errno() == 1
        continue
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY:
        writes += 1
    os.close(fd)
stop = True
print(f"writes={writes} denied={denied}")
"#;

#[test]
fn openat2_cannot_pass_a_write_off_as_a_read() {
    let jail = jail();
    let mut sensor = Sensor::start(Options::default()).expect("starting the sensor");
    sensor
        .apply(&workload(
            &jail,
            vec![(policy("block"), deny_all(PolicyAction::Block, 9))],
        ))
        .expect("apply");
    let out = std::process::Command::new("python3")
        .args(["-c", OPENAT2_RACE])
        .arg(jail.cgroup.join("cgroup.procs"))
        .arg(jail.path("/etc/passwd"))
        .arg("300")
        .output()
        .expect("running python3");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("writes=0 denied=300"),
        "every openat2 of a write-protected file is refused: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(jail.path("/etc/passwd")).expect("passwd"),
        "root:x:0:0::/:/bin/sh\n"
    );
}

#[test]
fn a_hard_link_to_a_protected_file_is_protected_too() {
    let jail = jail();
    let mut sensor = Sensor::start(Options::default()).expect("starting the sensor");
    sensor
        .apply(&workload(
            &jail,
            vec![(policy("block"), deny_all(PolicyAction::Block, 9))],
        ))
        .expect("apply");
    // Writes under /etc are denied; the same file under /tmp is /etc's.
    let out = sh(
        &jail,
        "/bin/busybox ln /etc/passwd /tmp/x && echo linked; echo pwned >> /tmp/x; echo write=$?; \
         /bin/busybox cat /tmp/x; echo read=$?",
    );
    assert!(out.contains("linked"), "{out}");
    assert!(out.contains("write=1") || out.contains("write=2"), "{out}");
    assert!(out.contains("read=0"), "reads are not denied: {out}");
    assert_eq!(
        std::fs::read_to_string(jail.path("/etc/passwd")).expect("passwd"),
        "root:x:0:0::/:/bin/sh\n"
    );
    let id = jail.cgroup_id().expect("cgroup");
    let vs = violations(&mut sensor, id, 1);
    assert!(
        vs.iter().any(
            |v| matches!(&v.activity, Activity::Open { path, write: true, .. } if path == "/tmp/x")
                && v.outcome == Outcome::Denied
        ),
        "{vs:#?}"
    );
}

/// A jail under a Block policy, and a sensor whose stall handler reports
/// to a channel instead of ending the test process.
/// The jail's rules decide as usual: busybox runs, `/bin/echo` is refused.
fn rules_still_hold(jail: &Jail) {
    let out = sh(
        jail,
        "/bin/busybox true; echo allowed=$?; /bin/echo x; echo denied=$?",
    );
    assert!(
        out.contains("allowed=0") && out.contains("denied=126"),
        "{out}"
    );
}

fn watched_jail() -> (Jail, Sensor, std::sync::mpsc::Receiver<String>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let opts = Options {
        on_stall: sightline_runtime_sensor::fanotify::StallHandler(Arc::new(move |why: &str| {
            let _ = tx.lock().expect("lock").send(why.to_owned());
        })),
        ..Options::default()
    };
    let jail = jail();
    let mut sensor = Sensor::start(opts).expect("starting the sensor");
    sensor
        .apply(&workload(
            &jail,
            vec![(policy("block"), deny_all(PolicyAction::Block, 9))],
        ))
        .expect("apply");
    (jail, sensor, rx)
}

#[test]
fn a_panic_while_deciding_fails_closed_and_answering_goes_on() {
    let (jail, sensor, stalls) = watched_jail();
    sensor
        .fanotify_enforcer()
        .expect("the fanotify enforcer")
        .inject_panic();
    // The panicking event is the jail's own (its shell's exec): refused.
    let out = sh(&jail, "echo ran");
    assert!(
        out.contains("Operation not permitted") && !out.contains("ran"),
        "{out}"
    );
    // The thread goes on answering: the rules work as before.
    rules_still_hold(&jail);
    assert!(stalls.try_recv().is_err(), "the thread goes on answering");
}

/// Runs `/bin/busybox <args>` in the jail's cgroup and root from another
/// thread (its exec is one permission event); its exit status and output.
fn in_jail_thread(
    jail: &Jail,
    args: &str,
) -> std::thread::JoinHandle<std::io::Result<std::process::Output>> {
    let script = format!(
        "echo $$ > {} && exec /usr/sbin/chroot {} /bin/busybox {args}",
        jail.cgroup.join("cgroup.procs").display(),
        jail.root.display()
    );
    std::thread::spawn(move || {
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .output()
    })
}

#[test]
fn a_slow_decision_holds_one_event_not_the_node() {
    use sightline_runtime_sensor::fanotify::EVENT_DEADLINE;
    let (jail, sensor, stalls) = watched_jail();
    let fan = sensor.fanotify_enforcer().expect("the fanotify enforcer");
    fan.inject_stall(EVENT_DEADLINE * 3, 1);
    // This exec's decision is held (as a huge program's hashing would be).
    let slow = in_jail_thread(&jail, "echo slow-ran");
    std::thread::sleep(Duration::from_millis(500));
    // Everything else is decided meanwhile, by the other threads.
    rules_still_hold(&jail);
    assert!(!slow.is_finished(), "the held event was not answered yet");
    // At its deadline the held event is answered by policy: its workload is
    // covered by a Block policy, so the exec is refused.
    let slow = slow.join().expect("join").expect("running the slow exec");
    let text =
        String::from_utf8_lossy(&slow.stdout).to_string() + &String::from_utf8_lossy(&slow.stderr);
    assert!(
        !slow.status.success() && !text.contains("slow-ran"),
        "{text}"
    );
    assert!(stalls.try_recv().is_err(), "one held event is no stall");
}

#[test]
fn answering_that_stops_is_noticed_within_the_deadline() {
    use sightline_runtime_sensor::fanotify::{STALL_AFTER, WORKERS};
    let (jail, sensor, stalls) = watched_jail();
    let stall = STALL_AFTER + Duration::from_secs(4);
    sensor
        .fanotify_enforcer()
        .expect("the fanotify enforcer")
        .inject_stall(stall, WORKERS as u64);
    let started = Instant::now();
    // One event per deciding thread, each held.
    let waiting: Vec<_> = (0..WORKERS)
        .map(|_| in_jail_thread(&jail, "true"))
        .collect();
    let why = stalls
        .recv_timeout(stall)
        .expect("the watchdog noticed before the events were decided");
    assert!(why.contains("no fanotify event answered"), "{why}");
    assert!(started.elapsed() >= STALL_AFTER);
    for w in waiting {
        let _ = w.join();
    }
}

/// Violations reported for `cgroup_id` until none came for half a second.
fn all_violations(sensor: &mut Sensor, cgroup_id: u64) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(500) {
        let before = out.len();
        let n = sensor.drain(|r| {
            if let Report::Violation(v) = r
                && v.cgroup_id == cgroup_id
            {
                out.push(v);
            }
        });
        if n > 0 || out.len() > before {
            quiet_since = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

const ATTEMPTS: usize = 1000;

// Two writers open files as fast as they can (every open-for-write in a
// tracked container is traced), while the shell runs the denied program
// and writes under the denied prefix, ATTEMPTS times each.
const FLOOD: &str = "mkdir /dev && mknod /dev/null c 1 3; \
     flood() { while :; do : > /tmp/flood-$1; done; }; \
     flood 1 & a=$!; flood 2 & b=$!; \
     i=0; while [ $i -lt $N ]; do \
       /bin/echo ran-denied; (echo data >> /etc/denied); i=$((i+1)); \
     done; \
     kill $a $b; wait; echo done";

#[test]
fn a_flooded_ring_buffer_loses_records_never_decisions() {
    let mut engines = vec![Enforcer::Signal, Enforcer::Fanotify];
    if Sensor::start(Options::default())
        .expect("starting the sensor")
        .lsm_reason()
        .is_none()
    {
        engines.push(Enforcer::Lsm);
    } else {
        eprintln!("this kernel refuses BPF LSM programs: the lsm enforcer is not flooded here");
    }
    for enforcer in engines {
        let jail = jail();
        // A small ring, never drained while the flood runs: it is full
        // after a few dozen records.
        let mut sensor = Sensor::start(Options {
            enforcers: vec![enforcer],
            limits: Limits {
                ring_bytes: 16 << 10,
            },
            ..Options::default()
        })
        .expect("starting the sensor");
        let applied = sensor
            .apply(&workload(
                &jail,
                vec![(policy("block"), deny_all(PolicyAction::Block, 9))],
            ))
            .expect("applying the policy");
        assert_eq!(
            (applied.exec, applied.file),
            (Some(enforcer), Some(enforcer)),
            "{applied:?}"
        );
        let out = sh(&jail, &FLOOD.replace("$N", &ATTEMPTS.to_string()));
        assert!(out.contains("done"), "{enforcer:?}: {out}");
        assert!(!out.contains("ran-denied"), "{enforcer:?}: {out}");
        let written = std::fs::read_to_string(jail.path("/etc/denied")).unwrap_or_default();
        assert_eq!(
            written.lines().count(),
            0,
            "{enforcer:?}: denied writes went through"
        );

        let id = jail.cgroup_id().expect("cgroup");
        let drops = sensor.drops();
        let vs = all_violations(&mut sensor, id);
        assert!(
            vs.iter().all(|v| v.outcome != Outcome::Reported),
            "{enforcer:?}: every violation was prevented: {vs:#?}"
        );
        let recorded = by_activity(&vs);
        let exec = recorded.get("exec /bin/echo").map_or(0, Vec::len);
        let write = recorded.get("open /etc/denied").map_or(0, Vec::len);
        eprintln!(
            "{enforcer:?}: {exec} denied execs and {write} denied writes reported, {} violations and {} opens lost",
            drops[0],
            drops[kind::OPEN as usize]
        );
        assert!(recorded.len() <= 2, "{enforcer:?}: {recorded:#?}");
        // Every attempt is either reported or counted as a lost violation.
        assert_eq!(
            exec + write + drops[0] as usize,
            2 * ATTEMPTS,
            "{enforcer:?}: {exec} execs and {write} writes reported, {} lost",
            drops[0]
        );
        if enforcer == Enforcer::Fanotify {
            // fanotify reports from userspace: nothing of it is lost.
            assert_eq!((exec, write), (ATTEMPTS, ATTEMPTS), "{enforcer:?}");
        } else {
            assert!(drops[0] > 0, "{enforcer:?}: the ring was never full");
        }
        assert!(
            drops[kind::OPEN as usize] > 0,
            "{enforcer:?}: the writers' records were lost: {drops:?}"
        );
    }
}

// A path in a page of a file mapping the process has not touched yet: the
// kernel faults it in when `open` copies it, a BPF program reading it in the
// tracepoint cannot.
const UNTOUCHED_PATH: &str = r#"
import ctypes, mmap, os, sys
cgroup, root = sys.argv[1:3]
libc = ctypes.CDLL(None, use_errno=True)
with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
os.chroot(root)
os.chdir("/")
fd = os.open("/tmp/path", os.O_RDWR)
m = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
at = ctypes.addressof(ctypes.c_char.from_buffer(m))
r = libc.open(ctypes.c_void_p(at), os.O_WRONLY | os.O_CREAT, 0o644)
print("opened", r, ctypes.get_errno(), flush=True)
"#;

#[test]
fn a_path_the_sensor_cannot_read_meets_the_strongest_rule() {
    let jail = jail();
    let mut sensor = Sensor::start(Options {
        enforcers: vec![Enforcer::Signal],
        ..Options::default()
    })
    .expect("starting the sensor");
    sensor
        .apply(&workload(
            &jail,
            vec![(policy("block"), deny_all(PolicyAction::Block, 9))],
        ))
        .expect("applying the policy");
    let mut page = b"/etc/untouched\0".to_vec();
    page.resize(4096, 0);
    std::fs::write(jail.path("/tmp/path"), page).expect("writing the path");
    let out = std::process::Command::new("python3")
        .args(["-c", UNTOUCHED_PATH])
        .arg(&jail.cgroup)
        .arg(&jail.root)
        .output()
        .expect("running python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("opened"),
        "the open went through: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "killed: {out:?}"
    );
    let vs = all_violations(&mut sensor, jail.cgroup_id().expect("cgroup"));
    assert_eq!(vs.len(), 1, "{vs:#?}");
    assert_eq!(vs[0].outcome, Outcome::Killed);
    assert!(
        matches!(&vs[0].activity, Activity::Open { path, write: true } if path == UNREADABLE_PATH),
        "{vs:#?}"
    );
}

/// A pod guarded before its containers are known: a container cgroup made
/// after the guard inherits the rules in the kernel and is held from its
/// first exec; one that existed already (the sandbox) is held too; the
/// container's own workload outlives the guard; allowlists wait for the
/// container's own workload, so the sandbox's program still starts.
#[test]
fn a_guarded_pod_holds_each_new_container_from_its_first_exec() {
    let jail = Jail::named("sandbox").expect("creating the jail");
    let mut sensor = Sensor::start(Options::default()).expect("starting the sensor");
    let pod = jail.pod().to_path_buf();
    let block = deny_all(PolicyAction::Block, 9);
    let guard = WorkloadSpec {
        cgroup: pod.clone(),
        root: None,
        policies: vec![(policy("block"), block.clone())],
        guard: true,
    };
    let applied = sensor.apply(&guard).expect("guarding the pod");
    assert_eq!(applied.exec, Some(Enforcer::Signal), "{applied:?}");
    assert!(
        applied.notes.iter().all(|n| !n.contains("root filesystem")),
        "{applied:?}"
    );
    let first_exec = "/bin/echo ran-denied; echo exec=$?";

    let out = sh(&jail, first_exec);
    assert!(
        !out.contains("ran-denied") && out.contains("exec=137"),
        "the sandbox: {out}"
    );
    for round in 0..5 {
        // A container made after the guard: its first command is judged.
        let app = pod.join(format!("app-{round}"));
        std::fs::create_dir(&app).expect("creating the container's cgroup");
        let out = jail
            .sh_in(&app, first_exec)
            .expect("running in the container");
        assert!(
            !out.contains("ran-denied") && out.contains("exec=137"),
            "container {round}: {out}"
        );
        std::fs::remove_dir(&app).expect("removing the container's cgroup");
    }

    // The container's own workload replaces the inherited rules and stays
    // when the guard goes.
    let app = pod.join("app");
    std::fs::create_dir(&app).expect("creating the container's cgroup");
    let own = WorkloadSpec {
        cgroup: app.clone(),
        root: None,
        policies: vec![(policy("block"), block.clone())],
        guard: false,
    };
    sensor.apply(&own).expect("applying the container's rules");
    let changed = WorkloadSpec {
        policies: vec![
            (policy("block"), block),
            (policy("other"), RuntimePolicySpec::default()),
        ],
        ..guard.clone()
    };
    sensor.apply(&changed).expect("changing the guard");
    let pod_id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&pod).expect("pod"));
    sensor.remove(pod_id);
    let out = jail
        .sh_in(&app, first_exec)
        .expect("running in the container");
    assert!(
        !out.contains("ran-denied") && out.contains("exec=137"),
        "after the guard: {out}"
    );
    let out = sh(&jail, first_exec);
    assert!(out.contains("ran-denied"), "the sandbox, unguarded: {out}");
    let app_id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&app).expect("app"));
    sensor.remove(app_id);
    let out = jail
        .sh_in(&app, first_exec)
        .expect("running in the container");
    assert!(out.contains("ran-denied"), "released: {out}");

    // An allowlist does not hold the sandbox's program back.
    let allow_only = RuntimePolicySpec {
        action: PolicyAction::Block,
        process: Some(ProcessRules {
            deny: None,
            allow: Some(vec![ProcessMatch {
                path: Some("/bin/busybox".into()),
                sha256: None,
            }]),
        }),
        ..Default::default()
    };
    sensor
        .apply(&WorkloadSpec {
            policies: vec![(policy("allow"), allow_only)],
            ..guard
        })
        .expect("guarding with an allowlist");
    let out = sh(&jail, "/bin/echo pause-runs");
    assert!(out.contains("pause-runs"), "{out}");
}
