//! `GET /api/v1/vulndb`: the vulnerability database file (`--vuln-db`)
//! for the container sensors, with an `ETag` (the file's sha256) so a
//! sensor whose copy is current gets a `304 Not Modified` and nothing
//! else. Sensors authenticate as they do to report (their pod's token for
//! audience `sightline`, or a key's token); users as for search (a bearer
//! token allowed to list Assets).
//!
//! The file is a database (`sightline db update|import`) or, when keys
//! are pinned (`--bundle-key`), only a signed bundle (`sightline bundle
//! export`) whose signature and members check out against them; the
//! sensors are given the same keys and check it again. A bundle that
//! carries the asset catalog replaces the built-in one when it is not
//! older. The file is checked before it is served, and again whenever it
//! changes on disk, so a half-written, foreign or unsigned file is never
//! handed out: the last good one is served instead, and the refusal is
//! logged and counted (`sightline_operator_vulndb_refusals_total`).
//!
//! `PUT /api/v1/vulndb` (`sightline bundle import`) takes a signed bundle
//! from a caller allowed to `create bundles.sightline.dev`, checks it, and
//! puts it in place of the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use sightline_inventory::catalog::Catalog;
use sightline_scan::bundle::{self, BundleError, PublicKey};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::ingest::auth::Authenticator;
use crate::metrics::Metrics;
use crate::search::{Access, Authorizer, authorize, authorize_for};

/// Largest bundle taken by `PUT`.
const MAX_BUNDLE_BYTES: u64 = 8 << 30;
/// Largest catalog document read from a bundle.
const MAX_CATALOG_BYTES: u64 = 16 << 20;
/// How long an upload may take.
const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);

/// The served file, as last read and checked.
struct Loaded {
    modified: Option<SystemTime>,
    len: u64,
    etag: String,
    bytes: bytes::Bytes,
    /// What the bundle said, when the file is one.
    bundle: Option<bundle::Manifest>,
}

/// Where a bundle's catalog goes.
pub struct CatalogSink {
    /// The built-in catalog's version: an older bundle's is not used.
    pub builtin_version: String,
    /// The catalog the inventory uses.
    pub tx: tokio::sync::watch::Sender<Arc<Catalog>>,
}

/// Where the sensor image a bundle pins goes.
pub struct ImageSink {
    /// Which images sensors may run: a bundle pinning another is refused.
    pub policy: crate::controllers::sensor::policy::SensorPolicy,
    /// The image Sensors that name none run (`None`: the operator's default).
    pub tx: tokio::sync::watch::Sender<Option<String>>,
}

/// The bundle's image named this runs the sensors.
pub const SENSOR_IMAGE: &str = "sensor";

/// The endpoint's state.
pub struct VulnDbState {
    path: Option<PathBuf>,
    keys: Vec<PublicKey>,
    catalog: Option<CatalogSink>,
    images: Option<ImageSink>,
    metrics: Metrics,
    auth: Arc<Authorizer>,
    sensors: Arc<Authenticator>,
    loaded: Mutex<Option<Loaded>>,
    importing: tokio::sync::Semaphore,
}

impl VulnDbState {
    /// Serves `path` (none: the endpoint says so) to the sensors and keys
    /// `sensors` admits and the users `auth` admits; with `keys`, only
    /// bundles they signed.
    pub fn new(
        path: Option<PathBuf>,
        keys: Vec<PublicKey>,
        auth: Arc<Authorizer>,
        sensors: Arc<Authenticator>,
        metrics: Metrics,
    ) -> Self {
        Self {
            path,
            keys,
            catalog: None,
            images: None,
            metrics,
            auth,
            sensors,
            loaded: Mutex::new(None),
            importing: tokio::sync::Semaphore::new(1),
        }
    }

    /// Sends the catalog of each bundle taken in to `sink`.
    pub fn with_catalog(mut self, sink: CatalogSink) -> Self {
        self.catalog = Some(sink);
        self
    }

    /// Sends the sensor image each bundle taken in pins (by digest) to
    /// `sink`; a bundle pinning an image `sink.policy` does not allow is
    /// refused on import.
    pub fn with_sensor_image(mut self, sink: ImageSink) -> Self {
        self.images = Some(sink);
        self
    }

