//! Catalog tests: validation, normalization of real-world strings, lifecycle
//! stages, Unidentified vs Unknown, malformed facts.

use std::collections::BTreeMap;

use jiff::civil::{Date, date};
use serde_json::{Value, json};
use sightline_crds::asset::{AssetKind, LifecycleStage, Normalized, Product};

use super::normalize::{normalize_version, parse_os_release};
use super::{Catalog, CatalogError};

const TAXONOMY: &str = include_str!("../../catalog/taxonomy.yaml");
const NORMALIZATION: &str = include_str!("../../catalog/normalization.yaml");
const LIFECYCLE: &str = include_str!("../../catalog/lifecycle.yaml");

fn cat() -> Catalog {
    Catalog::builtin().expect("the builtin catalog loads")
}

const TODAY: Date = date(2026, 11, 26);

fn obs(v: Value) -> BTreeMap<String, Value> {
    match v {
        Value::Object(m) => m.into_iter().collect(),
        _ => panic!("facts must be an object"),
    }
}

fn norm(kind: Option<AssetKind>, v: Value) -> Normalized {
    cat().normalize(kind, &obs(v), TODAY)
}

#[track_caller]
fn assert_product(
    p: &Product,
    vendor: Option<&str>,
    product: Option<&str>,
    version: Option<&str>,
    category: Option<&str>,
    subcategory: Option<&str>,
) {
    assert_eq!(p.vendor.as_deref(), vendor, "vendor of {p:?}");
    assert_eq!(p.product.as_deref(), product, "product of {p:?}");
    assert_eq!(p.version.as_deref(), version, "version of {p:?}");
    assert_eq!(p.category.as_deref(), category, "category of {p:?}");
    assert_eq!(
        p.subcategory.as_deref(),
        subcategory,
        "subcategory of {p:?}"
    );
}

fn stage(p: &Product) -> LifecycleStage {
    p.lifecycle
        .as_ref()
        .expect("every product has a lifecycle")
        .stage
}

// ---- catalog validation -----------------------------------------------------

#[test]
fn builtin_loads_and_is_consistent() {
    let c = cat();
    assert_eq!(c.version(), "2026.12.07");
    // Every lifecycle product is used by some rule, and every rule's
    // lifecycle exists (the latter is also enforced at load).
    assert_eq!(c.lifecycle_ids(), c.referenced_lifecycles());
    for id in [
        "debian",
        "ubuntu",
        "alpine",
        "rhel",
        "rocky",
        "almalinux",
        "oracle-linux",
        "centos",
        "amazon-linux",
        "windows-server",
        "kubernetes",
        "nodejs",
        "python",
        "go",
        "java",
        "dotnet",
        "postgresql",
        "nginx",
    ] {
        let p = c
            .lifecycle(id)
            .unwrap_or_else(|| panic!("lifecycle `{id}` missing"));
        assert!(!p.source.is_empty() && !p.stages.is_empty(), "{id}");
        for cy in &p.cycles {
            let dates: Vec<Date> = [cy.ga, cy.eos, cy.eol, cy.eo_service]
                .into_iter()
                .flatten()
                .collect();
            assert!(
                dates.windows(2).all(|w| w[0] <= w[1]),
                "{id} {}: dates out of order",
                cy.cycle
            );
        }
    }
    let hw: Vec<&str> = c
        .hardware_categories()
        .iter()
        .map(|c| c.category.as_str())
        .collect();
    assert_eq!(
        hw,
        [
            "Computers",
            "Network Device",
            "Virtualized",
            "Printer",
            "IoT"
        ]
    );
    let sw = c.software_categories();
    let os = sw
        .iter()
        .find(|c| c.category == "Operating System")
        .expect("OS category");
    assert_eq!(os.subcategories, ["Linux", "Windows", "Unix", "Network OS"]);
}

#[test]
fn every_category_used_by_a_rule_is_in_the_taxonomy() {
    // Enforced at load; check it independently on what normalization yields.
    let c = cat();
    let n = norm(
        Some(AssetKind::Node),
        json!({"osImage": "Ubuntu 22.04.4 LTS", "dmi": {"sysVendor": "QEMU"},
               "software": [{"name": "kubelet", "version": "v1.34.4"}, {"name": "nginx", "version": "1.24.0"},
                            {"name": "postgresql", "version": "15.5"}, {"name": "containerd", "version": "1.6.20"},
                            {"name": "python3", "version": "3.11.2"}]}),
    );
    let all = n.hardware.iter().chain(&n.os).chain(&n.software);
    for p in all {
        let tax = if n.hardware.as_ref() == Some(p) {
            c.hardware_categories()
        } else {
            c.software_categories()
        };
        let cat = tax
            .iter()
            .find(|t| Some(&t.category) == p.category.as_ref())
            .unwrap_or_else(|| panic!("{p:?}: category not in taxonomy"));
        assert!(
            p.subcategory.iter().all(|s| cat.subcategories.contains(s)),
            "{p:?}"
        );
    }
}

