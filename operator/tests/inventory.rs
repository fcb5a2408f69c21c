//! The inventory against a real API server: sensors report raw facts with
//! server-side apply under their own field managers, the real operator
//! binary normalizes, tags, labels, expires and serves search, and the
//! search API answers only callers who may list Assets.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use sightline_crds::asset::{AssetKind, LifecycleStage, asset_name};
use sightline_crds::conditions::find;
use sightline_crds::{Asset, TagRule};
use sightline_inventory::catalog::Catalog;
use sightline_testenv::helpers::{wait_for, wait_gone};
use support::{Env, service_account_token};

const T: Duration = Duration::from_secs(30);

/// What a sensor reports about one thing.
struct Report<'a> {
    kind: AssetKind,
    identity: &'a str,
    sensor: &'a str,
    key: Option<&'a str>,
    observed: Value,
    seen: Timestamp,
    findings: Option<Value>,
}

/// Reports like a sensor: creates the Asset if needed and applies its own
/// source entry, observed facts and findings under its own field manager.
async fn report(client: &kube::Client, r: &Report<'_>) -> Result<String> {
    let api: Api<Asset> = Api::all(client.clone());
    let name = asset_name(r.kind, r.identity);
    let pp = PatchParams::apply(&format!("sightline-sensor/{}", r.sensor.replace('/', ".")));
    let object = json!({
        "apiVersion": "sightline.dev/v1alpha1", "kind": "Asset",
        "metadata": {"name": name}, "spec": {},
    });
    api.patch(&name, &pp, &Patch::Apply(&object)).await?;
    let mut status = json!({
        "kind": r.kind.as_str(),
        "identity": r.identity,
        "sources": [{
            "sensor": r.sensor, "type": "container",
            "lastSeen": r.seen.to_string(),
        }],
        "observed": r.observed,
        "managed": r.kind != AssetKind::NetworkDevice,
    });
    if let Some(k) = r.key {
        status["sources"][0]["activationKey"] = json!(k);
    }
    if let Some(f) = &r.findings {
        status["findings"] = f.clone();
    }
    let body = json!({"apiVersion": "sightline.dev/v1alpha1", "kind": "Asset", "status": status});
    api.patch_status(&name, &pp, &Patch::Apply(&body)).await?;
    Ok(name)
}

fn debian(version: &str, codename: &str) -> Value {
    json!({"osRelease": {
        "PRETTY_NAME": format!("Debian GNU/Linux {version} ({codename})"),
        "NAME": "Debian GNU/Linux", "VERSION_ID": version,
        "VERSION": format!("{version} ({codename})"), "VERSION_CODENAME": codename,
        "ID": "debian", "HOME_URL": "https://www.debian.org/",
    }})
}

/// A realistic little inventory; returns the Asset names by role.
async fn seed(client: &kube::Client, now: Timestamp) -> Result<BTreeMap<&'static str, String>> {
    let mut names = BTreeMap::new();
    let mut node_cloud = debian("12", "bookworm");
    node_cloud["dmi"] = json!({"sysVendor": "Amazon EC2", "productName": "m5.large"});
    node_cloud["cloudProvider"] = json!("aws");
    node_cloud["software"] = json!([{"name": "kubelet", "version": "v1.34.4"}, {"name": "containerd", "version": "1.7.24"}]);
    let reports = [
        (
            "node-cloud",
            AssetKind::Node,
            "uid-node-cloud",
            node_cloud,
            None,
        ),
        (
            "node-metal",
            AssetKind::Node,
            "uid-node-metal",
            json!({"osImage": "Debian GNU/Linux 11 (bullseye)", "dmi": {"sysVendor": "Dell Inc.", "productName": "PowerEdge R750"}}),
            None,
        ),
        (
            "switch",
            AssetKind::NetworkDevice,
            "00:1b:54:aa:bb:cc",
            json!({"device": {"vendor": "Cisco Systems, Inc", "model": "C9300-48P", "type": "switch"}}),
            None,
        ),
        (
            "router",
            AssetKind::NetworkDevice,
            "00:05:85:aa:bb:cc",
            json!({"device": {"vendor": "Juniper Networks", "model": "MX204", "type": "router"}}),
            None,
        ),
        (
            "image-debian12",
            AssetKind::ContainerImage,
            "sha256:1111111111111111111111111111111111111111111111111111111111111111",
            debian("12", "bookworm"),
            Some(
                json!({"vulnerabilities": {"critical": 2, "high": 5, "medium": 0, "low": 1, "unknown": 0}}),
            ),
        ),
        (
            "image-debian11",
            AssetKind::ContainerImage,
            "sha256:2222222222222222222222222222222222222222222222222222222222222222",
            debian("11", "bullseye"),
            Some(
                json!({"vulnerabilities": {"critical": 0, "high": 0, "medium": 0, "low": 0, "unknown": 0}}),
            ),
        ),
        (
            "image-scratch",
            AssetKind::ContainerImage,
            "sha256:3333333333333333333333333333333333333333333333333333333333333333",
            json!({}),
            None,
        ),
        (
            "host-foo",
            AssetKind::Host,
            "host-foo-1",
            json!({"osImage": "FooOS 3.1"}),
            None,
        ),
    ];
    for (role, kind, identity, observed, findings) in reports {
        let name = report(
            client,
            &Report {
                kind,
                identity,
                sensor: "sightline-system/nodes",
                key: Some("east"),
                observed,
                seen: now,
                findings,
            },
        )
        .await
        .with_context(|| format!("reporting {role}"))?;
        names.insert(role, name);
    }
    Ok(names)
}

