//! The runtime sensor's benchmarks (`cargo xtask bench --only runtime`,
//! as root). Every ratio compares against a baseline measured in the same
//! run, alternating rounds, so the shared machine's noise hits both.
//!
//! - overhead: 20,000 fork+exec of a static binary and 200,000 open/close
//!   from a process in a tracked cgroup, with nothing attached versus the
//!   sensor loaded and a policy applied (exec, file and connect rules;
//!   fanotify and signal), and versus an exec-only policy.
//! - throughput: one generator process per core doing UDP `connect` to
//!   loopback in a tracked cgroup (each a record), the sensor draining the
//!   ring buffer; records delivered per second, records dropped, and the
//!   sensor's peak RSS. Baseline: the same generators with nothing
//!   attached (connects per second).

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use sightline_crds::net::Cidr;
use sightline_crds::runtime_policy::{
    ConnectMatch, FileRules, NetworkRules, PolicyAction, ProcessMatch, ProcessRules,
    RuntimePolicySpec,
};
use sightline_runtime_sensor::rules::PolicyRef;
use sightline_runtime_sensor::sensor::{Options, Sensor, WorkloadSpec};
use sightline_testenv::jail::Jail;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("overhead") => overhead(arg(&args, 1, 20_000), arg(&args, 2, 200_000)),
        Some("throughput") => throughput(arg(&args, 1, 5)),
        // Children: join the cgroup first, then do the work.
        Some("exec") => child_exec(need(&args, 1)?, need(&args, 2)?, arg(&args, 3, 0)),
        Some("open") => child_open(need(&args, 1)?, need(&args, 2)?, arg(&args, 3, 0)),
        Some("connect") => child_connect(need(&args, 1)?, arg(&args, 2, 1)),
        _ => Err("usage: bench overhead [EXECS] [OPENS] | bench throughput [SECONDS]".into()),
    }
}

fn need(args: &[String], i: usize) -> Result<&str> {
    args.get(i)
        .map(String::as_str)
        .ok_or_else(|| format!("argument {i} missing").into())
}

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn join(cgroup: &str) -> Result<()> {
    std::fs::write(
        format!("{cgroup}/cgroup.procs"),
        std::process::id().to_string(),
    )?;
    Ok(())
}

fn child_exec(cgroup: &str, program: &str, n: u64) -> Result<()> {
    join(cgroup)?;
    for _ in 0..n {
        let status = Command::new(program).arg("true").status()?;
        if !status.success() {
            return Err(format!("{program} true: {status}").into());
        }
    }
    Ok(())
}

fn child_open(cgroup: &str, file: &str, n: u64) -> Result<()> {
    join(cgroup)?;
    for _ in 0..n {
        drop(std::fs::File::open(file)?);
    }
    Ok(())
}

fn child_connect(cgroup: &str, seconds: u64) -> Result<()> {
    join(cgroup)?;
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut n: u64 = 0;
    while Instant::now() < deadline {
        for _ in 0..1000 {
            sock.connect("127.0.0.1:9")?;
        }
        n += 1000;
    }
    println!("{n}");
    Ok(())
}