fn load_err(tax: &str, normalization: &str, life: &str) -> String {
    match Catalog::from_yaml(tax, normalization, life) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
fn assert_life_err(replace: &str, with: &str, expected: &str) {
    assert!(
        LIFECYCLE.contains(replace),
        "test fixture: `{replace}` not in lifecycle.yaml"
    );
    let msg = load_err(
        TAXONOMY,
        NORMALIZATION,
        &LIFECYCLE.replacen(replace, with, 1),
    );
    assert!(
        msg.contains(expected),
        "got `{msg}`, expected it to contain `{expected}`"
    );
}

#[track_caller]
fn assert_norm_err(replace: &str, with: &str, expected: &str) {
    assert!(
        NORMALIZATION.contains(replace),
        "test fixture: `{replace}` not in normalization.yaml"
    );
    let msg = load_err(
        TAXONOMY,
        &NORMALIZATION.replacen(replace, with, 1),
        LIFECYCLE,
    );
    assert!(
        msg.contains(expected),
        "got `{msg}`, expected it to contain `{expected}`"
    );
}

#[test]
fn bad_lifecycle_documents_are_rejected_with_file_and_entry() {
    assert_life_err(
        r#"{ cycle: "12", gaDate: 2023-06-10,"#,
        r#"{ cycle: "12", gaDate: 2027-01-01,"#,
        "lifecycle.yaml: product `debian` cycle `12`: eolDate 2026-07-12 is before gaDate 2027-01-01",
    );
    assert_life_err(
        "eoServiceDate: 2028-06-30,",
        "eoServiceDate: 2026-01-10,",
        "lifecycle.yaml: product `debian` cycle `12`: eoServiceDate 2026-01-10 is before eolDate 2026-07-12",
    );
    assert_life_err(
        "gaDate: 2023-06-10",
        "gaDate: 2023-13-10",
        "lifecycle.yaml: product `debian` cycle `12`: gaDate `2023-13-10` is not a date",
    );
    assert_life_err(
        r#"{ cycle: "11","#,
        r#"{ cycle: "10","#,
        "lifecycle.yaml: product `debian` cycle `10`: duplicate cycle",
    );
    assert_life_err(
        "estimated: [eolDate, eoServiceDate] }",
        "estimated: [eolDate, endDate] }",
        "lifecycle.yaml: product `debian` cycle `13`: estimated `endDate` is not one of",
    );
    assert_life_err(
        "  - id: ubuntu\n",
        "  - id: debian\n",
        "lifecycle.yaml: product `debian`: duplicate product",
    );
    assert_life_err(
        "      - https://wiki.debian.org/DebianReleases\n      - https://wiki.debian.org/LTS\n      - https://endoflife.date/debian\n",
        "      - see the wiki\n",
        "lifecycle.yaml: product `debian`: `source` must list",
    );
    assert_life_err(
        "version: \"2026.12.07\"",
        "version: \"2026.01.01\"",
        "lifecycle.yaml: version: `2026.01.01` differs",
    );
    assert_life_err(
        "    retrieved: 2026-12-07\n",
        "    retrieved: yesterday\n",
        "lifecycle.yaml: product `debian`: retrieved `yesterday`",
    );
    // Every date says where it comes from.
    assert_life_err(
        "      eoServiceDate: \"https://wiki.debian.org/LTS\"\n",
        "",
        "lifecycle.yaml: product `debian` cycle `10`: eoServiceDate has no source",
    );
    assert_life_err(
        "      eoServiceDate: \"https://wiki.debian.org/LTS\"\n",
        "      eoServiceDate: \"wiki.debian.org/LTS\"\n",
        "lifecycle.yaml: product `debian`: sources `eoServiceDate`: `wiki.debian.org/LTS` is not an https:// URL",
    );
    assert_life_err(
        "sources: { eolDate: \"https://www.debian.org/News/2026/20260712\" }",
        "sources: { endDate: \"https://www.debian.org/News/2026/20260712\" }",
        "lifecycle.yaml: product `debian` cycle `12`: sources `endDate` is not one of",
    );
    let msg = load_err(TAXONOMY, NORMALIZATION, "version: x\nproducts: {}\n");
    assert!(msg.starts_with("lifecycle.yaml: invalid document"), "{msg}");
}

#[test]
fn bad_normalization_documents_are_rejected_with_file_and_entry() {
    assert_norm_err(
        "    category: Virtualized\n    subcategory: Cloud\n",
        "    category: Gadgets\n    subcategory: Cloud\n",
        "normalization.yaml: hardware rule `aws-firecracker`: category `Gadgets` is not in taxonomy.yaml",
    );
    assert_norm_err(
        "    category: Virtualized\n    subcategory: Cloud\n",
        "    category: Virtualized\n    subcategory: Mainframe\n",
        "normalization.yaml: hardware rule `aws-firecracker`: subcategory `Virtualized/Mainframe` is not in taxonomy.yaml",
    );
    assert_norm_err(
        "    lifecycle: debian\n",
        "    lifecycle: debain\n",
        "normalization.yaml: operatingSystems rule `debian`: lifecycle `debain` is not a product in lifecycle.yaml",
    );
    assert_norm_err(
        r#"aliases: ["Dell Inc.","#,
        r#"aliases: ["Cisco Systems", "Dell Inc.","#,
        "normalization.yaml: vendor `Cisco`: alias `Cisco Systems` is already an alias of vendor `Dell`",
    );
    assert_norm_err(
        "ids: [ubuntu]",
        "ids: [debian]",
        "normalization.yaml: operatingSystems rule `ubuntu`: os-release ID `debian` is already used by rule `debian`",
    );
    assert_norm_err(
        "names: [containerd, containerd.io]",
        "names: [containerd, kubelet]",
        "normalization.yaml: software rule `containerd`: name `kubelet` is already used by rule `kubernetes-node`",
    );
    assert_norm_err(
        "  - id: gce\n",
        "  - id: aws-ec2\n",
        "normalization.yaml: hardware rule `aws-ec2`: duplicate rule id",
    );
    assert_norm_err(
        "{ hypervisor: \"Firecracker\" }",
        "{ hypervisr: \"Firecracker\" }",
        "normalization.yaml: hardware rule `aws-firecracker`: unknown fact `hypervisr`",
    );
    assert_norm_err(
        "{ hypervisor: \"Firecracker\" }",
        "{ hypervisor: \"Fire*cracker\" }",
        "normalization.yaml: hardware rule `aws-firecracker`: invalid pattern `Fire*cracker`",
    );
    let msg = load_err(
        TAXONOMY,
        &NORMALIZATION.replacen("junk:", "jnuk:", 1),
        LIFECYCLE,
    );
    assert!(
        msg.starts_with("normalization.yaml: invalid document") && msg.contains("jnuk"),
        "{msg}"
    );
}

#[test]
fn bad_taxonomy_is_rejected() {
    let t = TAXONOMY.replacen("[Server, Desktop, Laptop]", "[Server, Desktop, Server]", 1);
    let msg = load_err(&t, NORMALIZATION, LIFECYCLE);
    assert_eq!(
        msg,
        "taxonomy.yaml: hardware category `Computers`: duplicate subcategory `Server`"
    );
}

// ---- normalization: os-release -------------------------------------------

const DEBIAN_12: &str = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"#;

const DEBIAN_11: &str = r#"PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"
NAME="Debian GNU/Linux"
VERSION_ID="11"
VERSION="11 (bullseye)"
VERSION_CODENAME=bullseye
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"#;

const UBUNTU_22_04: &str = r#"PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=jammy
"#;

const UBUNTU_24_04: &str = r#"PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.1 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=noble
LOGO=ubuntu-logo
"#;

const ALPINE_3_19: &str = r#"NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.19.1
PRETTY_NAME="Alpine Linux v3.19"
HOME_URL="https://alpinelinux.org/"
BUG_REPORT_URL="https://gitlab.alpinelinux.org/alpine/aports/-/issues"
"#;

const ALPINE_3_20: &str = r#"NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.20.3
PRETTY_NAME="Alpine Linux v3.20"
HOME_URL="https://alpinelinux.org/"
BUG_REPORT_URL="https://gitlab.alpinelinux.org/alpine/aports/-/issues"
"#;

const RHEL_9: &str = r#"NAME="Red Hat Enterprise Linux"
VERSION="9.4 (Plow)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="9.4"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Red Hat Enterprise Linux 9.4 (Plow)"
ANSI_COLOR="0;31"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:redhat:enterprise_linux:9::baseos"
HOME_URL="https://www.redhat.com/"
DOCUMENTATION_URL="https://access.redhat.com/documentation/en-us/red_hat_enterprise_linux/9"
BUG_REPORT_URL="https://issues.redhat.com/"

REDHAT_BUGZILLA_PRODUCT="Red Hat Enterprise Linux 9"
REDHAT_BUGZILLA_PRODUCT_VERSION=9.4
REDHAT_SUPPORT_PRODUCT="Red Hat Enterprise Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="9.4"
"#;

const ROCKY_9: &str = r#"NAME="Rocky Linux"
VERSION="9.3 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.3"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"
ANSI_COLOR="0;32"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:rocky:rocky:9::baseos"
HOME_URL="https://rockylinux.org/"
BUG_REPORT_URL="https://bugs.rockylinux.org/"
SUPPORT_END="2032-05-31"
ROCKY_SUPPORT_PRODUCT="Rocky-Linux-9"
ROCKY_SUPPORT_PRODUCT_VERSION="9.3"
REDHAT_SUPPORT_PRODUCT="Rocky Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="9.3"
"#;

const ALMA_8: &str = r#"NAME="AlmaLinux"
VERSION="8.9 (Midnight Oncilla)"
ID="almalinux"
ID_LIKE="rhel centos fedora"
VERSION_ID="8.9"
PLATFORM_ID="platform:el8"
PRETTY_NAME="AlmaLinux 8.9 (Midnight Oncilla)"
ANSI_COLOR="0;34"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:almalinux:almalinux:8::baseos"
HOME_URL="https://almalinux.org/"
DOCUMENTATION_URL="https://wiki.almalinux.org/"
BUG_REPORT_URL="https://bugs.almalinux.org/"

ALMALINUX_MANTISBT_PROJECT="AlmaLinux-8"
ALMALINUX_MANTISBT_PROJECT_VERSION="8.9"
REDHAT_SUPPORT_PRODUCT="AlmaLinux"
REDHAT_SUPPORT_PRODUCT_VERSION="8.9"
SUPPORT_END=2029-06-01
"#;

const AMAZON_2023: &str = r#"NAME="Amazon Linux"
VERSION="2023"
ID="amzn"
ID_LIKE="fedora"
VERSION_ID="2023"
PLATFORM_ID="platform:al2023"
PRETTY_NAME="Amazon Linux 2023.5.20240805"
ANSI_COLOR="0;33"
CPE_NAME="cpe:2.3:o:amazon:amazon_linux:2023"
HOME_URL="https://aws.amazon.com/linux/amazon-linux-2023/"
DOCUMENTATION_URL="https://docs.aws.amazon.com/linux/"
SUPPORT_URL="https://aws.amazon.com/premiumsupport/"
BUG_REPORT_URL="https://github.com/amazonlinux/amazon-linux-2023"
VENDOR_NAME="AWS"
VENDOR_URL="https://aws.amazon.com/"
SUPPORT_END="2028-03-15"
"#;

const FEDORA_40: &str = r#"NAME="Fedora Linux"
VERSION="40 (Container Image)"
ID=fedora
VERSION_ID=40
VERSION_CODENAME=""
PLATFORM_ID="platform:f40"
PRETTY_NAME="Fedora Linux 40 (Container Image)"
ANSI_COLOR="0;38;2;60;110;180"
LOGO=fedora-logo-icon
CPE_NAME="cpe:/o:fedoraproject:fedora:40"
DEFAULT_HOSTNAME="fedora"
HOME_URL="https://fedoraproject.org/"
DOCUMENTATION_URL="https://docs.fedoraproject.org/en-US/fedora/f40/system-administrators-guide/"
SUPPORT_URL="https://ask.fedoraproject.org/"
BUG_REPORT_URL="https://bugzilla.redhat.com/"
REDHAT_BUGZILLA_PRODUCT="Fedora"
REDHAT_BUGZILLA_PRODUCT_VERSION=40
REDHAT_SUPPORT_PRODUCT="Fedora"
REDHAT_SUPPORT_PRODUCT_VERSION=40
SUPPORT_END=2025-05-13
VARIANT="Container Image"
VARIANT_ID=container
"#;

/// gcr.io/distroless/base-debian12
const DISTROLESS_DEBIAN_12: &str = r#"PRETTY_NAME="Distroless"
NAME="Debian GNU/Linux"
ID="debian"
VERSION_ID="12"
VERSION="Debian GNU/Linux 12 (bookworm)"
HOME_URL="https://github.com/GoogleContainerTools/distroless"
SUPPORT_URL="https://github.com/GoogleContainerTools/distroless/blob/master/README.md"
BUG_REPORT_URL="https://github.com/GoogleContainerTools/distroless/issues/new"
"#;

#[test]
fn os_release_of_real_images() {
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        LifecycleStage,
    );
    use LifecycleStage::*;
    let table: [(&str, Row); 12] = [
        (
            DEBIAN_12,
            ("Debian", "Debian Linux", "12", "2026-07-12", EndOfLife),
        ),
        (
            DEBIAN_11,
            ("Debian", "Debian Linux", "11", "2024-08-14", EndOfService),
        ),
        (
            UBUNTU_22_04,
            (
                "Canonical",
                "Ubuntu",
                "22.04.4",
                "2027-04-01",
                GeneralAvailability,
            ),
        ),
        (
            UBUNTU_24_04,
            (
                "Canonical",
                "Ubuntu",
                "24.04.1",
                "2029-05-31",
                GeneralAvailability,
            ),
        ),
        (
            ALPINE_3_19,
            ("Alpine Linux", "Alpine Linux", "3.19.1", "", EndOfService),
        ),
        (
            ALPINE_3_20,
            ("Alpine Linux", "Alpine Linux", "3.20.3", "", EndOfService),
        ),
        (
            RHEL_9,
            (
                "Red Hat",
                "Red Hat Enterprise Linux",
                "9.4",
                "2027-05-31",
                GeneralAvailability,
            ),
        ),
        (
            ROCKY_9,
            (
                "Rocky Enterprise Software Foundation",
                "Rocky Linux",
                "9.3",
                "2027-05-31",
                GeneralAvailability,
            ),
        ),
        (
            ALMA_8,
            (
                "AlmaLinux OS Foundation",
                "AlmaLinux",
                "8.9",
                "2024-05-31",
                EndOfLife,
            ),
        ),
        (
            AMAZON_2023,
            (
                "Amazon Web Services",
                "Amazon Linux",
                "2023",
                "2027-06-30",
                GeneralAvailability,
            ),
        ),
        (
            FEDORA_40,
            ("Fedora Project", "Fedora Linux", "40", "", Unknown),
        ),
        (
            DISTROLESS_DEBIAN_12,
            ("Debian", "Debian Linux", "12", "2026-07-12", EndOfLife),
        ),
    ];
    for (text, (vendor, product, version, eol, want)) in table {
        let n = norm(
            Some(AssetKind::ContainerImage),
            json!({"osRelease": parse_os_release(text)}),
        );
        let os = n.os.expect("os");
        assert_product(
            &os,
            Some(vendor),
            Some(product),
            Some(version),
            Some("Operating System"),
            Some("Linux"),
        );
        assert_eq!(stage(&os), want, "{product} {version}");
        let l = os.lifecycle.expect("lifecycle");
        assert_eq!(
            l.eol_date.as_deref().unwrap_or(""),
            eol,
            "{product} {version}"
        );
        assert!(n.hardware.is_none(), "container images have no hardware");
    }
}