async fn asset(client: &kube::Client, name: &str) -> Result<Asset> {
    Ok(Api::<Asset>::all(client.clone()).get(name).await?)
}

/// Waits until `name` satisfies `check`, returning it.
async fn wait_asset(
    client: &kube::Client,
    name: &str,
    what: &str,
    check: impl Fn(&Asset) -> bool,
) -> Result<Asset> {
    let api: Api<Asset> = Api::all(client.clone());
    Ok(wait_for(what, T, || async {
        api.get_opt(name).await.ok().flatten().filter(|a| check(a))
    })
    .await?)
}

fn tags(a: &Asset) -> BTreeMap<String, String> {
    a.status.clone().unwrap_or_default().tags
}

fn label<'a>(a: &'a Asset, k: &str) -> Option<&'a str> {
    a.metadata.labels.as_ref()?.get(k).map(String::as_str)
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Status code and JSON body of a search API call.
fn api_call(op: &support::Operator, path: &str, token: Option<&str>) -> Result<(u16, Value)> {
    let raw = op.get_as(path, token)?;
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok((code, serde_json::from_str(body).unwrap_or(Value::Null)))
}

fn hit_names(body: &Value) -> Vec<String> {
    body["hits"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|x| x["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn sensors_facts_become_a_normalized_tagged_searchable_inventory() -> Result<()> {
    let env = Env::start().await?;
    let op = env.operator("inv")?;
    let res = async {
        env.apply(
            "apiVersion: sightline.dev/v1alpha1\nkind: ActivationKey\nmetadata: {name: east}\nspec: {modules: [inventory], tags: {site: east, owner: platform}}\n",
        )
        .await?;
        env.apply(
            "apiVersion: sightline.dev/v1alpha1\nkind: TagRule\nmetadata: {name: cloud}\nspec:\n  query: 'kind:Node AND hardware.category:\"Virtualized / Cloud\"'\n  tags: {placement: cloud, owner: ignored-because-the-key-sets-it}\n---\napiVersion: sightline.dev/v1alpha1\nkind: TagRule\nmetadata: {name: broken}\nspec: {query: 'kind:Node AND', tags: {x: y}}\n",
        )
        .await?;
        let now = Timestamp::now();
        let names = seed(&env.client, now).await?;
        let catalog = Catalog::builtin()?;
        let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();

        // Normalized, categorized, tagged and labelled, exactly.
        let cloud = wait_asset(&env.client, &names["node-cloud"], "node-cloud normalized and tagged", |a| {
            tags(a).contains_key("placement")
                && label(a, "sightline.dev/lifecycle").is_some()
        })
        .await?;
        let st = cloud.status.clone().unwrap_or_default();
        let n = st.normalized.clone().context("normalized")?;
        let hw = n.hardware.clone().context("hardware")?;
        assert_eq!(
            (hw.vendor.as_deref(), hw.category.as_deref(), hw.subcategory.as_deref()),
            (Some("Amazon Web Services"), Some("Virtualized"), Some("Cloud"))
        );
        let os = n.os.clone().context("os")?;
        assert_eq!(
            (os.vendor.as_deref(), os.product.as_deref(), os.version.as_deref()),
            (Some("Debian"), Some("Debian Linux"), Some("12"))
        );
        assert_eq!(
            n.software.iter().map(|p| p.product.clone().unwrap_or_default()).collect::<Vec<_>>(),
            ["Kubernetes", "containerd"]
        );
        let want = catalog.normalize(Some(AssetKind::Node), &st.observed, today);
        assert_eq!(n, want, "the operator normalizes exactly as the catalog does");
        assert_eq!(
            tags(&cloud),
            BTreeMap::from([
                ("owner".to_string(), "platform".to_string()),
                ("placement".to_string(), "cloud".to_string()),
                ("site".to_string(), "east".to_string()),
            ]),
            "static tags from the key win over a rule's"
        );
        assert_eq!(label(&cloud, "sightline.dev/kind"), Some("Node"));
        let stage = os.lifecycle.as_ref().map(|l| l.stage).context("os lifecycle")?;
        assert_eq!(
            label(&cloud, "sightline.dev/lifecycle"),
            Some(sightline_inventory::doc::stage_str(stage))
        );
        assert_eq!(st.first_seen.as_ref().map(|t| t.0.as_second()), Some(now.as_second()));
        assert_eq!(st.last_seen.as_ref().map(|t| t.0.as_second()), Some(now.as_second()));

        let switch = wait_asset(&env.client, &names["switch"], "switch normalized", |a| {
            a.status.as_ref().is_some_and(|s| s.normalized.is_some())
        })
        .await?;
        let hw = switch.status.and_then(|s| s.normalized).and_then(|n| n.hardware).context("switch hardware")?;
        assert_eq!(
            (hw.vendor.as_deref(), hw.category.as_deref(), hw.subcategory.as_deref()),
            (Some("Cisco"), Some("Network Device"), Some("Switch"))
        );

        let stage_of = |a: &Asset| {
            a.status.clone()?.normalized?.os?.lifecycle.map(|l| l.stage)
        };
        let scratch = wait_asset(&env.client, &names["image-scratch"], "scratch normalized", |a| stage_of(a).is_some()).await?;
        assert_eq!(stage_of(&scratch), Some(LifecycleStage::Unidentified));
        // The lifecycle label follows the status in a separate write.
        let foo = wait_asset(&env.client, &names["host-foo"], "host normalized and labelled", |a| {
            stage_of(a).is_some() && label(a, "sightline.dev/lifecycle").is_some()
        })
        .await?;
        assert_eq!(stage_of(&foo), Some(LifecycleStage::Unknown));
        assert_eq!(label(&foo, "sightline.dev/lifecycle"), Some("Unknown"));
        let img = wait_asset(&env.client, &names["image-debian12"], "image labelled", |a| {
            label(a, "sightline.dev/max-severity").is_some()
        })
        .await?;
        assert_eq!(label(&img, "sightline.dev/max-severity"), Some("critical"));
        let img11 = wait_asset(&env.client, &names["image-debian11"], "image labelled", |a| {
            label(a, "sightline.dev/max-severity").is_some()
        })
        .await?;
        assert_eq!(label(&img11, "sightline.dev/max-severity"), Some("none"));
        assert_eq!(stage_of(&img11), Some(LifecycleStage::EndOfService), "Debian 11 LTS ended 2026-08-31");

        // The sensor's own fields are untouched, and its next report keeps
        // what the operator wrote.
        let later = now + jiff::SignedDuration::from_secs(60);
        let mut observed = debian("12", "bookworm");
        observed["dmi"] = json!({"sysVendor": "Amazon EC2", "productName": "m5.large"});
        observed["cloudProvider"] = json!("aws");
        observed["software"] = json!([{"name": "kubelet", "version": "v1.34.4"}, {"name": "containerd", "version": "1.7.24"}]);
        report(&env.client, &Report {
            kind: AssetKind::Node, identity: "uid-node-cloud", sensor: "sightline-system/nodes",
            key: Some("east"), observed, seen: later, findings: None,
        }).await?;
        let cloud = wait_asset(&env.client, &names["node-cloud"], "lastSeen to follow the sensor", |a| {
            a.status.as_ref().and_then(|s| s.last_seen.as_ref()).is_some_and(|t| t.0.as_second() == later.as_second())
        })
        .await?;
        let st = cloud.status.clone().unwrap_or_default();
        assert!(st.normalized.is_some() && tags(&cloud).contains_key("placement"));
        assert_eq!(st.first_seen.map(|t| t.0.as_second()), Some(now.as_second()), "firstSeen stays");
        let managers: BTreeMap<String, String> = cloud
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.subresource.as_deref() == Some("status"))
            .map(|m| (m.manager.unwrap_or_default(), serde_json::to_string(&m.fields_v1).unwrap_or_default()))
            .collect();
        let inv = managers.get("sightline-operator/inventory").context("inventory manager")?;
        let sensor = managers.get("sightline-sensor/sightline-system.nodes").context("sensor manager")?;
        assert!(inv.contains("f:normalized") && !inv.contains("f:observed"), "{inv}");
        assert!(sensor.contains("f:observed") && !sensor.contains("f:normalized"), "{sensor}");

        // TagRules report validity and match counts.
        let rules: Api<TagRule> = Api::all(env.client.clone());
        let broken = wait_for("the broken rule's condition", T, || async {
            let r = rules.get("broken").await.ok()?;
            find(&r.status?.conditions, "Ready").cloned()
        })
        .await?;
        assert_eq!((broken.status.as_str(), broken.reason.as_str()), ("False", "InvalidQuery"));
        assert_eq!(broken.message, "expected a condition, found the end of the query at column 14");
        wait_for("the cloud rule to count its match", T, || async {
            let s = rules.get("cloud").await.ok()?.status?;
            (s.matched == 1 && find(&s.conditions, "Ready")?.status == "True").then_some(())
        })
        .await?;

        // Changing a rule moves its tags; changing a key's tags re-tags its Assets.
        rules
            .patch("cloud", &PatchParams::default(), &Patch::Merge(json!({"spec": {"query": "hardware.category:Computers"}})))
            .await?;
        wait_asset(&env.client, &names["node-metal"], "node-metal to gain the rule's tag", |a| {
            tags(a).get("placement").map(String::as_str) == Some("cloud")
        })
        .await?;
        wait_asset(&env.client, &names["node-cloud"], "node-cloud to lose it", |a| !tags(a).contains_key("placement")).await?;
        env.apply(
            "apiVersion: sightline.dev/v1alpha1\nkind: ActivationKey\nmetadata: {name: east}\nspec: {modules: [inventory], tags: {site: east-2}}\n",
        )
        .await?;
        let sw = wait_asset(&env.client, &names["switch"], "the key's new tags", |a| {
            tags(a).get("site").map(String::as_str) == Some("east-2")
        })
        .await?;
        assert!(!tags(&sw).contains_key("owner"), "a tag the key no longer sets goes away");

        // Search: only for callers who may list Assets.
        let reader = service_account_token(&env, "reader", true).await?;
        let nobody = service_account_token(&env, "nobody", false).await?;
        let q = |query: &str| format!("/api/v1/search?q={}", encode(query));
        let seed_query = q(r#"hardware.category:"Network Device" AND hardware.subcategory:Switch"#);
        let (code, body) = wait_for("the search API to answer the reader", T, || async {
            api_call(&op, &seed_query, Some(&reader)).ok().filter(|(c, b)| *c == 200 && !hit_names(b).is_empty())
        })
        .await?;
        assert_eq!((code, hit_names(&body)), (200, vec![names["switch"].clone()]));
        let (_, body) = api_call(&op, &q(r#"hardware.category:"Virtualized / Cloud""#), Some(&reader))?;
        assert_eq!(hit_names(&body), [names["node-cloud"].clone()]);
        // Every image on an end-of-life OS: Debian 12 is EndOfLife from the
        // end of its regular security support until its LTS ends, so the
        // expectation follows the catalog's dates for today.
        let (_, body) = api_call(&op, &q("kind:ContainerImage AND os.lifecycle.stage:EndOfLife"), Some(&reader))?;
        let d12 = catalog.normalize(Some(AssetKind::ContainerImage), &serde_json::from_value(debian("12", "bookworm"))?, today);
        let d12_stage = d12.os.and_then(|o| o.lifecycle).map(|l| l.stage);
        let want: Vec<String> = if d12_stage == Some(LifecycleStage::EndOfLife) {
            vec![names["image-debian12"].clone()]
        } else {
            vec![]
        };
        assert_eq!(hit_names(&body), want);
        let eol_images = q("kind:ContainerImage AND os.lifecycle.stage:EndOfService");
        let (_, body) = api_call(&op, &eol_images, Some(&reader))?;
        assert_eq!(hit_names(&body), [names["image-debian11"].clone()]);
        let (_, body) = api_call(&op, &q("tags.site:east-2 AND kind:NetworkDevice"), Some(&reader))?;
        let mut want = vec![names["router"].clone(), names["switch"].clone()];
        want.sort();
        assert_eq!(hit_names(&body), want);
        let (code, body) = api_call(&op, &q("os.lifecycle.stage:"), Some(&reader))?;
        assert_eq!(code, 400);
        assert_eq!(body["error"], "expected a value after 'os.lifecycle.stage:' at column 20");
        assert_eq!(body["column"], 20);
        let (code, body) = api_call(&op, &seed_query, Some(&nobody))?;
        assert_eq!(code, 403, "{body}");
        assert!(body["error"].as_str().unwrap_or_default().contains(&format!("system:serviceaccount:{}:nobody", env.ns)), "{body}");
        let (code, _) = api_call(&op, &seed_query, None)?;
        assert_eq!(code, 401);
        let (code, _) = api_call(&op, &seed_query, Some("not-a-token"))?;
        assert_eq!(code, 401);

        // The summary, over the API and as metrics.
        let (code, summary) = api_call(&op, "/api/v1/summary", Some(&reader))?;
        assert_eq!(code, 200);
        assert_eq!(summary["total"], 8);
        assert_eq!(summary["byKind"]["NetworkDevice"], 2);
        assert_eq!(summary["byCategory"]["Network Device / Switch"], 1);
        wait_for("the inventory metrics", T, || async {
            (op.metric("sightline_operator_inventory_asset_count").ok()? == 8.0).then_some(())
        })
        .await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if res.is_err() {
        eprintln!("{}", env.dump());
    }
    drop(op);
    res
}

#[tokio::test]
async fn assets_no_sensor_sees_within_the_retention_are_removed() -> Result<()> {
    let env = Env::start().await?;
    let op = env.operator_with("retention", &["--asset-retention", "1h"])?;
    let res = async {
        let now = Timestamp::now();
        let stale = report(
            &env.client,
            &Report {
                kind: AssetKind::Host,
                identity: "stale-host",
                sensor: "ci/scanner",
                key: None,
                observed: json!({"osImage": "Ubuntu 22.04.4 LTS"}),
                seen: now - jiff::SignedDuration::from_hours(2),
                findings: None,
            },
        )
        .await?;
        let fresh = report(
            &env.client,
            &Report {
                kind: AssetKind::Host,
                identity: "fresh-host",
                sensor: "ci/scanner",
                key: None,
                observed: json!({"osImage": "Ubuntu 22.04.4 LTS"}),
                seen: now,
                findings: None,
            },
        )
        .await?;
        let api: Api<Asset> = Api::all(env.client.clone());
        wait_gone(&api, &stale, T).await?;
        wait_asset(&env.client, &fresh, "the fresh Asset normalized", |a| {
            a.status.as_ref().is_some_and(|s| s.normalized.is_some())
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        if asset(&env.client, &fresh).await.is_err() {
            bail!("the fresh Asset was removed");
        }
        assert!(op.metric("sightline_operator_assets_expired_total")? >= 1.0);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if res.is_err() {
        eprintln!("{}", env.dump());
    }
    drop(op);
    res
}

#[tokio::test]
async fn an_asset_whose_writer_died_before_its_status_expires_too() -> Result<()> {
    let env = Env::start().await?;
    let op = env.operator_with("orphans", &["--asset-retention", "4s"])?;
    let res = async {
        // Created, then nothing: the writer died before it wrote a status.
        let api: Api<Asset> = Api::all(env.client.clone());
        let name = asset_name(AssetKind::Host, "orphan-host");
        let orphan: Asset = serde_json::from_value(json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "Asset",
            "metadata": {"name": name}, "spec": {},
        }))?;
        api.create(&Default::default(), &orphan).await?;
        // Kept while younger than the retention...
        tokio::time::sleep(Duration::from_secs(1)).await;
        ensure!(api.get_opt(&name).await?.is_some(), "removed too early");
        // ...removed once its creation is older, though nothing ever saw it.
        wait_gone(&api, &name, T).await?;
        ensure!(op.metric("sightline_operator_assets_expired_total")? >= 1.0);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if res.is_err() {
        eprintln!("{}", env.dump());
    }
    drop(op);
    res
}

#[tokio::test]
async fn containers_read_as_their_pod_and_carry_their_images_os() -> Result<()> {
    let env = Env::start().await?;
    let op = env.operator("containers")?;
    let res = async {
        let now = Timestamp::now();
        let image_id = "sha256:4444444444444444444444444444444444444444444444444444444444444444";
        // The container is reported before its image is analysed, as a
        // sensor does when a pod starts on a new image.
        let container = report(
            &env.client,
            &Report {
                kind: AssetKind::Container,
                identity: "c0ffee",
                sensor: "sightline-system/nodes",
                key: None,
                observed: json!({
                    "containerId": "c0ffee", "name": "k8s_app_web-1_shop", "imageId": image_id,
                    "namespace": "shop", "pod": "web-1", "container": "app", "state": "running",
                }),
                seen: now,
                findings: None,
            },
        )
        .await?;
        let mut image_facts = debian("11", "bullseye");
        image_facts["repoTags"] = json!(["registry.example.com/shop/web:1.4"]);
        let image = report(
            &env.client,
            &Report {
                kind: AssetKind::ContainerImage,
                identity: image_id,
                sensor: "sightline-system/nodes",
                key: None,
                observed: image_facts,
                seen: now,
                findings: None,
            },
        )
        .await?;
        let image = wait_asset(&env.client, &image, "the image normalized", |a| {
            label(a, "sightline.dev/lifecycle").is_some()
        })
        .await?;
        let image_os = image
            .status
            .clone()
            .and_then(|s| s.normalized)
            .and_then(|n| n.os);
        ensure!(
            image
                .status
                .as_ref()
                .and_then(|s| s.display_name.as_deref())
                == Some("registry.example.com/shop/web:1.4")
        );
        let c = wait_asset(
            &env.client,
            &container,
            "the container's OS from its image",
            |a| label(a, "sightline.dev/lifecycle").is_some(),
        )
        .await?;
        let st = c.status.clone().context("status")?;
        let n = st.normalized.clone().context("normalized")?;
        ensure!(n.os == image_os, "{:?} vs {image_os:?}", n.os);
        ensure!(
            n.os.as_ref().and_then(|o| o.product.as_deref()) == Some("Debian Linux"),
            "{:?}",
            n.os
        );
        ensure!(label(&c, "sightline.dev/lifecycle") == label(&image, "sightline.dev/lifecycle"));
        let hw = n.hardware.context("hardware")?;
        ensure!(
            (hw.category.as_deref(), hw.subcategory.as_deref())
                == (Some("Virtualized"), Some("Container"))
        );
        ensure!(st.display_name.as_deref() == Some("shop/web-1/app"));

        // `kubectl get assets` shows it by a name a person reads.
        let out = env
            .cp
            .kubectl()?
            .args(["get", "assets", &container])
            .output()?;
        let table = String::from_utf8_lossy(&out.stdout);
        ensure!(
            table.contains("DISPLAY NAME")
                && table.contains("shop/web-1/app")
                && table.contains("Debian Linux"),
            "{table}"
        );
        Ok(())
    }
    .await;
    if res.is_err() {
        eprintln!("{}", env.dump());
    }
    drop(op);
    res
}
