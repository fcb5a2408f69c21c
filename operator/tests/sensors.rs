//! The Sensor and ActivationKey controllers against a real API server and
//! kube-controller-manager, driving the real operator binary.

mod support;

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use sightline_crds::conditions::{find, is_true};
use sightline_crds::{ActivationKey, Sensor};
use sightline_testenv::helpers::{wait_gone, wait_object};
use support::{Env, OPERATOR_NS};

const T: Duration = Duration::from_secs(30);

/// A key for Sensors of every namespace that grants every power (the
/// tests' Sensors live in their own namespace, not the operator's).
fn key_yaml(name: &str, modules: &str) -> String {
    format!(
        "apiVersion: sightline.dev/v1alpha1\nkind: ActivationKey\nmetadata:\n  name: {name}\nspec:\n  modules: {modules}\n  scope: {{namespaceSelector: {{}}}}\n  allow: {{privilegedSensors: true, controlPlaneNodes: true}}\n"
    )
}

fn container_sensor_yaml(name: &str, key: &str) -> String {
    format!(
        "apiVersion: sightline.dev/v1alpha1\nkind: Sensor\nmetadata: {{name: {name}}}\nspec: {{type: container, activationKeyRef: {{name: {key}}}, container: {{}}}}\n"
    )
}

/// Starts replica `a`, waits until it leads, then starts standby `b`.
async fn leader_and_standby(env: &Env) -> Result<(support::Operator, support::Operator)> {
    env.apply(&key_yaml("lab", "[inventory, containerSecurity]"))
        .await?;
    let a = env.operator("a")?;
    a.wait_serving().await?;
    wait_leading(&a).await?;
    let b = env.operator("b")?;
    b.wait_serving().await?;
    Ok((a, b))
}

