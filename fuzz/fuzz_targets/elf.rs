//! Executables as the analyzer streams them: the cargo-auditable capture
//! and the Go build-info search on arbitrary bytes, read in chunks of an
//! arbitrary size (the first byte picks it). Never panic, whatever the
//! headers claim (libFuzzer's RSS limit catches unbounded growth).
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use sightline_scan::pkg::{golang, rust_audit};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, file)) = data.split_first() else {
        return;
    };
    let mut capture = rust_audit::Capture::new(file);
    let mut buf = vec![0u8; usize::from(chunk).max(1) * 97];
    while capture.read(&mut buf).is_ok_and(|n| n > 0) {}
    let _ = capture.finish();
    let _ = golang::scan(file);
});
