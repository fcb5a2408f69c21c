//! The search API: an in-memory index of every Asset, fed by a watch, and
//! the HTTP endpoints that query it on behalf of authenticated users.
//!
//! Every replica keeps its own index and serves search, leader or not.
//! Callers present a bearer token (their kubeconfig's, or a ServiceAccount
//! token); the operator checks it with a TokenReview and asks a
//! SubjectAccessReview whether that user may `list` `assets.sightline.dev`,
//! so search never shows anyone more than `kubectl get assets` would.
//! Decisions are cached for [`AUTH_CACHE_TTL`] per token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sightline_crds::Asset;
use sightline_inventory::index::Index;

use crate::metrics::Metrics;

/// The index, shared by the watch that feeds it and the requests that read it.
pub type SharedIndex = Arc<RwLock<Index>>;

/// How long an authentication and authorization decision is reused.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(10);

/// Most hits a search returns unless asked for fewer.
pub const DEFAULT_LIMIT: usize = 500;

/// Most hits a search returns, whatever is asked.
pub const MAX_LIMIT: usize = 10_000;

/// Keeps `index` equal to the Assets in the cluster until the stream ends
/// (it does not: the watcher retries with backoff). `synced` turns true
/// once the first full list is in.
pub async fn feed(client: kube::Client, index: SharedIndex, synced: Arc<AtomicBool>) {
    let api: Api<Asset> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .boxed();
    // A relist builds a fresh index and swaps it in whole, so searches
    // never see a half-listed inventory.
    let mut pending: Option<Index> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => pending = Some(Index::bulk()),
            Ok(watcher::Event::InitApply(a)) => {
                if let Some(p) = pending.as_mut() {
                    p.upsert(&a);
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(mut p) = pending.take() {
                    p.finish_bulk();
                    *write(&index) = p;
                }
                synced.store(true, Ordering::Relaxed);
            }
            Ok(watcher::Event::Apply(a)) => write(&index).upsert(&a),
            Ok(watcher::Event::Delete(a)) => {
                write(&index).remove(a.metadata.name.as_deref().unwrap_or_default());
            }
            Err(e) => tracing::warn!(error = %e, "watching Assets for the search index"),
        }
    }
}

/// The index for writing (a poisoned lock still holds a usable index).
pub fn write(index: &SharedIndex) -> std::sync::RwLockWriteGuard<'_, Index> {
    index.write().unwrap_or_else(|p| p.into_inner())
}

/// The index for reading.
pub fn read(index: &SharedIndex) -> std::sync::RwLockReadGuard<'_, Index> {
    index.read().unwrap_or_else(|p| p.into_inner())
}

/// What the search endpoints need.
#[derive(Clone)]
pub struct SearchState {
    /// The index.
    pub index: SharedIndex,
    /// Whether the index holds a full list yet.
    pub synced: Arc<AtomicBool>,
    /// Checks callers.
    pub auth: Arc<Authorizer>,
    /// Metrics.
    pub metrics: Metrics,
}

/// The search routes: `GET /api/v1/search?q=…&limit=…` and `GET /api/v1/summary`.
pub fn router(state: SearchState) -> Router {
    Router::new()
        .route("/api/v1/search", get(search))
        .route("/api/v1/summary", get(summary))
        .with_state(state)
}

/// Query parameters of a search.
#[derive(Deserialize)]
pub struct SearchParams {
    /// The query.
    pub q: Option<String>,
    /// Most hits to return.
    pub limit: Option<usize>,
}

/// An error body.
#[derive(Serialize, Deserialize, Debug)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
    /// For query errors: the 1-based column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: message.into(),
            column: None,
        }),
    )
        .into_response()
}

/// What a caller asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Search the inventory (and fetch the vulnerability database):
    /// `list` on `assets.sightline.dev`.
    ListAssets,
    /// Read one Asset's details (SBOM, findings): `get` on
    /// `assets.sightline.dev`, as `kubectl get asset NAME` needs.
    GetAssets,
    /// Scrape the operator's metrics: `get` on the non-resource URL
    /// `/metrics`, as Kubernetes components ask of Prometheus.
    ReadMetrics,
    /// Replace the vulnerability database with a signed bundle: `create`
    /// on `bundles.sightline.dev` (a resource of RBAC only; no object is
    /// stored), which only cluster admins hold unless granted.
    ImportBundles,
}

impl Access {
    fn describe(self) -> &'static str {
        match self {
            Access::ListAssets => "list assets.sightline.dev",
            Access::GetAssets => "get assets.sightline.dev",
            Access::ReadMetrics => "get /metrics",
            Access::ImportBundles => "create bundles.sightline.dev",
        }
    }
}

/// Admits a caller whose bearer token may list Assets; the error response
/// otherwise.
pub async fn authorize(auth: &Authorizer, headers: &HeaderMap) -> Result<(), Response> {
    authorize_for(auth, headers, Access::ListAssets).await
}

