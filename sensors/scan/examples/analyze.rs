//! Analyses one image and prints a one-line JSON summary with the time the
//! analysis took and the process's peak RSS; `cargo xtask bench --only scan`
//! runs it (release build) on real images.
//!
//! Usage: `analyze docker-archive PATH [TAG]` or `analyze oci DIR [REF]`

use std::path::Path;
use std::time::Instant;

use sightline_scan::Limits;
use sightline_scan::source::{Platform, docker_archive, oci_layout};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kind, path, reference) = match args.as_slice() {
        [kind, path] => (kind.as_str(), Path::new(path), None),
        [kind, path, r] => (kind.as_str(), Path::new(path), Some(r.as_str())),
        _ => usage(),
    };
    let start = Instant::now();
    let limits = Limits::default();
    let result = match kind {
        "docker-archive" => docker_archive::analyze(path, reference, &limits),
        "oci" => oci_layout::analyze(path, reference, &Platform::host(), &limits),
        _ => usage(),
    };
    let elapsed = start.elapsed();
    match result {
        Ok(image) => {
            let a = &image.analysis;
            let summary = serde_json::json!({
                "seconds": elapsed.as_secs_f64(),
                "peakRssKiB": peak_rss_kib(),
                "packages": a.packages.len(),
                "layers": a.layers.len(),
                "bytes": a.layers.iter().map(|l| l.size).sum::<u64>(),
                "os": a.os.as_ref().map(|o| o.pretty_name()),
                "warnings": a.warnings.len(),
            });
            println!("{summary}");
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: analyze docker-archive PATH [TAG] | analyze oci DIR [REF]");
    std::process::exit(2);
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
