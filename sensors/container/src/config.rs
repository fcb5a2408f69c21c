//! What a container sensor is told: the environment the operator's
//! DaemonSet sets (`NODE_NAME`, `SIGHTLINE_SENSOR`,
//! `SIGHTLINE_ACTIVATION_KEY`, `SIGHTLINE_MODULES`, `SIGHTLINE_CONFIG` with
//! the Sensor's `spec.container` as JSON).

use std::path::PathBuf;
use std::time::Duration;

use sightline_crds::sensor::{ContainerSensor, RuntimeKind, ScanTrigger};

/// The container sensor's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// `<namespace>/<name>` of the Sensor.
    pub sensor: String,
    /// The activation key it runs under.
    pub activation_key: Option<String>,
    /// The node it runs on.
    pub node: String,
    /// Modules the key enables.
    pub modules: Vec<String>,
    /// The runtimes to watch and their sockets (`unix://…`), in the order
    /// the Sensor lists them.
    pub runtimes: Vec<(RuntimeKind, String)>,
    /// Analyse images when they are pulled (or loaded, imported, tagged).
    pub on_pull: bool,
    /// Analyse images when a container starts from them.
    pub on_start: bool,
    /// How often every image is analysed again (a new vulnerability
    /// database changes findings without the image changing).
    pub rescan: Duration,
    /// How often the sensor lists images and containers to refresh
    /// `lastSeen` and catch events it missed.
    pub refresh: Duration,
    /// The operator's API, where reports go (`SIGHTLINE_API_URL`).
    pub api_url: Option<String>,
    /// The operator's vulnerability database endpoint
    /// (`SIGHTLINE_VULN_DB_URL`, `http://…/api/v1/vulndb`).
    pub vuln_db_url: Option<String>,
    /// The keys a database bundle must be signed by
    /// (`SIGHTLINE_BUNDLE_KEYS`); none: bare databases are taken.
    pub bundle_keys: Vec<sightline_scan::bundle::PublicKey>,
    /// The ServiceAccount token (audience `sightline`) sent to the
    /// operator's API (`SIGHTLINE_TOKEN_FILE`).
    pub token_file: PathBuf,
    /// The CA (PEM) the API's certificate is issued by (`SIGHTLINE_API_CA`).
    pub api_ca: Option<Vec<u8>>,
    /// Where the fetched database is kept (`SIGHTLINE_VULN_DB_CACHE`).
    pub vuln_db_cache: PathBuf,
    /// How often the endpoint is asked for a newer database
    /// (`SIGHTLINE_VULN_DB_REFRESH_SECONDS`).
    pub vuln_db_refresh: Duration,
    /// Where the host's files are (`SIGHTLINE_HOST_ROOT`, `/host` in the
    /// DaemonSet), for the node's own Asset.
    pub host: crate::node::HostPaths,
    /// Longest one image's analysis may take
    /// (`SIGHTLINE_ANALYSIS_TIMEOUT_SECONDS`, default 600).
    pub analysis_timeout: Duration,
}

/// A positive number of seconds from `name`, or `default`.
fn positive_seconds(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
) -> Result<Duration, ConfigError> {
    match get(name) {
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| ConfigError(format!("{name} '{v}' is not a positive number"))),
        None => Ok(Duration::from_secs(default)),
    }
}

