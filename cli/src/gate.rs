//! The CI gate of `sightline scan image`: which findings count, and
//! whether the build should fail.
//!
//! A policy comes from flags (`--fail-on`, `--ignore`, `--ignore-unfixed`,
//! `--fail-on-eol`) and an optional YAML file with the same keys
//! (`failOn`, `ignore`, `ignoreUnfixed`, `failOnEol`); flags add to the
//! file. Severities rank `unknown < none < low < medium < high <
//! critical`: `--fail-on high` fails on high and critical findings only,
//! and a finding of unknown severity fails only `--fail-on unknown`.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;
use sightline_crds::asset::LifecycleStage;
use sightline_scan::vuln::{Finding, Level, Matches};

/// A severity as people write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Any finding.
    Unknown,
    /// Low and above.
    Low,
    /// Medium and above.
    Medium,
    /// High and critical.
    High,
    /// Critical only.
    Critical,
}

impl Severity {
    fn level(self) -> Level {
        match self {
            Severity::Unknown => Level::Unknown,
            Severity::Low => Level::Low,
            Severity::Medium => Level::Medium,
            Severity::High => Level::High,
            Severity::Critical => Level::Critical,
        }
    }
}

/// What fails the build.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// Fail on a finding at or above this severity.
    #[serde(default)]
    pub fail_on: Option<Severity>,
    /// Advisory IDs or aliases (CVE IDs) not to count.
    #[serde(default)]
    pub ignore: BTreeSet<String>,
    /// Do not count findings without a fixed version.
    #[serde(default)]
    pub ignore_unfixed: bool,
    /// Fail when the image's OS is end of life or end of service.
    #[serde(default)]
    pub fail_on_eol: bool,
}

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("policy file {path}: {reason}")]
pub struct PolicyError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl Policy {
    /// Reads a YAML policy file.
    pub fn read(path: &Path) -> Result<Policy, PolicyError> {
        let err = |reason: String| PolicyError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        sightline_crds::yaml::from_str(&text).map_err(|e| err(e.to_string()))
    }

    /// This policy with `other`'s settings added (flags over a file).
    pub fn with(mut self, other: Policy) -> Policy {
        if other.fail_on.is_some() {
            self.fail_on = other.fail_on;
        }
        self.ignore.extend(other.ignore);
        self.ignore_unfixed |= other.ignore_unfixed;
        self.fail_on_eol |= other.fail_on_eol;
        self
    }

    /// Whether a finding counts at all under this policy.
    pub fn counts(&self, f: &Finding) -> bool {
        let ignored =
            self.ignore.contains(&f.id) || f.aliases.iter().any(|a| self.ignore.contains(a));
        let unfixed = self.ignore_unfixed && f.fixed.is_none();
        !(ignored || unfixed)
    }
}

/// The gate's verdict.
#[derive(Clone, Debug)]
pub struct Verdict<'a> {
    /// Whether the build may go on.
    pub passed: bool,
    /// Why not, a sentence each.
    pub reasons: Vec<String>,
    /// Findings the policy counts.
    pub counted: Vec<&'a Finding>,
    /// Of those, the ones that fail it.
    pub failing: Vec<&'a Finding>,
}

impl Verdict<'_> {
    /// Whether this finding fails the gate.
    pub fn fails(&self, f: &Finding) -> bool {
        self.failing.iter().any(|x| std::ptr::eq(*x, f))
    }
}

