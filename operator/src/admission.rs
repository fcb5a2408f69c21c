//! `POST /api/v1/admission/images`: the validating admission webhook for
//! pods. Each container image a new pod names is looked up in the
//! in-memory index (by tag, registry digest or image ID) and judged against
//! every ImagePolicy whose namespace selector takes the pod's namespace:
//! `Enforce` policies refuse the pod with a message that names the policy,
//! the image and its worst findings; `Audit` policies admit it with a
//! warning (kubectl prints it) and an Event on the policy.
//!
//! Every replica answers (the Service spreads calls), from its own index
//! and its own watch of the policies. Until the index has listed every
//! Asset, pods are admitted with a warning: a restart must not block the
//! cluster (the chart's `failurePolicy` decides what happens when the
//! operator cannot be reached at all).
//!
//! Who may call: the API server calls webhooks without credentials unless
//! it is configured to, as for every admission webhook; the endpoint
//! changes nothing but Events and counters, answers only about the pod it
//! is sent (what the pod's creator would see), is bounded in body size and
//! is reached only where the operator's NetworkPolicy admits.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use sightline_crds::image_policy::{
    ImageDeny, ImagePolicy, ImagePolicyMode, SeverityThreshold, max_age_seconds,
};
use sightline_inventory::images::ImageView;

use crate::metrics::{Metrics, VerdictLabels};
use crate::search::{SharedIndex, read};

/// Where the API server sends pods.
pub const PATH: &str = "/api/v1/admission/images";
/// Largest AdmissionReview read (a pod is at most ~1.5 MiB in etcd).
const MAX_REVIEW_BYTES: usize = 4 << 20;
/// How long a namespace's labels are trusted before they are read again.
const NAMESPACE_TTL: Duration = Duration::from_secs(30);
/// Findings named in a message, per image.
const NAMED_FINDINGS: usize = 3;
/// Longest warning (the API server drops longer ones).
const MAX_WARNING: usize = 250;

/// What the webhook needs.
pub struct AdmissionState {
    /// Every ImagePolicy.
    pub policies: Store<ImagePolicy>,
    /// The Assets.
    pub index: SharedIndex,
    /// Whether the index has listed every Asset.
    pub synced: Arc<AtomicBool>,
    /// Namespaces excluded whatever the policies say.
    pub excluded: Vec<String>,
    /// Events on policies (Audit).
    pub recorder: Recorder,
    /// Counters.
    pub metrics: Metrics,
    namespaces: Api<Namespace>,
    labels: Mutex<HashMap<String, CachedLabels>>,
}

/// A namespace's labels, and when they were read.
type CachedLabels = (BTreeMap<String, String>, Instant);

impl AdmissionState {
    /// The webhook's state.
    pub fn new(
        client: kube::Client,
        policies: Store<ImagePolicy>,
        index: SharedIndex,
        synced: Arc<AtomicBool>,
        excluded: Vec<String>,
        metrics: Metrics,
    ) -> AdmissionState {
        AdmissionState {
            policies,
            index,
            synced,
            excluded,
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "sightline-operator".into(),
                    instance: None,
                },
            ),
            metrics,
            namespaces: Api::all(client),
            labels: Mutex::default(),
        }
    }

    /// A namespace's labels (cached for [`NAMESPACE_TTL`]).
    async fn labels(&self, namespace: &str) -> BTreeMap<String, String> {
        if let Some((labels, at)) = self
            .labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(namespace)
            && at.elapsed() < NAMESPACE_TTL
        {
            return labels.clone();
        }
        let labels = match self.namespaces.get(namespace).await {
            Ok(ns) => ns.metadata.labels.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(namespace, error = %e, "reading a namespace's labels for admission");
                // The name label is always there; selectors on it still work.
                BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    namespace.to_owned(),
                )])
            }
        };
        self.labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(namespace.to_owned(), (labels.clone(), Instant::now()));
        labels
    }
}

