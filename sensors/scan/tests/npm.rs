//! npm packages as an image holds them: a lockfile that names every
//! platform's binary package (as esbuild's does) and the node_modules npm
//! installed for this one. Only what is installed is listed.

use anyhow::Result;
use sightline_scan::{Analyzer, LayerExpect, Limits};

fn layer(files: &[(&str, &str)]) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, text) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, text.as_bytes())?;
    }
    Ok(tar.into_inner()?)
}

#[test]
fn only_the_installed_platform_package_is_listed() -> Result<()> {
    let lock = r#"{"name": "app", "version": "1.0.0", "lockfileVersion": 3, "packages": {
        "": {"name": "app", "version": "1.0.0", "dependencies": {"esbuild": "^0.21.5"}},
        "node_modules/esbuild": {"version": "0.21.5", "optionalDependencies": {
            "@esbuild/darwin-arm64": "0.21.5", "@esbuild/linux-x64": "0.21.5"}},
        "node_modules/@esbuild/darwin-arm64": {"version": "0.21.5", "optional": true, "os": ["darwin"], "cpu": ["arm64"]},
        "node_modules/@esbuild/linux-x64": {"version": "0.21.5", "optional": true, "os": ["linux"], "cpu": ["x64"]}
    }}"#;
    let data = layer(&[
        ("srv/app/package-lock.json", lock),
        (
            "srv/app/node_modules/esbuild/package.json",
            r#"{"name": "esbuild", "version": "0.21.5"}"#,
        ),
        (
            "srv/app/node_modules/@esbuild/linux-x64/package.json",
            r#"{"name": "@esbuild/linux-x64", "version": "0.21.5", "os": ["linux"], "cpu": ["x64"]}"#,
        ),
    ])?;
    let mut a = Analyzer::new(Limits::default());
    a.add_layer(&data[..], &LayerExpect::default())?;
    let analysis = a.finish();
    let npm: Vec<(&str, &str)> = analysis
        .packages
        .iter()
        .filter(|p| p.purl.starts_with("pkg:npm/"))
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    assert_eq!(
        npm,
        [("@esbuild/linux-x64", "0.21.5"), ("esbuild", "0.21.5")]
    );
    Ok(())
}
