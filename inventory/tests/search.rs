//! Evaluating queries over a small inventory: what matches, and the type
//! errors compilation reports.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sightline_crds::asset::{
    Asset, AssetKind, AssetSource, AssetSpec, AssetStatus, Findings, Lifecycle, LifecycleStage,
    Normalized, Product, VulnerabilityFindings, VulnerabilityRef,
};
use sightline_inventory::index::Index;

const NOW: i64 = 1_795_000_000; // 2026-11-18

fn product(vendor: &str, name: &str, version: &str, cat: &str, sub: &str) -> Product {
    Product {
        vendor: Some(vendor.into()),
        product: Some(name.into()),
        version: (!version.is_empty()).then(|| version.into()),
        category: Some(cat.into()),
        subcategory: Some(sub.into()),
        lifecycle: None,
    }
}

fn with_stage(mut p: Product, stage: LifecycleStage, eol: Option<&str>) -> Product {
    p.lifecycle = Some(Lifecycle {
        stage,
        ga_date: None,
        eos_date: None,
        eol_date: eol.map(Into::into),
        eo_service_date: None,
        estimated: vec![],
    });
    p
}

struct A {
    name: &'static str,
    kind: AssetKind,
    hardware: Option<Product>,
    os: Option<Product>,
    software: Vec<Product>,
    critical: i64,
    tags: &'static [(&'static str, &'static str)],
    last_seen_days_ago: i64,
    lifecycle: Option<&'static str>,
}

