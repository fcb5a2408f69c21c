//! The `sightline.dev/v1alpha1` API.
//!
//! Every custom resource Sightline defines lives here, together with pure
//! helpers on them (which module a sensor type needs, how conditions merge).
//! Nothing in this crate talks to a cluster.

pub mod activation_key;
pub mod asset;
pub mod conditions;
pub mod connector;
pub mod crdgen;
pub mod duration;
pub mod image_policy;
pub mod names;
pub mod net;
pub mod rbac;
pub mod runtime_policy;
pub mod selector;
pub mod sensor;
pub mod tag_rule;
pub mod yaml;

pub use activation_key::{ActivationKey, ActivationKeySpec, ActivationKeyStatus, Module};
pub use asset::{Asset, AssetKind, AssetSpec, AssetStatus};
pub use conditions::Condition;
pub use connector::{Connector, ConnectorSpec, ConnectorStatus};
pub use image_policy::{ImagePolicy, ImagePolicySpec, ImagePolicyStatus};
pub use runtime_policy::{RuntimePolicy, RuntimePolicySpec, RuntimePolicyStatus};
pub use sensor::{Sensor, SensorSpec, SensorStatus, SensorType};
pub use tag_rule::{TagRule, TagRuleSpec, TagRuleStatus};

/// The API group of every Sightline resource.
pub const GROUP: &str = "sightline.dev";
/// The API version of every Sightline resource.
pub const VERSION: &str = "v1alpha1";
