//! The sensor's loop for each runtime (Docker, containerd): a full scan at start, then
//! events (an image pulled, a container started) analysed as they come,
//! a light refresh every few minutes (lastSeen, missed events), and every
//! image analysed again after `rescanInterval`. Each image is analysed once
//! per digest (a bounded cache), one at a time, so the same image is never
//! analysed twice concurrently. Each analysis runs under a deadline
//! (`SIGHTLINE_ANALYSIS_TIMEOUT_SECONDS`). An image that cannot be
//! analysed is reported as such (`analysisFailure`: why, when, when it is
//! tried again) and not tried again before a backoff expires (15 minutes,
//! doubling to a day) or the sensor's version changes; the report is kept
//! by the operator, so a restarted sensor remembers it. No image can stop
//! the sensor or hold it for longer than its deadline.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sightline_report::details::ImageDetails;
use sightline_report::facts::{AnalysisFailure, ImageFacts};
use sightline_report::{ContainerObservation, ImageObservation, Listing, Observation};
use sightline_scan::vuln::{Database, match_analysis};
use sightline_scan::{Deadline, Limits};
use tracing::{info, warn};

use crate::config::Config;
use crate::report::{Reporter, bounded, container_facts, image_facts, vulnerability_findings};
use crate::runtime::{Change, Engine, ImageRef};
use crate::vulndb::Fetcher;

/// Most analyses remembered; an image evicted is analysed again when seen.
const CACHE_ENTRIES: usize = 1024;
/// Most failed images remembered.
const MAX_FAILED: usize = 4096;
/// The wait before a failed image is tried again; it doubles with each
/// failure in a row, up to [`RETRY_LONGEST`].
const RETRY_FIRST: Duration = Duration::from_secs(15 * 60);
/// The longest wait before a failed image is tried again.
const RETRY_LONGEST: Duration = Duration::from_secs(24 * 3600);
/// Past its deadline, an analysis that has not stopped by itself (it
/// checks the deadline as it reads) is abandoned after this much more.
const DEADLINE_GRACE: Duration = Duration::from_secs(30);
/// This sensor's version: a new one tries failed images again.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An image that could not be analysed.
#[derive(Clone, Debug, PartialEq)]
struct Failed {
    reason: String,
    at: jiff::Timestamp,
    attempts: u32,
    retry_after: jiff::Timestamp,
    sensor_version: String,
}

impl Failed {
    /// The failure after `previous` (by this version), for `reason`, at `now`.
    fn next(previous: Option<&Failed>, reason: String, now: jiff::Timestamp) -> Failed {
        let attempts = previous
            .filter(|p| p.sensor_version == VERSION)
            .map_or(1, |p| p.attempts.saturating_add(1));
        let wait = RETRY_FIRST
            .saturating_mul(1u32.checked_shl(attempts - 1).unwrap_or(u32::MAX))
            .min(RETRY_LONGEST);
        let retry_after = jiff::SignedDuration::try_from(wait)
            .ok()
            .and_then(|w| now.checked_add(w).ok())
            .unwrap_or(now);
        Failed {
            reason,
            at: now,
            attempts,
            retry_after,
            sensor_version: VERSION.to_owned(),
        }
    }

    /// Whether to try again at `now`.
    fn due(&self, now: jiff::Timestamp) -> bool {
        now >= self.retry_after || self.sensor_version != VERSION
    }

    fn facts(&self) -> AnalysisFailure {
        AnalysisFailure {
            reason: self.reason.clone(),
            at: self.at.to_string(),
            attempts: self.attempts,
            retry_after: self.retry_after.to_string(),
            sensor_version: self.sensor_version.clone(),
        }
    }

    fn from_facts(f: &AnalysisFailure) -> Option<Failed> {
        Some(Failed {
            reason: f.reason.clone(),
            at: f.at.parse().ok()?,
            attempts: f.attempts,
            retry_after: f.retry_after.parse().ok()?,
            sensor_version: f.sensor_version.clone(),
        })
    }
}

/// The images that could not be analysed, by image ID.
type FailedImages = HashMap<String, Failed>;

