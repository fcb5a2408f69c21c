//! A client of the OCI distribution API (`/v2/`), on reqwest.
//!
//! Why not the `oci-client` crate: it has no `_catalog` with pagination,
//! reads manifests and pages into memory without a bound, and offers no
//! hook for the retry policy (429 and 5xx with `Retry-After`) or for
//! counting requests; all four matter here, and the protocol is small.
//!
//! Every response body is read with a bound ([`Limits`]); manifests are
//! hashed and checked against the digest asked for and the registry's
//! `Docker-Content-Digest`; blobs stream (their digests are checked by the
//! analyzer as they pass). Requests that meet 429, a 5xx or a connection
//! error are retried with exponential backoff, honouring `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, LINK, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sightline_scan::source::{Descriptor, INDEX_TYPES, MANIFEST_TYPES};

use crate::auth::{Challenge, Credentials};

/// Bounds on what a registry may make the client hold or wait for.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest manifest or index.
    pub max_manifest_bytes: usize,
    /// Largest `_catalog` or tags page.
    pub max_page_bytes: usize,
    /// Most pages followed through `Link` headers.
    pub max_pages: usize,
    /// Entries asked for per `_catalog` or tags page (`n`).
    pub page_size: usize,
    /// Attempts per request (retries of 429, 5xx, connection errors).
    pub attempts: u32,
    /// Longest wait between attempts (a larger `Retry-After` is cut to it).
    pub max_backoff: Duration,
    /// Longest silence while reading a response before giving up.
    pub read_timeout: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Most redirects followed.
    pub max_redirects: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 8 << 20,
            max_page_bytes: 4 << 20,
            max_pages: 10_000,
            page_size: 100,
            attempts: 5,
            max_backoff: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_redirects: 5,
        }
    }
}

/// Why talking to a registry failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The HTTP client could not be built (a bad CA bundle).
    #[error("setting up the client for {registry}: {reason}")]
    Setup {
        /// The registry.
        registry: String,
        /// Why.
        reason: String,
    },
    /// The request failed (connection, TLS, timeout, redirects) even after retries.
    #[error("{what}: {source}")]
    Http {
        /// What was asked.
        what: String,
        /// The error.
        source: reqwest::Error,
    },
    /// The registry answered with an error status.
    #[error("{what}: the registry answered {status}{detail}")]
    Status {
        /// What was asked.
        what: String,
        /// The status.
        status: StatusCode,
        /// The registry's error message, if it gave one.
        detail: String,
    },
    /// A body broke a bound or is malformed.
    #[error("{what}: {reason}")]
    Body {
        /// What was read.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// Content does not hash to the digest it should have.
    #[error("{what}: expected digest {expected}, got {actual}")]
    Digest {
        /// What was read.
        what: String,
        /// The digest asked for or announced.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// Authentication failed (the token endpoint refused, or no credentials).
    #[error("{what}: authentication failed: {reason}")]
    Auth {
        /// What was asked.
        what: String,
        /// Why.
        reason: String,
    },
}

/// Counts of requests, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Every request sent (retries and token requests included).
    pub requests: AtomicU64,
    /// Blob GETs (layers and configs).
    pub blob_fetches: AtomicU64,
    /// Manifest and index GETs.
    pub manifest_fetches: AtomicU64,
    /// Attempts repeated after 429, 5xx or a connection error.
    pub retries: AtomicU64,
}

/// Where a registry is and how to reach it.
#[derive(Clone, Debug)]
pub struct Registry {
    /// `https://host[:port]` or `http://…`.
    pub base: String,
    /// Credentials for Basic auth or for the token endpoint.
    pub credentials: Option<Credentials>,
    /// Extra CA certificates (PEM) to trust.
    pub ca_pem: Option<Vec<u8>>,
}

/// A client of one registry.
pub struct Client {
    http: reqwest::Client,
    base: String,
    host: String,
    credentials: Option<Credentials>,
    /// Bearer tokens by scope, with when they expire.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// Whether the registry asked for Basic auth.
    basic: std::sync::atomic::AtomicBool,
    limits: Limits,
    /// Request counts.
    pub stats: Stats,
}

