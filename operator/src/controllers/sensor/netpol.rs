//! NetworkPolicies (`--network-policies`, on by default in the chart).
//!
//! - Each Sensor's pods get one: nothing may connect to them, except the
//!   metrics port of runtime sensors from the namespaces allowed to scrape
//!   (`--metrics-namespace`). Sensors only connect out.
//! - The operator's pods get one listing who may reach its API: for each
//!   namespace that runs Sensors the operator accepted, those Sensors' pods
//!   by the labels the operator gives them. It is rebuilt from the Sensor
//!   store whenever that set changes, so a namespace without Sensors has no
//!   way in. (The chart's own policy adds the namespaces it lists.)
//!
//! A NetworkPolicy takes effect only where the cluster's network plugin
//! enforces them; the API authenticates every caller either way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::Api;
use sightline_crds::Sensor;
use sightline_crds::sensor::SensorType;

use super::names;
use crate::context::Context;

/// The port runtime sensors serve `/metrics` on.
pub const RUNTIME_METRICS_PORT: i32 = 9464;

/// What the policies need to know, from the operator's flags.
#[derive(Clone, Debug, Default)]
pub struct NetworkDefaults {
    /// Namespaces allowed to scrape sensors' metrics.
    pub metrics_namespaces: Vec<String>,
    /// The labels of the operator's own pods.
    pub operator_selector: BTreeMap<String, String>,
    /// The name of the operator's policy (in its namespace).
    pub operator_policy: String,
}

fn namespace_peer(ns: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_owned(),
            ns.to_owned(),
        )])),
        ..LabelSelector::default()
    }
}

