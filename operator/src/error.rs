//! The operator's one error type; variants name the operation that failed.

/// What went wrong, and with which object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Applying an owned object with server-side apply failed.
    #[error("applying {kind} {name}: {source}")]
    Apply {
        /// Kind of the object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting an object that is no longer desired failed.
    #[error("deleting {kind} {name}: {source}")]
    Delete {
        /// Kind of the object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Listing objects failed.
    #[error("listing {kind}: {source}")]
    List {
        /// Kind listed.
        kind: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading an object failed.
    #[error("reading {kind} {name}: {source}")]
    Get {
        /// Kind of the object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing an object's status failed.
    #[error("writing the status of {kind} {name}: {source}")]
    Status {
        /// Kind of the object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// An object arrived without a field the API server always sets.
    #[error("{kind} arrived without {field}")]
    MissingField {
        /// Kind of the object.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A watch store that a reconcile reads stopped before it first listed.
    #[error("the {kind} store stopped before it listed every {kind}")]
    StoreClosed {
        /// Kind the store holds.
        kind: &'static str,
    },
    /// Leader election failed.
    #[error("leader election on lease {lease}: {source}")]
    Lease {
        /// The lease.
        lease: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A short, stable label for metrics (`failures_total{reason}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Apply { .. } => "apply",
            Error::Delete { .. } => "delete",
            Error::List { .. } => "list",
            Error::Get { .. } => "get",
            Error::Status { .. } => "status",
            Error::MissingField { .. } => "missing_field",
            Error::StoreClosed { .. } => "store_closed",
            Error::Lease { .. } => "lease",
        }
    }
}

/// Result of the operator.
pub type Result<T, E = Error> = std::result::Result<T, E>;
