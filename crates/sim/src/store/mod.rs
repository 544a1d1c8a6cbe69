//! One cluster's object store: every object as JSON keyed by resource,
//! namespace and name, one monotonically increasing `resourceVersion`, a
//! history of changes (the watch cache's for watches, etcd's for lists at
//! an earlier resourceVersion), and a broadcast of each change.
//!
//! Owns write semantics (uid, generation, resourceVersion, status
//! subresource, conflicts, finalizers, owner garbage collection). It never
//! speaks HTTP and runs no controller.

mod commit;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::api_error::{ApiError, ApiResult};
use super::kinds::{Kind, Registry};
use super::meta;
use super::selectors::{FieldSelector, LabelSelector};
use cutover_core::clock::SharedClock;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One committed change, as watches replay it.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub group: String,
    pub resource: String,
    pub change: ChangeType,
    pub object: Arc<Value>,
    /// The object before a modification or a deletion, so a filtered watch
    /// can tell an object left its selection and a list at an earlier
    /// resourceVersion finds it as it was.
    pub previous: Option<Arc<Value>>,
    /// When it was committed (wall time), for the history window.
    pub at: std::time::Instant,
    /// The object as served at one apiVersion, encoded by the first watcher
    /// that sends it and shared by the rest, as kube-apiserver's watch cache
    /// serializes an object once for all its watchers (`cachingObject`,
    /// `staging/src/k8s.io/apiserver/pkg/storage/cacher/caching_object.go`).
    /// Kept while the change is among the latest `CHANGES_HELD`: the
    /// history holds minutes of changes, and the encoding would double them.
    pub encoded: Mutex<Option<(String, bytes::Bytes)>>,
}

/// The changes a live watch holds before it falls too far behind, and how
/// many of the latest changes keep their encoding.
pub const CHANGES_HELD: usize = 4096;

impl Change {
    /// The object as JSON with `apiVersion` set to `api_version`: encoded
    /// once for the first version asked for, and afresh for any other.
    pub fn served(&self, api_version: &str) -> bytes::Bytes {
        let mut encoded = self.encoded.lock().unwrap_or_else(|p| p.into_inner());
        match &*encoded {
            Some((version, text)) if version == api_version => text.clone(),
            Some(_) => served_json(&self.object, api_version),
            None => {
                let text = served_json(&self.object, api_version);
                *encoded = Some((api_version.to_string(), text.clone()));
                text
            }
        }
    }

    /// Drops the shared encoding; a watch replaying the change encodes it again.
    fn forget_encoding(&self) {
        self.encoded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

/// `obj` as JSON with its `apiVersion` set, written without copying it.
pub fn served_json(obj: &Value, api_version: &str) -> bytes::Bytes {
    let mut out = Vec::new();
    write_served(&mut out, obj, api_version);
    bytes::Bytes::from(out)
}

/// Appends `obj` as JSON with its `apiVersion` set to `out`.
pub fn write_served(out: &mut Vec<u8>, obj: &Value, api_version: &str) {
    struct Served<'a>(&'a serde_json::Map<String, Value>, &'a str);
    impl serde::Serialize for Served<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("apiVersion", self.1)?;
            for (k, v) in self.0.iter().filter(|(k, _)| *k != "apiVersion") {
                m.serialize_entry(k, v)?;
            }
            m.end()
        }
    }
    let written = match obj.as_object() {
        Some(map) => serde_json::to_writer(&mut *out, &Served(map, api_version)),
        None => serde_json::to_writer(&mut *out, obj),
    };
    written.expect("a JSON value encodes");
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The main resource: `.status` is kept as stored when the kind has a status subresource.
    Main,
    /// The `/status` subresource: only `.status` changes.
    Status,
    /// Everything (the simulated controllers' own writes).
    All,
}

/// Options every write takes.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    /// `Orphan` keeps dependents; anything else deletes them.
    pub orphan: bool,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

/// Every change committed after a subscription.
pub type Changes = broadcast::Receiver<Arc<Change>>;

/// A resource (group, plural), or an object's (namespace, name).
pub type Key = (String, String);
type Objects = BTreeMap<Key, Arc<Value>>;

