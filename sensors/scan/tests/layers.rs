//! Layer semantics and hostile layers, on tar streams built here byte by
//! byte (the input format itself, so nothing is mocked): whiteouts, opaque
//! directories, links, provenance, and every malformed or malicious layer
//! the analyzer must refuse with a clear error and bounded memory.

// The layer builders below are test set-up: a failure there is a bug in the
// test, and panicking with its message is the clearest report.
#![allow(clippy::expect_used)]

use std::io::Write;

use sightline_scan::{Analysis, Analyzer, LayerExpect, Limits, ScanError};

/// A layer under construction.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Self {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        // Written raw, so hostile names reach the analyzer unchanged.
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    fn file(mut self, name: &str, data: &[u8]) -> Self {
        let h = Self::header(name, tar::EntryType::Regular, data.len() as u64);
        self.0.append(&h, data).expect("append");
        self
    }

    fn link(mut self, name: &str, kind: tar::EntryType, target: &str) -> Self {
        let mut h = Self::header(name, kind, 0);
        let t = target.as_bytes();
        h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        h.set_cksum();
        self.0.append(&h, &[][..]).expect("append");
        self
    }

    fn symlink(self, name: &str, target: &str) -> Self {
        self.link(name, tar::EntryType::Symlink, target)
    }

    fn dir(mut self, name: &str) -> Self {
        let h = Self::header(name, tar::EntryType::Directory, 0);
        self.0.append(&h, &[][..]).expect("append");
        self
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().expect("finish tar")
    }
}

fn status(pkgs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = String::new();
    for (name, version) in pkgs {
        out.push_str(&format!(
            "Package: {name}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {version}\n\n"
        ));
    }
    out.into_bytes()
}

const DEBIAN_OS: &[u8] =
    b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";

fn analyze(layers: Vec<Vec<u8>>) -> Result<Analysis, ScanError> {
    analyze_with(layers, Limits::default())
}

fn analyze_with(layers: Vec<Vec<u8>>, limits: Limits) -> Result<Analysis, ScanError> {
    let mut a = Analyzer::new(limits);
    for l in layers {
        a.add_layer(&l[..], &LayerExpect::default())?;
    }
    Ok(a.finish())
}

fn names(a: &Analysis) -> Vec<(String, String, usize)> {
    a.packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone(), p.layer))
        .collect()
}

fn own(v: &[(&str, &str, usize)]) -> Vec<(String, String, usize)> {
    v.iter()
        .map(|(n, v, l)| (n.to_string(), v.to_string(), *l))
        .collect()
}

fn base() -> Layer {
    Layer::new()
        .dir("./etc/")
        .symlink("./etc/os-release", "../usr/lib/os-release")
        .file("./usr/lib/os-release", DEBIAN_OS)
        .file(
            "./var/lib/dpkg/status",
            &status(&[("bash", "5.2.15-2+b2"), ("libc6", "2.36-9+deb12u4")]),
        )
}

