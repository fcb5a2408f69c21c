//! The ingestion API, `/api/v1/observations`: every sensor, the CLI's
//! `--report` and agents outside the cluster send what they see here,
//! and the operator is the only writer of Asset status.
//!
//! - `POST` a [`sightline_report::Report`]: the caller is authenticated
//!   ([`auth`]), held to its budget ([`limits`], 429 with `Retry-After`),
//!   its body bounded (413) and checked against the contract (400, naming
//!   the field), each observation admitted by [`policy`] and written by
//!   [`writer`]; the answer is a [`sightline_report::Receipt`].
//! - `GET ?kind=ContainerImage`: the images the caller reported before.
//!
//! Only the leader replica takes reports (one writer orders the writes
//! of each Asset); standbys answer 503 with `Retry-After: 1`, which the
//! client waits out. Which nodes hold which image is kept in the detail
//! store when there is one ([`holdings`]), so a new leader knows it.

pub mod auth;
pub mod databases;
pub mod holdings;
pub mod limits;
pub mod policies;
pub mod policy;
pub mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sightline_report::{
    Accepted, ApiError, INGEST_PATH, MAX_BODY_BYTES, Receipt, RecordedList, Refused, Report,
};

use crate::metrics::Metrics;
use auth::{Authenticator, Caller, Denied};
use limits::{Limiter, Rate};
use writer::{WriteError, Writer};

/// What the endpoint needs.
pub struct IngestState {
    /// Writes policy status.
    pub client: kube::Client,
    /// Who is calling.
    pub auth: Arc<Authenticator>,
    /// Request budgets.
    pub limiter: Limiter,
    /// The writer.
    pub writer: Writer,
    /// Whether this replica leads (and so takes reports).
    pub leading: Arc<AtomicBool>,
    /// Counts reports and refusals.
    pub metrics: Metrics,
    /// The detail store, whose holdings receipts report.
    pub store: Option<crate::store::Store>,
    /// What Sensors' pods say of their databases.
    pub databases: databases::Databases,
}

impl IngestState {
    /// The endpoint's state: keys' tokens from `namespace`, budgets of `rate`.
    pub fn new(
        client: kube::Client,
        namespace: String,
        index: crate::search::SharedIndex,
        rate: Rate,
        leading: Arc<AtomicBool>,
        metrics: Metrics,
        store: Option<crate::store::Store>,
    ) -> Self {
        Self {
            client: client.clone(),
            auth: Arc::new(Authenticator::new(client.clone(), namespace)),
            limiter: Limiter::new(rate),
            writer: Writer::new(client.clone(), index, store.clone()),
            databases: databases::Databases::new(client, metrics.clone()),
            leading,
            metrics,
            store,
        }
    }

    /// Whether the store holds `caller`'s details of `asset`; `None`
    /// without a store, or when it cannot say (the caller then sends
    /// nothing again on its account).
    async fn details_kept(&self, caller: &Caller, asset: &str) -> Option<bool> {
        let store = self.store.as_ref()?;
        match store.has(asset, &caller.source()).await {
            Ok(kept) => Some(kept),
            Err(e) => {
                tracing::warn!(error = %e, %asset, "asking the detail store");
                None
            }
        }
    }
}

/// Serves the ingestion API alone on `listener`, as the leader, with its
/// own Asset index and, when given, a detail store (without one the
/// detail routes answer 501): for tests, which run sensors against a
/// control plane without the whole operator.
pub async fn serve_standalone(
    client: kube::Client,
    namespace: String,
    listener: tokio::net::TcpListener,
    store: Option<crate::store::Store>,
) -> std::io::Result<()> {
    let index = crate::search::SharedIndex::default();
    let synced = Arc::new(AtomicBool::new(false));
    tokio::spawn(crate::search::feed(client.clone(), index.clone(), synced));
    let leading = Arc::new(AtomicBool::new(true));
    let state = Arc::new(IngestState::new(
        client.clone(),
        namespace,
        index,
        Rate {
            per_second: 50.0,
            burst: 500.0,
        },
        leading.clone(),
        Metrics::default(),
        store.clone(),
    ));
    let details = match store {
        Some(store) => crate::details::router(Arc::new(crate::details::DetailsState::new(
            store,
            state.clone(),
            Arc::new(crate::search::Authorizer::new(client.clone())),
            leading,
            client,
        ))),
        None => crate::details::unconfigured(),
    };
    axum::serve(listener, router(state).merge(details)).await
}

