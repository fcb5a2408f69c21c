//! `sightline-operator`: the operator process.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use kube::runtime::WatchStreamExt;
use sightline_inventory::catalog::Catalog;
use sightline_operator::admission;
use sightline_operator::controllers::sensor::netpol::NetworkDefaults;
use sightline_operator::controllers::sensor::policy::SensorPolicy;
use sightline_operator::controllers::{self, InventoryOptions, sensor::render::Defaults};
use sightline_operator::details;
use sightline_operator::http::{self, Health, MetricsState};
use sightline_operator::ingest::{self, limits::Rate};
use sightline_operator::leader::{LeaderElector, LeaseConfig};
use sightline_operator::metrics::Metrics;
use sightline_operator::search::{self, Authorizer, SearchState, SharedIndex};
use sightline_operator::telemetry::{self, LogFormat};
use sightline_operator::tls;
use sightline_operator::vulndb;
use tokio::sync::watch;

/// Sightline's Kubernetes operator.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Namespace the operator runs in; token Secrets and the leader Lease live here.
    #[arg(long, env = "POD_NAMESPACE", default_value = "sightline-system")]
    namespace: String,
    /// Image of sensor pods when a Sensor names none.
    #[arg(
        long,
        env = "SIGHTLINE_SENSOR_IMAGE",
        default_value = "sightline/sensor:0.1.0"
    )]
    sensor_image: String,
    /// Address of /healthz and /readyz (plain HTTP), and of the API and
    /// /metrics too when `--tls-secret` is not set.
    #[arg(long, env = "SIGHTLINE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Serve the API (`/api/v1`) and /metrics (to callers allowed `get` on
    /// the non-resource URL `/metrics`) over TLS, on `--api-addr`, with the CA
    /// and certificate kept in this Secret of the operator's namespace: made
    /// and renewed by the operator when it holds `ca.key`, served as it is
    /// (cert-manager's, say) when it does not.
    #[arg(long, env = "SIGHTLINE_TLS_SECRET")]
    tls_secret: Option<String>,
    /// Address of the API over TLS.
    #[arg(long, env = "SIGHTLINE_API_ADDR", default_value = "0.0.0.0:8443")]
    api_addr: SocketAddr,
    /// A DNS name or IP address the API's certificate must hold besides
    /// the Service's names and cluster IP (repeat, or separate by commas).
    #[arg(long = "tls-name", env = "SIGHTLINE_TLS_NAMES", value_delimiter = ',')]
    tls_names: Vec<String>,
    /// How long a serving certificate the operator issues is valid; it is
    /// renewed when a third of that is left.
    #[arg(long, default_value_t = 90 * 86_400)]
    tls_validity_seconds: u64,
    /// A ConfigMap of the operator's namespace in which to publish the CA
    /// (`ca.crt`), for users' CLIs.
    #[arg(long, env = "SIGHTLINE_CA_CONFIG_MAP")]
    ca_config_map: Option<String>,
    /// Log format.
    #[arg(long, env = "SIGHTLINE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Elect a leader among replicas (turn off only when running exactly one).
    #[arg(long, env = "SIGHTLINE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, default_value = "sightline-operator")]
    lease_name: String,
    /// Seconds a lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Seconds between acquire/renew attempts.
    #[arg(long, default_value_t = 2)]
    lease_retry: u64,
    /// This replica's identity in the election (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// The URL container sensors fetch the vulnerability database from
    /// (this operator's `/api/v1/vulndb` through its Service), set in their
    /// pods as `SIGHTLINE_VULN_DB_URL`.
    #[arg(long, env = "SIGHTLINE_SENSOR_VULN_DB_URL")]
    sensor_vuln_db_url: Option<String>,
    /// The operator's API as sensors reach it (`http://10.96.0.12:8080`),
    /// set in their pods as `SIGHTLINE_API_URL`.
    #[arg(long, env = "SIGHTLINE_SENSOR_API_URL")]
    sensor_api_url: Option<String>,
    /// This operator's Service (in its namespace): sensors reach the API at
    /// its cluster IP, unless `--sensor-api-url` says otherwise.
    #[arg(long, env = "SIGHTLINE_API_SERVICE")]
    api_service: Option<String>,
    /// The vulnerability database served to container sensors at
    /// `/api/v1/vulndb` (built with `sightline db update|import`), or with
    /// `--bundle-key`, the signed bundle (`sightline bundle import`
    /// replaces it, so its directory must be writable for imports).
    #[arg(long, env = "SIGHTLINE_VULN_DB")]
    vuln_db: Option<std::path::PathBuf>,
    /// A public key (`ed25519:…`, from `sightline bundle keygen`) whose
    /// signed bundles are served; with any, only signed bundles are, and
    /// the sensors check them against the same keys. Repeat it, or
    /// separate keys with commas.
    #[arg(
        long = "bundle-key",
        value_name = "KEY",
        env = "SIGHTLINE_BUNDLE_KEYS",
        value_delimiter = ','
    )]
    bundle_keys: Vec<String>,
    /// Seconds between node sensors' full listings (and `lastSeen`
    /// refreshes), set in their pods; the sensors' default (300) when unset.
    #[arg(long, env = "SIGHTLINE_SENSOR_REFRESH_SECONDS")]
    sensor_refresh_seconds: Option<u64>,
    /// A runtime socket container sensors may mount besides the usual
    /// Docker and containerd paths (repeat the flag, or separate by commas).
    /// Sensors can never add to this list.
    #[arg(
        long = "allowed-runtime-socket",
        env = "SIGHTLINE_ALLOWED_RUNTIME_SOCKETS",
        value_delimiter = ','
    )]
    allowed_runtime_sockets: Vec<String>,
    /// Give each Sensor's pods a NetworkPolicy that admits nothing (but
    /// scrapes of runtime sensors' metrics from `--metrics-namespace`), and
    /// this operator's pods one that admits the accepted Sensors' pods, by
    /// namespace and label (`--operator-policy`, `--operator-pod-label`).
    #[arg(long, env = "SIGHTLINE_NETWORK_POLICIES")]
    network_policies: bool,
    /// A namespace allowed to scrape sensors' metrics (repeat, or separate
    /// by commas).
    #[arg(long = "metrics-namespace", value_delimiter = ',')]
    metrics_namespaces: Vec<String>,
    /// The name of the NetworkPolicy this operator keeps for its own pods.
    #[arg(long, default_value = "sightline-operator-sensors")]
    operator_policy: String,
    /// A label (`key=value`) of this operator's pods, which its
    /// NetworkPolicy selects (repeat it).
    #[arg(long = "operator-pod-label", value_parser = label_arg)]
    operator_pod_labels: Vec<(String, String)>,
    /// An image repository Sensors may run (`registry.example.com/sightline-sensor`),
    /// or, ending in `/`, every repository below a prefix; repeat or separate
    /// by commas. Only the default sensor image's repository when unset.
    #[arg(
        long = "allowed-sensor-image",
        env = "SIGHTLINE_ALLOWED_SENSOR_IMAGES",
        value_delimiter = ','
    )]
    allowed_sensor_images: Vec<String>,
    /// Apply the sensor types' ClusterRoles at start-up (the chart installs
    /// them and passes `false`, so the operator needs no right to create
    /// ClusterRoles).
    #[arg(long, env = "SIGHTLINE_APPLY_SENSOR_CLUSTER_ROLES", default_value_t = true, action = clap::ArgAction::Set)]
    apply_sensor_cluster_roles: bool,
    /// Reports each caller (a sensor pod, or a key's CI reports) may send
    /// per second, sustained.
    #[arg(long, env = "SIGHTLINE_INGEST_RATE", default_value_t = 5.0)]
    ingest_rate: f64,
    /// Reports each caller may send at once after being idle.
    #[arg(long, env = "SIGHTLINE_INGEST_BURST", default_value_t = 50.0)]
    ingest_burst: f64,
    /// Where to keep images' SBOMs and findings: a SQLite file path
    /// (`/var/lib/sightline/store/details.db`) or a `postgres://` URL
    /// shared by every replica. Without it the operator keeps no details
    /// and the detail endpoints answer 501.
    #[arg(long, env = "SIGHTLINE_DETAIL_STORE", hide_env_values = true)]
    detail_store: Option<String>,
    /// The CA (PEM file) a PostgreSQL detail store's certificate must be
    /// issued by, when its URL names no `sslrootcert`; the public roots
    /// otherwise. (TLS as the URL's `sslmode` says; see the README.)
    #[arg(long, env = "SIGHTLINE_DETAIL_STORE_CA", value_name = "FILE")]
    detail_store_ca: Option<std::path::PathBuf>,
    /// Seconds between sweeps that drop the details of Assets no longer
    /// in the inventory.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    detail_sweep_seconds: u64,
    /// Serve the image admission webhook (`/api/v1/admission/images`):
    /// pods are judged against the ImagePolicies.
    #[arg(long, env = "SIGHTLINE_ADMISSION")]
    admission: bool,
    /// The ValidatingWebhookConfiguration whose `caBundle` this operator
    /// keeps set to its CA (the chart's; it may only patch that one).
    #[arg(long, env = "SIGHTLINE_ADMISSION_WEBHOOK")]
    admission_webhook: Option<String>,
    /// A namespace whose pods are never judged (repeat, or separate by
    /// commas); the operator's own always is.
    #[arg(
        long = "admission-exclude-namespace",
        value_delimiter = ',',
        default_value = "kube-system"
    )]
    admission_excluded: Vec<String>,
    /// Remove Assets no sensor has seen for this long (`30d`, `12h`, …), or `forever`.
    #[arg(long, env = "SIGHTLINE_ASSET_RETENTION", default_value = "30d", value_parser = parse_retention)]
    asset_retention: Retention,
}

