//! `sightline search` and `sightline inventory` as a user runs them, against
//! a real kube-apiserver: client-side search, the fallback when the
//! operator's API is unreachable, query errors, and RBAC.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sightline_crds::Asset;
use sightline_testenv::{ControlPlane, Options, helpers};

fn sightline(kubeconfig: &Path, args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_sightline"))
        .env("KUBECONFIG", kubeconfig)
        .env_remove("SIGHTLINE_API")
        .args(args)
        .output()
        .context("running sightline")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An Asset as the inventory controller leaves it: normalized and labelled.
async fn asset(
    client: &kube::Client,
    name: &str,
    kind: &str,
    os: Value,
    hardware: Value,
    labels: Value,
) -> Result<()> {
    let api: Api<Asset> = Api::all(client.clone());
    let obj = json!({"apiVersion": "sightline.dev/v1alpha1", "kind": "Asset",
        "metadata": {"name": name, "labels": labels}, "spec": {}});
    api.create(&PostParams::default(), &serde_json::from_value(obj)?)
        .await?;
    let mut normalized = json!({});
    if !os.is_null() {
        normalized["os"] = os;
    }
    if !hardware.is_null() {
        normalized["hardware"] = hardware;
    }
    let status = json!({"apiVersion": "sightline.dev/v1alpha1", "kind": "Asset", "status": {
        "kind": kind, "identity": format!("id-{name}"),
        "normalized": normalized,
        "lastSeen": "2026-11-20T10:00:00Z",
        "tags": {"site": "east"},
    }});
    api.patch_status(
        name,
        &PatchParams::apply("test-sensor"),
        &Patch::Apply(&status),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn search_and_inventory_from_the_command_line() -> Result<()> {
    let cp = ControlPlane::start(Options::api_only()).await?;
    let client = cp.client();
    helpers::install_crds(&client).await?;
    let debian12 = json!({"vendor": "Debian", "product": "Debian Linux", "version": "12",
        "category": "Operating System", "subcategory": "Linux", "lifecycle": {"stage": "EndOfLife"}});
    let cloud = json!({"vendor": "Amazon Web Services", "product": "Amazon EC2",
        "category": "Virtualized", "subcategory": "Cloud", "lifecycle": {"stage": "Unknown"}});
    let switch = json!({"vendor": "Cisco", "category": "Network Device", "subcategory": "Switch",
        "lifecycle": {"stage": "Unknown"}});
    let eol =
        |kind: &str| json!({"sightline.dev/kind": kind, "sightline.dev/lifecycle": "EndOfLife"});
    asset(
        &client,
        "node-a",
        "Node",
        debian12.clone(),
        cloud,
        eol("Node"),
    )
    .await?;
    asset(
        &client,
        "image-a",
        "ContainerImage",
        debian12,
        Value::Null,
        eol("ContainerImage"),
    )
    .await?;
    let labels = json!({"sightline.dev/kind": "NetworkDevice"});
    asset(
        &client,
        "switch-a",
        "NetworkDevice",
        Value::Null,
        switch,
        labels,
    )
    .await?;
    let kc = cp.kubeconfig.clone();

    // Client-side search, each output format.
    let eol_images = "kind:ContainerImage AND os.lifecycle.stage:EndOfLife";
    let o = sightline(&kc, &["search", eol_images, "-o", "name"])?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "asset.sightline.dev/image-a\n");
    let o = sightline(
        &kc,
        &["search", r#"hardware.category:"Virtualized / Cloud""#],
    )?;
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("LIFECYCLE"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("node-a")
            && lines[1].contains("Debian Linux 12")
            && lines[1].contains("EndOfLife"),
        "{out}"
    );
    let o = sightline(&kc, &["search", "tags.site:EAST", "-o", "json"])?;
    let v: Value = serde_json::from_str(&stdout(&o))?;
    assert_eq!(v["total"], 3);
    let o = sightline(&kc, &["search", "kind:NetworkDevice", "-o", "wide"])?;
    let out = stdout(&o);
    assert!(
        out.contains("Network Device / Switch") && out.contains("site=east"),
        "{out}"
    );

    // An unreachable operator API falls back to client-side search.
    let port = sightline_testenv::process::free_port()?;
    let api = format!("http://127.0.0.1:{port}");
    let o = sightline(&kc, &["search", "kind:Node", "-o", "name", "--api", &api])?;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "asset.sightline.dev/node-a\n");
    assert!(
        stderr(&o).contains("operator API unavailable"),
        "{}",
        stderr(&o)
    );

    // A bad query: exit code 2, the query with a caret, the message.
    let o = sightline(&kc, &["search", "kind:Node AND os.version>>3"])?;
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "kind:Node AND os.version>>3\n                         ^\nexpected a value after 'os.version>' at column 26\n"
    );
    let o = sightline(&kc, &["search", "kind>Node"])?;
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o)
            .ends_with("'>' needs a number, date or version field; 'kind' is text at column 5\n"),
        "{}",
        stderr(&o)
    );

    // Fields are discoverable.
    let o = sightline(&kc, &["search", "--fields"])?;
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("os.lifecycle.stage ") && l.contains("text"))
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("os.version ") && l.contains("version"))
    );

    // The inventory summary.
    let o = sightline(&kc, &["inventory", "-o", "json"])?;
    let v: Value = serde_json::from_str(&stdout(&o))?;
    // The old `--json` and `-o yaml` say the same.
    let old: Value = serde_json::from_str(&stdout(&sightline(&kc, &["inventory", "--json"])?))?;
    assert_eq!(old, v);
    let yaml: Value =
        sightline_crds::yaml::from_str(&stdout(&sightline(&kc, &["inventory", "-o", "yaml"])?))?;
    assert_eq!(yaml, v);
    assert_eq!(v["total"], 3);
    assert_eq!(v["byKind"]["Node"], 1);
    assert_eq!(v["byCategory"]["Network Device / Switch"], 1);

    // A user who may not list Assets gets a clear error, not an empty result.
    let ns = helpers::namespace(&client, "cli").await?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let sa = serde_json::from_value(json!({"metadata": {"name": "nobody"}}))?;
    sas.create(&PostParams::default(), &sa).await?;
    let req =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))?;
    let token = sas
        .create_token_request("nobody", &PostParams::default(), &req)
        .await?
        .status
        .context("no token")?
        .token;
    let nobody = cp.kubeconfig_for_token("nobody", &token)?;
    let o = sightline(&nobody, &["search", "kind:Node"])?;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("listing Assets") && stderr(&o).contains("forbidden"),
        "{}",
        stderr(&o)
    );
    Ok(())
}
