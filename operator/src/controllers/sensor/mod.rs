//! The Sensor controller: checks the key, renders the workload and its RBAC,
//! applies them with server-side apply, deletes what is no longer desired,
//! and reports status.

pub mod names;
pub mod netpol;
pub mod policy;
pub mod rbac;
pub mod render;
mod status;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sightline_crds::{ActivationKey, Sensor};

use crate::context::Context;
use crate::error::{Error, Result};
use render::Workload;
pub use status::Rejection;

/// Field manager of this controller.
pub const MANAGER: &str = "sightline-operator/sensor";
/// Finalizer that removes the Sensor's cluster-scoped binding.
pub const FINALIZER: &str = "sightline.dev/cleanup";
const SAFETY_REQUEUE: Duration = Duration::from_secs(300);

/// Reconciles one Sensor.
#[tracing::instrument(skip_all, fields(sensor = %sensor.name_any(), namespace = sensor.namespace().unwrap_or_default()))]
pub async fn reconcile(
    sensor: Arc<Sensor>,
    ctx: Arc<Context>,
) -> Result<Action, finalizer::Error<Error>> {
    let _timer = ctx.metrics.reconcile("sensor");
    let ns = sensor.namespace().unwrap_or_default();
    let api: Api<Sensor> = Api::namespaced(ctx.client.clone(), &ns);
    let id = format!("{ns}/{}", sensor.name_any());
    let name = sensor.name_any();
    let at = sensor.finalizers().iter().position(|f| f == FINALIZER);
    let res = match (sensor.meta().deletion_timestamp.is_some(), at) {
        // Being deleted, and ours done already (or never added).
        (true, None) => Ok(Action::await_change()),
        (true, Some(i)) => {
            cleanup(&sensor, &ctx)
                .await
                .map_err(finalizer::Error::CleanupFailed)?;
            let mut rest = sensor.finalizers().to_vec();
            rest.remove(i);
            api.patch(
                &name,
                &PatchParams::default(),
                &finalizers_patch(&sensor, rest),
            )
            .await
            .map_err(finalizer::Error::RemoveFinalizer)?;
            Ok(Action::await_change())
        }
        (false, at) => {
            // The finalizer goes on before anything cluster-scoped is made,
            // in the same pass: waiting for the update's watch event cost
            // every new Sensor a round trip.
            if at.is_none() {
                let mut with = sensor.finalizers().to_vec();
                with.push(FINALIZER.to_owned());
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &finalizers_patch(&sensor, with),
                )
                .await
                .map_err(finalizer::Error::AddFinalizer)?;
            }
            apply(&sensor, &ctx)
                .await
                .map_err(finalizer::Error::ApplyFailed)
        }
    };
    if res.is_ok() {
        ctx.succeeded(&id);
    }
    res
}

/// Sets a Sensor's finalizers to `finalizers`, on the version read: a
/// change made since fails with a conflict (and is retried) instead of
/// being overwritten.
fn finalizers_patch(sensor: &Sensor, finalizers: Vec<String>) -> Patch<serde_json::Value> {
    Patch::Merge(serde_json::json!({
        "metadata": {
            "resourceVersion": sensor.resource_version(),
            "finalizers": finalizers,
        }
    }))
}