fn asset(a: A) -> Asset {
    let mut asset = Asset::new(a.name, AssetSpec {});
    let mut labels = BTreeMap::new();
    if let Some(l) = a.lifecycle {
        labels.insert("sightline.dev/lifecycle".to_string(), l.to_string());
    }
    if a.critical > 0 {
        labels.insert(
            "sightline.dev/max-severity".to_string(),
            "critical".to_string(),
        );
    }
    asset.metadata.labels = Some(labels);
    let seen = jiff::Timestamp::from_second(NOW - a.last_seen_days_ago * 86_400);
    let seen = Time(seen.unwrap_or_else(|e| panic!("test timestamp: {e}")));
    asset.status = Some(AssetStatus {
        kind: Some(a.kind),
        identity: Some(format!("id-of-{}", a.name)),
        display_name: Some(format!("lab/{}", a.name)),
        sources: vec![AssetSource {
            sensor: "sightline-system/nodes".into(),
            r#type: Some("container".into()),
            activation_key: None,
            last_seen: seen.clone(),
            nodes: None,
            reference: None,
            findings: None,
        }],
        observed: BTreeMap::from([
            (
                "kernelVersion".to_string(),
                serde_json::json!("6.1.0-18-amd64"),
            ),
            ("ports".to_string(), serde_json::json!([22, 443])),
        ]),
        normalized: Some(Normalized {
            hardware: a.hardware,
            os: a.os,
            software: a.software,
        }),
        findings: Some(Findings {
            vulnerabilities: Some(VulnerabilityFindings {
                critical: a.critical,
                high: 2,
                top: (a.critical > 0)
                    .then(|| VulnerabilityRef {
                        id: "CVE-2024-6387".into(),
                        package: "openssh-server".into(),
                        installed: "1:9.2p1-2+deb12u2".into(),
                        fixed: Some("1:9.2p1-2+deb12u3".into()),
                        severity: "critical".into(),
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        tags: a
            .tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        first_seen: Some(seen.clone()),
        last_seen: Some(seen),
        managed: Some(a.kind != AssetKind::NetworkDevice),
    });
    asset
}

fn inventory() -> Index {
    let debian12 = with_stage(
        product("Debian", "Debian Linux", "12", "Operating System", "Linux"),
        LifecycleStage::EndOfLife,
        Some("2026-06-10"),
    );
    let debian11 = with_stage(
        product("Debian", "Debian Linux", "11", "Operating System", "Linux"),
        LifecycleStage::EndOfService,
        Some("2024-08-14"),
    );
    let base = || A {
        name: "",
        kind: AssetKind::Node,
        hardware: None,
        os: None,
        software: vec![],
        critical: 0,
        tags: &[],
        last_seen_days_ago: 0,
        lifecycle: None,
    };
    let assets = [
        A {
            name: "node-cloud",
            hardware: Some(product("Amazon", "Amazon EC2", "", "Virtualized", "Cloud")),
            os: Some(debian12.clone()),
            software: vec![
                product("OpenSSL", "OpenSSL", "3.0.11", "Security", "Cryptography"),
                product(
                    "Kubernetes",
                    "Kubernetes",
                    "1.34.4",
                    "Kubernetes",
                    "Node Agent",
                ),
            ],
            tags: &[("site", "east"), ("Team", "Payments")],
            lifecycle: Some("EndOfLife"),
            ..base()
        },
        A {
            name: "node-metal",
            hardware: Some(product("Dell", "PowerEdge R750", "", "Computers", "Server")),
            os: Some(debian11.clone()),
            software: vec![product(
                "OpenSSL",
                "OpenSSL",
                "1.1.1w",
                "Security",
                "Cryptography",
            )],
            tags: &[("site", "west")],
            last_seen_days_ago: 10,
            lifecycle: Some("EndOfService"),
            ..base()
        },
        A {
            name: "switch-1",
            kind: AssetKind::NetworkDevice,
            hardware: Some(product(
                "Cisco",
                "Catalyst 9300",
                "",
                "Network Device",
                "Switch",
            )),
            last_seen_days_ago: 40,
            ..base()
        },
        A {
            name: "router-1",
            kind: AssetKind::NetworkDevice,
            hardware: Some(product("Juniper", "MX204", "", "Network Device", "Router")),
            ..base()
        },
        A {
            name: "image-old",
            kind: AssetKind::ContainerImage,
            os: Some(debian11),
            critical: 4,
            lifecycle: Some("EndOfService"),
            ..base()
        },
        A {
            name: "image-eol",
            kind: AssetKind::ContainerImage,
            os: Some(debian12),
            critical: 1,
            lifecycle: Some("EndOfLife"),
            ..base()
        },
        A {
            name: "image-new",
            kind: AssetKind::ContainerImage,
            os: Some(with_stage(
                product(
                    "Alpine",
                    "Alpine Linux",
                    "3.22.1",
                    "Operating System",
                    "Linux",
                ),
                LifecycleStage::GeneralAvailability,
                None,
            )),
            lifecycle: Some("GeneralAvailability"),
            ..base()
        },
        A {
            name: "image-scratch",
            kind: AssetKind::ContainerImage,
            os: Some(Product {
                lifecycle: Some(Lifecycle {
                    stage: LifecycleStage::Unidentified,
                    ga_date: None,
                    eos_date: None,
                    eol_date: None,
                    eo_service_date: None,
                    estimated: vec![],
                }),
                ..Default::default()
            }),
            lifecycle: Some("Unidentified"),
            ..base()
        },
    ];
    let mut index = Index::new();
    for a in assets {
        index.upsert(&asset(a));
    }
    index
}

fn names(index: &Index, q: &str) -> Vec<String> {
    match index.search(q, NOW, 1000) {
        Ok(r) => r.hits.into_iter().map(|h| h.name).collect(),
        Err(e) => panic!("{q}: {e}"),
    }
}

fn error(index: &Index, q: &str) -> String {
    match index.search(q, NOW, 1000) {
        Ok(r) => panic!("{q} matched {:?}", r.hits),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_seed_examples() {
    let idx = inventory();
    assert_eq!(
        names(
            &idx,
            r#"hardware.category:"Network Device" AND hardware.subcategory:Switch"#
        ),
        ["switch-1"]
    );
    assert_eq!(
        names(&idx, r#"hardware.category:"Virtualized / Cloud""#),
        ["node-cloud"]
    );
    assert_eq!(
        names(&idx, "kind:ContainerImage AND os.lifecycle.stage:EndOfLife"),
        ["image-eol"]
    );
    assert_eq!(
        names(&idx, "os.lifecycle.stage:Unidentified"),
        ["image-scratch"]
    );
}

#[test]
fn text_matching_case_and_wildcards() {
    let idx = inventory();
    assert_eq!(names(&idx, "kind:networkdevice"), ["router-1", "switch-1"]);
    assert_eq!(names(&idx, "kind:`networkdevice`"), Vec::<String>::new());
    assert_eq!(
        names(&idx, "kind:`NetworkDevice`"),
        ["router-1", "switch-1"]
    );
    assert_eq!(names(&idx, "hardware.product:cat*"), ["switch-1"]);
    assert_eq!(names(&idx, "hardware.product:`cat*`"), Vec::<String>::new());
    assert_eq!(
        names(&idx, "name:image-???"),
        ["image-eol", "image-new", "image-old"]
    );
    assert_eq!(names(&idx, "identity:ID-OF-ROUTER-1"), ["router-1"]);
    assert_eq!(names(&idx, "displayName:\"lab/router-1\""), ["router-1"]);
    assert_eq!(names(&idx, "displayName:lab/rout*"), ["router-1"]);
    assert_eq!(names(&idx, "kind=Node"), ["node-cloud", "node-metal"]);
}

#[test]
fn numbers_dates_versions_and_booleans() {
    let idx = inventory();
    assert_eq!(
        names(&idx, "findings.vulnerabilities.critical>=1"),
        ["image-eol", "image-old"]
    );
    assert_eq!(
        names(&idx, "findings.vulnerabilities.critical>1"),
        ["image-old"]
    );
    assert_eq!(
        names(&idx, "findings.vulnerabilities.critical:[1..3]"),
        ["image-eol"]
    );
    assert_eq!(
        names(&idx, "findings.vulnerabilities.critical:4"),
        ["image-old"]
    );
    assert_eq!(names(&idx, "lastSeen < now-7d"), ["node-metal", "switch-1"]);
    assert_eq!(names(&idx, "lastSeen:[now-14d..now-7d]"), ["node-metal"]);
    assert_eq!(names(&idx, "lastSeen:2026-11-08"), ["node-metal"]);
    assert_eq!(
        names(&idx, r#"lastSeen>"2026-11-17T00:00:00Z" AND kind:Node"#),
        ["node-cloud"]
    );
    assert_eq!(
        names(&idx, "os.lifecycle.eolDate < 2025-01-01 AND kind:Node"),
        ["node-metal"]
    );
    assert_eq!(
        names(&idx, "kind:Node AND os.version >= 12"),
        ["node-cloud"]
    );
    assert_eq!(names(&idx, "os.version:3"), ["image-new"]);
    assert_eq!(names(&idx, "os.version:3.22"), ["image-new"]);
    assert_eq!(names(&idx, "os.version:3.2"), Vec::<String>::new());
    assert_eq!(
        names(&idx, "os.version:[3..11]"),
        ["image-new", "image-old", "node-metal"]
    );
    assert_eq!(names(&idx, "managed:false"), ["router-1", "switch-1"]);
}

#[test]
fn nested_software_tags_observed_and_boolean_logic() {
    let idx = inventory();
    assert_eq!(
        names(&idx, "software:(name:openssl AND version<3.0)"),
        ["node-metal"]
    );
    assert_eq!(
        names(&idx, "software:(product:openssl AND version>=3.0)"),
        ["node-cloud"]
    );
    // Dotted names reach into the list too, each term on its own.
    assert_eq!(names(&idx, "software.category:Kubernetes"), ["node-cloud"]);
    assert_eq!(
        names(
            &idx,
            r#"findings.vulnerabilities.top:(id:CVE-2024-* AND fixed>"1:9.2p1-2+deb12u2")"#
        ),
        ["image-eol", "image-old"]
    );
    assert_eq!(names(&idx, "tags.site:east"), ["node-cloud"]);
    assert_eq!(names(&idx, "tags.team:payments"), ["node-cloud"]);
    assert_eq!(names(&idx, "tags.site:*"), ["node-cloud", "node-metal"]);
    assert_eq!(
        names(&idx, "observed.ports:443 AND kind:NetworkDevice"),
        ["router-1", "switch-1"]
    );
    assert_eq!(
        names(&idx, "observed.kernelVersion:6.1.* AND name:node-metal"),
        ["node-metal"]
    );
    assert_eq!(
        names(
            &idx,
            "kind:ContainerImage AND NOT (os.lifecycle.stage:EndOfLife OR os.lifecycle.stage:EndOfService)"
        ),
        ["image-new", "image-scratch"]
    );
}

#[test]
fn nested_query_on_a_text_field_is_an_error() {
    let idx = inventory();
    assert_eq!(
        error(&idx, "kind:(kind:Node)"),
        "'kind' is not a list: nested queries work on software and findings.vulnerabilities.top at column 1"
    );
}

#[test]
fn type_errors_point_at_the_culprit() {
    let idx = inventory();
    let cases = [
        (
            "os.lifecycle.stag:EndOfLife",
            "unknown field 'os.lifecycle.stag'; did you mean 'os.lifecycle.stage'? at column 1",
        ),
        (
            "bogus:1",
            "unknown field 'bogus'; `sightline search --fields` lists them at column 1",
        ),
        (
            "kind>Node",
            "'>' needs a number, date or version field; 'kind' is text at column 5",
        ),
        (
            "kind:[a..b]",
            "ranges need a number, date or version field; 'kind' is text at column 7",
        ),
        (
            "findings.vulnerabilities.critical:lots",
            "'lots' is not a whole number ('findings.vulnerabilities.critical' is a number) at column 35",
        ),
        (
            "lastSeen<yesterday",
            "'yesterday' is not a date: use YYYY-MM-DD, an RFC 3339 time in quotes, now, or now-7d (units s, m, h, d, w) at column 10",
        ),
        (
            // Found by the query fuzzer: a multi-byte character after `now`.
            "lastSeen<nowӅ1d",
            "'nowӅ1d' is not a date: use YYYY-MM-DD, an RFC 3339 time in quotes, now, or now-7d (units s, m, h, d, w) at column 10",
        ),
        (
            "lastSeen<now-1é",
            "'now-1é' is not a date: use YYYY-MM-DD, an RFC 3339 time in quotes, now, or now-7d (units s, m, h, d, w) at column 10",
        ),
        (
            "lastSeen:now-7d",
            "'lastSeen:' takes a day (YYYY-MM-DD); use a comparison or a range for times at column 10",
        ),
        ("managed:maybe", "'maybe' is not true or false at column 9"),
        (
            "software:openssl",
            "'software' is a list: search its elements with software:(…) at column 1",
        ),
        (
            "software:(nmae:openssl)",
            "unknown field 'nmae'; did you mean 'name'? at column 11",
        ),
        (
            "os.version>=1.*",
            "wildcards are not allowed in comparisons at column 13",
        ),
        (
            "kind:Node AND os.version:[1..2*]",
            "wildcards are not allowed in ranges at column 30",
        ),
    ];
    for (q, want) in cases {
        assert_eq!(error(&idx, q), want, "{q}");
    }
}

#[test]
fn upserts_replace_and_removes_forget() {
    let mut idx = inventory();
    assert_eq!(idx.len(), 8);
    idx.remove("router-1");
    assert_eq!(names(&idx, "kind:NetworkDevice"), ["switch-1"]);
    let mut a = asset(A {
        name: "switch-1",
        kind: AssetKind::NetworkDevice,
        hardware: Some(product("Arista", "7050X", "", "Network Device", "Switch")),
        os: None,
        software: vec![],
        critical: 0,
        tags: &[],
        last_seen_days_ago: 0,
        lifecycle: None,
    });
    idx.upsert(&a);
    assert_eq!(idx.len(), 7);
    assert_eq!(names(&idx, "hardware.vendor:arista"), ["switch-1"]);
    assert_eq!(names(&idx, "hardware.vendor:cisco"), Vec::<String>::new());
    a.metadata.name = Some("switch-2".into());
    idx.upsert(&a);
    assert_eq!(idx.len(), 8);
    let s = idx.summary();
    assert_eq!(s.total, 8);
    assert_eq!(s.by_kind["NetworkDevice"], 2);
    assert_eq!(s.by_category["Network Device / Switch"], 2);
    assert_eq!(s.by_lifecycle["EndOfService"], 2);
    assert_eq!(s.by_max_severity["critical"], 2);
}

#[test]
fn limits_keep_the_first_matches_by_name_however_the_index_was_filled() {
    let incremental = inventory();
    let mut bulk = Index::bulk();
    let mut assets: Vec<Asset> = Vec::new();
    for name in ["zeta", "alpha", "mid", "beta"] {
        let mut a = Asset::new(name, AssetSpec {});
        a.status = Some(AssetStatus {
            kind: Some(AssetKind::Host),
            ..Default::default()
        });
        assets.push(a);
    }
    for a in &assets {
        bulk.upsert(a);
    }
    let first_two = |idx: &Index| {
        let r = idx.search("kind:Host", NOW, 2).unwrap();
        (
            r.total,
            r.hits.into_iter().map(|h| h.name).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        first_two(&bulk),
        (4, vec!["alpha".to_string(), "beta".to_string()])
    );
    bulk.finish_bulk();
    assert_eq!(
        first_two(&bulk),
        (4, vec!["alpha".to_string(), "beta".to_string()])
    );
    bulk.remove("alpha");
    bulk.upsert(&Asset::new("aardvark", AssetSpec {}));
    let mut a = Asset::new("aaa", AssetSpec {});
    a.status = assets[0].status.clone();
    bulk.upsert(&a);
    assert_eq!(
        first_two(&bulk),
        (4, vec!["aaa".to_string(), "beta".to_string()])
    );
    let r = incremental.search("kind:ContainerImage", NOW, 3).unwrap();
    assert_eq!(r.total, 4);
    assert_eq!(
        r.hits.into_iter().map(|h| h.name).collect::<Vec<_>>(),
        ["image-eol", "image-new", "image-old"]
    );
}

#[test]
fn large_indexes_scanned_in_parallel_give_the_same_answers() {
    let mut idx = Index::bulk();
    for i in 0..40_000 {
        let mut a = Asset::new(&format!("host-{i:05}"), AssetSpec {});
        a.status = Some(AssetStatus {
            kind: Some(AssetKind::Host),
            tags: [("shard".to_string(), format!("s{}", i % 7))].into(),
            ..Default::default()
        });
        idx.upsert(&a);
    }
    idx.finish_bulk();
    // Remove some, so slots are not contiguous, and re-add one.
    for i in (0..40_000).step_by(1000) {
        idx.remove(&format!("host-{i:05}"));
    }
    let r = idx.search("tags.shard:s3", NOW, 3).unwrap();
    let expected = (0..40_000).filter(|i| i % 7 == 3 && i % 1000 != 0).count();
    assert_eq!(r.total, expected);
    assert_eq!(
        r.hits.into_iter().map(|h| h.name).collect::<Vec<_>>(),
        ["host-00003", "host-00010", "host-00017"]
    );
    assert_eq!(idx.search("kind:Host", NOW, 0).unwrap().total, 40_000 - 40);
}
