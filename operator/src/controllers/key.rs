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
use sightline_crds::activation_key::{ROTATE_TOKEN, ROTATE_TOKEN_GRACE, SecretKeyRef};
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
    let (secret, previous_until) = ensure_token(&key, &ctx).await?;
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
        return Ok(Action::requeue(requeue_after(&key, now, previous_until)));
    }
    let api: Api<ActivationKey> = Api::all(ctx.client.clone());
    let value = crate::apply::to_value(&status, "ActivationKey", &name)?;
    crate::apply::status(&api, &name, value, MANAGER, "ActivationKey").await?;
    ctx.succeeded(&name);
    Ok(Action::requeue(requeue_after(&key, now, previous_until)))
}

/// Wakes up at the key's expiry so `Expired` appears on time, and at the
/// end of a previous token's grace period to drop it.
fn requeue_after(
    key: &ActivationKey,
    now: Timestamp,
    previous_until: Option<Timestamp>,
) -> Duration {
    let expiry = key
        .spec
        .limits
        .as_ref()
        .and_then(|l| l.expires.as_ref())
        .map(|e| e.0);
    [expiry, previous_until]
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .filter_map(|t| Duration::try_from(t.duration_since(now)).ok())
        .map(|d| d + Duration::from_secs(1))
        .fold(SAFETY_REQUEUE, Duration::min)
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

/// The token a rotation replaced, while it stays valid.
pub const PREVIOUS_TOKEN_KEY: &str = "previous-token";
/// Until when (RFC 3339) the previous token is valid.
pub const PREVIOUS_UNTIL_KEY: &str = "previous-valid-until";
/// On the token Secret: the rotation request last carried out.
const ROTATED_FOR: &str = "sightline.dev/rotated-for";

/// What the token Secret should hold, when it should change.
#[derive(Debug, PartialEq)]
pub struct TokenChange {
    /// The Secret's data.
    pub data: BTreeMap<String, ByteString>,
    /// Why, for the log.
    pub why: &'static str,
}

/// Decides what the token Secret's `data` should become (pure): a token
/// where there is none; a new one when `requested` (the key's rotation
/// annotation) differs from `handled` (the last carried out), keeping the
/// old one for `grace`; dropping a previous token whose time is up.
/// `None`: it is right as it is. A token is never changed otherwise:
/// agents and CI hold it.
pub fn token_change(
    data: &BTreeMap<String, ByteString>,
    requested: Option<&str>,
    handled: Option<&str>,
    grace: Duration,
    now: Timestamp,
    fresh: impl FnOnce() -> String,
) -> Option<TokenChange> {
    let token = |t: String| (TOKEN_KEY.to_owned(), ByteString(t.into_bytes()));
    let Some(current) = data.get(TOKEN_KEY).filter(|t| !t.0.is_empty()) else {
        return Some(TokenChange {
            data: BTreeMap::from([token(fresh())]),
            why: "issued a token",
        });
    };
    if requested.is_some() && requested != handled {
        let mut next = BTreeMap::from([token(fresh())]);
        if !grace.is_zero() {
            let until =
                now + jiff::SignedDuration::try_from(grace).unwrap_or(jiff::SignedDuration::MAX);
            next.insert(PREVIOUS_TOKEN_KEY.into(), current.clone());
            next.insert(
                PREVIOUS_UNTIL_KEY.into(),
                ByteString(until.to_string().into_bytes()),
            );
        }
        return Some(TokenChange {
            data: next,
            why: if grace.is_zero() {
                "rotated the token; the old one is revoked"
            } else {
                "rotated the token; the old one stays valid for the grace period"
            },
        });
    }
    let has_previous =
        data.contains_key(PREVIOUS_TOKEN_KEY) || data.contains_key(PREVIOUS_UNTIL_KEY);
    if has_previous && previous_until(data).is_none_or(|u| u <= now) {
        return Some(TokenChange {
            data: BTreeMap::from([(TOKEN_KEY.to_owned(), current.clone())]),
            why: "the previous token's grace period ended",
        });
    }
    None
}

/// Until when the previous token in `data` is valid, if it is there and
/// says so.
pub fn previous_until(data: &BTreeMap<String, ByteString>) -> Option<Timestamp> {
    data.get(PREVIOUS_TOKEN_KEY)?;
    std::str::from_utf8(&data.get(PREVIOUS_UNTIL_KEY)?.0)
        .ok()?
        .parse()
        .ok()
}

/// Creates the token Secret, carries out rotation requests, and drops a
/// previous token when its grace period ends. Returns the Secret's
/// reference and when to look again (the end of a grace period).
async fn ensure_token(
    key: &ActivationKey,
    ctx: &Context,
) -> Result<(SecretKeyRef, Option<Timestamp>)> {
    let name = token_secret_name(&key.name_any());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let existing = api.get_opt(&name).await.map_err(|source| Error::Get {
        kind: "Secret",
        name: name.clone(),
        source,
    })?;
    let annotations = key.annotations();
    let requested = annotations.get(ROTATE_TOKEN).map(String::as_str);
    let grace = annotations
        .get(ROTATE_TOKEN_GRACE)
        .and_then(|g| g.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let data = existing
        .as_ref()
        .and_then(|s| s.data.clone())
        .unwrap_or_default();
    // A new Secret carries out no rotation: its token is new anyway.
    let handled = match &existing {
        Some(s) => s.annotations().get(ROTATED_FOR).map(String::as_str),
        None => requested,
    };
    let now = Timestamp::now();
    let reference = SecretKeyRef {
        namespace: ctx.namespace.clone(),
        name: name.clone(),
        key: TOKEN_KEY.into(),
    };
    let Some(change) = token_change(&data, requested, handled, grace, now, new_token) else {
        return Ok((reference, previous_until(&data)));
    };
    let owner = key.controller_owner_ref(&()).ok_or(Error::MissingField {
        kind: "ActivationKey",
        field: "metadata.uid",
    })?;
    let until = previous_until(&change.data);
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
            annotations: requested
                .map(|r| BTreeMap::from([(ROTATED_FOR.to_owned(), r.to_owned())])),
            // Replacing on the version read: a concurrent change wins and
            // this reconcile runs again on it.
            resource_version: existing
                .as_ref()
                .and_then(|s| s.metadata.resource_version.clone()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(change.data),
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
        Ok(()) => {
            tracing::info!(secret = name, "{}", change.why);
            Ok((reference, until))
        }
        Err(source) => Err(Error::Apply {
            kind: "Secret",
            name,
            source,
        }),
    }
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

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn tokens_rotate_once_per_request_and_the_old_one_lapses() {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let day = Duration::from_secs(86_400);
        let fresh = || "slk_new".to_owned();
        // None yet: one is issued.
        let c = token_change(&BTreeMap::new(), None, None, day, now, fresh).unwrap();
        assert_eq!(c.data, data(&[("token", "slk_new")]));
        // Issued, nothing asked: kept.
        let one = data(&[("token", "slk_old")]);
        assert_eq!(token_change(&one, None, None, day, now, fresh), None);
        assert_eq!(
            token_change(&one, Some("r1"), Some("r1"), day, now, fresh),
            None
        );
        // A new request: a new token, the old one valid for the grace period.
        let c = token_change(&one, Some("r2"), Some("r1"), day, now, fresh).unwrap();
        assert_eq!(
            c.data,
            data(&[
                ("token", "slk_new"),
                ("previous-token", "slk_old"),
                ("previous-valid-until", "2026-12-08T12:00:00Z"),
            ])
        );
        assert_eq!(
            previous_until(&c.data),
            Some(now + jiff::SignedDuration::from_hours(24))
        );
        // No grace: the old one is gone at once.
        let c = token_change(&one, Some("r2"), None, Duration::ZERO, now, fresh).unwrap();
        assert_eq!(c.data, data(&[("token", "slk_new")]));
        // The grace period runs, then ends.
        let rotated = data(&[
            ("token", "slk_new"),
            ("previous-token", "slk_old"),
            ("previous-valid-until", "2026-12-08T12:00:00Z"),
        ]);
        assert_eq!(
            token_change(&rotated, Some("r2"), Some("r2"), day, now, fresh),
            None
        );
        let later = now + jiff::SignedDuration::from_hours(25);
        let c = token_change(&rotated, Some("r2"), Some("r2"), day, later, fresh).unwrap();
        assert_eq!(c.data, data(&[("token", "slk_new")]));
        // A previous token without a readable end is dropped, not kept forever.
        let odd = data(&[("token", "slk_new"), ("previous-token", "slk_old")]);
        let c = token_change(&odd, None, None, day, now, fresh).unwrap();
        assert_eq!(c.data, data(&[("token", "slk_new")]));
    }

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
