//! Image analysis of real images: a Debian root filesystem made by
//! debootstrap, imported into and built on by a real dockerd, exported with
//! `docker save` and converted to an OCI layout by skopeo. The expected
//! package sets come from dpkg itself (`dpkg-query` on the same database).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sightline_scan::source::{Image, Platform, docker_archive, oci_layout};
use sightline_scan::{Limits, ScanError};
use sightline_testenv::docker::{Docker, checked};
use sightline_testenv::images::{debian_rootfs, to_oci_layout};

const DEBIAN: &str = "sightline-test/debian:12";

/// (name, version, architecture, source name, source version) of each
/// installed package, as dpkg-query reports it.
type Row = (String, String, String, String, String);

/// What dpkg itself says is installed in a root filesystem tar.
fn dpkg_query(rootfs: &Path) -> Result<BTreeSet<Row>> {
    let dir = tempfile::tempdir()?;
    let mut tar = Command::new("tar");
    tar.arg("-xf")
        .arg(rootfs)
        .arg("-C")
        .arg(dir.path())
        .arg("./var/lib/dpkg/status");
    checked(tar, "extracting the dpkg database")?;
    let mut q = Command::new("dpkg-query");
    q.arg(format!("--admindir={}", dir.path().join("var/lib/dpkg").display()))
        .arg("--show")
        .arg("--showformat=${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\n");
    let out = checked(q, "dpkg-query")?;
    let mut rows = BTreeSet::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let [status, name, version, arch, src, src_version] = f[..] else {
            bail!("unexpected dpkg-query line {line:?}");
        };
        // Second letter: the package's state; 'i' installed, 'c' config-files only.
        if matches!(status.chars().nth(1), Some('i' | 'U' | 'F' | 'W' | 't')) {
            rows.insert((
                name.into(),
                version.into(),
                arch.into(),
                src.into(),
                src_version.into(),
            ));
        }
    }
    Ok(rows)
}

fn rows(image: &Image) -> BTreeSet<Row> {
    image
        .analysis
        .packages
        .iter()
        .map(|p| {
            // dpkg packages always have a source (their own name if unsaid).
            let (src, src_version) = p
                .source
                .as_ref()
                .map(|s| (s.name.clone(), s.version.clone()))
                .unwrap_or_default();
            (
                p.name.clone(),
                p.version.clone(),
                p.arch.clone().unwrap_or_default(),
                src,
                src_version,
            )
        })
        .collect()
}

#[test]
fn debootstrap_image_via_docker_save_and_oci_layout() -> Result<()> {
    let rootfs = debian_rootfs()?;
    let expected = dpkg_query(&rootfs)?;
    assert!(
        expected.len() >= 100,
        "a realistic image: {} packages",
        expected.len()
    );
    let docker = Docker::start()?;
    docker
        .run(&["import", &rootfs.display().to_string(), DEBIAN])
        .with_context(|| docker.logs())?;
    let image_id = docker.run(&["image", "inspect", "--format", "{{.Id}}", DEBIAN])?;
    let archive = docker.save(DEBIAN)?;

    let image = docker_archive::analyze(&archive, None, &Limits::default())?;
    assert_eq!(image.config_digest, image_id.trim());
    assert_eq!(image.repo_tags, [DEBIAN]);
    let os = image.analysis.os.as_ref().context("os-release")?;
    assert_eq!((os.id(), os.version_id()), (Some("debian"), Some("12")));
    assert_eq!(
        os.path, "usr/lib/os-release",
        "read through the /etc/os-release link"
    );
    assert_eq!(
        rows(&image),
        expected,
        "exactly what dpkg says is installed"
    );
    assert_eq!(
        image.analysis.packages.len(),
        expected.len(),
        "no duplicates"
    );
    assert!(
        image
            .analysis
            .packages
            .iter()
            .all(|p| p.layer == 0 && p.path == "var/lib/dpkg/status")
    );
    assert!(
        image.analysis.warnings.is_empty(),
        "{:?}",
        image.analysis.warnings
    );
    let curl = image
        .analysis
        .packages
        .iter()
        .find(|p| p.name == "curl")
        .context("curl")?;
    assert_eq!(
        curl.purl,
        format!(
            "pkg:deb/debian/curl@{}?arch=amd64&distro=debian-12",
            curl.version.replace('+', "%2B").replace(':', "%3A")
        )
    );

    // The same image as an OCI layout with gzip layers, as skopeo writes it.
    let layout = docker.scratch().join("oci");
    to_oci_layout(&archive, &layout, "debian-12")?;
    let oci = oci_layout::analyze(
        &layout,
        Some("debian-12"),
        &Platform::host(),
        &Limits::default(),
    )?;
    assert_eq!(rows(&oci), expected);
    assert_eq!(oci.repo_tags, ["debian-12"]);
    assert_eq!(oci.analysis.layers.len(), 1);
    assert_eq!(
        oci.analysis.layers[0].diff_id,
        image.analysis.layers[0].diff_id
    );
    assert!(
        oci.analysis.layers[0].blob_digest.is_some(),
        "gzip blob digest recorded"
    );
    Ok(())
}

