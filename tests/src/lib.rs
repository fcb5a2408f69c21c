//! A real Kubernetes control plane on loopback, for tests and for
//! `cargo xtask cluster`.
//!
//! The binaries (etcd, and one multi-call binary with kube-apiserver,
//! kube-controller-manager, kube-scheduler, kubelet and kubectl) are built
//! from Go modules once and cached outside the work tree; `KUBEBUILDER_ASSETS`
//! pointing at existing binaries skips the build. Every process started here
//! is stopped by its PID when its owner is dropped.

pub mod archive;
pub mod binaries;
pub mod certs;
pub mod cluster;
pub mod containerd;
pub mod controlplane;
pub mod docker;
pub mod helpers;
pub mod identity;
pub mod images;
pub mod jail;
pub mod node;
pub mod postgres;
pub mod process;
pub mod registry;

pub use binaries::Binaries;
pub use controlplane::{ControlPlane, Options};

/// Errors of the test environment; each names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Building the Kubernetes binaries from Go modules failed.
    #[error(
        "building {what} from Go modules failed (log: {log}); is Go installed and the module proxy reachable?"
    )]
    GoBuild {
        /// Which binary.
        what: String,
        /// Where the build log is.
        log: String,
    },
    /// A binary is missing.
    #[error("{0}")]
    MissingBinary(String),
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Certs(#[from] rcgen::Error),
    /// A component did not become ready in time.
    #[error("{component} did not become ready within {seconds}s; its log is {log}")]
    NotReady {
        /// Which component.
        component: String,
        /// How long we waited.
        seconds: u64,
        /// Where its log is.
        log: String,
    },
    /// A DNS query or answer went wrong.
    #[error("DNS: {0}")]
    Dns(String),
    /// A component exited early.
    #[error("{component} exited with {status} during start-up; last log lines:\n{tail}")]
    Exited {
        /// Which component.
        component: String,
        /// Its exit status.
        status: String,
        /// The end of its log.
        tail: String,
    },
    /// Talking to the API server failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The client error.
        source: kube::Error,
    },
    /// A kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// A YAML document could not be parsed.
    #[error("parsing YAML: {0}")]
    Yaml(#[from] serde_saphyr::Error),
    /// A manifest names no kind the API server serves, or is malformed.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A command failed.
    #[error("{what} failed with {status}: {stderr}")]
    Command {
        /// The command.
        what: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A wait ran out of time.
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