#[test]
fn os_release_parser_handles_quotes_comments_and_blank_lines() {
    let m = parse_os_release(
        "# comment\n\nNAME='Foo OS'\nID=foo\nVERSION_CODENAME=\"\"\nBROKEN LINE\n",
    );
    assert_eq!(m.get("NAME"), Some(&json!("Foo OS")));
    assert_eq!(m.get("ID"), Some(&json!("foo")));
    assert_eq!(m.get("VERSION_CODENAME"), Some(&json!("")));
    assert_eq!(m.len(), 3);
}

#[test]
fn unknown_os_release_id_uses_id_like_for_the_family_only() {
    let n = norm(
        Some(AssetKind::Host),
        json!({"osRelease": {"ID": "linuxmint", "ID_LIKE": "ubuntu debian", "NAME": "Linux Mint", "VERSION_ID": "21.3"}}),
    );
    let os = n.os.expect("os");
    assert_product(
        &os,
        None,
        Some("Linux Mint"),
        Some("21.3"),
        Some("Operating System"),
        Some("Linux"),
    );
    assert_eq!(
        stage(&os),
        LifecycleStage::Unknown,
        "Ubuntu's lifecycle must not apply"
    );
}

// ---- normalization: osImage -----------------------------------------------

#[test]
fn os_images() {
    use LifecycleStage::*;
    let table = [
        (
            "Debian GNU/Linux 12 (bookworm)",
            "Debian",
            "Debian Linux",
            Some("12"),
            "Linux",
            EndOfLife,
        ),
        (
            "Debian GNU/Linux 11 (bullseye)",
            "Debian",
            "Debian Linux",
            Some("11"),
            "Linux",
            EndOfService,
        ),
        (
            "Ubuntu 22.04.4 LTS",
            "Canonical",
            "Ubuntu",
            Some("22.04.4"),
            "Linux",
            GeneralAvailability,
        ),
        (
            "Ubuntu 20.04.6 LTS",
            "Canonical",
            "Ubuntu",
            Some("20.04.6"),
            "Linux",
            EndOfLife,
        ),
        (
            "Windows Server 2019 Datacenter",
            "Microsoft",
            "Windows Server",
            Some("2019"),
            "Windows",
            EndOfLife,
        ),
        (
            "Windows Server 2025 Datacenter",
            "Microsoft",
            "Windows Server",
            Some("2025"),
            "Windows",
            GeneralAvailability,
        ),
        (
            "Amazon Linux 2023.5.20240805",
            "Amazon Web Services",
            "Amazon Linux",
            Some("2023.5.20240805"),
            "Linux",
            GeneralAvailability,
        ),
        (
            "Amazon Linux 2",
            "Amazon Web Services",
            "Amazon Linux",
            Some("2"),
            "Linux",
            EndOfService,
        ),
        (
            "Red Hat Enterprise Linux 9.4 (Plow)",
            "Red Hat",
            "Red Hat Enterprise Linux",
            Some("9.4"),
            "Linux",
            GeneralAvailability,
        ),
        (
            "Red Hat Enterprise Linux CoreOS 415.92.202402201450-0 (Plow)",
            "Red Hat",
            "Red Hat Enterprise Linux CoreOS",
            Some("415.92.202402201450"),
            "Linux",
            Unknown,
        ),
        (
            "Rocky Linux 8.9 (Green Obsidian)",
            "Rocky Enterprise Software Foundation",
            "Rocky Linux",
            Some("8.9"),
            "Linux",
            EndOfLife,
        ),
        (
            "AlmaLinux 9.4 (Seafoam Ocelot)",
            "AlmaLinux OS Foundation",
            "AlmaLinux",
            Some("9.4"),
            "Linux",
            GeneralAvailability,
        ),
        (
            "Oracle Linux Server 8.9",
            "Oracle",
            "Oracle Linux",
            Some("8.9"),
            "Linux",
            GeneralAvailability,
        ),
        (
            "CentOS Linux 7 (Core)",
            "CentOS Project",
            "CentOS Linux",
            Some("7"),
            "Linux",
            EndOfService,
        ),
        (
            "CentOS Stream 9",
            "CentOS Project",
            "CentOS Stream",
            Some("9"),
            "Linux",
            GeneralAvailability,
        ),
        (
            "Alpine Linux v3.21",
            "Alpine Linux",
            "Alpine Linux",
            Some("3.21"),
            "Linux",
            EndOfService,
        ),
        (
            "Fedora Linux 40 (Server Edition)",
            "Fedora Project",
            "Fedora Linux",
            Some("40"),
            "Linux",
            Unknown,
        ),
        (
            "SUSE Linux Enterprise Server 15 SP5",
            "SUSE",
            "SUSE Linux Enterprise Server",
            Some("15"),
            "Linux",
            Unknown,
        ),
        (
            "openSUSE Leap 15.5",
            "SUSE",
            "openSUSE",
            Some("15.5"),
            "Linux",
            Unknown,
        ),
        (
            "Bottlerocket OS 1.20.3 (aws-k8s-1.29)",
            "Amazon Web Services",
            "Bottlerocket",
            Some("1.20.3"),
            "Linux",
            Unknown,
        ),
        (
            "Flatcar Container Linux by Kinvolk 3815.2.0 (Oklo)",
            "Flatcar Project",
            "Flatcar Container Linux",
            Some("3815.2.0"),
            "Linux",
            Unknown,
        ),
        (
            "Talos (v1.7.5)",
            "Sidero Labs",
            "Talos Linux",
            Some("1.7.5"),
            "Linux",
            Unknown,
        ),
        (
            "Container-Optimized OS from Google",
            "Google",
            "Container-Optimized OS",
            None,
            "Linux",
            Unknown,
        ),
    ];
    for (image, vendor, product, version, sub, want) in table {
        let n = norm(
            Some(AssetKind::Node),
            json!({"osImage": image, "operatingSystem": "linux"}),
        );
        let os = n.os.expect("os");
        assert_product(
            &os,
            Some(vendor),
            Some(product),
            version,
            Some("Operating System"),
            Some(sub),
        );
        assert_eq!(stage(&os), want, "{image}");
    }
}

