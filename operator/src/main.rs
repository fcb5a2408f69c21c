//! `sightline-operator`: the operator process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use sightline_inventory::catalog::Catalog;
use sightline_operator::controllers::sensor::policy::SensorPolicy;
use sightline_operator::controllers::{self, InventoryOptions, sensor::render::Defaults};
use sightline_operator::http::{self, Health};
use sightline_operator::ingest::{self, limits::Rate};
use sightline_operator::leader::{LeaderElector, LeaseConfig};
use sightline_operator::metrics::Metrics;
use sightline_operator::search::{self, Authorizer, SearchState, SharedIndex};
use sightline_operator::telemetry::{self, LogFormat};
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
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "SIGHTLINE_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
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
    /// `/api/v1/vulndb` (built with `sightline db import`).
    #[arg(long, env = "SIGHTLINE_VULN_DB")]
    vuln_db: Option<std::path::PathBuf>,
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

    // Every replica keeps a search index and serves search, leader or not.
    let index: SharedIndex = Arc::default();
    let synced = Arc::new(AtomicBool::new(false));
    tokio::spawn(search::feed(client.clone(), index.clone(), synced.clone()));
    tokio::spawn(publish_inventory(index.clone(), metrics.clone()));

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("listening on {}", args.http_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz, /metrics and /api/v1");
    let auth = Arc::new(Authorizer::new(client.clone()));
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
    ));
    let router = http::router(Health {
        ready: ready.clone(),
        metrics: metrics.clone(),
    })
    .merge(search::router(SearchState {
        index: index.clone(),
        synced,
        auth: auth.clone(),
        metrics: metrics.clone(),
    }))
    .merge(vulndb::router(Arc::new(vulndb::VulnDbState::new(
        args.vuln_db.clone(),
        auth,
        ingest.auth.clone(),
    ))))
    .merge(ingest::router(ingest));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
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

    let api_url = match (&args.sensor_api_url, &args.api_service) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(service)) => Some(
            service_url(&client, &args.namespace, service)
                .await
                .with_context(|| format!("finding the address of Service {service}"))?,
        ),
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
        api_url,
        vuln_db_url,
        refresh_seconds: args.sensor_refresh_seconds,
        policy,
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
async fn service_url(client: &kube::Client, namespace: &str, name: &str) -> Result<String> {
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client.clone(), namespace);
    let svc = services.get(name).await?;
    let spec = svc.spec.unwrap_or_default();
    let ip = spec
        .cluster_ip
        .filter(|ip| !ip.is_empty() && ip != "None")
        .context("the Service has no cluster IP")?;
    let ports = spec.ports.unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .or(ports.first())
        .map(|p| p.port)
        .context("the Service has no port")?;
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip
    };
    Ok(format!("http://{host}:{port}"))
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
