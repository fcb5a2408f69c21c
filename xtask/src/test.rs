//! `cargo xtask test`: every test, with every real component started here.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
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
/// with Cargo.lock as committed. The advisories check is left out: its
/// database comes from GitHub, which these machines cannot reach.
fn supply_chain() -> Result<()> {
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
        .context("cargo deny found a dependency deny.toml does not allow")
}

/// Runs fmt, clippy and the whole test suite.
pub fn run_all() -> Result<()> {
    setup()?;
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
