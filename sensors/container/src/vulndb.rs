//! The sensor's copy of the vulnerability database, fetched from the
//! operator (`GET /api/v1/vulndb`) with the sensor's ServiceAccount token
//! and `If-None-Match`, so an unchanged database costs one small request.
//! A download is written to a side file, checked by reading it as a
//! database, and only then renamed over the cached copy: a broken or
//! truncated download never replaces a good database.
//!
//! With bundle keys pinned (`SIGHTLINE_BUNDLE_KEYS`, set by the operator
//! from its own), only a signed bundle whose signature, members and
//! database schema check out against them is taken; anything else is
//! refused with the reason, and the current database stays in use.

use std::path::{Path, PathBuf};

use sightline_scan::bundle::{self, PublicKey};
use sightline_scan::vuln::Database;

/// What a sensor says of its database (`Report.database`): when the one
/// in use (`db`) was built, and the last one it `refused`.
pub fn state(
    db: Option<&Database>,
    refused: Option<sightline_report::DatabaseRefusal>,
) -> sightline_report::DatabaseState {
    sightline_report::DatabaseState {
        built: db
            .map(|d| d.meta.built.clone())
            .filter(|b| b.parse::<jiff::Timestamp>().is_ok()),
        refused,
    }
}

impl FetchError {
    /// The refusal a sensor reports for this failure: a database that was
    /// refused or unusable; none when it could not be fetched at all.
    pub fn refusal(&self) -> Option<sightline_report::DatabaseRefusal> {
        let (reason, message) = match self {
            FetchError::Refused {
                reason, message, ..
            } => ((*reason).to_owned(), message.clone()),
            FetchError::Invalid { reason, .. } => ("invalid".to_owned(), reason.clone()),
            _ => return None,
        };
        let mut message = message;
        if message.len() > sightline_report::MAX_STRING {
            let mut end = sightline_report::MAX_STRING;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Some(sightline_report::DatabaseRefusal { reason, message })
    }
}

/// Largest database accepted.
const MAX_BYTES: u64 = 2 << 30;

/// Why a refresh failed; the previous database stays in use.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The token file could not be read.
    #[error("reading the token {path}: {source}")]
    Token {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The request failed.
    #[error("GET {url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The download is not a database.
    #[error("the database from {url} is unusable: {reason}")]
    Invalid {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The download is not a bundle the pinned keys accept.
    #[error("the database from {url} is refused ({reason}): {message}")]
    Refused {
        /// The URL.
        url: String,
        /// A short word for the reason (`bad_signature`, `schema`, `unsigned`, …).
        reason: &'static str,
        /// Why.
        message: String,
    },
    /// The cache file could not be written.
    #[error("writing {path}: {source}")]
    Cache {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Fetches the database when it changes.
pub struct Fetcher {
    url: String,
    token_file: PathBuf,
    cache: PathBuf,
    etag: Option<String>,
    http: reqwest::Client,
    keys: Vec<PublicKey>,
}

impl Fetcher {
    /// Fetches from `url` with the token in `token_file` (re-read each time:
    /// projected tokens rotate), keeping the database at `cache`.
    /// `ca` (PEM), when given, is the only CA trusted for the operator's
    /// certificate; a CA that is not PEM trusts nothing, so every fetch
    /// fails and says why rather than trusting the public CAs.
    pub fn new(url: String, token_file: PathBuf, cache: PathBuf, ca: Option<&[u8]>) -> Fetcher {
        let builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(600));
        let http = match sightline_report::client::trusting(builder, ca) {
            Ok(b) => b.build(),
            Err(e) => {
                tracing::error!("{e}: the vulnerability database cannot be fetched");
                reqwest::Client::builder()
                    .tls_built_in_root_certs(false)
                    .build()
            }
        }
        .unwrap_or_default();
        Fetcher {
            url,
            token_file,
            cache,
            etag: None,
            http,
            keys: Vec::new(),
        }
    }

    /// Takes only bundles signed by one of `keys` (none: bare databases).
    pub fn with_bundle_keys(mut self, keys: Vec<PublicKey>) -> Fetcher {
        self.keys = keys;
        self
    }

    /// The cached copy.
    pub fn cache(&self) -> &Path {
        &self.cache
    }

    /// A new database when the operator's differs from ours, `None` when
    /// ours is current.
    pub async fn refresh(&mut self) -> Result<Option<Database>, FetchError> {
        let http_err = |reason: String| FetchError::Http {
            url: self.url.clone(),
            reason,
        };
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|source| FetchError::Token {
                path: self.token_file.display().to_string(),
                source,
            })?;
        let mut req = self.http.get(&self.url).bearer_auth(token.trim());
        if let Some(etag) = &self.etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let mut resp = req.send().await.map_err(|e| http_err(e.to_string()))?;
        match resp.status() {
            reqwest::StatusCode::NOT_MODIFIED => return Ok(None),
            s if s.is_success() => {}
            s => {
                let body = resp.text().await.unwrap_or_default();
                return Err(http_err(format!("{s}: {}", body.trim())));
            }
        }
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let partial = self.cache.with_extension("download");
        let cache_err = |source| FetchError::Cache {
            path: partial.display().to_string(),
            source,
        };
        let mut file = tokio::fs::File::create(&partial).await.map_err(cache_err)?;
        let mut written = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| http_err(e.to_string()))? {
            written += chunk.len() as u64;
            if written > MAX_BYTES {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(http_err(format!("larger than {MAX_BYTES} bytes")));
            }
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .map_err(|source| FetchError::Cache {
                    path: partial.display().to_string(),
                    source,
                })?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|source| FetchError::Cache {
                path: partial.display().to_string(),
                source,
            })?;
        drop(file);
        let (check, keys, cache) = (partial.clone(), self.keys.clone(), self.cache.clone());
        let url = self.url.clone();
        let taken = tokio::task::spawn_blocking(move || take(&check, &keys, &cache, &url))
            .await
            .map_err(|e| http_err(e.to_string()))?;
        let _ = tokio::fs::remove_file(&partial).await;
        let db = taken?;
        self.etag = etag;
        Ok(Some(db))
    }
}

/// Checks the download at `partial` and, when it is usable, puts its
/// database at `cache`.
fn take(
    partial: &Path,
    keys: &[PublicKey],
    cache: &Path,
    url: &str,
) -> Result<Database, FetchError> {
    let mut head = Vec::with_capacity(512);
    std::fs::File::open(partial)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 512), &mut head))
        .map_err(|source| FetchError::Cache {
            path: partial.display().to_string(),
            source,
        })?;
    let refused = |reason, message: String| FetchError::Refused {
        url: url.to_owned(),
        reason,
        message,
    };
    match (bundle::looks_like_bundle(&head), keys.is_empty()) {
        (true, false) => bundle::extract_database(partial, keys, cache)
            .map(|(_, db)| db)
            .map_err(|e| refused(e.reason(), e.to_string())),
        (false, false) => Err(refused(
            "unsigned",
            "not a signed bundle, and bundle keys are pinned".into(),
        )),
        (true, true) => Err(refused(
            "no_key",
            "a signed bundle, but no key is pinned to check it (SIGHTLINE_BUNDLE_KEYS)".into(),
        )),
        (false, true) => {
            let db = Database::read(partial).map_err(|e| FetchError::Invalid {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
            std::fs::rename(partial, cache).map_err(|source| FetchError::Cache {
                path: cache.display().to_string(),
                source,
            })?;
            Ok(db)
        }
    }
}
