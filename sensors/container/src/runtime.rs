//! What the sensor needs of a container runtime, whichever it is: images,
//! running containers, a stream of changes, and an image's content
//! streamed into the analyzer. [`Engine`] dispatches to Docker Engine
//! ([`crate::docker`]) or containerd ([`crate::containerd`]).

use std::collections::HashMap;
use std::io::{self, Read};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use sightline_crds::sensor::RuntimeKind;
use sightline_scan::Limits;
use sightline_scan::source::Image;

use crate::containerd::Containerd;
use crate::docker::Docker;

/// Why talking to a runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The API answered with an error or not at all.
    #[error("{runtime} at {endpoint}: {what}: {source}")]
    Api {
        /// `docker` or `containerd`.
        runtime: &'static str,
        /// The socket.
        endpoint: String,
        /// What was asked.
        what: String,
        /// The error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The image's content could not be analysed.
    #[error("image {image}: {source}")]
    Scan {
        /// The image ID.
        image: String,
        /// Why.
        source: sightline_scan::ScanError,
    },
    /// The analysis task failed, or the image is not where it should be.
    #[error("image {image}: {reason}")]
    Image {
        /// The image ID.
        image: String,
        /// Why.
        reason: String,
    },
}

/// An image a runtime has.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRef {
    /// Its ID: the config digest (`sha256:…`).
    pub id: String,
    /// Tags.
    pub repo_tags: Vec<String>,
    /// Registry digests (`repo@sha256:…`), for pulled images.
    pub repo_digests: Vec<String>,
}

/// A running container.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerRef {
    /// Its full ID.
    pub id: String,
    /// Its name (Docker's without the leading `/`; CRI's container name).
    pub name: String,
    /// The image as the container was started with it.
    pub image: String,
    /// The image's ID.
    pub image_id: String,
    /// State (`running`).
    pub state: String,
    /// Labels (the kubelet's `io.kubernetes.pod.*` among them).
    pub labels: HashMap<String, String>,
    /// When it started (RFC 3339).
    pub started: Option<String>,
}

/// What an event asks the sensor to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// An image appeared or changed (pull, load, import, tag), by ID or name.
    Image(String),
    /// A container started.
    ContainerStarted(String),
    /// A container stopped or was removed.
    ContainerGone(String),
}

/// One container runtime on the node.
#[derive(Clone)]
pub enum Engine {
    /// Docker Engine.
    Docker(Docker),
    /// containerd, through CRI and its own API.
    Containerd(Containerd),
}

impl Engine {
    /// Connects to the runtime of `kind` at `endpoint` (`unix://…`).
    pub async fn connect(kind: RuntimeKind, endpoint: &str) -> Result<Engine, EngineError> {
        Ok(match kind {
            RuntimeKind::Docker => Engine::Docker(Docker::connect(endpoint).await?),
            RuntimeKind::Containerd => Engine::Containerd(Containerd::connect(endpoint).await?),
        })
    }

    /// `docker` or `containerd`, as Assets name the runtime.
    pub fn kind(&self) -> &'static str {
        match self {
            Engine::Docker(_) => "docker",
            Engine::Containerd(_) => "containerd",
        }
    }

    /// The socket.
    pub fn endpoint(&self) -> &str {
        match self {
            Engine::Docker(d) => d.endpoint(),
            Engine::Containerd(c) => c.endpoint(),
        }
    }

    /// The runtime's version (`20.10.24+dfsg1`, `1.6.20~ds1`).
    pub async fn version(&self) -> Result<String, EngineError> {
        match self {
            Engine::Docker(d) => d.version().await,
            Engine::Containerd(c) => c.version().await,
        }
    }

    /// Every image.
    pub async fn images(&self) -> Result<Vec<ImageRef>, EngineError> {
        match self {
            Engine::Docker(d) => d.images().await,
            Engine::Containerd(c) => c.images().await,
        }
    }

    /// One image, by ID or name.
    pub async fn image(&self, id: &str) -> Result<ImageRef, EngineError> {
        match self {
            Engine::Docker(d) => d.image(id).await,
            Engine::Containerd(c) => c.image(id).await,
        }
    }

    /// Running containers.
    pub async fn containers(&self) -> Result<Vec<ContainerRef>, EngineError> {
        match self {
            Engine::Docker(d) => d.containers().await,
            Engine::Containerd(c) => c.containers().await,
        }
    }

    /// Changes to act on, as they happen.
    pub fn changes(&self) -> BoxStream<'_, Result<Change, EngineError>> {
        match self {
            Engine::Docker(d) => d.changes().boxed(),
            Engine::Containerd(c) => c.changes().boxed(),
        }
    }

    /// Streams the image with `id` out of the runtime into the analyzer.
    pub async fn analyze(&self, id: &str, limits: &Limits) -> Result<Image, EngineError> {
        match self {
            Engine::Docker(d) => d.analyze(id, limits).await,
            Engine::Containerd(c) => c.analyze(id, limits).await,
        }
    }
}

/// Reads the chunks an async task sends, from a blocking thread: how a
/// runtime's async byte stream reaches the analyzer, with only the few
/// chunks of the channel in flight.
pub(crate) struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl ChannelReader {
    /// A reader of what `feed` yields, and the future that feeds it (to be
    /// run beside the blocking reader).
    pub(crate) fn new<S>(feed: S) -> (ChannelReader, impl Future<Output = ()>)
    where
        S: Stream<Item = io::Result<bytes::Bytes>>,
    {
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(8);
        let pump = async move {
            let mut feed = std::pin::pin!(feed);
            while let Some(chunk) = feed.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        };
        (
            ChannelReader {
                rx,
                current: bytes::Bytes::new(),
            },
            pump,
        )
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
