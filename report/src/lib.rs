//! The ingestion contract: what sensors, the CLI's `--report` and agents
//! outside the cluster send to the operator (`POST /api/v1/observations`),
//! what it answers, and the bounds it enforces. Sensors, CLI and operator
//! all use these types, so no side builds JSON by hand.
//!
//! A report names *what was seen*, never *who saw it*: the operator takes
//! the reporter's Sensor, node and activation key from its credentials
//! (a ServiceAccount token bound to the sensor's pod, or a key's token),
//! so no report can speak for another node, Sensor or key.

#![cfg_attr(not(feature = "client"), allow(unused))]

pub mod details;
pub mod facts;

#[cfg(feature = "client")]
pub mod client;

use serde::{Deserialize, Serialize};
use serde_json::Value;
pub use sightline_crds::asset::{VulnerabilityFindings, VulnerabilityRef};

pub use facts::{ContainerFacts, ImageFacts, NodeFacts, Violation};

/// Where reports go, relative to the operator's API.
pub const INGEST_PATH: &str = "/api/v1/observations";
/// The audience of the ServiceAccount tokens sensors present.
pub const AUDIENCE: &str = "sightline";
/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most observations in one report (the client splits larger ones).
pub const MAX_OBSERVATIONS: usize = 200;
/// Most identities in a node's listing.
pub const MAX_LISTING: usize = 10_000;
/// Longest string anywhere in a report, in bytes.
pub const MAX_STRING: usize = 4096;
/// Most entries of any list or map inside an observation.
pub const MAX_LIST: usize = 256;
/// Deepest nesting inside an observation.
pub const MAX_DEPTH: usize = 8;
/// Most violations one policy report may add (a day of one per millisecond).
pub const MAX_VIOLATIONS: i64 = 86_400_000;

/// One request: observations, and for node sensors optionally the full
/// listing of what is on the node now.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Report {
    /// What was seen.
    #[serde(default)]
    pub observations: Vec<Observation>,
    /// Everything a node sensor sees on its node now: images it listed
    /// before and not here have left the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<Listing>,
    /// What a runtime sensor says of RuntimePolicies on its node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyReport>,
    /// Which vulnerability database the sensor matches with, and whether
    /// it refused the last one it was offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseState>,
}

/// The vulnerability database a sensor matches with.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseState {
    /// When the database in use was built (RFC 3339); none while the
    /// sensor has no database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built: Option<String>,
    /// The last database the sensor was offered and refused (a signature,
    /// key or schema that did not check out, or a file that is no
    /// database); none once it took a newer one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<DatabaseRefusal>,
}

/// Why a sensor refused a database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseRefusal {
    /// A short word (`bad_signature`, `unknown_key`, `schema`, `unsigned`, `invalid`, …).
    pub reason: String,
    /// The sensor's message.
    pub message: String,
}

/// A runtime sensor's word on one RuntimePolicy: how its node enforces
/// it, and the violations counted since its last report.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyReport {
    /// The policy, `<namespace>/<name>`.
    pub policy: String,
    /// This node's entry of the policy's `status.nodes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<PolicyNode>,
    /// Violations since the last report, added to `status.violations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violations: Option<PolicyViolations>,
}

/// How the reporting node enforces a policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyNode {
    /// The enforcer used; none when nothing is to be enforced here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcer: Option<sightline_crds::sensor::Enforcer>,
    /// Whether the policy is in force on the node.
    pub ready: bool,
    /// Why, in words (why other enforcers are unavailable).
    #[serde(default)]
    pub reason: String,
}

/// Violations counted since the last report.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyViolations {
    /// How many (at least one).
    pub count: i64,
    /// When the last one happened (RFC 3339).
    pub last: String,
}

/// The identities of everything one runtime holds on a node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listing {
    /// The runtime (`containerd`, `docker`), as the image observations name it.
    pub runtime: String,
    /// Image IDs (config digests).
    #[serde(default)]
    pub images: Vec<String>,
}

/// One thing seen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind")]
pub enum Observation {
    /// A container image.
    ContainerImage(ImageObservation),
    /// A container.
    Container(ContainerObservation),
    /// The reporting sensor's own node.
    Node(NodeObservation),
    /// Runtime policy violations in a container on the sensor's node.
    RuntimeViolations(ViolationObservation),
}

