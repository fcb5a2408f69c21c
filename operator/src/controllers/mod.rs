//! The controllers, and the loop that runs them until shutdown.

pub mod key;
pub mod sensor;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use sightline_crds::{ActivationKey, Sensor};

use crate::context::Context;
use crate::controllers::sensor::render::Defaults;
use crate::metrics::Metrics;

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

    let sensor_controller = Controller::new(sensors_api.clone(), cfg.clone())
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

    // A key change re-reconciles every Sensor that uses it; a Sensor change
    // recounts its key's sensors.
    let sensors_for_keys = sensors.clone();
    let sensor_controller =
        sensor_controller.watches(keys_api, cfg.clone(), move |key: ActivationKey| {
            let name = key.metadata.name.unwrap_or_default();
            sensors_for_keys
                .state()
                .into_iter()
                .filter(|s| s.spec.activation_key_ref.name == name)
                .map(|s| ObjectRef::from_obj(&*s))
                .collect::<Vec<_>>()
        });
    let key_controller = key_controller.watches(sensors_api, cfg, |s: Sensor| {
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
