//! Sending release and freeze events to the fleet file's notification
//! receivers. A driver hands messages over and goes on: each receiver has its
//! own queue and task, retries with backoff, and a receiver that is down
//! costs the release nothing but a count in its status and the metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{Notify, mpsc};

use crate::clock::SharedClock;
use crate::spec::notify::{Delivery, Notification, Receiver};

/// Where the CLI reads receivers' Secrets in the home cluster: the namespace
/// `deploy/` creates for the controller.
pub const CLI_SECRETS_NAMESPACE: &str = "cutover-system";
/// Messages waiting per receiver; past it new ones are dropped and counted.
const QUEUE: usize = 512;
/// Tries per message while the receiver answers; once one message has failed
/// every try, later ones get one try each until a delivery succeeds.
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabel {
    pub receiver: String,
    /// `delivered`, `failed` (every retry failed) or `dropped` (queue full).
    pub result: String,
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Hands messages to the receivers; cheap to clone, one per driver or command.
#[derive(Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    receivers: Vec<(Receiver, mpsc::Sender<Job>)>,
    /// By release key (`namespace/name`), then receiver.
    deliveries: Mutex<BTreeMap<String, BTreeMap<String, Delivery>>>,
    /// Failures in this process by receiver: how many, and the last error.
    failed_here: Mutex<BTreeMap<String, (u32, String)>>,
    pending: AtomicUsize,
    settled: Notify,
    metrics: Family<DeliveryLabel, Counter>,
    clock: SharedClock,
}

struct Job {
    key: Option<String>,
    body: Bytes,
}

/// Where a receiver's URL comes from, as the task reads it.
#[derive(Clone)]
pub struct Secrets {
    pub home: kube::Client,
    pub namespace: String,
}

impl Notifier {
    /// A notifier for the fleet's receivers (none: every send is a no-op).
    /// Must be called inside a tokio runtime: it starts a task per receiver.
    pub fn new(
        receivers: &[Receiver],
        secrets: Option<Secrets>,
        clock: SharedClock,
        metrics: Family<DeliveryLabel, Counter>,
    ) -> Notifier {
        if receivers.is_empty() {
            return Notifier::default();
        }
        let client = http_client();
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for r in receivers {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.push((r.clone(), tx));
            tasks.push((r.clone(), rx));
        }
        let inner = Arc::new(Inner {
            receivers: queues,
            deliveries: Mutex::default(),
            failed_here: Mutex::default(),
            pending: AtomicUsize::new(0),
            settled: Notify::new(),
            metrics,
            clock,
        });
        for (r, rx) in tasks {
            let worker = Worker {
                receiver: r,
                client,
                secrets: secrets.clone(),
                inner: Arc::downgrade(&inner),
                url: None,
                down: false,
            };
            tokio::spawn(worker.run(rx));
        }
        Notifier { inner: Some(inner) }
    }

    /// The notifier of `fleet`'s receivers, reading Secrets from
    /// `secrets_namespace` of its home cluster.
    pub fn for_fleet(
        fleet: &crate::spec::Fleet,
        clients: &crate::fleet::FleetClients,
        secrets_namespace: &str,
        clock: SharedClock,
        metrics: Family<DeliveryLabel, Counter>,
    ) -> Notifier {
        let secrets = Secrets {
            home: clients.home().client.clone(),
            namespace: secrets_namespace.to_string(),
        };
        Notifier::new(&fleet.notifications, Some(secrets), clock, metrics)
    }