/// Runs this program as a child doing `what` and returns its wall time and
/// stdout.
fn child(what: &[&str]) -> Result<(Duration, String)> {
    let start = Instant::now();
    let out = Command::new(std::env::current_exe()?).args(what).output()?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(format!("{what:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn policy(full: bool) -> Vec<(PolicyRef, RuntimePolicySpec)> {
    let mut spec = RuntimePolicySpec {
        action: PolicyAction::Block,
        process: Some(ProcessRules {
            deny: Some(vec![ProcessMatch {
                path: Some("/bin/nc".into()),
                sha256: None,
            }]),
            allow: None,
        }),
        ..Default::default()
    };
    if full {
        spec.file = Some(FileRules {
            deny_write: vec!["/etc".into()],
            deny_read: vec![],
        });
        spec.network = Some(NetworkRules {
            deny_connect: vec![ConnectMatch {
                cidr: Cidr("10.99.0.0/16".into()),
                ports: vec![],
            }],
        });
    }
    vec![(
        PolicyRef {
            namespace: "bench".into(),
            name: "bench".into(),
        },
        spec,
    )]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn overhead(execs: u64, opens: u64) -> Result<()> {
    let jail = Jail::new()?;
    let cgroup = jail.cgroup.display().to_string();
    let program = jail.path("/bin/busybox").display().to_string();
    // A file under the policy's file rule (/etc) and one outside it.
    let file = jail.path("/etc/passwd").display().to_string();
    std::fs::write(jail.path("/tmp/data"), b"data")?;
    let outside = jail.path("/tmp/data").display().to_string();
    let (e, o) = (execs.to_string(), opens.to_string());
    let workload = |full| WorkloadSpec {
        cgroup: jail.cgroup.clone(),
        root: Some(jail.root.clone()),
        policies: policy(full),
        guard: false,
    };
    let run_exec = || child(&["exec", &cgroup, &program, &e]).map(|r| r.0);
    let run_open = || -> Result<(Duration, Duration)> {
        Ok((
            child(&["open", &cgroup, &file, &o])?.0,
            child(&["open", &cgroup, &outside, &o])?.0,
        ))
    };
    let mut base = (Vec::new(), Vec::new());
    let mut full = (Vec::new(), Vec::new());
    let mut exec_only = (Vec::new(), Vec::new());
    let mut signal = (Vec::new(), Vec::new());
    for round in 0..3 {
        eprintln!("round {}", round + 1);
        base.0.push(run_exec()?);
        base.1.push(run_open()?);
        {
            let mut s = Sensor::start(Options::default())?;
            s.apply(&workload(true))?;
            full.0.push(run_exec()?);
            full.1.push(run_open()?);
            s.apply(&workload(false))?;
            exec_only.0.push(run_exec()?);
            exec_only.1.push(run_open()?);
        }
        {
            let mut s = Sensor::start(Options {
                enforcers: vec![sightline_crds::sensor::Enforcer::Signal],
                ..Options::default()
            })?;
            s.apply(&workload(true))?;
            signal.0.push(run_exec()?);
            signal.1.push(run_open()?);
        }
    }
    let opens_under = |v: &Vec<(Duration, Duration)>| median(v.iter().map(|x| x.0).collect());
    let opens_outside = |v: &Vec<(Duration, Duration)>| median(v.iter().map(|x| x.1).collect());
    let be = median(base.0.clone());
    let (bu, bo) = (opens_under(&base.1), opens_outside(&base.1));
    println!("runtime overhead (median of 3 rounds; ratio = with / without)");
    println!(
        "  nothing attached: {execs} fork+exec {:.1} ms ({:.1} µs each); {opens} open/close {:.1} ms ({:.2} µs each)",
        ms(be),
        us(be, execs),
        ms(bo),
        us(bo, opens)
    );
    for (name, (x, y)) in [
        (
            "sensor, full policy (fanotify exec+file, signal connect)",
            &full,
        ),
        ("sensor, exec-only policy (fanotify)", &exec_only),
        ("sensor, full policy, signal enforcer only", &signal),
    ] {
        let x = median(x.clone());
        let (u, o) = (opens_under(y), opens_outside(y));
        println!(
            "  {name}:\n      fork+exec ratio {:.3}   open/close outside the file rules ratio {:.3}   under /etc (a denyWrite prefix) ratio {:.3}",
            ratio(x, be),
            ratio(o, bo),
            ratio(u, bu)
        );
    }
    Ok(())
}

fn throughput(seconds: u64) -> Result<()> {
    let jail = Jail::new()?;
    let cgroup = jail.cgroup.display().to_string();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let secs = seconds.to_string();
    let generate = || -> Result<u64> {
        let kids: Vec<_> = (0..cores)
            .map(|_| {
                Command::new(std::env::current_exe()?)
                    .args(["connect", &cgroup, &secs])
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .map_err(Into::into)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut total = 0;
        for k in kids {
            let out = k.wait_with_output()?;
            total += String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
        Ok(total)
    };
    let baseline = generate()?;
    let mut sensor = Sensor::start(Options::default())?;
    sensor.apply(&WorkloadSpec {
        cgroup: jail.cgroup.clone(),
        root: Some(jail.root.clone()),
        policies: policy(true),
        guard: false,
    })?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut delivered: u64 = 0;
    let start = Instant::now();
    let generated = std::thread::scope(|scope| {
        let generators = scope.spawn(|| {
            let r = generate().map_err(|e| e.to_string());
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        });
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let n = sensor.drain(|_| {});
            delivered += n as u64;
            if n == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        generators
            .join()
            .map_err(|_| "the generator thread panicked".to_string())
    })??;
    delivered += sensor.drain(|_| {}) as u64;
    let took = start.elapsed();
    let drops: u64 = sensor.drops().iter().sum();
    let (peak, now) = (status_kib("VmHWM:")?, status_kib("VmRSS:")?);
    println!("runtime throughput ({cores} generators, {seconds} s, UDP connect to loopback)");
    println!(
        "  nothing attached: {:.0} connects/s",
        baseline as f64 / seconds as f64
    );
    println!(
        "  sensor: {generated} connects, {delivered} records delivered ({:.0}/s), {drops} dropped; ratio delivered/baseline connects {:.3}",
        delivered as f64 / took.as_secs_f64(),
        delivered as f64 / baseline.max(1) as f64
    );
    println!(
        "  sensor RSS after the run: {:.1} MiB (peak {:.1} MiB, the 8 MiB ring buffer included)",
        now as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    Ok(())
}

fn status_kib(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("{field} missing from /proc/self/status").into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