#[test]
fn os_release_wins_over_os_image() {
    let n = norm(
        Some(AssetKind::Node),
        json!({"osRelease": parse_os_release(DEBIAN_12), "osImage": "Ubuntu 22.04.4 LTS"}),
    );
    assert_eq!(
        n.os.and_then(|o| o.product).as_deref(),
        Some("Debian Linux")
    );
}

// ---- normalization: hardware ----------------------------------------------

#[test]
fn dmi_vendor_strings() {
    let table: [(Value, &str, &str, &str, &str); 10] = [
        (
            json!({"sysVendor": "QEMU", "productName": "Standard PC (Q35 + ICH9, 2009)"}),
            "QEMU",
            "QEMU/KVM Virtual Machine",
            "Virtualized",
            "Virtual Machine",
        ),
        (
            json!({"sysVendor": "innotek GmbH", "productName": "VirtualBox"}),
            "Oracle",
            "VirtualBox",
            "Virtualized",
            "Virtual Machine",
        ),
        (
            json!({"sysVendor": "VMware, Inc.", "productName": "VMware Virtual Platform"}),
            "VMware",
            "VMware Virtual Platform",
            "Virtualized",
            "Virtual Machine",
        ),
        (
            json!({"sysVendor": "Microsoft Corporation", "productName": "Virtual Machine"}),
            "Microsoft",
            "Hyper-V Virtual Machine",
            "Virtualized",
            "Virtual Machine",
        ),
        (
            json!({"sysVendor": "Dell Inc.", "productName": "PowerEdge R750"}),
            "Dell",
            "PowerEdge R750",
            "Computers",
            "Server",
        ),
        (
            json!({"sysVendor": "HPE", "productName": "ProLiant DL380 Gen10"}),
            "HPE",
            "ProLiant DL380 Gen10",
            "Computers",
            "Server",
        ),
        (
            json!({"sysVendor": "Lenovo", "productName": "ThinkSystem SR650"}),
            "Lenovo",
            "ThinkSystem SR650",
            "Computers",
            "Server",
        ),
        (
            json!({"sysVendor": "Supermicro", "productName": "Super Server"}),
            "Supermicro",
            "Super Server",
            "Computers",
            "Server",
        ),
        (
            json!({"sysVendor": "Dell Inc.", "productName": "Latitude 7440"}),
            "Dell",
            "Latitude 7440",
            "Computers",
            "Laptop",
        ),
        (
            json!({"sysVendor": "LENOVO", "productName": "ThinkCentre M70q"}),
            "Lenovo",
            "ThinkCentre M70q",
            "Computers",
            "Desktop",
        ),
    ];
    for (dmi, vendor, product, category, sub) in table {
        let n = norm(Some(AssetKind::Host), json!({"dmi": dmi}));
        let hw = n.hardware.expect("hardware");
        assert_product(
            &hw,
            Some(vendor),
            Some(product),
            None,
            Some(category),
            Some(sub),
        );
        assert_eq!(
            stage(&hw),
            LifecycleStage::Unknown,
            "no hardware lifecycle in the catalog: {product}"
        );
    }
}

