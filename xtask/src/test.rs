//! `cargo xtask test`: every test, with every real component started here.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::Digest;
use sightline_testenv::process::{PID_DIR_ENV, stop_recorded};

use crate::{run, setup};

/// Runs `cargo test`, passing its output through, and closes with the total
/// over every test binary (the last binary cargo runs is often one with no
/// tests, which would otherwise be the run's last word).
fn run_counting(cmd: &mut Command) -> Result<()> {
    use std::io::{BufRead, BufReader};
    eprintln!("$ {cmd:?}");
    let mut child = cmd
        .current_dir(crate::root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                for part in rest.split(['.', ';']) {
                    let mut words = part.split_whitespace();
                    if let (Some(n), Some(what)) = (
                        words.next().and_then(|n| n.parse::<u64>().ok()),
                        words.next(),
                    ) {
                        match what {
                            "passed" => passed += n,
                            "failed" => failed += n,
                            "ignored" => ignored += n,
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!("\nall tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        anyhow::bail!("cargo test failed with {status}");
    }
    Ok(())
}

/// Seconds each fuzz target runs in `cargo xtask test`: enough to catch
/// regressions on the checked-in seeds and their neighbours, not a campaign.
const FUZZ_SECONDS: u32 = 20;

/// The fuzz targets under `fuzz/`.
const FUZZ_TARGETS: &[&str] = &[
    "query",
    "normalize",
    "versions",
    "dpkg",
    "apk",
    "layer",
    "lang",
    "rpm",
    "rpm_sqlite",
    "report",
    "details",
    "bundle",
    "elf",
];

/// Installs the nightly toolchain and cargo-fuzz when missing, then runs
/// every fuzz target briefly. Corpora and crash artifacts go to the cache,
/// never into the work tree.
pub fn fuzz_briefly() -> Result<()> {
    crate::ensure_nightly()?;
    let has_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
            .context("installing cargo-fuzz")?;
    }
    let cache = sightline_testenv::binaries::cache_dir().join("fuzz");
    for target in FUZZ_TARGETS {
        let corpus = cache.join("corpus").join(target);
        let artifacts = cache.join("artifacts").join(target);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        let seeds = crate::root().join("fuzz/seeds").join(target);
        let mut cmd = Command::new("cargo");
        cmd.args(["+nightly", "fuzz", "run", "--fuzz-dir", "fuzz", target])
            .arg(&corpus);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.arg("--")
            .arg(format!("-max_total_time={FUZZ_SECONDS}"))
            .arg("-rss_limit_mb=1024")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            // A separate target directory: nightly and sanitizer flags would
            // otherwise invalidate the stable build's artifacts.
            .env("CARGO_TARGET_DIR", cache.join("target"));
        run(&mut cmd).with_context(|| {
            format!(
                "fuzz target {target} failed; the input that broke it is in {}",
                artifacts.display()
            )
        })?;
    }
    Ok(())
}

/// The cargo-deny release the supply-chain checks run.
const CARGO_DENY: &str = "0.20.2";

/// `cargo deny` (deny.toml): every dependency's licence, bans and source,
/// with Cargo.lock as committed; then the RustSec advisories, from the
/// snapshot in `third_party/` (these machines cannot reach GitHub).
pub fn supply_chain() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_DENY)
        });
    if !installed {
        run(Command::new("cargo").args([
            "install",
            &format!("cargo-deny@{CARGO_DENY}"),
            "--locked",
        ]))
        .context("installing cargo-deny")?;
    }
    run(Command::new("cargo").args(["deny", "--locked", "check", "licenses", "bans", "sources"]))
        .context("cargo deny found a dependency deny.toml does not allow")?;
    advisories()
}

/// The RustSec advisory database snapshot in `third_party/`: where it came
/// from, and its digest (checked before use).
const ADVISORY_DB: &str = "third_party/rustsec-advisory-db.tar.gz";
const ADVISORY_DB_COMMIT: &str = "bf5c0d245a92671908518d7e765914d437954ed6";
const ADVISORY_DB_DATE: &str = "2026-08-21T08:28:40+02:00";
const ADVISORY_DB_SHA256: &str = "c6102463aa7ecfbc24dc9370ca88a434a33b5a86397dd2a5558f492291443d54";
/// The directory cargo-deny keeps the database for
/// `https://github.com/rustsec/advisory-db` in, under `db-path`.
const ADVISORY_DB_DIR: &str = "advisory-db-3157b0e258782691";

