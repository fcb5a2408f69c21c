//! Container images written here, without a base image, a registry or a
//! Docker daemon: layers are tars made from files (streamed to disk while
//! their digest is computed), and an image is a `docker save` style
//! archive (`manifest.json`, the config, one `layer.tar` per layer) that
//! `docker load` and `ctr images import` both read.

use std::fs::File;
use std::io::{self as stdio, BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Result, io};

/// A layer tar being written.
pub struct LayerTar {
    builder: tar::Builder<Hashing<BufWriter<File>>>,
    path: PathBuf,
}

/// A finished layer.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The uncompressed tar.
    pub path: PathBuf,
    /// `sha256:` of the tar (the config's `diff_ids` entry).
    pub diff_id: String,
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl Layer {
    /// A layer from an existing uncompressed tar (a root filesystem tar).
    pub fn from_tar(path: &Path) -> Result<Layer> {
        let mut f = File::open(path).map_err(io(format!("opening {}", path.display())))?;
        let mut w = Hashing {
            inner: stdio::sink(),
            hash: Sha256::new(),
        };
        stdio::copy(&mut f, &mut w).map_err(io(format!("reading {}", path.display())))?;
        Ok(Layer {
            path: path.to_path_buf(),
            diff_id: format!("sha256:{}", hex(w.hash)),
        })
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> stdio::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> stdio::Result<()> {
        self.inner.flush()
    }
}

fn hex(hash: Sha256) -> String {
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl LayerTar {
    /// Starts a layer tar at `path`.
    pub fn create(path: &Path) -> Result<LayerTar> {
        let file = File::create(path).map_err(io(format!("creating {}", path.display())))?;
        let mut builder = tar::Builder::new(Hashing {
            inner: BufWriter::new(file),
            hash: Sha256::new(),
        });
        builder.mode(tar::HeaderMode::Deterministic);
        Ok(LayerTar {
            builder,
            path: path.to_path_buf(),
        })
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    /// Adds a directory (`etc`, no leading slash).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self> {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(
                &mut h,
                format!("{}/", path.trim_end_matches('/')),
                stdio::empty(),
            )
            .map_err(io(format!("adding directory {path} to a layer")))?;
        Ok(self)
    }

    /// Adds a file with `data`.
    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<&mut Self> {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.builder
            .append_data(&mut h, path, data)
            .map_err(io(format!("adding {path} to a layer")))?;
        Ok(self)
    }

    /// Adds the file at `source` on this machine as `path`, streamed.
    pub fn copy(&mut self, path: &str, source: &Path, mode: u32) -> Result<&mut Self> {
        let f = File::open(source).map_err(io(format!("opening {}", source.display())))?;
        let size = f
            .metadata()
            .map_err(io(format!("reading {}", source.display())))?
            .len();
        let mut h = Self::header(tar::EntryType::Regular, mode, size);
        self.builder
            .append_data(&mut h, path, f)
            .map_err(io(format!("adding {} to a layer", source.display())))?;
        Ok(self)
    }

    /// Adds a symbolic link `path` → `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut h, path, target)
            .map_err(io(format!("adding link {path} to a layer")))?;
        Ok(self)
    }

    /// Finishes the tar.
    pub fn finish(self) -> Result<Layer> {
        let mut w = self
            .builder
            .into_inner()
            .map_err(io("finishing a layer tar"))?;
        w.flush().map_err(io("writing a layer tar"))?;
        Ok(Layer {
            diff_id: format!("sha256:{}", hex(w.hash)),
            path: self.path,
        })
    }
}

/// A layer of an Alpine-style image: `etc/os-release` and the apk
/// database `lib/apk/db/installed`, written into `dir` as `NAME.layer.tar`.
pub fn apk_layer(dir: &Path, name: &str, os_release: &[u8], installed: &[u8]) -> Result<Layer> {
    let mut layer = LayerTar::create(&dir.join(format!("{name}.layer.tar")))?;
    layer
        .dir("etc", 0o755)?
        .file("etc/os-release", os_release, 0o644)?
        .dir("lib/apk/db", 0o755)?
        .file("lib/apk/db/installed", installed, 0o644)?;
    layer.finish()
}

