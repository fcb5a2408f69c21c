//! What every reconcile shares.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::reflector::Store;
use sightline_crds::{ActivationKey, Sensor};

use crate::controllers::Synced;
use crate::controllers::sensor::render::Defaults;
use crate::metrics::Metrics;

/// Shared state of the controllers.
pub struct Context {
    /// Client with the operator's identity.
    pub client: kube::Client,
    /// Namespace the operator runs in (token Secrets live here).
    pub namespace: String,
    /// Workload defaults.
    pub defaults: Defaults,
    /// Metrics.
    pub metrics: Metrics,
    /// Every ActivationKey, as watched.
    pub keys: Store<ActivationKey>,
    /// Open once `keys` has listed.
    pub keys_synced: Synced,
    /// Every Sensor, as watched.
    pub sensors: Store<Sensor>,
    /// Open once `sensors` has listed.
    pub sensors_synced: Synced,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Per Sensor UID: fingerprint of what was last applied, the workload's
    /// generation right after, and when.
    applied: Mutex<HashMap<String, (u64, i64, Instant)>>,
}

impl Context {
    /// A context over the given stores.
    pub fn new(
        client: kube::Client,
        namespace: String,
        defaults: Defaults,
        metrics: Metrics,
        (keys, keys_synced): (Store<ActivationKey>, Synced),
        (sensors, sensors_synced): (Store<Sensor>, Synced),
    ) -> Self {
        Self {
            client,
            namespace,
            defaults,
            metrics,
            keys,
            keys_synced,
            sensors,
            sensors_synced,
            failures: Mutex::default(),
            applied: Mutex::default(),
        }
    }

    /// Records a failure of `object` and returns how long to wait before the
    /// next try: 1 s, doubling, at most 5 minutes.
    pub fn backoff(&self, object: &str) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(object.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        let secs = 1u64
            .checked_shl(n.saturating_sub(1).min(16))
            .unwrap_or(u64::MAX)
            .min(300);
        Duration::from_secs(secs)
    }

    /// The workload generation recorded when exactly `fingerprint` was
    /// applied for `uid` less than `max_age` ago.
    pub fn applied(&self, uid: &str, fingerprint: u64, max_age: Duration) -> Option<i64> {
        let map = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        map.get(uid)
            .filter(|(f, _, at)| *f == fingerprint && at.elapsed() < max_age)
            .map(|(_, generation, _)| *generation)
    }

    /// Records what was applied for `uid`.
    pub fn record_applied(&self, uid: &str, fingerprint: u64, generation: i64) {
        let mut map = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(uid.to_owned(), (fingerprint, generation, Instant::now()));
    }

    /// Forgets what was applied for `uid` (the Sensor is gone).
    pub fn forget_applied(&self, uid: &str) {
        let mut map = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(uid);
    }

    /// Forgets the failures of `object` after a success.
    pub fn succeeded(&self, object: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(object);
    }
}
