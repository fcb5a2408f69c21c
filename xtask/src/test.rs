//! `cargo xtask test`: every test, with every real component started here.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use sightline_testenv::process::{PID_DIR_ENV, stop_recorded};

use crate::{run, setup};

/// Runs fmt, clippy and the whole test suite.
pub fn run_all() -> Result<()> {
    setup()?;
    run(Command::new("cargo").args(["fmt", "--all", "--check"]))
        .context("formatting differs: run `cargo fmt`")?;
    run(Command::new("cargo").args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Processes the tests start are recorded here, so any left behind by a
    // test process that died before its cleanup are stopped afterwards.
    let pids = tempfile::Builder::new()
        .prefix("sightline-test-pids-")
        .tempdir()?;
    let result = run(Command::new("cargo")
        .args(["test", "--workspace"])
        .env(PID_DIR_ENV, pids.path()));
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
    result
}
