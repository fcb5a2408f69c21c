//! dpkg databases (status and status.d) on arbitrary bytes: never panic,
//! and every package kept has a name and a version.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_scan::pkg::dpkg::{Layout, parse};

fuzz_target!(|data: &[u8]| {
    for layout in [Layout::Status, Layout::StatusD] {
        let (packages, _warnings) = parse(data, "var/lib/dpkg/status", 0, layout);
        for p in packages {
            assert!(!p.name.is_empty() && !p.version.is_empty(), "{p:?}");
        }
    }
});
