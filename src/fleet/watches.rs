//! Watches shared by every driver of a process: one watch per cluster,
//! namespace and kind, whatever the number of releases, each indexed by the
//! key a driver asks for (an app, a route, a Release's name), so a pass reads
//! its own objects in memory without scanning everyone else's, and an event
//! wakes only the drivers it concerns. A watch lives while some release's
//! cache holds it.
//!
//! Owns no decision and writes nothing; `cache` builds each release's view on
//! top of these.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use kube::Resource;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// Objects a watch lists a page at a time (kube-runtime's default is 500).
/// A watch lists again whenever the API server says its place in the
/// stream is gone (410 Gone: compacted, or the server restarted), and a
/// page is held twice while it is read, as the response's text and as the
/// objects it decodes to, whole, before they are trimmed. Five hundred
/// pods are megabytes; at 1,000 releases a replica's watches listing
/// again together held 33 MB of pages, more than everything else it held.
/// A hundred costs five times the requests of a list, which are rare.
pub const LIST_PAGE: u32 = 100;

/// How a watch is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchState {
    /// Not listed yet.
    Starting,
    Healthy,
    Failing(String),
}

/// What a watch is indexed by.
pub type IndexFn<K> = fn(&K) -> String;

/// Objects of one kind in one cluster (and namespace), as the API server last
/// told, grouped by index key.
pub struct SharedWatch<K> {
    pub kind: &'static str,
    objects: RwLock<Objects<K>>,
    state: Mutex<WatchState>,
    wakers: Mutex<HashMap<String, Vec<Weak<Notify>>>>,
    task: Mutex<Option<AbortHandle>>,
}

struct Objects<K> {
    by_key: HashMap<Arc<str>, Group<K>>,
    /// Each object's index key, so a relabelled object leaves its old group.
    /// Its id and key are the ones its group holds, not copies: a watch of a
    /// namespace's pods keeps tens of thousands.
    key_of: HashMap<Arc<str>, Arc<str>>,
}

/// The objects under one key, in id order. A sorted list rather than a map:
/// a key holds a few objects (an app's pods in one cluster), and a map's
/// node has room for eleven however few it holds, thousands of keys over.
struct Group<K>(Vec<(Arc<str>, Arc<K>)>);

impl<K> Default for Group<K> {
    fn default() -> Self {
        Group(Vec::new())
    }
}

