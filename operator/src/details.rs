//! The detail store's API.
//!
//! - `POST /api/v1/details`: a sensor (container or registry) or a key's
//!   CI report sends an image's whole analysis and findings, after its
//!   observation was accepted. The caller is authenticated and held to its
//!   budget as for reports; it may send details only of an image whose
//!   Asset lists it as a source, and they are kept as that source's.
//!   Bodies are bounded ([`MAX_DETAILS_BYTES`], 413), only
//!   [`UPLOADS_AT_ONCE`] are read at a time (429 beyond), so memory stays
//!   bounded however many sensors send at once, and each must arrive within
//!   [`BODY_TIMEOUT`] (408), so a slow sender cannot hold a slot.
//! - `GET /api/v1/assets/{name}/sbom?format=cyclonedx-json|spdx-json`,
//!   `.../vulnerabilities` and `.../findings`: to callers who may `get`
//!   Assets (TokenReview and SubjectAccessReview, as `kubectl get asset`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::Api;
use serde::Deserialize;
use sightline_crds::{Asset, SensorType};
use sightline_report::details::{
    DETAILS_PATH, DetailsReceipt, FindingHistory, HistoryEntry, ImageDetails, MAX_DETAILS_BYTES,
    SBOM_FORMATS, VulnerabilityList,
};

use crate::ingest::auth::Caller;
use crate::ingest::{IngestState, admit, read_bounded, reply, retry_after};
use crate::search::{Access, Authorizer, authorize_for};
use crate::store::{Store, StoreError};

/// Details bodies read at once; more wait their turn (429).
pub const UPLOADS_AT_ONCE: usize = 2;

/// Longest a details body may take to arrive (32 MiB at ~1 MiB/s).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the endpoints need.
pub struct DetailsState {
    /// The store.
    pub store: Store,
    /// Authenticates sensors and keys, and holds their budgets.
    pub ingest: Arc<IngestState>,
    /// Checks users.
    pub auth: Arc<Authorizer>,
    /// Whether this replica leads (with SQLite, only it holds the file).
    pub leading: Arc<AtomicBool>,
    /// Reads Assets.
    pub client: kube::Client,
    uploads: tokio::sync::Semaphore,
}

impl DetailsState {
    /// The endpoints' state.
    pub fn new(
        store: Store,
        ingest: Arc<IngestState>,
        auth: Arc<Authorizer>,
        leading: Arc<AtomicBool>,
        client: kube::Client,
    ) -> Self {
        Self {
            store,
            ingest,
            auth,
            leading,
            client,
            uploads: tokio::sync::Semaphore::new(UPLOADS_AT_ONCE),
        }
    }
}

/// The routes.
pub fn router(state: Arc<DetailsState>) -> Router {
    Router::new()
        .route(DETAILS_PATH, post(receive))
        .route("/api/v1/assets/{name}/sbom", get(sbom))
        .route(
            "/api/v1/assets/{name}/vulnerabilities",
            get(vulnerabilities),
        )
        .route("/api/v1/assets/{name}/findings", get(findings))
        .with_state(state)
}

/// The routes of an operator that keeps no details: each says so.
pub fn unconfigured() -> Router {
    async fn none() -> Response {
        reply(
            StatusCode::NOT_IMPLEMENTED,
            "NoDetailStore",
            "this operator keeps no image details (it runs without --detail-store)",
        )
    }
    Router::new()
        .route(DETAILS_PATH, post(none))
        .route("/api/v1/assets/{name}/sbom", get(none))
        .route("/api/v1/assets/{name}/vulnerabilities", get(none))
        .route("/api/v1/assets/{name}/findings", get(none))
}

fn unavailable(e: &StoreError) -> Response {
    tracing::warn!(error = %e, "the detail store failed");
    retry_after(
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "StoreUnavailable",
            e.to_string(),
        ),
        2,
    )
}

