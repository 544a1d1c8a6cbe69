//! Watches: a stream of newline-delimited `{"type", "object"}` events for one
//! resource, from a resourceVersion (or from the current objects), filtered
//! by namespace and selectors, with bookmarks, a timeout, a 410 `Expired`
//! ERROR event when the history no longer reaches back far enough, and an
//! end of the stream when the watcher fell too far behind.
//!
//! Owns the event stream; the store owns the history it replays.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::api_error::ApiError;
use super::kinds::Kind;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{Change, ChangeType, Start, Store};
use super::table::Printer;

/// A watch with a deadline gets a last bookmark this long before it, so its
/// client resumes from a recent resourceVersion (`cache_watcher.go`
/// `nextBookmarkTime`).
const BOOKMARK_BEFORE_DEADLINE: Duration = Duration::from_secs(2);

/// What a watch request asked for.
#[derive(Debug, Clone, Default)]
pub struct WatchRequest {
    pub namespace: Option<String>,
    pub version: String,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// `resourceVersion`: `None`, `""` or `"0"` start with the current objects.
    pub resource_version: Option<String>,
    pub timeout: Option<Duration>,
    pub bookmarks: bool,
    /// How often bookmarks come (kube-apiserver: every minute).
    pub bookmark_every: Duration,
    /// `sendInitialEvents=true`: current objects, then a bookmark marking their end.
    pub initial_events: bool,
    /// Send each object as a one-row Table (kubectl's `get --watch`).
    pub table: Option<Printer>,
}

/// A started watch: its events, and whether it begins with 410 Expired
/// because the history no longer reaches back to where it asked to start.
pub struct Started {
    pub events: mpsc::Receiver<Bytes>,
    pub expired: bool,
}

