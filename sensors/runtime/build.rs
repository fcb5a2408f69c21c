//! Builds the eBPF programs (`sensors/runtime-ebpf`) for the BPF target with
//! the nightly toolchain and `bpf-linker` (`cargo xtask setup` installs
//! both), and puts the object in `OUT_DIR` for `include_bytes!`.
//!
//! `AYA_BUILD_SKIP=1` builds without them (an empty object): the rest of
//! the workspace still builds, and the runtime sensor refuses to start,
//! saying why.

use std::path::Path;

use anyhow::{Context, bail};

const OBJECT: &str = "sightline-runtime";

fn main() -> anyhow::Result<()> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let out = std::env::var("OUT_DIR").context("OUT_DIR")?;
    let sensors = Path::new(&manifest)
        .parent()
        .context("the sensors directory")?;
    let ebpf = sensors.join("runtime-ebpf");
    println!(
        "cargo:rerun-if-changed={}",
        sensors.join("runtime-common").display()
    );
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip =
        std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        std::fs::write(Path::new(&out).join(OBJECT), b"")?;
        return Ok(());
    }
    if which::which("bpf-linker").is_err() {
        bail!(
            "bpf-linker is not on PATH: run `cargo xtask setup` (it installs it into ~/.cache/sightline/bpf-linker/bin) and add that directory to PATH, or set AYA_BUILD_SKIP=1 to build without the eBPF programs"
        );
    }
    let root = ebpf
        .to_str()
        .context("the eBPF crate's path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sightline-runtime-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