/// A container image, identified by its config digest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageObservation {
    /// The config digest (`sha256:` and 64 hex digits).
    pub identity: String,
    /// Its facts.
    pub facts: ImageFacts,
    /// Vulnerability counts and the worst findings, when matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerabilities: Option<VulnerabilityFindings>,
    /// For node sensors: the runtime holding it (`containerd`, `docker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// For CI reports: the reference scanned (`registry/app:1.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// A container, identified by its runtime ID.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerObservation {
    /// The container ID.
    pub identity: String,
    /// Its facts.
    pub facts: ContainerFacts,
}

/// The sensor's node, identified by the Node's UID.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeObservation {
    /// The Node's UID; it must be the node the sensor's token is bound to.
    pub identity: String,
    /// Its facts.
    pub facts: NodeFacts,
}

/// How many violations a runtime sensor has seen in a container, and the
/// last one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ViolationObservation {
    /// The container ID.
    pub identity: String,
    /// Violations this sensor counted in the container so far.
    pub count: i64,
    /// The last one.
    pub last: Violation,
    /// The container's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The container's name in the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl Observation {
    /// The identity of the thing seen.
    pub fn identity(&self) -> &str {
        match self {
            Observation::ContainerImage(o) => &o.identity,
            Observation::Container(o) => &o.identity,
            Observation::Node(o) => &o.identity,
            Observation::RuntimeViolations(o) => &o.identity,
        }
    }

    /// The kind of Asset it becomes.
    pub fn asset_kind(&self) -> sightline_crds::AssetKind {
        use sightline_crds::AssetKind;
        match self {
            Observation::ContainerImage(_) => AssetKind::ContainerImage,
            Observation::Container(_) | Observation::RuntimeViolations(_) => AssetKind::Container,
            Observation::Node(_) => AssetKind::Node,
        }
    }

    /// The Asset's name.
    pub fn asset_name(&self) -> String {
        sightline_crds::asset::asset_name(self.asset_kind(), self.identity())
    }
}

/// The operator's answer to a report it read: each observation accepted
/// (with its Asset) or refused (with why), and the policy reports refused.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// Observations written.
    #[serde(default)]
    pub accepted: Vec<Accepted>,
    /// Observations refused.
    #[serde(default)]
    pub refused: Vec<Refused>,
    /// Policy reports refused (indexes into `policies`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies_refused: Vec<Refused>,
    /// The database state refused (only a Sensor's pods may send one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_refused: Option<Refused>,
}

/// An observation written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// Its position in the report.
    pub index: usize,
    /// The Asset it went into.
    pub asset: String,
    /// For images, when the operator keeps a detail store: whether it
    /// holds this caller's details of the image. A sender sends them when
    /// they are missing (a new store, say), even if it sent them before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details_kept: Option<bool>,
}

/// An observation refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    /// Its position in the report.
    pub index: usize,
    /// A machine-readable reason (`NotYourNode`, `AssetLimit`, …).
    pub reason: String,
    /// Why, in words.
    pub message: String,
}

/// The body of every error response.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiError {
    /// Why, in words.
    pub error: String,
    /// A machine-readable reason (`Unauthenticated`, `TooLarge`, `RateLimited`, …).
    #[serde(default)]
    pub reason: String,
}

/// What the operator holds of one image a caller reported before
/// (`GET /api/v1/observations?kind=ContainerImage`), so a registry sensor
/// does not analyse again what it analysed last time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Recorded {
    /// The config digest.
    pub identity: String,
    /// The facts on the Asset.
    pub facts: ImageFacts,
    /// The vulnerabilities on the Asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerabilities: Option<VulnerabilityFindings>,
    /// Whether the operator's detail store holds this caller's details of
    /// the image (absent without a store): a registry sensor analyses an
    /// image again when they are missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details_kept: Option<bool>,
}

/// The answer to `GET /api/v1/observations`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecordedList {
    /// The images.
    pub images: Vec<Recorded>,
}

/// A field of a report that breaks the contract.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// Where (`observations[3].facts.repoTags`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Whether `s` is `sha256:` and 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `(namespace, name)` of a `<namespace>/<name>` reference, when both are
/// object names (DNS subdomains).
pub fn policy_ref(s: &str) -> Option<(&str, &str)> {
    let (ns, name) = s.split_once('/')?;
    let valid = |x: &str| {
        (1..=253).contains(&x.len())
            && x.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !x.starts_with(['-', '.'])
            && !x.ends_with(['-', '.'])
    };
    (valid(ns) && valid(name) && ns.len() <= 63).then_some((ns, name))
}

