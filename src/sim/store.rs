//! One cluster's object store: every object as JSON keyed by resource,
//! namespace and name, one monotonically increasing `resourceVersion`, a
//! bounded history of changes for watches, and a broadcast of each change.
//!
//! Owns write semantics (uid, generation, resourceVersion, status
//! subresource, conflicts, finalizers, owner garbage collection). It never
//! speaks HTTP and runs no controller.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::admission;
use super::api_error::{ApiError, ApiResult};
use super::kinds::{Kind, Registry};
use super::meta;
use super::selectors::{FieldSelector, LabelSelector};
use crate::clock::SharedClock;

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
    /// The object before a modification, so a filtered watch can tell an object left its selection.
    pub previous: Option<Arc<Value>>,
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

type Key = (String, String);
type Objects = BTreeMap<Key, Arc<Value>>;

struct Inner {
    rv: u64,
    registry: Registry,
    objects: HashMap<Key, Objects>,
    history: VecDeque<Arc<Change>>,
    /// The newest resourceVersion no longer in `history`: watches from before it get 410 Gone.
    compacted: u64,
}

/// A cluster's objects. Cheap to share; every method is synchronous and short.
pub struct Store {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Arc<Change>>,
    latest: watch::Sender<u64>,
    clock: SharedClock,
    history_limit: usize,
}

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
    pub fn new(clock: SharedClock, history_limit: usize) -> Store {
        let (changes, _) = broadcast::channel(4096);
        let (latest, _) = watch::channel(0);
        Store {
            inner: Mutex::new(Inner {
                rv: 0,
                registry: Registry::with_builtins(),
                objects: HashMap::new(),
                history: VecDeque::new(),
                compacted: 0,
            }),
            changes,
            latest,
            clock,
            history_limit: history_limit.max(1),
        }
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
                    .filter(|((n, _), _)| ns.is_none_or(|want| !kind.namespaced || n == want))
                    .map(|(_, o)| o)
                    .filter(|o| labels.matches_object(o) && fields.matches(o))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        (items, inner.rv)
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
        Ok(self.remove(&mut inner, kind, ns, name, opts.orphan))
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
                sub.backlog = inner
                    .history
                    .iter()
                    .filter(|c| c.rv > from && c.group == kind.group && c.resource == kind.plural)
                    .cloned()
                    .collect();
            }
        }
        Ok(sub)
    }

    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        inner: &mut Inner,
        kind: &Kind,
        ns: &str,
        name: &str,
        current: Option<Arc<Value>>,
        mut next: Value,
        target: Target,
        opts: &WriteOptions,
    ) -> ApiResult<Arc<Value>> {
        if let Err(problem) = check_name(kind, name) {
            return Err(ApiError::invalid(&kind.group, &kind.plural, name, problem));
        }
        if kind.namespaced && ns.is_empty() {
            return Err(ApiError::bad_request(
                "the namespace of the object must be set",
            ));
        }
        let body_ns = meta::namespace(&next).to_string();
        if kind.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
            )));
        }
        if current.is_none() && kind.namespaced && !namespace_exists(inner, ns) {
            return Err(ApiError::not_found("", "namespaces", ns));
        }
        let now = self.clock.now();
        let mut obj = match (&current, target) {
            (Some(cur), Target::Status) => {
                let mut o = (**cur).clone();
                o["status"] = next.get("status").cloned().unwrap_or(Value::Null);
                o
            }
            (Some(cur), Target::Main) if kind.status => {
                next["status"] = cur.get("status").cloned().unwrap_or(Value::Null);
                next
            }
            (None, Target::Main) if kind.status => {
                next["status"] = Value::Null;
                next
            }
            (None, Target::Status) => {
                return Err(ApiError::not_found(&kind.group, &kind.plural, name));
            }
            _ => next,
        };
        if obj["status"].is_null()
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        obj["apiVersion"] = json!(kind.api_version(kind.storage_version()));
        obj["kind"] = json!(kind.kind);
        let md = &mut obj["metadata"];
        md["name"] = json!(name);
        if kind.namespaced {
            md["namespace"] = json!(ns);
        } else if let Some(m) = md.as_object_mut() {
            m.remove("namespace");
        }
        match &current {
            Some(cur) => {
                for keep in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                ] {
                    // Only the store itself (a delete with finalizers) marks an object deleted.
                    let own_mark = target == Target::All
                        && keep.starts_with("deletion")
                        && cur["metadata"][keep].is_null();
                    if !own_mark {
                        md[keep] = cur["metadata"][keep].clone();
                    }
                }
                if target == Target::Status {
                    md["managedFields"] = cur["metadata"]["managedFields"].clone();
                }
                if spec_changed(cur, &obj) {
                    let g = cur["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                    obj["metadata"]["generation"] = json!(g);
                }
            }
            None => {
                md["uid"] = json!(meta::new_uid());
                md["creationTimestamp"] = json!(meta::time(now));
                md["generation"] = json!(1);
                if let Some(m) = md.as_object_mut() {
                    m.remove("deletionTimestamp");
                }
            }
        }
        strip_nulls(&mut obj["metadata"]);
        admission::admit(kind, current.as_deref(), &mut obj, &inner.registry, now)?;
        if let Some(cur) = &current
            && same_object(cur, &obj)
        {
            return Ok(cur.clone());
        }
        if current.is_none() && lookup(inner, kind, ns, name).is_ok() {
            return Err(ApiError::already_exists(&kind.group, &kind.plural, name));
        }
        if opts.dry_run {
            if current.is_none() {
                obj["metadata"]["resourceVersion"] = json!("");
            }
            return Ok(Arc::new(obj));
        }
        // A terminating object whose last finalizer went away is gone.
        if current.is_some()
            && meta::is_terminating(&obj)
            && obj["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty())
        {
            inner
                .objects
                .entry(gr(kind))
                .or_default()
                .insert((scope(kind, ns), name.to_string()), Arc::new(obj));
            return Ok(self.remove(inner, kind, ns, name, false));
        }
        admission::after_commit(kind, &obj, &mut inner.registry);
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let obj = Arc::new(obj);
        inner
            .objects
            .entry(gr(kind))
            .or_default()
            .insert((scope(kind, ns), name.to_string()), obj.clone());
        let change = if current.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.record(inner, kind, change, obj.clone(), current);
        Ok(obj)
    }

    /// Removes an object now, with its dependents (or orphaning them), and records the deletions.
    fn remove(
        &self,
        inner: &mut Inner,
        kind: &Kind,
        ns: &str,
        name: &str,
        orphan: bool,
    ) -> Arc<Value> {
        let key = (scope(kind, ns), name.to_string());
        let Some(obj) = inner
            .objects
            .get_mut(&gr(kind))
            .and_then(|m| m.remove(&key))
        else {
            return Arc::new(Value::Null);
        };
        inner.rv += 1;
        let mut gone = (*obj).clone();
        gone["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let gone = Arc::new(gone);
        self.record(inner, kind, ChangeType::Deleted, gone.clone(), None);
        for (dep_kind, dep_ns, dep_name) in dependents(inner, kind, &obj) {
            if orphan {
                self.orphan(inner, &dep_kind, &dep_ns, &dep_name, meta::uid(&obj));
            } else {
                self.remove(inner, &dep_kind, &dep_ns, &dep_name, false);
            }
        }
        if let Some(removed) = admission::after_delete(kind, &obj, &mut inner.registry) {
            let all: Vec<Key> = inner
                .objects
                .get(&gr(&removed))
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for (n, o) in all {
                self.remove(inner, &removed, &n, &o, false);
            }
        }
        gone
    }

    fn orphan(&self, inner: &mut Inner, kind: &Kind, ns: &str, name: &str, owner_uid: &str) {
        let Ok(cur) = lookup(inner, kind, ns, name) else {
            return;
        };
        let mut next = (*cur).clone();
        if let Some(refs) = next["metadata"]["ownerReferences"].as_array_mut() {
            refs.retain(|r| r["uid"] != owner_uid);
        }
        let _ = self.commit(
            inner,
            kind,
            ns,
            name,
            Some(cur),
            next,
            Target::All,
            &WriteOptions::default(),
        );
    }

    fn record(
        &self,
        inner: &mut Inner,
        kind: &Kind,
        change: ChangeType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let c = Arc::new(Change {
            rv: inner.rv,
            group: kind.group.clone(),
            resource: kind.plural.clone(),
            change,
            object,
            previous,
        });
        inner.history.push_back(c.clone());
        while inner.history.len() > self.history_limit {
            if let Some(old) = inner.history.pop_front() {
                inner.compacted = old.rv;
            }
        }
        let _ = self.changes.send(c);
        self.latest.send_replace(inner.rv);
    }
}

