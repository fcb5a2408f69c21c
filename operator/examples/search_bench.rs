//! The search benchmark `cargo xtask bench` runs (built with `--release`).
//!
//! 1. Generates a synthetic inventory of N Assets with raw observed facts
//!    (ten distros, cloud and bare-metal hardware, network devices, images
//!    with vulnerabilities, tags, software), normalizes it with the same code
//!    the inventory controller runs, and builds the search index: build time,
//!    normalization rate, and the index's memory (RSS growth; the Assets are
//!    generated one at a time and dropped).
//! 2. Runs ten representative queries: p50 and p99 over repeated runs.
//! 3. Baseline on a real kube-apiserver: M of those Assets created there,
//!    then the queries a label selector can express, listed from the API
//!    server (raw bytes, no client-side decoding) versus searched in an index
//!    of the same M Assets. Ratio = API server list / index search.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sightline_crds::asset::AssetKind;
use sightline_crds::{Asset, AssetSpec, AssetStatus};
use sightline_inventory::catalog::Catalog;
use sightline_inventory::index::Index;
use sightline_operator::controllers::inventory::desired;
use sightline_testenv::{ControlPlane, Options, helpers};

const QUERIES: [&str; 10] = [
    "kind:Node",
    r#"hardware.category:"Network Device" AND hardware.subcategory:Switch"#,
    r#"hardware.category:"Virtualized / Cloud""#,
    "kind:ContainerImage AND os.lifecycle.stage:EndOfLife",
    "software:(name:openssl AND version<3.0)",
    "findings.vulnerabilities.critical>=1 AND tags.site:east",
    "lastSeen < now-7d",
    r#"os.product:"Debian Linux" AND os.version >= 12"#,
    "name:node-12*",
    "NOT kind:Container AND (tags.team:team-3 OR tags.team:team-7) AND observed.kernelVersion:6.1*",
];

/// Queries a label selector can express, with that selector.
const LABEL_QUERIES: [(&str, &str); 3] = [
    ("kind:Node", "sightline.dev/kind=Node"),
    (
        "kind:ContainerImage AND os.lifecycle.stage:EndOfLife",
        "sightline.dev/kind=ContainerImage,sightline.dev/lifecycle=EndOfLife",
    ),
    (
        "maxSeverity:critical",
        "sightline.dev/max-severity=critical",
    ),
];

const OS_RELEASES: [(&str, &str, &str); 10] = [
    ("debian", "Debian GNU/Linux", "12"),
    ("debian", "Debian GNU/Linux", "11"),
    ("ubuntu", "Ubuntu", "22.04"),
    ("ubuntu", "Ubuntu", "24.04"),
    ("alpine", "Alpine Linux", "3.20.3"),
    ("alpine", "Alpine Linux", "3.22.1"),
    ("rhel", "Red Hat Enterprise Linux", "9.4"),
    ("rocky", "Rocky Linux", "8.10"),
    ("amzn", "Amazon Linux", "2023"),
    ("fedora", "Fedora Linux", "40"),
];

const HARDWARE: [(&str, &str, Option<&str>); 6] = [
    ("Amazon EC2", "m5.large", Some("aws")),
    ("Google", "Google Compute Engine", Some("gce")),
    ("QEMU", "Standard PC (Q35 + ICH9, 2009)", None),
    ("Dell Inc.", "PowerEdge R750", None),
    ("HPE", "ProLiant DL380 Gen10", None),
    ("VMware, Inc.", "VMware Virtual Platform", None),
];

const DEVICES: [(&str, &str); 5] = [
    ("Cisco Systems, Inc", "switch"),
    ("Juniper Networks", "router"),
    ("Arista Networks", "switch"),
    ("Fortinet", "firewall"),
    ("HP Inc.", "printer"),
];

const SITES: [&str; 5] = ["east", "west", "north", "south", "lab"];

