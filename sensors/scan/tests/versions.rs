//! Version comparators against each ecosystem's own documented examples.

use std::cmp::Ordering::{self, Equal, Greater, Less};

use sightline_scan::version::{Scheme, rpm};

/// Each version is lower than the next.
fn ascending(scheme: Scheme, versions: &[&str]) {
    for w in versions.windows(2) {
        assert_eq!(
            scheme.compare(w[0], w[1]),
            Ok(Less),
            "{scheme:?}: {} < {}",
            w[0],
            w[1]
        );
        assert_eq!(
            scheme.compare(w[1], w[0]),
            Ok(Greater),
            "{scheme:?}: {} > {}",
            w[1],
            w[0]
        );
    }
    for v in versions {
        assert_eq!(scheme.compare(v, v), Ok(Equal), "{scheme:?}: {v} = {v}");
    }
}

fn equal(scheme: Scheme, a: &str, b: &str) {
    assert_eq!(scheme.compare(a, b), Ok(Equal), "{scheme:?}: {a} = {b}");
    assert_eq!(scheme.compare(b, a), Ok(Equal), "{scheme:?}: {b} = {a}");
}

fn rejects(scheme: Scheme, v: &str, reason: &str) {
    match scheme.compare(v, "1") {
        Err(e) => assert!(e.to_string().contains(reason), "{scheme:?} {v:?}: {e}"),
        Ok(o) => panic!("{scheme:?} accepted {v:?} ({o:?})"),
    }
}

#[test]
fn dpkg_follows_debian_policy() {
    // Policy 5.6.12: "~~" < "~~a" < "~" < "" < "a".
    ascending(Scheme::Dpkg, &["1.0~~", "1.0~~a", "1.0~", "1.0", "1.0a"]);
    // Epochs beat everything; revisions come last; numbers compare as numbers.
    ascending(Scheme::Dpkg, &["1.9", "1.10", "2.0", "1:0.1"]);
    ascending(Scheme::Dpkg, &["1.0-1", "1.0-2", "1.0-10", "1.0.1-1"]);
    // Real Debian security updates: a ~deb12uN backport sorts before the
    // unstable upload it came from.
    ascending(
        Scheme::Dpkg,
        &[
            "3.0.11-1~deb12u1",
            "3.0.11-1~deb12u2",
            "3.0.11-1",
            "3.0.13-1~deb12u1",
        ],
    );
    ascending(
        Scheme::Dpkg,
        &["1:9.2p1-2+deb12u2", "1:9.2p1-2+deb12u3", "1:9.3p1-1"],
    );
    ascending(Scheme::Dpkg, &["2.36-9+deb12u4", "2.36-9+deb12u10"]);
    equal(Scheme::Dpkg, "1.2.3", "1.2.3-0");
    equal(Scheme::Dpkg, "0:1.0", "1.0");
    equal(Scheme::Dpkg, "1.001", "1.1");
    rejects(Scheme::Dpkg, "", "empty");
    rejects(Scheme::Dpkg, "a1.0", "must start with a digit");
    rejects(Scheme::Dpkg, "x:1.0", "epoch");
    rejects(Scheme::Dpkg, "1.0 beta", "' ' is not allowed");
}

