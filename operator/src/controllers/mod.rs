//! The controllers, and the loop that runs them until shutdown.

pub mod key;
pub mod sensor;
pub mod triggers;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use sightline_crds::{ActivationKey, Sensor};

use crate::context::Context;
use crate::controllers::sensor::render::Defaults;
use crate::metrics::Metrics;

/// Hash of what makes a Sensor worth reconciling again.
fn meaningful_change(s: &Sensor) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        s.metadata.generation,
        &s.metadata.finalizers,
        s.metadata.deletion_timestamp.is_some(),
    )
        .hash(&mut h);
    Some(h.finish())
}

fn users_of(
    sensors: &kube::runtime::reflector::Store<Sensor>,
    key: &str,
) -> Vec<ObjectRef<Sensor>> {
    sensors
        .state()
        .into_iter()
        .filter(|s| s.spec.activation_key_ref.name == key)
        .map(|s| ObjectRef::from_obj(&*s))
        .collect()
}

/// Runs both controllers until `shutdown` resolves; returns once they have
/// finished the reconciles in flight.
pub async fn run(
    client: kube::Client,
    namespace: String,
    defaults: Defaults,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let cfg = watcher::Config::default().any_semantic();
    let keys_api: Api<ActivationKey> = Api::all(client.clone());
    let sensors_api: Api<Sensor> = Api::all(client.clone());

    // Sensors themselves write their status (lastScanTime, assetsReported),
    // and so do we: only a new generation, a finalizer or a deletion is a
    // reason to reconcile a Sensor again.
    let (sensor_reader, sensor_writer) = reflector::store();
    let sensor_trigger = reflector::reflector(
        sensor_writer,
        watcher::watcher(sensors_api.clone(), cfg.clone()),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(meaningful_change, PredicateConfig::default());
    let sensor_controller = Controller::for_stream(sensor_trigger, sensor_reader)
        .owns(Api::<DaemonSet>::all(client.clone()), cfg.clone())
        .owns(Api::<CronJob>::all(client.clone()), cfg.clone())
        .owns(Api::<ServiceAccount>::all(client.clone()), cfg.clone())
        .owns(Api::<Role>::all(client.clone()), cfg.clone())
        .owns(Api::<RoleBinding>::all(client.clone()), cfg.clone());
    let key_controller = Controller::new(keys_api.clone(), cfg.clone()).owns(
        Api::<Secret>::namespaced(client.clone(), &namespace),
        cfg.clone(),
    );
    let sensors = sensor_controller.store();
    let keys = key_controller.store();

    // A key's spec change re-reconciles every Sensor that uses it; a Sensor
    // created, deleted or moved to another key recounts its key, and, when
    // that key limits its Sensors, re-decides which of them may run.
    let sensors_for_keys = sensors.clone();
    let sensors_for_peers = sensors.clone();
    let keys_for_peers = keys.clone();
    let sensor_controller = sensor_controller
        .watches_stream(
            triggers::spec_changes(keys_api, cfg.clone()),
            move |key: ActivationKey| {
                let name = key.metadata.name.unwrap_or_default();
                users_of(&sensors_for_keys, &name)
            },
        )
        .watches_stream(
            triggers::spec_changes(sensors_api.clone(), cfg.clone()),
            move |s: Sensor| {
                let key = &s.spec.activation_key_ref.name;
                let limited = keys_for_peers.get(&ObjectRef::new(key)).is_some_and(|k| {
                    k.spec
                        .limits
                        .as_ref()
                        .is_some_and(|l| l.max_sensors.is_some())
                });
                if limited {
                    users_of(&sensors_for_peers, key)
                } else {
                    Vec::new()
                }
            },
        );
    let key_controller =
        key_controller.watches_stream(triggers::spec_changes(sensors_api, cfg), |s: Sensor| {
            Some(ObjectRef::<ActivationKey>::new(
                &s.spec.activation_key_ref.name,
            ))
        });

    let ctx = Arc::new(Context::new(
        client,
        namespace,
        defaults,
        metrics,
        keys.clone(),
        sensors.clone(),
    ));
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let (s1, s2) = (shutdown.clone(), shutdown);

    let sensors_loop = sensor_controller
        .graceful_shutdown_on(s1)
        .run(sensor::reconcile, sensor::error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "sensor reconcile did not complete");
            }
        });
    let keys_loop = key_controller
        .graceful_shutdown_on(s2)
        .run(key::reconcile, key::error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "activation key reconcile did not complete");
            }
        });
    futures::join!(sensors_loop, keys_loop);
}
