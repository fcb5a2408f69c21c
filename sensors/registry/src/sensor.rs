//! The registry sensor: one scan of a registry per run (the operator runs
//! it as a CronJob on the Sensor's schedule). Repositories come from the
//! catalog, filtered by the Sensor's globs; of each repository the newest
//! `tagsPerRepository` images (by the config's `created`) are reported as
//! `ContainerImage` Assets, one per platform, with the registry, the
//! repository and the tags.
//!
//! Reports go to the operator's ingestion API, which writes the Assets.
//! What was analysed before is kept in the Assets themselves, and the
//! operator hands this sensor back what it reported: an image whose
//! manifest digest it already records is not analysed again — its
//! recorded facts are reported anew (so `lastSeen` and the tags move)
//! without fetching a blob.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use sightline_container_sensor::report::{Reporter, image_facts, vulnerability_findings};
use sightline_container_sensor::runtime::ImageRef;
use sightline_crds::Sensor;
use sightline_crds::asset::VulnerabilityFindings;
use sightline_crds::sensor::RegistrySensor;
use sightline_report::details::ImageDetails;
use sightline_report::facts::{ImageFacts, RegistryFacts, RepositoryEntry};
use sightline_report::{ImageObservation, Observation};
use sightline_scan::Limits;
use sightline_scan::source::Descriptor;
use sightline_scan::vuln::{Database, match_analysis};
use tracing::{info, warn};

use crate::auth;
use crate::client::{Client, Registry, RegistryError};
use crate::image::{Platforms, RepoBlobs, analyze, platform_manifests};

/// Where the Secret named by `credentialsSecretRef` is mounted.
pub const CREDENTIALS_DIR: &str = "/var/run/sightline/registry-credentials";

/// How many repositories are scanned at once.
const CONCURRENCY: usize = 4;

/// Longest one image's analysis may take.
const IMAGE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// The registry sensor's settings (the CronJob's environment).
#[derive(Clone, Debug)]
pub struct Config {
    /// `<namespace>/<name>` of the Sensor.
    pub sensor: String,
    /// The activation key.
    pub activation_key: Option<String>,
    /// The key's modules.
    pub modules: Vec<String>,
    /// The Sensor's `spec.registry`.
    pub spec: RegistrySensor,
    /// The mounted credentials Secret, if any (`.dockerconfigjson`, or
    /// `username` and `password`; `ca.crt` adds a CA to trust).
    pub credentials_dir: Option<PathBuf>,
    /// Entries per catalog and tags page (`SIGHTLINE_REGISTRY_PAGE_SIZE`,
    /// 100; registries cap it themselves).
    pub page_size: usize,
    /// The operator's API, where reports go (`SIGHTLINE_API_URL`).
    pub api_url: Option<String>,
    /// The token (audience `sightline`) for it (`SIGHTLINE_TOKEN_FILE`).
    pub token_file: PathBuf,
    /// The CA (PEM) the API's certificate is issued by (`SIGHTLINE_API_CA`).
    pub api_ca: Option<Vec<u8>>,
}

/// A setting that could not be read, named.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Reads `SIGHTLINE_SENSOR`, `SIGHTLINE_ACTIVATION_KEY`,
    /// `SIGHTLINE_MODULES`, `SIGHTLINE_CONFIG` (`spec.registry` as JSON) and
    /// `SIGHTLINE_REGISTRY_CREDENTIALS` (default [`CREDENTIALS_DIR`]).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let sensor = get("SIGHTLINE_SENSOR")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                ConfigError("SIGHTLINE_SENSOR is not set (the operator's CronJob sets it)".into())
            })?;
        let spec: RegistrySensor = serde_json::from_str(
            &get("SIGHTLINE_CONFIG")
                .ok_or_else(|| ConfigError("SIGHTLINE_CONFIG is not set".into()))?,
        )
        .map_err(|e| {
            ConfigError(format!(
                "SIGHTLINE_CONFIG is not a registry sensor spec: {e}"
            ))
        })?;
        let credentials_dir = get("SIGHTLINE_REGISTRY_CREDENTIALS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(CREDENTIALS_DIR));
        Ok(Config {
            sensor,
            activation_key: get("SIGHTLINE_ACTIVATION_KEY").filter(|v| !v.is_empty()),
            modules: get("SIGHTLINE_MODULES")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
            spec,
            credentials_dir: credentials_dir.is_dir().then_some(credentials_dir),
            api_url: get("SIGHTLINE_API_URL").filter(|v| !v.is_empty()),
            token_file: get("SIGHTLINE_TOKEN_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/run/secrets/sightline.dev/token")),
            api_ca: get(sightline_report::client::API_CA_ENV)
                .filter(|v| !v.trim().is_empty())
                .map(String::into_bytes),
            page_size: match get("SIGHTLINE_REGISTRY_PAGE_SIZE") {
                Some(v) => v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ConfigError(format!(
                        "SIGHTLINE_REGISTRY_PAGE_SIZE '{v}' is not a positive number"
                    ))
                })?,
                None => 100,
            },
        })
    }

    /// Whether the key enables vulnerability matching.
    pub fn vulnerabilities(&self) -> bool {
        self.modules.iter().any(|m| m == "vulnerability")
    }

    /// The field manager of this sensor's writes to its own Sensor's status.
    pub fn field_manager(&self) -> String {
        format!("sightline-sensor/{}", self.sensor.replace('/', "."))
    }
}