/// Starts a watch; events arrive on the returned channel, one JSON line per chunk.
/// The stream ends when the client goes away, the timeout passes or `stop` fires.
pub fn start(
    store: Arc<Store>,
    kind: Arc<Kind>,
    req: WatchRequest,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Started, ApiError> {
    let start = match req.resource_version.as_deref() {
        None | Some("") | Some("0") => Start::Snapshot,
        Some(_) if req.initial_events => Start::Snapshot,
        Some(rv) => Start::After(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?,
        ),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let sub = store.subscribe(&kind, start);
    let expired = sub.as_ref().is_err_and(|e| e.code == 410);
    tokio::spawn(async move {
        let clock = store.clock().clone();
        let mut w = Watcher {
            tx,
            kind,
            req,
            sent_rv: 0,
            columns_sent: false,
            clock,
        };
        let mut sub = match sub {
            Ok(s) => s,
            Err(e) => {
                w.error(&e).await;
                return;
            }
        };
        w.sent_rv = sub.rv;
        for obj in &sub.initial {
            if w.selects(obj) && !w.send("ADDED", obj).await {
                return;
            }
        }
        if w.req.initial_events {
            let rv = sub.rv;
            if !w.bookmark(rv, true).await {
                return;
            }
        }
        if let Start::After(from) = start {
            w.sent_rv = from;
        }
        for change in std::mem::take(&mut sub.backlog) {
            if !w.deliver(&change).await {
                return;
            }
        }
        w.sent_rv = w.sent_rv.max(sub.rv);
        let deadline = w.req.timeout.map(|t| tokio::time::Instant::now() + t);
        // The next bookmark: a period from now, or just before the deadline
        // if that comes first; none once that moment has passed.
        let period = w.req.bookmark_every.max(Duration::from_millis(10));
        let wants_bookmarks = w.req.bookmarks;
        let next_bookmark = move |now: tokio::time::Instant| {
            let every = now + period;
            match deadline.map(|d| d.checked_sub(BOOKMARK_BEFORE_DEADLINE)) {
                Some(Some(last)) if last <= now => None,
                Some(Some(last)) => Some(every.min(last)),
                Some(None) => None,
                None => Some(every),
            }
        };
        let mut bookmark_at = next_bookmark(tokio::time::Instant::now());
        loop {
            let until_bookmark = async {
                match bookmark_at {
                    Some(at) if wants_bookmarks => tokio::time::sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            let until_deadline = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                change = sub.live.recv() => match change {
                    Ok(c) => {
                        if !w.deliver(&c).await {
                            return;
                        }
                    }
                    // Changes this watch fell too far behind to hold were
                    // dropped: the stream ends, as kube-apiserver closes a
                    // watcher too slow to take its events ("Forcing watcher
                    // close due to unresponsiveness", `cacheWatcher.add` in
                    // `storage/cacher/cache_watcher.go`), and the client
                    // watches again from the last resourceVersion it saw,
                    // replayed from the history if it still reaches back.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = until_bookmark => {
                    let rv = w.sent_rv;
                    if !w.bookmark(rv, false).await {
                        return;
                    }
                    bookmark_at = next_bookmark(tokio::time::Instant::now());
                }
                _ = until_deadline => return,
                _ = w.tx.closed() => return,
                _ = stop.changed() => return,
            }
        }
    });
    Ok(Started {
        events: rx,
        expired,
    })
}

struct Watcher {
    tx: mpsc::Sender<Bytes>,
    kind: Arc<Kind>,
    req: WatchRequest,
    /// Every change up to here has been delivered or filtered out.
    sent_rv: u64,
    /// Table column definitions go with the first event only.
    columns_sent: bool,
    clock: cutover_core::clock::SharedClock,
}

impl Watcher {
    fn selects(&self, obj: &Value) -> bool {
        let ns_ok = match &self.req.namespace {
            Some(ns) if self.kind.namespaced => obj["metadata"]["namespace"].as_str() == Some(ns),
            _ => true,
        };
        ns_ok && self.req.labels.matches_object(obj) && self.req.fields.matches(obj)
    }

    /// Sends what a change means to this watcher; `false` once the client is gone.
    async fn deliver(&mut self, c: &Change) -> bool {
        if c.rv <= self.sent_rv {
            return true;
        }
        self.sent_rv = c.rv;
        if c.group != self.kind.group || c.resource != self.kind.plural {
            return true;
        }
        let now = self.selects(&c.object);
        let event = match c.change {
            ChangeType::Added => now.then_some("ADDED"),
            ChangeType::Deleted => now.then_some("DELETED"),
            ChangeType::Modified => {
                let before = c.previous.as_ref().is_some_and(|p| self.selects(p));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        };
        match event {
            Some(t) if self.req.table.is_none() => {
                let object = c.served(&self.kind.api_version(&self.req.version));
                self.send_encoded(t, &object).await
            }
            Some(t) => {
                let obj = c.object.clone();
                self.send(t, &obj).await
            }
            None => true,
        }
    }

    /// Sends an event whose object is already encoded.
    async fn send_encoded(&self, kind: &str, object: &[u8]) -> bool {
        let mut line = Vec::with_capacity(object.len() + 32);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        line.extend_from_slice(object);
        line.extend_from_slice(b"}\n");
        self.tx.send(Bytes::from(line)).await.is_ok()
    }

    async fn send(&mut self, kind: &str, obj: &Value) -> bool {
        let api_version = self.kind.api_version(&self.req.version);
        let Some(printer) = &self.req.table else {
            let object = super::store::served_json(obj, &api_version);
            return self.send_encoded(kind, &object).await;
        };
        let mut obj = obj.clone();
        obj["apiVersion"] = json!(api_version);
        let rv = super::meta::resource_version(&obj).unwrap_or(self.sent_rv);
        obj = printer
            .at(self.clock.now())
            .table(&[Arc::new(obj)], rv, !self.columns_sent);
        self.columns_sent = true;
        self.line(json!({"type": kind, "object": obj})).await
    }

    async fn bookmark(&self, rv: u64, initial_end: bool) -> bool {
        let mut md = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.kind.kind, "apiVersion": self.kind.api_version(&self.req.version), "metadata": md});
        self.line(json!({"type": "BOOKMARK", "object": obj})).await
    }

    async fn error(&self, e: &ApiError) {
        let _ = self
            .line(json!({"type": "ERROR", "object": e.status()}))
            .await;
    }

    async fn line(&self, v: Value) -> bool {
        let mut text = v.to_string();
        text.push('\n');
        self.tx.send(Bytes::from(text)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{config_map, store};

    /// A watch's events, and what keeps it open (it ends when dropped).
    fn watch_from(
        store: &Arc<Store>,
        rv: Option<u64>,
    ) -> (mpsc::Receiver<Bytes>, tokio::sync::watch::Sender<bool>) {
        let req = WatchRequest {
            namespace: Some("default".into()),
            version: "v1".into(),
            resource_version: rv.map(|v| v.to_string()),
            ..Default::default()
        };
        let kind = store.kind_of("", "configmaps").unwrap();
        let (open, stop) = tokio::sync::watch::channel(false);
        (start(store.clone(), kind, req, stop).unwrap().events, open)
    }

    /// The event's type and the object's resourceVersion.
    fn read(line: &Bytes) -> (String, u64) {
        let v: Value = serde_json::from_slice(line).unwrap();
        let rv = v["object"]["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        (v["type"].as_str().unwrap().to_string(), rv)
    }

    // kube-apiserver closes a watcher that cannot keep up, without an
    // ERROR event, and its client resumes from the last resourceVersion it
    // saw (`cacheWatcher.add`, `storage/cacher/cache_watcher.go`): a slow
    // watcher costs a new watch, not a list of everything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_too_slow_to_keep_up_ends_and_resumes_from_its_last_version() {
        let store = Arc::new(store(100_000));
        let listed = store.resource_version();
        let (mut slow, _open) = watch_from(&store, Some(listed));
        // Its channel's room, then the changes its subscription holds, and more.
        let total = 300 + 4096 + 500;
        for i in 0..300 {
            config_map(&store, &format!("cm-{i}"));
        }
        while slow.len() < slow.max_capacity() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for i in 300..total {
            config_map(&store, &format!("cm-{i}"));
        }
        let mut seen = Vec::new();
        while let Some(line) = slow.recv().await {
            seen.push(read(&line));
        }
        assert!(seen.iter().all(|(t, _)| t == "ADDED"), "{:?}", seen.last());
        assert!(seen.len() < total, "the watch kept up: {}", seen.len());
        let last = seen.last().unwrap().1;
        let (mut resumed, _still_open) = watch_from(&store, Some(last));
        let mut rest = Vec::new();
        while rest.len() < total - seen.len() {
            let line = tokio::time::timeout(Duration::from_secs(10), resumed.recv())
                .await
                .expect("the rest of the changes")
                .expect("an open watch");
            rest.push(read(&line));
        }
        let versions: Vec<u64> = seen.iter().chain(&rest).map(|(_, rv)| *rv).collect();
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "every change once, in order"
        );
        assert_eq!(versions.len(), total);
    }

    #[test]
    fn an_object_is_served_with_its_api_version_and_nothing_else_changed() {
        let obj = json!({"apiVersion": "v0", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
        let served: Value = serde_json::from_slice(&crate::store::served_json(&obj, "v1")).unwrap();
        let mut expected = obj.clone();
        expected["apiVersion"] = json!("v1");
        assert_eq!(served, expected);
    }
}
