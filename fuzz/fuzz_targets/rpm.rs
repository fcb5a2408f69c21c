//! rpm headers (the blobs of rpmdb.sqlite's Packages table) on arbitrary
//! bytes: never panic, never read out of bounds, and a header accepted has a
//! name and a version.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_scan::pkg::rpm::parse_header;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = parse_header(data) {
        assert!(!h.name.is_empty() && !h.version.is_empty(), "{h:?}");
    }
});