    /// Whether any receiver is configured.
    pub fn has_receivers(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| !i.receivers.is_empty())
    }

    /// Queues `n` for every receiver that wants it, never waiting; `key`
    /// (`namespace/name`) is the release whose status counts the outcome.
    pub fn send(&self, key: Option<&str>, n: &Notification) {
        let Some(inner) = &self.inner else { return };
        for (r, tx) in &inner.receivers {
            if !r.wants(n) {
                continue;
            }
            let body = Bytes::from(n.body(r.format).to_string());
            inner.pending.fetch_add(1, Ordering::SeqCst);
            let job = Job {
                key: key.map(str::to_string),
                body,
            };
            if tx.try_send(job).is_err() {
                inner.finished(&r.name, key, Err("dropped: the queue was full".into()));
            }
        }
    }

    /// Waits until every queued message was delivered or given up on, at most
    /// `within`; whether all were.
    pub async fn flush(&self, within: Duration) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let settled = inner.settled.notified();
            if inner.pending.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return inner.pending.load(Ordering::SeqCst) == 0;
            }
        }
    }

    /// Starts counting `key`'s deliveries from what its status recorded, so
    /// counts survive a driver's restart.
    pub fn seed(&self, key: &str, written: &[Delivery]) {
        let Some(inner) = &self.inner else { return };
        let mut counted = inner.deliveries.lock().expect("deliveries lock");
        let mine = counted.entry(key.to_string()).or_default();
        for w in written {
            let d = mine.entry(w.receiver.clone()).or_insert_with(|| w.clone());
            d.delivered = d.delivered.max(w.delivered);
            if w.failed > d.failed {
                d.failed = w.failed;
                d.last_error = w.last_error.clone();
                d.last_failed_at = w.last_failed_at;
            }
        }
    }

    /// How `key`'s messages went so far, by receiver, for its status.
    pub fn deliveries(&self, key: &str, written: &[Delivery]) -> Vec<Delivery> {
        let Some(inner) = &self.inner else {
            return written.to_vec();
        };
        let counted = inner.deliveries.lock().expect("deliveries lock");
        match counted.get(key) {
            Some(mine) => mine.values().cloned().collect(),
            None => written.to_vec(),
        }
    }

    /// What failed in this process, for a command to report: each receiver,
    /// how many messages it missed and the last error.
    pub fn failures(&self) -> Vec<(String, u32, String)> {
        let Some(inner) = &self.inner else {
            return Vec::new();
        };
        let failed = inner.failed_here.lock().expect("failures lock");
        failed
            .iter()
            .map(|(r, (n, e))| (r.clone(), *n, e.clone()))
            .collect()
    }
}

impl Inner {
    fn finished(&self, receiver: &str, key: Option<&str>, result: Result<(), String>) {
        let label = |result: &str| DeliveryLabel {
            receiver: receiver.to_string(),
            result: result.to_string(),
        };
        let mut counted = self.deliveries.lock().expect("deliveries lock");
        let d = counted
            .entry(key.unwrap_or_default().to_string())
            .or_default()
            .entry(receiver.to_string())
            .or_insert_with(|| Delivery {
                receiver: receiver.to_string(),
                ..Default::default()
            });
        match result {
            Ok(()) => {
                d.delivered += 1;
                self.metrics.get_or_create(&label("delivered")).inc();
            }
            Err(why) => {
                d.failed += 1;
                let result = if why.starts_with("dropped") {
                    "dropped"
                } else {
                    "failed"
                };
                self.metrics.get_or_create(&label(result)).inc();
                tracing::warn!(receiver, error = %why, "notification not delivered");
                let mut here = self.failed_here.lock().expect("failures lock");
                let e = here.entry(receiver.to_string()).or_default();
                e.0 += 1;
                e.1 = why.clone();
                drop(here);
                d.last_error = Some(why);
                d.last_failed_at = Some(self.clock.now());
            }
        }
        drop(counted);
        if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.settled.notify_waiters();
        }
    }
}