struct Inner {
    rv: u64,
    registry: Registry,
    objects: HashMap<Key, Objects>,
    /// Every change the watch cache or etcd still holds, oldest first.
    history: VecDeque<Arc<Change>>,
    /// The newest resourceVersion the watch cache no longer holds: watches
    /// from before it get 410 Gone.
    compacted: u64,
    /// etcd's own compaction, which bounds lists at an earlier
    /// resourceVersion (continue tokens); `None` when the store keeps only
    /// the watch cache's history.
    etcd: Option<Etcd>,
    /// The states lately listed at an earlier resourceVersion, whole: the
    /// pages of a paginated list read one state, so each page after the
    /// first finds its place in it rather than working it out again from
    /// the history (etcd reads a page by key range).
    listed: VecDeque<Listed>,
    /// The resourceVersion of each resource's last change.
    last_change: HashMap<Key, u64>,
    /// Each owner's dependents, by the owner's uid: the objects whose owner
    /// references name it (as the garbage collector's graph holds them), so
    /// a delete finds them without reading every object of the cluster.
    owned: HashMap<String, BTreeSet<(Key, Key)>>,
}

/// A cluster's objects. Cheap to share; every method is synchronous and short.
pub struct Store {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Arc<Change>>,
    latest: watch::Sender<u64>,
    clock: SharedClock,
    history: HistoryBounds,
}

/// How much change history a store keeps. Watches resume from the watch
/// cache's: at least `min` changes, and every change younger than `window`
/// (wall time), never more than 102,400. A list at an earlier
/// resourceVersion (a continue token's) reads etcd's as well, which
/// kube-apiserver compacts every `compaction` (`--etcd-compaction-interval`,
/// 5 minutes) to the revision it saw at the compaction before
/// (k8s.io/apiserver/pkg/storage/etcd3/compact.go), so a revision stays
/// readable for one to two intervals. `None`: the watch cache's only.
#[derive(Debug, Clone, Copy)]
pub struct HistoryBounds {
    pub min: usize,
    pub window: std::time::Duration,
    pub compaction: Option<std::time::Duration>,
}

/// One state listed at an earlier resourceVersion.
struct Listed {
    resource: Key,
    ns: Option<String>,
    at: u64,
    objects: Arc<Vec<Arc<Value>>>,
}

/// How many listed states a store keeps: a few lists at a time, of a few
/// kinds and namespaces each, per client.
const LISTED: usize = 32;

/// etcd's compactor, worked out lazily at each commit and each list: at
/// every tick it compacts to the revision it saw at the tick before.
#[derive(Debug, Clone, Copy)]
struct Etcd {
    every: std::time::Duration,
    next_tick: std::time::Instant,
    /// The revision seen at the last tick (0 before the first).
    seen: u64,
    /// Revisions up to this one are compacted.
    compacted: u64,
}

impl Etcd {
    fn new(every: std::time::Duration) -> Etcd {
        Etcd {
            every,
            next_tick: std::time::Instant::now() + every,
            seen: 0,
            compacted: 0,
        }
    }

    /// The ticks due by now, with `rv` the store's revision (unchanged
    /// since the last commit, so also at each tick since). After two, the
    /// rest compact to `rv` as well.
    fn tick(&mut self, rv: u64) {
        let now = std::time::Instant::now();
        let mut ticks = 0u32;
        while self.next_tick <= now && ticks < 2 {
            self.compacted = self.compacted.max(self.seen);
            self.seen = rv;
            self.next_tick += self.every;
            ticks += 1;
        }
        if self.next_tick <= now {
            // Idle for longer: nothing changed at the ticks skipped.
            self.compacted = rv;
            self.next_tick = now + self.every;
        }
    }
}

/// The watch cache's upper bound on events kept.
const MAX_HISTORY: usize = 100 * 1024;

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Only changes from now on.
    Now,
    /// The objects stored now (as ADDED), then changes.
    Snapshot,
    /// Changes after this resourceVersion (410 Gone if history no longer reaches back).
    After(u64),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("resource_version", &self.resource_version())
            .finish()
    }
}