/// `--asset-retention`, parsed.
#[derive(Clone, Debug)]
struct Retention(Option<Duration>);

fn parse_retention(s: &str) -> std::result::Result<Retention, String> {
    controllers::inventory::parse_retention(s).map(Retention)
}

/// `--operator-pod-label key=value`.
fn label_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected key=value")),
    }
}

/// The node sensors' own refresh interval when the operator sets none.
const DEFAULT_SENSOR_REFRESH_SECONDS: u64 = 300;
/// A node runtime that sent no full listing for this many refreshes has
/// left (its node, or its sensor): its images no longer count it.
const SILENT_REFRESHES: u64 = 12;

/// Once per sensor refresh, while leading: forgets the node runtimes
/// silent for [`SILENT_REFRESHES`] refreshes.
async fn expire_silent_nodes(
    ingest: Arc<ingest::IngestState>,
    leading: Arc<AtomicBool>,
    refresh_seconds: u64,
) {
    let refresh = Duration::from_secs(refresh_seconds.max(1));
    let silence = refresh.saturating_mul(u32::try_from(SILENT_REFRESHES).unwrap_or(u32::MAX));
    let mut tick = tokio::time::interval(refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !leading.load(Ordering::Relaxed) {
            continue;
        }
        let Ok(before) = jiff::Timestamp::now().checked_sub(silence) else {
            continue;
        };
        match ingest.writer.expire_silent_nodes(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(images = n, "images lost nodes that went silent"),
            Err(e) => tracing::warn!(error = ?e, "expiring silent nodes' holdings"),
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    // Checked before anything starts, so a bad flag is a clear exit.
    let policy = SensorPolicy::new(
        &args.allowed_runtime_sockets,
        &args.allowed_sensor_images,
        &args.sensor_image,
    )
    .map_err(anyhow::Error::msg)?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let metrics = Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    // Only the leader takes reports; without an election this replica leads.
    let leading = Arc::new(AtomicBool::new(!args.leader_election));
    let catalog = Catalog::builtin().context("loading the built-in catalog")?;
    tracing::info!(version = catalog.version(), "catalog loaded");
    let builtin_catalog = catalog.version().to_owned();
    let (catalog_tx, catalog) = tokio::sync::watch::channel(Arc::new(catalog));
    // The sensor image a signed bundle pins, when it pins one.
    let (pinned_image_tx, pinned_image) = tokio::sync::watch::channel(None);
    let bundle_keys = args
        .bundle_keys
        .iter()
        .map(|k| k.parse::<sightline_scan::bundle::PublicKey>())
        .collect::<Result<Vec<_>, _>>()
        .context("--bundle-key")?;

    // Every replica keeps a search index and serves search, leader or not.
    let index: SharedIndex = Arc::default();
    let synced = Arc::new(AtomicBool::new(false));
    tokio::spawn(search::feed(client.clone(), index.clone(), synced.clone()));
    tokio::spawn(publish_inventory(index.clone(), metrics.clone()));

    let service = match &args.api_service {
        Some(name) => Some(
            service_address(&client, &args.namespace, name)
                .await
                .with_context(|| format!("finding the address of Service {name}"))?,
        ),
        None => None,
    };
    let tls = match &args.tls_secret {
        Some(secret) => Some(start_tls(&client, &args, secret, service.as_ref()).await?),
        None => None,
    };
    if let (Some(webhook), Some((_, ca))) = (&args.admission_webhook, &tls) {
        // The API server trusts the webhook's certificate through this CA.
        tokio::spawn(admission::keep_ca_bundle(
            client.clone(),
            webhook.clone(),
            ca.clone(),
        ));
    }

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("listening on {}", args.http_addr))?;
    let auth = Arc::new(Authorizer::new(client.clone()));
    let store = match &args.detail_store {
        Some(location) => {
            let store = sightline_operator::store::Store::open_with_ca(
                location,
                args.detail_store_ca.as_deref(),
            )
            .await
            .context("opening the detail store (--detail-store)")?;
            tracing::info!(engine = store.engine(), "detail store open");
            tokio::spawn(details::sweep(
                store.clone(),
                index.clone(),
                synced.clone(),
                leading.clone(),
                Duration::from_secs(args.detail_sweep_seconds),
            ));
            Some(store)
        }
        None => {
            tracing::warn!("no --detail-store: images' SBOMs and findings are not kept");
            None
        }
    };
    let ingest = Arc::new(ingest::IngestState::new(
        client.clone(),
        args.namespace.clone(),
        index.clone(),
        Rate {
            per_second: args.ingest_rate,
            burst: args.ingest_burst,
        },
        leading.clone(),
        metrics.clone(),
        store.clone(),
    ));
    tokio::spawn(expire_silent_nodes(
        ingest.clone(),
        leading.clone(),
        args.sensor_refresh_seconds
            .unwrap_or(DEFAULT_SENSOR_REFRESH_SECONDS),
    ));
    let details = match store {
        Some(store) => details::router(Arc::new(details::DetailsState::new(
            store,
            ingest.clone(),
            auth.clone(),
            leading.clone(),
            client.clone(),
        ))),
        None => details::unconfigured(),
    };
    let vulndb_state = Arc::new(
        vulndb::VulnDbState::new(
            args.vuln_db.clone(),
            bundle_keys.clone(),
            auth.clone(),
            ingest.auth.clone(),
            metrics.clone(),
        )
        .with_catalog(vulndb::CatalogSink {
            builtin_version: builtin_catalog,
            tx: catalog_tx,
        })
        .with_sensor_image(vulndb::ImageSink {
            policy: policy.clone(),
            tx: pinned_image_tx,
        }),
    );
    // A bundle's catalog is in use before the first Asset is reconciled.
    vulndb_state.preload().await;
    let health = http::router(Health {
        ready: ready.clone(),
    });
    let exported = metrics.clone();
    let admission = if args.admission {
        let mut excluded = args.admission_excluded.clone();
        excluded.push(args.namespace.clone());
        let (policies, writer) = kube::runtime::reflector::store();
        let watch = kube::runtime::reflector(
            writer,
            kube::runtime::watcher(
                kube::Api::<sightline_crds::ImagePolicy>::all(client.clone()),
                kube::runtime::watcher::Config::default(),
            ),
        )
        .default_backoff();
        tokio::spawn(futures::StreamExt::for_each(watch, |event| async move {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watching ImagePolicies");
            }
        }));
        tracing::info!(
            path = admission::PATH,
            "serving the image admission webhook"
        );
        admission::router(Arc::new(admission::AdmissionState::new(
            client.clone(),
            policies,
            index.clone(),
            synced.clone(),
            excluded,
            metrics.clone(),
        )))
    } else {
        axum::Router::new()
    };
    let api = search::router(SearchState {
        index: index.clone(),
        synced,
        auth: auth.clone(),
        metrics: metrics.clone(),
    })
    .merge(vulndb::router(vulndb_state))
    .merge(ingest::router(ingest))
    .merge(details)
    .merge(admission);
    let plain = match &tls {
        Some((config, _)) => {
            let api_listener = tokio::net::TcpListener::bind(args.api_addr)
                .await
                .with_context(|| format!("listening on {}", args.api_addr))?;
            // Metrics go where scrapers' tokens are safe, and only to
            // callers allowed `get /metrics`.
            let api = api.merge(http::metrics_router(MetricsState {
                metrics: exported,
                auth: Some(auth),
            }));
            tracing::info!(addr = %api_listener.local_addr()?, "serving /api/v1 and /metrics over TLS");
            tokio::spawn(tls::serve(api_listener, config.clone(), api));
            tracing::info!(addr = %listener.local_addr()?, "serving /healthz and /readyz");
            health
        }
        None => {
            tracing::warn!(
                addr = %listener.local_addr()?,
                "serving /api/v1 and /metrics over plain HTTP (no --tls-secret): tokens cross the network readable, metrics are open"
            );
            health.merge(api).merge(http::metrics_router(MetricsState {
                metrics: exported,
                auth: None,
            }))
        }
    };
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, plain).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = {
        let rx = stop_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    };

    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let elector = args.leader_election.then(|| {
        LeaderElector::new(
            client.clone(),
            LeaseConfig {
                namespace: args.namespace.clone(),
                name: args.lease_name.clone(),
                identity: identity.clone(),
                lease_duration: Duration::from_secs(args.lease_duration),
                retry: Duration::from_secs(args.lease_retry),
            },
        )
    });

    if let Some(e) = &elector {
        // A standby replica is healthy and ready: it is doing its job.
        ready.store(true, Ordering::Relaxed);
        tracing::info!(
            identity,
            lease = args.lease_name,
            "waiting to become leader"
        );
        tokio::select! {
            res = e.acquire() => res?,
            () = stopped() => return Ok(()),
        }
        tracing::info!(identity, "became leader");
    }
    metrics.leader.set(1);
    leading.store(true, Ordering::Relaxed);
    if args.apply_sensor_cluster_roles {
        sightline_operator::apply_sensor_cluster_roles(&client)
            .await
            .context("applying the sensor ClusterRoles")?;
    }
    ready.store(true, Ordering::Relaxed);

    let api_url = match (&args.sensor_api_url, &service) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(service)) => Some(service.url(tls.is_some())?),
        (None, None) => None,
    };
    match &api_url {
        Some(url) => tracing::info!(url, "sensors report to this API"),
        None => tracing::warn!(
            "neither --sensor-api-url nor --api-service is set: sensors cannot report"
        ),
    }
    let vuln_db_url = args.sensor_vuln_db_url.clone().or_else(|| {
        args.vuln_db
            .as_ref()
            .and(api_url.as_ref())
            .map(|u| format!("{u}/api/v1/vulndb"))
    });
    let defaults = Defaults {
        image: args.sensor_image.clone(),
        pinned_image: Some(pinned_image),
        api_url,
        vuln_db_url,
        bundle_keys: bundle_keys
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        api_ca: tls.map(|(_, ca)| ca),
        refresh_seconds: args.sensor_refresh_seconds,
        policy,
        network: args.network_policies.then(|| NetworkDefaults {
            metrics_namespaces: args.metrics_namespaces.clone(),
            operator_selector: args.operator_pod_labels.iter().cloned().collect(),
            operator_policy: args.operator_policy.clone(),
        }),
    };
    let run = controllers::run(
        client.clone(),
        args.namespace.clone(),
        defaults,
        InventoryOptions {
            catalog,
            retention: args.asset_retention.0,
            index,
        },
        metrics.clone(),
        stopped(),
    );
    // The controllers drain in-flight reconciles on shutdown; if that takes
    // longer than this, exit anyway without releasing the lease, so a
    // standby waits for it to expire rather than overlap with us.
    let drain_limit = {
        let stopped = stopped();
        async move {
            stopped.await;
            tokio::time::sleep(SHUTDOWN_DRAIN_LIMIT).await;
        }
    };
    let run = async move {
        tokio::select! {
            () = run => Ok(()),
            () = drain_limit => Err(anyhow::anyhow!(
                "reconciles still running {} s after the shutdown signal; exiting without releasing the lease",
                SHUTDOWN_DRAIN_LIMIT.as_secs()
            )),
        }
    };
    let result = match &elector {
        Some(e) => tokio::select! {
            res = run => res,
            lost = e.hold() => Err(anyhow::Error::new(lost).context("lost the leader lease; exiting so no two replicas reconcile")),
        },
        None => run.await,
    };
    if result.is_ok()
        && let Some(e) = &elector
        && let Err(err) = e.release().await
    {
        tracing::warn!(error = %err, "could not release the leader lease; a standby takes over when it expires");
    }
    metrics.leader.set(0);
    leading.store(false, Ordering::Relaxed);
    result
}