/// Backs off exponentially per Sensor on transient failures.
pub fn error_policy(
    sensor: Arc<Sensor>,
    err: &finalizer::Error<Error>,
    ctx: Arc<Context>,
) -> Action {
    let reason = match err {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.metric_label(),
        _ => "finalizer",
    };
    ctx.metrics.failure("sensor", reason);
    let id = format!(
        "{}/{}",
        sensor.namespace().unwrap_or_default(),
        sensor.name_any()
    );
    let delay = ctx.backoff(&id);
    tracing::warn!(sensor = %id, error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply(sensor: &Sensor, ctx: &Context) -> Result<Action> {
    // A key missing from a store that has not listed yet is no missing key:
    // acting on it would prune every Sensor's workload at each restart.
    ctx.keys_synced.wait("ActivationKey").await?;
    let now = Timestamp::now();
    let key = ctx
        .keys
        .get(&ObjectRef::new(&sensor.spec.activation_key_ref.name));
    let wants_namespace = key
        .as_ref()
        .and_then(|k| k.spec.scope.as_ref())
        .is_some_and(|s| s.namespace_selector.is_some());
    let namespace_labels = if wants_namespace {
        namespace_labels(ctx, &sensor.namespace().unwrap_or_default()).await?
    } else {
        Default::default()
    };
    let namespace = status::SensorNamespace {
        labels: &namespace_labels,
        operator: &ctx.namespace,
    };
    // Only a limited key needs the other Sensors (to rank by age); copying
    // the whole store on every reconcile would be quadratic work.
    let limited = key
        .as_ref()
        .and_then(|k| k.spec.limits.as_ref())
        .is_some_and(|l| l.max_sensors.is_some());
    let peers: Vec<Arc<Sensor>> = if limited {
        ctx.sensors.state()
    } else {
        Vec::new()
    };
    let verdict = status::check_key(sensor, key.as_deref(), &peers, &namespace, now)
        .and_then(|key| status::check_spec(sensor).map(|()| key))
        .and_then(|key| ctx.defaults.policy.check(sensor, key).map(|()| key));

    let key = match verdict {
        Ok(key) => key.clone(),
        Err(rejection) => {
            // Nothing runs for a rejected Sensor: remove what it ran before.
            ctx.forget_applied(&sensor.uid().unwrap_or_default());
            prune(sensor, ctx, None).await?;
            status::write(sensor, ctx, status::rejected(sensor, &rejection, now)).await?;
            // Wait for a change of the Sensor or its key (both are watched);
            // an expiring key is handled by the key's own requeue.
            return Ok(Action::await_change());
        }
    };

    let (applied, changed) = match apply_owned(sensor, &key, ctx).await {
        Ok(w) => w,
        Err(e) => {
            let failed = status::degraded(sensor, &e, now);
            // The status write is best effort: the original error matters more.
            let _ = status::write(sensor, ctx, failed).await;
            return Err(e);
        }
    };
    // A Sensor never reconciled before has nothing left to prune.
    if changed && sensor.status.is_some() {
        prune(sensor, ctx, Some(&applied)).await?;
    }
    status::write(sensor, ctx, status::running(sensor, &applied, now)).await?;
    // A key reaching its expiry writes `Expired` into its status, and key
    // changes re-reconcile their Sensors, so no expiry timer is needed here.
    Ok(Action::requeue(SAFETY_REQUEUE))
}

async fn namespace_labels(
    ctx: &Context,
    ns: &str,
) -> Result<std::collections::BTreeMap<String, String>> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let n = api.get(ns).await.map_err(|source| Error::Get {
        kind: "Namespace",
        name: ns.to_owned(),
        source,
    })?;
    Ok(n.metadata.labels.unwrap_or_default())
}

fn owned_meta(sensor: &Sensor, name: String, namespaced: bool) -> Result<ObjectMeta> {
    let mut labels = names::labels(sensor);
    let mut owner_references = None;
    if namespaced {
        let owner = sensor
            .controller_owner_ref(&())
            .ok_or(Error::MissingField {
                kind: "Sensor",
                field: "metadata.uid",
            })?;
        owner_references = Some(vec![owner]);
    } else {
        // Cluster-scoped objects cannot be owned by a namespaced Sensor; the
        // finalizer removes them, found by these labels.
        labels.insert(
            names::LABEL_SENSOR_NAMESPACE.into(),
            sensor.namespace().unwrap_or_default(),
        );
    }
    Ok(ObjectMeta {
        name: Some(name),
        namespace: if namespaced { sensor.namespace() } else { None },
        labels: Some(labels),
        owner_references,
        ..ObjectMeta::default()
    })
}

async fn apply_as<K>(api: &Api<K>, obj: &K, kind: &'static str) -> Result<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    crate::apply::object(api, obj, MANAGER, kind).await
}

/// Everything a running Sensor owns, built without I/O.
struct Desired {
    service_account: ServiceAccount,
    role: Role,
    role_binding: RoleBinding,
    cluster_role_binding: ClusterRoleBinding,
    workload: Workload,
    network_policy: Option<NetworkPolicy>,
}

impl Desired {
    fn build(sensor: &Sensor, key: &ActivationKey, ctx: &Context) -> Result<Self> {
        let name = names::workload(sensor);
        Ok(Self {
            service_account: rbac::service_account(owned_meta(sensor, name.clone(), true)?),
            role: rbac::role(sensor, owned_meta(sensor, name.clone(), true)?),
            role_binding: rbac::role_binding(sensor, owned_meta(sensor, name.clone(), true)?),
            cluster_role_binding: rbac::cluster_role_binding(
                sensor,
                owned_meta(sensor, names::cluster_binding(sensor), false)?,
            ),
            network_policy: match &ctx.defaults.network {
                Some(net) => Some(netpol::for_sensor(
                    sensor,
                    owned_meta(sensor, name.clone(), true)?,
                    net,
                )),
                None => None,
            },
            workload: render::workload(sensor, key, &ctx.defaults, owned_meta(sensor, name, true)?),
        })
    }

    /// A fingerprint of the whole desired state.
    fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let parts = [
            serde_json::to_string(&self.service_account),
            serde_json::to_string(&self.role),
            serde_json::to_string(&self.role_binding),
            serde_json::to_string(&self.cluster_role_binding),
            match &self.workload {
                Workload::DaemonSet(d) => serde_json::to_string(d),
                Workload::CronJob(c) => serde_json::to_string(c),
            },
            serde_json::to_string(&self.network_policy),
        ];
        for p in parts {
            p.unwrap_or_default().hash(&mut h);
        }
        h.finish()
    }
}

