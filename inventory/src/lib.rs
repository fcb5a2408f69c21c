//! Sightline's inventory: the catalog that normalizes what sensors observe,
//! lifecycle enrichment, and the query language with its in-memory index.
//!
//! Nothing here talks to Kubernetes: the operator feeds Assets in, and the
//! CLI uses the same code for its client-side search.

pub mod catalog;
pub mod doc;
pub mod eval;
pub mod fields;
pub mod images;
pub mod index;
pub mod query;
