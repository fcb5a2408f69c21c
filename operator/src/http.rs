//! `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Metrics;
use crate::search::{Access, Authorizer, authorize_for};

/// What the health endpoints report.
#[derive(Clone)]
pub struct Health {
    /// Ready: started, and either standing by or leading with controllers running.
    pub ready: Arc<AtomicBool>,
}

/// `/healthz` and `/readyz`: open, for the kubelet's probes.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

/// What `/metrics` serves, and whom to.
#[derive(Clone)]
pub struct MetricsState {
    /// Metrics to expose.
    pub metrics: Metrics,
    /// When set, only callers whose bearer token may `get` the
    /// non-resource URL `/metrics` are served.
    pub auth: Option<Arc<Authorizer>>,
}

/// `/metrics`.
pub fn metrics_router(state: MetricsState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    if h.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(s): State<MetricsState>, headers: HeaderMap) -> Response {
    if let Some(auth) = &s.auth
        && let Err(refused) = authorize_for(auth, &headers, Access::ReadMetrics).await
    {
        return refused;
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}