/// `*` matches within one path segment, `**` across segments, `?` one
/// character: `app/*` matches `app/web` but not `app/web/api`.
pub fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p {
            [] => s.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| go(rest, &s[i..])),
            [b'*', rest @ ..] => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(rest, &s[i..])),
            [b'?', rest @ ..] => s.first().is_some_and(|c| *c != b'/') && go(rest, &s[1..]),
            [c, rest @ ..] => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    // Patterns and names are short; the recursion is bounded by their length.
    pattern.len() <= 256 && go(pattern.as_bytes(), name.as_bytes())
}

/// Whether the Sensor's filter selects `repo` (exclude wins; no include
/// means every repository).
pub fn selected(spec: &RegistrySensor, repo: &str) -> bool {
    let f = spec.repositories.clone().unwrap_or_default();
    (f.include.is_empty() || f.include.iter().any(|g| glob(g, repo)))
        && !f.exclude.iter().any(|g| glob(g, repo))
}

/// What an earlier run recorded about an image, from its Asset.
#[derive(Clone, Debug)]
struct Known {
    identity: String,
    facts: ImageFacts,
    findings: Option<VulnerabilityFindings>,
}

/// The images this sensor reported before, as the operator holds them,
/// by the manifest digests they record (a platform manifest's, and the
/// index's when there is one).
async fn known_images(reporter: &Reporter) -> Result<HashMap<String, Vec<Known>>, ScanError> {
    let mut out: HashMap<String, Vec<Known>> = HashMap::new();
    for r in reporter.client().recorded_images().await?.images {
        // Details the operator's store lacks (a new store): analyse again.
        if r.details_kept == Some(false) {
            continue;
        }
        let known = Known {
            identity: r.identity.clone(),
            facts: r.facts.clone(),
            findings: r.vulnerabilities.clone(),
        };
        let entries = r.facts.registry.iter().flat_map(|g| g.repositories.iter());
        for entry in entries {
            for d in std::iter::once(&entry.manifest_digest).chain(entry.index_digest.iter()) {
                if !out
                    .get(d)
                    .is_some_and(|v| v.iter().any(|k| k.identity == known.identity))
                {
                    out.entry(d.clone()).or_default().push(known.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Why a run could not start (failures of single repositories and images
/// are in [`Summary::failures`] instead).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The registry's catalog could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The operator could not be asked or refused the reports.
    #[error("reporting to the operator: {0}")]
    Report(#[from] sightline_report::client::Error),
    /// The sensor is not configured to report.
    #[error("{0}")]
    Setup(String),
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Repositories scanned.
    pub repositories: usize,
    /// Images (platforms) reported.
    pub images: usize,
    /// Of those, analysed this run (the rest were known).
    pub analysed: usize,
    /// Repositories or images that failed, with why.
    pub failures: Vec<String>,
}

/// An image found in a repository, ready to merge with the same image
/// found in others: one Asset per image, listing every repository.
struct Found {
    identity: String,
    /// The image's facts (without the registry's part).
    facts: ImageFacts,
    findings: Option<VulnerabilityFindings>,
    platform: Option<String>,
    entry: RepositoryEntry,
    /// For images analysed this run: their details, sent once the
    /// observation is accepted.
    details: Option<Box<ImageDetails>>,
}

/// The tags of one repository grouped by what they point at.
struct Candidate {
    top: Descriptor,
    tags: Vec<String>,
    created: Option<String>,
}

/// A registry client for the Sensor's registry and credentials.
pub fn client_for(cfg: &Config) -> Result<Client, RegistryError> {
    let host = cfg
        .spec
        .url
        .split_once("://")
        .map(|(_, h)| h.split('/').next().unwrap_or(h).to_owned())
        .unwrap_or_default();
    let setup = |reason: String| RegistryError::Setup {
        registry: cfg.spec.url.clone(),
        reason,
    };
    let (credentials, ca_pem) = match &cfg.credentials_dir {
        Some(dir) => (
            auth::from_secret_dir(dir, &host).map_err(|e| setup(e.to_string()))?,
            std::fs::read(dir.join("ca.crt")).ok(),
        ),
        None => (None, None),
    };
    Client::new(
        Registry {
            base: cfg.spec.url.clone(),
            credentials,
            ca_pem,
        },
        crate::client::Limits {
            page_size: cfg.page_size,
            ..crate::client::Limits::default()
        },
    )
}

/// Scans the registry once and reports what it holds. `db` matches
/// vulnerabilities when the key enables them.
pub async fn scan_once(
    cfg: &Config,
    client: Arc<Client>,
    kube: kube::Client,
    db: Option<Arc<Database>>,
) -> Result<Summary, ScanError> {
    let url = cfg.api_url.as_deref().ok_or_else(|| {
        ScanError::Setup(
            "SIGHTLINE_API_URL is not set (the operator's CronJob sets it): the sensor has nowhere to report"
                .into(),
        )
    })?;
    let reporter = Reporter::to(url, &cfg.token_file, cfg.api_ca.as_deref())
        .map_err(|e| ScanError::Setup(e.to_string()))?;
    let known = Arc::new(known_images(&reporter).await?);
    let repos: Vec<String> = client
        .catalog()
        .await?
        .into_iter()
        .filter(|r| selected(&cfg.spec, r))
        .collect();
    info!(repositories = repos.len(), registry = %client.host(), "scanning");
    let db = db.filter(|_| cfg.vulnerabilities());
    let platforms = wanted_platforms(&cfg.spec)?;
    let newest = usize::try_from(cfg.spec.tags_per_repository)
        .unwrap_or(5)
        .max(1);
    let results: Vec<(Vec<Found>, usize, Vec<String>)> =
        futures::stream::iter(repos.iter().cloned())
            .map(|repo| {
                let (client, known, db) = (client.clone(), known.clone(), db.clone());
                let platforms = &platforms;
                async move { scan_repository(&client, &repo, newest, &known, db, platforms).await }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
    let mut summary = Summary {
        repositories: repos.len(),
        ..Summary::default()
    };
    // The same image in several repositories is one Asset listing them all.
    let mut images: BTreeMap<String, (Found, Vec<RepositoryEntry>)> = BTreeMap::new();
    for (found, analysed, failures) in results {
        summary.analysed += analysed;
        summary.failures.extend(failures);
        for f in found {
            let entry = f.entry.clone();
            images
                .entry(f.identity.clone())
                .or_insert((f, Vec::new()))
                .1
                .push(entry);
        }
    }
    let host = client.host().to_owned();
    let mut observations = Vec::new();
    let mut details = Vec::new();
    for (identity, (found, mut entries)) in images {
        entries.sort_by(|a, b| a.repository.cmp(&b.repository));
        let mut facts = found.facts;
        facts.repo_tags = entries
            .iter()
            .flat_map(|e| {
                let host = &host;
                e.tags
                    .iter()
                    .map(move |t| format!("{host}/{}:{t}", e.repository))
            })
            .take(sightline_report::MAX_LIST)
            .collect();
        facts.repo_digests = entries
            .iter()
            .map(|e| {
                format!(
                    "{host}/{}@{}",
                    e.repository,
                    e.index_digest.as_ref().unwrap_or(&e.manifest_digest)
                )
            })
            .take(sightline_report::MAX_LIST)
            .collect();
        entries.truncate(sightline_report::MAX_LIST);
        facts.registry = Some(RegistryFacts {
            host: host.clone(),
            repositories: entries,
            platform: found.platform,
        });
        observations.push(Observation::ContainerImage(ImageObservation {
            identity,
            facts,
            vulnerabilities: found.findings,
            runtime: None,
            reference: None,
        }));
        details.push(found.details);
    }
    let identities: Vec<String> = observations
        .iter()
        .map(|o| o.identity().to_owned())
        .collect();
    match reporter.send(observations, None).await {
        Ok(receipt) => {
            summary.images += receipt.accepted.len();
            // One at a time: each may be megabytes.
            for a in &receipt.accepted {
                if let Some(d) = details.get_mut(a.index).and_then(Option::take)
                    && !reporter.send_details(&d).await
                {
                    summary.failures.push(format!(
                        "image {}: the operator did not keep its details",
                        d.identity
                    ));
                }
            }
            for r in receipt.refused {
                let id = identities.get(r.index).map_or("?", String::as_str);
                summary.failures.push(format!(
                    "image {id}: the operator refused it ({}): {}",
                    r.reason, r.message
                ));
            }
        }
        Err(e) => summary
            .failures
            .push(format!("reporting {} images: {e}", identities.len())),
    }
    report_status(&kube, cfg, &summary).await;
    Ok(summary)
}

/// The platforms `spec.platforms` names; every Linux one when it names none.
fn wanted_platforms(spec: &RegistrySensor) -> Result<Platforms, ScanError> {
    if spec.platforms.is_empty() {
        return Ok(Platforms::All);
    }
    spec.platforms
        .iter()
        .map(|p| {
            sightline_scan::source::Platform::parse(p)
                .map_err(|e| ScanError::Setup(format!("spec.registry.platforms: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Platforms::Only)
}

/// Scans one repository: returns the images found, how many were
/// analysed (the rest were known), and failures.
async fn scan_repository(
    client: &Arc<Client>,
    repo: &str,
    newest: usize,
    known: &HashMap<String, Vec<Known>>,
    db: Option<Arc<Database>>,
    platforms: &Platforms,
) -> (Vec<Found>, usize, Vec<String>) {
    let mut failures = Vec::new();
    let tags = match client.tags(repo).await {
        Ok(t) => t,
        Err(e) => return (Vec::new(), 0, vec![e.to_string()]),
    };
    // Tags pointing at the same manifest are one image.
    let mut by_digest: BTreeMap<String, Candidate> = BTreeMap::new();
    for tag in tags {
        match client.manifest(repo, &tag).await {
            Ok((top, _)) => by_digest
                .entry(top.digest.clone())
                .or_insert_with(|| Candidate {
                    top,
                    tags: Vec::new(),
                    created: None,
                })
                .tags
                .push(tag),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let handle = tokio::runtime::Handle::current();
    // Newest first, by the config's `created`: known images say it; others
    // need their config (one small blob), not their layers.
    for c in by_digest.values_mut() {
        c.created = match known.get(&c.top.digest).and_then(|k| k.first()) {
            Some(k) => k.facts.created.clone(),
            None => created_of(client, repo, &c.top, &handle).await,
        };
    }
    let mut candidates: Vec<Candidate> = by_digest.into_values().collect();
    candidates.sort_by(|a, b| b.created.cmp(&a.created).then(b.tags.cmp(&a.tags)));
    candidates.truncate(newest);

    let mut found = Vec::new();
    let mut analysed = 0;
    for mut c in candidates {
        c.tags.sort();
        if let Some(recorded) = known.get(&c.top.digest) {
            // Known: what was recorded, with today's tags.
            for k in recorded {
                let registry = k.facts.registry.as_ref();
                let entry = registry.and_then(|g| {
                    g.repositories.iter().find(|e| {
                        e.manifest_digest == c.top.digest
                            || e.index_digest.as_deref() == Some(c.top.digest.as_str())
                    })
                });
                let manifest_digest = entry
                    .map(|e| e.manifest_digest.clone())
                    .unwrap_or_else(|| c.top.digest.clone());
                let mut facts = k.facts.clone();
                facts.registry = None;
                found.push(Found {
                    identity: k.identity.clone(),
                    facts,
                    findings: k.findings.clone(),
                    details: None,
                    platform: registry.and_then(|g| g.platform.clone()),
                    entry: RepositoryEntry {
                        repository: repo.to_owned(),
                        tags: c.tags.clone(),
                        index_digest: (manifest_digest != c.top.digest)
                            .then(|| c.top.digest.clone()),
                        manifest_digest,
                    },
                });
            }
            continue;
        }
        let store = RepoBlobs::new(client.clone(), repo, handle.clone());
        let top = c.top.clone();
        let platforms = platforms.clone();
        let done = tokio::task::spawn_blocking(move || {
            // One image never takes the whole scan's time: past its own
            // deadline it is recorded as a failure and the scan goes on.
            let limits = Limits {
                deadline: Some(sightline_scan::Deadline::after(IMAGE_DEADLINE)),
                ..Limits::default()
            };
            analyze(&store, &top, &platforms, Vec::new(), &limits)
        })
        .await;
        let platform_images = match done {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                failures.push(format!("{repo}@{}: {e}", c.top.digest));
                continue;
            }
            Err(e) => {
                failures.push(format!("{repo}@{}: analysis stopped: {e}", c.top.digest));
                continue;
            }
        };
        for p in platform_images {
            analysed += 1;
            let image_ref = ImageRef {
                id: p.image.config_digest.clone(),
                repo_tags: Vec::new(),
                repo_digests: Vec::new(),
            };
            let matches = db.as_ref().map(|db| match_analysis(&p.image.analysis, db));
            found.push(Found {
                identity: p.image.config_digest.clone(),
                facts: image_facts(&image_ref, &p.image),
                findings: matches.as_ref().map(vulnerability_findings),
                details: Some(Box::new(ImageDetails::new(
                    p.image,
                    matches.map(|m| m.findings),
                ))),
                platform: p.platform.as_ref().map(ToString::to_string),
                entry: RepositoryEntry {
                    repository: repo.to_owned(),
                    tags: c.tags.clone(),
                    index_digest: (p.manifest.digest != c.top.digest).then(|| c.top.digest.clone()),
                    manifest_digest: p.manifest.digest.clone(),
                },
            });
        }
    }
    (found, analysed, failures)
}

/// The `created` of an image's config (the first Linux platform's, for an
/// index): one manifest and one config read, no layer.
async fn created_of(
    client: &Arc<Client>,
    repo: &str,
    top: &Descriptor,
    handle: &tokio::runtime::Handle,
) -> Option<String> {
    let store = RepoBlobs::new(client.clone(), repo, handle.clone());
    let top = top.clone();
    tokio::task::spawn_blocking(move || {
        let (_, resolved) = platform_manifests(&store, &top, &Platforms::All)
            .ok()?
            .into_iter()
            .next()?;
        let config = sightline_scan::source::blobs::read_blob(
            &store,
            &resolved.manifest.config,
            "image config",
        )
        .ok()?;
        let v: Value = serde_json::from_slice(&config).ok()?;
        v["created"].as_str().map(str::to_owned)
    })
    .await
    .ok()
    .flatten()
}

/// Writes `lastScanTime` and `assetsReported` into the Sensor's status,
/// under this sensor's field manager (the operator owns the rest).
async fn report_status(kube: &kube::Client, cfg: &Config, summary: &Summary) {
    let Some((ns, name)) = cfg.sensor.split_once('/') else {
        return;
    };
    let api: Api<Sensor> = Api::namespaced(kube.clone(), ns);
    let patch = json!({
        "apiVersion": "sightline.dev/v1alpha1", "kind": "Sensor",
        "status": {
            "lastScanTime": jiff::Timestamp::now().to_string(),
            "assetsReported": summary.images,
        },
    });
    if let Err(e) = api
        .patch_status(
            name,
            &PatchParams::apply(&cfg.field_manager()).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        warn!(error = %e, "cannot write the Sensor's scan status");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("app/*", "app/web"));
        assert!(!glob("app/*", "app/web/api"));
        assert!(glob("app/**", "app/web/api"));
        assert!(glob("*", "library"));
        assert!(!glob("*", "team/app"));
        assert!(glob("app/scratch-?", "app/scratch-1"));
        assert!(!glob("app/scratch-?", "app/scratch-10"));
        let spec: RegistrySensor = serde_json::from_value(json!({
            "url": "http://r", "repositories": {"include": ["app/**"], "exclude": ["app/scratch-*"]}
        }))
        .expect("spec");
        assert!(selected(&spec, "app/web"));
        assert!(!selected(&spec, "app/scratch-1"));
        assert!(!selected(&spec, "other/web"));
    }
}