async fn receive(
    State(state): State<Arc<DetailsState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = match admit(&state.ingest, &headers).await {
        Ok((caller, _)) => caller,
        Err(r) => return r,
    };
    let allowed = match &caller {
        Caller::Key { .. } => true,
        Caller::Sensor { sensor_type, .. } => {
            matches!(sensor_type, SensorType::Container | SensorType::Registry)
        }
    };
    if !allowed {
        state.ingest.metrics.ingest_refused("KindNotAllowed");
        return reply(
            StatusCode::FORBIDDEN,
            "KindNotAllowed",
            format!("{} may not send image details", caller.identity()),
        );
    }
    // Taken before the body is read: at most this many bodies in memory.
    let Ok(_permit) = state.uploads.try_acquire() else {
        state.ingest.metrics.ingest_refused("Busy");
        return retry_after(
            reply(
                StatusCode::TOO_MANY_REQUESTS,
                "Busy",
                "other image details are being stored; send again shortly",
            ),
            1,
        );
    };
    // A sender that trickles its body would hold an upload slot: it has
    // BODY_TIMEOUT to finish.
    let read = tokio::time::timeout(
        BODY_TIMEOUT,
        read_bounded(&headers, body, MAX_DETAILS_BYTES),
    );
    let bytes = match read.await {
        Err(_) => {
            state.ingest.metrics.ingest_refused("Timeout");
            return reply(
                StatusCode::REQUEST_TIMEOUT,
                "Timeout",
                format!(
                    "the details did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            );
        }
        Ok(Ok(b)) => b,
        Ok(Err(seen)) => {
            state.ingest.metrics.ingest_refused("TooLarge");
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "TooLarge",
                format!(
                    "image details may have at most {MAX_DETAILS_BYTES} bytes; these have {seen} or more"
                ),
            );
        }
    };
    let details = match ImageDetails::from_body(&bytes) {
        Ok(d) => d,
        Err(e) => {
            state.ingest.metrics.ingest_refused("Invalid");
            return reply(StatusCode::BAD_REQUEST, "Invalid", e.to_string());
        }
    };
    drop(bytes);
    let asset = details.asset_name();
    let source = caller.source();
    // Details belong to an image this caller reported: no source stores
    // details of images it never saw, or as another source.
    let api: Api<Asset> = Api::all(state.client.clone());
    let reported = match api.get_opt(&asset).await {
        Ok(a) => a
            .and_then(|a| a.status)
            .is_some_and(|s| s.sources.iter().any(|x| x.sensor == source)),
        Err(e) => {
            return retry_after(
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    format!("reading Asset {asset}: {e}"),
                ),
                2,
            );
        }
    };
    if !reported {
        state.ingest.metrics.ingest_refused("NotReported");
        return reply(
            StatusCode::CONFLICT,
            "NotReported",
            format!(
                "{} has not reported image {} (Asset {asset}); report its observation first",
                caller.identity(),
                details.identity
            ),
        );
    }
    match state
        .store
        .put(&asset, &source, jiff::Timestamp::now(), &details)
        .await
    {
        Ok(changed) => {
            tracing::debug!(%asset, %source, changed, packages = details.image.analysis.packages.len(), "kept image details");
            axum::Json(DetailsReceipt {
                asset,
                packages: details.image.analysis.packages.len(),
                vulnerabilities: details.vulnerabilities.as_ref().map(Vec::len),
            })
            .into_response()
        }
        Err(e) => unavailable(&e),
    }
}

/// Checks a reader, and that this replica holds the store.
async fn reader(state: &DetailsState, headers: &HeaderMap, name: &str) -> Result<(), Response> {
    authorize_for(&state.auth, headers, Access::GetAssets).await?;
    if !state.store.shared() && !state.leading.load(Ordering::Relaxed) {
        let mut r = retry_after(
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "NotLeader",
                "this replica is a standby; the leader holds the detail store",
            ),
            1,
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Err(r);
    }
    if !is_object_name(name) {
        return Err(reply(
            StatusCode::BAD_REQUEST,
            "Invalid",
            format!("{name:?} is not an Asset name"),
        ));
    }
    Ok(())
}

/// Whether `name` can name an object (a DNS subdomain).
fn is_object_name(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
}

/// Query parameters of the detail reads.
#[derive(Deserialize)]
pub struct DetailParams {
    /// SBOM format: `cyclonedx-json` (default) or `spdx-json`.
    pub format: Option<String>,
    /// Whose details (`<namespace>/<sensor>`, `ci/<key>`); the latest when absent.
    pub source: Option<String>,
}

