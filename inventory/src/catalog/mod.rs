//! Sightline's asset catalog: turns the raw facts sensors observe about an
//! asset into normalized, categorized, lifecycle-enriched products (vendor,
//! product, version, two-level category, lifecycle stage and dates).
//!
//! * [`catalog`]: loading and validating the three data documents
//!   (`taxonomy.yaml`, `normalization.yaml`, `lifecycle.yaml`);
//! * [`normalize`]: the observed-facts convention and the matching;
//! * [`lifecycle`]: version → cycle matching and stages.

#[allow(clippy::module_inception)]
// `catalog::catalog` once this crate becomes the `catalog` module.
pub mod catalog;
pub mod lifecycle;
pub mod normalize;

pub use catalog::{Catalog, CatalogError, Category};

#[cfg(test)]
mod tests;