#[test]
fn os_release_through_a_relative_symlink_and_purls() {
    let a = analyze(vec![base().bytes()]).expect("analysis");
    let os = a.os.as_ref().expect("os");
    assert_eq!(os.pretty_name(), "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(os.path, "usr/lib/os-release");
    assert_eq!(
        a.packages[0].purl,
        "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12"
    );
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
}

#[test]
fn later_layers_keep_the_layer_that_introduced_each_package() {
    let upgrade = Layer::new()
        .file(
            "var/lib/dpkg/status",
            &status(&[
                ("bash", "5.2.15-2+b2"),
                ("curl", "7.88.1-10+deb12u5"),
                ("libc6", "2.36-9+deb12u7"),
            ]),
        )
        .bytes();
    let a = analyze(vec![base().bytes(), upgrade]).expect("analysis");
    assert_eq!(
        names(&a),
        own(&[
            ("bash", "5.2.15-2+b2", 0),
            ("curl", "7.88.1-10+deb12u5", 1),
            ("libc6", "2.36-9+deb12u7", 1),
        ])
    );
}

#[test]
fn whiteout_of_the_database_directory_removes_its_packages() {
    let wipe = Layer::new().file("var/lib/.wh.dpkg", b"").bytes();
    let a = analyze(vec![base().bytes(), wipe]).expect("analysis");
    assert!(a.packages.is_empty(), "{:?}", names(&a));
    assert!(a.os.is_some(), "os-release is untouched");

    // A whiteout hides only lower layers: a file the same layer adds stays.
    let replace = Layer::new()
        .file("var/lib/dpkg/status", &status(&[("dash", "0.5.12-2")]))
        .file("var/lib/dpkg/.wh.status", b"")
        .bytes();
    let a = analyze(vec![base().bytes(), replace]).expect("analysis");
    assert_eq!(names(&a), own(&[("dash", "0.5.12-2", 1)]));
}

#[test]
fn opaque_directory_hides_everything_below_it() {
    let layer = Layer::new()
        .file("etc/.wh..wh..opq", b"")
        .file("var/lib/dpkg/.wh..wh..opq", b"")
        .file("var/lib/dpkg/status", &status(&[("only", "1.0")]))
        .bytes();
    let a = analyze(vec![base().bytes(), layer]).expect("analysis");
    assert_eq!(names(&a), own(&[("only", "1.0", 1)]));
    // etc/os-release (the link) is gone; usr/lib/os-release still answers.
    assert_eq!(a.os.expect("os").path, "usr/lib/os-release");
}

#[test]
fn deleting_the_link_target_loses_the_os() {
    let layer = Layer::new().file("usr/lib/.wh.os-release", b"").bytes();
    let a = analyze(vec![base().bytes(), layer]).expect("analysis");
    assert!(a.os.is_none());
}

#[test]
fn merged_usr_directory_links_and_apk() {
    let apk = b"P:musl\nV:1.2.4_git20230717-r4\nA:x86_64\no:musl\n\nP:libcrypto3\nV:3.1.4-r5\nA:x86_64\no:openssl\n";
    let layer = Layer::new()
        .symlink("lib", "usr/lib")
        .file("usr/lib/apk/db/installed", apk)
        .file("etc/alpine-release", b"3.19.1\n")
        .bytes();
    let a = analyze(vec![layer]).expect("analysis");
    // Reached through lib -> usr/lib and directly: listed once.
    assert_eq!(
        names(&a),
        own(&[
            ("libcrypto3", "3.1.4-r5", 0),
            ("musl", "1.2.4_git20230717-r4", 0)
        ])
    );
    assert_eq!(
        a.packages[0].purl,
        "pkg:apk/alpine/libcrypto3@3.1.4-r5?arch=x86_64&distro=alpine-3.19.1"
    );
}

#[test]
fn hard_links_and_replaced_files() {
    let layer = Layer::new()
        .file("usr/lib/os-release", DEBIAN_OS)
        .link("etc/os-release", tar::EntryType::Link, "usr/lib/os-release")
        .bytes();
    let gone = Layer::new().dir("usr/lib/os-release").bytes();
    let a = analyze(vec![layer, gone]).expect("analysis");
    // The hard link is its own file: replacing the other name keeps it.
    assert_eq!(a.os.expect("os").path, "usr/lib/os-release");
}

fn expect_err(layers: Vec<Vec<u8>>, limits: Limits, want: &str) -> ScanError {
    let err = analyze_with(layers, limits).expect_err("must be refused");
    let msg = err.to_string();
    assert!(msg.contains(want), "error '{msg}' should mention '{want}'");
    err
}

#[test]
fn path_traversal_and_absolute_paths_are_refused() {
    let bad = Layer::new().file("usr/../../etc/passwd", b"x").bytes();
    let e = expect_err(
        vec![bad],
        Limits::default(),
        "'usr/../../etc/passwd' climbs out",
    );
    assert!(matches!(e, ScanError::UnsafePath { .. }));
    let bad = Layer::new().file("/etc/os-release", DEBIAN_OS).bytes();
    expect_err(
        vec![bad],
        Limits::default(),
        "'/etc/os-release' is an absolute path",
    );
    let bad = Layer::new()
        .link(
            "etc/os-release",
            tar::EntryType::Link,
            "../../host/etc/os-release",
        )
        .bytes();
    expect_err(
        vec![bad],
        Limits::default(),
        "hard link to ../../host/etc/os-release",
    );
}

#[test]
fn symlinks_never_leave_the_image() {
    // Points far above the root: resolved inside the image, and said so.
    let layer = Layer::new()
        .symlink("etc/os-release", "../../../../../usr/lib/os-release")
        .file("usr/lib/os-release", DEBIAN_OS)
        .bytes();
    let a = analyze(vec![layer]).expect("analysis");
    assert_eq!(a.os.expect("os").path, "usr/lib/os-release");
    assert!(
        a.warnings
            .iter()
            .any(|w| w.contains("climbs above the image root")),
        "{:?}",
        a.warnings
    );

    // A loop ends with a warning, not a hang.
    let layer = Layer::new()
        .symlink("etc/os-release", "../usr/lib/os-release")
        .symlink("usr/lib/os-release", "../../etc/os-release")
        .bytes();
    let a = analyze(vec![layer]).expect("analysis");
    assert!(a.os.is_none());
    assert!(
        a.warnings
            .iter()
            .any(|w| w.contains("too many levels of symbolic links")),
        "{:?}",
        a.warnings
    );
}

#[test]
fn truncated_layer_is_an_error_and_leaves_the_analysis_unchanged() {
    let full = Layer::new()
        .file("var/lib/dpkg/status", &status(&[("dash", "0.5.12-2")]))
        .file("usr/share/big", &vec![7u8; 100_000])
        .bytes();
    let cut = full[..50_000].to_vec();
    let mut a = Analyzer::new(Limits::default());
    a.add_layer(&base().bytes()[..], &LayerExpect::default())
        .expect("base");
    let e = a
        .add_layer(&cut[..], &LayerExpect::default())
        .expect_err("truncated");
    assert!(matches!(e, ScanError::Layer { .. }), "{e}");
    assert!(e.to_string().starts_with("layer 1: "), "{e}");
    // The base layer's packages, not the truncated layer's.
    let done = a.finish();
    assert_eq!(done.layers.len(), 1);
    assert_eq!(done.packages.len(), 2);
}

#[test]
fn digest_mismatch_is_refused() {
    let layer = base().bytes();
    let mut a = Analyzer::new(Limits::default());
    let expect = LayerExpect {
        diff_id: Some(format!("sha256:{}", "0".repeat(64))),
        ..LayerExpect::default()
    };
    let e = a.add_layer(&layer[..], &expect).expect_err("mismatch");
    assert!(
        e.to_string()
            .contains("uncompressed digest (diff_id): expected sha256:000"),
        "{e}"
    );
    assert!(a.finish().packages.is_empty());

    let expect = LayerExpect {
        blob_size: Some(layer.len() as u64 - 1),
        ..LayerExpect::default()
    };
    let e = Analyzer::new(Limits::default())
        .add_layer(&layer[..], &expect)
        .expect_err("size");
    assert!(e.to_string().contains("blob size"), "{e}");
}

#[test]
fn gzip_and_zstd_layers_and_their_digests() {
    let plain = base().bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let zst = zstd::encode_all(&plain[..], 3).expect("zstd");
    for blob in [gz, zst] {
        let mut a = Analyzer::new(Limits::default());
        let info = a
            .add_layer(&blob[..], &LayerExpect::default())
            .expect("layer")
            .clone();
        assert_eq!(info.diff_id, sha256(&plain));
        assert_eq!(info.blob_digest, Some(sha256(&blob)));
        assert_eq!(a.finish().packages.len(), 2);
    }
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(data);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[test]
fn unsupported_compression_is_named() {
    let mut xz = vec![0xfd, b'7', b'z', b'X', b'Z', 0];
    xz.extend_from_slice(&[0; 100]);
    expect_err(
        vec![xz],
        Limits::default(),
        "xz-compressed layers are not supported",
    );
}

#[test]
fn decompression_bomb_is_stopped() {
    // 64 MiB of zeros in one entry compress to ~64 KiB with gzip: a 1000x
    // expansion, far above any real layer's.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    {
        let mut b = tar::Builder::new(&mut gz);
        let mut h = tar::Header::new_gnu();
        h.set_path("zeros").expect("path");
        h.set_size(64 << 20);
        h.set_cksum();
        b.append(&h, std::io::repeat(0).take_bytes(64 << 20))
            .expect("append");
        b.finish().expect("finish");
    }
    let bomb = gz.finish().expect("gzip");
    let limits = Limits {
        expansion_floor: 8 << 20,
        ..Limits::default()
    };
    let e = expect_err(vec![bomb], limits, "a decompression bomb");
    assert!(
        e.to_string()
            .contains("expansion ratio exceeds the limit of 200x"),
        "{e}"
    );
}

trait TakeBytes: std::io::Read + Sized {
    fn take_bytes(self, n: u64) -> std::io::Take<Self> {
        std::io::Read::take(self, n)
    }
}
impl<R: std::io::Read> TakeBytes for R {}

/// A GNU sparse entry claiming 10 GiB with 512 bytes stored.
fn sparse_layer(name: &str) -> Vec<u8> {
    let mut h = Layer::header(name, tar::EntryType::GNUSparse, 512);
    {
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.set_real_size(10 << 30);
        gnu.sparse[0].set_offset((10 << 30) - 512);
        gnu.sparse[0].set_length(512);
    }
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &[b'x'; 512][..]).expect("append");
    b.into_inner().expect("finish")
}