/// The failures this sensor reported before (kept on the Assets by the
/// operator), so a restarted sensor does not try them again early.
async fn failures_reported_before(reporter: &Reporter) -> FailedImages {
    match reporter.client().recorded_images().await {
        Ok(list) => list
            .images
            .iter()
            .filter_map(|r| {
                let f = Failed::from_facts(r.facts.analysis_failure.as_ref()?)?;
                Some((r.identity.clone(), f))
            })
            .take(MAX_FAILED)
            .collect(),
        Err(e) => {
            warn!(error = %e, "cannot ask the operator which images failed before; trying them again");
            FailedImages::new()
        }
    }
}

/// What was reported for one image, and when it was analysed. The
/// analysis is kept so a new vulnerability database can be matched
/// without analysing the image again, and its details sent again.
struct Analyzed {
    at: Instant,
    facts: ImageFacts,
    image: sightline_scan::source::Image,
    /// The database (its build time; `Some(None)`: none) the image's
    /// details were last stored with by the operator; `None`: never.
    details_sent: std::sync::Mutex<Option<Option<String>>>,
}

impl Analyzed {
    fn details_sent_with(&self) -> Option<Option<String>> {
        self.details_sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Details to send once the image's observation is accepted.
struct PendingDetails {
    asset: String,
    analyzed: Arc<Analyzed>,
    db: Option<Arc<Database>>,
}

/// The analyses of one sensor, bounded, oldest evicted first.
#[derive(Default)]
struct Cache {
    entries: HashMap<String, Arc<Analyzed>>,
    order: VecDeque<String>,
}

impl Cache {
    fn get(&self, id: &str, max_age: Duration) -> Option<Arc<Analyzed>> {
        self.entries
            .get(id)
            .filter(|a| a.at.elapsed() < max_age)
            .cloned()
    }

    fn put(&mut self, id: String, a: Analyzed) -> Arc<Analyzed> {
        let a = Arc::new(a);
        if self.entries.insert(id.clone(), a.clone()).is_none() {
            self.order.push_back(id);
            while self.order.len() > CACHE_ENTRIES {
                if let Some(old) = self.order.pop_front() {
                    self.entries.remove(&old);
                }
            }
        }
        a
    }
}

/// One engine's sensor state.
struct Watch {
    cfg: Config,
    reporter: Reporter,
    db: SharedDb,
    limits: Limits,
    cache: Cache,
    /// Details of images observed since the last send.
    pending: Vec<PendingDetails>,
    /// Images that could not be analysed.
    failed: FailedImages,
}

impl Watch {
    /// Inspects, then analyses (or takes from the cache) and reports, one
    /// image an event or a container names.
    async fn image(&mut self, engine: &Engine, id: &str) {
        match engine.image(id).await {
            Ok(image_ref) => {
                if let Some(o) = self.observe_image(engine, image_ref).await {
                    self.send(vec![o], None).await;
                }
            }
            Err(e) => warn!(image = id, error = %e, "cannot inspect image"),
        }
    }

    /// Sends observations (and a listing) to the operator, then, one at a
    /// time, the details of the images it accepted whose details its store
    /// lacks, or holds from before this sensor matched them against its
    /// current database. Failures are logged: what was not sent goes again
    /// at the next refresh.
    async fn send(&mut self, observations: Vec<Observation>, listing: Option<Listing>) {
        let n = observations.len();
        let pending = std::mem::take(&mut self.pending);
        let receipt = match self.reporter.send(observations, listing).await {
            Ok(r) => r,
            Err(e) => {
                warn!(observations = n, reason = e.reason(), error = %e, "cannot report; trying again at the next refresh");
                return;
            }
        };
        let accepted: HashMap<&str, Option<bool>> = receipt
            .accepted
            .iter()
            .map(|a| (a.asset.as_str(), a.details_kept))
            .collect();
        for p in &pending {
            let version = p.db.as_ref().map(|db| db.meta.built.clone());
            let wanted = match accepted.get(p.asset.as_str()) {
                // Missing from the store: whatever this sensor sent before.
                Some(Some(false)) => true,
                Some(Some(true)) => p.analyzed.details_sent_with() != Some(version.clone()),
                // Refused, or an operator without a store.
                Some(None) | None => false,
            };
            if !wanted {
                continue;
            }
            let findings =
                p.db.as_ref()
                    .map(|db| match_analysis(&p.analyzed.image.analysis, db).findings);
            let details = ImageDetails::new(p.analyzed.image.clone(), findings);
            if self.reporter.send_details(&details).await {
                *p.analyzed
                    .details_sent
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(version);
            }
        }
    }

    /// Analyses (or takes from the cache) an image whose tags and digests
    /// are already known (from the list or an inspection): its observation.
    async fn observe_image(&mut self, engine: &Engine, image_ref: ImageRef) -> Option<Observation> {
        let analyzed = match self.cache.get(&image_ref.id, self.cfg.rescan) {
            Some(a) => a,
            None => {
                let now = jiff::Timestamp::now();
                if let Some(f) = self.failed.get(&image_ref.id).filter(|f| !f.due(now)) {
                    tracing::debug!(image = %image_ref.id, retry_after = %f.retry_after, "its analysis failed before; not trying again yet");
                    return Some(failure_observation(engine, image_ref, f));
                }
                let started = Instant::now();
                let limits = Limits {
                    deadline: Some(Deadline::after(self.cfg.analysis_timeout)),
                    ..self.limits.clone()
                };
                let analysis = engine.analyze(&image_ref.id, &limits);
                let reason = match tokio::time::timeout(
                    self.cfg.analysis_timeout + DEADLINE_GRACE,
                    analysis,
                )
                .await
                {
                    Ok(Ok(i)) => Ok(i),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "the analysis did not end within {} s",
                        self.cfg.analysis_timeout.as_secs()
                    )),
                };
                let image = match reason {
                    Ok(i) => {
                        self.failed.remove(&image_ref.id);
                        i
                    }
                    Err(reason) => {
                        let f = Failed::next(self.failed.get(&image_ref.id), reason, now);
                        warn!(image = %image_ref.id, error = %f.reason, attempts = f.attempts, retry_after = %f.retry_after, "image analysis failed; reported, and not tried again before then");
                        if self.failed.len() >= MAX_FAILED {
                            self.failed.clear();
                        }
                        self.failed.insert(image_ref.id.clone(), f.clone());
                        return Some(failure_observation(engine, image_ref, &f));
                    }
                };
                info!(
                    image = %image_ref.id,
                    tags = ?image_ref.repo_tags,
                    packages = image.analysis.packages.len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "analysed image"
                );
                let facts = image_facts(&image_ref, &image);
                self.cache.put(
                    image_ref.id.clone(),
                    Analyzed {
                        at: Instant::now(),
                        facts,
                        image,
                        details_sent: std::sync::Mutex::new(None),
                    },
                )
            }
        };
        // Tags change without the image changing: report what the engine says now.
        let mut facts = analyzed.facts.clone();
        facts.repo_tags = bounded(&image_ref.repo_tags);
        facts.repo_digests = bounded(&image_ref.repo_digests);
        let db = self.db.borrow().clone();
        let vulnerabilities = db
            .as_ref()
            .map(|db| vulnerability_findings(&match_analysis(&analyzed.image.analysis, db)));
        // Whether the details go too depends on the receipt.
        self.pending.push(PendingDetails {
            asset: sightline_crds::asset::asset_name(
                sightline_crds::AssetKind::ContainerImage,
                &image_ref.id,
            ),
            analyzed: analyzed.clone(),
            db,
        });
        Some(Observation::ContainerImage(ImageObservation {
            identity: image_ref.id,
            facts,
            vulnerabilities,
            runtime: Some(engine.kind().to_owned()),
            reference: None,
        }))
    }