#[test]
fn cloud_and_hypervisor_strings() {
    let table: [(Value, &str, &str, &str); 9] = [
        (
            json!({"dmi": {"sysVendor": "Amazon EC2", "productName": "m5.large", "biosVendor": "Amazon EC2"}}),
            "Amazon Web Services",
            "Amazon EC2",
            "Cloud",
        ),
        (
            json!({"dmi": {"sysVendor": "Xen", "productName": "HVM domU"}, "hypervisor": "Xen", "cloudProvider": "aws"}),
            "Amazon Web Services",
            "Amazon EC2",
            "Cloud",
        ),
        (
            json!({"dmi": {"sysVendor": "Google", "productName": "Google Compute Engine"}, "hypervisor": "KVM"}),
            "Google",
            "Google Compute Engine",
            "Cloud",
        ),
        (
            json!({"hypervisor": "KVM", "cloudProvider": "gce"}),
            "Google",
            "Google Compute Engine",
            "Cloud",
        ),
        (
            json!({"dmi": {"sysVendor": "Microsoft Corporation", "productName": "Virtual Machine"}, "hypervisor": "Microsoft Hyper-V", "cloudProvider": "azure"}),
            "Microsoft",
            "Azure Virtual Machines",
            "Cloud",
        ),
        (
            json!({"dmi": {"sysVendor": "Firecracker"}, "hypervisor": "KVM"}),
            "Amazon Web Services",
            "Firecracker microVM",
            "Cloud",
        ),
        (
            json!({"hypervisor": "Firecracker"}),
            "Amazon Web Services",
            "Firecracker microVM",
            "Cloud",
        ),
        (
            json!({"hypervisor": "KVM", "cloudProvider": "kind"}),
            "QEMU",
            "QEMU/KVM Virtual Machine",
            "Virtual Machine",
        ),
        (
            json!({"hypervisor": "Microsoft Hyper-V"}),
            "Microsoft",
            "Hyper-V Virtual Machine",
            "Virtual Machine",
        ),
    ];
    for (facts, vendor, product, sub) in table {
        let n = norm(Some(AssetKind::Node), facts);
        let hw = n.hardware.expect("hardware");
        assert_product(
            &hw,
            Some(vendor),
            Some(product),
            None,
            Some("Virtualized"),
            Some(sub),
        );
    }
}

/// device facts, vendor, model, category, subcategory.
type NetRow = (
    Value,
    &'static str,
    Option<&'static str>,
    &'static str,
    Option<&'static str>,
);

