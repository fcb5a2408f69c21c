//! The ingestion API's request parser on arbitrary bytes: it never panics,
//! and whatever it accepts is within the contract's bounds and survives a
//! round trip unchanged (what the operator stores is what was sent).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_report::{MAX_OBSERVATIONS, Report};

fuzz_target!(|data: &[u8]| {
    let Ok(report) = Report::from_body(data) else {
        return;
    };
    assert!(report.observations.len() <= MAX_OBSERVATIONS);
    let again = match serde_json::to_vec(&report) {
        Ok(b) => b,
        Err(e) => panic!("an accepted report does not serialize: {e}"),
    };
    match Report::from_body(&again) {
        Ok(r) => assert_eq!(r, report, "the round trip changed the report"),
        Err(e) => panic!("an accepted report is refused after a round trip: {e}"),
    }
});
