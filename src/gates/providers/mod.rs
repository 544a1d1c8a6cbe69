//! Metric providers: the Prometheus HTTP API, a scraped text endpoint, and
//! cluster health from the Kubernetes API (via the watch caches).

pub mod health;
pub mod prometheus;
pub mod scrape;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

/// The plain-HTTP client of the metric providers (Prometheus queries and
/// scraped endpoints).
pub type MetricsClient = Client<HttpConnector, Full<Bytes>>;

/// Requests the metrics client has under way to one endpoint (host and
/// port) at once, and the idle connections it keeps there. Prometheus runs
/// 20 queries at once by default (`--query.max-concurrency`) and queues
/// the rest, each holding its connection meanwhile: past that, more
/// connections only move the queue to the server. A thousand releases'
/// gates falling due together opened a connection per scrape or query
/// (hundreds at once, each with its buffers); they now wait their turn
/// here, within their measurement's deadline.
pub const PER_HOST: usize = 20;

/// Waits for a turn to ask `uri`'s endpoint (`PER_HOST` at once); the
/// request holds the turn until its answer is read.
pub async fn host_turn(uri: &http::Uri) -> tokio::sync::OwnedSemaphorePermit {
    type Hosts = Mutex<HashMap<String, Arc<Semaphore>>>;
    static HOSTS: OnceLock<Hosts> = OnceLock::new();
    let host = uri.authority().map_or("", |a| a.as_str());
    let turns = HOSTS
        .get_or_init(Hosts::default)
        .lock()
        .expect("hosts lock")
        .entry(host.to_string())
        .or_insert_with(|| Arc::new(Semaphore::new(PER_HOST)))
        .clone();
    turns.acquire_owned().await.expect("never closed")
}

/// The process's one metrics client, 3 s to connect: its connections are
/// pooled for every release (a thousand apps' endpoints are a few hosts).
/// Lent, not cloned: a client is 336 bytes, and every release's gate runs
/// would keep a copy of their own, one more per Prometheus they query.
pub fn metrics_client() -> &'static MetricsClient {
    static CLIENT: OnceLock<MetricsClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        // As many idle connections as requests under way to one
        // endpoint (`host_turn`): each turn finds one ready.
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(PER_HOST)
            .build(connector)
    })
}

/// Replaces `{{app}}`, `{{version}}`, `{{colour}}`, `{{cluster}}` and `{{namespace}}`.
pub fn template(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

/// The largest response body a provider reads; past it the measurement is an
/// error, and nothing more is read into memory.
pub const MAX_BODY: usize = 16 << 20;

/// Reads a response body of at most `MAX_BODY` bytes.
pub async fn read_body<B>(body: B) -> Result<bytes::Bytes, String>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(format!(
                "the response is larger than {} MiB",
                MAX_BODY >> 20
            ))
        }
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod body_tests {
    use bytes::Bytes;
    use http_body_util::Full;

    #[tokio::test]
    async fn a_body_past_the_limit_is_an_error_not_a_read() {
        let big = Full::new(Bytes::from(vec![b'x'; super::MAX_BODY + 1]));
        let err = super::read_body(big).await.unwrap_err();
        assert!(err.contains("larger than 16 MiB"), "{err}");
        let small = Full::new(Bytes::from_static(b"up 1\n"));
        assert_eq!(super::read_body(small).await.unwrap(), "up 1\n");
    }
}