/// How often the webhook configuration's `caBundle` is checked once set,
/// and until it is (the chart may create it after the operator starts).
const CA_BUNDLE_CHECK: Duration = Duration::from_secs(60);
const CA_BUNDLE_RETRY: Duration = Duration::from_secs(5);

/// Keeps every webhook of the ValidatingWebhookConfiguration `name`
/// trusting `ca` (PEM): set at start, and set again whenever it differs
/// (an upgrade of the chart may have emptied it). Runs until the process ends.
pub async fn keep_ca_bundle(client: kube::Client, name: String, ca: String) {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let wanted = k8s_openapi::ByteString(ca.into_bytes());
    loop {
        let mut settled = false;
        match api.get(&name).await {
            Ok(config) => {
                let mut webhooks = config.webhooks.unwrap_or_default();
                settled = webhooks
                    .iter()
                    .all(|w| w.client_config.ca_bundle.as_ref() == Some(&wanted));
                if !settled {
                    for w in &mut webhooks {
                        w.client_config.ca_bundle = Some(wanted.clone());
                    }
                    let patch = serde_json::json!({ "webhooks": webhooks });
                    match api
                        .patch(
                            &name,
                            &kube::api::PatchParams::default(),
                            &kube::api::Patch::Merge(&patch),
                        )
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(webhook = name, "the webhook trusts this operator's CA")
                        }
                        Err(e) => {
                            tracing::warn!(webhook = name, error = %e, "setting the webhook's caBundle")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(webhook = name, error = %e, "reading the webhook configuration")
            }
        }
        tokio::time::sleep(if settled {
            CA_BUNDLE_CHECK
        } else {
            CA_BUNDLE_RETRY
        })
        .await;
    }
}

/// The webhook's route.
pub fn router(state: Arc<AdmissionState>) -> Router {
    Router::new().route(PATH, post(review)).with_state(state)
}

async fn review(State(state): State<Arc<AdmissionState>>, body: Bytes) -> Response {
    let started = Instant::now();
    if body.len() > MAX_REVIEW_BYTES {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            "an AdmissionReview is at most 4 MiB",
        )
            .into_response();
    }
    let review: AdmissionReview<Pod> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview of a Pod: {e}"),
            )
                .into_response();
        }
    };
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("an AdmissionReview without a request: {e}"),
            )
                .into_response();
        }
    };
    let (response, verdict) = decide(&state, &request).await;
    state
        .metrics
        .admission_reviews
        .get_or_create(&VerdictLabels {
            verdict: verdict.into(),
        })
        .inc();
    state
        .metrics
        .admission_duration
        .observe(started.elapsed().as_secs_f64());
    axum::Json(response.into_review()).into_response()
}

