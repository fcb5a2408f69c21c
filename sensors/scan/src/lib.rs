//! Image analysis shared by the container, registry and CI sensors: image
//! layers in, SBOM and vulnerabilities out. It knows nothing of Kubernetes.
//!
//! Unfinished: this crate only reserves its place in the workspace. The
//! container sensor issue fills it (layer streaming, package databases,
//! OSV matching); until then no sensor binary exists.