#[test]
fn network_vendor_strings() {
    let table: [NetRow; 10] = [
        (
            json!({"vendor": "Cisco Systems, Inc", "model": "Catalyst 9300", "type": "switch"}),
            "Cisco",
            Some("Catalyst 9300"),
            "Network Device",
            Some("Switch"),
        ),
        (
            json!({"vendor": "Cisco Systems, Inc.", "type": "router"}),
            "Cisco",
            None,
            "Network Device",
            Some("Router"),
        ),
        (
            json!({"vendor": "cisco"}),
            "Cisco",
            None,
            "Network Device",
            None,
        ),
        (
            json!({"vendor": "Juniper Networks", "model": "MX204", "type": "router"}),
            "Juniper Networks",
            Some("MX204"),
            "Network Device",
            Some("Router"),
        ),
        (
            json!({"vendor": "Arista Networks", "model": "7050X3", "type": "switch"}),
            "Arista Networks",
            Some("7050X3"),
            "Network Device",
            Some("Switch"),
        ),
        (
            json!({"vendor": "Hewlett Packard Enterprise", "type": "switch"}),
            "HPE",
            None,
            "Network Device",
            Some("Switch"),
        ),
        (
            json!({"vendor": "Ubiquiti Inc.", "model": "U6-Pro", "type": "access point"}),
            "Ubiquiti",
            Some("U6-Pro"),
            "Network Device",
            Some("Wireless Access Point"),
        ),
        (
            json!({"vendor": "Fortinet", "model": "FortiGate 60F"}),
            "Fortinet",
            Some("FortiGate 60F"),
            "Network Device",
            Some("Firewall"),
        ),
        (
            json!({"vendor": "Palo Alto Networks", "type": "switch"}),
            "Palo Alto Networks",
            None,
            "Network Device",
            Some("Firewall"),
        ),
        (
            json!({"vendor": "HP Inc.", "model": "LaserJet Pro M404", "type": "printer"}),
            "HP",
            Some("LaserJet Pro M404"),
            "Printer",
            Some("Printer"),
        ),
    ];
    for (device, vendor, model, category, sub) in table {
        let n = norm(Some(AssetKind::NetworkDevice), json!({"device": device}));
        let hw = n.hardware.expect("hardware");
        assert_product(&hw, Some(vendor), model, None, Some(category), sub);
        assert_eq!(stage(&hw), LifecycleStage::Unknown, "{vendor}");
        assert!(n.os.is_none(), "network devices get no OS placeholder");
    }
    let cam = norm(
        Some(AssetKind::NetworkDevice),
        json!({"device": {"vendor": "Hikvision", "type": "camera"}}),
    );
    assert_product(
        &cam.hardware.expect("hw"),
        Some("Hikvision"),
        None,
        None,
        Some("IoT"),
        Some("Camera"),
    );
}

// ---- normalization: software ------------------------------------------------

#[test]
fn software_names_and_versions() {
    let n = norm(
        Some(AssetKind::Node),
        json!({"software": [
            {"name": "kubelet", "version": "v1.34.4"},
            {"name": "kube-apiserver", "version": "v1.33.2"},
            {"name": "containerd", "version": "1.6.20"},
            {"name": "nginx", "version": "1.24.0"},
            {"name": "openjdk", "version": "17.0.9"},
            {"name": "python3", "version": "3.11.2"},
            {"name": "nodejs", "version": "18.19.0"},
            {"name": "golang", "version": "go1.22.1"},
            {"name": "postgresql", "version": "15.5"},
            {"name": "dotnet-runtime", "version": "8.0.1"},
            {"name": "docker-ce", "version": "5:24.0.7-1~ubuntu.22.04~jammy"},
            {"name": "httpd", "version": "2.4.62"},
        ]}),
    );
    use LifecycleStage::*;
    let want: [(&str, &str, &str, &str, &str, LifecycleStage); 12] = [
        (
            "Kubernetes",
            "Kubernetes",
            "1.34.4",
            "Kubernetes",
            "Node Agent",
            EndOfService,
        ),
        (
            "Kubernetes",
            "Kubernetes",
            "1.33.2",
            "Kubernetes",
            "Control Plane",
            EndOfService,
        ),
        (
            "CNCF",
            "containerd",
            "1.6.20",
            "Container Runtime",
            "Container Runtime",
            Unknown,
        ),
        (
            "F5",
            "nginx",
            "1.24.0",
            "Web Server",
            "HTTP Server",
            EndOfService,
        ),
        (
            "OpenJDK",
            "Java",
            "17.0.9",
            "Runtime",
            "Language",
            GeneralAvailability,
        ),
        (
            "Python Software Foundation",
            "Python",
            "3.11.2",
            "Runtime",
            "Language",
            EndOfLife,
        ),
        (
            "OpenJS Foundation",
            "Node.js",
            "18.19.0",
            "Runtime",
            "Language",
            EndOfService,
        ),
        (
            "Google",
            "Go",
            "1.22.1",
            "Runtime",
            "Language",
            EndOfService,
        ),
        (
            "PostgreSQL Global Development Group",
            "PostgreSQL",
            "15.5",
            "Database",
            "Relational",
            GeneralAvailability,
        ),
        (
            "Microsoft",
            ".NET",
            "8.0.1",
            "Runtime",
            "Language",
            EndOfService,
        ),
        (
            "Docker",
            "Docker Engine",
            "24.0.7",
            "Container Runtime",
            "Container Runtime",
            Unknown,
        ),
        (
            "Apache Software Foundation",
            "Apache HTTP Server",
            "2.4.62",
            "Web Server",
            "HTTP Server",
            Unknown,
        ),
    ];
    assert_eq!(n.software.len(), want.len());
    for (p, (vendor, product, version, category, sub, st)) in n.software.iter().zip(want) {
        assert_product(
            p,
            Some(vendor),
            Some(product),
            Some(version),
            Some(category),
            Some(sub),
        );
        assert_eq!(stage(p), st, "{product} {version}");
    }
}

#[test]
fn versions_are_normalized_to_upstream() {
    for (raw, want) in [
        ("v1.34.4", Some("1.34.4")),
        ("go1.22.1", Some("1.22.1")),
        ("1:1.6.20-0ubuntu1~22.04.1", Some("1.6.20")),
        ("17.0.9+9", Some("17.0.9")),
        (" 15.5 ", Some("15.5")),
        ("gopher", Some("gopher")),
        ("", None),
        ("v", Some("v")),
    ] {
        assert_eq!(normalize_version(raw).as_deref(), want, "{raw:?}");
    }
}

// ---- lifecycle stages on fixed dates ----------------------------------------

fn os_stage(image: &str, today: Date) -> (LifecycleStage, Product) {
    let n = cat().normalize(
        Some(AssetKind::Node),
        &obs(json!({"osImage": image})),
        today,
    );
    let os = n.os.expect("os");
    (stage(&os), os)
}

fn sw_stage(name: &str, version: &str, today: Date) -> LifecycleStage {
    let n = cat().normalize(
        None,
        &obs(json!({"software": [{"name": name, "version": version}]})),
        today,
    );
    stage(&n.software[0])
}

