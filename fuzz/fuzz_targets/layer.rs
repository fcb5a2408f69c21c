//! Image layers on arbitrary bytes: the input is one layer, or two split at
//! the line `--layer--` (so the second's whiteouts and links apply to the
//! first). Never panic, never loop, and a refused layer adds nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_scan::{Analyzer, LayerExpect, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_file_bytes: 1 << 20,
        max_layer_bytes: 64 << 20,
        expansion_floor: 1 << 20,
        max_entries: 10_000,
        ..Limits::default()
    };
    const MARK: &[u8] = b"\n--layer--\n";
    let layers: Vec<&[u8]> = match data.windows(MARK.len()).position(|w| w == MARK) {
        Some(i) => vec![&data[..i], &data[i + MARK.len()..]],
        None => vec![data],
    };
    let mut a = Analyzer::new(limits);
    let mut added = 0;
    for layer in layers {
        if a.add_layer(layer, &LayerExpect::default()).is_ok() {
            added += 1;
        }
    }
    let done = a.finish();
    assert_eq!(done.layers.len(), added);
});