/// `http://<cluster IP>:<port>` of this operator's Service: sensors reach
/// it by address, so they need no cluster DNS (host-network sensors often
/// have none).
/// The operator's Service as sensors reach it.
struct ServiceAddress {
    /// `<name>.<namespace>`.
    name: String,
    namespace: String,
    cluster_ip: IpAddr,
    ports: Vec<(Option<String>, i32)>,
}

impl ServiceAddress {
    /// The API's URL at the cluster IP: the Service's `https` port when the
    /// API is served over TLS, its `http` port otherwise.
    fn url(&self, tls: bool) -> Result<String> {
        let (scheme, wanted) = if tls {
            ("https", "https")
        } else {
            ("http", "http")
        };
        let port = self
            .ports
            .iter()
            .find(|(name, _)| name.as_deref() == Some(wanted))
            .or(if tls { None } else { self.ports.first() })
            .map(|(_, port)| *port)
            .with_context(|| format!("Service {} has no port named {wanted}", self.name))?;
        Ok(match self.cluster_ip {
            IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{port}"),
            IpAddr::V4(ip) => format!("{scheme}://{ip}:{port}"),
        })
    }

    /// The names a certificate for the Service holds.
    fn dns_names(&self) -> Vec<String> {
        let (name, ns) = (&self.name, &self.namespace);
        vec![
            name.clone(),
            format!("{name}.{ns}"),
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}.svc.cluster.local"),
        ]
    }
}