impl<K> Group<K> {
    /// Where `id` is (`Ok`), or would go (`Err`).
    fn position(&self, id: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(i, _)| (**i).cmp(id))
    }

    fn put(&mut self, id: Arc<str>, obj: Arc<K>) {
        match self.position(&id) {
            Ok(at) => self.0[at].1 = obj,
            Err(at) => {
                // One more, not double: most groups stay this size.
                self.0.reserve_exact(1);
                self.0.insert(at, (id, obj));
            }
        }
    }

    fn take(&mut self, id: &str) {
        if let Ok(at) = self.position(id) {
            self.0.remove(at);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn values(&self) -> impl Iterator<Item = &Arc<K>> {
        self.0.iter().map(|(_, v)| v)
    }
}

impl<K> Default for Objects<K> {
    fn default() -> Self {
        Objects {
            by_key: HashMap::new(),
            key_of: HashMap::new(),
        }
    }
}

impl<K> Objects<K> {
    /// Puts `obj` under `key`; returns the key it was under before, if another.
    fn insert(&mut self, id: &str, key: &str, obj: Arc<K>) -> Option<String> {
        let (id, before) = match self.key_of.get_key_value(id) {
            Some((i, k)) => (i.clone(), Some(k.clone())),
            None => (Arc::from(id), None),
        };
        let moved = before.filter(|b| **b != *key);
        if let Some(b) = &moved {
            self.remove_from(b, &id);
        }
        let key = match self.by_key.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => Arc::from(key),
        };
        self.key_of.insert(id.clone(), key.clone());
        self.by_key.entry(key).or_default().put(id, obj);
        moved.map(|b| b.to_string())
    }

    fn remove(&mut self, id: &str) -> Option<String> {
        let key = self.key_of.remove(id)?;
        self.remove_from(&key, id);
        Some(key.to_string())
    }

    fn remove_from(&mut self, key: &str, id: &str) {
        if let Some(group) = self.by_key.get_mut(key) {
            group.take(id);
            if group.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    /// The object `id` under `key`, if it is there.
    #[cfg(test)]
    fn get(&self, key: &str, id: &str) -> Option<&Arc<K>> {
        let group = self.by_key.get(key)?;
        let at = group.position(id).ok()?;
        Some(&group.0[at].1)
    }
}

impl<K> Drop for SharedWatch<K> {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().expect("task lock").take() {
            t.abort();
        }
    }
}

impl<K> SharedWatch<K> {
    /// The objects under `key`, in name order.
    pub fn get(&self, key: &str) -> Vec<Arc<K>> {
        self.objects
            .read()
            .expect("objects lock")
            .by_key
            .get(key)
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every object, whatever its key.
    pub fn get_all(&self) -> Vec<Arc<K>> {
        self.objects
            .read()
            .expect("objects lock")
            .by_key
            .values()
            .flat_map(|g| g.values().cloned())
            .collect()
    }

    /// A healthy watch holding `objects` (id, index key, value) and fed by
    /// nothing: what a reader of a watch sees, for its tests.
    #[cfg(test)]
    pub fn holding(kind: &'static str, objects: Vec<(String, String, K)>) -> SharedWatch<K> {
        let mut held = Objects::default();
        for (id, key, v) in objects {
            held.insert(&id, &key, Arc::new(v));
        }
        SharedWatch {
            kind,
            objects: RwLock::new(held),
            state: Mutex::new(WatchState::Healthy),
            wakers: Mutex::new(HashMap::new()),
            task: Mutex::new(None),
        }
    }

    /// Puts `v` under `id` and `key`, as a change the watch delivers would:
    /// for tests of a reader that looks again.
    #[cfg(test)]
    pub fn put(&self, id: &str, key: &str, v: K) {
        self.objects
            .write()
            .expect("objects lock")
            .insert(id, key, Arc::new(v));
    }

    pub fn state(&self) -> WatchState {
        self.state.lock().expect("state lock").clone()
    }

    /// `Ok` while the watch is healthy; otherwise why not.
    pub fn healthy(&self) -> Result<(), String> {
        match self.state() {
            WatchState::Healthy => Ok(()),
            WatchState::Starting => Err(format!("{} not listed yet", self.kind)),
            WatchState::Failing(e) => Err(format!("{}: {e}", self.kind)),
        }
    }

    /// Wakes `notify` whenever an object under `key` changes, and whenever the
    /// watch fails, recovers or relists. Lasts as long as `notify` does.
    pub fn subscribe(&self, key: &str, notify: &Arc<Notify>) {
        let mut w = self.wakers.lock().expect("wakers lock");
        let list = w.entry(key.to_string()).or_default();
        list.retain(|n| n.strong_count() > 0);
        list.push(Arc::downgrade(notify));
    }

    fn wake(&self, key: &str) {
        let mut w = self.wakers.lock().expect("wakers lock");
        if let Some(list) = w.get_mut(key) {
            list.retain(|n| match n.upgrade() {
                Some(n) => {
                    n.notify_one();
                    true
                }
                None => false,
            });
            if list.is_empty() {
                w.remove(key);
            }
        }
    }

    fn wake_all(&self) {
        let mut w = self.wakers.lock().expect("wakers lock");
        w.retain(|_, list| {
            list.retain(|n| match n.upgrade() {
                Some(n) => {
                    n.notify_one();
                    true
                }
                None => false,
            });
            !list.is_empty()
        });
    }

    /// Records the watch's state; wakes everyone when it changed.
    fn set_state(&self, state: WatchState) {
        let prev = std::mem::replace(&mut *self.state.lock().expect("state lock"), state.clone());
        if prev != state {
            self.wake_all();
        }
    }
}

/// Starts a watch of `api` with `config`, indexed by `index`; `keep` turns
/// an object into what its readers need (the object trimmed, or a smaller
/// value of its own), or `None` for one not kept, which leaves the cache.
pub fn start<K, V>(
    kind: &'static str,
    api: Api<K>,
    config: watcher::Config,
    index: IndexFn<K>,
    keep: fn(K) -> Option<V>,
    client: kube::Client,
) -> Arc<SharedWatch<V>>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let shared = Arc::new(SharedWatch {
        kind,
        objects: RwLock::new(Objects::default()),
        state: Mutex::new(WatchState::Starting),
        wakers: Mutex::new(HashMap::new()),
        task: Mutex::new(None),
    });
    let weak = Arc::downgrade(&shared);
    let config = config.page_size(LIST_PAGE);
    let watch = move || Box::pin(watcher::watcher(api.clone(), config.clone()).default_backoff());
    let task = tokio::spawn(async move {
        let mut stream = watch();
        let mut relist: Option<Objects<V>> = None;
        // A list is coming: told that the history moved on (410), or after
        // a restart of the stream. No probe starts another meanwhile.
        let mut listing = false;
        let mut probe = tokio::time::interval(Duration::from_secs(1));
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let item = tokio::select! {
                item = stream.next() => match item {
                    Some(item) => item,
                    None => return,
                },
                _ = probe.tick() => {
                    let Some(w) = weak.upgrade() else { return };
                    if !listing && back_while_failing(&w, &client).await {
                        stream = watch();
                        relist = None;
                        listing = true;
                    }
                    continue;
                }
            };
            let Some(w) = weak.upgrade() else { return };
            let id = |o: &K| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
            match item {
                Ok(Event::Init) => relist = Some(Objects::default()),
                Ok(Event::InitApply(o)) => {
                    let (i, k) = (id(&o), index(&o));
                    let fresh = relist.get_or_insert_with(Objects::default);
                    if let Some(v) = keep(o) {
                        fresh.insert(&i, &k, Arc::new(v));
                    }
                }
                Ok(Event::InitDone) => {
                    listing = false;
                    let fresh = relist.take().unwrap_or_default();
                    *w.objects.write().expect("objects lock") = fresh;
                    w.set_state(WatchState::Healthy);
                    // A relist may have changed anything: everyone looks again.
                    w.wake_all();
                }
                Ok(Event::Apply(o)) => {
                    let (i, k) = (id(&o), index(&o));
                    let moved = match keep(o) {
                        Some(v) => {
                            w.objects
                                .write()
                                .expect("objects lock")
                                .insert(&i, &k, Arc::new(v))
                        }
                        None => w.objects.write().expect("objects lock").remove(&i),
                    };
                    w.set_state(WatchState::Healthy);
                    w.wake(&k);
                    if let Some(old) = moved.filter(|old| *old != k) {
                        w.wake(&old);
                    }
                }
                Ok(Event::Delete(o)) => {
                    let removed = w.objects.write().expect("objects lock").remove(&id(&o));
                    w.set_state(WatchState::Healthy);
                    w.wake(&removed.unwrap_or_else(|| index(&o)));
                }
                // 410: the history moved on and the watcher lists again at
                // once. What is kept is as of the last event, not lost: the
                // cluster answers, so nothing holds for it. Only a failing
                // list or watch makes the watch Failing.
                Err(e) if is_expired(&e) => listing = true,
                Err(e) => w.set_state(WatchState::Failing(e.to_string())),
            }
        }
    });
    *shared.task.lock().expect("task lock") = Some(task.abort_handle());
    shared
}