#[test]
fn rpmvercmp_matches_rpms_own_test_table() {
    // rpm's tests/rpmvercmp.at.
    let cases: &[(&str, &str, Ordering)] = &[
        ("1.0", "1.0", Equal),
        ("1.0", "2.0", Less),
        ("2.0.1", "2.0.1", Equal),
        ("2.0", "2.0.1", Less),
        ("2.0.1a", "2.0.1a", Equal),
        ("2.0.1a", "2.0.1", Greater),
        ("5.5p1", "5.5p1", Equal),
        ("5.5p1", "5.5p2", Less),
        ("5.5p10", "5.5p1", Greater),
        ("10xyz", "10.1xyz", Less),
        ("xyz10", "xyz10.1", Less),
        ("xyz.4", "xyz.4", Equal),
        ("xyz.4", "8", Less),
        ("xyz.4", "2", Less),
        ("5.5p2", "5.6p1", Less),
        ("5.6p1", "6.5p1", Less),
        ("6.0.rc1", "6.0", Greater),
        ("10b2", "10a1", Greater),
        ("1.0aa", "1.0a", Greater),
        ("10.0001", "10.1", Equal),
        ("10.0001", "10.0039", Less),
        ("4.999.9", "5.0", Less),
        ("20101121", "20101122", Less),
        ("2_0", "2_0", Equal),
        ("2.0", "2_0", Equal),
        ("a", "a", Equal),
        ("a+", "a+", Equal),
        ("a+", "a_", Equal),
        ("+a", "+a", Equal),
        ("+a", "_a", Equal),
        ("+_", "+_", Equal),
        ("_+", "+_", Equal),
        ("_+", "_", Equal),
        ("+", "_", Equal),
        ("1.0~rc1", "1.0~rc1", Equal),
        ("1.0~rc1", "1.0", Less),
        ("1.0~rc1", "1.0~rc2", Less),
        ("1.0~rc1~git123", "1.0~rc1", Less),
        ("1.0^", "1.0", Greater),
        ("1.0^git1", "1.0", Greater),
        ("1.0^git1", "1.0^git2", Less),
        ("1.0^git1", "1.01", Less),
        ("1.0^20160101", "1.0.1", Less),
        ("1.0~rc1^git1", "1.0~rc1", Greater),
        ("1.0^git1~pre", "1.0^git1", Less),
    ];
    for &(a, b, want) in cases {
        assert_eq!(rpm::rpmvercmp(a, b), want, "rpmvercmp({a}, {b})");
        assert_eq!(rpm::rpmvercmp(b, a), want.reverse(), "rpmvercmp({b}, {a})");
    }
    // Epoch and release.
    ascending(
        Scheme::Rpm,
        &["3.0.7-24.el9", "3.0.7-25.el9", "1:3.0.1-1.el9"],
    );
    equal(Scheme::Rpm, "1.0", "1.0-5.el9");
    rejects(Scheme::Rpm, "x:1.0", "epoch");
}

#[test]
fn apk_follows_apk_tools() {
    ascending(
        Scheme::Apk,
        &[
            "1.0_alpha",
            "1.0_beta",
            "1.0_pre",
            "1.0_rc",
            "1.0",
            "1.0_cvs",
            "1.0_svn",
            "1.0_git",
            "1.0_hg",
            "1.0_p",
        ],
    );
    ascending(Scheme::Apk, &["1.0_rc1", "1.0_rc2", "1.0_rc10", "1.0"]);
    ascending(
        Scheme::Apk,
        &["1.0", "1.0a", "1.0b", "1.0.1", "1.1", "1.10"],
    );
    ascending(Scheme::Apk, &["1.0-r1", "1.0-r2", "1.0-r10", "1.0_p1-r0"]);
    ascending(
        Scheme::Apk,
        &["3.1.4-r5", "3.1.4-r6", "3.1.7-r0", "3.3.2-r0"],
    );
    equal(Scheme::Apk, "1.0", "1.0-r0");
    rejects(Scheme::Apk, "1.0_bogus1", "unknown suffix");
    rejects(Scheme::Apk, "x.y", "numbers");
    rejects(Scheme::Apk, "1.0-rX", "revision");
}

#[test]
fn semver_follows_semver_org() {
    // semver.org §11.
    ascending(Scheme::SemVer, &["1.0.0", "2.0.0", "2.1.0", "2.1.1"]);
    ascending(
        Scheme::SemVer,
        &[
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
        ],
    );
    // Build metadata does not count; Go's v prefix and +incompatible.
    equal(
        Scheme::SemVer,
        "1.0.0+20130313144700",
        "1.0.0+exp.sha.5114f85",
    );
    equal(Scheme::SemVer, "v2.0.0+incompatible", "2.0.0");
    ascending(Scheme::SemVer, &["v0.17.0", "v0.23.0", "v1.2.3"]);
    rejects(Scheme::SemVer, "1.0", "MAJOR.MINOR.PATCH");
    rejects(Scheme::SemVer, "01.0.0", "leading zeros");
    rejects(Scheme::SemVer, "1.0.0-", "pre-release");
}