/// The `i`th synthetic Asset, as sensors would have reported it.
fn synthetic(i: usize, rng: &mut StdRng, now: Timestamp) -> Asset {
    let (kind, prefix) = match i % 10 {
        0..=2 => (AssetKind::Node, "node"),
        3 => (AssetKind::NetworkDevice, "device"),
        4..=8 => (AssetKind::ContainerImage, "image"),
        _ => (AssetKind::Container, "container"),
    };
    let identity = format!("{prefix}-{i}");
    let mut observed = BTreeMap::new();
    observed.insert(
        "machineId".to_string(),
        json!(format!("{:032x}", rng.random::<u128>())),
    );
    if matches!(kind, AssetKind::Node | AssetKind::ContainerImage) {
        let (id, name, version) = OS_RELEASES[rng.random_range(0..OS_RELEASES.len())];
        observed.insert(
            "osRelease".into(),
            json!({"ID": id, "NAME": name, "VERSION_ID": version, "PRETTY_NAME": format!("{name} {version}")}),
        );
    }
    if kind == AssetKind::Node {
        let (vendor, product, cloud) = HARDWARE[rng.random_range(0..HARDWARE.len())];
        observed.insert(
            "dmi".into(),
            json!({"sysVendor": vendor, "productName": product}),
        );
        if let Some(c) = cloud {
            observed.insert("cloudProvider".into(), json!(c));
        }
        observed.insert(
            "kernelVersion".into(),
            json!(format!(
                "6.{}.0-{}-amd64",
                rng.random_range(1..12),
                rng.random_range(1..40)
            )),
        );
        observed.insert(
            "software".into(),
            json!([
                {"name": "kubelet", "version": format!("v1.{}.{}", rng.random_range(30..35), rng.random_range(0..8))},
                {"name": "containerd", "version": "1.7.24"},
                {"name": "openssl", "version": if rng.random_bool(0.3) { "1.1.1w" } else { "3.0.15" }},
            ]),
        );
    }
    if kind == AssetKind::NetworkDevice {
        let (vendor, ty) = DEVICES[rng.random_range(0..DEVICES.len())];
        observed.insert("device".into(), json!({"vendor": vendor, "type": ty, "model": format!("M{}", rng.random_range(100..999))}));
    }
    let findings = (kind == AssetKind::ContainerImage).then(|| {
        let c = if rng.random_bool(0.2) { rng.random_range(1..5) } else { 0 };
        json!({"vulnerabilities": {"critical": c, "high": rng.random_range(0..20), "medium": rng.random_range(0..50), "low": rng.random_range(0..80), "unknown": 0}})
    });
    let seen = now - jiff::SignedDuration::from_secs(rng.random_range(0..30 * 86_400));
    let mut status = json!({
        "kind": kind.as_str(),
        "identity": identity,
        "sources": [{"sensor": format!("sightline-system/sensor-{}", i % 7), "type": "container", "lastSeen": seen.to_string()}],
        "observed": observed,
        "tags": {"site": SITES[i % SITES.len()], "team": format!("team-{}", i % 20)},
        "managed": kind != AssetKind::NetworkDevice,
    });
    if let Some(f) = findings {
        status["findings"] = f;
    }
    let mut asset = Asset::new(&format!("{prefix}-{i}"), AssetSpec {});
    asset.status = serde_json::from_value::<AssetStatus>(status).ok();
    asset
}