/// Whether a watch error says only that its resourceVersion is too old (a
/// 410 Expired event in the stream, after which the watcher lists again).
fn is_expired(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchError(status) if status.code == 410)
}

/// Whether a failing watch's API server answers again (its version).
///
/// A watch that resumes after an outage says nothing until an object
/// changes, so its coming back is not waited for: once the server answers,
/// the watch starts afresh and lists, and is healthy again when the list is
/// in. The server answering is not enough by itself. What the watch holds
/// is as of before the outage, and the cluster may have changed meanwhile
/// (its people and controllers, or a write whose answer and event the cut
/// lost); a server back from a restart answers while it still rejects
/// watches and lists (its caches filling, 429), so the watch may be far
/// from resuming.
async fn back_while_failing<K>(w: &SharedWatch<K>, client: &kube::Client) -> bool {
    if !matches!(w.state(), WatchState::Failing(_)) {
        return false;
    }
    super::answers(client, Duration::from_secs(2)).await
}

/// The shared watches of a process, by what they watch. Holds them weakly:
/// a watch stops when the last cache using it is dropped.
pub struct Registry<Key, K> {
    watches: Mutex<HashMap<Key, Weak<SharedWatch<K>>>>,
}

impl<Key, K> Default for Registry<Key, K> {
    fn default() -> Self {
        Registry {
            watches: Mutex::new(HashMap::new()),
        }
    }
}

