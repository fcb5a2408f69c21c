//! Version comparators on arbitrary text: never panic, and every scheme is
//! a consistent order (reflexive, antisymmetric) on what it accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_scan::version::Scheme;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = text.split_once('\n').unwrap_or((text, "1.0"));
    for scheme in [Scheme::Dpkg, Scheme::Apk, Scheme::Rpm, Scheme::SemVer, Scheme::Pep440, Scheme::Maven] {
        if let (Ok(ab), Ok(ba)) = (scheme.compare(a, b), scheme.compare(b, a)) {
            assert_eq!(ab, ba.reverse(), "{scheme:?}: {a:?} vs {b:?}");
        }
        if let Ok(aa) = scheme.compare(a, a) {
            assert_eq!(aa, std::cmp::Ordering::Equal, "{scheme:?}: {a:?}");
        }
    }
});