/// The response to one pod, and its verdict's label.
async fn decide(
    state: &AdmissionState,
    req: &AdmissionRequest<Pod>,
) -> (AdmissionResponse, &'static str) {
    let response = AdmissionResponse::from(req);
    let namespace = req.namespace.clone().unwrap_or_default();
    let Some(pod) = &req.object else {
        return (response, "allowed");
    };
    if state.excluded.contains(&namespace) {
        return (response, "allowed");
    }
    let policies: Vec<Arc<ImagePolicy>> = state.policies.state();
    if policies.is_empty() {
        return (response, "allowed");
    }
    if !state.synced.load(Ordering::Relaxed) {
        return (
            with_warnings(
                response,
                vec![
                    "Sightline has not loaded its inventory yet: the pod's images were not judged"
                        .into(),
                ],
            ),
            "warned",
        );
    }
    let labels = state.labels(&namespace).await;
    let applicable: Vec<&ImagePolicy> = policies
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| {
            p.spec
                .namespace_selector
                .as_ref()
                .is_none_or(|s| sightline_crds::selector::matches(s, &labels))
        })
        .collect();
    let now = jiff::Timestamp::now().as_second();
    let verdicts = {
        let index = read(&state.index);
        judge_pod(
            &applicable,
            &images_of(pod),
            now,
            |reference| index.images(reference),
            |query, asset| index.matches(query, now, asset),
        )
    };
    let pod_name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone().map(|g| format!("{g}…")))
        .unwrap_or_default();
    let mut refusals = Vec::new();
    let mut warnings = Vec::new();
    for v in verdicts {
        let line = v.message();
        match v.mode {
            ImagePolicyMode::Enforce => refusals.push(line),
            ImagePolicyMode::Audit => {
                if !req.dry_run
                    && let Some(policy) = applicable
                        .iter()
                        .find(|p| p.metadata.name.as_deref() == Some(&v.policy))
                {
                    let event = Event {
                        type_: EventType::Warning,
                        reason: "ImageAudited".into(),
                        note: Some(truncate(
                            &format!("pod {namespace}/{pod_name} admitted: {line}"),
                            1000,
                        )),
                        action: "Admit".into(),
                        secondary: None,
                    };
                    let reference = kube::Resource::object_ref(*policy, &());
                    if let Err(e) = state.recorder.publish(&event, &reference).await {
                        tracing::warn!(error = %e, "publishing an ImagePolicy Event");
                    }
                }
                warnings.push(truncate(&line, MAX_WARNING));
            }
        }
    }
    if !refusals.is_empty() {
        tracing::info!(
            namespace,
            pod = pod_name,
            "refused: {}",
            refusals.join("; ")
        );
        return (
            with_warnings(response, warnings).deny(refusals.join("; ")),
            "refused",
        );
    }
    if warnings.is_empty() {
        (response, "allowed")
    } else {
        (with_warnings(response, warnings), "warned")
    }
}