/// `synthetic`, normalized and labelled as the inventory controller would.
fn normalized(asset: Asset, catalog: &Catalog, now: Timestamp) -> Asset {
    let no_keys = |_: &str| None;
    let (owned, labels) = desired(&asset, catalog, &no_keys, &[], None, now);
    let mut asset = asset;
    if let Some(s) = asset.status.as_mut() {
        s.normalized = Some(owned.normalized);
        s.first_seen = owned.first_seen;
        s.last_seen = owned.last_seen;
    }
    asset.metadata.labels = Some(labels);
    asset
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn percentiles(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn args() -> (usize, usize, usize) {
    let mut a = std::env::args().skip(1);
    let mut out = (100_000, 10_000, 100);
    while let Some(flag) = a.next() {
        let v = a.next().and_then(|v| v.parse().ok());
        match (flag.as_str(), v) {
            ("--assets", Some(v)) => out.0 = v,
            ("--api-assets", Some(v)) => out.1 = v,
            ("--runs", Some(v)) => out.2 = v,
            _ => eprintln!("ignoring {flag}"),
        }
    }
    out
}

#[tokio::main]
async fn main() -> Result<()> {
    let (n, api_n, runs) = args();
    let catalog = Catalog::builtin()?;
    let now = Timestamp::now();
    let mut rng = StdRng::seed_from_u64(7);

    // 1. Build.
    let rss_before = rss_kib("VmRSS:");
    let mut index = Index::bulk();
    let mut normalize_time = Duration::ZERO;
    let started = Instant::now();
    for i in 0..n {
        let raw = synthetic(i, &mut rng, now);
        let t = Instant::now();
        let asset = normalized(raw, &catalog, now);
        normalize_time += t.elapsed();
        index.upsert(&asset);
    }
    index.finish_bulk();
    let build = started.elapsed();
    let index_mib = (rss_kib("VmRSS:").saturating_sub(rss_before)) as f64 / 1024.0;
    println!("search index: {n} Assets");
    println!(
        "  build (generate + normalize + index) {:.2} s; normalization {:.0} Assets/s",
        build.as_secs_f64(),
        n as f64 / normalize_time.as_secs_f64()
    );
    println!("  index memory (RSS growth) {index_mib:.1} MiB   goal < 256 MiB");
    println!("  peak RSS {:.1} MiB", rss_kib("VmHWM:") as f64 / 1024.0);

    // 2. Queries.
    println!(
        "  {:<96} {:>8} {:>9} {:>9}",
        "query", "matches", "p50 ms", "p99 ms"
    );
    let mut worst = Duration::ZERO;
    for q in QUERIES {
        let mut times = Vec::with_capacity(runs);
        let mut total = 0;
        for _ in 0..runs {
            let t = Instant::now();
            total = index
                .search(q, now.as_second(), 500)
                .map_err(|e| anyhow::anyhow!("{q}: {e}"))?
                .total;
            times.push(t.elapsed());
        }
        let (p50, p99) = percentiles(&mut times);
        worst = worst.max(p99);
        println!("  {q:<96} {total:>8} {:>9.2} {:>9.2}", ms(p50), ms(p99));
    }
    println!("  worst p99 {:.2} ms   goal < 20 ms", ms(worst));
    drop(index);

    // 3. Baseline: the API server with label selectors, on the same Assets.
    if api_n == 0 {
        return Ok(());
    }
    let cp = ControlPlane::start(Options::api_only()).await?;
    let client = cp.client();
    helpers::install_crds(&client).await?;
    let api: Api<Asset> = Api::all(client.clone());
    let mut rng = StdRng::seed_from_u64(7);
    let assets: Vec<Asset> = (0..api_n)
        .map(|i| normalized(synthetic(i, &mut rng, now), &catalog, now))
        .collect();
    let t = Instant::now();
    futures::stream::iter(assets.iter().cloned())
        .map(|a| {
            let api = api.clone();
            async move {
                let name = a.metadata.name.clone().unwrap_or_default();
                let mut meta = a.clone();
                meta.status = None;
                api.create(&PostParams::default(), &meta).await?;
                let status = json!({"apiVersion": "sightline.dev/v1alpha1", "kind": "Asset", "status": a.status});
                api.patch_status(&name, &PatchParams::apply("bench"), &Patch::Apply(&status)).await?;
                Ok::<_, kube::Error>(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .context("creating the Assets")?;
    println!(
        "\nbaseline: {api_n} Assets in a real kube-apiserver (created in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    let mut small = Index::bulk();
    for a in &assets {
        small.upsert(a);
    }
    small.finish_bulk();
    println!(
        "  {:<64} {:>8} {:>12} {:>12} {:>8}",
        "query / label selector", "matches", "list p50 ms", "index p50 ms", "ratio"
    );
    let list_runs = (runs / 10).max(5);
    for (q, selector) in LABEL_QUERIES {
        let mut list_times = Vec::new();
        let mut listed = 0;
        for _ in 0..list_runs {
            let req = http_list(selector)?;
            let t = Instant::now();
            let body = client.request_text(req).await?;
            list_times.push(t.elapsed());
            listed = serde_json::from_str::<Value>(&body)?["items"]
                .as_array()
                .map_or(0, Vec::len);
        }
        let mut index_times = Vec::new();
        let mut found = 0;
        for _ in 0..runs {
            let t = Instant::now();
            found = small
                .search(q, now.as_second(), usize::MAX)
                .map_err(|e| anyhow::anyhow!("{q}: {e}"))?
                .total;
            index_times.push(t.elapsed());
        }
        anyhow::ensure!(
            listed == found,
            "{q}: the API server listed {listed}, the index found {found}"
        );
        let (lp50, _) = percentiles(&mut list_times);
        let (ip50, _) = percentiles(&mut index_times);
        println!(
            "  {:<64} {found:>8} {:>12.2} {:>12.3} {:>7.0}x",
            format!("{q}  ({selector})"),
            ms(lp50),
            ms(ip50),
            lp50.as_secs_f64() / ip50.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}

fn http_list(selector: &str) -> Result<http::Request<Vec<u8>>> {
    let enc: String = selector
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    Ok(http::Request::get(format!(
        "/apis/sightline.dev/v1alpha1/assets?labelSelector={enc}"
    ))
    .body(Vec::new())?)
}
