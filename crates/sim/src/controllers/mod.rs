//! The simulated control plane of one cluster: a deployment controller, a
//! scheduler and a kubelet, reconciling what changed (as their change feed
//! tells them, by namespace) and on the fleet-time deadlines they ask for
//! (a pod becoming Ready, an eviction), as kube-controller-manager's
//! controllers work from informers and queues rather than rereading the
//! cluster.
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
use super::store::{Store, Target, WriteOptions};
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

/// Which namespaces a pass looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespaces(BTreeSet<String>),
}

impl Scope {
    /// The objects of a resource in scope, as stored now.
    pub fn objects(&self, store: &Store, group: &str, resource: &str) -> Vec<Arc<Value>> {
        match self {
            Scope::All => store.all(group, resource),
            Scope::Namespaces(set) => set
                .iter()
                .flat_map(|ns| store.in_namespace(group, resource, ns))
                .collect(),
        }
    }

    /// Whether a pass over this scope looks at the namespace: what an
    /// earlier pass left for it is replaced by what this one leaves.
    pub fn covers(&self, ns: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespaces(set) => set.contains(ns),
        }
    }
}

/// What a pass leaves for later: when each namespace next needs a look
/// (fleet time), and where pods wait for room on a node.
#[derive(Debug, Default)]
pub struct Pass {
    due: HashMap<String, Timestamp>,
    waiting: BTreeSet<String>,
}

impl Pass {
    /// The namespace needs a look at `t` (the earliest such time wins).
    pub fn due(&mut self, ns: &str, t: Timestamp) {
        self.due
            .entry(ns.to_string())
            .and_modify(|d| *d = (*d).min(t))
            .or_insert(t);
    }

    /// Pods in the namespace fit nowhere yet.
    pub fn waiting(&mut self, ns: &str) {
        self.waiting.insert(ns.to_string());
    }

    /// Replaces what an earlier pass left for the namespaces `later` looked at.
    fn merge(&mut self, scope: &Scope, later: Pass) {
        self.due.retain(|ns, _| !scope.covers(ns));
        self.waiting.retain(|ns| !scope.covers(ns));
        self.due.extend(later.due);
        self.waiting.extend(later.waiting);
    }

    /// The namespaces due by `now`.
    fn due_by(&self, now: Timestamp) -> impl Iterator<Item = &String> {
        self.due
            .iter()
            .filter(move |(_, t)| **t <= now)
            .map(|(ns, _)| ns)
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
    let mut set = changed.namespaces;
    set.extend(pending.due_by(now).cloned());
    if changed.room {
        set.extend(pending.waiting.iter().cloned());
    }
    (!set.is_empty()).then_some(Scope::Namespaces(set))
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
            scheduler::reconcile(&ctx, &scope, feed.on_node(), &mut pass);
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
        tokio::select! {
            _ = feed.next() => {
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
