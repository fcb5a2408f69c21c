//! Normalization on arbitrary observed facts: never panics, whatever the
//! JSON holds, and its result always fits the Asset schema's bounds.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sightline_crds::AssetKind;
use sightline_inventory::catalog::Catalog;

fuzz_target!(|data: &[u8]| {
    let Ok(observed) = serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(data) else {
        return;
    };
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    let catalog = CATALOG.get_or_init(|| match Catalog::builtin() {
        Ok(c) => c,
        Err(e) => panic!("built-in catalog: {e}"),
    });
    let today = jiff::civil::date(2026, 11, 26);
    for kind in [None, Some(AssetKind::Node), Some(AssetKind::NetworkDevice), Some(AssetKind::ContainerImage)] {
        let n = catalog.normalize(kind, &observed, today);
        assert!(n.software.len() <= 100);
    }
});
