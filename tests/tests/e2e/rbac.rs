//! What each ServiceAccount may do, as `kubectl auth can-i --list` tells
//! it, against the exact set its component needs.

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};

use crate::support::Env;

/// One row of `can-i --list`: resource, resource names, verbs (sorted).
pub type Grant = (String, Vec<String>, Vec<String>);

/// Rows every authenticated user has (discovery and self-reviews, from
/// Kubernetes' own bindings), left out of the comparison.
const EVERYONE: &[&str] = &[
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
    "selfsubjectreviews.authentication.k8s.io",
];

/// Parses the table `kubectl auth can-i --list` prints.
pub fn parse(table: &str) -> Result<BTreeSet<Grant>> {
    let list = |s: &str| -> Vec<String> {
        let mut v: Vec<String> = s
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    let mut out = BTreeSet::new();
    for line in table.lines().skip(1) {
        // Columns: Resources, Non-Resource URLs, Resource Names, Verbs;
        // the bracketed lists hold no spaces between brackets' ends.
        let brackets: Vec<(usize, usize)> = line
            .match_indices('[')
            .filter_map(|(i, _)| line[i..].find(']').map(|j| (i, i + j + 1)))
            .collect();
        let [urls, names, verbs] = brackets.as_slice() else {
            continue;
        };
        let resource = line[..urls.0].trim();
        if resource.is_empty() || EVERYONE.contains(&resource) {
            // Non-resource URLs (discovery) are everyone's.
            continue;
        }
        out.insert((
            resource.to_owned(),
            list(&line[names.0..names.1]),
            list(&line[verbs.0..verbs.1]),
        ));
    }
    Ok(out)
}

/// `(resource, names, verbs)` from string slices, for expectations.
pub fn grants(rows: &[(&str, &[&str], &[&str])]) -> BTreeSet<Grant> {
    rows.iter()
        .map(|(r, n, v)| {
            let mut n: Vec<String> = n.iter().map(|s| (*s).to_owned()).collect();
            let mut v: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
            n.sort();
            v.sort();
            ((*r).to_owned(), n, v)
        })
        .collect()
}

/// Asserts that ServiceAccount `ns/name` may do exactly `want` in `ns`.
pub fn assert_exactly(env: &Env, ns: &str, name: &str, want: &BTreeSet<Grant>) -> Result<()> {
    let table = env
        .kubectl(&[
            "auth",
            "can-i",
            "--list",
            "--namespace",
            ns,
            &format!("--as=system:serviceaccount:{ns}:{name}"),
        ])
        .context("kubectl auth can-i --list")?;
    let got = parse(&table)?;
    let extra: Vec<_> = got.difference(want).collect();
    let missing: Vec<_> = want.difference(&got).collect();
    ensure!(
        extra.is_empty() && missing.is_empty(),
        "{ns}/{name} may do more than it needs: {extra:?}\nand lacks: {missing:?}\n(can-i said:\n{table})"
    );
    Ok(())
}

/// What the operator needs (the chart's ClusterRole and Role).
pub fn operator() -> BTreeSet<Grant> {
    const RENDERED: &[&str] = &["list", "watch", "create", "patch", "delete"];
    const WORKLOADS: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];
    const BIND: &[&str] = &["bind"];
    grants(&[
        (
            "activationkeys.sightline.dev",
            &[],
            &["get", "list", "watch", "patch"],
        ),
        (
            "sensors.sightline.dev",
            &[],
            &["get", "list", "watch", "patch"],
        ),
        (
            "activationkeys.sightline.dev/status",
            &[],
            &["get", "patch"],
        ),
        ("sensors.sightline.dev/status", &[], &["get", "patch"]),
        ("sensors.sightline.dev/finalizers", &[], &["update"]),
        (
            "assets.sightline.dev",
            &[],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        ("assets.sightline.dev/status", &[], &["patch"]),
        ("tagrules.sightline.dev", &[], &["list", "watch"]),
        ("tagrules.sightline.dev/status", &[], &["patch"]),
        ("runtimepolicies.sightline.dev", &[], &["list", "watch"]),
        (
            "runtimepolicies.sightline.dev/status",
            &[],
            &["get", "patch"],
        ),
        ("namespaces", &[], &["get"]),
        ("imagepolicies.sightline.dev", &[], &["list", "watch"]),
        ("imagepolicies.sightline.dev/status", &[], &["patch"]),
        ("events.events.k8s.io", &[], &["create", "patch"]),
        (
            "validatingwebhookconfigurations.admissionregistration.k8s.io",
            &["sightline-operator-images"],
            &["get", "patch"],
        ),
        ("daemonsets.apps", &[], WORKLOADS),
        ("cronjobs.batch", &[], WORKLOADS),
        ("serviceaccounts", &[], RENDERED),
        (
            "networkpolicies.networking.k8s.io",
            &[],
            &["list", "create", "patch", "delete"],
        ),
        ("roles.rbac.authorization.k8s.io", &[], RENDERED),
        ("rolebindings.rbac.authorization.k8s.io", &[], RENDERED),
        (
            "clusterrolebindings.rbac.authorization.k8s.io",
            &[],
            &["list", "create", "patch", "delete"],
        ),
        // One row per name, as can-i lists them.
        (
            "clusterroles.rbac.authorization.k8s.io",
            &["sightline-sensor-container"],
            BIND,
        ),
        (
            "clusterroles.rbac.authorization.k8s.io",
            &["sightline-sensor-registry"],
            BIND,
        ),
        (
            "clusterroles.rbac.authorization.k8s.io",
            &["sightline-sensor-runtime"],
            BIND,
        ),
        (
            "clusterroles.rbac.authorization.k8s.io",
            &["sightline-sensor-passive"],
            BIND,
        ),
        ("tokenreviews.authentication.k8s.io", &[], &["create"]),
        (
            "subjectaccessreviews.authorization.k8s.io",
            &[],
            &["create"],
        ),
        // Its own namespace only.
        (
            "secrets",
            &[],
            &["get", "list", "watch", "create", "update"],
        ),
        (
            "leases.coordination.k8s.io",
            &[],
            &["get", "create", "update"],
        ),
        // Its own Service, whose cluster IP sensors report to.
        ("services", &["sightline-operator"], &["get"]),
        // The ConfigMap publishing the API's CA.
        ("configmaps", &[], &["create"]),
        ("configmaps", &["sightline-operator-ca"], &["get", "patch"]),
    ])
}

/// What a container sensor named `sensor` needs (its Role and its type's
/// ClusterRole, as the operator renders them). No sensor may touch an
/// Asset: they report through the operator's ingestion API.
pub fn container_sensor(sensor: &str) -> BTreeSet<Grant> {
    grants(&[
        ("nodes", &[], &["get"]),
        ("pods", &[], &["get", "list", "watch"]),
        ("sensors.sightline.dev", &[sensor], &["get", "watch"]),
        ("sensors.sightline.dev/status", &[sensor], &["get", "patch"]),
    ])
}

/// What a registry sensor named `sensor` needs.
pub fn registry_sensor(sensor: &str) -> BTreeSet<Grant> {
    grants(&[
        ("sensors.sightline.dev", &[sensor], &["get", "watch"]),
        ("sensors.sightline.dev/status", &[sensor], &["get", "patch"]),
    ])
}

/// What a runtime sensor named `sensor` needs: the pods of its node, the
/// policies and their status, and Events.
pub fn runtime_sensor(sensor: &str) -> BTreeSet<Grant> {
    grants(&[
        ("pods", &[], &["get", "list", "watch"]),
        (
            "runtimepolicies.sightline.dev",
            &[],
            &["get", "list", "watch"],
        ),
        ("events.events.k8s.io", &[], &["create", "patch"]),
        ("sensors.sightline.dev", &[sensor], &["get", "watch"]),
        ("sensors.sightline.dev/status", &[sensor], &["get", "patch"]),
    ])
}
