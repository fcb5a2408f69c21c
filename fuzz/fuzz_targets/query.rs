//! The query language on arbitrary text: parsing never panics, a parsed
//! query prints to text that parses back to the same print, and compiling
//! and evaluating it over a small inventory never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_inventory::index::Index;
use sightline_inventory::query::parse_query;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(query) = parse_query(text) else {
        return;
    };
    let printed = query.to_string();
    let again = match parse_query(&printed) {
        Ok(q) => q,
        Err(e) => panic!("{text:?} printed as {printed:?} which does not parse: {e}"),
    };
    assert_eq!(again.to_string(), printed, "printing is not stable for {text:?}");
    let mut index = Index::new();
    let asset: sightline_crds::Asset = match serde_json::from_value(serde_json::json!({
        "apiVersion": "sightline.dev/v1alpha1", "kind": "Asset",
        "metadata": {"name": "node-a", "labels": {"sightline.dev/lifecycle": "EndOfLife"}},
        "spec": {},
        "status": {
            "kind": "Node", "identity": "uid-a", "tags": {"site": "east"},
            "observed": {"kernelVersion": "6.1.0", "ports": [22, 443]},
            "lastSeen": "2026-11-26T00:00:00Z",
            "normalized": {
                "os": {"vendor": "Debian", "product": "Debian Linux", "version": "12",
                       "category": "Operating System", "subcategory": "Linux",
                       "lifecycle": {"stage": "EndOfLife", "eolDate": "2026-06-10"}},
                "software": [{"product": "OpenSSL", "version": "3.0.11"}]
            },
            "findings": {"vulnerabilities": {"critical": 1, "top": [
                {"id": "CVE-2024-6387", "package": "openssh-server", "installed": "1:9.2p1-2", "severity": "critical"}
            ]}}
        }
    })) {
        Ok(a) => a,
        Err(e) => panic!("fixture: {e}"),
    };
    index.upsert(&asset);
    let _ = index.search(text, 1_795_000_000, 10);
});
