//! Child processes of the local cluster: started with their output in a log
//! file, recorded by PID, and stopped by that PID only.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{Error, Result, io};

/// A process we started.
#[derive(Debug)]
pub struct Proc {
    /// Component name, for messages.
    pub name: String,
    /// Its PID.
    pub pid: u32,
    /// Where its output goes.
    pub log: PathBuf,
    child: Option<std::process::Child>,
    pid_file: Option<PathBuf>,
}

/// Environment variable naming a directory where every started process
/// leaves a `<pid>` file until it is stopped; `cargo xtask test` stops
/// whatever is left there when a test process was killed before its cleanup.
pub const PID_DIR_ENV: &str = "SIGHTLINE_PID_DIR";

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    ///
    /// The process gets its own process group so a Ctrl-C aimed at a test
    /// run does not kill the cluster mid-write; we stop it explicitly.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io(format!("opening {}", log.display())))?;
        let err = out.try_clone().map_err(io("duplicating a log handle"))?;
        cmd.stdout(out)
            .stderr(err)
            .stdin(std::process::Stdio::null())
            .process_group(0);
        let child = cmd.spawn().map_err(io(format!("starting {name}")))?;
        let pid = child.id();
        let pid_file = std::env::var_os(PID_DIR_ENV).map(|d| Path::new(&d).join(pid.to_string()));
        if let Some(f) = &pid_file {
            // Best effort: the record only helps clean up after a crash.
            let _ = std::fs::write(f, name);
        }
        Ok(Self {
            name: name.to_owned(),
            pid,
            log: log.to_path_buf(),
            child: Some(child),
            pid_file,
        })
    }

    /// Fails when the process has already exited, with the end of its log.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(Error::Exited {
                component: self.name.clone(),
                status: status.to_string(),
                tail: tail(&self.log, 30),
            });
        }
        Ok(())
    }

    /// Forgets the child handle so dropping this does not stop the process
    /// (for `cargo xtask cluster up`, where the cluster outlives the command).
    pub fn detach(mut self) -> u32 {
        self.child = None;
        self.pid_file = None;
        self.pid
    }

    /// Sends SIGTERM and waits up to `grace` for the process to exit on its
    /// own; returns its exit status, or `None` if it had to be killed.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                if let Some(f) = self.pid_file.take() {
                    let _ = std::fs::remove_file(f);
                }
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop(Duration::ZERO);
        None
    }

    /// Stops the process: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(self.pid as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(f) = self.pid_file.take() {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Stops a process we started earlier and recorded by PID, if it is still
/// the same program (its command line contains `expect`), so a reused PID is
/// never signalled. Returns whether a process was stopped.
pub fn stop_recorded(pid: u32, expect: &str, grace: Duration) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    if cmdline.is_empty() || !cmdline.contains(expect) {
        return false;
    }
    let p = Pid::from_raw(pid as i32);
    let _ = kill(p, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if kill(p, None).is_err() || is_zombie(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(p, Signal::SIGKILL);
    true
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A TCP port on 127.0.0.1 that is free now and that no other caller in
/// this process has been given.
///
/// Ports come from 20000-32767, below Linux's ephemeral range (32768-60999):
/// a port the kernel hands out for `bind(0)` is also what it hands out as the
/// local port of outgoing connections, so with many clients about, such a
/// port can be taken before the server binds it (seen: two control planes
/// sharing one etcd).
pub fn free_port() -> Result<u16> {
    use rand::Rng;
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1000 {
        let port: u16 = rand::rng().random_range(20000..32768);
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return Ok(port);
        }
    }
    Err(Error::Io {
        what: "finding a free port in 20000-32767".into(),
        source: std::io::Error::other("none free"),
    })
}