/// `cargo deny check advisories` against the snapshot: unpacked into a git
/// repository (cargo-deny reads the database's date from its HEAD) dated
/// as the snapshot, and checked offline.
fn advisories() -> Result<()> {
    let root = crate::root();
    let tarball = root.join(ADVISORY_DB);
    let bytes = std::fs::read(&tarball).with_context(|| format!("reading {ADVISORY_DB}"))?;
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    anyhow::ensure!(
        digest == ADVISORY_DB_SHA256,
        "{ADVISORY_DB} has sha256 {digest}, not the {ADVISORY_DB_SHA256} recorded in xtask/src/test.rs (see third_party/README.md to refresh it)"
    );
    let base = sightline_testenv::binaries::cache_dir().join("advisory-db");
    let db_root = base.join(&ADVISORY_DB_SHA256[..16]);
    let db = db_root.join(ADVISORY_DB_DIR);
    // Written last, so an interrupted unpacking is redone.
    let ready = db_root.join("ready");
    if !ready.exists() {
        let _ = std::fs::remove_dir_all(&db);
        std::fs::create_dir_all(&db).with_context(|| format!("creating {}", db.display()))?;
        run(Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&db))
        .context("unpacking the advisory database")?;
        let git = |args: &[&str]| {
            let mut cmd = Command::new("git");
            cmd.arg("-C")
                .arg(&db)
                .args([
                    "-c",
                    "user.name=sightline",
                    "-c",
                    "user.email=xtask@sightline.invalid",
                ])
                .args(args)
                .env("GIT_AUTHOR_DATE", ADVISORY_DB_DATE)
                .env("GIT_COMMITTER_DATE", ADVISORY_DB_DATE);
            cmd
        };
        run(&mut git(&["init", "-q"]))?;
        run(&mut git(&["add", "-A"]))?;
        run(&mut git(&[
            "commit",
            "-q",
            "-m",
            &format!("rustsec/advisory-db {ADVISORY_DB_COMMIT}"),
        ]))
        .context("recording the advisory database as a git repository")?;
        std::fs::write(&ready, ADVISORY_DB_COMMIT)?;
    }
    let config = std::fs::read_to_string(root.join("deny.toml")).context("reading deny.toml")?;
    let header = "[advisories]\n";
    anyhow::ensure!(
        config.contains(header),
        "deny.toml has no [advisories] table for the snapshot's db-path"
    );
    let config = config.replacen(
        header,
        &format!("{header}db-path = {:?}\n", db_root.display().to_string()),
        1,
    );
    let config_path = base.join("deny.toml");
    std::fs::write(&config_path, config).context("writing the advisories' deny.toml")?;
    eprintln!(
        "advisories: the RustSec database as of {ADVISORY_DB_DATE} (commit {})",
        &ADVISORY_DB_COMMIT[..12]
    );
    run(Command::new("cargo")
        .args(["deny", "--locked", "--offline", "--config"])
        .arg(&config_path)
        .args(["check", "advisories"]))
    .context("cargo deny found a dependency with a RustSec advisory")
}

/// Free space below which old incremental compilation caches are removed
/// before the tests (the local cluster's kubelet evicts pods when its disk
/// runs low, which fails the end-to-end tests for no fault of the code).
const PRUNE_BELOW_BYTES: u64 = 15 << 30;
/// Free space below which the tests do not start.
const REFUSE_BELOW_BYTES: u64 = 5 << 30;

/// Free bytes on the filesystem holding `path` (`df`, as POSIX prints it).
fn free_bytes(path: &std::path::Path) -> Result<u64> {
    let out = Command::new("df")
        .arg("-Pk")
        .arg(path)
        .output()
        .context("running df")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .with_context(|| format!("reading df's answer for {}: {text}", path.display()))
}

/// Makes room for the build and the cluster: when the target directory's
/// disk is low, its incremental caches (rebuilt as needed) are removed;
/// when it is still too low, the tests do not start, saying why.
fn ensure_disk_space() -> Result<()> {
    let target = crate::target_dir();
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let free = free_bytes(&target)?;
    if free >= PRUNE_BELOW_BYTES {
        return Ok(());
    }
    for profile in ["debug", "release"] {
        let incremental = target.join(profile).join("incremental");
        if incremental.is_dir() {
            eprintln!(
                "only {:.1} GiB free: removing {} (incremental caches; rebuilt as needed)",
                gib(free),
                incremental.display()
            );
            std::fs::remove_dir_all(&incremental)
                .with_context(|| format!("removing {}", incremental.display()))?;
        }
    }
    let free = free_bytes(&target)?;
    anyhow::ensure!(
        free >= REFUSE_BELOW_BYTES,
        "only {:.1} GiB free on the disk holding {}: the build and the local cluster need at least {:.0} GiB (its kubelet evicts pods when the disk runs low); free some space, e.g. `cargo clean`",
        gib(free),
        target.display(),
        gib(REFUSE_BELOW_BYTES)
    );
    Ok(())
}

/// Runs fmt, clippy and the whole test suite.
pub fn run_all() -> Result<()> {
    setup()?;
    ensure_disk_space()?;
    run(Command::new("cargo").args(["fmt", "--all", "--check"]))
        .context("formatting differs: run `cargo fmt`")?;
    run(crate::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    supply_chain()?;
    // Processes the tests start are recorded here, so any left behind by a
    // test process that died before its cleanup are stopped afterwards.
    let pids = tempfile::Builder::new()
        .prefix("sightline-test-pids-")
        .tempdir()?;
    let result = run_counting(
        crate::cargo()
            .args(["test", "--workspace", "--no-fail-fast"])
            .env(PID_DIR_ENV, pids.path()),
    );
    for entry in std::fs::read_dir(pids.path())?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let name = std::fs::read_to_string(entry.path()).unwrap_or_default();
        // The command line must still match, so a reused PID is never signalled.
        let expect = if name.starts_with("operator") {
            "sightline-operator"
        } else {
            name.as_str()
        };
        if !expect.is_empty() && stop_recorded(pid, expect, Duration::from_secs(5)) {
            eprintln!("stopped leftover test process {name} (pid {pid})");
        }
    }
    result?;
    fuzz_briefly()
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_space_is_read_from_df() {
        let free = super::free_bytes(std::path::Path::new("/")).unwrap_or(0);
        assert!(free > 0, "df should report free space on /");
        assert!(super::free_bytes(std::path::Path::new("/no/such/dir")).is_err());
    }
}
