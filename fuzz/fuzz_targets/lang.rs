//! The language package parsers (Cargo.lock, package-lock.json,
//! package.json, Python metadata, Go build info, Java archives) on arbitrary
//! bytes: never
//! panic, and every package kept has a name and a version.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_scan::pkg::{golang, java};
use sightline_scan::pkg::lang::LangFile;

fuzz_target!(|data: &[u8]| {
    for file in [LangFile::CargoLock, LangFile::NpmLock, LangFile::NpmPackage, LangFile::PythonMetadata] {
        let (packages, _warnings) = file.parse(data, "x");
        for p in packages {
            assert!(!p.name.is_empty() && !p.version.is_empty(), "{file:?}: {p:?}");
        }
    }
    if let Ok(Some(Ok(info))) = golang::scan(data) {
        for p in golang::packages(&info, "x") {
            assert!(!p.name.is_empty() && !p.version.is_empty(), "{p:?}");
        }
    }
    let _ = golang::parse(data);
    for p in java::parse(data, "x.jar").0 {
        assert!(p.name.contains(':') && !p.version.is_empty(), "{p:?}");
    }
});