/// Evaluates `policy` on the findings and the OS's lifecycle stage.
pub fn evaluate<'a>(
    policy: &Policy,
    m: &'a Matches,
    os_stage: Option<LifecycleStage>,
) -> Verdict<'a> {
    let counted: Vec<&Finding> = m.findings.iter().filter(|f| policy.counts(f)).collect();
    let failing: Vec<&Finding> = match policy.fail_on {
        Some(s) => counted
            .iter()
            .copied()
            .filter(|f| f.severity.level >= s.level())
            .collect(),
        None => Vec::new(),
    };
    let mut reasons = Vec::new();
    if let Some(s) = policy.fail_on
        && !failing.is_empty()
    {
        let ids: Vec<&str> = failing.iter().take(5).map(|f| f.id.as_str()).collect();
        reasons.push(format!(
            "{} finding{} at or above {} ({}{})",
            failing.len(),
            if failing.len() == 1 { "" } else { "s" },
            s.level().as_str(),
            ids.join(", "),
            if failing.len() > 5 { ", …" } else { "" }
        ));
    }
    if policy.fail_on_eol
        && let Some(stage @ (LifecycleStage::EndOfLife | LifecycleStage::EndOfService)) = os_stage
    {
        reasons.push(format!("the image's operating system is {stage:?}"));
    }
    Verdict {
        passed: reasons.is_empty(),
        reasons,
        counted,
        failing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_scan::vuln::Severity as Sev;

    fn finding(id: &str, alias: &str, level: Level, fixed: Option<&str>) -> Finding {
        Finding {
            id: id.into(),
            aliases: vec![alias.into()],
            package: "p".into(),
            version: "1".into(),
            purl: String::new(),
            matched_name: "p".into(),
            ecosystem: "Debian:12".into(),
            fixed: fixed.map(Into::into),
            severity: Sev {
                level,
                score: None,
                source: None,
            },
            summary: None,
            layer: 0,
            path: String::new(),
        }
    }

    fn matches() -> Matches {
        let mut m = Matches::default();
        m.findings
            .push(finding("GHSA-1", "CVE-1", Level::Critical, Some("2")));
        m.findings
            .push(finding("GHSA-2", "CVE-2", Level::High, None));
        m.findings
            .push(finding("GHSA-3", "CVE-3", Level::Medium, Some("2")));
        m.findings
            .push(finding("GHSA-4", "CVE-4", Level::Unknown, Some("2")));
        m
    }

    #[test]
    fn severities_ignores_unfixed_and_eol() {
        let m = matches();
        let p = |fail_on| Policy {
            fail_on,
            ..Policy::default()
        };
        assert!(evaluate(&p(None), &m, None).passed);
        let v = evaluate(&p(Some(Severity::High)), &m, None);
        assert_eq!(
            v.failing.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
            ["GHSA-1", "GHSA-2"]
        );
        assert_eq!(v.reasons, ["2 findings at or above high (GHSA-1, GHSA-2)"]);
        assert_eq!(
            evaluate(&p(Some(Severity::Medium)), &m, None).failing.len(),
            3
        );
        assert_eq!(
            evaluate(&p(Some(Severity::Unknown)), &m, None)
                .failing
                .len(),
            4
        );
        // Ignored by ID or by alias, and unfixed ones.
        let v = evaluate(
            &Policy {
                fail_on: Some(Severity::High),
                ignore: ["CVE-1".to_owned()].into(),
                ignore_unfixed: true,
                ..Policy::default()
            },
            &m,
            None,
        );
        assert!(v.passed, "{:?}", v.reasons);
        assert_eq!(v.counted.len(), 2);
        let eol = Policy {
            fail_on_eol: true,
            ..Policy::default()
        };
        assert!(!evaluate(&eol, &m, Some(LifecycleStage::EndOfLife)).passed);
        assert!(evaluate(&eol, &m, Some(LifecycleStage::GeneralAvailability)).passed);
        assert!(evaluate(&eol, &m, None).passed);
    }

    #[test]
    fn policy_files_and_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("policy.yaml");
        std::fs::write(
            &f,
            "failOn: critical\nignore: [CVE-2024-1]\nfailOnEol: true\n",
        )
        .expect("write");
        let p = Policy::read(&f).expect("read").with(Policy {
            fail_on: Some(Severity::High),
            ignore: ["CVE-2024-2".to_owned()].into(),
            ..Policy::default()
        });
        assert_eq!(p.fail_on, Some(Severity::High));
        assert_eq!(p.ignore.len(), 2);
        assert!(p.fail_on_eol);
        std::fs::write(&f, "failOn: catastrophic\n").expect("write");
        let e = Policy::read(&f).expect_err("bad severity");
        assert!(e.to_string().contains("catastrophic"), "{e}");
        std::fs::write(&f, "failon: high\n").expect("write");
        assert!(Policy::read(&f).is_err(), "unknown keys are refused");
    }
}
