//! Whether a Sensor may run, and its status (pure, except for `write`).

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use sightline_crds::conditions::{self, condition};
use sightline_crds::{ActivationKey, Sensor, SensorStatus};

use super::MANAGER;
use super::render::Workload;
use crate::context::Context;
use crate::error::{Error, Result};

/// Why a Sensor does not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Condition that reports it (`KeyRejected` or `Degraded`).
    pub condition: &'static str,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What a person should know and do.
    pub message: String,
}

fn reject(reason: &'static str, message: String) -> Rejection {
    Rejection {
        condition: "KeyRejected",
        reason,
        message,
    }
}

/// The namespace a Sensor is in, as a key's scope sees it.
pub struct SensorNamespace<'a> {
    /// The namespace's labels (read only when the key has a selector).
    pub labels: &'a BTreeMap<String, String>,
    /// The operator's own namespace, the only one a key without a
    /// namespace selector serves.
    pub operator: &'a str,
}

/// Checks the Sensor against its key; returns the key when it may run.
pub fn check_key<'a>(
    sensor: &Sensor,
    key: Option<&'a ActivationKey>,
    peers: &[Arc<Sensor>],
    namespace: &SensorNamespace<'_>,
    now: Timestamp,
) -> Result<&'a ActivationKey, Rejection> {
    let name = &sensor.spec.activation_key_ref.name;
    let Some(key) = key else {
        return Err(reject(
            "KeyNotFound",
            format!(
                "ActivationKey {name} does not exist; create it or fix spec.activationKeyRef.name"
            ),
        ));
    };
    if key.spec.disabled {
        return Err(reject(
            "KeyDisabled",
            format!("ActivationKey {name} is disabled"),
        ));
    }
    if key.spec.expired_at(now) {
        return Err(reject(
            "KeyExpired",
            format!("ActivationKey {name} has expired"),
        ));
    }
    let needs = sensor.spec.type_.required_modules();
    if !needs.iter().any(|m| key.spec.enables(*m)) {
        let names: Vec<&str> = needs.iter().map(|m| m.as_str()).collect();
        return Err(reject(
            "ModuleNotEnabled",
            format!(
                "a {} sensor needs ActivationKey {name} to enable {}",
                sensor.spec.type_.as_str(),
                names.join(" or ")
            ),
        ));
    }
    let ns = sensor.namespace().unwrap_or_default();
    let selector = key
        .spec
        .scope
        .as_ref()
        .and_then(|s| s.namespace_selector.as_ref());
    let in_scope = match selector {
        Some(sel) => sightline_crds::selector::matches(sel, namespace.labels),
        None => ns == namespace.operator,
    };
    if !in_scope {
        let how = if selector.is_some() {
            "its spec.scope.namespaceSelector does not select it"
        } else {
            "it has no spec.scope.namespaceSelector, so it serves only the operator's namespace \
             (namespaceSelector: {} serves every namespace)"
        };
        return Err(reject(
            "NamespaceNotInScope",
            format!("ActivationKey {name} does not apply to namespace {ns}: {how}"),
        ));
    }
    if let Some(max) = key.spec.limits.as_ref().and_then(|l| l.max_sensors) {
        let rank = admission_rank(sensor, name, peers);
        if rank >= usize::try_from(max).unwrap_or(0) {
            return Err(reject(
                "SensorLimitReached",
                format!("ActivationKey {name} allows {max} Sensors and older ones use them all"),
            ));
        }
    }
    Ok(key)
}

/// The Sensor's position among those using the key, oldest first.
fn admission_rank(sensor: &Sensor, key: &str, peers: &[Arc<Sensor>]) -> usize {
    let order = |s: &Sensor| {
        (
            s.meta().creation_timestamp.as_ref().map(|t| t.0),
            s.namespace().unwrap_or_default(),
            s.name_any(),
        )
    };
    let me = order(sensor);
    peers
        .iter()
        .filter(|p| p.spec.activation_key_ref.name == key && p.meta().deletion_timestamp.is_none())
        .filter(|p| order(p) < me)
        .count()
}

/// Checks what the API server cannot: a registry schedule is valid cron.
pub fn check_spec(sensor: &Sensor) -> Result<(), Rejection> {
    if let Some(r) = &sensor.spec.registry
        && let Err(e) = crate::cron::validate(&r.schedule)
    {
        return Err(Rejection {
            condition: "Degraded",
            reason: "InvalidSchedule",
            message: format!("spec.registry.schedule: {e}"),
        });
    }
    if let Some(r) = &sensor.spec.registry
        && sightline_crds::duration::parse(&r.scan_timeout).is_none()
    {
        return Err(Rejection {
            condition: "Degraded",
            reason: "InvalidScanTimeout",
            message: format!(
                "spec.registry.scanTimeout: {:?} is not a duration above zero such as 45m or 2h",
                r.scan_timeout
            ),
        });
    }
    Ok(())
}

