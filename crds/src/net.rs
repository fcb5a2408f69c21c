//! Small validated string types shared by several kinds.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// An IPv4 or IPv6 network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`),
/// checked by the API server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct Cidr(pub String);

impl JsonSchema for Cidr {
    fn schema_name() -> Cow<'static, str> {
        "Cidr".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A network in CIDR notation, such as 10.0.0.0/8 or 2001:db8::/32.",
            "maxLength": 64,
            "x-kubernetes-validations": [
                {"rule": "isCIDR(self)", "message": "must be a CIDR such as 10.0.0.0/8"}
            ]
        })
    }
}