/// Names in a `docker save` archive's layers that are whiteouts.
fn whiteouts(archive: &Path) -> Result<Vec<String>> {
    let mut outer = tar::Archive::new(std::fs::File::open(archive)?);
    let mut found = Vec::new();
    for entry in outer.entries()? {
        let entry = entry?;
        if !entry.path()?.to_string_lossy().ends_with("layer.tar") {
            continue;
        }
        let mut inner = tar::Archive::new(entry);
        for e in inner.entries()? {
            let name = e?.path()?.to_string_lossy().into_owned();
            if name.contains(".wh.") {
                found.push(name);
            }
        }
    }
    Ok(found)
}

#[test]
fn layers_that_remove_packages_and_files() -> Result<()> {
    let rootfs = debian_rootfs()?;
    let base = dpkg_query(&rootfs)?;
    let docker = Docker::start()?;
    docker.run(&["import", &rootfs.display().to_string(), DEBIAN])?;
    let tag = "sightline-test/layered:1";
    docker
        .build(
            tag,
            &format!(
                "FROM {DEBIAN}\n\
                 RUN dpkg --purge curl\n\
                 RUN mkdir -p /var/lib/dpkg/status.d && printf 'Package: extra\\nVersion: 1.0-1\\nArchitecture: amd64\\n' > /var/lib/dpkg/status.d/extra\n\
                 RUN rm -rf /var/lib/dpkg/status.d && mkdir /var/lib/dpkg/status.d && printf 'Package: kept\\nVersion: 2.0-1\\nArchitecture: all\\n' > /var/lib/dpkg/status.d/kept\n\
                 RUN rm /etc/os-release /usr/lib/os-release\n"
            ),
        )
        .with_context(|| docker.logs())?;
    let archive = docker.save(tag)?;
    // The layers really carry overlay's deletions (docker's, not ours).
    let wh = whiteouts(&archive)?;
    for want in [
        "var/lib/dpkg/status.d/.wh..wh..opq",
        "etc/.wh.os-release",
        "usr/lib/.wh.os-release",
        "usr/bin/.wh.curl",
    ] {
        assert!(
            wh.iter().any(|w| w.trim_start_matches("./") == want),
            "{want} in {wh:?}"
        );
    }

    let image = docker_archive::analyze(&archive, Some(tag), &Limits::default())?;
    assert_eq!(image.analysis.layers.len(), 5);
    let got: BTreeSet<(String, String, usize)> = image
        .analysis
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone(), p.layer))
        .collect();
    let mut want: BTreeSet<(String, String, usize)> = base
        .iter()
        .filter(|r| r.0 != "curl")
        .map(|r| (r.0.clone(), r.1.clone(), 0))
        .collect();
    want.insert(("kept".into(), "2.0-1".into(), 3));
    assert_eq!(
        got, want,
        "curl purged in layer 1, 'extra' hidden by layer 3's opaque directory"
    );
    // os-release is gone; /etc/debian_version still names the release.
    let os = image
        .analysis
        .os
        .as_ref()
        .context("os from /etc/debian_version")?;
    assert_eq!(
        (os.id(), os.version_id(), os.path.as_str()),
        (Some("debian"), Some("12"), "etc/debian_version")
    );
    Ok(())
}

/// A small image of files given here, imported into dockerd and saved.
fn small_image(docker: &Docker, tag: &str, files: &[(&str, &[u8])]) -> Result<PathBuf> {
    docker.import_files(tag, files)?;
    Ok(docker.save(tag)?)
}

/// An apk installed database for an Alpine 3.19 base image, written by hand
/// in apk-tools' format: the package names, origins and versions are those
/// of the 3.19 base image as recalled, the `C:` checksums and other fields
/// are not real. It tests the format and overlay handling, not Alpine's data.
const APK_INSTALLED: &str = include_str!("data/alpine-3.19-installed");