/// A watch's starting point: the objects or changes to replay, then live changes.
pub struct Subscription {
    pub initial: Vec<Arc<Value>>,
    pub backlog: Vec<Arc<Change>>,
    pub live: broadcast::Receiver<Arc<Change>>,
    pub rv: u64,
}

impl Store {
    /// A store that keeps exactly its last `history_limit` changes.
    pub fn new(clock: SharedClock, history_limit: usize) -> Store {
        Store::with_history(
            clock,
            HistoryBounds {
                min: history_limit,
                window: std::time::Duration::ZERO,
                compaction: None,
            },
        )
    }

    pub fn with_history(clock: SharedClock, history: HistoryBounds) -> Store {
        let (changes, _) = broadcast::channel(CHANGES_HELD);
        let (latest, _) = watch::channel(0);
        Store {
            inner: Mutex::new(Inner {
                rv: 0,
                registry: Registry::with_builtins(),
                objects: HashMap::new(),
                history: VecDeque::new(),
                compacted: 0,
                etcd: history.compaction.map(Etcd::new),
                listed: VecDeque::new(),
                last_change: HashMap::new(),
                owned: HashMap::new(),
            }),
            changes,
            latest,
            clock,
            history: HistoryBounds {
                min: history.min.max(1),
                ..history
            },
        }
    }

    /// Lets `by` of etcd's time pass, as far as its compactor can tell.
    #[cfg(test)]
    fn let_etcd_time_pass(&self, by: std::time::Duration) {
        if let Some(etcd) = &mut self.lock().etcd {
            etcd.next_tick = etcd.next_tick.checked_sub(by).expect("a time since boot");
        }
    }