#[test]
fn ten_gib_sparse_entries() {
    // Skipped in no time where analysis does not read it...
    let a = analyze(vec![sparse_layer("var/tmp/huge")]).expect("analysis");
    assert_eq!(a.layers[0].entries, 1);
    // ...and refused, not read into memory, where it would be parsed.
    expect_err(
        vec![sparse_layer("var/lib/dpkg/status")],
        Limits::default(),
        "'var/lib/dpkg/status' (10 GiB) exceeds the limit of 64 MiB",
    );
}

#[test]
fn malformed_database_keeps_what_it_can() {
    let layer = Layer::new()
        .file(
            "var/lib/dpkg/status",
            b"Package: ok\nStatus: install ok installed\nVersion: 1\n\nnonsense\n\nPackage: nover\nStatus: install ok installed\n",
        )
        .bytes();
    let a = analyze(vec![layer]).expect("analysis");
    assert_eq!(names(&a), own(&[("ok", "1", 0)]));
    assert_eq!(a.warnings.len(), 2, "{:?}", a.warnings);
}

#[test]
fn replacing_a_directory_hides_its_contents_but_directories_merge() {
    // An upper layer's directory entry for var/lib/dpkg merges.
    let touch = Layer::new()
        .dir("var/")
        .dir("var/lib/")
        .dir("var/lib/dpkg/")
        .bytes();
    let a = analyze(vec![base().bytes(), touch]).expect("analysis");
    assert_eq!(a.packages.len(), 2);

    // A file where the directory was hides everything below it...
    let file = Layer::new()
        .file("var/lib/dpkg", b"not a directory")
        .bytes();
    let a = analyze(vec![base().bytes(), file]).expect("analysis");
    assert!(a.packages.is_empty(), "{:?}", names(&a));

    // ...and so does a symlink: lib/apk/... now resolves through it.
    let apk = Layer::new()
        .file("lib/apk/db/installed", b"P:old\nV:1-r0\n")
        .bytes();
    let link = Layer::new()
        .symlink("lib", "usr/lib")
        .file("usr/lib/apk/db/installed", b"P:new\nV:2-r0\n")
        .bytes();
    let a = analyze(vec![apk, link]).expect("analysis");
    assert_eq!(names(&a), own(&[("new", "2-r0", 1)]));
}