fn is_container_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_uid(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

impl Report {
    /// Parses and checks a request body: at most [`MAX_BODY_BYTES`], the
    /// contract's shape, and [`Report::check`].
    pub fn from_body(body: &[u8]) -> Result<Report, Invalid> {
        if body.len() > MAX_BODY_BYTES {
            return Err(invalid(
                "body",
                format!(
                    "{} bytes; a report may have at most {MAX_BODY_BYTES}",
                    body.len()
                ),
            ));
        }
        let report: Report =
            serde_json::from_slice(body).map_err(|e| invalid("body", e.to_string()))?;
        report.check()?;
        Ok(report)
    }

    /// Checks the bounds: how many observations, each identity's form,
    /// and every string, list and nesting inside.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.observations.len() > MAX_OBSERVATIONS {
            return Err(invalid(
                "observations",
                format!(
                    "{} observations; a report may have at most {MAX_OBSERVATIONS}",
                    self.observations.len()
                ),
            ));
        }
        for (i, o) in self.observations.iter().enumerate() {
            let at = format!("observations[{i}]");
            let id = o.identity();
            let ok = match o {
                Observation::ContainerImage(_) => is_digest(id),
                Observation::Container(_) | Observation::RuntimeViolations(_) => {
                    is_container_id(id)
                }
                Observation::Node(_) => is_uid(id),
            };
            if !ok {
                let expected = match o {
                    Observation::ContainerImage(_) => "sha256: and 64 lowercase hex digits",
                    Observation::Node(_) => "a Node UID",
                    _ => "a container ID (letters, digits, '-', '_', '.'; at most 128)",
                };
                return Err(invalid(
                    format!("{at}.identity"),
                    format!("must be {expected}"),
                ));
            }
            let value = serde_json::to_value(o).map_err(|e| invalid(&at, e.to_string()))?;
            bounded(&value, &at, 0)?;
        }
        if self.policies.len() > MAX_OBSERVATIONS {
            return Err(invalid(
                "policies",
                format!(
                    "{} policy reports; a report may have at most {MAX_OBSERVATIONS}",
                    self.policies.len()
                ),
            ));
        }
        for (i, p) in self.policies.iter().enumerate() {
            let at = format!("policies[{i}]");
            if policy_ref(&p.policy).is_none() {
                return Err(invalid(
                    format!("{at}.policy"),
                    "must be <namespace>/<name> of a RuntimePolicy",
                ));
            }
            if let Some(v) = &p.violations {
                if !(1..=MAX_VIOLATIONS).contains(&v.count) {
                    return Err(invalid(
                        format!("{at}.violations.count"),
                        format!("must be between 1 and {MAX_VIOLATIONS}"),
                    ));
                }
                if v.last.parse::<jiff::Timestamp>().is_err() {
                    return Err(invalid(
                        format!("{at}.violations.last"),
                        "must be an RFC 3339 time",
                    ));
                }
            }
            let value = serde_json::to_value(p).map_err(|e| invalid(&at, e.to_string()))?;
            bounded(&value, &at, 0)?;
        }
        if let Some(d) = &self.database {
            if d.built
                .as_ref()
                .is_some_and(|b| b.parse::<jiff::Timestamp>().is_err())
            {
                return Err(invalid("database.built", "must be an RFC 3339 time"));
            }
            if let Some(r) = &d.refused {
                let word = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
                if r.reason.is_empty() || r.reason.len() > 64 || !r.reason.chars().all(word) {
                    return Err(invalid(
                        "database.refused.reason",
                        "must be 1 to 64 lowercase letters, digits or '_'",
                    ));
                }
                if r.message.len() > MAX_STRING {
                    return Err(invalid(
                        "database.refused.message",
                        format!("at most {MAX_STRING} bytes"),
                    ));
                }
            }
        }
        if let Some(l) = &self.listing {
            if l.runtime.len() > 64 {
                return Err(invalid("listing.runtime", "at most 64 bytes"));
            }
            if l.images.len() > MAX_LISTING {
                return Err(invalid(
                    "listing.images",
                    format!("{} images; at most {MAX_LISTING}", l.images.len()),
                ));
            }
            if let Some((i, _)) = l.images.iter().enumerate().find(|(_, d)| !is_digest(d)) {
                return Err(invalid(
                    format!("listing.images[{i}]"),
                    "must be sha256: and 64 lowercase hex digits",
                ));
            }
        }
        Ok(())
    }
}

