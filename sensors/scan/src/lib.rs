//! Image analysis shared by the container, registry and CI sensors: image
//! layers in, SBOM and vulnerabilities out. It knows nothing of Kubernetes.
//!
//! - [`Analyzer`] streams layers (plain, gzip or zstd tar), applies
//!   whiteouts, and reads the OS and package databases on the way;
//! - [`source`] finds an image's layers in a `docker save` archive or an OCI
//!   image layout, checking every digest;
//! - [`pkg`] parses package databases (dpkg, apk); [`os`] os-release;
//! - [`version`] compares versions per ecosystem;
//! - [`vuln`] builds the vulnerability database from OSV records and matches
//!   packages against it; [`bundle`] signs it for air-gapped clusters.
//!
//! Unfinished (the container-sensor issue): rpm, language packages,
//! containerd and registry sources.

mod analyzer;
pub mod bundle;
pub mod error;
pub mod os;
mod path;
pub mod pkg;
pub mod sbom;
pub mod source;
pub mod version;
pub mod vuln;

pub use analyzer::{Analysis, Analyzer, Deadline, LayerExpect, LayerInfo, Limits};
pub use error::ScanError;
