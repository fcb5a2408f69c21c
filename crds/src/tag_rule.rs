//! `TagRule`: dynamic tags, Qualys-style. Every Asset matching the rule's
//! query carries the rule's tags, re-evaluated as Assets and rules change.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;

/// Tags for every Asset a query matches.
///
/// The API server cannot parse the query language, so the operator checks
/// it: `Ready=False` with reason `InvalidQuery` and the error (with its
/// column) as message, or reason `InvalidTags` for tag keys that are not
/// valid label-style keys.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sightline.dev",
    version = "v1alpha1",
    kind = "TagRule",
    shortname = "tagr",
    category = "sightline",
    status = "TagRuleStatus",
    printcolumn = r#"{"name":"Query","type":"string","jsonPath":".spec.query"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Matched","type":"integer","jsonPath":".status.matched"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TagRuleSpec {
    /// A search query (the language of `sightline search`), e.g.
    /// `kind:Node AND hardware.category:"Virtualized / Cloud"`. It is
    /// evaluated against Assets with their static tags, not other rules'
    /// dynamic tags, so rules never depend on each other.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// Tags (key → value) given to every matching Asset. When two rules give
    /// the same key, the rule whose name sorts first wins; static tags from
    /// activation keys win over dynamic ones.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 32))]
    pub tags: BTreeMap<String, String>,
}

/// What the operator found.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TagRuleStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the query parses and the tags are valid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many Assets the query matches.
    #[serde(default)]
    pub matched: i64,
}
