//! `GET /api/v1/vulndb`: the vulnerability database file (`--vuln-db`,
//! built with `sightline db import`) for the container sensors, with an
//! `ETag` (the file's sha256) so a sensor whose copy is current gets a
//! `304 Not Modified` and nothing else. Sensors authenticate as they do
//! to report (their pod's token for audience `sightline`, or a key's
//! token); users as for search (a bearer token allowed to list Assets).
//! The file is checked (read fully as a database) before
//! it is served, and again whenever it changes on disk, so a half-written or
//! foreign file is never handed out: the last good one is served instead.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::ingest::auth::Authenticator;
use crate::search::{Authorizer, authorize};

/// The served file, as last read and checked.
struct Loaded {
    modified: Option<SystemTime>,
    len: u64,
    etag: String,
    bytes: bytes::Bytes,
}

/// The endpoint's state.
pub struct VulnDbState {
    path: Option<PathBuf>,
    auth: Arc<Authorizer>,
    sensors: Arc<Authenticator>,
    loaded: Mutex<Option<Loaded>>,
}

impl VulnDbState {
    /// Serves `path` (none: the endpoint says so) to the sensors and keys
    /// `sensors` admits and the users `auth` admits.
    pub fn new(path: Option<PathBuf>, auth: Arc<Authorizer>, sensors: Arc<Authenticator>) -> Self {
        Self {
            path,
            auth,
            sensors,
            loaded: Mutex::new(None),
        }
    }
}

/// The route.
pub fn router(state: Arc<VulnDbState>) -> Router {
    Router::new()
        .route("/api/v1/vulndb", get(serve))
        .with_state(state)
}

fn plain(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
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
    let Some(path) = state.path.clone() else {
        return plain(
            StatusCode::NOT_FOUND,
            "this operator serves no vulnerability database (start it with --vuln-db FILE)".into(),
        );
    };
    let mut loaded = state.loaded.lock().await;
    let meta = tokio::fs::metadata(&path).await;
    let current = match (&meta, loaded.as_ref()) {
        (Ok(m), Some(l)) => l.len == m.len() && l.modified == m.modified().ok(),
        _ => false,
    };
    if !current {
        match load(path.clone()).await {
            Ok(l) => {
                tracing::info!(path = %path.display(), etag = %l.etag, bytes = l.len, "vulnerability database loaded");
                *loaded = Some(l);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "vulnerability database not (re)loaded");
                if loaded.is_none() {
                    return plain(StatusCode::SERVICE_UNAVAILABLE, e);
                }
            }
        }
    }
    let Some(l) = loaded.as_ref() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no vulnerability database".into(),
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
    let body = Body::from(l.bytes.clone());
    (
        StatusCode::OK,
        [
            (header::ETAG, etag),
            (header::CONTENT_TYPE, "application/octet-stream".into()),
        ],
        body,
    )
        .into_response()
}

/// Reads the file and checks it is a database this version can read.
async fn load(path: PathBuf) -> Result<Loaded, String> {
    tokio::task::spawn_blocking(move || {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(&path).map_err(|e| format!("{shown}: {e}"))?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{shown}: {e}"))?;
        sightline_scan::vuln::Database::read(&path).map_err(|e| e.to_string())?;
        let digest: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Loaded {
            modified: meta.modified().ok(),
            len: bytes.len() as u64,
            etag: format!("\"sha256:{digest}\""),
            bytes: bytes.into(),
        })
    })
    .await
    .map_err(|e| format!("loading the vulnerability database: {e}"))?
}
