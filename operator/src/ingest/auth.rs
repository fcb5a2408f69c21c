//! Who is reporting: an activation key's token (CI pipelines, agents
//! outside the cluster), or a sensor pod's ServiceAccount token with
//! audience `sightline`, reviewed by the API server, which also says which
//! pod and node the token is bound to. The caller's Sensor, node and key
//! come from here and never from the report.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use sha2::{Digest, Sha256};
use sightline_crds::{ActivationKey, Module, Sensor, SensorType};
use sightline_report::AUDIENCE;

use crate::controllers::key::{PREVIOUS_TOKEN_KEY, TOKEN_KEY, previous_until};
use crate::controllers::sensor::names;

/// How long a ServiceAccount token's review and the keys are reused.
const CACHE_FOR: Duration = Duration::from_secs(10);
/// Most cached identities; the cache is cleared when full.
const CACHE_MAX: usize = 16_384;
/// The user info key naming the node a bound token's pod runs on.
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
/// The user info key holding that node's UID.
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";

/// A node a sensor's token is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundNode {
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A sensor pod of a Sensor.
    Sensor {
        /// `<namespace>/<name>` of the Sensor.
        sensor: String,
        /// Its type.
        sensor_type: SensorType,
        /// Its activation key.
        key: String,
        /// The node its token is bound to (node sensors).
        node: Option<BoundNode>,
    },
    /// The holder of an activation key's token.
    Key {
        /// The key.
        key: String,
    },
}

impl Caller {
    /// The source this caller writes as (`sources[].sensor`).
    pub fn source(&self) -> String {
        match self {
            Caller::Sensor { sensor, .. } => sensor.clone(),
            Caller::Key { key } => format!("ci/{key}"),
        }
    }

    /// The activation key it reports under.
    pub fn key(&self) -> &str {
        match self {
            Caller::Sensor { key, .. } | Caller::Key { key } => key,
        }
    }

    /// Who it is for rate limits and logs: the source, and the node for
    /// node sensors (each pod has its own budget).
    pub fn identity(&self) -> String {
        match self {
            Caller::Sensor {
                sensor,
                node: Some(n),
                ..
            } => format!("{sensor}@{}", n.name),
            other => other.source(),
        }
    }
}

/// Why a caller is not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No valid credentials (401).
    Unauthenticated(String),
    /// Valid credentials that may not report (403).
    Forbidden(String),
    /// The API server could not be asked (503).
    Unavailable(String),
}

/// A token's review: when, and who it proved (or why not).
type Reviewed = (Instant, Result<Caller, Denied>);

/// Authenticates callers. Keys' tokens come from a watch of their
/// Secrets, so a new or rotated token counts as soon as the operator sees
/// it; ServiceAccount tokens are reviewed with a short cache, so a busy
/// node does not cost a TokenReview per report.
pub struct Authenticator {
    client: kube::Client,
    callers: Mutex<HashMap<[u8; 32], Reviewed>>,
    key_tokens: Store<Secret>,
}

/// How long a request waits for the keys' Secrets to be listed at start.
const KEYS_LISTED_WITHIN: Duration = Duration::from_secs(10);