    /// Why the operator cannot run the sensor image `m` pins, if it cannot.
    fn image_refusal(&self, m: &bundle::Manifest) -> Option<Refusal> {
        let sink = self.images.as_ref()?;
        let image = m.images.get(SENSOR_IMAGE)?;
        let e = sink.policy.check_image(image).err()?;
        Some(Refusal::new(
            "image",
            format!("the bundle pins sensor image {e}"),
        ))
    }

    /// Runs sensors from the image the bundle in use pins, or the
    /// operator's default when it pins none (or one not allowed).
    fn take_image(&self, m: Option<&bundle::Manifest>) {
        let Some(sink) = &self.images else {
            return;
        };
        let pinned = match m {
            Some(m) => match self.image_refusal(m) {
                Some(r) => {
                    tracing::warn!(
                        reason = r.reason,
                        "{}; sensors keep the operator's default image",
                        r.message
                    );
                    None
                }
                None => m.images.get(SENSOR_IMAGE).cloned(),
            },
            None => None,
        };
        sink.tx.send_if_modified(|current| {
            if *current == pinned {
                return false;
            }
            match &pinned {
                Some(image) => {
                    tracing::info!(%image, "sensors run the image the signed bundle pins")
                }
                None => tracing::info!("sensors run the operator's default image"),
            }
            *current = pinned;
            true
        });
    }

    /// Reads and checks the file now (at start, so a bundle's catalog is
    /// used before the first sensor asks for the database).
    pub async fn preload(&self) {
        if self.path.is_some() {
            let mut loaded = self.loaded.lock().await;
            self.refresh(&mut loaded).await;
        }
    }

    /// Re-reads the file when it changed on disk; a file that fails its
    /// checks leaves the last good one in place.
    async fn refresh(&self, loaded: &mut Option<Loaded>) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let meta = tokio::fs::metadata(&path).await;
        let current = match (&meta, loaded.as_ref()) {
            (Ok(m), Some(l)) => l.len == m.len() && l.modified == m.modified().ok(),
            _ => false,
        };
        if current {
            return;
        }
        let keys = self.keys.clone();
        let checked = tokio::task::spawn_blocking(move || load(&path, &keys))
            .await
            .unwrap_or_else(|e| Err(Refusal::new("io", format!("loading: {e}"))));
        let path = self.path.as_deref().unwrap_or(Path::new("")).display();
        match checked {
            Ok((l, catalog)) => {
                match &l.bundle {
                    Some(m) => tracing::info!(
                        %path, etag = %l.etag, bytes = l.len, key = %m.key_id,
                        built = %m.database.built, advisories = m.database.advisories,
                        "signed vulnerability database bundle loaded"
                    ),
                    None => {
                        tracing::info!(%path, etag = %l.etag, bytes = l.len, "vulnerability database loaded")
                    }
                }
                if let Some(c) = catalog {
                    self.take_catalog(c);
                }
                self.take_image(l.bundle.as_ref());
                *loaded = Some(l);
            }
            Err(e) => {
                self.metrics.vulndb_refused(e.reason);
                if loaded.is_some() || meta.is_ok() {
                    tracing::error!(%path, reason = e.reason, error = %e.message, "vulnerability database refused; serving the last good one, if any");
                }
            }
        }
    }

    fn take_catalog(&self, catalog: Catalog) {
        let Some(sink) = &self.catalog else {
            return;
        };
        // Versions are dates (2026.12.07): later sorts later.
        if catalog.version() < sink.builtin_version.as_str() {
            tracing::warn!(
                bundle = catalog.version(),
                builtin = %sink.builtin_version,
                "the bundle's catalog is older than the built-in one; keeping the built-in one"
            );
            return;
        }
        if sink.tx.borrow().version() != catalog.version() {
            tracing::info!(
                version = catalog.version(),
                "catalog from the signed bundle in use; every Asset is normalized again"
            );
        }
        sink.tx.send_if_modified(|current| {
            let changed = current.version() != catalog.version();
            if changed {
                *current = Arc::new(catalog);
            }
            changed
        });
    }
}

/// Why a file or bundle was refused.
struct Refusal {
    reason: &'static str,
    message: String,
}

impl Refusal {
    fn new(reason: &'static str, message: String) -> Refusal {
        Refusal { reason, message }
    }
}

impl From<BundleError> for Refusal {
    fn from(e: BundleError) -> Refusal {
        Refusal::new(e.reason(), e.to_string())
    }
}