/// The routes.
pub fn router(state: Arc<IngestState>) -> Router {
    Router::new()
        .route(INGEST_PATH, get(recorded).post(receive))
        .with_state(state)
}

pub(crate) fn reply(status: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(ApiError {
            error: message.into(),
            reason: reason.to_owned(),
        }),
    )
        .into_response()
}

pub(crate) fn retry_after(mut r: Response, seconds: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Authenticates the caller and takes a request from its budget; returns
/// it with its key's asset limit.
pub(crate) async fn admit(
    state: &IngestState,
    headers: &HeaderMap,
) -> Result<(Caller, Option<i64>), Response> {
    if !state.leading.load(Ordering::Relaxed) {
        let mut r = retry_after(
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "NotLeader",
                "this replica is a standby; the leader takes reports",
            ),
            1,
        );
        // A new connection may reach the leader through the Service; this
        // one would reach this replica again.
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Err(r);
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(reply(
            StatusCode::UNAUTHORIZED,
            "Unauthenticated",
            "send a sensor's projected ServiceAccount token or an activation key's token as Authorization: Bearer",
        ));
    };
    let (caller, max_assets) = state.auth.admit(token).await.map_err(|d| match d {
        Denied::Unauthenticated(why) => reply(StatusCode::UNAUTHORIZED, "Unauthenticated", why),
        Denied::Forbidden(why) => reply(StatusCode::FORBIDDEN, "Forbidden", why),
        Denied::Unavailable(why) => retry_after(
            reply(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", why),
            2,
        ),
    })?;
    if let Err(wait) = state.limiter.take(&caller.identity()) {
        state.metrics.ingest_refused("RateLimited");
        return Err(retry_after(
            reply(
                StatusCode::TOO_MANY_REQUESTS,
                "RateLimited",
                format!(
                    "{} is over its request budget; retry in {:.1} s",
                    caller.identity(),
                    wait.as_secs_f64()
                ),
            ),
            wait.as_secs_f64().ceil() as u64,
        ));
    }
    Ok((caller, max_assets))
}

async fn receive(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (caller, max_assets) = match admit(&state, &headers).await {
        Ok(c) => c,
        Err(r) => {
            // Read (and drop) what the caller is sending, so it gets the
            // refusal rather than a reset connection.
            let _ = read_bounded(&headers, body, MAX_BODY_BYTES).await;
            return r;
        }
    };
    let bytes = match read_bounded(&headers, body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(seen) => {
            state.metrics.ingest_refused("TooLarge");
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "TooLarge",
                format!(
                    "a report may have at most {MAX_BODY_BYTES} bytes; this one has {seen} or more"
                ),
            );
        }
    };
    let report = match Report::from_body(&bytes) {
        Ok(r) => r,
        Err(e) => {
            state.metrics.ingest_refused("Invalid");
            return reply(StatusCode::BAD_REQUEST, "Invalid", e.to_string());
        }
    };
    let mut receipt = Receipt::default();
    for (index, o) in report.observations.iter().enumerate() {
        let outcome = match policy::decide(&caller, o) {
            Ok(()) => state.writer.write(&caller, o, max_assets).await,
            Err(r) => Err(WriteError::Refused(r)),
        };
        match outcome {
            Ok(asset) => {
                state.metrics.ingest_accepted();
                let details_kept = match o {
                    sightline_report::Observation::ContainerImage(_) => {
                        state.details_kept(&caller, &asset).await
                    }
                    _ => None,
                };
                receipt.accepted.push(Accepted {
                    index,
                    asset,
                    details_kept,
                });
            }
            Err(WriteError::Refused(r)) => {
                state.metrics.ingest_refused(r.reason);
                tracing::info!(caller = %caller.identity(), index, reason = r.reason, "refused an observation: {}", r.message);
                receipt.refused.push(Refused {
                    index,
                    reason: r.reason.to_owned(),
                    message: r.message,
                });
            }
            Err(e) => return unavailable(&e, "writing Assets"),
        }
    }
    for (index, p) in report.policies.iter().enumerate() {
        match policies::write(&state.client, &caller, p).await {
            Ok(()) => {}
            Err(WriteError::Refused(r)) => {
                state.metrics.ingest_refused(r.reason);
                tracing::info!(caller = %caller.identity(), index, reason = r.reason, "refused a policy report: {}", r.message);
                receipt.policies_refused.push(Refused {
                    index,
                    reason: r.reason.to_owned(),
                    message: r.message,
                });
            }
            Err(e) => return unavailable(&e, "writing RuntimePolicy status"),
        }
    }
    if let Some(d) = &report.database {
        match state.databases.report(&caller, d).await {
            Ok(()) => {}
            Err(WriteError::Refused(r)) => {
                state.metrics.ingest_refused(r.reason);
                receipt.database_refused = Some(Refused {
                    index: 0,
                    reason: r.reason.to_owned(),
                    message: r.message,
                });
            }
            Err(e) => return unavailable(&e, "writing Sensor status"),
        }
    }
    if let Some(listing) = &report.listing {
        match state.writer.listing(&caller, listing).await {
            Ok(n) if n > 0 => {
                tracing::debug!(caller = %caller.identity(), left = n, "images left the node");
            }
            Ok(_) => {}
            Err(WriteError::Refused(r)) => {
                return reply(StatusCode::BAD_REQUEST, r.reason, r.message);
            }
            Err(e) => return unavailable(&e, "writing Assets"),
        }
    }
    (StatusCode::OK, axum::Json(receipt)).into_response()
}