async fn wait_leading(op: &support::Operator) -> Result<()> {
    sightline_testenv::helpers::wait_for("the replica to lead", T, || async {
        (op.metric("sightline_operator_leader").ok()? == 1.0).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_sensor_becomes_a_workload_that_follows_its_spec_and_goes_with_it() -> Result<()> {
    let env = Env::start().await?;
    let op = env.operator_with(
        "solo",
        &["--allowed-sensor-image", "example.test/sightline/sensor"],
    )?;
    let res = async {
        env.apply(&key_yaml("lab", "[inventory, containerSecurity]")).await?;
        env.apply(
            r#"
apiVersion: sightline.dev/v1alpha1
kind: Sensor
metadata: {name: nodes}
spec:
  type: container
  activationKeyRef: {name: lab}
  container: {runtimes: [{type: containerd}]}
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
  resources: {requests: {cpu: 20m, memory: 32Mi}, limits: {memory: 128Mi}}
  image: example.test/sightline/sensor:1.2.3
"#,
        )
        .await?;
        let dss: Api<DaemonSet> = Api::namespaced(env.client.clone(), &env.ns);
        let ds = wait_object(&dss, "sightline-sensor-nodes", T, "the DaemonSet", |_| true).await?;
        let pod = ds.spec.clone().context("spec")?.template.spec.context("pod spec")?;
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("example.test/sightline/sensor:1.2.3"));
        assert_eq!(pod.service_account_name.as_deref(), Some("sightline-sensor-nodes"));
        assert_eq!(pod.node_selector.clone().unwrap_or_default()["kubernetes.io/os"], "linux");
        assert_eq!(pod.tolerations.clone().unwrap_or_default()[0].key.as_deref(), Some("node-role.kubernetes.io/control-plane"));
        let res = c.resources.clone().context("resources")?;
        assert_eq!(res.requests.unwrap_or_default()["cpu"].0, "20m");
        let mounts: Vec<String> = c.volume_mounts.clone().unwrap_or_default().into_iter().map(|m| m.mount_path).collect();
        assert!(mounts.contains(&"/run/containerd".to_owned()), "{mounts:?}");
        assert!(!mounts.contains(&"/var/run/docker.sock".to_owned()), "only containerd was asked for: {mounts:?}");
        let owner = ds.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owner.len(), 1);
        assert_eq!(owner[0].kind, "Sensor");

        // RBAC: its own ServiceAccount, a Role scoped to its own Sensor, and
        // the type's ClusterRole bound to it.
        let sa: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &env.ns);
        sa.get("sightline-sensor-nodes").await?;
        let role = Api::<Role>::namespaced(env.client.clone(), &env.ns).get("sightline-sensor-nodes").await?;
        for rule in role.rules.unwrap_or_default() {
            assert_eq!(rule.resource_names, Some(vec!["nodes".to_owned()]), "the Role must name only its own Sensor");
            assert!(!rule.verbs.iter().any(|v| v == "*"));
        }
        Api::<RoleBinding>::namespaced(env.client.clone(), &env.ns).get("sightline-sensor-nodes").await?;
        let crbs: Api<ClusterRoleBinding> = Api::all(env.client.clone());
        let crb_name = format!("sightline-sensor-container-{}-nodes", env.ns);
        let crb = crbs.get(&crb_name).await?;
        assert_eq!(crb.role_ref.name, "sightline-sensor-container");

        // Status: with no nodes the rollout is trivially complete.
        let sensors: Api<Sensor> = Api::namespaced(env.client.clone(), &env.ns);
        let s = wait_object(&sensors, "nodes", T, "Ready", |s| {
            s.status.as_ref().is_some_and(|st| is_true(&st.conditions, "Ready") && st.observed_generation == s.metadata.generation)
        })
        .await?;
        assert_eq!(s.status.as_ref().and_then(|st| st.desired_nodes), Some(0));

        // A change of the Sensor changes the DaemonSet.
        sensors
            .patch("nodes", &PatchParams::default(), &Patch::Merge(json!({"spec": {"image": "example.test/sightline/sensor:2.0.0"}})))
            .await?;
        wait_object(&dss, "sightline-sensor-nodes", T, "the new image", |ds| {
            ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()).and_then(|p| p.containers[0].image.as_deref())
                == Some("example.test/sightline/sensor:2.0.0")
        })
        .await?;

        // Someone editing the DaemonSet by hand is undone.
        dss.patch(
            "sightline-sensor-nodes",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "sensor", "image": "evil.example/x:1"}]}}}})),
        )
        .await?;
        wait_object(&dss, "sightline-sensor-nodes", T, "the hand edit to be reverted", |ds| {
            ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()).and_then(|p| p.containers[0].image.as_deref())
                == Some("example.test/sightline/sensor:2.0.0")
        })
        .await?;

        // A change of type replaces the DaemonSet with a CronJob.
        sensors
            .patch(
                "nodes",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"type": "registry", "container": null, "registry": {"url": "http://127.0.0.1:5000", "schedule": "*/30 * * * *"}}})),
            )
            .await?;
        let cjs: Api<CronJob> = Api::namespaced(env.client.clone(), &env.ns);
        let cj = wait_object(&cjs, "sightline-sensor-nodes", T, "the CronJob", |_| true).await?;
        let cj = cj.spec.context("cronjob spec")?;
        assert_eq!(cj.schedule, "*/30 * * * *");
        // A hung scan is stopped at the default two hours, so it cannot hold
        // back the next schedule (concurrencyPolicy Forbid) for ever.
        assert_eq!(cj.job_template.spec.and_then(|j| j.active_deadline_seconds), Some(2 * 3600));
        wait_gone(&dss, "sightline-sensor-nodes", T).await.context("old DaemonSet")?;
        wait_gone(&crbs, &crb_name, T).await?;
        let crb_name = format!("sightline-sensor-registry-{}-nodes", env.ns);
        let crb = crbs.get(&crb_name).await?;
        assert_eq!(crb.role_ref.name, "sightline-sensor-registry");

        // Deleting the Sensor removes everything it owned.
        sensors.delete("nodes", &DeleteParams::default()).await?;
        wait_gone(&sensors, "nodes", T).await.context("Sensor")?;
        wait_gone(&cjs, "sightline-sensor-nodes", T).await.context("CronJob")?;
        wait_gone(&sa, "sightline-sensor-nodes", T).await.context("ServiceAccount")?;
        wait_gone(&Api::<Role>::namespaced(env.client.clone(), &env.ns), "sightline-sensor-nodes", T).await?;
        wait_gone(&crbs, &crb_name, T).await?;
        anyhow::Ok(())
    }
    .await;
    res.with_context(|| env.dump())?;
    drop(op);
    Ok(())
}