impl Authenticator {
    /// Key tokens are read from Secrets in `namespace` (the operator's),
    /// watched from now on (call within a Tokio runtime).
    pub fn new(client: kube::Client, namespace: String) -> Self {
        let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let (key_tokens, writer) = reflector::store();
        let watch = reflector::reflector(
            writer,
            watcher(
                api,
                watcher::Config::default().labels("sightline.dev/activation-key"),
            ),
        )
        .default_backoff();
        tokio::spawn(watch.for_each(|event| {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watching the keys' token Secrets");
            }
            std::future::ready(())
        }));
        Self {
            client,
            callers: Mutex::default(),
            key_tokens,
        }
    }

    /// The caller holding `token`, admitted only if its key still allows it.
    pub async fn caller(&self, token: &str) -> Result<Caller, Denied> {
        if let Some(key) = self.key_of(token).await? {
            return Ok(Caller::Key { key });
        }
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        {
            let cache = self.callers.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, c)) = cache.get(&hash)
                && at.elapsed() < CACHE_FOR
            {
                return c.clone();
            }
        }
        let result = self.sensor_of(token).await;
        if !matches!(result, Err(Denied::Unavailable(_))) {
            let mut cache = self.callers.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(hash, (Instant::now(), result.clone()));
        }
        result
    }

    /// The caller holding `token`, if its key allows it now (the key is
    /// read for every request, so disabling it takes effect at once);
    /// with the key's `spec.limits.maxAssets`.
    pub async fn admit(&self, token: &str) -> Result<(Caller, Option<i64>), Denied> {
        let caller = self.caller(token).await?;
        let max_assets = self.key_allows(&caller).await?;
        Ok((caller, max_assets))
    }

    /// The key whose token this is (a replaced token only while its grace
    /// period lasts), comparing in constant time.
    async fn key_of(&self, token: &str) -> Result<Option<String>, Denied> {
        tokio::time::timeout(KEYS_LISTED_WITHIN, self.key_tokens.wait_until_ready())
            .await
            .map_err(|_| Denied::Unavailable("the keys' tokens are not listed yet".into()))?
            .map_err(|e| Denied::Unavailable(format!("watching the keys' tokens: {e}")))?;
        let now = jiff::Timestamp::now();
        let matches = |stored: Option<&k8s_openapi::ByteString>| {
            stored.is_some_and(|t| !t.0.is_empty() && constant_time_eq(&t.0, token.as_bytes()))
        };
        Ok(self.key_tokens.state().iter().find_map(|s| {
            let key = s.labels().get("sightline.dev/activation-key")?;
            let data = s.data.as_ref()?;
            let current = matches(data.get(TOKEN_KEY));
            let previous = matches(data.get(PREVIOUS_TOKEN_KEY))
                && previous_until(data).is_some_and(|u| now < u);
            (current || previous).then(|| key.clone())
        }))
    }

    /// The Sensor whose pod holds this ServiceAccount token.
    async fn sensor_of(&self, token: &str) -> Result<Caller, Denied> {
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![AUDIENCE.to_owned()]),
            },
            ..Default::default()
        };
        let review = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Denied::Unavailable(format!("reviewing the token: {e}")))?;
        let status = review.status.unwrap_or_default();
        if status.authenticated != Some(true)
            || !status
                .audiences
                .as_ref()
                .is_some_and(|a| a.iter().any(|x| x == AUDIENCE))
        {
            let why = status.error.filter(|e| !e.is_empty()).unwrap_or_default();
            return Err(Denied::Unauthenticated(format!(
                "the token is neither an activation key's nor a ServiceAccount token for audience '{AUDIENCE}' {why}"
            ).trim_end().to_owned()));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let Some((ns, sa)) = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
        else {
            return Err(Denied::Forbidden(format!(
                "{username} is not a ServiceAccount"
            )));
        };
        let extra = user.extra.unwrap_or_default();
        let first = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
        let node = match (first(EXTRA_NODE_NAME), first(EXTRA_NODE_UID)) {
            (Some(name), Some(uid)) => Some(BoundNode { name, uid }),
            _ => None,
        };
        let sensors: Api<Sensor> = Api::namespaced(self.client.clone(), ns);
        let list = sensors
            .list(&ListParams::default())
            .await
            .map_err(|e| Denied::Unavailable(format!("reading the Sensors of {ns}: {e}")))?;
        let Some(sensor) = list
            .into_iter()
            .find(|s| names::workload(s) == sa && s.metadata.deletion_timestamp.is_none())
        else {
            return Err(Denied::Forbidden(format!(
                "{username} is no Sensor's ServiceAccount"
            )));
        };
        if !accepted(&sensor) {
            return Err(Denied::Forbidden(format!(
                "Sensor {ns}/{} is not running under its key: the operator has not accepted its current spec (see its KeyRejected condition)",
                sensor.name_any()
            )));
        }
        let sensor_type = sensor.spec.type_;
        if node_bound(sensor_type) && node.is_none() {
            return Err(Denied::Unauthenticated(format!(
                "a {} sensor must send a token bound to its pod on a node (a projected token with audience '{AUDIENCE}')",
                sensor_type.as_str()
            )));
        }
        Ok(Caller::Sensor {
            sensor: format!("{ns}/{}", sensor.name_any()),
            sensor_type,
            key: sensor.spec.activation_key_ref.name.clone(),
            node: if node_bound(sensor_type) { node } else { None },
        })
    }

    /// Whether the caller's key is enabled, current, and enables what it
    /// reports; its asset limit if so.
    async fn key_allows(&self, caller: &Caller) -> Result<Option<i64>, Denied> {
        let name = caller.key();
        let keys: Api<ActivationKey> = Api::all(self.client.clone());
        let key = keys
            .get_opt(name)
            .await
            .map_err(|e| Denied::Unavailable(format!("reading ActivationKey {name}: {e}")))?
            .ok_or_else(|| Denied::Forbidden(format!("ActivationKey {name} does not exist")))?;
        if key.spec.disabled {
            return Err(Denied::Forbidden(format!(
                "ActivationKey {name} is disabled"
            )));
        }
        let limits = key.spec.limits.as_ref();
        if let Some(expires) = limits.and_then(|l| l.expires.as_ref())
            && expires.0 <= jiff::Timestamp::now()
        {
            return Err(Denied::Forbidden(format!(
                "ActivationKey {name} has expired"
            )));
        }
        if let Caller::Key { .. } = caller
            && !key
                .spec
                .modules
                .iter()
                .any(|m| matches!(m, Module::ContainerSecurity | Module::Vulnerability))
        {
            return Err(Denied::Forbidden(format!(
                "ActivationKey {name} enables neither containerSecurity nor vulnerability"
            )));
        }
        Ok(limits.and_then(|l| l.max_assets))
    }
}

/// Whether the operator accepted the Sensor's current spec under its key
/// (`KeyRejected` is `False` for this generation): a Sensor the operator
/// refused (a key scoped elsewhere, a missing module) cannot report, even
/// from a pod someone else started with its ServiceAccount.
pub fn accepted(sensor: &Sensor) -> bool {
    sensor.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == "KeyRejected"
                && c.status == "False"
                && c.observed_generation == sensor.metadata.generation
        })
    })
}

/// Sensor types whose pods run one per node and report for that node only.
pub fn node_bound(t: SensorType) -> bool {
    matches!(
        t,
        SensorType::Container | SensorType::Runtime | SensorType::Passive
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
