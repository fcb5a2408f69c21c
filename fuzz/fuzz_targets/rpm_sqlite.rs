//! rpm's SQLite database on arbitrary bytes (an image's `rpmdb.sqlite` is
//! whatever the image's author wrote): never panic, never hang, and every
//! package read has a name and a version. Corrupt pages, hostile schemas
//! (views, generated columns) and oversized values all end in a warning.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_scan::pkg::rpm::parse_sqlite;

fuzz_target!(|data: &[u8]| {
    let (packages, _warnings) = parse_sqlite(data, "var/lib/rpm/rpmdb.sqlite");
    for p in &packages {
        assert!(!p.name.is_empty() && !p.version.is_empty(), "{p:?}");
    }
});
