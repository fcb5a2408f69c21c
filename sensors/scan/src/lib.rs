//! Image analysis shared by the container, registry and CI sensors: image
//! layers in, SBOM and vulnerabilities out. It knows nothing of Kubernetes.
//!
//! Unfinished: so far only the version comparators vulnerability matching
//! rests on ([`version`]). Layer streaming, package databases and OSV
//! matching are still to come (the container-sensor issue); no sensor
//! binary exists yet.

pub mod version;
