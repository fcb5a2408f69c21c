//! A real OCI registry for tests: Debian's `docker-registry` (the CNCF
//! distribution registry 2.8) on a loopback port, its storage in a
//! temporary directory, anonymous, with htpasswd basic auth behind TLS, or
//! with token auth against a realm the test serves. Images are pushed with
//! skopeo. Stopped by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::certs::Ca;
use crate::docker::checked;
use crate::process::{Proc, free_port};
use crate::{Error, Result, io};

/// How clients authenticate.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Anyone may pull and push.
    Anonymous,
    /// htpasswd users over TLS (the registry requires TLS for it).
    Htpasswd {
        /// The user.
        username: String,
        /// The password.
        password: String,
    },
    /// Bearer tokens from a [`TokenServer`].
    Token(TokenSettings),
}

/// A running registry.
pub struct Registry {
    proc: Proc,
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// `http://…` or `https://…`.
    pub url: String,
    /// The CA that signed its certificate, PEM, when it serves TLS.
    pub ca_pem: Option<String>,
    auth: Auth,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry with `auth`; `tls` serves HTTPS with a
    /// certificate from a CA made here (always, for htpasswd).
    pub fn start(auth: Auth, tls: bool) -> Result<Registry> {
        Self::start_on(auth, tls, std::net::Ipv4Addr::LOCALHOST)
    }

