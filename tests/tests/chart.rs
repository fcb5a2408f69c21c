//! The chart with a real helm and a real API server: `helm lint --strict`,
//! and what `helm template` renders for the default values and for a few
//! others, each accepted by the API server (`kubectl apply
//! --dry-run=server`); values the schema forbids fail with the value's
//! path. Installing, upgrading and uninstalling on the real cluster are
//! end-to-end tests (`tests/e2e`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use sightline_testenv::{ControlPlane, Options, binaries};

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/sightline")
}

fn helm(args: &[&str]) -> Result<std::process::Output> {
    Command::new(binaries::helm()?)
        .args(args)
        .output()
        .context("running helm")
}

/// `helm template` of the chart with `sets`; the rendered YAML.
fn template(sets: &[&str]) -> Result<String> {
    let chart = chart().display().to_string();
    let mut args = vec![
        "template",
        "sightline",
        &chart,
        "--namespace",
        "sightline-system",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = helm(&args)?;
    if !out.status.success() {
        bail!(
            "helm template {sets:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `kubectl ARGS -f -` with `yaml` on its input; what it printed.
fn kubectl_stdin(cp: &ControlPlane, args: &[&str], yaml: &str) -> Result<String> {
    let mut child = cp
        .kubectl()?
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("kubectl's stdin")?
        .write_all(yaml.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The API server's verdict on `yaml`, without storing anything.
fn dry_run(cp: &ControlPlane, yaml: &str) -> Result<String> {
    kubectl_stdin(cp, &["apply", "--dry-run=server", "--server-side"], yaml)
}

/// A stand-in for the Prometheus Operator's ServiceMonitor CRD, so the
/// API server knows the kind (its schema accepts any spec).
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

#[tokio::test]
async fn chart_lints_and_renders_what_the_api_server_accepts() -> Result<()> {
    let out = helm(&["lint", "--strict", &chart().display().to_string()])?;
    ensure!(
        out.status.success(),
        "helm lint --strict: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let cp = ControlPlane::start(Options::api_only()).await?;
    let create = |yaml: &str| kubectl_stdin(&cp, &["apply", "--server-side"], yaml).map(drop);
    create("apiVersion: v1\nkind: Namespace\nmetadata: {name: sightline-system}\n")?;
    create(SERVICE_MONITOR_CRD)?;
    // The stand-in's kind must be served before a ServiceMonitor can be checked.
    std::thread::sleep(std::time::Duration::from_secs(2));

    let defaults = template(&[])?;
    let said = dry_run(&cp, &defaults)?;
    for object in [
        "deployment.apps/sightline-operator",
        "clusterrole.rbac.authorization.k8s.io/sightline-operator",
        "clusterrole.rbac.authorization.k8s.io/sightline-sensor-container",
        "role.rbac.authorization.k8s.io/sightline-operator",
        "service/sightline-operator",
        "customresourcedefinition.apiextensions.k8s.io/assets.sightline.dev",
        "clusterrole.rbac.authorization.k8s.io/sightline-view",
        "clusterrole.rbac.authorization.k8s.io/sightline-edit",
    ] {
        ensure!(said.contains(object), "{object} missing from:\n{said}");
    }
    // People's roles aggregate into the built-in ones, and editing never
    // reaches ActivationKeys (a key decides where sensors run, and with
    // what privileges).
    ensure!(defaults.contains("rbac.authorization.k8s.io/aggregate-to-edit: \"true\""));
    let edit = defaults
        .split("\n---")
        .find(|doc| doc.contains("name: sightline-edit"))
        .context("the sightline-edit ClusterRole")?;
    ensure!(
        !edit.contains("activationkeys"),
        "sightline-edit must not grant keys:\n{edit}"
    );
    ensure!(
        !defaults.contains("- --allowed-sensor-image="),
        "no image allowlist flag by default"
    );
    // The image admission webhook: registered for new pods, never for
    // kube-system or the release's namespace, failing open by default.
    for part in [
        "kind: ValidatingWebhookConfiguration",
        "name: images.sightline.dev",
        "failurePolicy: Ignore",
        "path: /api/v1/admission/images",
        "- kube-system",
        "- --admission",
        "- --admission-webhook=sightline-operator-images",
        "resourceNames: [sightline-operator-images]",
    ] {
        ensure!(defaults.contains(part), "{part} missing from the defaults");
    }
    let closed = template(&["admission.failurePolicy=Fail"])?;
    ensure!(closed.contains("failurePolicy: Fail"));
    let off = template(&["admission.enabled=false"])?;
    ensure!(!off.contains("ValidatingWebhookConfiguration") && !off.contains("--admission"));
    // NetworkPolicies on: the operator keeps the Sensors' and its own.
    ensure!(!defaults.contains("kind: ServiceMonitor"));
    for part in [
        "kind: NetworkPolicy",
        "ingress: []",
        "- --network-policies",
        "- --operator-policy=sightline-operator-sensors",
        "- --operator-pod-label=app.kubernetes.io/component=operator",
        "- --operator-pod-label=app.kubernetes.io/instance=sightline",
        "- --operator-pod-label=app.kubernetes.io/name=sightline",
    ] {
        ensure!(defaults.contains(part), "{part} missing from the defaults");
    }
    let open = template(&["networkPolicy.enabled=false"])?;
    ensure!(!open.contains("kind: NetworkPolicy") && !open.contains("--network-policies"));
    ensure!(
        !defaults.contains("\"*\"") && !defaults.contains("- '*'") && !defaults.contains("[*]"),
        "no wildcard in any rule"
    );

    // Everything optional on, and everything that can be tuned, tuned.
    let full = template(&[
        "operator.replicas=3",
        "operator.logFormat=text",
        "operator.assetRetention=forever",
        "operator.nodeSelector.kubernetes\\.io/os=linux",
        "operator.imagePullSecrets[0].name=registry",
        "operator.priorityClassName=system-cluster-critical",
        "sensorDefaults.refreshSeconds=60",
        "vulnerabilityDatabase.enabled=true",
        "vulnerabilityDatabase.existingClaim=vulndb",
        "networkPolicy.allowNamespaces[0]=monitoring",
        "networkPolicy.allowCIDRs[0]=10.20.0.0/16",
        "serviceMonitor.enabled=true",
        "serviceMonitor.labels.release=prometheus",
        "metricsReaders[0].name=prometheus-k8s",
        "metricsReaders[0].namespace=monitoring",
        "sensorPolicy.allowedImages[0]=mirror.example/sightline/",
        "sensorPolicy.runtimeSockets[0]=/run/crio/crio.sock",
        "rbac.aggregateToDefaultRoles=false",
        "detailStore.engine=postgresql",
        "detailStore.postgresql.existingSecret=detail-store",
        "detailStore.postgresql.caSecret=detail-store-ca",
    ])?;
    ensure!(!full.contains("aggregate-to-"), "aggregation off");
    let said = dry_run(&cp, &full)?;
    for object in [
        "networkpolicy.networking.k8s.io/sightline-operator",
        "servicemonitor.monitoring.coreos.com/sightline-operator",
        "clusterrolebinding.rbac.authorization.k8s.io/sightline-operator-metrics-reader",
    ] {
        ensure!(said.contains(object), "{object} missing from:\n{said}");
    }
    for arg in [
        "--vuln-db=/var/lib/sightline/vulns.db",
        // Sensors reach the API (reports, the database) at this Service's address.
        "--api-service=sightline-operator",
        // The API over TLS, its certificate naming the Service and loopback.
        "--tls-secret=sightline-operator-tls",
        "--ca-config-map=sightline-operator-ca",
        "--tls-name=localhost,127.0.0.1",
        "--tls-validity-seconds=7776000",
        "--sensor-refresh-seconds=60",
        "--asset-retention=forever",
        "--allowed-sensor-image=mirror.example/sightline/",
        "--allowed-runtime-socket=/run/crio/crio.sock",
        "--metrics-namespace=monitoring",
        "cidr: 10.20.0.0/16",
    ] {
        ensure!(full.contains(arg), "{arg} not rendered");
    }
    ensure!(full.contains("claimName: vulndb") && full.contains("replicas: 3"));
    // The shared store's URL (with its password) comes from the Secret only.
    ensure!(
        full.contains("name: SIGHTLINE_DETAIL_STORE")
            && full.contains("name: detail-store\n                  key: url")
            && !full.contains("--detail-store"),
        "the PostgreSQL URL from its Secret"
    );
    ensure!(
        full.contains("value: /etc/sightline/detail-store-ca/ca.crt")
            && full.contains("secretName: detail-store-ca"),
        "the PostgreSQL server's CA from its Secret"
    );

    // The detail store: a kept claim of the default class by default, an
    // emptyDir when asked.
    ensure!(
        defaults.contains("- --detail-store=/var/lib/sightline-store/details.db")
            && defaults.contains("kind: PersistentVolumeClaim")
            && !defaults.contains("storageClassName:")
            && defaults.contains("type: Recreate")
    );
    let scratch = template(&["detailStore.persistence.enabled=false"])?;
    ensure!(
        scratch.contains("- --detail-store=/var/lib/sightline-store/details.db")
            && !scratch.contains("kind: PersistentVolumeClaim")
            && !scratch.contains("Recreate")
    );
    let kept = template(&[
        "detailStore.persistence.size=5Gi",
        "detailStore.persistence.storageClassName=local-path",
    ])?;
    for part in [
        "kind: PersistentVolumeClaim",
        "claimName: sightline-operator-store",
        "storage: 5Gi",
        "storageClassName: local-path",
        "helm.sh/resource-policy: keep",
        "type: Recreate",
        "fsGroup: 65532",
    ] {
        ensure!(kept.contains(part), "{part} missing from the kept store");
    }
    dry_run(&cp, &kept)?;

    // Signed bundles: the key pinned, imports kept in the store's volume,
    // and a role to import them with (bound to nobody).
    let key = "ed25519:O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=";
    let signed = template(&[
        "vulnerabilityDatabase.enabled=true",
        &format!("vulnerabilityDatabase.bundleKeys[0]={key}"),
    ])?;
    for part in [
        format!("- --bundle-key={key}"),
        "- --vuln-db=/var/lib/sightline-store/vulns.bundle".to_owned(),
        "name: sightline-bundle-importer".to_owned(),
    ] {
        ensure!(
            signed.contains(&part),
            "{part} missing from the signed setup"
        );
    }
    ensure!(
        !signed.contains("name: vulnerability-database"),
        "no volume of its own"
    );
    dry_run(&cp, &signed)?;
    ensure!(
        defaults.contains("name: sightline-bundle-importer") && !defaults.contains("--bundle-key"),
        "no key pinned by default"
    );

    // Without CRDs (they are managed elsewhere).
    let bare = template(&["crds.install=false"])?;
    ensure!(!bare.contains("kind: CustomResourceDefinition"));
    dry_run(&cp, &bare)?;

    // Values the schema or templates refuse, each named.
    for (sets, says) in [
        (
            &["operator.replicas=2", "operator.leaderElection=false"][..],
            "/operator",
        ),
        (&["operator.assetRetention=soon"][..], "assetRetention"),
        (&["operator.replcas=2"][..], "replcas"),
        (&["operator.logFormat=xml"][..], "logFormat"),
        (
            &["sensorPolicy.runtimeSockets[0]=relative.sock"][..],
            "runtimeSockets",
        ),
        (
            &["vulnerabilityDatabase.enabled=true"][..],
            "vulnerabilityDatabase.enabled needs existingClaim",
        ),
        (
            &["vulnerabilityDatabase.bundleKeys[0]=rsa:AAAA"][..],
            "bundleKeys",
        ),
        (
            &["detailStore.engine=postgresql"][..],
            "detailStore.postgresql.existingSecret is required",
        ),
        (
            &["operator.replicas=2"][..],
            "needs detailStore.engine=postgresql",
        ),
        (&["detailStore.engine=mysql"][..], "engine"),
    ] {
        match template(sets) {
            Ok(_) => bail!("{sets:?} was accepted"),
            Err(e) => ensure!(e.to_string().contains(says), "{sets:?}: {e}"),
        }
    }
    Ok(())
}