impl<Key: Eq + Hash, K> Registry<Key, K> {
    /// The running watch for `key`, or a new one from `start`.
    pub fn obtain(
        &self,
        key: Key,
        start: impl FnOnce() -> Arc<SharedWatch<K>>,
    ) -> Arc<SharedWatch<K>> {
        let mut w = self.watches.lock().expect("registry lock");
        if let Some(live) = w.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        w.retain(|_, v| v.strong_count() > 0);
        let fresh = start();
        w.insert(key, Arc::downgrade(&fresh));
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_move_between_keys_and_leave_on_delete() {
        let mut o: Objects<u32> = Objects::default();
        assert_eq!(o.insert("ns/b", "web", Arc::new(2)), None);
        assert_eq!(o.insert("ns/a", "web", Arc::new(1)), None);
        assert_eq!(o.insert("ns/a", "web", Arc::new(3)), None);
        assert_eq!(o.by_key["web"].len(), 2);
        let in_order: Vec<u32> = o.by_key["web"].values().map(|v| **v).collect();
        assert_eq!(in_order, [3, 2], "a group reads in id order");
        assert_eq!(o.get("web", "ns/a").map(|v| **v), Some(3));
        // Relabelled: the object leaves its old group.
        assert_eq!(o.insert("ns/a", "api", Arc::new(4)), Some("web".into()));
        assert_eq!(o.by_key["web"].len(), 1);
        assert_eq!(o.by_key["api"].len(), 1);
        // One copy of an object's id and of its key, whoever holds them.
        let (id, key) = o.key_of.get_key_value("ns/a").unwrap();
        assert!(Arc::ptr_eq(id, &o.by_key["api"].0[0].0));
        assert!(Arc::ptr_eq(key, o.by_key.get_key_value("api").unwrap().0));
        assert_eq!(o.remove("ns/b"), Some("web".into()));
        assert!(!o.by_key.contains_key("web"));
        assert_eq!(o.remove("ns/b"), None);
    }

    #[test]
    fn wakers_reach_only_their_key_and_fade_with_their_owner() {
        let w: SharedWatch<u32> = SharedWatch {
            kind: "test",
            objects: RwLock::new(Objects::default()),
            state: Mutex::new(WatchState::Starting),
            wakers: Mutex::new(HashMap::new()),
            task: Mutex::new(None),
        };
        let (web, api) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        w.subscribe("web", &web);
        w.subscribe("api", &api);
        let woken = |n: &Arc<Notify>| {
            let f = n.notified();
            let mut f = std::pin::pin!(f);
            // A stored permit completes the future at once.
            f.as_mut().enable();
            futures::FutureExt::now_or_never(f).is_some()
        };
        w.wake("web");
        assert!(woken(&web));
        assert!(!woken(&api));
        w.set_state(WatchState::Healthy);
        assert!(woken(&web) && woken(&api));
        w.set_state(WatchState::Healthy);
        assert!(!woken(&web) && !woken(&api), "no change, no wake");
        drop(api);
        w.wake_all();
        assert_eq!(
            w.wakers.lock().unwrap().len(),
            1,
            "a dropped waiter is forgotten"
        );
    }

    #[test]
    fn only_an_expired_event_is_benign() {
        let status = |code| kube::core::Status::failure("too old", "Expired").with_code(code);
        assert!(is_expired(&watcher::Error::WatchError(status(410).boxed())));
        assert!(!is_expired(&watcher::Error::WatchError(
            status(500).boxed()
        )));
        assert!(!is_expired(&watcher::Error::NoResourceVersion));
    }
}
