//! The client sensors and the CLI send reports with: it reads the token
//! again for every request (projected ServiceAccount tokens are rotated
//! by the kubelet), splits large reports, waits out 429s and a standby
//! replica's 503s, and turns refusals into errors that say why.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

use crate::{
    ApiError, INGEST_PATH, Invalid, MAX_OBSERVATIONS, Observation, Receipt, RecordedList, Report,
};

/// How a caller proves who it is.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// A file holding a token, read again for each request (a projected
    /// ServiceAccount token with audience [`crate::AUDIENCE`]).
    TokenFile(PathBuf),
    /// A token (an activation key's, for CI).
    Token(String),
}

/// Why a report did not get through.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The report breaks the contract (nothing was sent).
    #[error("the report is invalid: {0}")]
    Invalid(#[from] Invalid),
    /// The token could not be read.
    #[error("reading the token {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The operator refused the request.
    #[error("the operator refused the report ({status} {reason}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The operator's reason.
        reason: String,
        /// Its words.
        message: String,
    },
    /// The operator could not be reached or answered nonsense.
    #[error("reaching the operator at {url}: {message}")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        message: String,
    },
}

impl Error {
    /// The operator's reason when it refused, for logs and metrics.
    pub fn reason(&self) -> &str {
        match self {
            Error::Invalid(_) => "Invalid",
            Error::Token { .. } => "Token",
            Error::Refused { reason, .. } => reason,
            Error::Unreachable { .. } => "Unreachable",
        }
    }
}

/// Where the operator puts, in sensors' pods, the CA (PEM) its API's
/// certificate is issued by.
pub const API_CA_ENV: &str = "SIGHTLINE_API_CA";

/// `builder` trusting only `ca` (PEM, one or more certificates) when it is
/// given: a private CA, not the public ones, vouches for the operator.
pub fn trusting(
    mut builder: reqwest::ClientBuilder,
    ca: Option<&[u8]>,
) -> Result<reqwest::ClientBuilder, String> {
    if let Some(pem) = ca {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("the API's CA is not PEM: {e}"))?;
        if certs.is_empty() {
            return Err("the API's CA holds no certificate".into());
        }
        builder = builder.tls_built_in_root_certs(false);
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    Ok(builder)
}

/// Most attempts at one request when the operator says "later".
const ATTEMPTS: u32 = 6;
/// Longest wait between attempts, whatever `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Sends reports to one operator.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
}

