//! apk-tools' installed database (`/lib/apk/db/installed`): one block per
//! package of `K:value` lines (`P` name, `V` version, `A` architecture,
//! `o` origin, the source package), blocks separated by blank lines.

use super::{Package, PackageKind, SourcePackage, warn};

/// The packages an apk installed database lists, and a warning for each
/// block that could not be read (the others are kept).
pub fn parse(text: &[u8], path: &str, layer: usize) -> (Vec<Package>, Vec<String>) {
    let mut warnings = Vec::new();
    let text = String::from_utf8_lossy(text);
    if matches!(text, std::borrow::Cow::Owned(_)) {
        warnings.push(format!(
            "{path}: not valid UTF-8; read with replacement characters"
        ));
    }
    let mut packages = Vec::new();
    let mut block = Block::default();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.is_empty() {
            block.finish(path, layer, &mut packages, &mut warnings);
            continue;
        }
        if block.start == 0 {
            block.start = lineno;
        }
        let mut chars = line.chars();
        let (Some(key), Some(':')) = (chars.next(), chars.next()) else {
            block.bad.get_or_insert(lineno);
            continue;
        };
        let value = chars.as_str();
        match key {
            'P' => block.name = Some(value.to_owned()),
            'V' => block.version = Some(value.to_owned()),
            'A' => block.arch = Some(value.to_owned()),
            'o' => block.origin = Some(value.to_owned()),
            _ => {}
        }
    }
    block.finish(path, layer, &mut packages, &mut warnings);
    (packages, warnings)
}

#[derive(Default)]
struct Block {
    start: usize,
    bad: Option<usize>,
    name: Option<String>,
    version: Option<String>,
    arch: Option<String>,
    origin: Option<String>,
}

impl Block {
    fn finish(
        &mut self,
        path: &str,
        layer: usize,
        packages: &mut Vec<Package>,
        warnings: &mut Vec<String>,
    ) {
        let b = std::mem::take(self);
        if b.start == 0 {
            return;
        }
        if let Some(line) = b.bad {
            warnings.push(warn(path, line, "line is not 'K:value'"));
            return;
        }
        let (Some(name), Some(version)) = (b.name, b.version) else {
            warnings.push(warn(path, b.start, "block lacks P: (name) or V: (version)"));
            return;
        };
        if name.is_empty() || version.is_empty() {
            warnings.push(warn(path, b.start, "empty name or version"));
            return;
        }
        let source = SourcePackage {
            name: b.origin.unwrap_or_else(|| name.clone()),
            version: version.clone(),
        };
        packages.push(Package {
            kind: PackageKind::Apk,
            name,
            version,
            source: Some(source),
            arch: b.arch,
            purl: String::new(),
            layer,
            path: path.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_blocks() {
        let text = "\
C:Q1abc=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
S:407278
o:musl
F:lib
R:ld-musl-x86_64.so.1

C:Q1def=
P:libcrypto3
V:3.1.4-r5
A:x86_64
o:openssl

P:nover
A:x86_64

oops
P:x
V:1
";
        let (pkgs, warnings) = parse(text.as_bytes(), "lib/apk/db/installed", 1);
        let got: Vec<_> = pkgs
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.source.as_ref().map(|s| s.name.as_str()),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("musl", "1.2.4_git20230717-r4", Some("musl")),
                ("libcrypto3", "3.1.4-r5", Some("openssl")),
            ]
        );
        assert_eq!(
            warnings,
            [
                "lib/apk/db/installed:16: block lacks P: (name) or V: (version); entry skipped",
                "lib/apk/db/installed:19: line is not 'K:value'; entry skipped",
            ]
        );
    }
}
