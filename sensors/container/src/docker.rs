//! Docker Engine through its API socket: images, running containers,
//! events, and each image's content streamed out of the engine
//! (`GET /images/{id}/get`, a `docker save` archive) straight into the
//! analyzer, without a temporary file.

use std::collections::HashMap;
use std::io;

use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptions, ListContainersOptions, ListImagesOptions};
use futures::{Stream, StreamExt};
use sightline_scan::Limits;
use sightline_scan::source::{Image, docker_archive};

use crate::runtime::{Change, ChannelReader, ContainerRef, EngineError, ImageRef};

fn api_err(endpoint: &str, what: &str) -> impl FnOnce(bollard::errors::Error) -> EngineError {
    let endpoint = endpoint.to_owned();
    let what = what.to_owned();
    move |source| EngineError::Api {
        runtime: "docker",
        endpoint,
        what,
        source: Box::new(source),
    }
}

/// One Docker Engine.
#[derive(Clone)]
pub struct Docker {
    client: bollard::Docker,
    endpoint: String,
}

impl Docker {
    /// Connects and agrees on an API version (Debian's dockerd speaks 1.41;
    /// the client's default is newer and would be refused).
    pub async fn connect(endpoint: &str) -> Result<Docker, EngineError> {
        let client =
            bollard::Docker::connect_with_unix(endpoint, 300, bollard::API_DEFAULT_VERSION)
                .map_err(api_err(endpoint, "connecting"))?
                .negotiate_version()
                .await
                .map_err(api_err(endpoint, "negotiating the API version"))?;
        Ok(Docker {
            client,
            endpoint: endpoint.to_owned(),
        })
    }

    fn err(&self, what: &str) -> impl FnOnce(bollard::errors::Error) -> EngineError {
        api_err(&self.endpoint, what)
    }

    /// The socket.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The engine's version (`20.10.24+dfsg1`).
    pub async fn version(&self) -> Result<String, EngineError> {
        let v = self
            .client
            .version()
            .await
            .map_err(self.err("reading the version"))?;
        Ok(v.version.unwrap_or_default())
    }

    /// Every image (not the intermediate ones).
    pub async fn images(&self) -> Result<Vec<ImageRef>, EngineError> {
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
    pub async fn image(&self, id: &str) -> Result<ImageRef, EngineError> {
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
    pub async fn containers(&self) -> Result<Vec<ContainerRef>, EngineError> {
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
    pub fn changes(&self) -> impl Stream<Item = Result<Change, EngineError>> + '_ {
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
            .filter_map(move |e| async move {
                match e {
                    Ok(msg) => change_of(&msg).map(Ok),
                    Err(source) => Some(Err(api_err(&self.endpoint, "watching events")(source))),
                }
            })
    }

    /// Streams the image out of the engine into the analyzer. Memory stays
    /// bounded: at most a few chunks are in flight between the engine's
    /// response and the analysis thread.
    pub async fn analyze(&self, id: &str, limits: &Limits) -> Result<Image, EngineError> {
        let stream = self
            .client
            .export_image(id)
            .map(|chunk| chunk.map_err(io::Error::other));
        let (reader, feed) = ChannelReader::new(stream);
        let label = format!("image {id} from {}", self.endpoint);
        let limits = limits.clone();
        let work = tokio::task::spawn_blocking(move || {
            docker_archive::analyze_stream(reader, &label, None, &limits)
        });
        let ((), joined) = tokio::join!(feed, work);
        let image = joined.map_err(|e| EngineError::Image {
            image: id.to_owned(),
            reason: format!("analysis stopped: {e}"),
        })?;
        image.map_err(|source| EngineError::Scan {
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
