//! The simulated control plane of one cluster: a deployment controller, a
//! scheduler and a kubelet, reconciling the objects that changed (as their
//! change feed tells them; a pod's change queues its Deployment) and on the
//! fleet-time deadlines they ask for (a pod becoming Ready, an eviction),
//! as kube-controller-manager's controllers work from informers and queues
//! rather than rereading the cluster.
//!
//! They write through the store like any client would (never over HTTP, so
//! their writes are not counted as API requests), and only when something
//! changes. Events expire after an hour of fleet time, as in a real cluster.

pub mod deployments;
pub mod feed;
pub mod jobs;
pub mod kubelet;
pub mod nodes;
pub mod scheduler;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;
use tokio::sync::watch;

use super::api_error::ApiResult;
use super::faults::Behaviours;
use super::kinds::Kind;
use super::store::{Key, Store, Target, WriteOptions};
use cutover_core::clock::SharedClock;
use feed::Feed;

/// What the controllers of one cluster share.
#[derive(Debug)]
pub struct Ctx {
    pub cluster: String,
    /// Position of the cluster in the fleet (for addresses).
    pub index: usize,
    pub store: Arc<Store>,
    pub clock: SharedClock,
    pub behaviours: Arc<Behaviours>,
    /// Fleet time from a pod starting to being Ready.
    pub readiness_delay: Duration,
    /// Fleet time a pod may stay on a NotReady node before it is evicted.
    pub evict_after: Duration,
    /// What the deployment controller's last pass saw.
    pub deployments: deployments::Memo,
}

impl Ctx {
    pub fn kind(&self, group: &str, plural: &str) -> Arc<Kind> {
        self.store
            .kind_of(group, plural)
            .unwrap_or_else(|| panic!("built-in kind {plural} is always registered"))
    }

    /// Changes an object in place (no write when nothing changed).
    pub fn update(
        &self,
        kind: &Kind,
        obj: &Value,
        f: impl FnOnce(&mut Value),
    ) -> ApiResult<Arc<Value>> {
        let (ns, name) = (
            super::meta::namespace(obj).to_string(),
            super::meta::name(obj).to_string(),
        );
        self.store.modify(
            kind,
            &ns,
            &name,
            Target::All,
            false,
            &WriteOptions::default(),
            |cur| {
                let mut next = cur.cloned().unwrap_or_default();
                f(&mut next);
                Ok(next)
            },
        )
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// What a pass looks at beyond what changed: one object that asked to be
/// looked at again by a time, as a controller's queue holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Work {
    Deployment(Key),
    Pod(Key),
    /// The Jobs of a namespace (there are few).
    Jobs(String),
}

/// The objects a pass looks at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Items {
    pub deployments: BTreeSet<Key>,
    pub pods: BTreeSet<Key>,
    /// Namespaces whose Jobs to look at.
    pub jobs: BTreeSet<String>,
}

impl Items {
    fn add(&mut self, w: &Work) {
        match w {
            Work::Deployment(k) => self.deployments.insert(k.clone()),
            Work::Pod(k) => self.pods.insert(k.clone()),
            Work::Jobs(ns) => self.jobs.insert(ns.clone()),
        };
    }

    fn has(&self, w: &Work) -> bool {
        match w {
            Work::Deployment(k) => self.deployments.contains(k),
            Work::Pod(k) => self.pods.contains(k),
            Work::Jobs(ns) => self.jobs.contains(ns),
        }
    }

    fn is_empty(&self) -> bool {
        self.deployments.is_empty() && self.pods.is_empty() && self.jobs.is_empty()
    }
}

/// What a pass looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Some(Items),
}

impl Scope {
    /// The pods in scope, as stored now.
    pub fn pods(&self, store: &Store) -> Vec<Arc<Value>> {
        match self {
            Scope::All => store.all("", "pods"),
            Scope::Some(items) => items
                .pods
                .iter()
                .filter_map(|k| store.find("", "pods", k))
                .collect(),
        }
    }

    /// The Deployments in scope, as stored now, and those in scope no longer stored.
    pub fn deployments(&self, store: &Store) -> (Vec<Arc<Value>>, Vec<Key>) {
        match self {
            Scope::All => (store.all("apps", "deployments"), Vec::new()),
            Scope::Some(items) => {
                let (mut found, mut gone) = (Vec::new(), Vec::new());
                for k in &items.deployments {
                    match store.find("apps", "deployments", k) {
                        Some(d) => found.push(d),
                        None => gone.push(k.clone()),
                    }
                }
                (found, gone)
            }
        }
    }

    /// The Jobs in scope, as stored now.
    pub fn jobs(&self, store: &Store) -> Vec<Arc<Value>> {
        match self {
            Scope::All => store.all("batch", "jobs"),
            Scope::Some(items) => items
                .jobs
                .iter()
                .flat_map(|ns| store.in_namespace("batch", "jobs", ns))
                .collect(),
        }
    }
}

/// An object's (namespace, name).
pub fn key_of(obj: &Value) -> Key {
    (
        super::meta::namespace(obj).to_string(),
        super::meta::name(obj).to_string(),
    )
}