    /// Reports every running container, and analyses their images when the
    /// sensor scans on start.
    async fn containers(&mut self, engine: &Engine, only: Option<&str>) {
        let mut attempts = 0;
        let list = loop {
            let list = match engine.containers().await {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "cannot list containers");
                    return;
                }
            };
            // containerd announces a task's start before CRI records the
            // container as running: look again shortly, a few times.
            attempts += 1;
            match only {
                Some(id) if attempts < 10 && !list.iter().any(|c| c.id == id) => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                _ => break list,
            }
        };
        let mut observations = Vec::new();
        for c in list.iter().filter(|c| only.is_none_or(|id| c.id == id)) {
            if self.cfg.on_start && !c.image_id.is_empty() {
                self.image(engine, &c.image_id).await;
            }
            observations.push(Observation::Container(ContainerObservation {
                identity: c.id.clone(),
                facts: container_facts(c, &self.cfg.node, engine.kind()),
            }));
        }
        if !observations.is_empty() {
            self.send(observations, None).await;
        }
    }

    /// Every image and running container; the images go with the
    /// runtime's full listing, so the operator sees which left the node.
    async fn full_scan(&mut self, engine: &Engine) {
        match engine.images().await {
            Ok(images) => {
                let listing = Listing {
                    runtime: engine.kind().to_owned(),
                    images: images.iter().map(|i| i.id.clone()).collect(),
                };
                // The list already carries tags and digests: no inspection per image.
                let mut observations = Vec::new();
                for i in images {
                    observations.extend(self.observe_image(engine, i).await);
                }
                self.send(observations, Some(listing)).await;
            }
            Err(e) => warn!(error = %e, "cannot list images"),
        }
        self.containers(engine, None).await;
    }
}