    /// How many changes the store holds for watches and lists.
    #[cfg(test)]
    fn history_len(&self) -> usize {
        self.lock().history.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Wakes whenever anything changes; the value is the newest resourceVersion.
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    pub fn find_kind(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Kind>> {
        self.lock().registry.find(group, version, plural)
    }

    pub fn kind_of(&self, group: &str, plural: &str) -> Option<Arc<Kind>> {
        self.lock().registry.by_resource(group, plural)
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// The resourceVersion of the last change to any object of a resource
    /// (0 when none changed yet): whoever derives something from a few
    /// resources can tell whether it is still current.
    pub fn last_change(&self, group: &str, resource: &str) -> u64 {
        self.lock()
            .last_change
            .get(&(group.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn get(&self, kind: &Kind, ns: &str, name: &str) -> ApiResult<Arc<Value>> {
        let inner = self.lock();
        let key = (scope(kind, ns), name.to_string());
        inner
            .objects
            .get(&gr(kind))
            .and_then(|m| m.get(&key))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&kind.group, &kind.plural, name))
    }

    /// Objects of a kind (in one namespace, or all when `ns` is `None`) and the list's resourceVersion.
    pub fn list(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .get(&gr(kind))
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| listed_in(kind, ns, n))
                    .map(|(_, o)| o)
                    .filter(|o| labels.matches_object(o) && fields.matches(o))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        (items, inner.rv)
    }

    /// Every object of a kind as it was at resourceVersion `at` (in one
    /// namespace, or all when `ns` is `None`), in the store's order: the
    /// objects stored now, but for those changed since, which are as the
    /// oldest of those changes found them. 410 once the history no longer
    /// reaches back to `at`, and etcd's 500 for a resourceVersion the store
    /// has not reached. A paginated list reads this once a page: the state
    /// is worked out once and kept for the pages after.
    pub fn list_at(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        at: u64,
    ) -> ApiResult<Arc<Vec<Arc<Value>>>> {
        let mut inner = self.lock();
        if at > inner.rv {
            return Err(ApiError::internal(
                "etcdserver: mvcc: required revision is a future revision",
            ));
        }
        let rv = inner.rv;
        if let Some(etcd) = &mut inner.etcd {
            etcd.tick(rv);
        }
        if at < inner.list_floor() {
            return Err(ApiError::expired(
                "The resourceVersion for the provided list is too old.",
            ));
        }
        let ns = ns.filter(|_| kind.namespaced);
        let resource = gr(kind);
        if let Some(l) = inner
            .listed
            .iter()
            .find(|l| l.at == at && l.resource == resource && l.ns.as_deref() == ns)
        {
            return Ok(l.objects.clone());
        }
        // Each object changed since `at`, as it was then (`None`: absent).
        let mut then: BTreeMap<Key, Option<Arc<Value>>> = BTreeMap::new();
        for c in inner.history.iter().rev() {
            if c.rv <= at {
                break;
            }
            if c.group != kind.group || c.resource != kind.plural {
                continue;
            }
            let md = &c.object["metadata"];
            let n = scope(kind, md["namespace"].as_str().unwrap_or_default());
            if !listed_in(kind, ns, &n) {
                continue;
            }
            let was = match c.change {
                ChangeType::Added => None,
                ChangeType::Modified => c.previous.clone(),
                ChangeType::Deleted => Some(c.previous.clone().unwrap_or_else(|| c.object.clone())),
            };
            // Walking back, an older change of the same object overwrites.
            then.insert(
                (n, md["name"].as_str().unwrap_or_default().to_string()),
                was,
            );
        }
        let now = inner.objects.get(&resource);
        let now = now.into_iter().flat_map(|m| match ns {
            Some(ns) => Box::new(
                m.range((ns.to_string(), String::new())..)
                    .take_while(move |((n, _), _)| n == ns),
            ) as Box<dyn Iterator<Item = (&Key, &Arc<Value>)>>,
            None => Box::new(m.iter()),
        });
        let mut out = Vec::new();
        let mut then = then.into_iter().peekable();
        for (key, obj) in now {
            while let Some((_, was)) = then.next_if(|(k, _)| k < key) {
                out.extend(was);
            }
            match then.next_if(|(k, _)| k == key) {
                Some((_, was)) => out.extend(was),
                None => out.push(obj.clone()),
            }
        }
        out.extend(then.flat_map(|(_, was)| was));
        let out = Arc::new(out);
        if inner.listed.len() == LISTED {
            inner.listed.pop_front();
        }
        inner.listed.push_back(Listed {
            resource,
            ns: ns.map(str::to_string),
            at,
            objects: out.clone(),
        });
        Ok(out)
    }

    /// Every object of a resource, for the simulated controllers.
    pub fn all(&self, group: &str, resource: &str) -> Vec<Arc<Value>> {
        let inner = self.lock();
        let key = (group.to_string(), resource.to_string());
        inner
            .objects
            .get(&key)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The objects of a resource in one namespace, for the simulated
    /// controllers: a range of the sorted map, not a read of every object.
    pub fn in_namespace(&self, group: &str, resource: &str, ns: &str) -> Vec<Arc<Value>> {
        let inner = self.lock();
        let key = (group.to_string(), resource.to_string());
        let from = (ns.to_string(), String::new());
        inner
            .objects
            .get(&key)
            .map(|m| {
                m.range(from..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, o)| o.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The objects of a resource whose owner references name `uid`, from
    /// the owner index (as the garbage collector's graph holds them).
    pub fn owned_by(&self, uid: &str, group: &str, resource: &str) -> Vec<Arc<Value>> {
        let inner = self.lock();
        let resource = (group.to_string(), resource.to_string());
        let Some(objects) = inner.objects.get(&resource) else {
            return Vec::new();
        };
        inner
            .owned
            .get(uid)
            .into_iter()
            .flatten()
            .filter(|(r, _)| *r == resource)
            .filter_map(|(_, key)| objects.get(key).cloned())
            .collect()
    }

    /// One object by resource and key, for the simulated controllers.
    pub fn find(&self, group: &str, resource: &str, key: &Key) -> Option<Arc<Value>> {
        let inner = self.lock();
        inner
            .objects
            .get(&(group.to_string(), resource.to_string()))
            .and_then(|m| m.get(key))
            .cloned()
    }

    /// Creates an object; `name` may come from `metadata.generateName`.
    pub fn create(
        &self,
        kind: &Kind,
        ns: &str,
        mut obj: Value,
        target: Target,
        opts: &WriteOptions,
    ) -> ApiResult<Arc<Value>> {
        let mut inner = self.lock();
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        if meta::name(&obj).is_empty()
            && let Some(prefix) = obj["metadata"]["generateName"].as_str()
        {
            obj["metadata"]["name"] = json!(format!("{prefix}{}", meta::random_suffix(5)));
        }
        let name = meta::name(&obj).to_string();
        self.commit(&mut inner, kind, ns, &name, None, obj, target, opts)
    }

    /// Replaces an object (PUT). A `resourceVersion` in the body must match the stored one.
    pub fn update(
        &self,
        kind: &Kind,
        ns: &str,
        name: &str,
        obj: Value,
        target: Target,
        opts: &WriteOptions,
    ) -> ApiResult<Arc<Value>> {
        let mut inner = self.lock();
        let current = lookup(&inner, kind, ns, name)?;
        if let Some(rv) = obj["metadata"]["resourceVersion"]
            .as_str()
            .filter(|s| !s.is_empty())
            && Some(rv) != current["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::conflict(&kind.group, &kind.plural, name));
        }
        self.commit(&mut inner, kind, ns, name, Some(current), obj, target, opts)
    }

    /// Read-modify-write under the store's lock (patches, apply, controllers). `f` sees the
    /// current object (or `None` when `create` allows creating it) and returns the new one.
    #[allow(clippy::too_many_arguments)]
    pub fn modify<F>(
        &self,
        kind: &Kind,
        ns: &str,
        name: &str,
        target: Target,
        create: bool,
        opts: &WriteOptions,
        f: F,
    ) -> ApiResult<Arc<Value>>
    where
        F: FnOnce(Option<&Value>) -> ApiResult<Value>,
    {
        let mut inner = self.lock();
        let current = match lookup(&inner, kind, ns, name) {
            Ok(c) => Some(c),
            Err(e) if !create => return Err(e),
            Err(_) => None,
        };
        let mut next = f(current.as_deref())?;
        if let Some(cur) = &current {
            let asked = next["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            if !asked.is_empty() && Some(asked) != cur["metadata"]["resourceVersion"].as_str() {
                return Err(ApiError::conflict(&kind.group, &kind.plural, name));
            }
        } else if !next["metadata"].is_object() {
            next["metadata"] = json!({});
        }
        next["metadata"]["name"] = json!(name);
        self.commit(&mut inner, kind, ns, name, current, next, target, opts)
    }

    /// Deletes an object. With finalizers it is only marked (`deletionTimestamp`) until they
    /// are removed. Dependents (by owner reference) are deleted too unless orphaned.
    pub fn delete(
        &self,
        kind: &Kind,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Arc<Value>> {
        let mut inner = self.lock();
        let current = lookup(&inner, kind, ns, name)?;
        if opts
            .precondition_uid
            .as_deref()
            .is_some_and(|u| u != meta::uid(&current))
            || opts
                .precondition_rv
                .as_deref()
                .is_some_and(|r| Some(r) != current["metadata"]["resourceVersion"].as_str())
        {
            return Err(ApiError::conflict(&kind.group, &kind.plural, name));
        }
        if opts.dry_run {
            return Ok(current);
        }
        let finalizers = current["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if finalizers {
            if meta::is_terminating(&current) {
                return Ok(current);
            }
            let mut marked = (*current).clone();
            marked["metadata"]["deletionTimestamp"] = json!(meta::time(self.clock.now()));
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            return self.commit(
                &mut inner,
                kind,
                ns,
                name,
                Some(current),
                marked,
                Target::All,
                &WriteOptions::default(),
            );
        }
        Ok(self.remove(&mut inner, kind, ns, name, opts.orphan, None))
    }

    /// The objects of some resources as stored now, and every change after
    /// them (of any resource: the receiver filters), consistent with each other.
    pub fn subscribe_to(&self, resources: &[(&str, &str)]) -> (Vec<(Key, Arc<Value>)>, Changes) {
        let inner = self.lock();
        let live = self.changes.subscribe();
        let mut initial = Vec::new();
        for (group, resource) in resources {
            let key = (group.to_string(), resource.to_string());
            for obj in inner.objects.get(&key).into_iter().flat_map(|m| m.values()) {
                initial.push((key.clone(), obj.clone()));
            }
        }
        (initial, live)
    }

    /// Subscribes to changes of one resource. `Start::Snapshot` also returns the objects
    /// stored now, consistent with the live changes that follow them.
    pub fn subscribe(&self, kind: &Kind, start: Start) -> ApiResult<Subscription> {
        let inner = self.lock();
        let live = self.changes.subscribe();
        let mut sub = Subscription {
            initial: Vec::new(),
            backlog: Vec::new(),
            live,
            rv: inner.rv,
        };
        match start {
            Start::Now => {}
            Start::Snapshot => {
                sub.initial = inner
                    .objects
                    .get(&gr(kind))
                    .map(|m| m.values().cloned().collect())
                    .unwrap_or_default();
            }
            Start::After(from) => {
                if from < inner.compacted {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {from} ({})",
                        inner.compacted + 1
                    )));
                }
                let after = inner.history.partition_point(|c| c.rv <= from);
                sub.backlog = inner
                    .history
                    .range(after..)
                    .filter(|c| c.group == kind.group && c.resource == kind.plural)
                    .cloned()
                    .collect();
            }
        }
        Ok(sub)
    }
}

impl Inner {
    /// The oldest resourceVersion a list can read at: etcd's compaction
    /// (or the watch cache's bound when the store keeps no etcd history).
    fn list_floor(&self) -> u64 {
        match &self.etcd {
            Some(etcd) => etcd.compacted,
            None => self.compacted,
        }
    }

    /// Drops the changes neither the watch cache nor etcd holds any more.
    fn trim_history(&mut self) {
        let floor = self.compacted.min(self.list_floor());
        while self.history.front().is_some_and(|c| c.rv <= floor) {
            self.history.pop_front();
        }
    }
}

fn gr(kind: &Kind) -> Key {
    (kind.group.clone(), kind.plural.clone())
}

/// Whether an object kept under namespace `n` belongs to a list of `ns`
/// (every namespace when `None`; cluster-scoped kinds have none).
fn listed_in(kind: &Kind, ns: Option<&str>, n: &str) -> bool {
    ns.is_none_or(|want| !kind.namespaced || n == want)
}

/// The namespace part of a key: empty for cluster-scoped kinds.
fn scope(kind: &Kind, ns: &str) -> String {
    if kind.namespaced {
        ns.to_string()
    } else {
        String::new()
    }
}

/// The uids an object's owner references name.
fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

impl Inner {
    /// Stores `obj` (or removes the object when `None`) under `kind` and
    /// `key`, keeping the owner index; returns what was stored before.
    fn put(&mut self, kind: &Kind, key: Key, obj: Option<Arc<Value>>) -> Option<Arc<Value>> {
        let resource = gr(kind);
        let objects = self.objects.entry(resource.clone()).or_default();
        let before = match &obj {
            Some(o) => objects.insert(key.clone(), o.clone()),
            None => objects.remove(&key),
        };
        let entry = (resource, key);
        if let Some(b) = &before {
            for uid in owner_uids(b) {
                if let Some(deps) = self.owned.get_mut(uid) {
                    deps.remove(&entry);
                    if deps.is_empty() {
                        self.owned.remove(uid);
                    }
                }
            }
        }
        if let Some(o) = &obj {
            for uid in owner_uids(o) {
                self.owned
                    .entry(uid.to_string())
                    .or_default()
                    .insert(entry.clone());
            }
        }
        before
    }
}

fn lookup(inner: &Inner, kind: &Kind, ns: &str, name: &str) -> ApiResult<Arc<Value>> {
    inner
        .objects
        .get(&gr(kind))
        .and_then(|m| m.get(&(scope(kind, ns), name.to_string())))
        .cloned()
        .ok_or_else(|| ApiError::not_found(&kind.group, &kind.plural, name))
}

fn namespace_exists(inner: &Inner, ns: &str) -> bool {
    inner
        .objects
        .get(&(String::new(), "namespaces".to_string()))
        .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())))
}