/// The runtime settings of an image's config.
#[derive(Clone, Debug, Default)]
pub struct RunConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` (`KEY=value`).
    pub env: Vec<String>,
    /// `User` (`65532:65532`).
    pub user: Option<String>,
    /// `Labels`.
    pub labels: Vec<(String, String)>,
    /// `created` (RFC 3339); the epoch when `None`.
    pub created: Option<String>,
}

/// A layer of exactly `bytes` (not necessarily a tar: a hostile image's
/// layer), in `dir`.
pub fn raw_layer(dir: &Path, name: &str, bytes: &[u8]) -> Result<Layer> {
    let path = dir.join(format!("{name}.layer"));
    std::fs::write(&path, bytes).map_err(io(format!("writing {}", path.display())))?;
    Ok(Layer {
        path,
        diff_id: format!("sha256:{}", hex(Sha256::new_with_prefix(bytes))),
    })
}

/// Writes a `docker save` style archive of an image of `layers` (base
/// first) tagged `tags` to `out`; returns its ID (the config digest).
pub fn docker_archive(
    tags: &[&str],
    layers: &[Layer],
    run: &RunConfig,
    out: &Path,
) -> Result<String> {
    let config = config_json(layers, run, host_arch())?;
    let config_hex = hex(Sha256::new_with_prefix(&config));
    let layer_names: Vec<String> = layers
        .iter()
        .map(|l| format!("{}/layer.tar", l.diff_id.trim_start_matches("sha256:")))
        .collect();
    let manifest = serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": tags,
        "Layers": layer_names,
    }]);
    let manifest =
        serde_json::to_vec(&manifest).map_err(|e| crate::Error::Manifest(e.to_string()))?;

    let file = File::create(out).map_err(io(format!("creating {}", out.display())))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    let mut put = |name: &str, size: u64, data: &mut dyn stdio::Read| {
        let mut h = LayerTar::header(tar::EntryType::Regular, 0o644, size);
        tar.append_data(&mut h, name, data)
            .map_err(io(format!("adding {name} to {}", out.display())))
    };
    put(
        &format!("{config_hex}.json"),
        config.len() as u64,
        &mut config.as_slice(),
    )?;
    put(
        "manifest.json",
        manifest.len() as u64,
        &mut manifest.as_slice(),
    )?;
    for (layer, name) in layers.iter().zip(&layer_names) {
        let mut f =
            File::open(&layer.path).map_err(io(format!("opening {}", layer.path.display())))?;
        let size = f
            .metadata()
            .map_err(io(format!("reading {}", layer.path.display())))?
            .len();
        put(name, size, &mut f)?;
    }
    tar.into_inner()
        .map_err(io(format!("finishing {}", out.display())))?
        .flush()
        .map_err(io(format!("writing {}", out.display())))?;
    Ok(format!("sha256:{config_hex}"))
}

/// OCI's name of this machine's architecture.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// An image config for `layers` run as `run` on `arch`.
fn config_json(layers: &[Layer], run: &RunConfig, arch: &str) -> Result<Vec<u8>> {
    let labels: serde_json::Map<String, serde_json::Value> = run
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
        .collect();
    let mut container = serde_json::json!({
        "Env": run.env,
        "Entrypoint": run.entrypoint,
        "Cmd": run.cmd,
        "Labels": labels,
    });
    if let Some(u) = &run.user {
        container["User"] = serde_json::json!(u);
    }
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "created": run.created.as_deref().unwrap_or("1970-01-01T00:00:00Z"),
        "config": container,
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "sightline testenv"})).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&config).map_err(|e| crate::Error::Manifest(e.to_string()))
}

/// One platform's image in an OCI layout index.
pub struct PlatformImage<'a> {
    /// `amd64`, `arm64`.
    pub architecture: &'a str,
    /// Its layers, base first.
    pub layers: &'a [Layer],
    /// Its runtime settings.
    pub run: RunConfig,
}

/// Writes an OCI image layout at `dir` holding one multi-platform image
/// (an image index of one Linux manifest per platform) named `name`;
/// returns the index's digest. `skopeo copy --all oci:DIR:NAME …` pushes
/// it whole.
pub fn oci_index_layout(dir: &Path, name: &str, images: &[PlatformImage<'_>]) -> Result<String> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io(format!("creating {}", blobs.display())))?;
    let put = |data: &[u8]| -> Result<(String, u64)> {
        let hex = hex(Sha256::new_with_prefix(data));
        std::fs::write(blobs.join(&hex), data).map_err(io("writing a blob"))?;
        Ok((format!("sha256:{hex}"), data.len() as u64))
    };
    let mut manifests = Vec::new();
    for image in images {
        let mut layer_descs = Vec::new();
        for l in image.layers {
            let data =
                std::fs::read(&l.path).map_err(io(format!("reading {}", l.path.display())))?;
            let (digest, size) = put(&data)?;
            layer_descs.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size,
            }));
        }
        let config = config_json(image.layers, &image.run, image.architecture)?;
        let (config_digest, config_size) = put(&config)?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": layer_descs,
        }))
        .map_err(|e| crate::Error::Manifest(e.to_string()))?;
        let (digest, size) = put(&manifest)?;
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
            "platform": {"architecture": image.architecture, "os": "linux"},
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .map_err(|e| crate::Error::Manifest(e.to_string()))?;
    let (index_digest, index_size) = put(&index)?;
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index_size,
            "annotations": {"org.opencontainers.image.ref.name": name},
        }],
    });
    std::fs::write(dir.join("index.json"), top.to_string()).map_err(io("writing index.json"))?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(io("writing oci-layout"))?;
    Ok(index_digest)
}