/// What the `Accept` header offers for manifests.
fn manifest_accept() -> String {
    INDEX_TYPES
        .iter()
        .chain(MANIFEST_TYPES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

fn sha256(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// The `next` target of a `Link` header (`</v2/_catalog?last=x&n=100>; rel="next"`).
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(LINK)?.to_str().ok()?;
    v.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| {
                target
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })
}

/// How long `Retry-After` asks to wait (seconds, or an HTTP date).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().to_owned();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(&v).ok()?.timestamp();
    let now = jiff::Timestamp::now();
    Some(Duration::from_secs(
        u64::try_from(at.as_second() - now.as_second()).unwrap_or(0),
    ))
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct CatalogPage {
    #[serde(default)]
    repositories: Vec<String>,
}

#[derive(Deserialize)]
struct TagsPage {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl Client {
    /// A client of `registry` within `limits`.
    pub fn new(registry: Registry, limits: Limits) -> Result<Client, RegistryError> {
        let base = registry.base.trim_end_matches('/').to_owned();
        let host = base
            .split_once("://")
            .map(|(_, h)| h.split('/').next().unwrap_or(h).to_owned())
            .unwrap_or_else(|| base.clone());
        let setup = |reason: String| RegistryError::Setup {
            registry: base.clone(),
            reason,
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(limits.connect_timeout)
            .read_timeout(limits.read_timeout)
            .redirect(reqwest::redirect::Policy::limited(limits.max_redirects))
            .user_agent(concat!("sightline/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &registry.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| setup(format!("the CA bundle is not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(setup("the CA bundle holds no certificate".into()));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build().map_err(|e| setup(e.to_string()))?;
        Ok(Client {
            http,
            base,
            host,
            credentials: registry.credentials,
            tokens: Mutex::default(),
            basic: false.into(),
            limits,
            stats: Stats::default(),
        })
    }

    /// `host[:port]`, as references and docker configs name the registry.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn auth_header(&self, scope: &str) -> Option<String> {
        if let Some((token, expires)) = self.tokens.lock().ok()?.get(scope)
            && *expires > Instant::now()
        {
            return Some(format!("Bearer {token}"));
        }
        if self.basic.load(Ordering::Relaxed) {
            return self.credentials.as_ref().map(Credentials::basic_header);
        }
        None
    }

    /// Answers a challenge: remembers Basic, or fetches a token for the scope.
    async fn authenticate(
        &self,
        challenge: &str,
        scope: &str,
        what: &str,
    ) -> Result<(), RegistryError> {
        let auth_err = |reason: String| RegistryError::Auth {
            what: what.to_owned(),
            reason,
        };
        let c = Challenge::parse(challenge)
            .ok_or_else(|| auth_err(format!("unreadable challenge '{challenge}'")))?;
        match c.scheme.as_str() {
            "basic" => {
                if self.credentials.is_none() {
                    return Err(auth_err(
                        "the registry wants a username and password, and none were given".into(),
                    ));
                }
                self.basic.store(true, Ordering::Relaxed);
                Ok(())
            }
            "bearer" => {
                let realm = c
                    .params
                    .get("realm")
                    .ok_or_else(|| auth_err("the Bearer challenge names no realm".into()))?;
                let mut req = self.http.get(realm);
                let mut query: Vec<(&str, &str)> = Vec::new();
                if let Some(s) = c.params.get("service") {
                    query.push(("service", s));
                }
                let scope = c.params.get("scope").map(String::as_str).unwrap_or(scope);
                query.push(("scope", scope));
                req = req.query(&query);
                if let Some(creds) = &self.credentials {
                    req = req.header(AUTHORIZATION, creds.basic_header());
                }
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                let resp = req.send().await.map_err(|source| RegistryError::Http {
                    what: format!("{what}: asking {realm} for a token"),
                    source,
                })?;
                if !resp.status().is_success() {
                    return Err(auth_err(format!(
                        "the token endpoint {realm} answered {}",
                        resp.status()
                    )));
                }
                let body = read_limited(resp, 1 << 20, "the token response").await?;
                let t: TokenResponse = serde_json::from_slice(&body)
                    .map_err(|e| auth_err(format!("the token response is not JSON: {e}")))?;
                let token = t
                    .token
                    .or(t.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| auth_err("the token response holds no token".into()))?;
                // Renewed a little before it expires (tokens last 60 s unless said).
                let life = Duration::from_secs(t.expires_in.unwrap_or(60).max(10));
                let expires = Instant::now() + life - Duration::from_secs(5);
                if let Ok(mut m) = self.tokens.lock() {
                    m.insert(scope.to_owned(), (token, expires));
                }
                Ok(())
            }
            other => Err(auth_err(format!("unsupported scheme '{other}'"))),
        }
    }

    /// Sends a request to `url` (absolute, or a path under the base),
    /// authenticating and retrying as needed; returns a success response.
    async fn send(
        &self,
        method: Method,
        url: &str,
        scope: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let url = if url.starts_with("http://") || url.starts_with("https://") {
            url.to_owned()
        } else {
            format!("{}{url}", self.base)
        };
        let mut authenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.http.request(method.clone(), &url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(h) = self.auth_header(scope) {
                req = req.header(AUTHORIZATION, h);
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let wait = match req.send().await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !authenticated => {
                    let challenge = resp
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                        .ok_or_else(|| RegistryError::Auth {
                            what: what.to_owned(),
                            reason: "401 without a WWW-Authenticate challenge".into(),
                        })?;
                    self.authenticate(&challenge, scope, what).await?;
                    authenticated = true;
                    continue;
                }
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp)
                    if (resp.status() == StatusCode::TOO_MANY_REQUESTS
                        || resp.status().is_server_error())
                        && attempt < self.limits.attempts =>
                {
                    retry_after(resp.headers())
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = read_limited(resp, 64 << 10, what).await.unwrap_or_default();
                    let detail = serde_json::from_slice::<ErrorBody>(&body)
                        .ok()
                        .and_then(|e| e.errors.into_iter().next())
                        .map(|e| format!(" ({}: {})", e.code, e.message))
                        .unwrap_or_default();
                    return Err(RegistryError::Status {
                        what: what.to_owned(),
                        status,
                        detail,
                    });
                }
                Err(e) if (e.is_connect() || e.is_timeout()) && attempt < self.limits.attempts => {
                    None
                }
                Err(source) => {
                    return Err(RegistryError::Http {
                        what: what.to_owned(),
                        source,
                    });
                }
            };
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            let backoff = Duration::from_millis(200 * 2u64.pow(attempt - 1));
            let wait = wait.unwrap_or(backoff).min(self.limits.max_backoff);
            tokio::time::sleep(wait).await;
        }
    }

    /// A manifest or index, by tag or digest: its descriptor (media type,
    /// digest, size) and bytes. The digest is the content's own, checked
    /// against the one asked for and the one the registry announces.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<(Descriptor, Vec<u8>), RegistryError> {
        let what = format!("manifest {repo}:{reference} from {}", self.host);
        self.stats.manifest_fetches.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .send(
                Method::GET,
                &format!("/v2/{repo}/manifests/{reference}"),
                &format!("repository:{repo}:pull"),
                Some(&manifest_accept()),
                &what,
            )
            .await?;
        let announced = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let body = read_limited(resp, self.limits.max_manifest_bytes, &what).await?;
        let digest = sha256(&body);
        for expected in [
            reference
                .starts_with("sha256:")
                .then(|| reference.to_owned()),
            announced.filter(|a| a.starts_with("sha256:")),
        ]
        .into_iter()
        .flatten()
        {
            if expected != digest {
                return Err(RegistryError::Digest {
                    what,
                    expected,
                    actual: digest,
                });
            }
        }
        #[derive(Deserialize)]
        struct Typed {
            #[serde(default, rename = "mediaType")]
            media_type: Option<String>,
        }
        let inner = serde_json::from_slice::<Typed>(&body)
            .map_err(|e| RegistryError::Body {
                what: what.clone(),
                reason: format!("malformed JSON: {e}"),
            })?
            .media_type;
        let media_type = inner
            .or(content_type)
            .filter(|t| INDEX_TYPES.contains(&t.as_str()) || MANIFEST_TYPES.contains(&t.as_str()))
            .ok_or_else(|| RegistryError::Body {
                what: what.clone(),
                reason: "neither an image manifest nor an index".into(),
            })?;
        let size = body.len() as u64;
        Ok((Descriptor::new(media_type, digest, size), body))
    }

    /// A blob's bytes as they arrive (the caller checks size and digest).
    pub async fn blob(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<impl Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static, RegistryError>
    {
        let what = format!("blob {digest} of {repo} from {}", self.host);
        self.stats.blob_fetches.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .send(
                Method::GET,
                &format!("/v2/{repo}/blobs/{digest}"),
                &format!("repository:{repo}:pull"),
                None,
                &what,
            )
            .await?;
        Ok(resp
            .bytes_stream()
            .map(move |c| c.map_err(|e| std::io::Error::other(format!("{what}: {e}")))))
    }

    /// Every repository (`_catalog`, following `Link` pages).
    pub async fn catalog(&self) -> Result<Vec<String>, RegistryError> {
        let what = format!("the catalog of {}", self.host);
        let first = format!("/v2/_catalog?n={}", self.limits.page_size);
        self.pages(&first, "registry:catalog:*", &what, |body| {
            serde_json::from_slice::<CatalogPage>(body).map(|p| p.repositories)
        })
        .await
    }

    /// Every tag of a repository (following `Link` pages).
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        let what = format!("the tags of {repo} on {}", self.host);
        self.pages(
            &format!("/v2/{repo}/tags/list?n={}", self.limits.page_size),
            &format!("repository:{repo}:pull"),
            &what,
            |body| serde_json::from_slice::<TagsPage>(body).map(|p| p.tags.unwrap_or_default()),
        )
        .await
    }

    async fn pages(
        &self,
        first: &str,
        scope: &str,
        what: &str,
        parse: impl Fn(&[u8]) -> serde_json::Result<Vec<String>>,
    ) -> Result<Vec<String>, RegistryError> {
        let mut out = Vec::new();
        let mut next = Some(first.to_owned());
        let mut seen = std::collections::HashSet::new();
        while let Some(url) = next.take() {
            if !seen.insert(url.clone()) || seen.len() > self.limits.max_pages {
                return Err(RegistryError::Body {
                    what: what.to_owned(),
                    reason: format!(
                        "the pages do not end (a Link repeats, or more than {} pages)",
                        self.limits.max_pages
                    ),
                });
            }
            let resp = self.send(Method::GET, &url, scope, None, what).await?;
            next = next_link(resp.headers());
            let body = read_limited(resp, self.limits.max_page_bytes, what).await?;
            let items = parse(&body).map_err(|e| RegistryError::Body {
                what: what.to_owned(),
                reason: format!("malformed JSON: {e}"),
            })?;
            out.extend(items);
        }
        Ok(out)
    }
}

/// Reads a response body of at most `limit` bytes.
async fn read_limited(
    resp: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, RegistryError> {
    let too_big = || RegistryError::Body {
        what: what.to_owned(),
        reason: format!("larger than {limit} bytes; refusing to read it"),
    };
    if resp.content_length().is_some_and(|l| l > limit as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| RegistryError::Http {
            what: what.to_owned(),
            source,
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn link_and_retry_after_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(r#"</v2/_catalog?last=b&n=2>; rel="next""#),
        );
        assert_eq!(next_link(&h).as_deref(), Some("/v2/_catalog?last=b&n=2"));
        h.insert(
            LINK,
            HeaderValue::from_static(r#"<https://x/a>; rel="prev""#),
        );
        assert_eq!(next_link(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a date in the past: no wait"
        );
    }
}
