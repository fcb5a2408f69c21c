//! containerd, as the kubelet uses it: images and running containers
//! through CRI (what `crictl` shows, with the kubelet's pod labels), and
//! through containerd's own API the three things CRI does not offer: the
//! image records' manifests, the content store's blobs (layers streamed
//! straight into the analyzer, never written anywhere) and the event
//! stream (an image created or updated, a task started).
//!
//! Everything lives in containerd's `k8s.io` namespace, the one CRI uses.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{
    ListImagesRequest as NativeListImages, ReadContentRequest, ReadContentResponse,
    SubscribeRequest,
};
use containerd_client::tonic::{self, Request, Streaming, transport::Channel};
use futures::{Stream, StreamExt};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerFilter, ContainerState, ContainerStateValue, ContainerStatusRequest, ImageSpec,
    ImageStatusRequest, ListContainersRequest, ListImagesRequest, VersionRequest,
};
use prost::Message;
use sightline_scan::Limits;
use sightline_scan::ScanError;
use sightline_scan::source::blobs::{self, Blobs};
use sightline_scan::source::{Descriptor, Image, Platform};

use crate::runtime::{Change, ContainerRef, EngineError, ImageRef};

/// The containerd namespace CRI keeps the kubelet's images and containers in.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// Most image records whose manifests are remembered (target digest →
/// config digest), so a refresh does not read every manifest again.
const MAX_RESOLVED: usize = 4096;

/// One containerd.
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    endpoint: String,
    /// Image record targets already resolved to their config digest.
    resolved: Arc<Mutex<HashMap<String, String>>>,
}

impl Containerd {
    /// Connects to the socket (`unix:///run/containerd/containerd.sock`)
    /// and checks that it serves CRI.
    pub async fn connect(endpoint: &str) -> Result<Containerd, EngineError> {
        let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
        let channel = containerd_client::connect(path)
            .await
            .map_err(|e| api_err(endpoint, "connecting")(Box::new(e)))?;
        let c = Containerd {
            channel,
            endpoint: endpoint.to_owned(),
            resolved: Arc::default(),
        };
        c.version().await?;
        Ok(c)
    }

