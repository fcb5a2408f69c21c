//! OCI registries: [`client`] speaks the distribution API (auth, pages,
//! retries, bounds), [`image`] analyses an image straight from a registry
//! with the scan library, and [`sensor`] is the registry sensor the
//! operator's CronJob runs (`sightline-sensor registry`).

pub mod auth;
pub mod client;
pub mod image;
pub mod reference;
pub mod sensor;

pub use client::{Client, Limits, Registry, RegistryError};
pub use reference::Reference;