#[test]
fn alpine_database_and_hostile_oci_layouts() -> Result<()> {
    let docker = Docker::start()?;
    let os_release = b"NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Alpine Linux v3.19\"\n";
    let archive = small_image(
        &docker,
        "sightline-test/alpine:3.19",
        &[
            ("etc/os-release", os_release),
            ("etc/alpine-release", b"3.19.1\n"),
            ("lib/apk/db/installed", APK_INSTALLED.as_bytes()),
        ],
    )?;
    let image = docker_archive::analyze(&archive, None, &Limits::default())?;
    let got: Vec<(String, String, Option<String>)> = image
        .analysis
        .packages
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.version.clone(),
                p.source.as_ref().map(|s| s.name.clone()),
            )
        })
        .collect();
    let want: Vec<(String, String, Option<String>)> = [
        ("alpine-baselayout", "3.4.3-r2", "alpine-baselayout"),
        ("alpine-baselayout-data", "3.4.3-r2", "alpine-baselayout"),
        ("alpine-keys", "2.4-r1", "alpine-keys"),
        ("apk-tools", "2.14.0-r5", "apk-tools"),
        ("busybox", "1.36.1-r15", "busybox"),
        ("busybox-binsh", "1.36.1-r15", "busybox"),
        ("ca-certificates-bundle", "20230506-r0", "ca-certificates"),
        ("libc-utils", "0.7.2-r5", "libc-dev"),
        ("libcrypto3", "3.1.4-r5", "openssl"),
        ("libssl3", "3.1.4-r5", "openssl"),
        ("musl", "1.2.4_git20230717-r4", "musl"),
        ("musl-utils", "1.2.4_git20230717-r4", "musl"),
        ("scanelf", "1.3.7-r2", "pax-utils"),
        ("ssl_client", "1.36.1-r15", "busybox"),
        ("zlib", "1.3.1-r0", "zlib"),
    ]
    .iter()
    .map(|(n, v, s)| (n.to_string(), v.to_string(), Some(s.to_string())))
    .collect();
    assert_eq!(got, want);
    assert!(
        image
            .analysis
            .packages
            .iter()
            .all(|p| p.purl.ends_with("?arch=x86_64&distro=alpine-3.19.1"))
    );

    // An OCI layout of it, then broken in each way a hostile or damaged
    // layout can be broken.
    let good = docker.scratch().join("oci-good");
    to_oci_layout(&archive, &good, "alpine")?;
    let host = Platform::host();
    oci_layout::analyze(&good, Some("alpine"), &host, &Limits::default())?;
    let manifest_path = manifest_blob(&good)?;
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path)?)?;
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .context("layer digest")?
        .to_owned();
    let layer_blob = |dir: &Path| {
        dir.join("blobs/sha256")
            .join(layer_digest.trim_start_matches("sha256:"))
    };

    let broken = |name: &str, damage: &dyn Fn(&Path) -> Result<()>| -> Result<ScanError> {
        let dir = docker.scratch().join(name);
        let mut cp = Command::new("cp");
        cp.arg("-a").arg(&good).arg(&dir);
        checked(cp, "copying the layout")?;
        damage(&dir)?;
        match oci_layout::analyze(&dir, Some("alpine"), &host, &Limits::default()) {
            Ok(_) => bail!("{name}: a damaged layout was accepted"),
            Err(e) => Ok(e),
        }
    };

    let e = broken("missing-blob", &|d| {
        Ok(std::fs::remove_file(layer_blob(d))?)
    })?;
    assert!(
        e.to_string()
            .contains(&format!("opening layer {layer_digest}")),
        "{e}"
    );
    assert!(e.to_string().contains("is missing"), "{e}");

    let e = broken("tampered-blob", &|d| {
        // Valid gzip of the very same tar, compressed differently: only the
        // blob digest can tell (the size is made to match).
        let blob = layer_blob(d);
        let mut plain = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(std::fs::File::open(&blob)?),
            &mut plain,
        )?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        std::io::Write::write_all(&mut gz, &plain)?;
        let other = gz.finish()?;
        std::fs::write(&blob, &other)?;
        let mut m = manifest.clone();
        m["layers"][0]["size"] = other.len().into();
        repoint(d, &serde_json::to_vec(&m)?)
    })?;
    assert!(e.to_string().contains("blob digest: expected"), "{e}");

    let e = broken("lying-size", &|d| {
        // The manifest claims a shorter layer; re-point the index at it.
        let mut m = manifest.clone();
        let size = m["layers"][0]["size"].as_u64().context("size")?;
        m["layers"][0]["size"] = (size - 10).into();
        repoint(d, &serde_json::to_vec(&m)?)
    })?;
    assert!(e.to_string().contains("blob size: expected"), "{e}");

    let e = broken("traversal-digest", &|d| {
        let mut m = manifest.clone();
        m["layers"][0]["digest"] = "sha256:../../../../etc/passwd".into();
        repoint(d, &serde_json::to_vec(&m)?)
    })?;
    assert!(e.to_string().contains("is not a sha256 digest"), "{e}");

    let e = broken("malformed-index", &|d| {
        Ok(std::fs::write(d.join("index.json"), b"{\"manifests\": [")?)
    })?;
    assert!(e.to_string().contains("index.json: malformed JSON"), "{e}");

    let e = oci_layout::analyze(&good, Some("nope"), &host, &Limits::default())
        .expect_err("no such ref");
    assert!(
        e.to_string()
            .contains("has no manifest named 'nope' (it has [alpine])"),
        "{e}"
    );
    Ok(())
}