#[tokio::test]
async fn key_rules_decide_whether_a_sensor_runs() -> Result<()> {
    let env = Env::start().await?;
    let op = env.operator("solo")?;
    let res = async {
        let sensors: Api<Sensor> = Api::namespaced(env.client.clone(), &env.ns);
        let dss: Api<DaemonSet> = Api::namespaced(env.client.clone(), &env.ns);
        let keys: Api<ActivationKey> = Api::all(env.client.clone());
        let rejected_for = |reason: &'static str| {
            move |s: &Sensor| {
                s.status.as_ref().and_then(|st| find(&st.conditions, "KeyRejected")).is_some_and(|c| c.status == "True" && c.reason == reason)
            }
        };

        // No key yet: KeyNotFound, and no workload.
        env.apply("apiVersion: sightline.dev/v1alpha1\nkind: Sensor\nmetadata: {name: rt}\nspec: {type: runtime, activationKeyRef: {name: inv}, runtime: {}}\n").await?;
        wait_object(&sensors, "rt", T, "KeyNotFound", rejected_for("KeyNotFound")).await?;

        // A key without runtimeSecurity: ModuleNotEnabled, still no workload.
        env.apply(&key_yaml("inv", "[inventory]")).await?;
        let s = wait_object(&sensors, "rt", T, "ModuleNotEnabled", rejected_for("ModuleNotEnabled")).await?;
        assert!(!is_true(&s.status.unwrap_or_default().conditions, "Ready"));
        assert!(dss.get_opt("sightline-sensor-rt").await?.is_none());

        // Enabling the module on the key alone makes the workload appear.
        env.apply(&key_yaml("inv", "[inventory, runtimeSecurity]")).await?;
        let ds = wait_object(&dss, "sightline-sensor-rt", T, "the DaemonSet", |_| true).await?;
        let env_vars = ds.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap_or_default();
        let modules = env_vars.iter().find(|e| e.name == "SIGHTLINE_MODULES").and_then(|e| e.value.clone());
        assert_eq!(modules.as_deref(), Some("inventory,runtimeSecurity"));
        wait_object(&sensors, "rt", T, "KeyRejected to clear", |s| {
            s.status.as_ref().and_then(|st| find(&st.conditions, "KeyRejected")).is_some_and(|c| c.status == "False")
        })
        .await?;

        // The key reports its token Secret and its sensor count.
        let k = wait_object(&keys, "inv", T, "key status", |k| k.status.as_ref().is_some_and(|s| s.sensors == 1 && s.token_secret_ref.is_some())).await?;
        let r = k.status.unwrap().token_secret_ref.unwrap();
        let secret = Api::<Secret>::namespaced(env.client.clone(), OPERATOR_NS).get(&r.name).await?;
        let token = secret.data.unwrap_or_default().remove(&r.key).context("token")?;
        assert_eq!(token.0.len(), 4 + 64, "a 256-bit hex token with its prefix");

        // ModulesConflict appears and clears.
        env.apply(&key_yaml("inv", "[inventory, runtimeSecurity, sca, policyCompliance]")).await?;
        wait_object(&keys, "inv", T, "ModulesConflict", |k| k.status.as_ref().is_some_and(|s| is_true(&s.conditions, "ModulesConflict"))).await?;
        env.apply(&key_yaml("inv", "[inventory, runtimeSecurity, sca]")).await?;
        wait_object(&keys, "inv", T, "ModulesConflict to clear", |k| {
            k.status.as_ref().is_some_and(|s| s.observed_generation == k.metadata.generation && !is_true(&s.conditions, "ModulesConflict"))
        })
        .await?;
        // The token survives key updates.
        let again = Api::<Secret>::namespaced(env.client.clone(), OPERATOR_NS).get(&r.name).await?;
        assert_eq!(again.data.unwrap_or_default().remove(&r.key), Some(token));

        // An expired key is Expired, not Ready, and its sensors stop.
        keys.patch("inv", &PatchParams::default(), &Patch::Merge(json!({"spec": {"limits": {"expires": "2020-01-01T00:00:00Z"}}}))).await?;
        wait_object(&keys, "inv", T, "Expired", |k| {
            k.status.as_ref().is_some_and(|s| is_true(&s.conditions, "Expired") && !is_true(&s.conditions, "Ready"))
        })
        .await?;
        wait_object(&sensors, "rt", T, "KeyExpired", rejected_for("KeyExpired")).await?;
        wait_gone(&dss, "sightline-sensor-rt", T).await?;

        // An invalid cron schedule is a condition, not a retry loop.
        env.apply(&key_yaml("reg", "[vulnerability]")).await?;
        env.apply("apiVersion: sightline.dev/v1alpha1\nkind: Sensor\nmetadata: {name: reg}\nspec: {type: registry, activationKeyRef: {name: reg}, registry: {url: 'http://127.0.0.1:5000', schedule: '0 25 * * *'}}\n").await?;
        let s = wait_object(&sensors, "reg", T, "InvalidSchedule", |s| {
            s.status.as_ref().and_then(|st| find(&st.conditions, "Degraded")).is_some_and(|c| c.reason == "InvalidSchedule")
        })
        .await?;
        let msg = find(&s.status.unwrap().conditions, "Degraded").map(|c| c.message.clone()).unwrap_or_default();
        assert!(msg.contains("spec.registry.schedule") && msg.contains("hour"), "{msg}");
        // A scan timeout of nothing is refused the same way.
        env.apply("apiVersion: sightline.dev/v1alpha1\nkind: Sensor\nmetadata: {name: forever}\nspec: {type: registry, activationKeyRef: {name: reg}, registry: {url: 'http://127.0.0.1:5000', scanTimeout: 0s}}\n").await?;
        let s = wait_object(&sensors, "forever", T, "InvalidScanTimeout", |s| {
            s.status.as_ref().and_then(|st| find(&st.conditions, "Degraded")).is_some_and(|c| c.reason == "InvalidScanTimeout")
        })
        .await?;
        let msg = find(&s.status.unwrap().conditions, "Degraded").map(|c| c.message.clone()).unwrap_or_default();
        assert!(msg.contains("spec.registry.scanTimeout"), "{msg}");
        assert!(Api::<CronJob>::namespaced(env.client.clone(), &env.ns).get_opt("sightline-sensor-forever").await?.is_none());
        let failures = failures_but_the_finalizer_race(&op)?;
        assert!(failures.is_empty(), "an invalid object must not be retried as a failure: {failures:?}");
        anyhow::Ok(())
    }
    .await;
    res.with_context(|| env.dump())?;
    Ok(())
}

