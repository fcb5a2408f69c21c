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

/// The version Sightline's images are tagged with (the workspace's).
pub const SIGHTLINE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the local images live: `sightline.local/<name>:<version>`.
pub fn sightline_image(name: &str) -> String {
    format!("sightline.local/{name}:{SIGHTLINE_VERSION}")
}

/// The shared libraries a dynamically linked binary loads, as `ldd`
/// resolves them on this machine (the loader included).
fn shared_libraries(binary: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut cmd = Command::new("ldd");
    cmd.arg(binary);
    let out = checked(cmd, &format!("ldd {}", binary.display()))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x…)"; the vDSO has no file.
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => l,
            };
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Writes an image of `binary` alone (with the libraries it loads, copied
/// from this machine, and an `/etc/passwd` naming root and `nonroot`),
/// run as `user`, tagged [`sightline_image`]`(name)`, into `dir`; returns
/// the archive. No base image: the layer holds just these files.
pub fn binary_image(
    dir: &std::path::Path,
    name: &str,
    binary: &std::path::Path,
    user: &str,
) -> Result<PathBuf> {
    use crate::archive::{LayerTar, RunConfig, docker_archive};
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let mut layer = LayerTar::create(&dir.join(format!("{name}.layer.tar")))?;
    let mut dirs: Vec<String> = vec!["etc".into(), "tmp".into(), "usr/local/bin".into()];
    let libs = shared_libraries(binary)?;
    for lib in &libs {
        if let Some(parent) = lib.parent() {
            dirs.push(
                parent
                    .display()
                    .to_string()
                    .trim_start_matches('/')
                    .to_owned(),
            );
        }
    }
    let mut added = std::collections::BTreeSet::new();
    for d in &dirs {
        // Every directory on the way, parents first, each once.
        let mut at = String::new();
        for part in d.split('/') {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if added.insert(at.clone()) {
                let mode = if at == "tmp" { 0o1777 } else { 0o755 };
                layer.dir(&at, mode)?;
            }
        }
    }
    layer.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        0o644,
    )?;
    layer.file("etc/group", b"root:x:0:\nnonroot:x:65532:\n", 0o644)?;
    for lib in &libs {
        // Copies the file a link resolves to, under the name ldd gave.
        let real =
            std::fs::canonicalize(lib).map_err(io(format!("resolving {}", lib.display())))?;
        layer.copy(
            lib.display().to_string().trim_start_matches('/'),
            &real,
            0o755,
        )?;
    }
    let program = binary
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_owned());
    layer.copy(&format!("usr/local/bin/{program}"), binary, 0o755)?;
    let layer = layer.finish()?;
    let out = dir.join(format!("{name}.tar"));
    docker_archive(
        &[&sightline_image(name)],
        &[layer],
        &RunConfig {
            entrypoint: vec![format!("/usr/local/bin/{program}")],
            user: Some(user.to_owned()),
            labels: vec![(
                "org.opencontainers.image.version".into(),
                SIGHTLINE_VERSION.into(),
            )],
            ..RunConfig::default()
        },
        &out,
    )?;
    Ok(out)
}