/// The policy of one Sensor's pods.
pub fn for_sensor(sensor: &Sensor, meta: ObjectMeta, net: &NetworkDefaults) -> NetworkPolicy {
    let scrapable = sensor.spec.type_ == SensorType::Runtime && !net.metrics_namespaces.is_empty();
    let ingress = scrapable.then(|| NetworkPolicyIngressRule {
        from: Some(
            net.metrics_namespaces
                .iter()
                .map(|ns| NetworkPolicyPeer {
                    namespace_selector: Some(namespace_peer(ns)),
                    ..NetworkPolicyPeer::default()
                })
                .collect(),
        ),
        ports: Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::Int(RUNTIME_METRICS_PORT)),
            protocol: Some("TCP".into()),
            ..NetworkPolicyPort::default()
        }]),
    });
    NetworkPolicy {
        metadata: meta,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(names::selector(sensor)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress.into_iter().collect()),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// Whether a Sensor runs (or ran and should keep reaching the API): not
/// being deleted, and not refused.
fn admitted(sensor: &Sensor) -> bool {
    sensor.metadata.deletion_timestamp.is_none()
        && sensor
            .status
            .as_ref()
            .and_then(|s| sightline_crds::conditions::find(&s.conditions, "Ready"))
            .is_some_and(|c| matches!(c.reason.as_str(), "Running" | "RollingOut" | "ApplyFailed"))
}

/// The operator's policy: the accepted Sensors' pods, by namespace.
pub fn for_operator(
    namespace: &str,
    net: &NetworkDefaults,
    sensors: &BTreeMap<String, BTreeSet<String>>,
) -> NetworkPolicy {
    let from = sensors
        .iter()
        .map(|(ns, labels)| NetworkPolicyPeer {
            namespace_selector: Some(namespace_peer(ns)),
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_owned(),
                    "sightline-sensor".to_owned(),
                )])),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: names::LABEL_SENSOR.into(),
                    operator: "In".into(),
                    values: Some(labels.iter().cloned().collect()),
                }]),
            }),
            ..NetworkPolicyPeer::default()
        })
        .collect::<Vec<_>>();
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(net.operator_policy.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                names::MANAGED_BY.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(net.operator_selector.clone()),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(
                (!from.is_empty())
                    .then_some(NetworkPolicyIngressRule {
                        from: Some(from),
                        ports: None,
                    })
                    .into_iter()
                    .collect(),
            ),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// The accepted Sensors: namespace to their pods' `sightline.dev/sensor` labels.
pub fn accepted(sensors: &[Arc<Sensor>]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sensors.iter().filter(|s| admitted(s)) {
        out.entry(s.namespace().unwrap_or_default())
            .or_default()
            .insert(names::label_value(&s.name_any()));
    }
    out
}

/// Keeps the operator's policy equal to the accepted Sensors: looks every
/// two seconds, writes only on a change (and every few minutes, to repair
/// edits).
pub async fn keep_operator_policy(ctx: Arc<Context>, net: NetworkDefaults) {
    if ctx.sensors_synced.wait("Sensor").await.is_err() {
        return;
    }
    let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let mut last: Option<(BTreeMap<String, BTreeSet<String>>, Instant)> = None;
    loop {
        let now = accepted(&ctx.sensors.state());
        let stale = last
            .as_ref()
            .is_none_or(|(seen, at)| *seen != now || at.elapsed() > Duration::from_secs(300));
        if stale {
            let policy = for_operator(&ctx.namespace, &net, &now);
            match crate::apply::object(&api, &policy, super::MANAGER, "NetworkPolicy").await {
                Ok(_) => {
                    if last.as_ref().is_none_or(|(seen, _)| *seen != now) {
                        tracing::info!(
                            namespaces = now.len(),
                            sensors = now.values().map(BTreeSet::len).sum::<usize>(),
                            "the operator's NetworkPolicy admits the accepted sensors"
                        );
                    }
                    last = Some((now, Instant::now()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot apply the operator's NetworkPolicy; retrying")
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensor(ns: &str, name: &str, type_: &str, reason: Option<&str>) -> Arc<Sensor> {
        let mut s: Sensor = serde_json::from_value(serde_json::json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "Sensor",
            "metadata": {"name": name, "namespace": ns, "uid": "u"},
            "spec": {"type": type_, "activationKeyRef": {"name": "k"}},
        }))
        .expect("sensor");
        if let Some(r) = reason {
            s.status = serde_json::from_value(serde_json::json!({"conditions": [{
                "type": "Ready", "status": "True", "reason": r, "message": "",
                "lastTransitionTime": "2026-12-07T00:00:00Z"
            }]}))
            .expect("status");
        }
        Arc::new(s)
    }

    #[test]
    fn sensors_pods_take_no_connections_but_scrapes_of_runtime_metrics() {
        let net = NetworkDefaults {
            metrics_namespaces: vec!["monitoring".into()],
            ..NetworkDefaults::default()
        };
        let runtime = for_sensor(
            &sensor("a", "rt", "runtime", None),
            ObjectMeta::default(),
            &net,
        );
        let spec = runtime.spec.expect("spec");
        let rules = spec.ingress.expect("ingress");
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].ports.as_ref().and_then(|p| p[0].port.clone()),
            Some(IntOrString::Int(9464))
        );
        let container = for_sensor(
            &sensor("a", "c", "container", None),
            ObjectMeta::default(),
            &net,
        );
        assert_eq!(
            container.spec.and_then(|s| s.ingress),
            Some(vec![]),
            "deny all"
        );
        let quiet = for_sensor(
            &sensor("a", "rt", "runtime", None),
            ObjectMeta::default(),
            &NetworkDefaults::default(),
        );
        assert_eq!(quiet.spec.and_then(|s| s.ingress), Some(vec![]));
    }

    #[test]
    fn the_operator_admits_only_accepted_sensors_by_namespace() {
        let sensors = vec![
            sensor("a", "one", "container", Some("Running")),
            sensor("a", "two", "runtime", Some("RollingOut")),
            sensor("b", "three", "registry", Some("KeyNotFound")),
            sensor("c", "four", "container", None),
        ];
        let accepted = accepted(&sensors);
        assert_eq!(
            accepted,
            BTreeMap::from([(
                "a".to_owned(),
                BTreeSet::from(["one".to_owned(), "two".to_owned()])
            )])
        );
        let net = NetworkDefaults {
            operator_policy: "sightline-operator-sensors".into(),
            operator_selector: BTreeMap::from([("app".to_owned(), "op".to_owned())]),
            ..NetworkDefaults::default()
        };
        let policy = for_operator("sightline-system", &net, &accepted);
        let json = serde_json::to_value(&policy).expect("json");
        let from = &json["spec"]["ingress"][0]["from"][0];
        assert_eq!(
            from["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "a"
        );
        assert_eq!(
            from["podSelector"]["matchExpressions"][0]["values"],
            serde_json::json!(["one", "two"])
        );
        let none = for_operator("sightline-system", &net, &BTreeMap::new());
        assert_eq!(none.spec.and_then(|s| s.ingress), Some(vec![]), "nobody");
    }
}
