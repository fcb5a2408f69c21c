//! The detail store's request parser on arbitrary bytes: it never panics,
//! what it accepts is within the bounds, survives a round trip unchanged,
//! and renders as both SBOM formats the operator serves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_report::details::{ImageDetails, MAX_FINDINGS, MAX_PACKAGES};

fuzz_target!(|data: &[u8]| {
    let Ok(details) = ImageDetails::from_body(data) else {
        return;
    };
    assert!(details.image.analysis.packages.len() <= MAX_PACKAGES);
    assert!(details.vulnerabilities.as_ref().is_none_or(|v| v.len() <= MAX_FINDINGS));
    let once = match serde_json::to_vec(&details) {
        Ok(b) => b,
        Err(e) => panic!("accepted details do not serialize: {e}"),
    };
    match ImageDetails::from_body(&once) {
        Ok(again) => assert_eq!(
            serde_json::to_vec(&again).ok(),
            Some(once),
            "the round trip changed the details"
        ),
        Err(e) => panic!("accepted details are refused after a round trip: {e}"),
    }
    let tool = sightline_scan::sbom::Tool {
        name: "sightline".into(),
        version: "fuzz".into(),
    };
    let _ = sightline_scan::sbom::cyclonedx(&details.image, &tool, "2026-01-01T00:00:00Z");
    let _ = sightline_scan::sbom::spdx(&details.image, &tool, "2026-01-01T00:00:00Z");
});
