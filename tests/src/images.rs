//! Real images for tests, made here without pulling anything: a Debian root
//! filesystem from `debootstrap` (a real dpkg database written by dpkg
//! itself), cached outside the work tree as a tar.

use std::path::PathBuf;
use std::process::Command;

use crate::binaries::cache_dir;
use crate::docker::checked;
use crate::{Result, io};

/// The suite, variant and extra packages of the Debian test image. Extra
/// packages make it a realistic ~100-package image with well-known
/// vulnerable-over-time software (curl, OpenSSL).
const SUITE: &str = "bookworm";
const INCLUDE: &str = "ca-certificates,curl,openssl";

/// The mirror debootstrap downloads from: `SIGHTLINE_DEBIAN_MIRROR`, else
/// Debian's own.
fn mirror() -> String {
    std::env::var("SIGHTLINE_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

/// A tar of a minimal Debian bookworm root filesystem made by debootstrap,
/// built once (about a minute, as root) and cached.
pub fn debian_rootfs() -> Result<PathBuf> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = cache_dir().join("images");
    let tar = dir.join(format!(
        "debian-{SUITE}-minbase-{}.tar",
        INCLUDE.replace(',', "+")
    ));
    if tar.is_file() {
        return Ok(tar);
    }
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let staging = tempfile::Builder::new()
        .prefix("debootstrap-")
        .tempdir_in(&dir)
        .map_err(io("creating a debootstrap directory"))?;
    let root = staging.path().join("rootfs");
    let mut cmd = Command::new("/usr/sbin/debootstrap");
    cmd.args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
        .arg(&root)
        .arg(mirror());
    checked(
        cmd,
        &format!("debootstrap {SUITE} (needs root and the Debian mirror)"),
    )?;
    let partial = staging.path().join("rootfs.tar");
    let mut cmd = Command::new("tar");
    cmd.arg("--numeric-owner")
        .arg("--xattrs")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&partial)
        .arg(".");
    checked(cmd, "packing the debootstrap root filesystem")?;
    std::fs::rename(&partial, &tar).map_err(io(format!("moving {} into place", tar.display())))?;
    Ok(tar)
}

/// Copies the image in a `docker save` archive into an OCI image layout
/// (gzip-compressed layers) under the reference `name`, with skopeo.
pub fn to_oci_layout(archive: &std::path::Path, dest: &std::path::Path, name: &str) -> Result<()> {
    let mut cmd = Command::new("/usr/bin/skopeo");
    cmd.arg("copy")
        .arg("--quiet")
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("oci:{}:{name}", dest.display()));
    checked(cmd, "skopeo copy to an OCI layout").map(drop)
}

/// The pod sandbox ("pause") program, compiled once with `gcc -static`
/// from `tests/pause/pause.c` and cached by the source's hash.
pub fn pause_binary() -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    const SOURCE: &str = include_str!("../pause/pause.c");
    let stamp: String = Sha256::digest(SOURCE)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache_dir().join("tools").join(format!("pause-{stamp}"));
    let bin = dir.join("pause");
    if bin.is_file() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let src = dir.join("pause.c");
    std::fs::write(&src, SOURCE).map_err(io(format!("writing {}", src.display())))?;
    let partial = dir.join("pause.partial");
    let mut cmd = Command::new("gcc");
    cmd.args(["-static", "-O2", "-o"]).arg(&partial).arg(&src);
    checked(cmd, "gcc -static pause.c (needs gcc and libc6-dev)")?;
    std::fs::rename(&partial, &bin).map_err(io(format!("moving {} into place", bin.display())))?;
    Ok(bin)
}

/// A `docker save` archive of the sandbox image
/// ([`crate::containerd::PAUSE_IMAGE`]: the pause program alone), written
/// into `dir`.
pub fn pause_image(dir: &std::path::Path) -> Result<PathBuf> {
    use crate::archive::{LayerTar, RunConfig, docker_archive};
    let bin = pause_binary()?;
    let mut layer = LayerTar::create(&dir.join("pause-layer.tar"))?;
    layer.copy("pause", &bin, 0o755)?;
    let layer = layer.finish()?;
    let out = dir.join("pause-image.tar");
    docker_archive(
        &[crate::containerd::PAUSE_IMAGE],
        &[layer],
        &RunConfig {
            entrypoint: vec!["/pause".into()],
            user: Some("65535:65535".into()),
            ..RunConfig::default()
        },
        &out,
    )?;
    Ok(out)
}
