//! The container sensor: what a node's container runtimes hold, analysed
//! with the scan library and reported as `ContainerImage` and `Container`
//! Assets.
//!
//! Docker Engine is read through its API (images streamed out with the
//! image export, so nothing touches the node's disk); containerd through
//! CRI and its own API (layers streamed out of its content store).
//! Unfinished: the full SBOM and finding lists served by the operator.

pub mod config;
pub mod containerd;
pub mod docker;
pub mod node;
pub mod report;
pub mod run;
pub mod runtime;
pub mod vulndb;