    /// The socket.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn err(&self, what: &str) -> impl FnOnce(tonic::Status) -> EngineError {
        let f = api_err(&self.endpoint, what);
        move |status| f(Box::new(status))
    }

    fn cri_runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    fn cri_images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
    }

    /// The runtime's version as CRI reports it (`1.6.20~ds1`).
    pub async fn version(&self) -> Result<String, EngineError> {
        let v = self
            .cri_runtime()
            .version(VersionRequest::default())
            .await
            .map_err(self.err(
                "asking CRI for the version (is the CRI plugin enabled in containerd's config?)",
            ))?
            .into_inner();
        Ok(v.runtime_version)
    }

    /// Every image CRI knows.
    pub async fn images(&self) -> Result<Vec<ImageRef>, EngineError> {
        let list = self
            .cri_images()
            .list_images(ListImagesRequest::default())
            .await
            .map_err(self.err("listing images"))?
            .into_inner();
        Ok(list.images.into_iter().map(image_ref).collect())
    }

    /// One image, by ID or name.
    pub async fn image(&self, id: &str) -> Result<ImageRef, EngineError> {
        let status = self
            .cri_images()
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: id.to_owned(),
                    ..ImageSpec::default()
                }),
                verbose: false,
            })
            .await
            .map_err(self.err(&format!("inspecting image {id}")))?
            .into_inner();
        status
            .image
            .map(image_ref)
            .ok_or_else(|| EngineError::Image {
                image: id.to_owned(),
                reason: format!("containerd at {} does not have it", self.endpoint),
            })
    }

    /// Running containers, each with its start time.
    pub async fn containers(&self) -> Result<Vec<ContainerRef>, EngineError> {
        let mut cri = self.cri_runtime();
        let list = cri
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    state: Some(ContainerStateValue {
                        state: ContainerState::ContainerRunning as i32,
                    }),
                    ..ContainerFilter::default()
                }),
            })
            .await
            .map_err(self.err("listing containers"))?
            .into_inner();
        let mut out = Vec::with_capacity(list.containers.len());
        for c in list.containers {
            // A container gone in between is skipped.
            let Ok(status) = cri
                .container_status(ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await
            else {
                continue;
            };
            let status = status.into_inner().status.unwrap_or_default();
            let image_id = if c.image_ref.starts_with("sha256:") {
                c.image_ref.clone()
            } else {
                // Some CRI versions give a repo digest here: ask for the ID.
                match self.image(&c.image_ref).await {
                    Ok(i) => i.id,
                    Err(_) => c.image_ref.clone(),
                }
            };
            out.push(ContainerRef {
                name: c.metadata.map(|m| m.name).unwrap_or_default(),
                image: status
                    .image
                    .map(|i| i.image)
                    .or(c.image.map(|i| i.image))
                    .unwrap_or_default(),
                image_id,
                state: "running".to_owned(),
                labels: c.labels.into_iter().collect(),
                started: (status.started_at > 0)
                    .then(|| jiff::Timestamp::from_nanosecond(i128::from(status.started_at)))
                    .and_then(Result::ok)
                    .map(|t| t.to_string()),
                id: c.id,
            });
        }
        Ok(out)
    }

    /// Image and task events of CRI's namespace, as changes to act on.
    pub fn changes(&self) -> impl Stream<Item = Result<Change, EngineError>> + '_ {
        let mut events = EventsClient::new(self.channel.clone());
        let filters = vec![
            format!(r#"namespace=={CRI_NAMESPACE},topic~="^/images/(create|update)$""#),
            format!(r#"namespace=={CRI_NAMESPACE},topic=="/tasks/start""#),
        ];
        let endpoint = self.endpoint.clone();
        let this = self.clone();
        futures::stream::once(async move {
            events
                .subscribe(SubscribeRequest { filters })
                .await
                .map(tonic::Response::into_inner)
        })
        .flat_map(move |subscribed| match subscribed {
            Ok(stream) => stream
                .filter_map(|e| async move {
                    match e {
                        Ok(envelope) => change_of(&envelope.topic, envelope.event).map(Ok),
                        Err(status) => Some(Err(status)),
                    }
                })
                .boxed(),
            Err(status) => futures::stream::once(async move { Err(status) }).boxed(),
        })
        .filter_map(move |r| {
            let this = this.clone();
            async move {
                match r {
                    // A pod's sandbox starts a task too; only containers matter.
                    Ok(Change::ContainerStarted(id)) if this.is_sandbox(&id).await => None,
                    other => Some(other),
                }
            }
        })
        .map(move |r| r.map_err(|status| api_err(&endpoint, "watching events")(Box::new(status))))
    }

    /// Streams the image with `id` (its config digest) out of the content
    /// store into the analyzer: the image record whose manifest (for this
    /// node's platform) names that config is found, then its blobs are read.
    pub async fn analyze(&self, id: &str, limits: &Limits) -> Result<Image, EngineError> {
        let records = self.records().await?;
        let tags = self
            .image(id)
            .await
            .map(|i| i.repo_tags)
            .unwrap_or_default();
        let this = self.clone();
        let id_owned = id.to_owned();
        let limits = limits.clone();
        let handle = tokio::runtime::Handle::current();
        let joined = tokio::task::spawn_blocking(move || {
            let store = ContentStore {
                handle,
                client: ContentClient::new(this.channel.clone()),
            };
            let platform = Platform::host();
            let mut last_error = None;
            for target in &records {
                let known = this
                    .resolved
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&target.digest).cloned());
                if known.as_deref().is_some_and(|c| c != id_owned) {
                    continue;
                }
                let resolved = match blobs::resolve(&store, target, &platform) {
                    Ok(r) => r,
                    Err(e) => {
                        last_error = Some(e);
                        continue;
                    }
                };
                if let Ok(mut m) = this.resolved.lock() {
                    if m.len() >= MAX_RESOLVED {
                        m.clear();
                    }
                    m.insert(target.digest.clone(), resolved.config_digest().to_owned());
                }
                if resolved.config_digest() == id_owned {
                    return blobs::analyze_resolved(&store, &resolved, tags, &limits)
                        .map_err(|source| EngineError::Scan {
                            image: id_owned.clone(),
                            source,
                        });
                }
            }
            Err(EngineError::Image {
                image: id_owned.clone(),
                reason: match last_error {
                    Some(e) => format!(
                        "no image record of containerd's {CRI_NAMESPACE} namespace resolves to it for {platform}; one could not be read: {e}"
                    ),
                    None => format!(
                        "no image record of containerd's {CRI_NAMESPACE} namespace resolves to it for {platform}"
                    ),
                },
            })
        })
        .await;
        joined.map_err(|e| EngineError::Image {
            image: id.to_owned(),
            reason: format!("analysis stopped: {e}"),
        })?
    }

    /// Whether the containerd container `id` is a CRI pod sandbox (CRI
    /// labels its records with their kind).
    async fn is_sandbox(&self, id: &str) -> bool {
        use containerd_client::services::v1::GetContainerRequest;
        use containerd_client::services::v1::containers_client::ContainersClient;
        let got = ContainersClient::new(self.channel.clone())
            .get(namespaced(GetContainerRequest { id: id.to_owned() }))
            .await;
        got.ok()
            .and_then(|r| r.into_inner().container)
            .and_then(|c| c.labels.get("io.cri-containerd.kind").cloned())
            .is_some_and(|kind| kind == "sandbox")
    }

    /// The targets (manifest or index descriptors) of every image record
    /// in CRI's namespace, each once.
    async fn records(&self) -> Result<Vec<Descriptor>, EngineError> {
        let list = ImagesClient::new(self.channel.clone())
            .list(namespaced(NativeListImages::default()))
            .await
            .map_err(self.err("listing image records"))?
            .into_inner();
        let mut seen = std::collections::HashSet::new();
        Ok(list
            .images
            .into_iter()
            .filter_map(|i| i.target)
            .filter(|t| seen.insert(t.digest.clone()))
            .map(|t| {
                Descriptor::new(
                    t.media_type,
                    t.digest,
                    u64::try_from(t.size).unwrap_or_default(),
                )
            })
            .collect())
    }
}

