//! The ActivationKey controller: conditions, the token Secret, and how many
//! Sensors use the key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use sightline_crds::activation_key::SecretKeyRef;
use sightline_crds::conditions::{self, condition};
use sightline_crds::{ActivationKey, ActivationKeyStatus};

use crate::context::Context;
use crate::controllers::sensor::names;
use crate::error::{Error, Result};

/// Field manager of this controller.
pub const MANAGER: &str = "sightline-operator/activationkey";
/// Key inside the token Secret holding the token.
pub const TOKEN_KEY: &str = "token";
const SAFETY_REQUEUE: Duration = Duration::from_secs(300);

/// Name of the Secret holding a key's token.
pub fn token_secret_name(key: &str) -> String {
    format!("sightline-key-{key}")
}

/// Reconciles one key.
#[tracing::instrument(skip_all, fields(key = %key.name_any()))]
pub async fn reconcile(key: Arc<ActivationKey>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("activationkey");
    let name = key.name_any();
    if key.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let secret = ensure_token(&key, &ctx).await?;
    // A count from a store still loading would write a wrong count.
    ctx.sensors_synced.wait("Sensor").await?;
    let now = Timestamp::now();
    let sensors = ctx
        .sensors
        .state()
        .iter()
        .filter(|s| s.spec.activation_key_ref.name == name)
        .count();
    let sensors = i32::try_from(sensors).unwrap_or(i32::MAX);
    let status = status(&key, sensors, secret, now);
    if key.status.as_ref() == Some(&status) {
        ctx.succeeded(&name);
        return Ok(Action::requeue(requeue_after(&key, now)));
    }
    let api: Api<ActivationKey> = Api::all(ctx.client.clone());
    let value = crate::apply::to_value(&status, "ActivationKey", &name)?;
    crate::apply::status(&api, &name, value, MANAGER, "ActivationKey").await?;
    ctx.succeeded(&name);
    Ok(Action::requeue(requeue_after(&key, now)))
}

/// Wakes up at the key's expiry so `Expired` appears on time.
fn requeue_after(key: &ActivationKey, now: Timestamp) -> Duration {
    let until_expiry = key
        .spec
        .limits
        .as_ref()
        .and_then(|l| l.expires.as_ref())
        .filter(|e| e.0 > now)
        .and_then(|e| Duration::try_from(e.0.duration_since(now)).ok())
        .map(|d| d + Duration::from_secs(1));
    until_expiry.map_or(SAFETY_REQUEUE, |d| d.min(SAFETY_REQUEUE))
}

/// Computes the key's status (pure).
pub fn status(
    key: &ActivationKey,
    sensors: i32,
    token: SecretKeyRef,
    now: Timestamp,
) -> ActivationKeyStatus {
    let gen_ = key.meta().generation;
    let spec = &key.spec;
    let previous = key
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let expired = spec.expired_at(now);
    let max = spec.limits.as_ref().and_then(|l| l.max_sensors);
    let bad_tags: Vec<&String> = spec.tags.keys().filter(|k| !valid_tag_key(k)).collect();

    let conflict = if spec.modules_conflict() {
        condition(
            "ModulesConflict",
            true,
            "PolicyComplianceAndSca",
            "policyCompliance and sca both assess configuration settings and would report them twice; enable them on separate keys",
            gen_,
            now,
        )
    } else {
        condition("ModulesConflict", false, "NoConflict", "", gen_, now)
    };
    let expired_c = match spec.limits.as_ref().and_then(|l| l.expires.as_ref()) {
        Some(e) if expired => condition(
            "Expired",
            true,
            "PastExpiry",
            format!("the key expired at {}", e.0),
            gen_,
            now,
        ),
        Some(e) => condition(
            "Expired",
            false,
            "NotExpired",
            format!("the key expires at {}", e.0),
            gen_,
            now,
        ),
        None => condition("Expired", false, "NoExpiry", "", gen_, now),
    };
    let limit = match max {
        Some(m) if sensors >= m => condition(
            "LimitReached",
            true,
            "MaxSensors",
            format!("{sensors} Sensors use the key, which allows {m}; the oldest {m} run"),
            gen_,
            now,
        ),
        Some(m) => condition(
            "LimitReached",
            false,
            "BelowLimit",
            format!("{sensors} of {m} Sensors"),
            gen_,
            now,
        ),
        None => condition("LimitReached", false, "NoLimit", "", gen_, now),
    };
    let ready = if spec.disabled {
        condition(
            "Ready",
            false,
            "Disabled",
            "the key is disabled; no sensor runs under it",
            gen_,
            now,
        )
    } else if expired {
        condition(
            "Ready",
            false,
            "Expired",
            "the key has expired; no sensor runs under it",
            gen_,
            now,
        )
    } else if !bad_tags.is_empty() {
        condition(
            "Ready",
            false,
            "InvalidTags",
            format!(
                "tag keys must be 1-63 letters, digits, '.', '_', '-' or '/', starting and ending with a letter or digit: {bad_tags:?}"
            ),
            gen_,
            now,
        )
    } else {
        condition("Ready", true, "Active", "", gen_, now)
    };
    ActivationKeyStatus {
        observed_generation: gen_,
        conditions: conditions::merge(&previous, vec![ready, conflict, expired_c, limit]),
        sensors,
        token_secret_ref: Some(token),
    }
}

