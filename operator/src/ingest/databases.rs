//! What a Sensor's pods say of their vulnerability databases.
//!
//! A sensor refuses a database whose signature, key or schema does not
//! check out (or that is no database at all) and keeps matching with the
//! one it had; it logs why, and says so here. The operator counts each new
//! refusal in `sightline_operator_sensor_database_refusals_total{reason}`
//! and writes the Sensor's `status.database` (how many pods report, how
//! many refuse, the oldest database in use, the latest refusal) under its
//! own field manager, so `kubectl get sensors` shows a refusing fleet.
//!
//! Each pod's word is kept in memory and counts until it is
//! [`STALE`]: pods say it after every database refresh (hourly by
//! default), so a restarted operator has the whole picture again within
//! one refresh, and a pod that went away stops counting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use sightline_crds::Sensor;
use sightline_crds::sensor::{DatabaseRefusal, SensorDatabase};
use sightline_report::DatabaseState;

use super::auth::Caller;
use super::policy::Refusal;
use super::writer::WriteError;
use crate::metrics::Metrics;

/// A pod's word counts this long.
pub const STALE: Duration = Duration::from_secs(6 * 3600);
/// The field manager of `status.database`.
const MANAGER: &str = "sightline/database";

/// One Sensor's pods' words.
#[derive(Default)]
struct Fleet {
    /// Node (or '' for a pod bound to none) → its state, when said.
    pods: HashMap<String, (DatabaseState, Instant)>,
    last_refusal: Option<DatabaseRefusal>,
    /// What was last written.
    written: Option<SensorDatabase>,
}

impl Fleet {
    /// Takes `state` from the pod on `node`; returns whether it is a new
    /// refusal.
    fn take(&mut self, node: Option<&str>, state: &DatabaseState) -> bool {
        self.pods.retain(|_, (_, at)| at.elapsed() < STALE);
        let key = node.unwrap_or_default().to_owned();
        let before = self.pods.insert(key, (state.clone(), Instant::now()));
        let new_refusal = match (&state.refused, before.and_then(|(s, _)| s.refused)) {
            (Some(now), Some(then)) => *now != then,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if let (true, Some(r)) = (new_refusal, &state.refused) {
            self.last_refusal = Some(DatabaseRefusal {
                node: node.map(str::to_owned),
                reason: r.reason.clone(),
                message: r.message.clone(),
                time: Time(jiff::Timestamp::now()),
            });
        }
        new_refusal
    }

    fn summary(&self) -> SensorDatabase {
        let refusing = self
            .pods
            .values()
            .filter(|(s, _)| s.refused.is_some())
            .count();
        let oldest = self
            .pods
            .values()
            .filter_map(|(s, _)| s.built.as_deref()?.parse::<jiff::Timestamp>().ok())
            .min();
        SensorDatabase {
            reporting: i64::try_from(self.pods.len()).unwrap_or(i64::MAX),
            refusing: i64::try_from(refusing).unwrap_or(i64::MAX),
            oldest_built: oldest.map(Time),
            last_refusal: self.last_refusal.clone(),
        }
    }
}

/// Every Sensor's pods' words.
pub struct Databases {
    client: kube::Client,
    metrics: Metrics,
    fleets: Mutex<HashMap<String, Fleet>>,
}

impl Databases {
    /// Writes Sensors' status through `client`, counts in `metrics`.
    pub fn new(client: kube::Client, metrics: Metrics) -> Self {
        Self {
            client,
            metrics,
            fleets: Mutex::default(),
        }
    }

    /// Takes what `caller` says of its database.
    pub async fn report(&self, caller: &Caller, state: &DatabaseState) -> Result<(), WriteError> {
        let Caller::Sensor { sensor, node, .. } = caller else {
            return Err(WriteError::Refused(Refusal {
                reason: "KindNotAllowed",
                message: "only a Sensor's pods say which database they use".into(),
            }));
        };
        let Some((namespace, name)) = sensor.split_once('/') else {
            return Ok(());
        };
        let summary = {
            let mut fleets = self.fleets.lock().unwrap_or_else(|p| p.into_inner());
            let fleet = fleets.entry(sensor.clone()).or_default();
            if fleet.take(node.as_ref().map(|n| n.name.as_str()), state)
                && let Some(r) = &state.refused
            {
                self.metrics
                    .sensor_database_refusals
                    .get_or_create(&crate::metrics::RefusalLabels {
                        reason: r.reason.clone(),
                    })
                    .inc();
                tracing::warn!(%sensor, node = ?node.as_ref().map(|n| &n.name), reason = %r.reason, "a sensor refused its vulnerability database: {}", r.message);
            }
            let summary = fleet.summary();
            if fleet.written.as_ref() == Some(&summary) {
                return Ok(());
            }
            summary
        };
        let api: Api<Sensor> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({
            "apiVersion": "sightline.dev/v1alpha1",
            "kind": "Sensor",
            "status": { "database": summary },
        });
        api.patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        let mut fleets = self.fleets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = fleets.get_mut(sensor) {
            f.written = Some(summary);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_report::DatabaseRefusal as Said;

    fn refused(reason: &str) -> DatabaseState {
        DatabaseState {
            built: Some("2026-12-01T00:00:00Z".into()),
            refused: Some(Said {
                reason: reason.into(),
                message: format!("{reason}!"),
            }),
        }
    }

    #[test]
    fn a_fleet_counts_refusing_pods_and_each_new_refusal_once() {
        let mut f = Fleet::default();
        let fresh = DatabaseState {
            built: Some("2026-12-07T00:00:00Z".into()),
            refused: None,
        };
        assert!(!f.take(Some("a"), &fresh));
        assert!(f.take(Some("b"), &refused("bad_signature")));
        // Said again after the next refresh: the same refusal, not a new one.
        assert!(!f.take(Some("b"), &refused("bad_signature")));
        assert!(f.take(Some("b"), &refused("schema")));
        let s = f.summary();
        assert_eq!((s.reporting, s.refusing), (2, 1));
        assert_eq!(
            s.oldest_built.map(|t| t.0.to_string()).as_deref(),
            Some("2026-12-01T00:00:00Z")
        );
        let last = s.last_refusal.expect("a refusal");
        assert_eq!(
            (last.node.as_deref(), last.reason.as_str()),
            (Some("b"), "schema")
        );
        // b takes a good database: nobody refuses, the last refusal stays.
        assert!(!f.take(Some("b"), &fresh));
        let s = f.summary();
        assert_eq!((s.reporting, s.refusing), (2, 0));
        assert!(s.last_refusal.is_some());
    }
}
