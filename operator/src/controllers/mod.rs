//! The controllers, and the loop that runs them until shutdown.

pub mod image_policy;
pub mod inventory;
pub mod key;
pub mod runtime_policy;
pub mod sensor;
pub mod tag_rule;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use sightline_crds::{ActivationKey, Asset, ImagePolicy, RuntimePolicy, Sensor, TagRule};
use sightline_inventory::catalog::Catalog;

use crate::context::Context;
use crate::controllers::inventory::InventoryContext;
use crate::controllers::sensor::render::Defaults;
use crate::metrics::Metrics;
use crate::search::SharedIndex;

/// What the inventory controllers need beyond the client.
pub struct InventoryOptions {
    /// The catalog normalization uses; every Asset is looked at again
    /// when it changes (a signed bundle brought a newer one).
    pub catalog: tokio::sync::watch::Receiver<Arc<Catalog>>,
    /// How long an Asset no sensor sees is kept; `None` keeps it forever.
    pub retention: Option<Duration>,
    /// The search index (for TagRule match counts).
    pub index: SharedIndex,
}

/// A store of `K` kept by its own watch, and a stream that yields once each
/// time the `fingerprint` of some object changes or an object goes away.
///
/// The store is updated before the stream yields, so a reconcile the
/// stream triggers reads the new state.
/// What of a key its Sensors' reconciles read: the spec, the conditions,
/// whether it is being deleted, and for a key limiting its Sensors how
/// many it has (a freed place admits a waiting Sensor).
fn key_fingerprint(k: &ActivationKey) -> u64 {
    let status = k.status.as_ref();
    let conditions: Vec<(&str, &str)> = status
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| (c.type_.as_str(), c.status.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let limited = k
        .spec
        .limits
        .as_ref()
        .is_some_and(|l| l.max_sensors.is_some());
    hash_of(&(
        serde_json::to_string(&k.spec).unwrap_or_default(),
        conditions,
        limited.then(|| status.map(|s| s.sensors)),
        k.metadata.deletion_timestamp.is_some(),
    ))
}

/// One item each time the value `rx` watches changes.
fn changes<T: Send + Sync + 'static>(
    rx: tokio::sync::watch::Receiver<T>,
) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

fn store_with_changes<K>(
    api: Api<K>,
    fingerprint: impl Fn(&K) -> u64 + Send + Sync + 'static,
) -> (Store<K>, Synced, impl Stream<Item = ()> + Send + 'static)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let (listed, synced) = tokio::sync::watch::channel(false);
    let seen: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let changes = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .filter_map(move |event| {
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        let name = |o: &K| o.meta().name.clone().unwrap_or_default();
        let changed = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                seen.insert(name(&o), fingerprint(&o)) != Some(fingerprint(&o))
            }
            Ok(watcher::Event::Delete(o)) => seen.remove(&name(&o)).is_some(),
            Ok(watcher::Event::InitDone) => {
                let _ = listed.send(true);
                false
            }
            Ok(watcher::Event::Init) | Err(_) => false,
        };
        futures::future::ready(changed.then_some(()))
    });
    (store, Synced(synced), changes)
}

/// Longest a shutdown waits for a controller's store to fill.
const STORE_READY_GRACE: Duration = Duration::from_secs(10);

/// Resolves on `shutdown`, but not before `store` has its first full list
/// (or [`STORE_READY_GRACE`] has passed).
///
/// A controller's runner holds every reconcile until its store is ready,
/// and graceful shutdown stops the watch that fills the store: a shutdown
/// in the first moments after start would otherwise wait forever.
async fn once_ready<K>(store: Store<K>, shutdown: impl std::future::Future<Output = ()>)
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    shutdown.await;
    if tokio::time::timeout(STORE_READY_GRACE, store.wait_until_ready())
        .await
        .is_err()
    {
        tracing::warn!("a controller's store was still loading at shutdown; stopping anyway");
    }
}

/// Whether a store this operator keeps has listed everything once.
///
/// Every reconcile that reads another controller's store waits on this
/// first: a store that has not listed yet answers "no such object" for
/// objects that exist, and a reconcile acting on that answer (a Sensor
/// whose key looks deleted) would remove what it should keep. Any number
/// of reconciles may wait at once (a store's own `wait_until_ready` wakes
/// only the last of several concurrent waiters).
#[derive(Clone, Debug)]
pub struct Synced(tokio::sync::watch::Receiver<bool>);