/// The routes.
pub fn router(state: Arc<VulnDbState>) -> Router {
    Router::new()
        .route("/api/v1/vulndb", get(serve).put(import))
        .with_state(state)
}

fn plain(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

fn no_database() -> Response {
    plain(
        StatusCode::NOT_FOUND,
        "this operator serves no vulnerability database (start it with --vuln-db FILE)".into(),
    )
}

async fn serve(State(state): State<Arc<VulnDbState>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    let sensor = !token.is_empty() && state.sensors.admit(token).await.is_ok();
    if !sensor && let Err(r) = authorize(&state.auth, &headers).await {
        return r;
    }
    if state.path.is_none() {
        return no_database();
    }
    let mut loaded = state.loaded.lock().await;
    state.refresh(&mut loaded).await;
    let Some(l) = loaded.as_ref() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            if state.keys.is_empty() {
                "no usable vulnerability database yet".into()
            } else {
                "no signed vulnerability database bundle yet (`sightline bundle import`)".into()
            },
        );
    };
    let etag = l.etag.clone();
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let media = if l.bundle.is_some() {
        bundle::MEDIA_TYPE
    } else {
        "application/octet-stream"
    };
    (
        StatusCode::OK,
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, media.to_owned()),
        ],
        Body::from(l.bytes.clone()),
    )
        .into_response()
}

/// `PUT`: a signed bundle in place of the served file.
async fn import(State(state): State<Arc<VulnDbState>>, headers: HeaderMap, body: Body) -> Response {
    if let Err(r) = authorize_for(&state.auth, &headers, Access::ImportBundles).await {
        return r;
    }
    let Some(path) = state.path.clone() else {
        return no_database();
    };
    if state.keys.is_empty() {
        return plain(
            StatusCode::CONFLICT,
            "this operator pins no bundle key (--bundle-key, the chart's vulnerabilityDatabase.bundleKeys), so it cannot check a bundle".into(),
        );
    }
    let Ok(_permit) = state.importing.try_acquire() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "60")],
            "another bundle is being imported",
        )
            .into_response();
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BUNDLE_BYTES) {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a bundle may be at most {MAX_BUNDLE_BYTES} bytes"),
        );
    }
    let upload = path.with_extension("upload");
    let received = tokio::time::timeout(UPLOAD_TIMEOUT, receive(body, &upload)).await;
    let failed = |status, message: String| {
        let upload = upload.clone();
        async move {
            let _ = tokio::fs::remove_file(&upload).await;
            plain(status, message)
        }
    };
    match received {
        Ok(Ok(())) => {}
        Ok(Err((status, message))) => return failed(status, message).await,
        Err(_) => {
            return failed(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the bundle did not arrive within {}s",
                    UPLOAD_TIMEOUT.as_secs()
                ),
            )
            .await;
        }
    }
    let keys = state.keys.clone();
    let check = upload.clone();
    let checked = tokio::task::spawn_blocking(move || load(&check, &keys))
        .await
        .unwrap_or_else(|e| Err(Refusal::new("io", format!("checking: {e}"))));
    // A bundle pinning a sensor image the operator may not run is refused
    // like one that does not check out.
    let checked =
        checked.and_then(
            |(l, c)| match l.bundle.as_ref().and_then(|m| state.image_refusal(m)) {
                Some(refusal) => Err(refusal),
                None => Ok((l, c)),
            },
        );
    let manifest = match checked {
        Ok((
            Loaded {
                bundle: Some(m), ..
            },
            _,
        )) => m,
        Ok(_) => {
            state.metrics.vulndb_refused("unsigned");
            return failed(
                StatusCode::BAD_REQUEST,
                "not a signed bundle (`sightline bundle export` makes one)".into(),
            )
            .await;
        }
        Err(e) => {
            state.metrics.vulndb_refused(e.reason);
            tracing::warn!(reason = e.reason, error = %e.message, "bundle import refused");
            return failed(
                StatusCode::BAD_REQUEST,
                format!("bundle refused: {}", e.message),
            )
            .await;
        }
    };
    if let Err(e) = tokio::fs::rename(&upload, &path).await {
        return failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("keeping the bundle at {}: {e}", path.display()),
        )
        .await;
    }
    // Served (and its catalog taken) from now on.
    let mut loaded = state.loaded.lock().await;
    state.refresh(&mut loaded).await;
    tracing::info!(key = %manifest.key_id, built = %manifest.database.built, "bundle imported");
    plain(
        StatusCode::OK,
        format!(
            "imported: database built {}, {} advisories, signed by key {}{}{}; sensors take it at their next refresh",
            manifest.database.built,
            manifest.database.advisories,
            manifest.key_id,
            manifest
                .catalog_version
                .as_deref()
                .map(|v| format!(", catalog {v}"))
                .unwrap_or_default(),
            manifest
                .images
                .get(SENSOR_IMAGE)
                .filter(|_| state.images.is_some())
                .map(|i| format!(", sensor image {i}"))
                .unwrap_or_default()
        ),
    )
}