#[test]
fn pep440_follows_the_pep() {
    // PEP 440's example ordering.
    ascending(
        Scheme::Pep440,
        &[
            "1.0.dev456",
            "1.0a1",
            "1.0a2.dev456",
            "1.0a12.dev456",
            "1.0a12",
            "1.0b1.dev456",
            "1.0b2",
            "1.0b2.post345.dev456",
            "1.0b2.post345",
            "1.0rc1.dev456",
            "1.0rc1",
            "1.0",
            "1.0+abc.5",
            "1.0+abc.7",
            "1.0+5",
            "1.0.post456.dev34",
            "1.0.post456",
            "1.0.15",
            "1.1.dev1",
        ],
    );
    // Epochs, and normalized spellings.
    ascending(Scheme::Pep440, &["2.0", "2013.10", "1!1.0"]);
    for same in [
        "1.0a1",
        "1.0.alpha.1",
        "1.0-a1",
        "1.0alpha1",
        "1.0A1",
        "v1.0a1",
        "1.0.0a1",
    ] {
        equal(Scheme::Pep440, "1.0a1", same);
    }
    equal(Scheme::Pep440, "1.0c1", "1.0rc1");
    equal(Scheme::Pep440, "1.0pre1", "1.0rc1");
    equal(Scheme::Pep440, "1.0preview1", "1.0rc1");
    for same in [
        "1.0-1",
        "1.0.post1",
        "1.0-post1",
        "1.0rev1",
        "1.0r1",
        "1.0post1",
    ] {
        equal(Scheme::Pep440, "1.0.post1", same);
    }
    equal(Scheme::Pep440, "1.0.dev", "1.0.dev0");
    equal(Scheme::Pep440, "1.0rc", "1.0rc0");
    rejects(Scheme::Pep440, "", "release number");
    rejects(Scheme::Pep440, "1.0.x", "unexpected");
    rejects(Scheme::Pep440, "1.0+", "local");
}

#[test]
fn osv_ecosystems_pick_their_scheme() {
    assert_eq!(Scheme::for_osv_ecosystem("Debian:12"), Some(Scheme::Dpkg));
    assert_eq!(Scheme::for_osv_ecosystem("Alpine:v3.20"), Some(Scheme::Apk));
    assert_eq!(Scheme::for_osv_ecosystem("Red Hat"), Some(Scheme::Rpm));
    assert_eq!(Scheme::for_osv_ecosystem("crates.io"), Some(Scheme::SemVer));
    assert_eq!(Scheme::for_osv_ecosystem("PyPI"), Some(Scheme::Pep440));
    assert_eq!(Scheme::for_osv_ecosystem("Maven"), Some(Scheme::Maven));
    assert_eq!(Scheme::for_osv_ecosystem("Hex"), None);
}

/// The POM reference's "Version Order Specification" examples.
#[test]
fn maven_version_order_specification() {
    let m = Scheme::Maven;
    ascending(m, &["1", "1.1"]);
    ascending(m, &["1-snapshot", "1", "1-sp"]);
    ascending(m, &["1-foo2", "1-foo10"]);
    equal(m, "1.foo", "1-foo");
    ascending(m, &["1-foo", "1-1", "1.1"]);
    for same in ["1-ga", "1-0", "1.0", "1", "1.final", "1.0.0"] {
        equal(m, "1.ga", same);
    }
    ascending(m, &["1-ga", "1-sp"]);
    ascending(m, &["1-ga.1", "1-sp.1"]);
    ascending(m, &["1-sp-1", "1-ga-1"]);
    equal(m, "1-ga-1", "1-1");
    equal(m, "1-a1", "1-alpha-1");
    // Trimming examples, and the well-known qualifiers in order.
    equal(m, "1.0.0-foo.0.0", "1-foo");
    equal(m, "1.0.0-0.0.0", "1");
    equal(m, "1.", "1");
    equal(m, "1-", "1");
    equal(m, "1-cr", "1-rc");
    ascending(
        m,
        &[
            "1-alpha",
            "1-beta",
            "1-milestone",
            "1-rc",
            "1-snapshot",
            "1",
            "1-sp",
            "1-abc",
            "1-abd",
        ],
    );
    // Versions as artifacts publish them.
    ascending(m, &["2.11.0", "2.12.0-RC1", "2.12.0", "2.12.1", "2.13"]);
    equal(m, "5.3.0.RELEASE", "5.3.0");
    ascending(
        m,
        &[
            "1.0.0-alpha1",
            "1.0.0-alpha2",
            "1.0.0-alpha10",
            "1.0.0-beta1",
            "1.0.0",
        ],
    );
}