#[test]
fn layers_read_out_of_order_apply_base_first() {
    let upgrade = Layer::new()
        .file(
            "var/lib/dpkg/status",
            &status(&[("bash", "5.2.15-2+b2"), ("curl", "7.88.1-10+deb12u5")]),
        )
        .bytes();
    let mut a = Analyzer::new(Limits::default());
    // Read top first, as a `docker save` stream may deliver them.
    let top = a
        .read_layer(&upgrade[..], &LayerExpect::default(), "top")
        .expect("top");
    let bottom = a
        .read_layer(&base().bytes()[..], &LayerExpect::default(), "base")
        .expect("base");
    a.apply_layer(bottom);
    a.apply_layer(top);
    let staged = a.finish();
    let sequential = analyze(vec![base().bytes(), upgrade]).expect("analysis");
    assert_eq!(names(&staged), names(&sequential));
    assert_eq!(
        names(&staged),
        own(&[("bash", "5.2.15-2+b2", 0), ("curl", "7.88.1-10+deb12u5", 1)])
    );
}

#[test]
fn an_analysis_past_its_deadline_stops_with_a_clear_error() {
    let limits = Limits {
        deadline: Some(sightline_scan::Deadline::after(std::time::Duration::ZERO)),
        ..Limits::default()
    };
    std::thread::sleep(std::time::Duration::from_millis(2));
    let e = analyze_with(vec![base().bytes()], limits).expect_err("past the deadline");
    assert!(
        matches!(&e, ScanError::Limit { what, .. } if what == "analysis time"),
        "{e}"
    );
    assert!(e.to_string().contains("the analysis deadline"), "{e}");
    // With time to spare, the same layer is analysed.
    let limits = Limits {
        deadline: Some(sightline_scan::Deadline::after(
            std::time::Duration::from_secs(600),
        )),
        ..Limits::default()
    };
    assert_eq!(
        analyze_with(vec![base().bytes()], limits)
            .expect("in time")
            .packages
            .len(),
        2
    );
}

#[test]
fn whiteouts_past_the_limit_are_dropped_and_said_so_never_hiding_more() {
    let upper = Layer::new()
        .file("tmp/.wh.a", b"")
        .file("tmp/.wh.b", b"")
        .file("var/lib/dpkg/.wh.status", b"")
        .bytes();
    let with = |max_whiteouts| {
        analyze_with(
            vec![base().bytes(), upper.clone()],
            Limits {
                max_whiteouts,
                ..Limits::default()
            },
        )
        .expect("analysed")
    };
    // Within the limit, the package database is removed.
    let all = with(3);
    assert!(all.packages.is_empty());
    assert!(all.warnings.is_empty(), "{:?}", all.warnings);
    // Past it, the third whiteout is dropped: its file stays listed (more
    // is reported, never less), and the analysis says why.
    let capped = with(2);
    assert_eq!(capped.packages.len(), 2);
    assert!(
        capped.warnings.iter().any(
            |w| w.contains("more than 2 whiteouts") && w.contains("too large to analyse fully")
        ),
        "{:?}",
        capped.warnings
    );
}