async fn service_address(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<ServiceAddress> {
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client.clone(), namespace);
    let spec = services.get(name).await?.spec.unwrap_or_default();
    let ip = spec
        .cluster_ip
        .filter(|ip| !ip.is_empty() && ip != "None")
        .context("the Service has no cluster IP")?;
    Ok(ServiceAddress {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        cluster_ip: ip
            .parse()
            .with_context(|| format!("the Service's cluster IP {ip:?}"))?,
        ports: spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name, p.port))
            .collect(),
    })
}

/// Reads (or makes) the API's certificate, publishes the CA, and keeps the
/// certificate fresh. Returns the server configuration and the CA (PEM).
async fn start_tls(
    client: &kube::Client,
    args: &Args,
    secret: &str,
    service: Option<&ServiceAddress>,
) -> Result<(Arc<rustls::ServerConfig>, String)> {
    let mut dns = service.map(ServiceAddress::dns_names).unwrap_or_default();
    let mut ips: Vec<IpAddr> = service.map(|s| s.cluster_ip).into_iter().collect();
    for n in &args.tls_names {
        match n.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(n.clone()),
        }
    }
    anyhow::ensure!(
        !dns.is_empty() || !ips.is_empty(),
        "--tls-secret needs --api-service or --tls-name: the certificate must name the API"
    );
    let settings = tls::Settings {
        secret: secret.to_owned(),
        ca_config_map: args.ca_config_map.clone(),
        dns,
        ips,
        validity: Duration::from_secs(args.tls_validity_seconds.max(10)),
    };
    let secrets = kube::Api::namespaced(client.clone(), &args.namespace);
    let config_maps = kube::Api::namespaced(client.clone(), &args.namespace);
    let material = tls::ensure(&secrets, &settings).await?;
    if let Some(name) = &settings.ca_config_map {
        tls::publish_ca(&config_maps, name, &material.ca).await?;
    }
    let served = tls::Served::new(&material).context("serving the API's certificate")?;
    let config = tls::server_config(served.clone())?;
    let ca = material.ca.clone();
    tokio::spawn(async move {
        let e = tls::keep_fresh(secrets, config_maps, settings, served, material).await;
        // Sensors were given the old CA; a new process gives them the new one.
        tracing::error!("{e:#}");
        std::process::exit(1);
    });
    Ok((config, ca))
}

/// Longest the controllers may take to drain after SIGTERM.
const SHUTDOWN_DRAIN_LIMIT: Duration = Duration::from_secs(15);

/// Publishes the inventory summary as metrics every few seconds.
async fn publish_inventory(index: SharedIndex, metrics: Metrics) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let summary = search::read(&index).summary();
        metrics.set_inventory(&summary);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