/// What is reported of an image that could not be analysed: what is
/// known without analysis (tags, digests) and why.
fn failure_observation(engine: &Engine, image_ref: ImageRef, f: &Failed) -> Observation {
    Observation::ContainerImage(ImageObservation {
        facts: ImageFacts {
            image_id: Some(image_ref.id.clone()),
            repo_tags: bounded(&image_ref.repo_tags),
            repo_digests: bounded(&image_ref.repo_digests),
            analysis_failure: Some(f.facts()),
            ..ImageFacts::default()
        },
        identity: image_ref.id,
        vulnerabilities: None,
        runtime: Some(engine.kind().to_owned()),
        reference: None,
    })
}

/// The current vulnerability database, shared by every runtime's loop;
/// `None` until one is at hand (or when the key does not enable matching).
type SharedDb = tokio::sync::watch::Receiver<Option<Arc<Database>>>;

/// Runs the sensor until `shutdown` resolves: one loop per configured
/// runtime, and one that keeps the vulnerability database fresh.
pub async fn run(
    cfg: Config,
    client: kube::Client,
    db: Option<Database>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if cfg.runtimes.is_empty() {
        anyhow::bail!("no container runtime configured (spec.container.runtimes is empty)");
    }
    let mut fetcher = cfg
        .vuln_db_url
        .clone()
        .filter(|_| cfg.vulnerabilities())
        .map(|url| {
            Fetcher::new(
                url,
                cfg.token_file.clone(),
                cfg.vuln_db_cache.clone(),
                cfg.api_ca.as_deref(),
            )
            .with_bundle_keys(cfg.bundle_keys.clone())
        });
    let mut db = db;
    let mut refused = None;
    // The first fetch comes before any scan, so the first reports carry findings.
    if let Some(f) = fetcher.as_mut() {
        match f.refresh().await {
            Ok(Some(fetched)) => {
                info!(advisories = fetched.meta.advisories, built = %fetched.meta.built, "vulnerability database fetched");
                db = Some(fetched);
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "cannot fetch the vulnerability database yet; retrying");
                refused = e.refusal();
            }
        }
    }
    if cfg.vulnerabilities() && db.is_none() && fetcher.is_none() {
        warn!(
            "the key enables vulnerability matching but no database was given; reporting packages only"
        );
    }
    let db = if cfg.vulnerabilities() {
        db.map(Arc::new)
    } else {
        None
    };
    let (db_tx, db_rx) = tokio::sync::watch::channel(db);
    let reporter = Reporter::new(&cfg)?;
    let failed = failures_reported_before(&reporter).await;
    let runtimes = crate::node::Runtimes::default();
    let loops = futures::future::join_all(cfg.runtimes.iter().map(|(kind, endpoint)| {
        let watch = Watch {
            reporter: reporter.clone(),
            cfg: cfg.clone(),
            db: db_rx.clone(),
            limits: Limits::default(),
            cache: Cache::default(),
            pending: Vec::new(),
            failed: failed.clone(),
        };
        watch_runtime(watch, *kind, endpoint.clone(), runtimes.clone())
    }));
    let refresh_db = keep_db_fresh(
        fetcher,
        reporter.clone(),
        refused,
        db_tx,
        cfg.refresh,
        cfg.vuln_db_refresh,
    );
    let node = crate::node::report_loop(
        client,
        reporter,
        cfg.node.clone(),
        cfg.host.clone(),
        runtimes,
        cfg.refresh,
    );
    tokio::select! {
        _ = loops => Ok(()),
        () = refresh_db => Ok(()),
        () = node => Ok(()),
        () = shutdown => Ok(()),
    }
}