fn with_warnings(mut response: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Every image a pod runs: its init, regular and ephemeral containers'.
pub fn images_of(pod: &Pod) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(spec) = &pod.spec {
        let names = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .filter_map(|c| c.image.clone())
            .chain(
                spec.ephemeral_containers
                    .iter()
                    .flatten()
                    .filter_map(|c| c.image.clone()),
            );
        for n in names {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// One policy's finding about one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The policy.
    pub policy: String,
    /// What it does.
    pub mode: ImagePolicyMode,
    /// The image as the pod names it.
    pub image: String,
    /// Why the image is bad.
    pub reasons: Vec<String>,
}

impl Verdict {
    /// The line a person reads.
    pub fn message(&self) -> String {
        let what = match self.mode {
            ImagePolicyMode::Enforce => "refused",
            ImagePolicyMode::Audit => "flagged",
        };
        format!(
            "image {:?} {what} by ImagePolicy {:?}: {}",
            self.image,
            self.policy,
            self.reasons.join("; ")
        )
    }
}

/// Judges each image against each policy (pure: lookups are passed in).
pub fn judge_pod(
    policies: &[&ImagePolicy],
    images: &[String],
    now: i64,
    lookup: impl Fn(&str) -> Vec<ImageView>,
    matches: impl Fn(&str, &str) -> Result<bool, sightline_inventory::query::Error>,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    for image in images {
        let known = lookup(image);
        for p in policies {
            let reasons = judge(&p.spec.deny, &known, now, &matches);
            if !reasons.is_empty() {
                out.push(Verdict {
                    policy: p.metadata.name.clone().unwrap_or_default(),
                    mode: p.spec.mode,
                    image: image.clone(),
                    reasons,
                });
            }
        }
    }
    out
}

/// Why an image (as the inventory knows it: `known`, usually one Asset) is
/// bad under `deny`; empty when it is not.
pub fn judge(
    deny: &ImageDeny,
    known: &[ImageView],
    now: i64,
    matches: &impl Fn(&str, &str) -> Result<bool, sightline_inventory::query::Error>,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if known.is_empty() {
        if deny.unscanned.is_some() {
            reasons.push("no sensor has analysed it (it is not in the inventory)".into());
        }
        return reasons;
    }
    for image in known {
        if let Some(max) = deny
            .unscanned
            .as_ref()
            .and_then(|u| u.max_age.as_deref())
            .and_then(max_age_seconds)
            && image.last_seen.is_none_or(|seen| now - seen > max)
        {
            let ago = image
                .last_seen
                .map_or("never".to_owned(), |s| format!("{}h ago", (now - s) / 3600));
            reasons.push(format!(
                "last analysed {ago}, longer ago than the policy allows"
            ));
        }
        if let Some(threshold) = deny.severity {
            reasons.extend(vulnerable(
                image,
                threshold,
                deny.fixable_only.unwrap_or(true),
            ));
        }
        if deny.end_of_life == Some(true) && image.lifecycle.as_deref() == Some("EndOfLife") {
            reasons.push("its operating system is past its end of life".into());
        }
        if let Some(query) = &deny.query {
            match matches(query, &image.name) {
                Ok(true) => reasons.push(format!(
                    "its Asset {} matches the query {query:?}",
                    image.name
                )),
                Ok(false) => {}
                // The policy's status says so; an invalid query judges nothing.
                Err(_) => {}
            }
        }
    }
    reasons
}

/// The vulnerability reason, if the image has findings at or above
/// `threshold` (with a fix, when `fixable_only`).
fn vulnerable(
    image: &ImageView,
    threshold: SeverityThreshold,
    fixable_only: bool,
) -> Option<String> {
    let bad: Vec<_> = image
        .top
        .iter()
        .filter(|v| threshold.admits(&v.severity) && (!fixable_only || v.fixed.is_some()))
        .collect();
    // Without the fix condition the counts are exact; the top list names them.
    let counted: i64 = if fixable_only {
        bad.len() as i64
    } else {
        ["critical", "high", "medium", "low"]
            .iter()
            .zip(image.counts)
            .filter(|(s, _)| threshold.admits(s))
            .map(|(_, n)| n)
            .sum()
    };
    if counted == 0 {
        return None;
    }
    let named: Vec<String> = bad
        .iter()
        .take(NAMED_FINDINGS)
        .map(|v| match &v.fixed {
            Some(f) => format!(
                "{} {} in {} {} (fixed in {f})",
                v.severity, v.id, v.package, v.installed
            ),
            None => format!("{} {} in {} {}", v.severity, v.id, v.package, v.installed),
        })
        .collect();
    let at = format!("{threshold:?}").to_ascii_lowercase();
    let fix = if fixable_only { " with a fix" } else { "" };
    Some(format!(
        "{counted} vulnerabilities at {at} or above{fix}: {}",
        named.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_crds::image_policy::{ImagePolicySpec, Unscanned};
    use sightline_inventory::images::TopVulnerability;

    fn policy(name: &str, mode: ImagePolicyMode, deny: ImageDeny) -> ImagePolicy {
        ImagePolicy::new(
            name,
            ImagePolicySpec {
                mode,
                namespace_selector: None,
                deny,
            },
        )
    }

    fn legacy_app() -> ImageView {
        let v = |id: &str, package: &str, fixed: Option<&str>, severity: &str| TopVulnerability {
            id: id.into(),
            package: package.into(),
            installed: "1".into(),
            fixed: fixed.map(Into::into),
            severity: severity.into(),
        };
        ImageView {
            name: "containerimage-1".into(),
            display_name: Some("sightline.local/legacy-app:1.0".into()),
            counts: [2, 1, 0, 0, 0],
            top: vec![
                v("GHSA-jf85-cpcp-j695", "lodash", Some("4.17.12"), "critical"),
                v("CVE-UNFIXED", "pyyaml", None, "critical"),
                v("GHSA-35jh-r3h4-6jhm", "lodash", Some("4.17.21"), "high"),
            ],
            lifecycle: Some("EndOfLife".into()),
            last_seen: Some(1_000_000),
        }
    }

    fn no_query(_: &str, _: &str) -> Result<bool, sightline_inventory::query::Error> {
        Ok(false)
    }

    #[test]
    fn each_rule_judges_what_the_asset_keeps() {
        let app = [legacy_app()];
        let critical = ImageDeny {
            severity: Some(SeverityThreshold::Critical),
            ..ImageDeny::default()
        };
        let r = judge(&critical, &app, 1_000_000, &no_query);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(
            r[0].starts_with("1 vulnerabilities at critical or above with a fix: critical GHSA-jf85-cpcp-j695 in lodash 1 (fixed in 4.17.12)"),
            "{r:?}"
        );
        let any = ImageDeny {
            severity: Some(SeverityThreshold::High),
            fixable_only: Some(false),
            ..ImageDeny::default()
        };
        assert!(
            judge(&any, &app, 0, &no_query)[0].starts_with("3 vulnerabilities at high or above:")
        );
        let eol = ImageDeny {
            end_of_life: Some(true),
            ..ImageDeny::default()
        };
        assert_eq!(
            judge(&eol, &app, 0, &no_query),
            ["its operating system is past its end of life"]
        );
        let stale = ImageDeny {
            unscanned: Some(Unscanned {
                max_age: Some("1h".into()),
            }),
            ..ImageDeny::default()
        };
        assert!(judge(&stale, &app, 1_000_000 + 3600, &no_query).is_empty());
        assert_eq!(
            judge(&stale, &app, 1_000_000 + 7201, &no_query),
            ["last analysed 2h ago, longer ago than the policy allows"]
        );
        assert_eq!(
            judge(&stale, &[], 0, &no_query),
            ["no sensor has analysed it (it is not in the inventory)"]
        );
        // Unknown images are judged only by `unscanned`.
        assert!(judge(&critical, &[], 0, &no_query).is_empty());
        let query = ImageDeny {
            query: Some("os.lifecycle.stage:EndOfLife".into()),
            ..ImageDeny::default()
        };
        let yes =
            |q: &str, a: &str| Ok(q == "os.lifecycle.stage:EndOfLife" && a == "containerimage-1");
        assert_eq!(
            judge(&query, &app, 0, &yes),
            ["its Asset containerimage-1 matches the query \"os.lifecycle.stage:EndOfLife\""]
        );
    }

    #[test]
    fn a_pod_is_judged_by_every_image_and_policy() {
        let enforce = policy(
            "no-critical",
            ImagePolicyMode::Enforce,
            ImageDeny {
                severity: Some(SeverityThreshold::Critical),
                ..ImageDeny::default()
            },
        );
        let audit = policy(
            "known-images",
            ImagePolicyMode::Audit,
            ImageDeny {
                unscanned: Some(Unscanned::default()),
                ..ImageDeny::default()
            },
        );
        let lookup = |r: &str| {
            if r == "sightline.local/legacy-app:1.0" {
                vec![legacy_app()]
            } else {
                vec![]
            }
        };
        let images = vec![
            "sightline.local/legacy-app:1.0".to_owned(),
            "busybox:1".to_owned(),
        ];
        let v = judge_pod(&[&enforce, &audit], &images, 0, lookup, no_query);
        let got: Vec<(&str, &str)> = v
            .iter()
            .map(|v| (v.policy.as_str(), v.image.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("no-critical", "sightline.local/legacy-app:1.0"),
                ("known-images", "busybox:1")
            ]
        );
        assert!(v[0].message().starts_with(
            "image \"sightline.local/legacy-app:1.0\" refused by ImagePolicy \"no-critical\": 1 vulnerabilities"
        ));
    }

    #[test]
    fn warnings_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate(&"é".repeat(200), 250);
        assert!(cut.len() <= 250 && cut.ends_with("..."));
    }
}