/// What a pass leaves for later: when each object next needs a look
/// (fleet time), and which pods wait for room on a node.
#[derive(Debug, Default)]
pub struct Pass {
    due: HashMap<Work, Timestamp>,
    waiting: BTreeSet<Key>,
}

impl Pass {
    /// The object needs a look at `t` (the earliest such time wins).
    pub fn due(&mut self, w: Work, t: Timestamp) {
        self.due
            .entry(w)
            .and_modify(|d| *d = (*d).min(t))
            .or_insert(t);
    }

    /// The pod fits nowhere yet.
    pub fn waiting(&mut self, pod: Key) {
        self.waiting.insert(pod);
    }

    /// Replaces what an earlier pass left for the objects `later` looked at.
    fn merge(&mut self, scope: &Scope, later: Pass) {
        match scope {
            Scope::All => *self = later,
            Scope::Some(items) => {
                self.due.retain(|w, _| !items.has(w));
                self.waiting.retain(|p| !items.pods.contains(p));
                self.due.extend(later.due);
                self.waiting.extend(later.waiting);
            }
        }
    }

    fn first_due(&self) -> Option<Timestamp> {
        self.due.values().min().copied()
    }
}

/// What the next pass looks at, given what changed and what fell due.
fn scope_of(changed: feed::Changed, pending: &Pass, now: Timestamp) -> Option<Scope> {
    if changed.everything {
        return Some(Scope::All);
    }
    let mut items = Items {
        deployments: changed.deployments,
        pods: changed.pods,
        jobs: changed.jobs,
    };
    for (w, _) in pending.due.iter().filter(|(_, t)| **t <= now) {
        items.add(w);
    }
    if changed.room {
        items.pods.extend(pending.waiting.iter().cloned());
    }
    (!items.is_empty()).then_some(Scope::Some(items))
}

/// Runs the controllers until `stop` fires.
pub async fn run(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mut feed = Feed::start(ctx.store.clone());
    let mut behaviours = ctx.behaviours.changed();
    let mut pending = Pass::default();
    let mut events_due: Option<Timestamp> = None;
    loop {
        behaviours.borrow_and_update();
        feed.drain();
        let started = std::time::Instant::now();
        let now = ctx.now();
        let changed = feed.take();
        let sweep = changed.everything || events_due.is_some_and(|t| t <= now);
        if let Some(scope) = scope_of(changed, &pending, now) {
            let mut pass = Pass::default();
            deployments::reconcile(&ctx, &scope, &mut pass);
            // The pods the Deployment controller deleted leave the
            // scheduler's count before it places any (their changes are
            // looked at in the next pass, as any other).
            feed.drain();
            scheduler::reconcile(&ctx, &scope, feed.bound_mut(), &mut pass);
            kubelet::reconcile(&ctx, &scope, &mut pass);
            jobs::reconcile(&ctx, &scope, &mut pass);
            pending.merge(&scope, pass);
        }
        if sweep {
            events_due = expire_events(&ctx);
        }
        if let Some(t) = feed.take_events_due() {
            events_due = Some(events_due.map_or(t, |d| d.min(t)));
        }
        let next = pending.first_due().into_iter().chain(events_due).min();
        let now = ctx.now();
        let wait = match next {
            Some(t) if t > now => ctx.clock.real(t.duration_since(now).unsigned_abs()),
            Some(_) => Duration::from_millis(5),
            None => Duration::from_secs(1),
        };
        let took = started.elapsed();
        let wait = wait
            .clamp(Duration::from_millis(5), Duration::from_secs(1))
            .max(took);
        // Changes taken in during the pass (after the Deployment
        // controller wrote) are looked at next, without waiting for another.
        let wake = async {
            if !feed.pending() {
                feed.next().await;
            }
        };
        tokio::select! {
            _ = wake => {
                // Let a burst of writes land before the next pass; a pass
                // over a big fleet waits as long as it took, so the
                // controllers take at most half of a core however much is
                // written.
                tokio::time::sleep(took.max(Duration::from_millis(2))).await;
            }
            _ = behaviours.changed() => feed.everything(),
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Fleet time an Event is kept.
const EVENT_TTL: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

/// Deletes Events older than the TTL; returns when the oldest left expires.
fn expire_events(ctx: &Ctx) -> Option<Timestamp> {
    let now = ctx.now();
    let kind = ctx.kind("", "events");
    let mut next: Option<Timestamp> = None;
    for e in ctx.store.all("", "events") {
        let Some(expires) = event_expiry(&e) else {
            continue;
        };
        if expires <= now {
            let (ns, name) = (super::meta::namespace(&e), super::meta::name(&e));
            let _ = ctx.store.delete(&kind, ns, name, &Default::default());
        } else {
            next = Some(next.map_or(expires, |n| n.min(expires)));
        }
    }
    next
}

/// When an Event expires: an hour after it was last seen.
fn event_expiry(e: &Value) -> Option<Timestamp> {
    ["lastTimestamp", "eventTime", "firstTimestamp"]
        .iter()
        .find_map(|f| e[*f].as_str().and_then(super::meta::parse_time))
        .or_else(|| {
            e["metadata"]["creationTimestamp"]
                .as_str()
                .and_then(super::meta::parse_time)
        })
        .and_then(|t| t.checked_add(EVENT_TTL).ok())
}