/// Every string, list and map inside `v` within the bounds.
fn bounded(v: &Value, at: &str, depth: usize) -> Result<(), Invalid> {
    if depth > MAX_DEPTH {
        return Err(invalid(at, format!("nested deeper than {MAX_DEPTH}")));
    }
    match v {
        Value::String(s) if s.len() > MAX_STRING => Err(invalid(
            at,
            format!("{} bytes; strings may have at most {MAX_STRING}", s.len()),
        )),
        Value::Array(a) => {
            if a.len() > MAX_LIST {
                return Err(invalid(
                    at,
                    format!("{} entries; lists may have at most {MAX_LIST}", a.len()),
                ));
            }
            a.iter()
                .enumerate()
                .try_for_each(|(i, x)| bounded(x, &format!("{at}[{i}]"), depth + 1))
        }
        Value::Object(m) => {
            if m.len() > MAX_LIST {
                return Err(invalid(
                    at,
                    format!("{} keys; maps may have at most {MAX_LIST}", m.len()),
                ));
            }
            m.iter().try_for_each(|(k, x)| {
                if k.len() > MAX_STRING {
                    return Err(invalid(at, "a key longer than the string bound"));
                }
                bounded(x, &format!("{at}.{k}"), depth + 1)
            })
        }
        _ => Ok(()),
    }
}