/// A setting that could not be read, named.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Reads the settings from environment variables (see the module docs).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let need = |name: &str| {
            get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                ConfigError(format!(
                    "{name} is not set (the operator's DaemonSet sets it)"
                ))
            })
        };
        let spec: ContainerSensor = match get("SIGHTLINE_CONFIG").filter(|v| !v.trim().is_empty()) {
            Some(json) => serde_json::from_str(&json).map_err(|e| {
                ConfigError(format!(
                    "SIGHTLINE_CONFIG is not a container sensor spec: {e}"
                ))
            })?,
            None => ContainerSensor::default(),
        };
        let runtimes = spec
            .runtimes
            .iter()
            .map(|rt| (rt.type_, rt.endpoint().to_owned()))
            .collect();
        let rescan = sightline_crds::duration::parse(&spec.rescan_interval).ok_or_else(|| {
            ConfigError(format!(
                "rescanInterval '{}' is not a duration such as 90m, 12h or 1h30m",
                spec.rescan_interval
            ))
        })?;
        let triggers = if spec.scan_on.is_empty() {
            vec![ScanTrigger::Start, ScanTrigger::Pull]
        } else {
            spec.scan_on.clone()
        };
        Ok(Config {
            sensor: need("SIGHTLINE_SENSOR")?,
            activation_key: get("SIGHTLINE_ACTIVATION_KEY").filter(|v| !v.is_empty()),
            node: need("NODE_NAME")?,
            modules: get("SIGHTLINE_MODULES")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
            runtimes,
            on_pull: triggers.contains(&ScanTrigger::Pull),
            on_start: triggers.contains(&ScanTrigger::Start),
            rescan,
            refresh: Duration::from_secs(300),
            api_url: get("SIGHTLINE_API_URL").filter(|v| !v.is_empty()),
            vuln_db_url: get("SIGHTLINE_VULN_DB_URL").filter(|v| !v.is_empty()),
            bundle_keys: sightline_scan::bundle::parse_keys(
                &get(sightline_scan::bundle::KEYS_ENV).unwrap_or_default(),
            )
            .map_err(|e| ConfigError(format!("{}: {e}", sightline_scan::bundle::KEYS_ENV)))?,
            token_file: get("SIGHTLINE_TOKEN_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/run/secrets/sightline.dev/token")),
            api_ca: get(sightline_report::client::API_CA_ENV)
                .filter(|v| !v.trim().is_empty())
                .map(String::into_bytes),
            vuln_db_cache: get("SIGHTLINE_VULN_DB_CACHE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp/sightline-vulns.db")),
            vuln_db_refresh: positive_seconds(&get, "SIGHTLINE_VULN_DB_REFRESH_SECONDS", 3600)?,
            analysis_timeout: positive_seconds(&get, "SIGHTLINE_ANALYSIS_TIMEOUT_SECONDS", 600)?,
            host: crate::node::HostPaths::from_env(get("SIGHTLINE_HOST_ROOT")),
        })
    }

    /// Whether the key enables vulnerability matching.
    pub fn vulnerabilities(&self) -> bool {
        self.modules.iter().any(|m| m == "vulnerability")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn reads_what_the_daemonset_sets() {
        let c = Config::from_env(env(&[
            ("NODE_NAME", "node-1"),
            ("SIGHTLINE_SENSOR", "sightline-system/containers"),
            ("SIGHTLINE_ACTIVATION_KEY", "prod"),
            ("SIGHTLINE_MODULES", "containerSecurity,vulnerability"),
            (
                "SIGHTLINE_CONFIG",
                r#"{"runtimes":[{"type":"docker"},{"type":"containerd","endpoint":"unix:///run/k3s/containerd/containerd.sock"}],"scanOn":["pull"],"rescanInterval":"12h"}"#,
            ),
        ]))
        .expect("config");
        assert_eq!(
            c.runtimes,
            [
                (
                    RuntimeKind::Docker,
                    "unix:///var/run/docker.sock".to_owned()
                ),
                (
                    RuntimeKind::Containerd,
                    "unix:///run/k3s/containerd/containerd.sock".to_owned()
                )
            ]
        );
        assert!(c.on_pull && !c.on_start);
        assert_eq!(c.rescan, Duration::from_secs(12 * 3600));
        assert!(c.vulnerabilities());
    }

    #[test]
    fn errors_name_the_setting() {
        let e = Config::from_env(env(&[("SIGHTLINE_SENSOR", "a/b")])).expect_err("no node");
        assert!(e.to_string().starts_with("NODE_NAME is not set"), "{e}");
        let e = Config::from_env(env(&[
            ("SIGHTLINE_SENSOR", "a/b"),
            ("NODE_NAME", "n"),
            ("SIGHTLINE_CONFIG", r#"{"rescanInterval":"soon"}"#),
        ]))
        .expect_err("bad duration");
        assert!(e.to_string().contains("rescanInterval 'soon'"), "{e}");
        let c = Config::from_env(env(&[
            ("SIGHTLINE_SENSOR", "a/b"),
            ("NODE_NAME", "n"),
            ("SIGHTLINE_MODULES", "containerSecurity"),
        ]))
        .expect("defaults");
        assert!(
            !c.vulnerabilities(),
            "no matching without the vulnerability module"
        );
        assert!(c.on_pull && c.on_start);
    }
}