/// Asks the operator for a newer database every `every` (every `retry`
/// until a first one arrives); a failure keeps the current one. After
/// every attempt the sensor says which database it uses and the last one
/// it refused (`refused`, at first that of the first attempt), so the
/// Sensor's status shows pods that keep an old database.
async fn keep_db_fresh(
    fetcher: Option<Fetcher>,
    reporter: Reporter,
    mut refused: Option<sightline_report::DatabaseRefusal>,
    tx: tokio::sync::watch::Sender<Option<Arc<Database>>>,
    retry: Duration,
    every: Duration,
) {
    let Some(mut fetcher) = fetcher else {
        return std::future::pending().await;
    };
    loop {
        let said = crate::vulndb::state(tx.borrow().as_deref(), refused.clone());
        reporter.send_database(said).await;
        let wait = if tx.borrow().is_none() { retry } else { every };
        tokio::time::sleep(wait).await;
        match fetcher.refresh().await {
            Ok(Some(fetched)) => {
                info!(
                    advisories = fetched.meta.advisories,
                    built = %fetched.meta.built,
                    "new vulnerability database; matching every image again"
                );
                tx.send_replace(Some(Arc::new(fetched)));
                refused = None;
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "cannot refresh the vulnerability database; keeping the current one");
                if let Some(r) = e.refusal() {
                    refused = Some(r);
                }
            }
        }
    }
}

/// One runtime's loop: connect (backing off while it is down), scan
/// everything, then follow its events until the stream breaks, and again.
async fn watch_runtime(
    mut watch: Watch,
    kind: sightline_crds::sensor::RuntimeKind,
    endpoint: String,
    runtimes: crate::node::Runtimes,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let engine = match Engine::connect(kind, &endpoint).await {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "cannot reach the container runtime");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        backoff = Duration::from_secs(1);
        let version = engine.version().await.unwrap_or_default();
        info!(runtime = engine.kind(), endpoint = %endpoint, version = %version, "watching the container runtime");
        // The node's Asset lists its runtimes.
        if let Ok(mut r) = runtimes.lock() {
            r.insert(engine.kind().to_owned(), version);
        }
        // Subscribe first, so nothing that happens during the scan is missed.
        let mut changes = engine.changes();
        watch.full_scan(&engine).await;
        let mut refresh = tokio::time::interval(watch.cfg.refresh);
        refresh.tick().await;
        let mut db = watch.db.clone();
        db.mark_unchanged();
        loop {
            tokio::select! {
                change = changes.next() => match change {
                    Some(Ok(Change::Image(id))) if watch.cfg.on_pull => watch.image(&engine, &id).await,
                    Some(Ok(Change::ContainerStarted(id))) => watch.containers(&engine, Some(&id)).await,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        warn!(error = %e, "the runtime's event stream failed; reconnecting");
                        break;
                    }
                    None => {
                        warn!(runtime = engine.kind(), "the runtime closed the event stream; reconnecting");
                        break;
                    }
                },
                _ = refresh.tick() => watch.full_scan(&engine).await,
                changed = db.changed() => {
                    if changed.is_err() {
                        // The database task ended: the sensor is stopping.
                        return;
                    }
                    watch.full_scan(&engine).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_images_wait_longer_each_time_and_a_new_version_tries_again() {
        let t0: jiff::Timestamp = "2026-12-07T00:00:00Z".parse().expect("time");
        let first = Failed::next(None, "bad".into(), t0);
        assert_eq!(first.attempts, 1);
        assert_eq!(first.retry_after.to_string(), "2026-12-07T00:15:00Z");
        assert!(!first.due(t0));
        assert!(first.due(first.retry_after));
        let second = Failed::next(Some(&first), "bad".into(), first.retry_after);
        assert_eq!(second.attempts, 2);
        assert_eq!(second.retry_after.to_string(), "2026-12-07T00:45:00Z");
        let mut f = second.clone();
        for _ in 0..20 {
            f = Failed::next(Some(&f), "bad".into(), t0);
        }
        assert_eq!(
            f.retry_after.to_string(),
            "2026-12-08T00:00:00Z",
            "a day at most"
        );
        // Kept on the Asset and read back as it was.
        assert_eq!(Failed::from_facts(&second.facts()), Some(second.clone()));
        // Another version of the sensor tries again, counting from one.
        let older = Failed {
            sensor_version: "0.0.1".into(),
            ..second
        };
        assert!(older.due(t0));
        assert_eq!(Failed::next(Some(&older), "bad".into(), t0).attempts, 1);
    }
}
