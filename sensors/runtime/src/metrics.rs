//! The runtime sensor's Prometheus metrics (`/metrics`): events delivered
//! and records lost per kind (from the programs' per-CPU drop counters,
//! summed), violations per outcome, and tracked workloads.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sightline_runtime_common::kind;

/// A kind of record.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `exec`, `exit`, `open`, `connect`, or `violation` (a violation whose
    /// record was lost; it was enforced all the same).
    pub kind: String,
}

/// An outcome of a violation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `reported`, `denied` or `killed`.
    pub outcome: String,
}

/// When a pod was guarded, relative to its containers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhenLabel {
    /// `before_containers` (its cgroup held at most the sandbox: every
    /// container inherits the rules from its first exec) or
    /// `after_containers` (a container's cgroup existed already; what ran
    /// in it before the guard was not judged).
    pub when: String,
}

/// The metrics.
#[derive(Clone)]
pub struct Metrics {
    /// Records delivered to userspace.
    pub events: Family<KindLabel, Counter>,
    /// Records lost because the ring buffer was full.
    pub dropped: Family<KindLabel, Counter>,
    /// Violations.
    pub violations: Family<OutcomeLabel, Counter>,
    /// Workloads with rules.
    pub workloads: Gauge,
    /// Workloads whose rules do not hold now (retried each pass).
    pub unprotected: Gauge,
    /// Events the webhook could not take or deliver.
    pub webhook_dropped: Counter,
    /// Pods guarded before their containers were known, by when.
    pub guarded: Family<WhenLabel, Counter>,
    registry: Arc<Registry>,
    last_drops: Arc<std::sync::Mutex<[u64; kind::COUNT as usize]>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sightline_runtime");
        let events = Family::<KindLabel, Counter>::default();
        let dropped = Family::<KindLabel, Counter>::default();
        let violations = Family::<OutcomeLabel, Counter>::default();
        let workloads = Gauge::default();
        let unprotected = Gauge::default();
        let webhook_dropped = Counter::default();
        let guarded = Family::<WhenLabel, Counter>::default();
        registry.register("events", "Records delivered to userspace", events.clone());
        registry.register(
            "dropped",
            "Records lost because the ring buffer was full (summed over CPUs)",
            dropped.clone(),
        );
        registry.register("violations", "RuntimePolicy violations", violations.clone());
        registry.register(
            "workloads",
            "Containers with rules applied",
            workloads.clone(),
        );
        registry.register(
            "unprotected_workloads",
            "Containers whose rules could not be applied as chosen (the policy's node status names them)",
            unprotected.clone(),
        );
        registry.register(
            "webhook_dropped",
            "Events the webhook output could not queue or deliver",
            webhook_dropped.clone(),
        );
        registry.register(
            "pods_guarded",
            "Pods whose rules were written on the pod's cgroup, by whether a container's cgroup existed yet",
            guarded.clone(),
        );
        for when in ["before_containers", "after_containers"] {
            let _ = guarded.get_or_create(&WhenLabel { when: when.into() });
        }
        // Every kind shows up from the start, at zero.
        for k in KINDS {
            let _ = dropped.get_or_create(&KindLabel { kind: (*k).into() });
            let _ = events.get_or_create(&KindLabel { kind: (*k).into() });
        }
        Metrics {
            events,
            dropped,
            violations,
            workloads,
            unprotected,
            webhook_dropped,
            guarded,
            registry: Arc::new(registry),
            last_drops: Arc::default(),
        }
    }
}

/// Names of the drop counter slots, by index.
const KINDS: &[&str] = &["violation", "exec", "exit", "open", "connect"];

/// The label of record kind `k`.
pub fn kind_name(k: u8) -> &'static str {
    KINDS.get(usize::from(k)).copied().unwrap_or("unknown")
}

impl Metrics {
    /// Brings the drop counters up to the programs' totals; returns how
    /// many violations lost their record since the last call.
    pub fn observe_drops(&self, totals: [u64; kind::COUNT as usize]) -> u64 {
        let Ok(mut last) = self.last_drops.lock() else {
            return 0;
        };
        let lost_violations = totals[0].saturating_sub(last[0]);
        for (i, total) in totals.iter().enumerate() {
            let delta = total.saturating_sub(last[i]);
            if delta > 0 {
                self.dropped
                    .get_or_create(&KindLabel {
                        kind: KINDS[i].into(),
                    })
                    .inc_by(delta);
            }
            last[i] = last[i].max(*total);
        }
        lost_violations
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until the process ends.
pub async fn serve(addr: std::net::SocketAddr, metrics: Metrics) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_totals_become_counter_increments() {
        let m = Metrics::default();
        assert_eq!(m.observe_drops([0, 5, 0, 0, 1]), 0);
        assert_eq!(m.observe_drops([3, 7, 0, 0, 1]), 3);
        let text = m.encode();
        assert!(
            text.contains("sightline_runtime_dropped_total{kind=\"exec\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("sightline_runtime_dropped_total{kind=\"connect\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sightline_runtime_dropped_total{kind=\"open\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("sightline_runtime_dropped_total{kind=\"violation\"} 3"),
            "{text}"
        );
    }
}