/// Admits a caller whose bearer token may do `access`; the error response
/// otherwise.
pub async fn authorize_for(
    auth: &Authorizer,
    headers: &HeaderMap,
    access: Access,
) -> Result<(), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "send a bearer token (your kubeconfig's, or a ServiceAccount's)",
        ));
    };
    match auth.check(token, access).await {
        Decision::Allowed => Ok(()),
        Decision::Unauthenticated(why) => Err(error(StatusCode::UNAUTHORIZED, why)),
        Decision::Forbidden(why) => Err(error(StatusCode::FORBIDDEN, why)),
        Decision::Failed(why) => Err(error(StatusCode::SERVICE_UNAVAILABLE, why)),
    }
}

async fn guard(state: &SearchState, headers: &HeaderMap) -> Result<(), Response> {
    authorize(&state.auth, headers).await?;
    if !state.synced.load(Ordering::Relaxed) {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the search index is still loading Assets; try again shortly",
        ));
    }
    Ok(())
}

async fn search(
    State(state): State<SearchState>,
    headers: HeaderMap,
    Query(params): Query<SearchParams>,
) -> Response {
    if let Err(r) = guard(&state, &headers).await {
        return r;
    }
    let Some(q) = params.q.filter(|q| !q.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "missing query parameter q");
    };
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let now = jiff::Timestamp::now().as_second();
    let started = Instant::now();
    let result = read(&state.index).search(&q, now, limit);
    state
        .metrics
        .search_duration
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(r) => Json(r).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(ApiError {
                column: Some(e.column),
                error: e.to_string(),
            }),
        )
            .into_response(),
    }
}

async fn summary(State(state): State<SearchState>, headers: HeaderMap) -> Response {
    if let Err(r) = guard(&state, &headers).await {
        return r;
    }
    Json(read(&state.index).summary()).into_response()
}

/// The outcome of checking a caller.
#[derive(Clone, Debug)]
pub enum Decision {
    /// May search.
    Allowed,
    /// The token is not valid.
    Unauthenticated(String),
    /// Valid, but may not list Assets.
    Forbidden(String),
    /// The API server could not be asked.
    Failed(String),
}

/// TokenReview + SubjectAccessReview, with a short cache.
pub struct Authorizer {
    client: kube::Client,
    cache: Mutex<HashMap<DecisionKey, (Instant, Decision)>>,
}

/// A cached decision's key: the token's SHA-256 and the access asked for.
type DecisionKey = ([u8; 32], u8);

/// Most cached decisions; the cache is cleared when full.
const AUTH_CACHE_MAX: usize = 4096;

impl Authorizer {
    /// Checks callers with `client` (the operator's identity, which may
    /// create TokenReviews and SubjectAccessReviews).
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Mutex::default(),
        }
    }

    /// Whether the holder of `token` may do `access`.
    pub async fn check(&self, token: &str, access: Access) -> Decision {
        let key: DecisionKey = (Sha256::digest(token.as_bytes()).into(), access as u8);
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, d)) = cache.get(&key)
                && at.elapsed() < AUTH_CACHE_TTL
            {
                return d.clone();
            }
        }
        let decision = self.ask(token, access).await;
        // Failures to reach the API server are not cached: the next request asks again.
        if !matches!(decision, Decision::Failed(_)) {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= AUTH_CACHE_MAX {
                cache.clear();
            }
            cache.insert(key, (Instant::now(), decision.clone()));
        }
        decision
    }

    async fn ask(&self, token: &str, access: Access) -> Decision {
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..Default::default()
        };
        let review = match reviews.create(&PostParams::default(), &review).await {
            Ok(r) => r,
            Err(e) => return Decision::Failed(format!("reviewing the token: {e}")),
        };
        let status = review.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "the token is not valid".into());
            return Decision::Unauthenticated(why);
        }
        let user = status.user.unwrap_or_default();
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups.clone(),
                uid: user.uid.clone(),
                extra: user.extra.clone(),
                resource_attributes: match access {
                    Access::ListAssets => Some(("assets", "list")),
                    Access::GetAssets => Some(("assets", "get")),
                    Access::ImportBundles => Some(("bundles", "create")),
                    Access::ReadMetrics => None,
                }
                .map(|(resource, verb)| ResourceAttributes {
                    group: Some(sightline_crds::GROUP.into()),
                    resource: Some(resource.into()),
                    verb: Some(verb.into()),
                    ..Default::default()
                }),
                non_resource_attributes: (access == Access::ReadMetrics).then(|| {
                    NonResourceAttributes {
                        path: Some("/metrics".into()),
                        verb: Some("get".into()),
                    }
                }),
            },
            ..Default::default()
        };
        let sars: Api<SubjectAccessReview> = Api::all(self.client.clone());
        match sars.create(&PostParams::default(), &sar).await {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => Decision::Allowed,
            Ok(_) => Decision::Forbidden(format!(
                "{} may not {}",
                user.username.unwrap_or_else(|| "this user".into()),
                access.describe()
            )),
            Err(e) => Decision::Failed(format!("checking access: {e}")),
        }
    }
}
