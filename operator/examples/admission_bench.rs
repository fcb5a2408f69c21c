//! The admission benchmark `cargo xtask bench --only admission` runs
//! (built with `--release`): how long the image webhook takes to judge a
//! pod from the in-memory index, against a baseline measured in the same
//! run.
//!
//! An index of `--images` image Assets (each with two tags, a registry
//! digest and twenty findings) and as many other Assets; three policies
//! (a severity rule, an end-of-life rule and a query). Each pod names two
//! images, one the inventory knows and one it does not, and is judged as
//! the webhook does: the AdmissionReview parsed, its images looked up by
//! reference, every policy applied, the response serialized.
//!
//! Baseline: the same reviews parsed and answered with a plain hash-map
//! lookup of the images and no judging: what any webhook pays to read a
//! pod and answer. The goal is p99 under 10 ms, whatever the ratio.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde_json::json;
use sightline_crds::Asset;
use sightline_crds::image_policy::{
    ImageDeny, ImagePolicy, ImagePolicyMode, ImagePolicySpec, SeverityThreshold,
};
use sightline_inventory::index::Index;
use sightline_operator::admission::{images_of, judge_pod};

fn asset(i: usize) -> Result<Asset> {
    let top: Vec<_> = (0..20)
        .map(|v| {
            let severity = ["critical", "high", "medium", "low"][v % 4];
            json!({"id": format!("CVE-2024-{i}{v}"), "package": format!("pkg{v}"), "installed": "1.0",
                   "fixed": if v.is_multiple_of(2) { json!("1.1") } else { json!(null) },
                   "severity": severity})
        })
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "sightline.dev/v1alpha1", "kind": "Asset",
        "metadata": {"name": format!("containerimage-{i:08}"),
                     "labels": {"sightline.dev/lifecycle": if i.is_multiple_of(3) { "EndOfLife" } else { "GeneralAvailability" }}},
        "spec": {},
        "status": {
            "kind": "ContainerImage",
            "identity": format!("sha256:{i:064x}"),
            "observed": {
                "repoTags": [format!("registry.example.com/team{}/app{i}:1.{i}", i % 50), format!("registry.example.com/team{}/app{i}:latest", i % 50)],
                "repoDigests": [format!("registry.example.com/team{}/app{i}@sha256:{:064x}", i % 50, i + 1)],
            },
            "findings": {"vulnerabilities": {"critical": 5, "high": 5, "medium": 5, "low": 5, "unknown": 0, "top": top}},
        },
    }))?)
}

fn other(i: usize) -> Result<Asset> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "sightline.dev/v1alpha1", "kind": "Asset",
        "metadata": {"name": format!("container-{i:08}")},
        "spec": {},
        "status": {"kind": "Container", "identity": format!("c{i}"), "observed": {"node": "n1"}},
    }))?)
}

fn review(i: usize, known: usize) -> Vec<u8> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i}"), "namespace": "team", "labels": {"app": "web"}},
        "spec": {"containers": [
            {"name": "app", "image": format!("registry.example.com/team{}/app{known}:1.{known}", known % 50),
             "env": [{"name": "A", "value": "b"}], "resources": {"limits": {"cpu": "1"}}},
            {"name": "sidecar", "image": format!("registry.example.com/sidecar:{i}")},
        ]},
    });
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{i:012}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": format!("pod-{i}"), "namespace": "team", "operation": "CREATE",
            "userInfo": {"username": "bench"}, "object": pod, "dryRun": false,
        },
    }))
    .unwrap_or_default()
}

fn parse(body: &[u8]) -> Option<AdmissionRequest<Pod>> {
    let review: AdmissionReview<Pod> = serde_json::from_slice(body).ok()?;
    review.try_into().ok()
}

fn percentiles(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99))
}

fn main() -> Result<()> {
    let mut images = 10_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--images" {
            images = args.next().and_then(|n| n.parse().ok()).unwrap_or(images);
        }
    }
    let mut index = Index::bulk();
    for i in 0..images {
        index.upsert(&asset(i)?);
        index.upsert(&other(i)?);
    }
    index.finish_bulk();
    let policy = |name: &str, deny: ImageDeny| {
        ImagePolicy::new(
            name,
            ImagePolicySpec {
                mode: ImagePolicyMode::Enforce,
                namespace_selector: None,
                deny,
            },
        )
    };
    let policies = [
        policy(
            "critical",
            ImageDeny {
                severity: Some(SeverityThreshold::Critical),
                ..ImageDeny::default()
            },
        ),
        policy(
            "eol",
            ImageDeny {
                end_of_life: Some(true),
                ..ImageDeny::default()
            },
        ),
        policy(
            "query",
            ImageDeny {
                query: Some(
                    "findings.vulnerabilities.high>=3 AND os.lifecycle.stage:EndOfLife".into(),
                ),
                ..ImageDeny::default()
            },
        ),
    ];
    let policies: Vec<&ImagePolicy> = policies.iter().collect();
    let pods = 20_000usize;
    let bodies: Vec<Vec<u8>> = (0..pods).map(|i| review(i, (i * 7919) % images)).collect();
    let plain: HashMap<String, usize> = (0..images)
        .map(|i| {
            (
                format!("registry.example.com/team{}/app{i}:1.{i}", i % 50),
                i,
            )
        })
        .collect();
    let now = jiff::Timestamp::now().as_second();

    let (mut judged, mut baseline) = (Vec::with_capacity(pods), Vec::with_capacity(pods));
    let mut refused = 0usize;
    for body in &bodies {
        let t = Instant::now();
        let Some(req) = parse(body) else {
            anyhow::bail!("a review did not parse")
        };
        let pod = req.object.as_ref();
        let names = pod.map(images_of).unwrap_or_default();
        let verdicts = judge_pod(
            &policies,
            &names,
            now,
            |r| index.images(r),
            |q, a| index.matches(q, now, a),
        );
        let mut response = AdmissionResponse::from(&req);
        if !verdicts.is_empty() {
            refused += 1;
            let msg: Vec<String> = verdicts.iter().map(|v| v.message()).collect();
            response = response.deny(msg.join("; "));
        }
        let out = serde_json::to_vec(&response.into_review())?;
        std::hint::black_box(out);
        judged.push(t.elapsed());

        let t = Instant::now();
        let Some(req) = parse(body) else {
            anyhow::bail!("a review did not parse")
        };
        let names = req.object.as_ref().map(images_of).unwrap_or_default();
        let found = names
            .iter()
            .filter(|n| plain.contains_key(n.as_str()))
            .count();
        std::hint::black_box(found);
        let out = serde_json::to_vec(&AdmissionResponse::from(&req).into_review())?;
        std::hint::black_box(out);
        baseline.push(t.elapsed());
    }
    let (j50, j99) = percentiles(&mut judged);
    let (b50, b99) = percentiles(&mut baseline);
    println!(
        "admission: {images} image Assets (+{images} others), 3 policies, {pods} pods of 2 images ({refused} refused)"
    );
    println!("  judged by the webhook:     p50 {j50:.3} ms  p99 {j99:.3} ms");
    println!("  baseline (parse + answer): p50 {b50:.3} ms  p99 {b99:.3} ms");
    println!(
        "  ratio p50 {:.2}x  p99 {:.2}x; goal p99 < 10 ms: {}",
        j50 / b50.max(1e-9),
        j99 / b99.max(1e-9),
        if j99 < 10.0 { "met" } else { "MISSED" }
    );
    Ok(())
}
