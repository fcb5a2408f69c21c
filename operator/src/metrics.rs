//! Prometheus metrics: reconciles, failures by reason, durations, leadership.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `activationkey` or `sensor`.
    pub controller: String,
}

/// Labels of a failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The controller.
    pub controller: String,
    /// What failed (see `Error::metric_label`).
    pub reason: String,
}

/// Labels of an inventory count: which breakdown and which value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InventoryLabels {
    /// `kind`, `category`, `lifecycle` or `max_severity`.
    pub by: String,
    /// The kind, category, stage or severity counted.
    pub value: String,
}

/// An admission verdict.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// `allowed`, `warned` or `refused`.
    pub verdict: String,
}

/// Labels of a refused report or observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Why (`RateLimited`, `TooLarge`, `Invalid`, `NotYourNode`, `AssetLimit`, …).
    pub reason: String,
}

/// The operator's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// Reconciles started.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Reconciles that failed, by reason.
    pub failures: Family<FailureLabels, Counter>,
    /// Reconcile durations.
    pub duration: Family<ControllerLabels, Histogram>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Search latency.
    pub search_duration: Histogram,
    /// Assets by kind, category, lifecycle stage and highest severity.
    pub inventory: Family<InventoryLabels, Gauge>,
    /// Assets in the inventory.
    pub inventory_total: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Assets removed because no sensor saw them within the retention.
    pub assets_expired: Counter,
    /// Observations written from reports.
    pub ingest_accepted: Counter,
    /// Reports and observations refused, by reason.
    pub ingest_refusals: Family<RefusalLabels, Counter>,
    /// Vulnerability databases and bundles refused, by reason.
    pub vulndb_refusals: Family<RefusalLabels, Counter>,
    /// Databases sensors' pods refused, as they report them, by reason.
    pub sensor_database_refusals: Family<RefusalLabels, Counter>,
    /// Pods the image admission webhook judged, by verdict.
    pub admission_reviews: Family<VerdictLabels, Counter>,
    /// Time to judge a pod.
    pub admission_duration: Histogram,
    /// Registry they are in.
    pub registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0])
        });
        let leader = Gauge::default();
        let mut registry = Registry::with_prefix("sightline_operator");
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile durations",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let search_duration =
            Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5]);
        registry.register(
            "search_duration_seconds",
            "Time to evaluate a search over the in-memory index",
            search_duration.clone(),
        );
        let inventory = Family::<InventoryLabels, Gauge>::default();
        registry.register(
            "inventory_assets",
            "Assets by kind, hardware category, lifecycle stage and highest severity",
            inventory.clone(),
        );
        let inventory_total = Gauge::default();
        registry.register(
            "inventory_asset_count",
            "Assets in the inventory",
            inventory_total.clone(),
        );
        let assets_expired = Counter::default();
        registry.register(
            "assets_expired",
            "Assets removed because no sensor saw them within the retention",
            assets_expired.clone(),
        );
        let ingest_accepted = Counter::default();
        registry.register(
            "ingest_observations_accepted",
            "Observations from sensors and CI reports written into Assets",
            ingest_accepted.clone(),
        );
        let ingest_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "ingest_refusals",
            "Reports and observations the ingestion API refused, by reason",
            ingest_refusals.clone(),
        );
        let vulndb_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "vulndb_refusals",
            "Vulnerability databases and signed bundles refused (not served), by reason",
            vulndb_refusals.clone(),
        );
        let sensor_database_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "sensor_database_refusals",
            "Vulnerability databases sensors' pods refused (bad signature, unknown key, schema, unsigned, invalid), as they report them, by reason",
            sensor_database_refusals.clone(),
        );
        let admission_reviews = Family::<VerdictLabels, Counter>::default();
        registry.register(
            "admission_reviews",
            "Pods the image admission webhook judged, by verdict (allowed, warned, refused)",
            admission_reviews.clone(),
        );
        let admission_duration =
            Histogram::new([0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1]);
        registry.register(
            "admission_duration_seconds",
            "Time to judge a pod's images against the ImagePolicies",
            admission_duration.clone(),
        );
        Self {
            admission_reviews,
            admission_duration,
            ingest_accepted,
            ingest_refusals,
            vulndb_refusals,
            sensor_database_refusals,
            reconciles,
            failures,
            duration,
            leader,
            search_duration,
            inventory,
            inventory_total,
            assets_expired,
            registry: Arc::new(registry),
        }
    }
}

impl Metrics {
    /// Counts a reconcile and returns a timer that records its duration when dropped.
    pub fn reconcile(&self, controller: &str) -> ReconcileTimer {
        let labels = ControllerLabels {
            controller: controller.to_owned(),
        };
        self.reconciles.get_or_create(&labels).inc();
        ReconcileTimer {
            start: Instant::now(),
            metrics: self.clone(),
            labels,
        }
    }

    /// Counts an observation written.
    pub fn ingest_accepted(&self) {
        self.ingest_accepted.inc();
    }

    /// Counts a refusal by the ingestion API.
    pub fn ingest_refused(&self, reason: &str) {
        self.ingest_refusals
            .get_or_create(&RefusalLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a refused vulnerability database or bundle.
    pub fn vulndb_refused(&self, reason: &str) {
        self.vulndb_refusals
            .get_or_create(&RefusalLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a failed reconcile.
    pub fn failure(&self, controller: &str, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                controller: controller.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Publishes an inventory summary, replacing the previous one.
    pub fn set_inventory(&self, s: &sightline_inventory::index::Summary) {
        self.inventory.clear();
        self.inventory_total
            .set(i64::try_from(s.total).unwrap_or(i64::MAX));
        let groups = [
            ("kind", &s.by_kind),
            ("category", &s.by_category),
            ("lifecycle", &s.by_lifecycle),
            ("max_severity", &s.by_max_severity),
        ];
        for (by, counts) in groups {
            for (value, n) in counts {
                self.inventory
                    .get_or_create(&InventoryLabels {
                        by: by.to_owned(),
                        value: value.clone(),
                    })
                    .set(i64::try_from(*n).unwrap_or(i64::MAX));
            }
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Records a reconcile's duration when dropped, however the reconcile ends.
pub struct ReconcileTimer {
    start: Instant,
    metrics: Metrics,
    labels: ControllerLabels,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}