/// Tag keys follow label-key rules, so tags can become labels.
pub fn valid_tag_key(k: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/');
    !k.is_empty()
        && k.len() <= 63
        && k.chars().all(ok_char)
        && k.starts_with(|c: char| c.is_ascii_alphanumeric())
        && k.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Creates the token Secret once; a token never changes once issued (agents
/// and CI hold it), so an existing one is kept as is.
async fn ensure_token(key: &ActivationKey, ctx: &Context) -> Result<SecretKeyRef> {
    let name = token_secret_name(&key.name_any());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let existing = api.get_opt(&name).await.map_err(|source| Error::Get {
        kind: "Secret",
        name: name.clone(),
        source,
    })?;
    let has_token = existing
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .is_some_and(|d| d.contains_key(TOKEN_KEY));
    if !has_token {
        let owner = key.controller_owner_ref(&()).ok_or(Error::MissingField {
            kind: "ActivationKey",
            field: "metadata.uid",
        })?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ctx.namespace.clone()),
                owner_references: Some(vec![owner]),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/managed-by".into(),
                        names::MANAGED_BY.into(),
                    ),
                    (
                        "sightline.dev/activation-key".into(),
                        names::label_value(&key.name_any()),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                TOKEN_KEY.into(),
                ByteString(new_token().into_bytes()),
            )])),
            ..Secret::default()
        };
        let res = match existing {
            None => api
                .create(&PostParams::default(), &secret)
                .await
                .map(|_| ()),
            Some(_) => api
                .replace(&name, &PostParams::default(), &secret)
                .await
                .map(|_| ()),
        };
        match res {
            Ok(()) => {}
            // Another reconcile created it first: keep theirs.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(source) => {
                return Err(Error::Apply {
                    kind: "Secret",
                    name,
                    source,
                });
            }
        }
    }
    Ok(SecretKeyRef {
        namespace: ctx.namespace.clone(),
        name,
        key: TOKEN_KEY.into(),
    })
}

/// 256 random bits, hex-encoded, prefixed so leaked tokens are recognisable.
fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("slk_{hex}")
}

/// Backs off on failures, exponentially per key.
pub fn error_policy(key: Arc<ActivationKey>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure("activationkey", err.metric_label());
    let delay = ctx.backoff(&key.name_any());
    tracing::warn!(key = %key.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use sightline_crds::activation_key::KeyLimits;
    use sightline_crds::{ActivationKeySpec, Module};

    fn key(modules: Vec<Module>, limits: Option<KeyLimits>) -> ActivationKey {
        let mut k = ActivationKey::new(
            "lab",
            ActivationKeySpec {
                modules,
                limits,
                ..Default::default()
            },
        );
        k.metadata.generation = Some(3);
        k
    }

    fn token() -> SecretKeyRef {
        SecretKeyRef {
            namespace: "ns".into(),
            name: "t".into(),
            key: "token".into(),
        }
    }

    #[test]
    fn conflict_expiry_and_limits_are_reported() {
        let now = Timestamp::from_second(2_000_000_000).unwrap();
        let past = Time(Timestamp::from_second(1_000_000_000).unwrap());
        let k = key(
            vec![Module::Sca, Module::PolicyCompliance],
            Some(KeyLimits {
                max_sensors: Some(2),
                expires: Some(past),
                max_assets: None,
            }),
        );
        let s = status(&k, 2, token(), now);
        assert!(conditions::is_true(&s.conditions, "ModulesConflict"));
        assert!(conditions::is_true(&s.conditions, "Expired"));
        assert!(conditions::is_true(&s.conditions, "LimitReached"));
        assert!(!conditions::is_true(&s.conditions, "Ready"));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.sensors, 2);
    }

    #[test]
    fn a_plain_key_is_ready() {
        let s = status(
            &key(vec![Module::Inventory], None),
            0,
            token(),
            Timestamp::now(),
        );
        assert!(conditions::is_true(&s.conditions, "Ready"));
        assert!(!conditions::is_true(&s.conditions, "ModulesConflict"));
    }

    #[test]
    fn tag_keys_follow_label_rules() {
        assert!(valid_tag_key("site"));
        assert!(valid_tag_key("example.com/team"));
        assert!(!valid_tag_key("no spaces"));
        assert!(!valid_tag_key("-edge"));
        assert!(!valid_tag_key(&"a".repeat(64)));
    }

    #[test]
    fn tokens_are_256_bits() {
        let t = new_token();
        assert_eq!(t.len(), 4 + 64);
        assert_ne!(t, new_token());
    }
}