struct Worker {
    receiver: Receiver,
    client: &'static HttpClient,
    secrets: Option<Secrets>,
    inner: std::sync::Weak<Inner>,
    /// Read once and again after a failure (a rotated Secret or file).
    url: Option<String>,
    /// The last message failed every try: one try each until one succeeds.
    down: bool,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(job) = rx.recv().await {
            let attempts = if self.down { 1 } else { ATTEMPTS };
            let mut backoff = FIRST_BACKOFF;
            let mut result = Err(String::new());
            for attempt in 1..=attempts {
                result = self.deliver(&job.body).await;
                match &result {
                    Ok(()) => break,
                    Err(_) => self.url = None,
                }
                if attempt < attempts {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
            self.down = result.is_err();
            let Some(inner) = self.inner.upgrade() else {
                return;
            };
            inner.finished(&self.receiver.name, job.key.as_deref(), result);
        }
    }

    async fn deliver(&mut self, body: &Bytes) -> Result<(), String> {
        let url = match &self.url {
            Some(u) => u.clone(),
            None => {
                let u = self.read_url().await?;
                self.url = Some(u.clone());
                u
            }
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|_| "the URL it was given is not a valid URL".to_string())?;
        let request = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "cutover")
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))?
            .map_err(|e| format!("cannot reach it: {}", chain(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = tokio::time::timeout(TIMEOUT, response.into_body().collect())
            .await
            .ok()
            .and_then(|b| b.ok())
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
            .unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        Err(if text.is_empty() {
            format!("it answered HTTP {}", status.as_u16())
        } else {
            format!("it answered HTTP {}: {text}", status.as_u16())
        })
    }

    /// The receiver's URL, from its file or Secret. Errors say where and how
    /// to fix it, never the content.
    async fn read_url(&self) -> Result<String, String> {
        let url = &self.receiver.url;
        let text = if let Some(path) = &url.file {
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read its URL from file {path}: {e}"))?
        } else if let Some(r) = &url.secret_key_ref {
            let Some(s) = &self.secrets else {
                return Err(format!(
                    "its URL is in Secret {} but no home cluster is connected",
                    r.name
                ));
            };
            let where_ = format!("Secret {}/{} key {:?}", s.namespace, r.name, r.key);
            let api: kube::Api<Secret> = kube::Api::namespaced(s.home.clone(), &s.namespace);
            let secret = api.get_opt(&r.name).await.map_err(|e| {
                format!(
                    "cannot read its URL from {where_}: {}",
                    crate::fleet::in_words(&e)
                )
            })?;
            let secret = secret.ok_or_else(|| {
                format!("{where_} does not exist; create it with the webhook's URL")
            })?;
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|b| b.0.clone())
                .ok_or_else(|| format!("{where_} is missing; add the webhook's URL under it"))?;
            String::from_utf8(bytes).map_err(|_| format!("{where_} is not UTF-8 text"))?
        } else {
            return Err("no URL source is set".into());
        };
        let text = text.trim();
        if text.is_empty() {
            return Err("its URL source is empty".into());
        }
        Ok(text.to_string())
    }
}

/// The HTTP client of notifications and step hooks.
pub type HttpClient = Client<Https, Full<Bytes>>;

/// The process's HTTP(S) client, which trusts the system's roots: one for
/// every release, notifier and hook, so the roots are read once and
/// connections are pooled (a client per release held the roots and its own
/// connections a thousand times over). Lent, not cloned: a client is 336
/// bytes, which every release's hooks kept in its drive's future.
pub fn http_client() -> &'static HttpClient {
    static CLIENT: std::sync::OnceLock<HttpClient> = std::sync::OnceLock::new();
    CLIENT.get_or_init(new_http_client)
}

fn new_http_client() -> HttpClient {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let connector = match builder.with_native_roots() {
        Ok(b) => b.https_or_http().enable_http1().build(),
        // No system roots: plain http still works, https fails each try with
        // the connector's error.
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
            .https_or_http()
            .enable_http1()
            .build(),
    };
    Client::builder(TokioExecutor::new()).build(connector)
}

/// An error with its causes, one after another.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(&format!(": {more}"));
        }
        cause = c.source();
    }
    text
}
