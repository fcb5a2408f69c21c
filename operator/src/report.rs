//! `POST /api/v1/reports`: images scanned outside the cluster (by
//! `sightline scan image --report` in a CI pipeline) join the inventory.
//!
//! The caller authenticates with an activation key's token (what `sightline
//! keys token KEY` prints), not a Kubernetes identity: pipelines hold a key,
//! not cluster credentials. The key must be enabled, not expired, and
//! enable `containerSecurity` or `vulnerability`. The image becomes (or
//! updates) its `ContainerImage` Asset, named by its config digest, with a
//! source `ci/<key>` written under the field manager `sightline-ci/<key>`,
//! so each key's reports own their own facts and never overwrite a node's
//! or a registry's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::Deserialize;
use serde_json::{Value, json};
use sightline_crds::asset::{VulnerabilityFindings, asset_name};
use sightline_crds::{ActivationKey, Asset, AssetKind, Module};
use tokio::sync::Mutex;

use crate::controllers::key::TOKEN_KEY;

/// Largest report accepted (a report carries an image's summary, not its SBOM).
pub const MAX_REPORT_BYTES: usize = 256 << 10;
/// How long the token → key map is reused before the Secrets are read again.
const TOKENS_FOR: Duration = Duration::from_secs(10);

/// The endpoint's state.
pub struct ReportState {
    client: kube::Client,
    namespace: String,
    tokens: Mutex<Option<(Instant, BTreeMap<String, String>)>>,
}

impl ReportState {
    /// Accepts reports with the tokens of keys whose Secrets are in `namespace`.
    pub fn new(client: kube::Client, namespace: String) -> Self {
        Self {
            client,
            namespace,
            tokens: Mutex::new(None),
        }
    }

    /// The key whose token this is, comparing in constant time.
    async fn key_of(&self, token: &str) -> Result<Option<String>, kube::Error> {
        let mut cached = self.tokens.lock().await;
        let fresh = cached
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < TOKENS_FOR);
        if !fresh {
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let list = secrets
                .list(&ListParams::default().labels("sightline.dev/activation-key"))
                .await?;
            let mut map = BTreeMap::new();
            for s in list {
                let (Some(labels), Some(data)) = (&s.metadata.labels, &s.data) else {
                    continue;
                };
                if let (Some(key), Some(t)) = (
                    labels.get("sightline.dev/activation-key"),
                    data.get(TOKEN_KEY),
                ) {
                    map.insert(String::from_utf8_lossy(&t.0).into_owned(), key.clone());
                }
            }
            *cached = Some((Instant::now(), map));
        }
        let map = cached.as_ref().map(|(_, m)| m);
        Ok(map.and_then(|m| {
            m.iter()
                .find(|(t, _)| constant_time_eq(t.as_bytes(), token.as_bytes()))
                .map(|(_, k)| k.clone())
        }))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The route.
pub fn router(state: Arc<ReportState>) -> Router {
    Router::new()
        .route("/api/v1/reports", post(receive))
        .with_state(state)
}

/// What a CI scan reports.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CiReport {
    /// The reference scanned (`registry.example.com/app:1.2`).
    pub reference: String,
    /// The image's config digest (`sha256:…`), its identity.
    pub config_digest: String,
    /// What the scan observed (the same facts a sensor reports).
    pub observed: serde_json::Map<String, Value>,
    /// Vulnerability counts and the worst findings.
    #[serde(default)]
    pub vulnerabilities: Option<VulnerabilityFindings>,
}

fn reply(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

async fn receive(
    State(state): State<Arc<ReportState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return reply(
            StatusCode::UNAUTHORIZED,
            "send an activation key's token as Authorization: Bearer",
        );
    };
    let key = match state.key_of(token.trim()).await {
        Ok(Some(k)) => k,
        Ok(None) => return reply(StatusCode::UNAUTHORIZED, "the token is no activation key's"),
        Err(e) => {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("reading the keys' tokens: {e}"),
            );
        }
    };
    if let Err(why) = key_allows(&state.client, &key).await {
        return reply(StatusCode::FORBIDDEN, why);
    }
    if body.len() > MAX_REPORT_BYTES {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a report may have at most {MAX_REPORT_BYTES} bytes"),
        );
    }
    let report: CiReport = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("not a report: {e}")),
    };
    let valid_digest = report
        .config_digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !valid_digest {
        return reply(
            StatusCode::BAD_REQUEST,
            "configDigest must be sha256: and 64 hex digits",
        );
    }
    match write_asset(&state.client, &key, &report).await {
        Ok(name) => (
            StatusCode::OK,
            axum::Json(json!({"asset": name, "activationKey": key})),
        )
            .into_response(),
        Err(kube::Error::Api(e)) if e.code == 422 => reply(
            StatusCode::BAD_REQUEST,
            format!("the API server refused the Asset: {}", e.message),
        ),
        Err(e) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("writing the Asset: {e}"),
        ),
    }
}

/// Whether the key may report images: enabled, not expired, and with a
/// module that covers images.
async fn key_allows(client: &kube::Client, name: &str) -> Result<(), String> {
    let keys: Api<ActivationKey> = Api::all(client.clone());
    let key = keys
        .get_opt(name)
        .await
        .map_err(|e| format!("reading ActivationKey {name}: {e}"))?
        .ok_or_else(|| format!("ActivationKey {name} no longer exists"))?;
    if key.spec.disabled {
        return Err(format!("ActivationKey {name} is disabled"));
    }
    if let Some(expires) = key.spec.limits.as_ref().and_then(|l| l.expires.as_ref())
        && expires.0 <= jiff::Timestamp::now()
    {
        return Err(format!("ActivationKey {name} has expired"));
    }
    if !key
        .spec
        .modules
        .iter()
        .any(|m| matches!(m, Module::ContainerSecurity | Module::Vulnerability))
    {
        return Err(format!(
            "ActivationKey {name} enables neither containerSecurity nor vulnerability"
        ));
    }
    Ok(())
}

async fn write_asset(
    client: &kube::Client,
    key: &str,
    r: &CiReport,
) -> Result<String, kube::Error> {
    let api: Api<Asset> = Api::all(client.clone());
    let name = asset_name(AssetKind::ContainerImage, &r.config_digest);
    let params = PatchParams::apply(&format!("sightline-ci/{key}")).force();
    let mut observed = Value::Object(r.observed.clone());
    observed["ci"] =
        json!({"reference": r.reference, "reportedAt": jiff::Timestamp::now().to_string()});
    let mut status = json!({
        "kind": AssetKind::ContainerImage.as_str(),
        "identity": r.config_digest,
        "sources": [{
            "sensor": format!("ci/{key}"),
            "type": "ci",
            "activationKey": key,
            "lastSeen": jiff::Timestamp::now().to_string(),
        }],
        "observed": observed,
        "managed": true,
    });
    if let Some(v) = &r.vulnerabilities {
        status["findings"] = json!({"vulnerabilities": v});
    }
    let body = json!({"apiVersion": "sightline.dev/v1alpha1", "kind": "Asset", "status": status});
    match api.patch_status(&name, &params, &Patch::Apply(&body)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let object = json!({
                "apiVersion": "sightline.dev/v1alpha1", "kind": "Asset",
                "metadata": {"name": name}, "spec": {},
            });
            api.patch(&name, &params, &Patch::Apply(&object)).await?;
            api.patch_status(&name, &params, &Patch::Apply(&body))
                .await?;
        }
        other => {
            other?;
        }
    }
    Ok(name)
}