impl Synced {
    /// Waits until the store has listed; fails if its watch stopped first.
    pub async fn wait(&self, kind: &'static str) -> crate::error::Result<()> {
        let mut rx = self.0.clone();
        rx.wait_for(|listed| *listed)
            .await
            .map(drop)
            .map_err(|_| crate::error::Error::StoreClosed { kind })
    }
}

/// A store kept by a watch of `api`, the gate that opens once it has
/// listed, and the stream of changed objects (for a controller to own).
fn reflected<K>(
    api: Api<K>,
    cfg: watcher::Config,
) -> (
    Store<K>,
    Synced,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    reflected_with(api, cfg, |_| {})
}

/// As [`reflected`], calling `seen` with each event once the store holds it.
fn reflected_with<K>(
    api: Api<K>,
    cfg: watcher::Config,
    mut seen: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> (
    Store<K>,
    Synced,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let (listed, synced) = tokio::sync::watch::channel(false);
    let stream = reflector::reflector(writer, watcher(api, cfg).default_backoff())
        .inspect(move |event| {
            // The reflector has applied the event to the store before
            // passing it on, so the gate opens on a complete store.
            if matches!(event, Ok(watcher::Event::InitDone)) {
                let _ = listed.send(true);
            }
            if let Ok(e) = event {
                seen(e);
            }
        })
        .applied_objects();
    (store, Synced(synced), stream)
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// Runs the controllers until `shutdown` resolves; returns once they have
/// finished the reconciles in flight.
pub async fn run(
    client: kube::Client,
    namespace: String,
    defaults: Defaults,
    inventory: InventoryOptions,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let cfg = watcher::Config::default().any_semantic();
    let keys_api: Api<ActivationKey> = Api::all(client.clone());
    let sensors_api: Api<Sensor> = Api::all(client.clone());

    // The Sensor and key stores are kept here rather than inside their
    // controllers, so each reconcile can wait for the other's to list.
    let (sensors, sensors_synced, sensor_objects) = reflected(sensors_api.clone(), cfg.clone());
    // A key change that matters to its Sensors (its spec, its conditions
    // such as `Expired`, and for a key limiting its Sensors their count)
    // re-reconciles them; a count or token change of another key does not.
    // The trigger comes from the store's own watch, after the store holds
    // the change, so a reconcile never reads the key as it was before.
    let (key_changed, key_changes) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut fingerprints: HashMap<String, u64> = HashMap::new();
    let (keys, keys_synced, key_objects) =
        reflected_with(keys_api.clone(), cfg.clone(), move |event| {
            let mut changed = |k: &ActivationKey, fp: Option<u64>| {
                let name = k.metadata.name.clone().unwrap_or_default();
                let before = match fp {
                    Some(fp) => fingerprints.insert(name.clone(), fp),
                    None => fingerprints.remove(&name),
                };
                if before.is_none() || before != fp {
                    let _ = key_changed.send(name);
                }
            };
            match event {
                watcher::Event::Apply(k) | watcher::Event::InitApply(k) => {
                    changed(k, Some(key_fingerprint(k)));
                }
                watcher::Event::Delete(k) => changed(k, None),
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        });
    let sensor_controller = Controller::for_stream(sensor_objects, sensors.clone())
        .owns(Api::<DaemonSet>::all(client.clone()), cfg.clone())
        .owns(Api::<CronJob>::all(client.clone()), cfg.clone())
        .owns(Api::<ServiceAccount>::all(client.clone()), cfg.clone())
        .owns(Api::<Role>::all(client.clone()), cfg.clone())
        .owns(Api::<RoleBinding>::all(client.clone()), cfg.clone());
    let key_controller = Controller::for_stream(key_objects, keys.clone()).owns(
        Api::<Secret>::namespaced(client.clone(), &namespace),
        cfg.clone(),
    );

    // A Sensor change recounts its key's sensors.
    let sensors_for_keys = sensors.clone();
    let sensor_controller = sensor_controller.reconcile_on(
        futures::stream::unfold(key_changes, |mut rx| async move {
            rx.recv().await.map(|name| (name, rx))
        })
        .flat_map(move |name: String| {
            futures::stream::iter(
                sensors_for_keys
                    .state()
                    .into_iter()
                    .filter(|s| s.spec.activation_key_ref.name == name)
                    .map(|s| ObjectRef::from_obj(&*s))
                    .collect::<Vec<_>>(),
            )
        }),
    );
    // A signed bundle pinning another sensor image re-renders every Sensor.
    let sensor_controller = sensor_controller.reconcile_all_on(
        futures::stream::iter(defaults.pinned_image.clone().map(changes)).flatten(),
    );
    let key_controller = key_controller.watches(sensors_api, cfg.clone(), |s: Sensor| {
        Some(ObjectRef::<ActivationKey>::new(
            &s.spec.activation_key_ref.name,
        ))
    });

    let ctx = Arc::new(Context::new(
        client.clone(),
        namespace,
        defaults,
        metrics.clone(),
        (keys.clone(), keys_synced),
        (sensors.clone(), sensors_synced),
    ));
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));

    // Every Asset is looked at again when some key's tags or some rule's
    // spec change; status-only updates (sensor counts, match counts) do not.
    let (tag_keys, tag_keys_synced, key_changes) =
        store_with_changes(Api::<ActivationKey>::all(client.clone()), |k| {
            hash_of(&k.spec.tags)
        });
    let (rules, rules_synced, rule_changes) =
        store_with_changes(Api::<TagRule>::all(client.clone()), |r| {
            hash_of(&(r.metadata.generation, &r.spec.query))
        });
    let asset_controller = Controller::new(Api::<Asset>::all(client.clone()), cfg.clone())
        .with_config(controller::Config::default().concurrency(8))
        .reconcile_all_on(futures::stream::select(
            futures::stream::select(key_changes, rule_changes),
            changes(inventory.catalog.clone()),
        ));
    let rule_controller = Controller::new(Api::<TagRule>::all(client.clone()), cfg.clone());
    let image_policy_controller =
        Controller::new(Api::<ImagePolicy>::all(client.clone()), cfg.clone());
    let s5 = once_ready(image_policy_controller.store(), shutdown.clone());
    let runtime_policy_controller =
        Controller::new(Api::<RuntimePolicy>::all(client.clone()), cfg.clone());
    let s6 = once_ready(runtime_policy_controller.store(), shutdown.clone());
    let s1 = once_ready(sensors.clone(), shutdown.clone());
    let s2 = once_ready(keys.clone(), shutdown.clone());
    let assets = asset_controller.store();
    let s3 = once_ready(assets.clone(), shutdown.clone());
    let s4 = once_ready(rule_controller.store(), shutdown.clone());
    let inventory_ctx = Arc::new(InventoryContext {
        client,
        catalog: inventory.catalog,
        keys: tag_keys,
        keys_synced: tag_keys_synced,
        rules,
        rules_synced,
        assets,
        retention: inventory.retention,
        index: inventory.index,
        metrics,
    });
    let assets_loop = asset_controller
        .graceful_shutdown_on(s3)
        .run(
            inventory::reconcile,
            inventory::error_policy,
            inventory_ctx.clone(),
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "inventory reconcile did not complete");
            }
        });
    let image_policies_loop = image_policy_controller
        .graceful_shutdown_on(s5)
        .run(
            image_policy::reconcile,
            image_policy::error_policy,
            inventory_ctx.clone(),
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "image policy reconcile did not complete");
            }
        });
    let runtime_policies_loop = runtime_policy_controller
        .graceful_shutdown_on(s6)
        .run(
            runtime_policy::reconcile,
            runtime_policy::error_policy,
            inventory_ctx.clone(),
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "runtime policy reconcile did not complete");
            }
        });
    let rules_loop = rule_controller
        .graceful_shutdown_on(s4)
        .run(tag_rule::reconcile, tag_rule::error_policy, inventory_ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "tag rule reconcile did not complete");
            }
        });

    let sensors_loop = sensor_controller
        .graceful_shutdown_on(s1)
        .run(sensor::reconcile, sensor::error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "sensor reconcile did not complete");
            }
        });
    let net_loop = {
        let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
        async move {
            if let Some(net) = ctx.defaults.network.clone() {
                tokio::select! {
                    () = sensor::netpol::keep_operator_policy(ctx, net) => {}
                    () = shutdown => {}
                }
            }
        }
    };
    let keys_loop = key_controller
        .graceful_shutdown_on(s2)
        .run(key::reconcile, key::error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "activation key reconcile did not complete");
            }
        });
    futures::join!(
        sensors_loop,
        keys_loop,
        assets_loop,
        rules_loop,
        image_policies_loop,
        runtime_policies_loop,
        net_loop
    );
}