/// Streams the request body to `path`, at most [`MAX_BUNDLE_BYTES`].
async fn receive(body: Body, path: &Path) -> Result<(), (StatusCode, String)> {
    let io = |e: std::io::Error| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("writing {}: {e}", path.display()),
        )
    };
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| (StatusCode::BAD_REQUEST, format!("reading the body: {e}")))?;
        written += chunk.len() as u64;
        if written > MAX_BUNDLE_BYTES {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a bundle may be at most {MAX_BUNDLE_BYTES} bytes"),
            ));
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)
}

/// Reads the file and checks it: with `keys`, a bundle they signed whose
/// database (and catalog, if any) read; without, a database.
fn load(path: &Path, keys: &[PublicKey]) -> Result<(Loaded, Option<Catalog>), Refusal> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| Refusal::new("io", format!("{shown}: {e}")))?;
    let bytes = std::fs::read(path).map_err(|e| Refusal::new("io", format!("{shown}: {e}")))?;
    let head = &bytes[..bytes.len().min(512)];
    let (manifest, catalog) = if bundle::looks_like_bundle(head) {
        if keys.is_empty() {
            return Err(Refusal::new(
                "no_key",
                format!(
                    "{shown} is a signed bundle, but no key is pinned to check it (--bundle-key)"
                ),
            ));
        }
        let (m, c) = check_bundle(&bytes, keys)?;
        (Some(m), c)
    } else if !keys.is_empty() {
        return Err(Refusal::new(
            "unsigned",
            format!(
                "{shown} is not a signed bundle, and bundle keys are pinned: only signed bundles are served"
            ),
        ));
    } else {
        sightline_scan::vuln::Database::read_from(&bytes[..], &shown)
            .map_err(|e| Refusal::new("database", e.to_string()))?;
        (None, None)
    };
    Ok((
        Loaded {
            modified: meta.modified().ok(),
            len: bytes.len() as u64,
            etag: etag_of(&bytes),
            bytes: bytes.into(),
            bundle: manifest,
        },
        catalog,
    ))
}

/// Checks a bundle: signature, members, the database reads, and the
/// catalog (when it carries one) loads.
fn check_bundle(
    bytes: &[u8],
    keys: &[PublicKey],
) -> Result<(bundle::Manifest, Option<Catalog>), Refusal> {
    let mut docs = std::collections::BTreeMap::new();
    let mut db_error = None;
    let manifest = bundle::verify(bytes, keys, |member, data| {
        if member.name == bundle::DATABASE {
            if let Err(e) =
                sightline_scan::vuln::Database::read_from(&mut *data, "the bundle's database")
            {
                db_error = Some(e.to_string());
            }
        } else if let Some(doc) = member.name.strip_prefix("catalog/") {
            let mut text = String::new();
            std::io::Read::read_to_string(
                &mut std::io::Read::take(&mut *data, MAX_CATALOG_BYTES),
                &mut text,
            )?;
            docs.insert(doc.to_owned(), text);
        }
        Ok(())
    })?;
    if let Some(e) = db_error {
        return Err(Refusal::new("database", e));
    }
    let catalog = match manifest.catalog_version {
        None => None,
        Some(_) => {
            let doc = |name: &str| docs.get(name).map(String::as_str).unwrap_or_default();
            let c = Catalog::from_yaml(
                doc("taxonomy.yaml"),
                doc("normalization.yaml"),
                doc("lifecycle.yaml"),
            )
            .map_err(|e| Refusal::new("catalog", format!("the bundle's catalog: {e}")))?;
            Some(c)
        }
    };
    Ok((manifest, catalog))
}

/// The file's ETag: its sha256.
fn etag_of(bytes: &[u8]) -> String {
    let digest: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"sha256:{digest}\"")
}