/// 503 with `Retry-After` for a write the API server or the detail store
/// failed (a refusal is answered in the receipt, never here).
fn unavailable(e: &WriteError, doing: &str) -> Response {
    let why = match e {
        WriteError::Api(e) => e.to_string(),
        WriteError::Store(e) => e.to_string(),
        WriteError::Refused(r) => r.message.clone(),
    };
    retry_after(
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            format!("{doing}: {why}"),
        ),
        2,
    )
}

/// Past the bound, a body is read and dropped up to this many bytes more,
/// so the caller gets its 413 instead of a reset connection; beyond it the
/// connection is simply closed.
const DRAIN_BYTES: u64 = 16 << 20;

/// The body if it has at most `limit` bytes; otherwise how many bytes
/// were seen. Never holds more than the bound in memory.
pub(crate) async fn read_bounded(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, u64> {
    let drain = limit as u64 + DRAIN_BYTES;
    use futures::StreamExt;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > drain) {
        return Err(n);
    }
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let mut seen: u64 = 0;
    let mut over = false;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return Err(seen);
        };
        seen += chunk.len() as u64;
        if over || seen > limit as u64 {
            over = true;
            buf.clear();
            if seen > drain {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if over { Err(seen) } else { Ok(buf.freeze()) }
}

async fn recorded(State(state): State<Arc<IngestState>>, headers: HeaderMap) -> Response {
    let caller = match admit(&state, &headers).await {
        Ok((c, _)) => c,
        Err(r) => return r,
    };
    match state.writer.recorded(&caller).await {
        Ok(mut images) => {
            if let Some(store) = &state.store {
                match store.kept_by(&caller.source(), None).await {
                    Ok(kept) => {
                        for i in &mut images {
                            let asset = sightline_crds::asset::asset_name(
                                sightline_crds::AssetKind::ContainerImage,
                                &i.identity,
                            );
                            i.details_kept = Some(kept.contains(&asset));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "asking the detail store"),
                }
            }
            axum::Json(RecordedList { images }).into_response()
        }
        Err(e) => retry_after(
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                format!("reading Assets: {e}"),
            ),
            2,
        ),
    }
}
