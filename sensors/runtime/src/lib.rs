//! The runtime sensor: loads the eBPF programs of `sensors/runtime-ebpf`,
//! turns their ring-buffer records into events attributed to containers and
//! pods, and enforces `RuntimePolicy` rules on the node.

pub mod attribution;
pub mod btf;
pub mod daemon;
pub mod event;
pub mod fanotify;
pub mod guard;
pub mod kmaps;
pub mod loader;
pub mod metrics;
pub mod ocsf;
pub mod rules;
pub mod sensor;
pub mod webhook;