/// The single manifest blob of a layout.
fn manifest_blob(dir: &Path) -> Result<PathBuf> {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .context("manifest digest")?;
    Ok(dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:")))
}

/// Stores a new manifest and points index.json at it.
fn repoint(dir: &Path, manifest: &[u8]) -> Result<()> {
    use sha2::Digest;
    let hex: String = sha2::Sha256::digest(manifest)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(dir.join("blobs/sha256").join(&hex), manifest)?;
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
    index["manifests"][0]["digest"] = format!("sha256:{hex}").into();
    index["manifests"][0]["size"] = manifest.len().into();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

#[test]
fn language_packages_in_an_image_built_by_dockerd() -> Result<()> {
    let rootfs = debian_rootfs()?;
    let docker = Docker::start()?;
    docker.run(&["import", &rootfs.display().to_string(), DEBIAN])?;
    // Real files: this repository's Cargo.lock, a package-lock.json and
    // node_modules written by npm, Python metadata written by pip.
    let ctx = docker.scratch().join("lang-ctx");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lang");
    sightline_testenv::helpers::copy_dir(&data, &ctx.join("app"))?;
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    std::fs::copy(&lock, ctx.join("app/Cargo.lock"))?;
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {DEBIAN}\nCOPY app/ /srv/app/\n\
             RUN rm -rf /srv/app/site-packages/six-1.17.0.dist-info\n"
        ),
    )?;
    let tag = "sightline-test/lang:1";
    docker.run(&[
        "build",
        "--network",
        "none",
        "--quiet",
        "--tag",
        tag,
        &ctx.display().to_string(),
    ])?;
    let archive = docker.save(tag)?;
    let image = docker_archive::analyze(&archive, None, &Limits::default())?;
    let of = |kind: &str| -> Vec<(String, String, usize)> {
        image
            .analysis
            .packages
            .iter()
            .filter(|p| p.purl.starts_with(&format!("pkg:{kind}/")))
            .map(|p| (p.name.clone(), p.version.clone(), p.layer))
            .collect()
    };
    let own = |v: &[(&str, &str, usize)]| -> Vec<(String, String, usize)> {
        v.iter()
            .map(|(n, v, l)| (n.to_string(), v.to_string(), *l))
            .collect()
    };
    // npm: the lockfile and node_modules agree; each package once.
    assert_eq!(
        of("npm"),
        own(&[
            ("@types/node", "20.11.30", 1),
            ("is-number", "7.0.0", 1),
            ("undici-types", "5.26.5", 1)
        ])
    );
    // Python: six was deleted in the next layer (a whiteout docker wrote).
    assert_eq!(
        of("pypi"),
        own(&[("attrs", "26.1.0", 1), ("typing-extensions", "4.15.0", 1)])
    );
    // Cargo: every registry package of the lockfile, nothing of the workspace.
    let lock_text = std::fs::read_to_string(&lock)?;
    let registry = lock_text
        .lines()
        .filter(|l| l.starts_with("source = \"registry+"))
        .count();
    let cargo = of("cargo");
    assert_eq!(cargo.len(), registry);
    assert!(cargo.iter().any(|(n, _, _)| n == "serde"));
    assert!(!cargo.iter().any(|(n, _, _)| n.starts_with("sightline")));
    let types = image
        .analysis
        .packages
        .iter()
        .find(|p| p.name == "@types/node")
        .context("@types/node")?;
    assert_eq!(types.purl, "pkg:npm/%40types/node@20.11.30");
    assert!(
        image
            .analysis
            .packages
            .iter()
            .any(|p| p.purl.starts_with("pkg:deb/debian/")),
        "the distro packages too"
    );
    Ok(())
}