/// Applies what the Sensor needs, or, when exactly this was applied recently
/// and the workload has not been changed since, only reads the workload back.
///
/// Every reconcile applying five objects with server-side apply made the API
/// server the bottleneck at a thousand Sensors; the workload's generation
/// tells whether anyone changed it since, and the record expires with the
/// safety requeue, so drift in the RBAC objects is repaired within minutes.
async fn apply_owned(
    sensor: &Sensor,
    key: &ActivationKey,
    ctx: &Context,
) -> Result<(Workload, bool)> {
    let desired = Desired::build(sensor, key, ctx)?;
    let fingerprint = desired.fingerprint();
    let uid = sensor.uid().unwrap_or_default();
    if let Some(generation) = ctx.applied(&uid, fingerprint, SAFETY_REQUEUE)
        && let Some(current) = read_workload(sensor, ctx, &desired.workload).await?
        && workload_generation(&current) == Some(generation)
    {
        return Ok((current, false));
    }
    let ns = sensor.namespace().unwrap_or_default();
    let c = &ctx.client;
    // A RoleBinding may be created only once its Role exists (the API
    // server checks that the binder holds the Role's permissions, unless it
    // may `bind` any Role, which the operator may not): the other three
    // objects go at once, then the binding.
    let (sa_api, role_api, rb_api, crb_api) = (
        Api::namespaced(c.clone(), &ns),
        Api::namespaced(c.clone(), &ns),
        Api::namespaced(c.clone(), &ns),
        Api::all(c.clone()),
    );
    futures::try_join!(
        apply_as(&sa_api, &desired.service_account, "ServiceAccount"),
        apply_as(&role_api, &desired.role, "Role"),
        apply_as(
            &crb_api,
            &desired.cluster_role_binding,
            "ClusterRoleBinding"
        ),
    )?;
    // The binding, the NetworkPolicy and the workload at once: a pod that
    // starts before its binding exists retries, as pods do.
    let np_api: Api<NetworkPolicy> = Api::namespaced(c.clone(), &ns);
    let network_policy = async {
        match &desired.network_policy {
            Some(np) => apply_as(&np_api, np, "NetworkPolicy").await.map(|_| ()),
            // Turned off: remove the one applied before (a Sensor never
            // reconciled before has none).
            None if sensor.status.is_none() => Ok(()),
            None => delete_owned(&np_api, &owned_by(sensor), &uid, "NetworkPolicy").await,
        }
    };
    let workload = async {
        Ok::<_, Error>(match &desired.workload {
            Workload::DaemonSet(ds) => Workload::DaemonSet(Box::new(
                apply_as(&Api::namespaced(c.clone(), &ns), &**ds, "DaemonSet").await?,
            )),
            Workload::CronJob(cj) => Workload::CronJob(Box::new(
                apply_as(&Api::namespaced(c.clone(), &ns), &**cj, "CronJob").await?,
            )),
        })
    };
    let (_, (), applied) = futures::try_join!(
        apply_as(&rb_api, &desired.role_binding, "RoleBinding"),
        network_policy,
        workload,
    )?;
    if let Some(generation) = workload_generation(&applied) {
        ctx.record_applied(&uid, fingerprint, generation);
    }
    Ok((applied, true))
}

fn workload_generation(w: &Workload) -> Option<i64> {
    match w {
        Workload::DaemonSet(d) => d.metadata.generation,
        Workload::CronJob(c) => c.metadata.generation,
    }
}