fn gr(kind: &Kind) -> Key {
    (kind.group.clone(), kind.plural.clone())
}

/// The namespace part of a key: empty for cluster-scoped kinds.
fn scope(kind: &Kind, ns: &str) -> String {
    if kind.namespaced {
        ns.to_string()
    } else {
        String::new()
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

/// Objects that name `owner` in their owner references, or live in it when it is a namespace.
fn dependents(inner: &Inner, kind: &Kind, owner: &Value) -> Vec<(Kind, String, String)> {
    let uid = meta::uid(owner);
    let is_namespace = kind.group.is_empty() && kind.plural == "namespaces";
    let owner_ns = meta::namespace(owner);
    let mut out = Vec::new();
    for k in inner.registry.all() {
        let Some(objs) = inner.objects.get(&gr(k)) else {
            continue;
        };
        for ((ns, name), o) in objs {
            let owned = o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
                && (!kind.namespaced || ns == owner_ns);
            let contained = is_namespace && k.namespaced && ns == meta::name(owner);
            if owned || contained {
                out.push(((**k).clone(), ns.clone(), name.clone()));
            }
        }
    }
    out
}

/// Kubernetes object names: DNS subdomains (RBAC names may also hold `:`).
fn check_name(kind: &Kind, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("metadata.name: Required value: name or generateName is required".into());
    }
    let rbac = kind.group == "rbac.authorization.k8s.io";
    let ok = name.len() <= 253
        && name.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '-'
                || c == '.'
                || (rbac && c == ':')
        })
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case \
             alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

/// Whether anything outside `metadata` and `status` differs (what bumps `generation`).
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            for k in ["metadata", "status", "apiVersion", "kind"] {
                m.remove(k);
            }
        }
        v
    };
    strip(old) != strip(new)
}

/// Equal but for `resourceVersion` and the times in `managedFields`: a no-op write.
fn same_object(old: &Value, new: &Value) -> bool {
    let norm = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            if let Some(Value::Array(fields)) = m.get_mut("managedFields") {
                for f in fields {
                    if let Some(f) = f.as_object_mut() {
                        f.remove("time");
                    }
                }
            }
        }
        v
    };
    norm(old) == norm(new)
}

fn strip_nulls(v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, x| !x.is_null());
    }
}