async fn latest(
    state: &DetailsState,
    name: &str,
    source: Option<&str>,
) -> Result<crate::store::Stored, Response> {
    match state.store.latest(name, source).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(reply(
            StatusCode::NOT_FOUND,
            "NotFound",
            match source {
                Some(src) => format!("{src} has sent no details of Asset {name}"),
                None => format!(
                    "no details of Asset {name} are stored (no sensor has sent them, or it is not an image)"
                ),
            },
        )),
        Err(e) => Err(unavailable(&e)),
    }
}

async fn sbom(
    State(state): State<Arc<DetailsState>>,
    Path(name): Path<String>,
    Query(params): Query<DetailParams>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = reader(&state, &headers, &name).await {
        return r;
    }
    let format = params.format.as_deref().unwrap_or(SBOM_FORMATS[0]);
    if !SBOM_FORMATS.contains(&format) {
        return reply(
            StatusCode::BAD_REQUEST,
            "Invalid",
            format!(
                "format {format:?} is not served; ask for one of {}",
                SBOM_FORMATS.join(", ")
            ),
        );
    }
    let stored = match latest(&state, &name, params.source.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let tool = sightline_scan::sbom::Tool {
        name: "sightline".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    // Stamped with when the details were reported, so the same details
    // always give the same document.
    let at = stored.reported.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let document = if format == "spdx-json" {
        sightline_scan::sbom::spdx(&stored.image, &tool, &at)
    } else {
        let mut doc = sightline_scan::sbom::cyclonedx(&stored.image, &tool, &at);
        // The findings the same source sent, when it matched the image.
        if let Some(findings) = &stored.vulnerabilities {
            sightline_scan::sbom::add_vulnerabilities(&mut doc, findings);
        }
        doc
    };
    let mut r = axum::Json(document).into_response();
    if let Ok(v) = HeaderValue::from_str(&stored.source) {
        r.headers_mut().insert("sightline-source", v);
    }
    r
}

async fn vulnerabilities(
    State(state): State<Arc<DetailsState>>,
    Path(name): Path<String>,
    Query(params): Query<DetailParams>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = reader(&state, &headers, &name).await {
        return r;
    }
    let stored = match latest(&state, &name, params.source.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    axum::Json(VulnerabilityList {
        asset: name,
        source: stored.source,
        reported: stored.reported.to_string(),
        matched: stored.vulnerabilities.is_some(),
        findings: stored.vulnerabilities.unwrap_or_default(),
    })
    .into_response()
}

async fn findings(
    State(state): State<Arc<DetailsState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = reader(&state, &headers, &name).await {
        return r;
    }
    let rows = match state.store.history(&name).await {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let stamp = |t: jiff::Timestamp| t.to_string();
    axum::Json(FindingHistory {
        asset: name,
        findings: rows
            .into_iter()
            .map(|r| HistoryEntry {
                source: r.source,
                id: r.id,
                package: r.package,
                version: r.version,
                severity: r.severity,
                fixed: r.fixed,
                first_seen: stamp(r.first_seen),
                last_seen: stamp(r.last_seen),
                resolved: r.resolved.map(stamp),
            })
            .collect(),
    })
    .into_response()
}

/// Drops what is stored for Assets no longer in the inventory, every
/// `every`, while this replica leads and the index is complete.
pub async fn sweep(
    store: Store,
    index: crate::search::SharedIndex,
    synced: Arc<AtomicBool>,
    leading: Arc<AtomicBool>,
    every: std::time::Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !leading.load(Ordering::Relaxed) || !synced.load(Ordering::Relaxed) {
            continue;
        }
        let stored = match store.assets().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "listing the detail store's Assets");
                continue;
            }
        };
        let gone: Vec<String> = {
            let index = crate::search::read(&index);
            stored.into_iter().filter(|a| !index.contains(a)).collect()
        };
        for asset in gone {
            match store.forget(&asset).await {
                Ok(()) => {
                    tracing::info!(%asset, "dropped the details of an Asset that left the inventory")
                }
                Err(e) => tracing::warn!(%asset, error = %e, "dropping details"),
            }
        }
    }
}
