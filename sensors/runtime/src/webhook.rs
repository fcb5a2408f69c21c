//! The optional webhook output: every OCSF line the sensor prints is also
//! POSTed, in batches (a JSON array, at most 500 events or one second
//! apart), to `SIGHTLINE_RUNTIME_WEBHOOK`. A slow or failing receiver never
//! slows enforcement: the queue is bounded, a full queue or a batch that
//! fails after retries is counted in `sightline_runtime_webhook_dropped_total`
//! and logged.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use tokio::sync::mpsc;

const QUEUE: usize = 10_000;
const BATCH: usize = 500;

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Webhook {
    tx: mpsc::Sender<Value>,
    dropped: Counter,
}

impl Webhook {
    /// Starts the sender task for `url`.
    pub fn start(url: String, dropped: Counter) -> Result<Self, String> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "SIGHTLINE_RUNTIME_WEBHOOK is {url:?}: expected an http:// or https:// URL"
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("the webhook client: {e}"))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_loop(client, url, rx, dropped.clone()));
        Ok(Webhook { tx, dropped })
    }

    /// Queues one event; never waits.
    pub fn send(&self, event: Value) {
        if self.tx.try_send(event).is_err() {
            self.dropped.inc();
        }
    }
}

async fn send_loop(
    client: reqwest::Client,
    url: String,
    mut rx: mpsc::Receiver<Value>,
    dropped: Counter,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(v)) => batch.push(v),
                _ => break,
            }
        }
        let mut sent = false;
        for attempt in 0..3u32 {
            match client.post(&url).json(&batch).send().await {
                Ok(r) if r.status().is_success() => {
                    sent = true;
                    break;
                }
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "the runtime webhook refused a batch")
                }
                Err(e) => tracing::warn!("posting to the runtime webhook: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
        }
        if !sent {
            dropped.inc_by(batch.len() as u64);
        }
    }
}