    /// Starts a registry listening on `address` (the local cluster's
    /// gateway, so pods reach it).
    pub fn start_on(auth: Auth, tls: bool, address: std::net::Ipv4Addr) -> Result<Registry> {
        crate::docker::check_packages()?;
        let dir = tempfile::Builder::new()
            .prefix("sl-registry-")
            .tempdir()
            .map_err(io("creating the registry's directory"))?;
        let d = dir.path();
        let port = free_port()?;
        let host = format!("{address}:{port}");
        let tls = tls || matches!(auth, Auth::Htpasswd { .. });
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: {host}\n  secret: sightline-test\n",
            root = d.join("storage").display()
        );
        let mut ca_pem = None;
        if tls {
            let ca = Ca::new()?;
            let cert = ca.serving(
                "registry",
                &[&address.to_string(), "127.0.0.1", "localhost"],
            )?;
            std::fs::write(d.join("tls.crt"), &cert.cert).map_err(io("writing the certificate"))?;
            std::fs::write(d.join("tls.key"), &cert.key).map_err(io("writing the key"))?;
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("tls.crt").display(),
                d.join("tls.key").display()
            ));
            ca_pem = Some(ca.cert_pem());
        }
        match &auth {
            Auth::Anonymous => {}
            Auth::Htpasswd { username, password } => {
                let mut cmd = Command::new("/usr/bin/htpasswd");
                cmd.args(["-Bbn", username, password]);
                let line = checked(cmd, "htpasswd -B")?;
                std::fs::write(d.join("htpasswd"), line).map_err(io("writing htpasswd"))?;
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: sightline-test\n    path: {}\n",
                    d.join("htpasswd").display()
                ));
            }
            Auth::Token(t) => {
                std::fs::write(d.join("token.crt"), &t.root_cert)
                    .map_err(io("writing the token certificate"))?;
                config.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    t.realm,
                    d.join("token.crt").display()
                ));
            }
        }
        let config_path = d.join("config.yml");
        std::fs::write(&config_path, config).map_err(io("writing the registry's config"))?;
        let mut cmd = Command::new("/usr/bin/docker-registry");
        cmd.arg("serve").arg(&config_path);
        let mut proc = Proc::spawn("docker-registry", cmd, &d.join("registry.log"))?;
        let start = Instant::now();
        while std::net::TcpStream::connect(&host).is_err() {
            proc.check_running()?;
            if start.elapsed() > Duration::from_secs(20) {
                return Err(Error::NotReady {
                    component: "docker-registry".into(),
                    seconds: 20,
                    log: d.join("registry.log").display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let url = format!("{}://{host}", if tls { "https" } else { "http" });
        Ok(Registry {
            proc,
            host,
            url,
            ca_pem,
            auth,
            dir,
        })
    }

    /// Pushes the image in a `docker save` (or `oci:`-prefixed layout)
    /// source to `repo:tag` with skopeo; `--all` copies every platform of
    /// an index.
    pub fn push(&self, source: &str, repo: &str, tag: &str) -> Result<()> {
        let mut cmd = Command::new("/usr/bin/skopeo");
        cmd.args(["copy", "--quiet", "--all"]);
        let certs = self.dir.path().join("client-certs");
        match &self.ca_pem {
            Some(ca) => {
                std::fs::create_dir_all(&certs).map_err(io("creating skopeo's cert dir"))?;
                std::fs::write(certs.join("ca.crt"), ca).map_err(io("writing skopeo's CA"))?;
                cmd.arg(format!("--dest-cert-dir={}", certs.display()));
            }
            None => {
                cmd.arg("--dest-tls-verify=false");
            }
        }
        if let Some((u, p)) = self.credentials() {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.arg(source)
            .arg(format!("docker://{}/{repo}:{tag}", self.host))
            // skopeo keeps state here; never the user's.
            .env("HOME", self.dir.path())
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json"));
        checked(cmd, &format!("skopeo copy {source} to {repo}:{tag}")).map(drop)
    }

    /// The digest of what `repo:tag` points at, as skopeo reads it (the
    /// registry may hold a manifest rewritten on push).
    pub fn digest(&self, repo: &str, tag: &str) -> Result<String> {
        use sha2::{Digest, Sha256};
        let mut cmd = Command::new("/usr/bin/skopeo");
        cmd.args(["inspect", "--raw"]);
        match &self.ca_pem {
            Some(_) => cmd.arg(format!(
                "--cert-dir={}",
                self.dir.path().join("client-certs").display()
            )),
            None => cmd.arg("--tls-verify=false"),
        };
        if let Some((u, p)) = self.credentials() {
            cmd.arg(format!("--creds={u}:{p}"));
        }
        cmd.arg(format!("docker://{}/{repo}:{tag}", self.host))
            .env("HOME", self.dir.path());
        let raw = checked(cmd, &format!("skopeo inspect --raw {repo}:{tag}"))?;
        let hex: String = Sha256::digest(raw.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(format!("sha256:{hex}"))
    }

    /// The user and password clients need, if any.
    pub fn credentials(&self) -> Option<(String, String)> {
        match &self.auth {
            Auth::Htpasswd { username, password } => Some((username.clone(), password.clone())),
            Auth::Token(t) => Some((t.username.clone(), t.password.clone())),
            Auth::Anonymous => None,
        }
    }

    /// How many `GET` requests the registry served for paths containing
    /// `part` (from its access log).
    pub fn gets(&self, part: &str) -> usize {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("\"GET ") && l.contains(part))
            .count()
    }

    /// Its log file.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// A scratch directory that lives as long as the registry.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.proc.stop(Duration::from_secs(5));
    }
}

/// The `service` and `issuer` the registry and the token server agree on.
const SERVICE: &str = "sightline-test-registry";
const ISSUER: &str = "sightline-test-token-server";

/// What a registry needs to trust a [`TokenServer`].
#[derive(Clone, Debug)]
pub struct TokenSettings {
    /// The token endpoint (`http://127.0.0.1:<port>/token`).
    pub realm: String,
    /// The signing certificate, PEM.
    pub root_cert: String,
    /// The only user it issues tokens to.
    pub username: String,
    /// Its password.
    pub password: String,
}

/// A token server of the test's own, as Docker's token authentication
/// specifies: `GET /token?service=…&scope=…` with Basic credentials
/// answers a JWT (ES256, its certificate in `x5c`) granting the scopes
/// asked for. Counts the tokens it issues.
pub struct TokenServer {
    /// What the registry needs to trust it.
    pub settings: TokenSettings,
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    /// Starts it on a loopback port, for `username` and `password`.
    pub fn start(username: &str, password: &str) -> Result<TokenServer> {
        use base64::Engine;
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sightline test token signer");
        let cert = params.self_signed(&key)?;
        let x5c = base64::engine::general_purpose::STANDARD.encode(cert.der());
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| Error::MissingBinary(format!("the token signing key: {e}")))?;
        let port = free_port()?;
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let state = std::sync::Arc::new(TokenState {
            signer,
            x5c,
            username: username.to_owned(),
            password: password.to_owned(),
            issued: issued.clone(),
        });
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let app = axum::Router::new()
                    .route("/token", axum::routing::get(issue))
                    .with_state(state);
                let shutdown = async move {
                    let _ = tokio::task::spawn_blocking(move || stopped.recv()).await;
                };
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await;
            });
        });
        ready_rx
            .recv()
            .map_err(|_| Error::MissingBinary("the token server did not start".into()))?
            .map_err(io("binding the token server"))?;
        Ok(TokenServer {
            settings: TokenSettings {
                realm: format!("http://127.0.0.1:{port}/token"),
                root_cert: cert.pem(),
                username: username.to_owned(),
                password: password.to_owned(),
            },
            issued,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// How many tokens it has issued.
    pub fn issued(&self) -> usize {
        self.issued.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct TokenState {
    signer: ring::signature::EcdsaKeyPair,
    x5c: String,
    username: String,
    password: String,
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn issue(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<TokenState>>,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", state.username, state.password))
    );
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if given != expected {
        return (axum::http::StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    let mut access = Vec::new();
    for (k, v) in query
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
    {
        if k != "scope" {
            continue;
        }
        let scope = percent_decode(v);
        // `repository:team/app:pull,push`, `registry:catalog:*`.
        let mut parts = scope.rsplitn(2, ':');
        let (Some(actions), Some(rest)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some((kind, name)) = rest.split_once(':') else {
            continue;
        };
        access.push(serde_json::json!({
            "type": kind, "name": name,
            "actions": actions.split(',').collect::<Vec<_>>(),
        }));
    }
    let now = jiff::Timestamp::now().as_second();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [state.x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": state.username, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", state.issued.load(std::sync::atomic::Ordering::Relaxed)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let Ok(sig) = state
        .signer
        .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
    else {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "signing failed",
        )
            .into_response();
    };
    state
        .issued
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let token = format!("{signing_input}.{}", b64.encode(sig.as_ref()));
    axum::Json(serde_json::json!({"token": token, "access_token": token, "expires_in": 300}))
        .into_response()
}

/// `%3A` → `:` and `+` → space, as query strings encode them.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
