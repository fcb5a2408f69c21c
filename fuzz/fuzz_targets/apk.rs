//! apk installed databases on arbitrary bytes: never panic, and every
//! package kept has a name and a version.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_scan::pkg::apk::parse;

fuzz_target!(|data: &[u8]| {
    let (packages, _warnings) = parse(data, "lib/apk/db/installed", 0);
    for p in packages {
        assert!(!p.name.is_empty() && !p.version.is_empty(), "{p:?}");
    }
});