fn base(sensor: &Sensor) -> (Option<i64>, Vec<sightline_crds::Condition>) {
    let previous = sensor
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    (sensor.meta().generation, previous)
}

/// Status of a Sensor that may not run.
pub fn rejected(sensor: &Sensor, r: &Rejection, now: Timestamp) -> SensorStatus {
    let (g, previous) = base(sensor);
    let key_rejected = r.condition == "KeyRejected";
    let fresh = vec![
        condition("Ready", false, r.reason, r.message.clone(), g, now),
        condition("Progressing", false, r.reason, "", g, now),
        condition(
            "Degraded",
            !key_rejected,
            if key_rejected {
                "KeyRejected"
            } else {
                r.reason
            },
            if key_rejected {
                String::new()
            } else {
                r.message.clone()
            },
            g,
            now,
        ),
        condition(
            "KeyRejected",
            key_rejected,
            if key_rejected {
                r.reason
            } else {
                "KeyAccepted"
            },
            if key_rejected {
                r.message.clone()
            } else {
                String::new()
            },
            g,
            now,
        ),
    ];
    SensorStatus {
        observed_generation: g,
        conditions: conditions::merge(&previous, fresh),
        desired_nodes: Some(0),
        ready_nodes: Some(0),
        ..SensorStatus::default()
    }
}

/// Status after a failed apply.
pub fn degraded(sensor: &Sensor, e: &Error, now: Timestamp) -> SensorStatus {
    let (g, previous) = base(sensor);
    let fresh = vec![
        condition("Ready", false, "ApplyFailed", e.to_string(), g, now),
        condition("Progressing", false, "ApplyFailed", "", g, now),
        condition("Degraded", true, "ApplyFailed", e.to_string(), g, now),
        condition("KeyRejected", false, "KeyAccepted", "", g, now),
    ];
    SensorStatus {
        observed_generation: g,
        conditions: conditions::merge(&previous, fresh),
        ..SensorStatus::default()
    }
}

/// Status of a Sensor whose workload is applied.
pub fn running(sensor: &Sensor, w: &Workload, now: Timestamp) -> SensorStatus {
    let (g, previous) = base(sensor);
    let (desired, ready, rolled_out, what) = match w {
        Workload::DaemonSet(ds) => {
            let s = ds.status.clone().unwrap_or_default();
            let current =
                s.observed_generation.is_some() && s.observed_generation >= ds.metadata.generation;
            let done = current
                && s.updated_number_scheduled.unwrap_or(0) == s.desired_number_scheduled
                && s.number_available.unwrap_or(0) == s.desired_number_scheduled;
            let what = format!(
                "{}/{} nodes ready",
                s.number_ready, s.desired_number_scheduled
            );
            (
                Some(s.desired_number_scheduled),
                Some(s.number_ready),
                done,
                what,
            )
        }
        Workload::CronJob(cj) => {
            let schedule = cj
                .spec
                .as_ref()
                .map(|s| s.schedule.clone())
                .unwrap_or_default();
            (None, None, true, format!("scans on schedule {schedule}"))
        }
    };
    let fresh = vec![
        if rolled_out {
            condition("Ready", true, "Running", what.clone(), g, now)
        } else {
            condition("Ready", false, "RollingOut", what.clone(), g, now)
        },
        condition(
            "Progressing",
            !rolled_out,
            if rolled_out {
                "RolledOut"
            } else {
                "RollingOut"
            },
            what,
            g,
            now,
        ),
        condition("Degraded", false, "AsExpected", "", g, now),
        condition("KeyRejected", false, "KeyAccepted", "", g, now),
    ];
    SensorStatus {
        observed_generation: g,
        conditions: conditions::merge(&previous, fresh),
        desired_nodes: desired,
        ready_nodes: ready,
        ..SensorStatus::default()
    }
}

