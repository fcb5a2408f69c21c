//! Errors of image analysis. Each names the image part it was reading
//! (layer, blob, file inside a layer) and what was wrong with it.

use std::io;

/// Why an image could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// Reading a file of the image source (archive, layout directory) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A layer is not a readable tar stream (truncated, corrupt, unknown
    /// compression).
    #[error("layer {layer}: {reason}")]
    Layer {
        /// The layer's position (0 = base) and digest when known.
        layer: String,
        /// What was wrong.
        reason: String,
    },
    /// A tar entry names a path that leaves the image root.
    #[error(
        "layer {layer}: entry '{path}' {reason}; refusing a layer that could write outside its root"
    )]
    UnsafePath {
        /// The layer.
        layer: String,
        /// The path as written in the archive.
        path: String,
        /// Why it is unsafe.
        reason: &'static str,
    },
    /// A limit protecting memory or time was exceeded.
    #[error("layer {layer}: {what} exceeds the limit of {limit} ({reason})")]
    Limit {
        /// The layer.
        layer: String,
        /// What grew too large.
        what: String,
        /// The limit, human-readable.
        limit: String,
        /// Why the limit exists.
        reason: &'static str,
    },
    /// Content does not match the digest or size its descriptor declares.
    #[error("{what}: expected {expected}, got {actual}")]
    Mismatch {
        /// The blob or layer.
        what: String,
        /// What the manifest or config declared.
        expected: String,
        /// What the content is.
        actual: String,
    },
    /// The image's manifest, index or config is malformed or incomplete.
    #[error("{what}: {reason}")]
    Manifest {
        /// Which document.
        what: String,
        /// What was wrong.
        reason: String,
    },
}

impl ScanError {
    pub(crate) fn manifest(what: impl Into<String>, reason: impl Into<String>) -> Self {
        ScanError::Manifest {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// Shorthand for mapping I/O errors with a description of what was read.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ScanError {
    let what = what.into();
    move |source| ScanError::Io { what, source }
}