#[test]
fn lifecycle_stages_on_fixed_dates() {
    use LifecycleStage::*;
    assert_eq!(
        os_stage("Debian GNU/Linux 11 (bullseye)", TODAY).0,
        EndOfService
    );
    assert_eq!(
        os_stage("Debian GNU/Linux 12 (bookworm)", TODAY).0,
        EndOfLife
    );
    assert_eq!(
        os_stage("Debian GNU/Linux 12 (bookworm)", date(2026, 7, 11)).0,
        GeneralAvailability
    );
    assert_eq!(
        os_stage("Debian GNU/Linux 12 (bookworm)", date(2026, 7, 12)).0,
        EndOfLife
    );
    assert_eq!(
        os_stage("Debian GNU/Linux 12 (bookworm)", date(2028, 6, 29)).0,
        EndOfLife
    );
    assert_eq!(
        os_stage("Debian GNU/Linux 12 (bookworm)", date(2028, 6, 30)).0,
        EndOfService
    );
    assert_eq!(
        os_stage("Ubuntu 24.10", TODAY).0,
        EndOfService,
        "interim release"
    );
    assert_eq!(
        os_stage("Ubuntu 20.04.6 LTS", TODAY).0,
        EndOfLife,
        "standard support over, ESM continues"
    );
    assert_eq!(
        os_stage("Windows Server 2022 Datacenter", TODAY).0,
        EndOfLife,
        "mainstream support ended 2026-10-13"
    );
    assert_eq!(
        os_stage("Windows Server 2016 Datacenter", date(2027, 1, 12)).0,
        EndOfService
    );
    assert_eq!(
        os_stage("Red Hat Enterprise Linux 8.10 (Ootpa)", TODAY).0,
        EndOfLife
    );
    assert_eq!(
        os_stage("Amazon Linux 2", date(2026, 6, 29)).0,
        GeneralAvailability
    );

    // Kubernetes 1.34: GA until maintenance mode (2026-08-27), EOL 2026-10-27.
    assert_eq!(
        sw_stage("kubelet", "v1.34.4", date(2026, 3, 1)),
        GeneralAvailability
    );
    assert_eq!(sw_stage("kubelet", "v1.34.4", date(2026, 9, 1)), EndOfLife);
    assert_eq!(sw_stage("kubelet", "v1.34.4", TODAY), EndOfService);
    assert_eq!(sw_stage("kubelet", "v1.35.0", TODAY), GeneralAvailability);
    assert_eq!(
        sw_stage("nodejs", "22.11.0", TODAY),
        EndOfLife,
        "maintenance LTS"
    );
    assert_eq!(
        sw_stage("nodejs", "24.1.0", date(2026, 1, 1)),
        GeneralAvailability
    );
    assert_eq!(
        sw_stage("dotnet", "8.0.1", date(2026, 11, 9)),
        GeneralAvailability
    );
    assert_eq!(
        sw_stage("dotnet", "8.0.1", date(2026, 11, 10)),
        EndOfService
    );
    assert_eq!(sw_stage("postgresql", "14.13", TODAY), EndOfService);
    assert_eq!(sw_stage("golang", "go1.26.1", TODAY), GeneralAvailability);
    assert_eq!(sw_stage("nginx", "1.30.2", TODAY), GeneralAvailability);
    assert_eq!(sw_stage("temurin", "21.0.5", TODAY), GeneralAvailability);
    // A build seen before its cycle's GA date is a pre-release: Unknown.
    assert_eq!(sw_stage("kubelet", "v1.36.0", date(2026, 4, 1)), Unknown);
}

#[test]
fn every_date_in_the_catalog_carries_its_source() {
    let c = cat();
    let mut dates = 0;
    for id in c.lifecycle_ids() {
        let p = c.lifecycle(id).expect("listed product");
        for cycle in &p.cycles {
            let present = [
                ("gaDate", cycle.ga),
                ("eosDate", cycle.eos),
                ("eolDate", cycle.eol),
                ("eoServiceDate", cycle.eo_service),
            ];
            for (kind, date) in present {
                let source = cycle.sources.get(kind);
                match date {
                    Some(_) => {
                        dates += 1;
                        assert!(
                            source.is_some_and(|u| u.starts_with("https://")),
                            "{id} {} {kind} has no source",
                            cycle.cycle
                        );
                    }
                    None => assert!(source.is_none(), "{id} {} {kind}", cycle.cycle),
                }
            }
        }
    }
    assert!(dates > 200, "only {dates} dates in the catalog");
    // A corrected date points at the page that corrected it.
    let debian12 = c
        .lifecycle("debian")
        .and_then(|p| p.cycles.iter().find(|c| c.cycle == "12"))
        .expect("Debian 12");
    assert_eq!(
        debian12.sources.get("eoServiceDate").map(String::as_str),
        Some("https://wiki.debian.org/LTS")
    );
}

#[test]
fn lifecycle_dates_and_estimates_are_reported() {
    let (st, os) = os_stage("Debian GNU/Linux 13 (trixie)", TODAY);
    assert_eq!(st, LifecycleStage::GeneralAvailability);
    let l = os.lifecycle.expect("lifecycle");
    assert_eq!(l.ga_date.as_deref(), Some("2025-08-09"));
    assert_eq!(l.eol_date.as_deref(), Some("2028-08-09"));
    assert_eq!(l.eo_service_date.as_deref(), Some("2030-06-30"));
    assert_eq!(l.eos_date, None);
    // Trixie was released on its date; its end dates are still the plan.
    assert_eq!(l.estimated, ["eolDate", "eoServiceDate"]);
    let (_, os) = os_stage("Debian GNU/Linux 12 (bookworm)", TODAY);
    assert!(os.lifecycle.expect("lifecycle").estimated.is_empty());
}

// ---- Unidentified vs Unknown -------------------------------------------------

#[test]
fn no_facts_gives_unidentified_for_kinds_that_have_them() {
    let empty = json!({});
    for kind in [AssetKind::Node, AssetKind::Host] {
        let n = norm(Some(kind), empty.clone());
        assert_eq!(
            stage(n.os.as_ref().expect("os")),
            LifecycleStage::Unidentified
        );
        let hw = n.hardware.expect("hardware");
        assert_eq!(stage(&hw), LifecycleStage::Unidentified);
        assert_product(&hw, None, None, None, None, None);
        assert!(n.software.is_empty());
    }
    let img = norm(Some(AssetKind::ContainerImage), empty.clone());
    assert_eq!(
        stage(img.os.as_ref().expect("os")),
        LifecycleStage::Unidentified
    );
    assert!(img.hardware.is_none());
    let dev = norm(Some(AssetKind::NetworkDevice), empty.clone());
    assert_eq!(
        stage(dev.hardware.as_ref().expect("hw")),
        LifecycleStage::Unidentified
    );
    assert!(dev.os.is_none());
    // A container is virtual hardware; its OS comes from its image's Asset.
    let container = norm(Some(AssetKind::Container), empty.clone());
    let hw = container.hardware.as_ref().expect("hw");
    assert_eq!(
        (
            hw.category.as_deref(),
            hw.subcategory.as_deref(),
            hw.lifecycle.as_ref()
        ),
        (Some("Virtualized"), Some("Container"), None)
    );
    assert!(container.os.is_none());
    for kind in [
        None,
        Some(AssetKind::CloudResource),
        Some(AssetKind::Certificate),
    ] {
        assert_eq!(norm(kind, empty.clone()), Normalized::default(), "{kind:?}");
    }
}

