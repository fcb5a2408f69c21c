//! Runtime sensors' word on RuntimePolicies: each node's entry of
//! `status.nodes` (applied under a field manager per Sensor and node, so
//! nodes never overwrite each other) and violation counts added to
//! `status.violations` (conditional on the version read, retried on
//! conflict, so concurrent nodes never lose a count). The operator writes
//! them; runtime sensors hold no permission on policies' status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use sightline_crds::runtime_policy::NodeEnforcement;
use sightline_crds::{RuntimePolicy, SensorType};
use sightline_report::{PolicyReport, policy_ref};

use super::auth::Caller;
use super::policy::Refusal;
use super::writer::{WriteError, field_manager};

/// Attempts at adding a count before giving up on this report (the
/// sensor reports the count again).
const ATTEMPTS: usize = 5;

fn refused(reason: &'static str, message: String) -> WriteError {
    WriteError::Refused(Refusal { reason, message })
}

/// What a status apply carries.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct NodeApply<'a> {
    api_version: &'static str,
    kind: &'static str,
    status: NodeStatus<'a>,
}

#[derive(Serialize, Debug)]
struct NodeStatus<'a> {
    nodes: [&'a NodeEnforcement; 1],
}

/// A conditional update of the count.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct CountPatch {
    metadata: Version,
    status: Counts,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Version {
    resource_version: Option<String>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Counts {
    violations: i64,
    last_violation: Time,
}

/// Writes one policy report from `caller`.
pub async fn write(
    client: &kube::Client,
    caller: &Caller,
    r: &PolicyReport,
) -> Result<(), WriteError> {
    let Caller::Sensor {
        sensor_type: SensorType::Runtime,
        node: Some(node),
        ..
    } = caller
    else {
        return Err(refused(
            "KindNotAllowed",
            format!("{} may not report on RuntimePolicies", caller.source()),
        ));
    };
    let Some((ns, name)) = policy_ref(&r.policy) else {
        return Err(refused(
            "Invalid",
            format!("{} is no policy reference", r.policy),
        ));
    };
    let api: Api<RuntimePolicy> = Api::namespaced(client.clone(), ns);
    let missing = |e: kube::Error| match e {
        kube::Error::Api(s) if s.code == 404 => refused(
            "NotFound",
            format!("RuntimePolicy {ns}/{name} does not exist"),
        ),
        other => WriteError::from(other),
    };
    if let Some(n) = &r.node {
        let entry = NodeEnforcement {
            node: node.name.clone(),
            enforcer: n.enforcer,
            ready: n.ready,
            reason: n.reason.clone(),
        };
        let body = NodeApply {
            api_version: "sightline.dev/v1alpha1",
            kind: "RuntimePolicy",
            status: NodeStatus { nodes: [&entry] },
        };
        let manager = field_manager(&format!("{}@{}", caller.source(), node.name), "");
        api.patch_status(
            name,
            &PatchParams::apply(&manager).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(missing)?;
    }
    if let Some(v) = &r.violations {
        // `Report::check` has read it as a time already.
        let last = v
            .last
            .parse::<jiff::Timestamp>()
            .map_err(|e| refused("Invalid", format!("violations.last: {e}")))?;
        for attempt in 1..=ATTEMPTS {
            let current = api.get_status(name).await.map_err(missing)?;
            let old = current.status.as_ref().map_or(0, |s| s.violations);
            let patch = CountPatch {
                metadata: Version {
                    resource_version: current.metadata.resource_version.clone(),
                },
                status: Counts {
                    violations: old.saturating_add(v.count),
                    last_violation: Time(last),
                },
            };
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 && attempt < ATTEMPTS => continue,
                Err(e) => return Err(missing(e)),
            }
        }
    }
    Ok(())
}
