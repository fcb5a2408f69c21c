//! Go binaries in an image: the etcd the test environment builds from Go
//! modules, put in a layer as an executable, must yield exactly the modules
//! and Go version `go version -m` (the Go toolchain's own reader) reports.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, Result};
use sightline_scan::pkg::PackageKind;
use sightline_scan::{Analyzer, LayerExpect, Limits};
use sightline_testenv::Binaries;
use sightline_testenv::binaries::go_command;

#[test]
fn go_modules_match_go_version_m() -> Result<()> {
    let etcd = Binaries::ensure()?.etcd;
    // The Go toolchain's view.
    let out = Command::new(go_command())
        .args(["version", "-m"])
        .arg(&etcd)
        .output()?;
    anyhow::ensure!(out.status.success(), "go version -m failed");
    let text = String::from_utf8(out.stdout)?;
    let go = text
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .context("go version")?;
    let mut want: BTreeSet<(String, String)> = BTreeSet::new();
    want.insert(("stdlib".into(), format!("v{}", go.trim_start_matches("go"))));
    let mut last: Option<(String, String)> = None;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.trim_start().split('\t').collect();
        match f.as_slice() {
            ["dep", m, v, ..] => {
                if let Some(d) = last.replace((m.to_string(), v.to_string())) {
                    want.insert(d);
                }
            }
            ["=>", m, v, ..] => last = Some((m.to_string(), v.to_string())),
            ["mod", m, v, ..] if *v != "(devel)" => {
                want.insert((m.to_string(), v.to_string()));
            }
            _ => {}
        }
    }
    if let Some(d) = last {
        want.insert(d);
    }
    assert!(want.len() > 20, "{want:?}");

    // A layer with the binary as an executable, and a shell script beside it.
    let dir = tempfile::tempdir()?;
    let layer = dir.path().join("layer.tar");
    {
        let mut b = tar::Builder::new(std::fs::File::create(&layer)?);
        b.append_path_with_name(&etcd, "usr/local/bin/etcd")?;
        let script = b"#!/bin/sh\necho hi\n";
        let mut h = tar::Header::new_gnu();
        h.set_path("usr/local/bin/hello")?;
        h.set_size(script.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append(&h, &script[..])?;
        b.finish()?;
    }
    let mut a = Analyzer::new(Limits::default());
    a.add_layer(std::fs::File::open(&layer)?, &LayerExpect::default())?;
    let analysis = a.finish();
    let got: BTreeSet<(String, String)> = analysis
        .packages
        .iter()
        .filter(|p| p.kind == PackageKind::Go)
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    assert_eq!(got, want);
    let net = analysis
        .packages
        .iter()
        .find(|p| p.name == "golang.org/x/net")
        .context("golang.org/x/net")?;
    assert_eq!(
        net.purl,
        format!("pkg:golang/golang.org/x/net@{}", net.version)
    );
    assert_eq!(net.path, "usr/local/bin/etcd");
    assert!(analysis.warnings.is_empty(), "{:?}", analysis.warnings);
    Ok(())
}