/// A key and 30 Sensors under it (every third a runtime sensor), s0 to
/// s29; returns how many.
async fn thirty_sensors(env: &Env) -> Result<usize> {
    env.apply(&key_yaml(
        "lab",
        "[inventory, containerSecurity, runtimeSecurity]",
    ))
    .await?;
    let n = 30;
    let mut yaml = String::new();
    for i in 0..n {
        let t = if i % 3 == 0 { "runtime" } else { "container" };
        yaml.push_str(&format!(
            "---\napiVersion: sightline.dev/v1alpha1\nkind: Sensor\nmetadata: {{name: s{i}}}\nspec: {{type: {t}, activationKeyRef: {{name: lab}}, {t}: {{}}}}\n"
        ));
    }
    env.apply(&yaml).await?;
    Ok(n)
}

#[tokio::test]
async fn killing_the_operator_mid_reconcile_converges_without_duplicates() -> Result<()> {
    let env = Env::start().await?;
    let n = thirty_sensors(&env).await?;
    let mut first = env.operator("first")?;
    let dss: Api<DaemonSet> = Api::namespaced(env.client.clone(), &env.ns);
    // Kill it as soon as it has started writing, so some sensors are half done.
    sightline_testenv::helpers::wait_for("the first DaemonSet", T, || async {
        dss.list_metadata(&ListParams::default())
            .await
            .ok()
            .filter(|l| !l.items.is_empty())
            .map(|_| ())
    })
    .await?;
    first.kill();
    let _second = env.operator("second")?;
    let res = async {
        sightline_testenv::helpers::wait_for(
            "every DaemonSet",
            Duration::from_secs(60),
            || async {
                let l = dss.list_metadata(&ListParams::default()).await.ok()?;
                (l.items.len() == n).then_some(())
            },
        )
        .await?;
        let sensors: Api<Sensor> = Api::namespaced(env.client.clone(), &env.ns);
        sightline_testenv::helpers::wait_for(
            "every Sensor Ready",
            Duration::from_secs(60),
            || async {
                let l = sensors.list(&ListParams::default()).await.ok()?;
                l.items
                    .iter()
                    .all(|s| {
                        s.status
                            .as_ref()
                            .is_some_and(|st| is_true(&st.conditions, "Ready"))
                    })
                    .then_some(())
            },
        )
        .await?;
        // Exactly one of each owned object per Sensor.
        for kind in ["DaemonSet", "ServiceAccount", "Role", "RoleBinding"] {
            let names: Vec<String> = match kind {
                "DaemonSet" => dss
                    .list_metadata(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .filter_map(|o| o.metadata.name)
                    .collect(),
                "ServiceAccount" => Api::<ServiceAccount>::namespaced(env.client.clone(), &env.ns)
                    .list_metadata(
                        &ListParams::default().labels("app.kubernetes.io/name=sightline-sensor"),
                    )
                    .await?
                    .items
                    .into_iter()
                    .filter_map(|o| o.metadata.name)
                    .collect(),
                "Role" => Api::<Role>::namespaced(env.client.clone(), &env.ns)
                    .list_metadata(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .filter_map(|o| o.metadata.name)
                    .collect(),
                _ => Api::<RoleBinding>::namespaced(env.client.clone(), &env.ns)
                    .list_metadata(&ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .filter_map(|o| o.metadata.name)
                    .collect(),
            };
            let mut expected: Vec<String> =
                (0..n).map(|i| format!("sightline-sensor-s{i}")).collect();
            let mut got = names.clone();
            expected.sort();
            got.sort();
            assert_eq!(got, expected, "{kind}s after the restart");
        }
        anyhow::Ok(())
    }
    .await;
    res.with_context(|| env.dump())?;
    Ok(())
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over() -> Result<()> {
    let env = Env::start().await?;
    let (mut a, b) = leader_and_standby(&env).await?;
    let res = async {
        assert!(
            b.get("/readyz")?.contains("200 OK"),
            "a standby replica is ready"
        );
        env.apply(&container_sensor_yaml("one", "lab")).await?;
        let dss: Api<DaemonSet> = Api::namespaced(env.client.clone(), &env.ns);
        wait_object(
            &dss,
            "sightline-sensor-one",
            T,
            "the first DaemonSet",
            |_| true,
        )
        .await?;
        assert_eq!(b.metric("sightline_operator_leader")?, 0.0);
        assert_eq!(
            b.metric("sightline_operator_reconciles_total")?,
            0.0,
            "the standby must not reconcile"
        );
        assert!(a.metric("sightline_operator_reconciles_total")? > 0.0);

        // Kill the leader without letting it release the lease: b takes over
        // once the 4 s lease runs out.
        a.kill();
        let killed = std::time::Instant::now();
        env.apply(&container_sensor_yaml("two", "lab")).await?;
        wait_object(
            &dss,
            "sightline-sensor-two",
            Duration::from_secs(30),
            "the standby to reconcile",
            |_| true,
        )
        .await?;
        assert_eq!(b.metric("sightline_operator_leader")?, 1.0);
        let took = killed.elapsed();
        assert!(
            took < Duration::from_secs(4 + 10),
            "hand-over took {took:?}"
        );
        anyhow::Ok(())
    }
    .await;
    res.with_context(|| env.dump())?;
    Ok(())
}

#[tokio::test]
async fn sigterm_finishes_cleanly_and_hands_the_lease_over_at_once() -> Result<()> {
    let env = Env::start().await?;
    let (mut a, b) = leader_and_standby(&env).await?;
    let res = async {
        let stopping = std::time::Instant::now();
        let status = a
            .proc
            .terminate(Duration::from_secs(20))
            .context("the operator did not exit within 20 s of SIGTERM")?;
        assert!(status.success(), "exit status after SIGTERM: {status}");
        // The lease was released, so b does not wait out the 4 s lease.
        wait_leading(&b).await?;
        let took = stopping.elapsed();
        assert!(
            took < Duration::from_secs(4),
            "hand-over after a clean shutdown took {took:?}"
        );
        env.apply(&container_sensor_yaml("after", "lab")).await?;
        let dss: Api<DaemonSet> = Api::namespaced(env.client.clone(), &env.ns);
        wait_object(
            &dss,
            "sightline-sensor-after",
            T,
            "the new leader to reconcile",
            |_| true,
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    res.with_context(|| env.dump())?;
    Ok(())
}

#[tokio::test]
async fn a_limited_key_runs_its_oldest_sensors_and_admits_the_next_when_one_goes() -> Result<()> {
    let env = Env::start().await?;
    let _op = env.operator("solo")?;
    let res = async {
        env.apply("apiVersion: sightline.dev/v1alpha1\nkind: ActivationKey\nmetadata: {name: one}\nspec: {modules: [containerSecurity], limits: {maxSensors: 1}, scope: {namespaceSelector: {}}}\n").await?;
        let sensors: Api<Sensor> = Api::namespaced(env.client.clone(), &env.ns);
        let dss: Api<DaemonSet> = Api::namespaced(env.client.clone(), &env.ns);
        env.apply(&container_sensor_yaml("first", "one")).await?;
        wait_object(&dss, "sightline-sensor-first", T, "the first DaemonSet", |_| true).await?;
        // Creation timestamps have one-second resolution: make "second" younger.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        env.apply(&container_sensor_yaml("second", "one")).await?;
        wait_object(&sensors, "second", T, "SensorLimitReached", |s| {
            s.status.as_ref().and_then(|st| find(&st.conditions, "KeyRejected")).is_some_and(|c| c.reason == "SensorLimitReached")
        })
        .await?;
        assert!(dss.get_opt("sightline-sensor-second").await?.is_none());
        let keys: Api<ActivationKey> = Api::all(env.client.clone());
        wait_object(&keys, "one", T, "LimitReached", |k| k.status.as_ref().is_some_and(|s| s.sensors == 2 && is_true(&s.conditions, "LimitReached"))).await?;

        sensors.delete("first", &DeleteParams::default()).await?;
        wait_object(&dss, "sightline-sensor-second", T, "the second Sensor to be admitted", |_| true).await?;
        anyhow::Ok(())
    }
    .await;
    res.with_context(|| env.dump())?;
    Ok(())
}

/// The failure counters of a replica, except those of adding the Sensor
/// finalizer: kube's finalizer helper patches against the object as the
/// store held it, which can lag the finalizer it just added; the retry a
/// second later succeeds. Anything else counted here is a real failure.
fn failures_but_the_finalizer_race(op: &support::Operator) -> Result<Vec<String>> {
    Ok(op
        .get("/metrics")?
        .lines()
        .filter(|l| {
            l.starts_with("sightline_operator_reconcile_failures_total{")
                && !l.contains("reason=\"finalizer\"")
        })
        .map(str::to_owned)
        .collect())
}

/// Names in `before` whose UID in `after` differs (deleted, or recreated).
fn replaced(
    before: &std::collections::BTreeMap<String, String>,
    after: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    before
        .iter()
        .filter(|(name, uid)| after.get(*name) != Some(*uid))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The started sensor reconciles of a replica.
fn sensor_reconciles(op: &support::Operator) -> f64 {
    op.get("/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.starts_with("sightline_operator_reconciles_total{")
                && l.contains("controller=\"sensor\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// UID of every object of one kind in the namespace, by name.
async fn uids<K>(api: &Api<K>) -> Result<std::collections::BTreeMap<String, String>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .list_metadata(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|o| Some((o.metadata.name?, o.metadata.uid?)))
        .collect())
}

#[tokio::test]
async fn restarting_the_operator_never_deletes_what_sensors_run() -> Result<()> {
    let env = Env::start().await?;
    let n = thirty_sensors(&env).await?;
    let dss: Api<DaemonSet> = Api::namespaced(env.client.clone(), &env.ns);
    let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &env.ns);
    let res = async {
        let mut first = env.operator("first")?;
        sightline_testenv::helpers::wait_for(
            "every DaemonSet",
            Duration::from_secs(60),
            || async {
                let l = dss.list_metadata(&ListParams::default()).await.ok()?;
                (l.items.len() == n).then_some(())
            },
        )
        .await?;
        wait_for_reconciles(&first, n).await?;
        first
            .proc
            .terminate(Duration::from_secs(20))
            .context("the first replica did not stop")?;
        let (ds_before, sa_before) = (uids(&dss).await?, uids(&sas).await?);
        assert_eq!(ds_before.len(), n);

        // Restarts as upgrades and crashes make them: a new process whose
        // stores start empty, reconciling every Sensor at once.
        for i in 0..20 {
            let op = env.operator(&format!("restart-{i}"))?;
            wait_for_reconciles(&op, n)
                .await
                .with_context(|| format!("restart {i}"))?;
            // Let the reconciles finish what they started.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut op = op;
            op.proc
                .terminate(Duration::from_secs(20))
                .with_context(|| format!("restart {i} did not stop"))?;
        }
        // Two replicas; the leader is killed without releasing the lease.
        let mut a = env.operator("a")?;
        wait_leading(&a).await?;
        let b = env.operator("b")?;
        wait_for_reconciles(&a, n).await?;
        a.kill();
        wait_leading(&b).await?;
        wait_for_reconciles(&b, n).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;

        // A DaemonSet deleted and recreated has a new UID.
        let ds_gone = replaced(&ds_before, &uids(&dss).await?);
        anyhow::ensure!(
            ds_gone.is_empty(),
            "restarts deleted (and recreated) DaemonSets {ds_gone:?}"
        );
        let sa_gone = replaced(&sa_before, &uids(&sas).await?);
        anyhow::ensure!(
            sa_gone.is_empty(),
            "restarts deleted (and recreated) ServiceAccounts {sa_gone:?}"
        );
        anyhow::Ok(())
    }
    .await;
    res.with_context(|| env.dump())?;
    Ok(())
}

/// Waits until a replica has started `n` sensor reconciles.
async fn wait_for_reconciles(op: &support::Operator, n: usize) -> Result<()> {
    sightline_testenv::helpers::wait_for(
        "the replica to reconcile every Sensor",
        Duration::from_secs(60),
        || async { (sensor_reconciles(op) >= n as f64).then_some(()) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn sensor_specs_that_would_escalate_are_refused_with_the_field_named() -> Result<()> {
    let env = Env::start().await?;
    let op = env.operator_with(
        "solo",
        &[
            "--allowed-runtime-socket",
            "/tmp/sightline-node/containerd.sock",
        ],
    )?;
    let res = async {
        // A key for every namespace that grants no power, and one with no scope.
        env.apply("apiVersion: sightline.dev/v1alpha1\nkind: ActivationKey\nmetadata: {name: plain}\nspec: {modules: [containerSecurity, runtimeSecurity, passive], scope: {namespaceSelector: {}}}\n").await?;
        env.apply("apiVersion: sightline.dev/v1alpha1\nkind: ActivationKey\nmetadata: {name: local}\nspec: {modules: [containerSecurity]}\n").await?;
        let sensor = |name: &str, key: &str, rest: &str| {
            format!("apiVersion: sightline.dev/v1alpha1\nkind: Sensor\nmetadata: {{name: {name}}}\nspec: {{activationKeyRef: {{name: {key}}}, {rest}}}\n")
        };
        let cases = [
            ("socket", "plain", "type: container, container: {runtimes: [{type: containerd, endpoint: 'unix:///etc/kubernetes/pki/x'}]}", "Degraded", "EndpointNotAllowed", "spec.container.runtimes[0].endpoint"),
            ("image", "plain", "type: container, container: {}, image: 'evil.example/x:1'", "Degraded", "ImageNotAllowed", "spec.image"),
            ("runtime", "plain", "type: runtime, runtime: {}", "KeyRejected", "PrivilegedSensorNotAllowed", "spec.allow.privilegedSensors"),
            ("passive", "plain", "type: passive, passive: {interface: eth0}", "KeyRejected", "PrivilegedSensorNotAllowed", "spec.allow.privilegedSensors"),
            ("cp", "plain", "type: container, container: {}, tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists}]", "KeyRejected", "ControlPlaneNotAllowed", "spec.tolerations[0]"),
            ("everything", "plain", "type: container, container: {}, tolerations: [{operator: Exists}]", "KeyRejected", "ControlPlaneNotAllowed", "spec.tolerations[0]"),
            ("local", "local", "type: container, container: {}", "KeyRejected", "NamespaceNotInScope", "namespaceSelector"),
        ];
        for (name, key, rest, _, _, _) in &cases {
            env.apply(&sensor(name, key, rest)).await?;
        }
        // One that only the operator's flag allows, so the refusals above
        // are the policy's and not some other failure.
        env.apply(&sensor("allowed", "plain", "type: container, container: {runtimes: [{type: containerd, endpoint: 'unix:///tmp/sightline-node/containerd.sock'}]}")).await?;
        let sensors: Api<Sensor> = Api::namespaced(env.client.clone(), &env.ns);
        let dss: Api<DaemonSet> = Api::namespaced(env.client.clone(), &env.ns);
        wait_object(&dss, "sightline-sensor-allowed", T, "the allowed sensor's DaemonSet", |_| true).await?;
        for (name, _, _, condition, reason, field) in &cases {
            let s = wait_object(&sensors, name, T, reason, |s| {
                s.status.as_ref().and_then(|st| find(&st.conditions, condition)).is_some_and(|c| c.status == "True" && c.reason == *reason)
            })
            .await?;
            let st = s.status.unwrap_or_default();
            let message = find(&st.conditions, "Ready").map(|c| c.message.clone()).unwrap_or_default();
            assert!(message.contains(field), "{name}: Ready's message must name {field}: {message}");
            assert!(!is_true(&st.conditions, "Ready"), "{name}");
            let workload = format!("sightline-sensor-{name}");
            assert!(dss.get_opt(&workload).await?.is_none(), "{name} must not run");
            let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &env.ns);
            assert!(sas.get_opt(&workload).await?.is_none(), "{name} must get no ServiceAccount");
        }
        let failures = failures_but_the_finalizer_race(&op)?;
        anyhow::ensure!(failures.is_empty(), "a refused spec is not a failure to retry: {failures:?}");

        // The API server itself refuses a socket path that climbs out of its directory.
        let climbing = env
            .apply(&sensor("climb", "plain", "type: container, container: {runtimes: [{type: containerd, endpoint: 'unix:///run/containerd/../../etc/kubernetes/pki/x'}]}"))
            .await
            .expect_err("the API server must refuse '..' in an endpoint");
        assert!(format!("{climbing:#}").contains("plain path"), "{climbing:#}");

        // Granting the power on the key lets the privileged sensor run.
        let keys: Api<ActivationKey> = Api::all(env.client.clone());
        keys.patch("plain", &PatchParams::default(), &Patch::Merge(json!({"spec": {"allow": {"privilegedSensors": true}}}))).await?;
        wait_object(&dss, "sightline-sensor-runtime", T, "the runtime sensor once its key allows it", |_| true).await?;
        anyhow::Ok(())
    }
    .await;
    res.with_context(|| env.dump())?;
    Ok(())
}

/// The Sensor names the operator's NetworkPolicy admits from `ns`.
fn admitted_from(np: &NetworkPolicy, ns: &str) -> Vec<String> {
    let json = serde_json::to_value(np).unwrap_or_default();
    let peers = json["spec"]["ingress"][0]["from"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    peers
        .iter()
        .filter(|p| p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == ns)
        .flat_map(|p| {
            p["podSelector"]["matchExpressions"][0]["values"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn sensors_take_no_connections_and_only_accepted_ones_reach_the_operator() -> Result<()> {
    let env = Env::start().await?;
    let _op = env.operator_with(
        "solo",
        &[
            "--network-policies",
            "--metrics-namespace",
            "monitoring",
            "--operator-pod-label",
            "app.kubernetes.io/name=sightline",
        ],
    )?;
    let res = async {
        env.apply(&key_yaml("lab", "[inventory, containerSecurity, runtimeSecurity]")).await?;
        env.apply("apiVersion: sightline.dev/v1alpha1\nkind: Sensor\nmetadata: {name: rt}\nspec: {type: runtime, activationKeyRef: {name: lab}, runtime: {}}\n").await?;
        env.apply(&container_sensor_yaml("nodes", "lab")).await?;
        env.apply(&container_sensor_yaml("stray", "no-such-key")).await?;
        let nps: Api<NetworkPolicy> = Api::namespaced(env.client.clone(), &env.ns);

        // Runtime sensors: only scrapes of the metrics port, from the namespace allowed.
        let rt = wait_object(&nps, "sightline-sensor-rt", T, "the runtime sensor's policy", |_| true).await?;
        let spec = rt.spec.context("spec")?;
        let selector = spec.pod_selector.and_then(|s| s.match_labels).unwrap_or_default();
        assert_eq!(selector.get("sightline.dev/sensor").map(String::as_str), Some("rt"));
        let rules = spec.ingress.unwrap_or_default();
        assert_eq!(rules.len(), 1, "{rules:?}");
        let rule = serde_json::to_value(&rules[0])?;
        assert_eq!(rule["ports"][0]["port"], 9464);
        assert_eq!(rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], "monitoring");
        // Container sensors: nothing at all.
        let nodes = wait_object(&nps, "sightline-sensor-nodes", T, "the container sensor's policy", |_| true).await?;
        // (No rule: the API server leaves out the empty list.)
        assert!(nodes.spec.and_then(|s| s.ingress).unwrap_or_default().is_empty());

        // The operator admits the two accepted Sensors, not the refused one.
        let ops: Api<NetworkPolicy> = Api::namespaced(env.client.clone(), OPERATOR_NS);
        let ns = env.ns.clone();
        let policy = wait_object(&ops, "sightline-operator-sensors", T, "both sensors admitted", |np| {
            admitted_from(np, &ns) == ["nodes", "rt"]
        })
        .await?;
        let selector = policy.spec.and_then(|s| s.pod_selector).and_then(|s| s.match_labels).unwrap_or_default();
        assert_eq!(selector.get("app.kubernetes.io/name").map(String::as_str), Some("sightline"));
        assert!(nps.get_opt("sightline-sensor-stray").await?.is_none());

        // A Sensor deleted: its policy goes with it, and its pods lose their way in.
        let sensors: Api<Sensor> = Api::namespaced(env.client.clone(), &env.ns);
        sensors.delete("rt", &DeleteParams::default()).await?;
        wait_object(&ops, "sightline-operator-sensors", T, "rt no longer admitted", |np| admitted_from(np, &ns) == ["nodes"]).await?;
        wait_gone(&nps, "sightline-sensor-rt", T).await?;
        sensors.delete("nodes", &DeleteParams::default()).await?;
        wait_object(&ops, "sightline-operator-sensors", T, "nobody admitted", |np| {
            np.spec.as_ref().is_some_and(|s| s.ingress.as_ref().is_none_or(Vec::is_empty))
        })
        .await?;
        anyhow::Ok(())
    }
    .await;
    res.with_context(|| env.dump())?;
    Ok(())
}
