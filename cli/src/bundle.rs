//! `sightline bundle keygen|export|verify|import`: signed bundles of the
//! vulnerability database (and optionally the asset catalog and the images
//! to mirror) for clusters that cannot download them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sightline_scan::bundle::{self, Extras, Manifest, PublicKey, SigningKey};

use crate::search::bearer_token;

/// The catalog's three documents, as `--catalog DIR` holds them.
const CATALOG_FILES: [&str; 3] = ["taxonomy.yaml", "normalization.yaml", "lifecycle.yaml"];

/// `sightline bundle keygen`.
pub fn keygen(output: &Path, out: &mut impl Write) -> Result<()> {
    let (key, pem) = SigningKey::generate()?;
    let mut file = {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(output).with_context(|| {
            format!(
                "creating {} (an existing key is never overwritten)",
                output.display()
            )
        })?
    };
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", output.display()))?;
    let public = key.public();
    writeln!(
        out,
        "signing key written to {} (keep it secret)",
        output.display()
    )?;
    writeln!(out, "public key (key ID {}):", public.key_id())?;
    writeln!(out, "{public}")?;
    writeln!(
        out,
        "pin it in the chart: --set 'vulnerabilityDatabase.bundleKeys={{{public}}}'"
    )?;
    Ok(())
}

/// `--image NAME=REFERENCE@sha256:…`.
pub fn image_arg(s: &str) -> std::result::Result<(String, String), String> {
    let (name, reference) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=REFERENCE@sha256:DIGEST"))?;
    let digest = reference
        .rsplit_once("@sha256:")
        .map(|(_, d)| d)
        .ok_or_else(|| format!("{s:?}: the reference must be pinned by digest (…@sha256:…)"))?;
    if name.is_empty() || digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?}: expected NAME=REFERENCE@sha256:<64 hex digits>"
        ));
    }
    Ok((name.to_owned(), reference.to_owned()))
}

/// `sightline bundle export`.
pub fn export(
    database: &Path,
    key_file: &Path,
    catalog: Option<&Path>,
    images: Vec<(String, String)>,
    output: &Path,
    out: &mut impl Write,
) -> Result<()> {
    let pem = std::fs::read_to_string(key_file)
        .with_context(|| format!("reading the signing key {}", key_file.display()))?;
    let key = SigningKey::from_pem(&pem).with_context(|| key_file.display().to_string())?;
    let mut extras = Extras {
        images: images.into_iter().collect::<BTreeMap<_, _>>(),
        ..Extras::default()
    };
    let catalog_paths: Vec<PathBuf> = catalog
        .map(|dir| CATALOG_FILES.iter().map(|f| dir.join(f)).collect())
        .unwrap_or_default();
    if let Some(dir) = catalog {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        let docs = catalog_paths.iter().map(read).collect::<Result<Vec<_>>>()?;
        let parsed = sightline_inventory::catalog::Catalog::from_yaml(&docs[0], &docs[1], &docs[2])
            .with_context(|| format!("the catalog in {}", dir.display()))?;
        extras.catalog_version = Some(parsed.version().to_owned());
        extras.files = CATALOG_FILES
            .iter()
            .zip(&catalog_paths)
            .map(|(name, path)| (format!("catalog/{name}"), path.as_path()))
            .collect();
    }
    let created = jiff::Timestamp::now().to_string();
    let manifest = bundle::write(output, &key, database, extras, created)?;
    writeln!(out, "{} written", output.display())?;
    describe(&manifest, out)
}

/// Prints what a manifest says.
fn describe(m: &Manifest, out: &mut impl Write) -> Result<()> {
    writeln!(out, "  format     {} (created {})", m.format, m.created)?;
    writeln!(out, "  signed by  key {}", m.key_id)?;
    writeln!(
        out,
        "  database   schema {}, built {}, {} advisories{}",
        m.database.schema,
        m.database.built,
        m.database.advisories,
        m.database
            .newest
            .as_deref()
            .map(|n| format!(", newest record {n}"))
            .unwrap_or_default()
    )?;
    if let Some(v) = &m.catalog_version {
        writeln!(out, "  catalog    version {v}")?;
    }
    for (name, reference) in &m.images {
        writeln!(out, "  image      {name}: {reference}")?;
    }
    for member in &m.members {
        writeln!(
            out,
            "  member     {:<28} {:>12} bytes  sha256:{}",
            member.name, member.size, member.sha256
        )?;
    }
    Ok(())
}

/// The trusted keys: `--public-key` flags, else `SIGHTLINE_BUNDLE_KEYS`.
pub fn trusted(keys: &[String]) -> Result<Vec<PublicKey>> {
    let mut out = Vec::new();
    for k in keys {
        out.extend(bundle::parse_keys(k)?);
    }
    if out.is_empty() {
        bail!("name the keys you trust with --public-key ed25519:… (or SIGHTLINE_BUNDLE_KEYS)");
    }
    Ok(out)
}

/// `sightline bundle verify`.
pub fn verify(path: &Path, keys: &[PublicKey], out: &mut impl Write) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let manifest = bundle::verify(std::io::BufReader::new(file), keys, |_, _| Ok(()))
        .with_context(|| format!("{} is refused", path.display()))?;
    writeln!(
        out,
        "{}: signature and every member check out",
        path.display()
    )?;
    describe(&manifest, out)
}

/// `sightline bundle import`: sends the bundle to the operator, which
/// checks it against the keys it pins before it serves it.
pub async fn import(path: &Path, api: &str, out: &mut impl Write) -> Result<()> {
    let config = kube::Config::infer()
        .await
        .context("reading the kubeconfig (is KUBECONFIG set?)")?;
    let Some(token) = bearer_token(&config) else {
        bail!(
            "the kubeconfig has no bearer token for the operator's API; set SIGHTLINE_TOKEN to one allowed to create bundles.sightline.io"
        );
    };
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().await?.len();
    let url = format!("{}/api/v1/vulndb", api.trim_end_matches('/'));
    let builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(1800));
    let http = sightline_report::client::trusting(builder, crate::report::api_ca())
        .map_err(anyhow::Error::msg)?
        .build()
        .context("building the HTTP client")?;
    let resp = http
        .put(&url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, bundle::MEDIA_TYPE)
        .header(reqwest::header::CONTENT_LENGTH, len)
        .body(reqwest::Body::wrap_stream(
            tokio_util::io::ReaderStream::new(file),
        ))
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("PUT {url}: {status}: {}", body.trim());
    }
    writeln!(out, "{}", body.trim())?;
    Ok(())
}
