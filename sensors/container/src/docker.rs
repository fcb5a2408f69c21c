//! Docker Engine through its API socket: images, running containers,
//! events, and each image's content streamed out of the engine
//! (`GET /images/{id}/get`, a `docker save` archive) straight into the
//! analyzer, without a temporary file.

use std::collections::HashMap;
use std::io::{self, Read};

use bollard::Docker;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptions, ListContainersOptions, ListImagesOptions};
use futures::{Stream, StreamExt};
use sightline_scan::Limits;
use sightline_scan::source::{Image, docker_archive};

/// Why talking to the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The API answered with an error or not at all.
    #[error("Docker at {endpoint}: {what}: {source}")]
    Api {
        /// The socket.
        endpoint: String,
        /// What was asked.
        what: String,
        /// The error.
        source: bollard::errors::Error,
    },
    /// The image's content could not be analysed.
    #[error("image {image}: {source}")]
    Scan {
        /// The image ID.
        image: String,
        /// Why.
        source: sightline_scan::ScanError,
    },
    /// The analysis task failed.
    #[error("image {image}: analysis stopped: {reason}")]
    Task {
        /// The image ID.
        image: String,
        /// Why.
        reason: String,
    },
}

/// An image the engine has.
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
    /// Its name, without the leading `/`.
    pub name: String,
    /// The image as the container was started with it.
    pub image: String,
    /// The image's ID.
    pub image_id: String,
    /// State (`running`).
    pub state: String,
    /// Labels (the kubelet's `io.kubernetes.pod.*` among them).
    pub labels: HashMap<String, String>,
    /// When it started (RFC 3339), from inspecting it.
    pub started: Option<String>,
}

/// What an event asks the sensor to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// An image appeared or changed (pull, load, import, tag).
    Image(String),
    /// A container started.
    ContainerStarted(String),
    /// A container stopped or was removed.
    ContainerGone(String),
}

/// One Docker Engine.
#[derive(Clone)]
pub struct Engine {
    client: Docker,
    endpoint: String,
}

impl Engine {
    /// Connects and agrees on an API version (Debian's dockerd speaks 1.41;
    /// the client's default is newer and would be refused).
    pub async fn connect(endpoint: &str) -> Result<Engine, DockerError> {
        let err = |what: &str| {
            let endpoint = endpoint.to_owned();
            let what = what.to_owned();
            move |source| DockerError::Api {
                endpoint,
                what,
                source,
            }
        };
        let client = Docker::connect_with_unix(endpoint, 300, bollard::API_DEFAULT_VERSION)
            .map_err(err("connecting"))?
            .negotiate_version()
            .await
            .map_err(err("negotiating the API version"))?;
        Ok(Engine {
            client,
            endpoint: endpoint.to_owned(),
        })
    }

    fn err(&self, what: &str) -> impl FnOnce(bollard::errors::Error) -> DockerError {
        let endpoint = self.endpoint.clone();
        let what = what.to_owned();
        move |source| DockerError::Api {
            endpoint,
            what,
            source,
        }
    }

    /// The socket.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The engine's version (`20.10.24+dfsg1`).
    pub async fn version(&self) -> Result<String, DockerError> {
        let v = self
            .client
            .version()
            .await
            .map_err(self.err("reading the version"))?;
        Ok(v.version.unwrap_or_default())
    }

    /// Every image (not the intermediate ones).
    pub async fn images(&self) -> Result<Vec<ImageRef>, DockerError> {
        let list = self
            .client
            .list_images(Some(ListImagesOptions::default()))
            .await
            .map_err(self.err("listing images"))?;
        Ok(list
            .into_iter()
            .map(|i| ImageRef {
                id: i.id,
                repo_tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                repo_digests: i
                    .repo_digests
                    .into_iter()
                    .filter(|d| d != "<none>@<none>")
                    .collect(),
            })
            .collect())
    }

    /// One image, by ID or name.
    pub async fn image(&self, id: &str) -> Result<ImageRef, DockerError> {
        let i = self
            .client
            .inspect_image(id)
            .await
            .map_err(self.err(&format!("inspecting image {id}")))?;
        Ok(ImageRef {
            id: i.id.unwrap_or_else(|| id.to_owned()),
            repo_tags: i.repo_tags.unwrap_or_default(),
            repo_digests: i.repo_digests.unwrap_or_default(),
        })
    }

    /// Running containers, each inspected for its start time.
    pub async fn containers(&self) -> Result<Vec<ContainerRef>, DockerError> {
        let list = self
            .client
            .list_containers(Some(ListContainersOptions::default()))
            .await
            .map_err(self.err("listing containers"))?;
        let mut out = Vec::with_capacity(list.len());
        for c in list {
            let Some(id) = c.id else { continue };
            // Inspect for the start time; a container gone in between is skipped.
            let started = match self
                .client
                .inspect_container(
                    &id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
            {
                Ok(i) => i.state.and_then(|s| s.started_at),
                Err(_) => continue,
            };
            out.push(ContainerRef {
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                image: c.image.unwrap_or_default(),
                image_id: c.image_id.unwrap_or_default(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                labels: c.labels.unwrap_or_default(),
                started,
                id,
            });
        }
        Ok(out)
    }

    /// Image and container events, as changes to act on.
    pub fn changes(&self) -> impl Stream<Item = Result<Change, DockerError>> + '_ {
        let mut filters = HashMap::new();
        filters.insert(
            "type".to_owned(),
            vec!["image".to_owned(), "container".to_owned()],
        );
        self.client
            .events(Some(EventsOptions {
                filters: Some(filters),
                ..EventsOptions::default()
            }))
            .filter_map(|e| async move {
                match e {
                    Ok(msg) => change_of(&msg).map(Ok),
                    Err(source) => Some(Err(DockerError::Api {
                        endpoint: String::new(),
                        what: "watching events".into(),
                        source,
                    })),
                }
            })
    }

    /// Streams the image out of the engine into the analyzer. Memory stays
    /// bounded: at most a few chunks are in flight between the engine's
    /// response and the analysis thread.
    pub async fn analyze(&self, id: &str, limits: &Limits) -> Result<Image, DockerError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(8);
        let mut stream = self.client.export_image(id);
        let feed = async move {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(io::Error::other);
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        };
        let label = format!("image {id} from {}", self.endpoint);
        let limits = limits.clone();
        let work = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx,
                current: bytes::Bytes::new(),
            };
            docker_archive::analyze_stream(reader, &label, None, &limits)
        });
        let ((), joined) = tokio::join!(feed, work);
        let image = joined.map_err(|e| DockerError::Task {
            image: id.to_owned(),
            reason: e.to_string(),
        })?;
        image.map_err(|source| DockerError::Scan {
            image: id.to_owned(),
            source,
        })
    }
}

/// What an event means for the sensor, if anything.
fn change_of(msg: &EventMessage) -> Option<Change> {
    let id = msg.actor.as_ref()?.id.clone()?;
    let action = msg.action.as_deref()?;
    match msg.typ? {
        EventMessageTypeEnum::IMAGE => {
            matches!(action, "pull" | "load" | "import" | "tag").then_some(Change::Image(id))
        }
        EventMessageTypeEnum::CONTAINER => match action {
            "start" => Some(Change::ContainerStarted(id)),
            "die" | "destroy" => Some(Change::ContainerGone(id)),
            _ => None,
        },
        _ => None,
    }
}

/// Reads the chunks an async task sends, from a blocking thread.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
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