async fn read_workload(
    sensor: &Sensor,
    ctx: &Context,
    like: &Workload,
) -> Result<Option<Workload>> {
    let ns = sensor.namespace().unwrap_or_default();
    let name = names::workload(sensor);
    Ok(match like {
        Workload::DaemonSet(_) => Api::<DaemonSet>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&name)
            .await
            .map_err(|source| Error::Get {
                kind: "DaemonSet",
                name: name.clone(),
                source,
            })?
            .map(|d| Workload::DaemonSet(Box::new(d))),
        Workload::CronJob(_) => Api::<CronJob>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&name)
            .await
            .map_err(|source| Error::Get {
                kind: "CronJob",
                name: name.clone(),
                source,
            })?
            .map(|c| Workload::CronJob(Box::new(c))),
    })
}

/// Deletes what the Sensor owns but no longer needs: the workload of another
/// type after a type change, or everything when `keep` is `None`.
async fn prune(sensor: &Sensor, ctx: &Context, keep: Option<&Workload>) -> Result<()> {
    let ns = sensor.namespace().unwrap_or_default();
    let uid = sensor.uid().unwrap_or_default();
    let lp = owned_by(sensor);
    let keep_ds = matches!(keep, Some(Workload::DaemonSet(_)));
    let keep_cj = matches!(keep, Some(Workload::CronJob(_)));
    let c = &ctx.client;
    if !keep_ds {
        delete_owned(
            &Api::<DaemonSet>::namespaced(c.clone(), &ns),
            &lp,
            &uid,
            "DaemonSet",
        )
        .await?;
    }
    if !keep_cj {
        delete_owned(
            &Api::<CronJob>::namespaced(c.clone(), &ns),
            &lp,
            &uid,
            "CronJob",
        )
        .await?;
    }
    if keep.is_none() {
        delete_owned(
            &Api::<RoleBinding>::namespaced(c.clone(), &ns),
            &lp,
            &uid,
            "RoleBinding",
        )
        .await?;
        delete_owned(&Api::<Role>::namespaced(c.clone(), &ns), &lp, &uid, "Role").await?;
        delete_owned(
            &Api::<NetworkPolicy>::namespaced(c.clone(), &ns),
            &lp,
            &uid,
            "NetworkPolicy",
        )
        .await?;
        delete_owned(
            &Api::<ServiceAccount>::namespaced(c.clone(), &ns),
            &lp,
            &uid,
            "ServiceAccount",
        )
        .await?;
    }
    let keep_binding = keep.map(|_| names::cluster_binding(sensor));
    delete_cluster_bindings(sensor, ctx, keep_binding.as_deref()).await
}

/// The namespaced objects a Sensor's controller made, by label (the owner
/// reference decides).
fn owned_by(sensor: &Sensor) -> ListParams {
    ListParams::default().labels(&format!(
        "{}={}",
        names::LABEL_SENSOR,
        names::label_value(&sensor.name_any())
    ))
}

async fn delete_owned<K>(api: &Api<K>, lp: &ListParams, uid: &str, kind: &'static str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let list = api
        .list_metadata(lp)
        .await
        .map_err(|source| Error::List { kind, source })?;
    for obj in list.items {
        let owned = obj
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid);
        if !owned {
            continue;
        }
        let name = obj.metadata.name.unwrap_or_default();
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(kind, name, "deleted what the sensor no longer needs"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => return Err(Error::Delete { kind, name, source }),
        }
    }
    Ok(())
}

/// Deletes the Sensor's ClusterRoleBindings (found by label) except `keep`.
async fn delete_cluster_bindings(sensor: &Sensor, ctx: &Context, keep: Option<&str>) -> Result<()> {
    let api: Api<ClusterRoleBinding> = Api::all(ctx.client.clone());
    let lp = ListParams::default().labels(&format!(
        "{}={},{}={}",
        names::LABEL_SENSOR,
        names::label_value(&sensor.name_any()),
        names::LABEL_SENSOR_NAMESPACE,
        sensor.namespace().unwrap_or_default()
    ));
    let list = api.list_metadata(&lp).await.map_err(|source| Error::List {
        kind: "ClusterRoleBinding",
        source,
    })?;
    for name in list.items.into_iter().filter_map(|o| o.metadata.name) {
        if Some(name.as_str()) == keep {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(Error::Delete {
                    kind: "ClusterRoleBinding",
                    name,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// On deletion: remove the cluster-scoped binding; owner references take
/// care of the rest.
async fn cleanup(sensor: &Sensor, ctx: &Context) -> Result<Action> {
    ctx.forget_applied(&sensor.uid().unwrap_or_default());
    delete_cluster_bindings(sensor, ctx, None).await?;
    Ok(Action::await_change())
}
