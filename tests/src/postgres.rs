//! A real PostgreSQL server for tests, from Debian's `postgresql` package:
//! its own data directory (made by `initdb`) and loopback port, run as the
//! package's `postgres` user (PostgreSQL refuses root), with password
//! authentication, and stopped by PID when dropped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{Proc, free_port, tail};
use crate::{Error, Result, io};

/// The Debian package holding the server.
pub const PACKAGE: (&str, &str) = ("/usr/lib/postgresql/15/bin/postgres", "postgresql");

/// The user and password tests connect as.
const USER: &str = "sightline";
const PASSWORD: &str = "sightline-test-password";

/// A running server; dropping it stops it and removes its data.
#[derive(Debug)]
pub struct Postgres {
    proc: Proc,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// The directory of the newest installed server's programs.
fn bin_dir() -> Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(io(
            "looking for PostgreSQL in /usr/lib/postgresql (apt-get install postgresql)",
        ))?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).ok_or_else(|| {
        Error::MissingBinary("no PostgreSQL server under /usr/lib/postgresql/*/bin".into())
    })
}

/// The `postgres` user's uid and gid.
fn postgres_user() -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(io("reading /etc/passwd"))?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| {
            Error::MissingBinary("no postgres user (install Debian's postgresql)".into())
        })
}

/// `cmd` run as the `postgres` user.
fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(program);
    c
}

impl Postgres {
    /// Creates a data directory and starts a server on a free port.
    pub fn start() -> Result<Postgres> {
        Postgres::start_with(None)
    }

    /// As [`Postgres::start`], serving TLS with a certificate for
    /// 127.0.0.1 and `localhost` issued by `ca`, and refusing every
    /// connection over TCP that is not encrypted (`hostssl` only).
    pub fn start_tls(ca: &crate::certs::Ca) -> Result<Postgres> {
        Postgres::start_with(Some(ca))
    }

    fn start_with(ca: Option<&crate::certs::Ca>) -> Result<Postgres> {
        let bin = bin_dir()?;
        let (uid, gid) = postgres_user()?;
        let dir = tempfile::Builder::new()
            .prefix("sightline-pg-")
            .tempdir()
            .map_err(io("creating PostgreSQL's directory"))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(io("opening PostgreSQL's directory to its user"))?;
        let data = dir.path().join("data");
        let pwfile = dir.path().join("password");
        std::fs::write(&pwfile, PASSWORD).map_err(io("writing the password file"))?;
        for p in [dir.path(), pwfile.as_path()] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))
                .map_err(io(format!("giving {} to postgres", p.display())))?;
        }
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .map_err(io("running initdb"))?;
        if !out.status.success() {
            return Err(Error::Command {
                what: "initdb".into(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let port = free_port()?;
        let log = dir.path().join("postgres.log");
        let mut cmd = as_postgres(&bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "fsync=off"]);
        if let Some(ca) = ca {
            let pem = ca.serving("postgres", &["127.0.0.1", "localhost"])?;
            let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            let hba = data.join("pg_hba.conf");
            for (path, text, mode) in [
                (&cert, pem.cert.as_str(), 0o644),
                (&key, pem.key.as_str(), 0o600),
                (
                    &hba,
                    "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
                    0o600,
                ),
            ] {
                std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(io(format!("setting the mode of {}", path.display())))?;
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(io(format!("giving {} to postgres", path.display())))?;
            }
            cmd.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!("ssl_cert_file={}", cert.display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", key.display()));
        }
        let mut proc = Proc::spawn("postgres", cmd, &log)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            proc.check_running()?;
            if std::fs::read_to_string(&log)
                .is_ok_and(|l| l.contains("ready to accept connections"))
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    component: format!("postgres ({})", tail(&log, 10)),
                    seconds: 60,
                    log: log.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Postgres {
            proc,
            port,
            _dir: dir,
        })
    }

    /// A connection URL (user, password, database `postgres`).
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.proc.pid
    }
}
