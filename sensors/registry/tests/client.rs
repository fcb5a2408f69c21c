//! The registry client against real registries and hostile ones: Debian's
//! docker-registry with htpasswd basic auth behind TLS signed by a CA the
//! test makes, and with token auth against a token server of the test's
//! own; then a fake registry that lies about sizes and digests, loops
//! redirects, drips bytes, floods a catalog page, answers malformed JSON
//! and asks to come back later.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use axum::extract::{Path as AxPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sightline_registry::auth::Credentials;
use sightline_registry::image::{Platforms, RepoBlobs, analyze};
use sightline_registry::{Client, Limits, Registry as Target, RegistryError};
use sightline_testenv::archive::{LayerTar, RunConfig, apk_layer, docker_archive};
use sightline_testenv::registry::{Auth, Registry, TokenServer};

/// Pushes a two-package Alpine-format image as `repo:tag`.
fn push_small(reg: &Registry, repo: &str, tag: &str) -> Result<()> {
    let dir = reg.scratch();
    let layer = apk_layer(
        dir,
        tag,
        b"ID=alpine\nVERSION_ID=3.19.1\n",
        b"P:musl\nV:1.2.4_git20230717-r4\nA:x86_64\no:musl\n\nP:zlib\nV:1.3.1-r0\nA:x86_64\no:zlib\n",
    )?;
    let archive = dir.join(format!("{tag}.tar"));
    docker_archive(
        &[&format!("{repo}:{tag}")],
        &[layer],
        &RunConfig::default(),
        &archive,
    )?;
    Ok(reg.push(&format!("docker-archive:{}", archive.display()), repo, tag)?)
}

/// Analyses `repo:tag` through `client`; the package names found.
async fn packages(client: Arc<Client>, repo: &str, tag: &str) -> Result<Vec<String>> {
    let (top, _) = client.manifest(repo, tag).await?;
    let store = RepoBlobs::new(client, repo, tokio::runtime::Handle::current());
    let images = tokio::task::spawn_blocking(move || {
        analyze(
            &store,
            &top,
            &Platforms::All,
            Vec::new(),
            &sightline_scan::Limits::default(),
        )
    })
    .await??;
    Ok(images[0]
        .image
        .analysis
        .packages
        .iter()
        .map(|p| p.name.clone())
        .collect())
}