#[test]
fn unidentified_vs_unknown() {
    use LifecycleStage::*;
    let os = |facts: Value| norm(Some(AssetKind::Node), facts).os.expect("os");
    // Known product, no version: the catalog needs one to pick a cycle.
    let p = os(json!({"osRelease": {"ID": "ubuntu", "NAME": "Ubuntu"}}));
    assert_product(
        &p,
        Some("Canonical"),
        Some("Ubuntu"),
        None,
        Some("Operating System"),
        Some("Linux"),
    );
    assert_eq!(stage(&p), Unidentified);
    assert_eq!(
        stage(&os(json!({"osImage": "Windows Server Datacenter"}))),
        Unidentified
    );
    // Only the family.
    let p = os(json!({"operatingSystem": "linux", "kernelVersion": "6.1.0-18-amd64"}));
    assert_product(
        &p,
        None,
        None,
        None,
        Some("Operating System"),
        Some("Linux"),
    );
    assert_eq!(stage(&p), Unidentified);
    let p = os(json!({"operatingSystem": "windows"}));
    assert_product(
        &p,
        Some("Microsoft"),
        None,
        None,
        Some("Operating System"),
        Some("Windows"),
    );
    assert_eq!(stage(&p), Unidentified);
    // Identified, but nothing in the catalog.
    let p = os(json!({"osImage": "FooOS 3.1"}));
    assert_product(
        &p,
        None,
        Some("FooOS"),
        Some("3.1"),
        Some("Operating System"),
        None,
    );
    assert_eq!(stage(&p), Unknown);
    assert_eq!(
        stage(&os(json!({"osImage": "Debian GNU/Linux 99 (future)"}))),
        Unknown
    );
    assert_eq!(
        stage(&os(json!({"osRelease": parse_os_release(FEDORA_40)}))),
        Unknown
    );
    let p = os(
        json!({"osRelease": {"ID": "fooos", "NAME": "FooOS", "VERSION_ID": "3.1"}, "operatingSystem": "linux"}),
    );
    assert_product(
        &p,
        None,
        Some("FooOS"),
        Some("3.1"),
        Some("Operating System"),
        Some("Linux"),
    );
    assert_eq!(stage(&p), Unknown);
    // Hardware: a type hint alone is not enough to tell what it is.
    let hw = norm(
        Some(AssetKind::NetworkDevice),
        json!({"device": {"type": "switch"}}),
    )
    .hardware
    .expect("hw");
    assert_product(
        &hw,
        None,
        None,
        None,
        Some("Network Device"),
        Some("Switch"),
    );
    assert_eq!(stage(&hw), Unidentified);
    let hw = norm(
        Some(AssetKind::Host),
        json!({"dmi": {"sysVendor": "Acme Computers"}}),
    )
    .hardware
    .expect("hw");
    assert_product(&hw, Some("Acme Computers"), None, None, None, None);
    assert_eq!(stage(&hw), Unknown);
    // Software.
    let n = norm(
        None,
        json!({"software": [
            {"name": "kubelet"},
            {"name": "frobnicator", "version": "2.0", "vendor": "Cisco Systems, Inc."},
            {"name": "nginx", "version": "0.7.69"},
        ]}),
    );
    assert_eq!(stage(&n.software[0]), Unidentified);
    assert_product(
        &n.software[1],
        Some("Cisco"),
        Some("frobnicator"),
        Some("2.0"),
        None,
        None,
    );
    assert_eq!(stage(&n.software[1]), Unknown);
    assert_eq!(stage(&n.software[2]), Unknown);
}

// ---- malformed facts -----------------------------------------------------------

#[test]
fn malformed_facts_never_panic_and_count_as_absent() {
    let bad = [
        json!({"osRelease": "ID=debian", "osImage": 12, "operatingSystem": ["linux"], "dmi": "QEMU",
               "hypervisor": {"name": "KVM"}, "cloudProvider": null, "device": [1, 2], "software": {"name": "nginx"}}),
        json!({"osRelease": {"ID": 5, "VERSION_ID": true, "NAME": ""}, "osImage": "   ",
               "dmi": {"sysVendor": 1, "productName": null}, "device": {"vendor": "", "type": 7},
               "software": [1, "nginx", null, {"name": 3}, {"name": ""}, {"name": "nginx", "version": 1.24}]}),
        json!({"dmi": {"sysVendor": "To Be Filled By O.E.M.", "productName": "To Be Filled By O.E.M."},
               "osRelease": {}, "software": []}),
        json!({"osImage": "((()))", "osRelease": {"ID": "", "VERSION_ID": "...", "VERSION": "v"}}),
    ];
    for facts in bad {
        for kind in [
            None,
            Some(AssetKind::Node),
            Some(AssetKind::NetworkDevice),
            Some(AssetKind::Certificate),
        ] {
            let n = norm(kind, facts.clone());
            if let Some(hw) = &n.hardware {
                assert!(matches!(
                    stage(hw),
                    LifecycleStage::Unidentified | LifecycleStage::Unknown
                ));
            }
            for p in n.os.iter().chain(&n.software) {
                assert!(p.lifecycle.is_some());
            }
        }
    }
    // The junk DMI strings are placeholders, not a vendor.
    let n = norm(
        Some(AssetKind::Host),
        json!({"dmi": {"sysVendor": "To Be Filled By O.E.M.", "productName": "To Be Filled By O.E.M."}}),
    );
    assert_eq!(
        stage(n.hardware.as_ref().expect("hw")),
        LifecycleStage::Unidentified
    );
    // A numeric version is not a version; the name still identifies nginx.
    let n = norm(
        None,
        json!({"software": [{"name": "nginx", "version": 1.24}]}),
    );
    assert_eq!(n.software.len(), 1);
    assert_eq!(n.software[0].version, None);
    assert_eq!(stage(&n.software[0]), LifecycleStage::Unidentified);
}

#[test]
fn normalized_serializes_in_the_api_shape() {
    let n = norm(
        Some(AssetKind::Node),
        json!({"osImage": "Debian GNU/Linux 12 (bookworm)"}),
    );
    let v = serde_json::to_value(&n).expect("serializes");
    assert_eq!(v["os"]["lifecycle"]["stage"], "EndOfLife");
    assert_eq!(v["os"]["lifecycle"]["eoServiceDate"], "2028-06-30");
    assert_eq!(v["hardware"]["lifecycle"]["stage"], "Unidentified");
}

#[test]
fn error_type_is_std_error() {
    fn is_error<E: std::error::Error + Send + Sync + 'static>() {}
    is_error::<CatalogError>();
}