/// Writes the operator's part of the status with server-side apply; the
/// sensors' own fields (`lastScanTime`, `assetsReported`) and what the
/// ingestion API writes (`database`) are left alone.
pub async fn write(sensor: &Sensor, ctx: &Context, status: SensorStatus) -> Result<()> {
    if let Some(current) = &sensor.status {
        let mut same = status.clone();
        same.last_scan_time = current.last_scan_time.clone();
        same.assets_reported = current.assets_reported;
        same.database = current.database.clone();
        if &same == current {
            return Ok(());
        }
    }
    let name = sensor.name_any();
    let api: Api<Sensor> =
        Api::namespaced(ctx.client.clone(), &sensor.namespace().unwrap_or_default());
    let mut value = crate::apply::to_value(&status, "Sensor", &name)?;
    if let Some(map) = value.as_object_mut() {
        // Sensors report these themselves, under their own field manager.
        map.remove("lastScanTime");
        map.remove("assetsReported");
    }
    crate::apply::status(&api, &name, value, MANAGER, "Sensor").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_crds::activation_key::KeyLimits;
    use sightline_crds::sensor::{KeyRef, RuntimeSensor};
    use sightline_crds::{ActivationKeySpec, Module, SensorSpec, SensorType};

    fn sensor(name: &str, created: i64) -> Sensor {
        let mut s = Sensor::new(
            name,
            SensorSpec {
                type_: SensorType::Runtime,
                activation_key_ref: KeyRef { name: "k".into() },
                container: None,
                registry: None,
                runtime: Some(RuntimeSensor::default()),
                passive: None,
                node_selector: Default::default(),
                tolerations: vec![],
                resources: None,
                image: None,
            },
        );
        s.metadata.namespace = Some("ns".into());
        s.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(created).unwrap(),
        ));
        s
    }

    fn key(modules: Vec<Module>) -> ActivationKey {
        ActivationKey::new(
            "k",
            ActivationKeySpec {
                modules,
                ..Default::default()
            },
        )
    }

    fn in_ns() -> SensorNamespace<'static> {
        static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
        SensorNamespace {
            labels: &NO_LABELS,
            operator: "ns",
        }
    }

    #[test]
    fn a_key_serves_the_operator_namespace_unless_its_selector_says_more() {
        let s = sensor("a", 1);
        let now = Timestamp::now();
        let mut k = key(vec![Module::RuntimeSecurity]);
        let elsewhere = SensorNamespace {
            labels: in_ns().labels,
            operator: "sightline-system",
        };
        let r = check_key(&s, Some(&k), &[], &elsewhere, now).unwrap_err();
        assert_eq!(r.reason, "NamespaceNotInScope");
        assert!(r.message.contains("namespaceSelector"), "{}", r.message);
        assert!(check_key(&s, Some(&k), &[], &in_ns(), now).is_ok());
        // `{}` selects every namespace.
        k.spec.scope = Some(sightline_crds::activation_key::KeyScope {
            namespace_selector: Some(Default::default()),
            ..Default::default()
        });
        assert!(check_key(&s, Some(&k), &[], &elsewhere, now).is_ok());
        // A selector selects by the namespace's labels.
        k.spec.scope = Some(sightline_crds::activation_key::KeyScope {
            namespace_selector: Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some([("team".to_owned(), "a".to_owned())].into()),
                    ..Default::default()
                },
            ),
            ..Default::default()
        });
        let r = check_key(&s, Some(&k), &[], &elsewhere, now).unwrap_err();
        assert_eq!(r.reason, "NamespaceNotInScope");
        let labels: BTreeMap<String, String> = [("team".to_owned(), "a".to_owned())].into();
        let team_a = SensorNamespace {
            labels: &labels,
            operator: "sightline-system",
        };
        assert!(check_key(&s, Some(&k), &[], &team_a, now).is_ok());
    }

    #[test]
    fn missing_key_and_missing_module_are_rejected_with_reasons() {
        let s = sensor("a", 1);
        let now = Timestamp::now();
        assert_eq!(
            check_key(&s, None, &[], &in_ns(), now).unwrap_err().reason,
            "KeyNotFound"
        );
        let k = key(vec![Module::Inventory]);
        let r = check_key(&s, Some(&k), &[], &in_ns(), now).unwrap_err();
        assert_eq!(r.reason, "ModuleNotEnabled");
        assert!(r.message.contains("runtimeSecurity"));
        let k = key(vec![Module::RuntimeSecurity]);
        assert!(check_key(&s, Some(&k), &[], &in_ns(), now).is_ok());
    }

    #[test]
    fn the_oldest_sensors_win_a_limited_key() {
        let mut k = key(vec![Module::RuntimeSecurity]);
        k.spec.limits = Some(KeyLimits {
            max_sensors: Some(1),
            expires: None,
            max_assets: None,
        });
        let (old, new) = (sensor("old", 1), sensor("new", 2));
        let peers = vec![Arc::new(old.clone()), Arc::new(new.clone())];
        let now = Timestamp::now();
        assert!(check_key(&old, Some(&k), &peers, &in_ns(), now).is_ok());
        assert_eq!(
            check_key(&new, Some(&k), &peers, &in_ns(), now)
                .unwrap_err()
                .reason,
            "SensorLimitReached"
        );
    }

    #[test]
    fn rejected_status_keeps_transition_times_of_unchanged_conditions() {
        let mut s = sensor("a", 1);
        let r = reject("KeyNotFound", "missing".into());
        let first = rejected(&s, &r, Timestamp::from_second(100).unwrap());
        s.status = Some(first.clone());
        let second = rejected(&s, &r, Timestamp::from_second(200).unwrap());
        assert_eq!(first.conditions, second.conditions);
        assert!(conditions::is_true(&second.conditions, "KeyRejected"));
    }
}