impl Client {
    /// A client for the operator API at `base` (`https://host:port`).
    /// `ca` (PEM), when given, is the only CA trusted for its certificate.
    pub fn new(base: &str, credentials: Credentials, ca: Option<&[u8]>) -> Result<Client, Error> {
        let builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10));
        let builder = trusting(builder, ca).map_err(|message| Error::Unreachable {
            url: base.to_owned(),
            message,
        })?;
        let http = builder.build().map_err(|e| Error::Unreachable {
            url: base.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            credentials,
        })
    }

    fn token(&self) -> Result<String, Error> {
        match &self.credentials {
            Credentials::Token(t) => Ok(t.clone()),
            Credentials::TokenFile(path) => std::fs::read_to_string(path)
                .map(|t| t.trim().to_owned())
                .map_err(|source| Error::Token {
                    path: path.clone(),
                    source,
                }),
        }
    }

    /// Sends `observations` (in as many requests as the bounds need) and,
    /// in the last request, `listing`. Returns the receipts merged, with
    /// indexes into `observations`.
    pub async fn send(
        &self,
        observations: Vec<Observation>,
        listing: Option<crate::Listing>,
    ) -> Result<Receipt, Error> {
        let mut receipt = Receipt::default();
        let mut chunks: Vec<Vec<Observation>> = Vec::new();
        let mut rest = observations;
        while rest.len() > MAX_OBSERVATIONS {
            let tail = rest.split_off(MAX_OBSERVATIONS);
            chunks.push(std::mem::replace(&mut rest, tail));
        }
        chunks.push(rest);
        let last = chunks.len() - 1;
        let mut offset = 0;
        let mut listing = listing;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let n = chunk.len();
            let report = Report {
                observations: chunk,
                listing: if i == last { listing.take() } else { None },
                ..Report::default()
            };
            report.check()?;
            let mut r: Receipt = self.post(&report).await?;
            for a in &mut r.accepted {
                a.index += offset;
            }
            for x in &mut r.refused {
                x.index += offset;
            }
            receipt.accepted.append(&mut r.accepted);
            receipt.refused.append(&mut r.refused);
            offset += n;
        }
        Ok(receipt)
    }

    /// Sends a runtime sensor's policy reports (in as many requests as the
    /// bounds need); returns the refusals, with indexes into `policies`.
    pub async fn send_policies(
        &self,
        policies: Vec<crate::PolicyReport>,
    ) -> Result<Vec<crate::Refused>, Error> {
        let mut refused = Vec::new();
        for (n, chunk) in policies.chunks(MAX_OBSERVATIONS).enumerate() {
            let report = Report {
                policies: chunk.to_vec(),
                ..Report::default()
            };
            report.check()?;
            let r: Receipt = self.post(&report).await?;
            refused.extend(r.policies_refused.into_iter().map(|mut x| {
                x.index += n * MAX_OBSERVATIONS;
                x
            }));
        }
        Ok(refused)
    }

    /// Says which vulnerability database this sensor matches with, and
    /// what it refused; returns the operator's refusal, if any.
    pub async fn send_database(
        &self,
        state: crate::DatabaseState,
    ) -> Result<Option<crate::Refused>, Error> {
        let report = Report {
            database: Some(state),
            ..Report::default()
        };
        report.check()?;
        let r: Receipt = self.post(&report).await?;
        Ok(r.database_refused)
    }

    /// The container images this caller reported before, as the operator
    /// holds them.
    pub async fn recorded_images(&self) -> Result<RecordedList, Error> {
        let url = format!("{}{INGEST_PATH}?kind=ContainerImage", self.base);
        self.request(|http, token| http.get(&url).bearer_auth(token), &url)
            .await
    }

    /// Sends an image's details, once its observation was accepted: the
    /// operator keeps them in its detail store.
    pub async fn send_details(
        &self,
        details: &crate::details::ImageDetails,
    ) -> Result<crate::details::DetailsReceipt, Error> {
        details.check()?;
        self.post_json(crate::details::DETAILS_PATH, details).await
    }

    async fn post(&self, report: &Report) -> Result<Receipt, Error> {
        self.post_json(INGEST_PATH, report).await
    }

    async fn post_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        let url = format!("{}{path}", self.base);
        let body = serde_json::to_vec(body).map_err(|e| Error::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
        // Cloned per attempt without copying the bytes.
        let body = bytes::Bytes::from(body);
        self.request(
            |http, token| {
                http.post(&url)
                    .bearer_auth(token)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
            },
            &url,
        )
        .await
    }

    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, Error> {
        let unreachable = |message: String| Error::Unreachable {
            url: url.to_owned(),
            message,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.token()?;
            let resp = build(&self.http, &token).send().await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) if attempt < ATTEMPTS && (e.is_connect() || e.is_timeout()) => {
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err(unreachable(e.to_string())),
            };
            let status = resp.status();
            if status.is_success() {
                return resp.json().await.map_err(|e| unreachable(e.to_string()));
            }
            let later = status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE;
            let wait = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = resp.text().await.unwrap_or_default();
            let error: ApiError = serde_json::from_str(&text).unwrap_or(ApiError {
                error: text.chars().take(300).collect(),
                reason: String::new(),
            });
            if later && attempt < ATTEMPTS {
                let wait = wait.unwrap_or_else(|| backoff(attempt)).min(MAX_WAIT);
                tracing::debug!(
                    status = status.as_u16(),
                    reason = error.reason,
                    "the operator says later; retrying in {wait:?}"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(Error::Refused {
                status: status.as_u16(),
                reason: error.reason,
                message: error.error,
            });
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.min(6)).min(MAX_WAIT)
}