fn creds(u: &str, p: &str) -> Option<Credentials> {
    Some(Credentials {
        username: u.into(),
        password: p.into(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_behind_tls_with_a_ca_of_our_own() -> Result<()> {
    let reg = Registry::start(
        Auth::Htpasswd {
            username: "ci".into(),
            password: "s3cret".into(),
        },
        true,
    )?;
    push_small(&reg, "team/app", "1.0")?;
    let ca = reg
        .ca_pem
        .clone()
        .context("the registry's CA")?
        .into_bytes();
    let client = |credentials, ca_pem| {
        Client::new(
            Target {
                base: reg.url.clone(),
                credentials,
                ca_pem,
            },
            Limits::default(),
        )
    };

    let good = Arc::new(client(creds("ci", "s3cret"), Some(ca.clone()))?);
    ensure!(good.catalog().await? == ["team/app"]);
    ensure!(good.tags("team/app").await? == ["1.0"]);
    ensure!(packages(good.clone(), "team/app", "1.0").await? == ["musl", "zlib"]);

    // Without credentials: the challenge asks for them, and the error says so.
    let e = client(None, Some(ca.clone()))?
        .catalog()
        .await
        .expect_err("no credentials");
    ensure!(
        e.to_string().contains("wants a username and password"),
        "{e}"
    );
    // Wrong ones: the registry's 401 stands.
    let e = client(creds("ci", "wrong"), Some(ca.clone()))?
        .catalog()
        .await
        .expect_err("bad password");
    ensure!(
        matches!(e, RegistryError::Status { status, .. } if status == StatusCode::UNAUTHORIZED),
        "{e}"
    );
    // Without the CA, TLS fails (the certificate is the test's own).
    let e = client(creds("ci", "s3cret"), None)?
        .catalog()
        .await
        .expect_err("untrusted");
    ensure!(matches!(e, RegistryError::Http { .. }), "{e}");
    // A CA bundle that is not one is refused when the client is made.
    let e = client(None, Some(b"not a certificate".to_vec()))
        .err()
        .context("bad CA")?;
    ensure!(e.to_string().contains("CA bundle"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_from_the_realm_the_challenge_names() -> Result<()> {
    let tokens = TokenServer::start("ci", "t0ken-pass")?;
    let reg = Registry::start(Auth::Token(tokens.settings.clone()), false)?;
    push_small(&reg, "team/app", "2.0")?;
    let pushed = tokens.issued();
    let client = Arc::new(Client::new(
        Target {
            base: reg.url.clone(),
            credentials: creds("ci", "t0ken-pass"),
            ca_pem: None,
        },
        Limits::default(),
    )?);
    ensure!(client.catalog().await? == ["team/app"]);
    ensure!(packages(client.clone(), "team/app", "2.0").await? == ["musl", "zlib"]);
    // One token for the catalog, one for the repository: reused, not re-asked.
    ensure!(
        tokens.issued() - pushed == 2,
        "tokens issued: {}",
        tokens.issued() - pushed
    );
    let wrong = Client::new(
        Target {
            base: reg.url.clone(),
            credentials: creds("ci", "nope"),
            ca_pem: None,
        },
        Limits::default(),
    )?;
    let e = wrong.tags("team/app").await.expect_err("bad password");
    ensure!(
        e.to_string().contains("token endpoint") && e.to_string().contains("401"),
        "{e}"
    );
    Ok(())
}

/// The fake registry's state: what it serves and how often it was asked.
#[derive(Default)]
struct Fake {
    busy_calls: AtomicUsize,
    manifest: Vec<u8>,
    index: Vec<u8>,
    config: Vec<u8>,
    layer: Vec<u8>,
}

fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        sha2::Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

async fn fake_get(State(fake): State<Arc<Fake>>, AxPath(path): AxPath<String>) -> Response {
    let oci = |t: &'static str, body: Vec<u8>| {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static(t));
        (h, body).into_response()
    };
    match path.as_str() {
        // A page far over the bound.
        "_catalog" => {
            let names: Vec<String> = (0..400_000).map(|i| format!("repo-{i:08}")).collect();
            axum::Json(serde_json::json!({"repositories": names})).into_response()
        }
        // Redirects to itself, forever.
        "loop/manifests/1" => {
            (StatusCode::FOUND, [("location", "/v2/loop/manifests/1")]).into_response()
        }
        // Headers, then a byte every two seconds.
        "slow/manifests/1" => {
            let drip = futures::stream::unfold(0u32, |n| async move {
                if n > 10 {
                    return None;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                Some((
                    Ok::<_, std::io::Error>(bytes::Bytes::from_static(b" ")),
                    n + 1,
                ))
            });
            axum::body::Body::from_stream(drip).into_response()
        }
        "bad/manifests/1" => oci(
            "application/vnd.oci.image.manifest.v1+json",
            b"{\"layers\": [".to_vec(),
        ),
        // The manifest is fine but the registry announces another digest.
        "announce/manifests/1" => {
            let mut r = oci(
                "application/vnd.oci.image.manifest.v1+json",
                fake.manifest.clone(),
            );
            r.headers_mut().insert(
                "docker-content-digest",
                HeaderValue::from_static(
                    "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                ),
            );
            r
        }
        // An index that under-states its manifest's size.
        p if p == "liar/manifests/1" || p == format!("liar/manifests/{}", sha(&fake.index)) => oci(
            "application/vnd.oci.image.index.v1+json",
            fake.index.clone(),
        ),
        p if p.starts_with("liar/manifests/sha256:") || p.starts_with("evil/manifests/") => oci(
            "application/vnd.oci.image.manifest.v1+json",
            fake.manifest.clone(),
        ),
        p if p.ends_with(&format!("/blobs/{}", sha(&fake.config))) => {
            fake.config.clone().into_response()
        }
        // The layer blob: other bytes than its digest says.
        p if p.starts_with("evil/blobs/") => {
            let mut tampered = fake.layer.clone();
            if let Some(b) = tampered.last_mut() {
                *b ^= 1;
            }
            tampered.into_response()
        }
        // Busy the first time, with Retry-After.
        "busy/tags/list" => {
            if fake.busy_calls.fetch_add(1, Ordering::Relaxed) == 0 {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "1")],
                    "slow down",
                )
                    .into_response()
            } else {
                axum::Json(serde_json::json!({"name": "busy", "tags": ["a", "b"]})).into_response()
            }
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_registries_get_clear_errors() -> Result<()> {
    // A real image's parts, from which the fake serves lies.
    let dir = tempfile::tempdir()?;
    let mut layer = LayerTar::create(&dir.path().join("l.tar"))?;
    layer.file("etc/os-release", b"ID=alpine\nVERSION_ID=3.19.1\n", 0o644)?;
    let layer = layer.finish()?;
    let layer_bytes = std::fs::read(&layer.path)?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(&layer_bytes), "size": layer_bytes.len()}],
    }))?;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha(&manifest), "size": manifest.len() - 10,
            "platform": {"os": "linux", "architecture": "amd64"},
        }],
    }))?;
    let fake = Arc::new(Fake {
        manifest,
        index,
        config,
        layer: layer_bytes,
        ..Fake::default()
    });
    let app = axum::Router::new()
        .route("/v2/{*path}", axum::routing::get(fake_get))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Arc::new(Client::new(
        Target {
            base,
            credentials: None,
            ca_pem: None,
        },
        Limits {
            read_timeout: Duration::from_secs(1),
            max_backoff: Duration::from_secs(2),
            ..Limits::default()
        },
    )?);
    let e = client.catalog().await.expect_err("an enormous page");
    ensure!(e.to_string().contains("larger than"), "{e}");
    let e = client
        .manifest("loop", "1")
        .await
        .expect_err("a redirect loop");
    ensure!(e.to_string().to_lowercase().contains("redirect"), "{e}");
    let e = client.manifest("slow", "1").await.expect_err("a slow drip");
    // reqwest reports the read timeout as a timed-out body read.
    ensure!(
        matches!(&e, RegistryError::Http { source, .. } if source.is_timeout() || format!("{source:?}").contains("TimedOut")),
        "{e:?}"
    );
    let e = client
        .manifest("bad", "1")
        .await
        .expect_err("malformed JSON");
    ensure!(e.to_string().contains("malformed JSON"), "{e}");
    let e = client
        .manifest("announce", "1")
        .await
        .expect_err("digest mismatch");
    ensure!(matches!(e, RegistryError::Digest { .. }), "{e}");

    // Lies the analysis catches: a size the index under-states, a blob
    // that is not what its digest says.
    for (repo, says) in [("liar", "size"), ("evil", "digest")] {
        match packages(client.clone(), repo, "1").await {
            Ok(p) => bail!("{repo}: accepted, found {p:?}"),
            Err(e) => ensure!(format!("{e:#}").contains(says), "{repo}: {e:#}"),
        }
    }

    // 429 with Retry-After: waited for, then answered.
    let before = client.stats.retries.load(Ordering::Relaxed);
    ensure!(client.tags("busy").await? == ["a", "b"]);
    ensure!(client.stats.retries.load(Ordering::Relaxed) == before + 1);
    Ok(())
}