impl ImageFacts {
    /// The image facts in an Asset's `observed`, ignoring what other
    /// kinds of fact (from older sensors) sit beside them.
    pub fn from_observed(observed: &serde_json::Map<String, Value>) -> Option<ImageFacts> {
        let schema = schemars::schema_for!(ImageFacts);
        let known = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect::<std::collections::BTreeSet<_>>())
            .unwrap_or_default();
        let kept: serde_json::Map<String, Value> = observed
            .iter()
            .filter(|(k, _)| known.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        serde_json::from_value(Value::Object(kept)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str) -> Observation {
        Observation::ContainerImage(ImageObservation {
            identity: id.into(),
            facts: ImageFacts::default(),
            vulnerabilities: None,
            runtime: Some("containerd".into()),
            reference: None,
        })
    }

    fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn a_report_round_trips_with_its_kind_tag() {
        let r = Report {
            observations: vec![image(&digest(1))],
            listing: Some(Listing {
                runtime: "containerd".into(),
                images: vec![digest(1)],
            }),
            policies: vec![PolicyReport {
                policy: "shop/no-echo".into(),
                node: Some(PolicyNode {
                    enforcer: Some(sightline_crds::sensor::Enforcer::Fanotify),
                    ready: true,
                    reason: String::new(),
                }),
                violations: Some(PolicyViolations {
                    count: 2,
                    last: "2026-12-07T00:00:00Z".into(),
                }),
            }],
            database: None,
        };
        let body = serde_json::to_vec(&r).expect("serialize");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(r#""kind":"ContainerImage""#), "{text}");
        assert_eq!(Report::from_body(&body), Ok(r));
    }

    #[test]
    fn unknown_fields_are_refused_not_dropped() {
        let body = format!(
            r#"{{"observations":[{{"kind":"ContainerImage","identity":"{}","facts":{{}},"activationKey":"other"}}]}}"#,
            digest(1)
        );
        let e = Report::from_body(body.as_bytes()).expect_err("unknown field");
        assert!(e.message.contains("activationKey"), "{e}");
        let body = format!(
            r#"{{"observations":[{{"kind":"ContainerImage","identity":"{}","facts":{{"nodes":{{"b":"x"}}}}}}]}}"#,
            digest(1)
        );
        let e = Report::from_body(body.as_bytes()).expect_err("unknown fact");
        assert!(e.message.contains("nodes"), "{e}");
        let e = Report::from_body(br#"{"sensor":"ns/other"}"#).expect_err("unknown");
        assert!(e.message.contains("sensor"), "{e}");
        let e = Report::from_body(br#"{"observations":[{"kind":"Pod","identity":"x"}]}"#)
            .expect_err("unknown kind");
        assert_eq!(e.field, "body");
    }

    #[test]
    fn identities_are_checked_by_kind() {
        for bad in ["sha256:ABC", "sha256:12", "md5:00", ""] {
            let r = Report {
                observations: vec![image(bad)],
                listing: None,
                policies: vec![],
                database: None,
            };
            let e = r.check().expect_err(bad);
            assert_eq!(e.field, "observations[0].identity");
        }
        let node = Observation::Node(NodeObservation {
            identity: "../../x".into(),
            facts: NodeFacts::default(),
        });
        let e = Report {
            observations: vec![node],
            listing: None,
            policies: vec![],
            database: None,
        }
        .check()
        .expect_err("node uid");
        assert_eq!(e.field, "observations[0].identity");
    }

    #[test]
    fn bounds_name_the_field() {
        let mut o = image(&digest(2));
        if let Observation::ContainerImage(i) = &mut o {
            i.facts.repo_tags = vec!["t".into(); MAX_LIST + 1];
        }
        let e = Report {
            observations: vec![o.clone()],
            listing: None,
            policies: vec![],
            database: None,
        }
        .check()
        .expect_err("long list");
        assert_eq!(e.field, "observations[0].facts.repoTags");
        if let Observation::ContainerImage(i) = &mut o {
            i.facts.repo_tags = vec!["x".repeat(MAX_STRING + 1)];
        }
        let e = Report {
            observations: vec![o],
            listing: None,
            policies: vec![],
            database: None,
        }
        .check()
        .expect_err("long string");
        assert_eq!(e.field, "observations[0].facts.repoTags[0]");
        let many = Report {
            observations: vec![image(&digest(3)); MAX_OBSERVATIONS + 1],
            listing: None,
            policies: vec![],
            database: None,
        };
        assert_eq!(many.check().expect_err("many").field, "observations");
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(Report::from_body(&huge).expect_err("huge").field, "body");
        let listing = Report {
            observations: vec![],
            listing: Some(Listing {
                runtime: "containerd".into(),
                images: vec!["latest".into()],
            }),
            policies: vec![],
            database: None,
        };
        assert_eq!(
            listing.check().expect_err("listing").field,
            "listing.images[0]"
        );
    }

    #[test]
    fn policy_reports_name_a_policy_and_count_up() {
        let at = |policy: &str, count: i64, last: &str| Report {
            policies: vec![PolicyReport {
                policy: policy.into(),
                node: None,
                violations: Some(PolicyViolations {
                    count,
                    last: last.into(),
                }),
            }],
            ..Report::default()
        };
        let report = |policy: &str, count: i64| at(policy, count, "2026-12-07T10:00:00Z");
        assert!(report("shop/no-echo", 1).check().is_ok());
        for bad in ["no-slash", "shop/", "/x", "Shop/x", "shop/../x", "a/b/c"] {
            assert_eq!(
                report(bad, 1).check().expect_err(bad).field,
                "policies[0].policy"
            );
        }
        assert_eq!(
            report("shop/x", 0).check().expect_err("zero").field,
            "policies[0].violations.count"
        );
        assert_eq!(
            report("shop/x", MAX_VIOLATIONS + 1)
                .check()
                .expect_err("too many")
                .field,
            "policies[0].violations.count"
        );
        for bad in ["", "yesterday", "2026-13-01T00:00:00Z"] {
            assert_eq!(
                at("shop/x", 1, bad).check().expect_err(bad).field,
                "policies[0].violations.last"
            );
        }
    }

    #[test]
    fn database_states_are_bounded_and_name_what_is_wrong() {
        let state = |built: Option<&str>, reason: &str, message: usize| Report {
            database: Some(DatabaseState {
                built: built.map(str::to_owned),
                refused: Some(DatabaseRefusal {
                    reason: reason.into(),
                    message: "m".repeat(message),
                }),
            }),
            ..Report::default()
        };
        assert!(
            state(Some("2026-12-07T10:00:00Z"), "bad_signature", 10)
                .check()
                .is_ok()
        );
        assert!(state(None, "schema", 0).check().is_ok());
        let field = |r: Report| r.check().expect_err("refused").field;
        assert_eq!(field(state(Some("today"), "x", 1)), "database.built");
        for bad in ["", "Bad", "a b", "x\n", &"x".repeat(65)] {
            assert_eq!(
                field(state(None, bad, 1)),
                "database.refused.reason",
                "{bad:?}"
            );
        }
        assert_eq!(
            field(state(None, "x", MAX_STRING + 1)),
            "database.refused.message"
        );
        // Unknown fields are refused, not ignored.
        assert!(Report::from_body(br#"{"database":{"version":"1"}}"#).is_err());
    }

    #[test]
    fn image_facts_are_read_back_beside_other_facts() {
        let observed: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"imageId":"sha256:1","packages":{"total":3,"deb":3},"nodes":{"a":"docker"},"ci":{}}"#,
        )
        .expect("json");
        let f = ImageFacts::from_observed(&observed).expect("facts");
        assert_eq!(f.image_id.as_deref(), Some("sha256:1"));
        assert_eq!(f.packages.total, 3);
        assert_eq!(f.packages.by_type.get("deb"), Some(&3));
    }
}