fn api_err(
    endpoint: &str,
    what: &str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> EngineError {
    let endpoint = endpoint.to_owned();
    let what = what.to_owned();
    move |source| EngineError::Api {
        runtime: "containerd",
        endpoint,
        what,
        source,
    }
}

/// A request carrying the namespace containerd's own API needs.
fn namespaced<T>(message: T) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut().insert(
        "containerd-namespace",
        tonic::metadata::MetadataValue::from_static(CRI_NAMESPACE),
    );
    req
}

fn image_ref(i: k8s_cri::v1::Image) -> ImageRef {
    ImageRef {
        id: i.id,
        repo_tags: i.repo_tags,
        repo_digests: i.repo_digests,
    }
}

/// The label CRI puts on the image records it has taken in: an image
/// event without it comes before CRI knows the image (it would not be
/// found yet); CRI's own update with the label follows.
const CRI_MANAGED: &str = "io.cri-containerd.image";

/// What an event means for the sensor, if anything.
fn change_of(topic: &str, event: Option<prost_types::Any>) -> Option<Change> {
    use containerd_client::services::v1::{ImageCreate, ImageUpdate};
    let value = event?.value;
    let managed = |labels: &HashMap<String, String>| labels.contains_key(CRI_MANAGED);
    match topic {
        "/images/create" => ImageCreate::decode(value.as_slice())
            .ok()
            .filter(|e| managed(&e.labels))
            .map(|e| Change::Image(e.name)),
        "/images/update" => ImageUpdate::decode(value.as_slice())
            .ok()
            .filter(|e| managed(&e.labels))
            .map(|e| Change::Image(e.name)),
        "/tasks/start" => containerd_client::events::TaskStart::decode(value.as_slice())
            .ok()
            .map(|e| Change::ContainerStarted(e.container_id)),
        _ => None,
    }
}

/// containerd's content store, read from the analysis thread: each blob is
/// a server stream of chunks, pulled one at a time as the analyzer reads.
struct ContentStore {
    handle: tokio::runtime::Handle,
    client: ContentClient<Channel>,
}

impl Blobs for ContentStore {
    fn open(&self, desc: &Descriptor, what: &str) -> Result<Box<dyn Read + '_>, ScanError> {
        let digest = desc.digest.as_str();
        blobs::sha256_hex(digest, what)?;
        let mut client = self.client.clone();
        let request = namespaced(ReadContentRequest {
            digest: digest.to_owned(),
            offset: 0,
            size: 0,
        });
        let stream = self
            .handle
            .block_on(client.read(request))
            .map_err(|status| ScanError::Io {
                what: format!("reading {what} from containerd's content store"),
                source: io::Error::other(status.message().to_owned()),
            })?
            .into_inner();
        Ok(Box::new(ContentReader {
            handle: self.handle.clone(),
            stream,
            chunk: Vec::new(),
            at: 0,
        }))
    }
}

struct ContentReader {
    handle: tokio::runtime::Handle,
    stream: Streaming<ReadContentResponse>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.handle.block_on(self.stream.message()) {
                Ok(Some(m)) => {
                    self.chunk = m.data;
                    self.at = 0;
                }
                Ok(None) => return Ok(0),
                Err(status) => {
                    return Err(io::Error::other(format!(
                        "containerd's content store: {}",
                        status.message()
                    )));
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
