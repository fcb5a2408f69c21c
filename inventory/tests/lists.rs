//! Every element of every list-valued field is searchable, not only the
//! first: for generated Assets and any element of any list (software,
//! `findings.vulnerabilities.top`, tags, sources), a query built from that
//! element's own values matches its Asset, the index and the one-Asset
//! evaluator (client-side search, dynamic tags) agree on every Asset, and
//! the index's count (what a TagRule reports) is the number of Assets the
//! evaluator accepts.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;
use sightline_crds::asset::{
    Asset, AssetKind, AssetSource, AssetSpec, AssetStatus, Findings, Lifecycle, LifecycleStage,
    Normalized, Product, VulnerabilityFindings, VulnerabilityRef,
};
use sightline_inventory::eval::matches_asset;
use sightline_inventory::index::Index;
use sightline_inventory::query::parse;

const NOW: i64 = 1_795_000_000;

/// Words from a small alphabet, so generated Assets share values often
/// and a query can match several of them.
fn word() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "CNCF",
        "Kubernetes",
        "containerd",
        "Debian",
        "nginx",
        "F5",
        "Container Runtime",
        "Web Server",
        "Node Agent",
        "openssl",
        "libc6",
    ])
    .prop_map(str::to_owned)
}

fn version() -> impl Strategy<Value = String> {
    (0u32..4, 0u32..30, 0u32..25).prop_map(|(a, b, c)| format!("{a}.{b}.{c}"))
}

fn stage() -> impl Strategy<Value = LifecycleStage> {
    prop::sample::select(vec![
        LifecycleStage::GeneralAvailability,
        LifecycleStage::EndOfSale,
        LifecycleStage::EndOfLife,
        LifecycleStage::EndOfService,
        LifecycleStage::Unidentified,
        LifecycleStage::Unknown,
    ])
}

fn product() -> impl Strategy<Value = Product> {
    (word(), word(), version(), word(), word(), stage()).prop_map(
        |(vendor, product, version, category, subcategory, stage)| Product {
            vendor: Some(vendor),
            product: Some(product),
            version: Some(version),
            category: Some(category),
            subcategory: Some(subcategory),
            lifecycle: Some(Lifecycle {
                stage,
                ga_date: None,
                eos_date: None,
                eol_date: None,
                eo_service_date: None,
                estimated: vec![],
            }),
        },
    )
}

fn vulnerability() -> impl Strategy<Value = VulnerabilityRef> {
    (
        (1000u32..1010).prop_map(|n| format!("CVE-2026-{n}")),
        word(),
        version(),
        prop::option::of(version()),
        prop::sample::select(vec!["critical", "high", "medium", "low", "unknown"]),
    )
        .prop_map(
            |(id, package, installed, fixed, severity)| VulnerabilityRef {
                id,
                package,
                installed,
                fixed,
                severity: severity.to_owned(),
            },
        )
}

fn source() -> impl Strategy<Value = AssetSource> {
    (
        prop::sample::select(vec!["ns/nodes", "ns/runtime", "ci/lab", "ns/registry"]),
        prop::sample::select(vec!["container", "runtime", "ci", "registry"]),
    )
        .prop_map(|(sensor, t)| AssetSource {
            sensor: sensor.to_owned(),
            r#type: Some(t.to_owned()),
            activation_key: None,
            last_seen: Time(jiff::Timestamp::UNIX_EPOCH),
            nodes: None,
            reference: None,
            findings: None,
        })
}

fn tags() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(vec!["site", "owner", "env", "tier"]).prop_map(str::to_owned),
        word(),
        0..4,
    )
}

fn asset(i: usize) -> impl Strategy<Value = Asset> {
    (
        prop::collection::vec(product(), 0..5),
        prop::collection::vec(vulnerability(), 0..5),
        tags(),
        prop::collection::vec(source(), 1..4),
    )
        .prop_map(move |(software, top, tags, sources)| {
            let mut a = Asset::new(&format!("asset-{i}"), AssetSpec {});
            a.status = Some(AssetStatus {
                kind: Some(AssetKind::Node),
                normalized: Some(Normalized {
                    software,
                    ..Normalized::default()
                }),
                findings: Some(Findings {
                    vulnerabilities: Some(VulnerabilityFindings {
                        top,
                        ..VulnerabilityFindings::default()
                    }),
                    ..Findings::default()
                }),
                tags,
                sources,
                ..AssetStatus::default()
            });
            a
        })
}

fn inventory() -> impl Strategy<Value = Vec<Asset>> {
    (1usize..6).prop_flat_map(|n| (0..n).map(asset).collect::<Vec<_>>())
}

fn stage_name(s: LifecycleStage) -> &'static str {
    sightline_inventory::doc::stage_str(s)
}

/// A query for each element of each list of `a`, built from the
/// element's own values.
fn element_queries(a: &Asset) -> Vec<String> {
    let st = a.status.clone().unwrap_or_default();
    let mut out = Vec::new();
    for p in st.normalized.unwrap_or_default().software {
        let v = |o: &Option<String>| o.clone().unwrap_or_default();
        let stage = p
            .lifecycle
            .as_ref()
            .map_or("Unknown", |l| stage_name(l.stage));
        out.push(format!(
            "software:(vendor:\"{}\" AND product:\"{}\" AND version:\"{}\" AND category:\"{}\" AND subcategory:\"{}\" AND lifecycle.stage:{stage})",
            v(&p.vendor),
            v(&p.product),
            v(&p.version),
            v(&p.category),
            v(&p.subcategory)
        ));
        // The dotted form reaches into the list too.
        out.push(format!("software.product:\"{}\"", v(&p.product)));
        out.push(format!("software.subcategory:\"{}\"", v(&p.subcategory)));
    }
    let top = st
        .findings
        .and_then(|f| f.vulnerabilities)
        .map(|v| v.top)
        .unwrap_or_default();
    for t in top {
        let fixed = t
            .fixed
            .map(|f| format!(" AND fixed:\"{f}\""))
            .unwrap_or_default();
        out.push(format!(
            "findings.vulnerabilities.top:(id:\"{}\" AND package:\"{}\" AND installed:\"{}\" AND severity:{}{fixed})",
            t.id, t.package, t.installed, t.severity
        ));
    }
    for (k, v) in st.tags {
        out.push(format!("tags.{k}:\"{v}\""));
    }
    for s in st.sources {
        out.push(format!("sources.sensor:\"{}\"", s.sensor));
        if let Some(t) = s.r#type {
            out.push(format!("sources.type:{t}"));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_element_of_every_list_is_found(assets in inventory()) {
        let mut index = Index::new();
        for a in &assets {
            index.upsert(a);
        }
        for a in &assets {
            let name = a.metadata.name.clone().unwrap_or_default();
            for q in element_queries(a) {
                let parsed = parse(&q).map_err(|e| TestCaseError::fail(format!("{q}: {e:?}")))?;
                prop_assert!(
                    matches_asset(&parsed, a, NOW).unwrap_or(false),
                    "client-side: {q} does not match {name}"
                );
                let found = index
                    .search(&q, NOW, 100)
                    .map_err(|e| TestCaseError::fail(format!("{q}: {e:?}")))?;
                prop_assert!(
                    found.hits.iter().any(|h| h.name == name),
                    "index: {q} does not find {name}"
                );
                // The index and the evaluator agree on every Asset, so a
                // TagRule's count (the index's total) is right.
                let expected = assets
                    .iter()
                    .filter(|b| matches_asset(&parsed, b, NOW).unwrap_or(false))
                    .count();
                prop_assert_eq!(found.total, expected, "count of {}", q);
            }
        }
    }
}
