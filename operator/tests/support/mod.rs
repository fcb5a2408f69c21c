#![allow(dead_code)] // Each test binary uses a different part of the support module.

//! What the operator's integration tests share: a fresh control plane with
//! the CRDs, and the real operator binary started against it.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use sightline_crds::asset::asset_name;
use sightline_crds::{Asset, AssetKind};
use sightline_testenv::process::{Proc, free_port};
use sightline_testenv::{ControlPlane, Options, helpers};

/// Namespace the operator runs in during tests.
pub const OPERATOR_NS: &str = "sightline-system";

/// A control plane (with kube-controller-manager, for garbage collection
/// and DaemonSet status) with the CRDs installed and a test namespace.
pub struct Env {
    pub cp: ControlPlane,
    pub client: kube::Client,
    pub ns: String,
}

impl Env {
    pub async fn start() -> Result<Self> {
        let cp = ControlPlane::start(Options::default())
            .await
            .context("starting the control plane")?;
        let client = cp.client();
        let nss: Api<Namespace> = Api::all(client.clone());
        nss.create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(OPERATOR_NS.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
        let ns = helpers::namespace(&client, "test").await?;
        Ok(Self { cp, client, ns })
    }

    /// Starts the operator binary as replica `identity`.
    pub fn operator(&self, identity: &str) -> Result<Operator> {
        self.operator_with(identity, &[])
    }

    /// Starts the operator binary as replica `identity` with extra flags.
    pub fn operator_with(&self, identity: &str, extra: &[&str]) -> Result<Operator> {
        let port = free_port()?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sightline-operator"));
        cmd.env("KUBECONFIG", &self.cp.kubeconfig)
            .env("RUST_LOG", "info,sightline_operator=debug")
            .args([
                "--namespace",
                OPERATOR_NS,
                "--http-addr",
                &format!("127.0.0.1:{port}"),
                "--identity",
                identity,
                "--lease-duration",
                "4",
                "--lease-retry",
                "1",
                "--sensor-image",
                "sightline/sensor:test",
            ])
            .args(extra);
        let log = self.cp.dir().join(format!("operator-{identity}.log"));
        let proc = Proc::spawn(&format!("operator {identity}"), cmd, &log)?;
        Ok(Operator { proc, port })
    }

    pub async fn apply(&self, yaml: &str) -> Result<()> {
        helpers::apply_yaml(&self.client, yaml, &self.ns).await?;
        Ok(())
    }

    /// Logs of everything, for a failing test.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.cp.dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "log") && p.to_string_lossy().contains("operator")
            {
                out.push_str(&format!(
                    "==== {}\n{}\n",
                    p.display(),
                    sightline_testenv::process::tail(&p, 60)
                ));
            }
        }
        out
    }
}

/// A running operator process; dropping it stops it.
pub struct Operator {
    pub proc: Proc,
    pub port: u16,
}

impl Operator {
    /// GETs a path of the operator's HTTP server.
    pub fn get(&self, path: &str) -> Result<String> {
        self.get_as(path, None)
    }

    /// GETs a path with a bearer token; the raw response, head and body.
    pub fn get_as(&self, path: &str, token: Option<&str>) -> Result<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// Waits until the HTTP server answers.
    pub async fn wait_serving(&self) -> Result<()> {
        helpers::wait_for(
            "the operator's HTTP server",
            Duration::from_secs(30),
            || async { self.get("/healthz").ok().filter(|r| r.contains("200 OK")) },
        )
        .await?;
        Ok(())
    }

    /// Kills the process without letting it clean up (SIGKILL).
    pub fn kill(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.proc.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        self.proc.stop(Duration::from_secs(1));
    }

    /// Value of an unlabelled metric, or the sum over a labelled one.
    pub fn metric(&self, name: &str) -> Result<f64> {
        let body = self.get("/metrics")?;
        Ok(body
            .lines()
            .filter(|l| {
                l.starts_with(name)
                    && (l.as_bytes().get(name.len()) == Some(&b' ')
                        || l.as_bytes().get(name.len()) == Some(&b'{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

/// A token for a new ServiceAccount, optionally allowed to list Assets.
pub async fn service_account_token(env: &Env, name: &str, may_list: bool) -> Result<String> {
    let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &env.ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}}))?,
    )
    .await?;
    if may_list {
        env.apply(&format!(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {name}-{ns}}}
rules:
- apiGroups: [sightline.dev]
  resources: [assets]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {name}-{ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {name}-{ns}}}
subjects:
- {{kind: ServiceAccount, name: {name}, namespace: {ns}}}
"#,
            ns = env.ns
        ))
        .await?;
    }
    let req: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))?;
    let tr = sas
        .create_token_request(name, &PostParams::default(), &req)
        .await?;
    tr.status
        .map(|s| s.token)
        .context("no token in the TokenRequest")
}

/// The token in a key's Secret (`token`, or `previous-token`).
pub async fn key_secret(
    env: &Env,
    key: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(env.client.clone(), OPERATOR_NS);
    let s = secrets
        .get_opt(&format!("sightline-key-{key}"))
        .await
        .ok()??;
    Some(
        s.data?
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect(),
    )
}

/// The image [`legacy_app`] reports.
pub const IMAGE: &str = "sightline.local/legacy-app:1.0";

/// An image Asset as a container sensor's report leaves it: tags, and the
/// worst findings (one fixable critical, one critical without a fix).
pub async fn legacy_app(client: &kube::Client) -> Result<()> {
    let api: Api<Asset> = Api::all(client.clone());
    let name = asset_name(AssetKind::ContainerImage, "sha256:0a0b");
    let pp = PatchParams::apply("sightline-test").force();
    api.patch(
        &name,
        &pp,
        &Patch::Apply(json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "Asset",
            "metadata": {"name": name}, "spec": {},
        })),
    )
    .await?;
    let vuln = |id: &str, package: &str, fixed: Option<&str>| {
        let mut v =
            json!({"id": id, "package": package, "installed": "1.0", "severity": "critical"});
        if let Some(f) = fixed {
            v["fixed"] = json!(f);
        }
        v
    };
    let status = json!({
        "apiVersion": "sightline.dev/v1alpha1", "kind": "Asset",
        "status": {
            "kind": "ContainerImage",
            "identity": "sha256:0a0b",
            "sources": [{"sensor": "test/nodes", "type": "container", "lastSeen": jiff::Timestamp::now().to_string()}],
            "observed": {"repoTags": [IMAGE], "repoDigests": ["sightline.local/legacy-app@sha256:ffee"]},
            "findings": {"vulnerabilities": {
                "critical": 2, "high": 0, "medium": 0, "low": 0, "unknown": 0,
                "top": [
                    vuln("GHSA-jf85-cpcp-j695", "lodash", Some("4.17.12")),
                    vuln("CVE-2099-0001", "zlib", None),
                ],
            }},
        },
    });
    api.patch_status(&name, &pp, &Patch::Apply(status)).await?;
    Ok(())
}
