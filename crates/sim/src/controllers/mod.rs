//! The simulated control plane of one cluster: a deployment controller, a
//! scheduler and a kubelet, reconciling on every store change and on the
//! fleet-time deadlines they ask for (a pod becoming Ready, an eviction).
//!
//! They write through the store like any client would (never over HTTP, so
//! their writes are not counted as API requests), and only when something
//! changes. Events expire after an hour of fleet time, as in a real cluster.

pub mod deployments;
pub mod jobs;
pub mod kubelet;
pub mod nodes;
pub mod scheduler;

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

/// Runs the controllers until `stop` fires.
pub async fn run(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mut changed = ctx.store.changed();
    loop {
        changed.borrow_and_update();
        let started = std::time::Instant::now();
        let next = [
            deployments::reconcile(&ctx),
            scheduler::reconcile(&ctx),
            kubelet::reconcile(&ctx),
            jobs::reconcile(&ctx),
            expire_events(&ctx),
        ]
        .into_iter()
        .flatten()
        .min();
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
            _ = changed.changed() => {
                // Let a burst of writes land before the next pass; a pass
                // over a big fleet waits as long as it took, so the
                // controllers take at most half of a core however much is
                // written.
                tokio::time::sleep(took.max(Duration::from_millis(2))).await;
            }
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
        let seen = ["lastTimestamp", "eventTime", "firstTimestamp"]
            .iter()
            .find_map(|f| e[*f].as_str().and_then(super::meta::parse_time))
            .or_else(|| {
                e["metadata"]["creationTimestamp"]
                    .as_str()
                    .and_then(super::meta::parse_time)
            });
        let Some(expires) = seen.and_then(|t| t.checked_add(EVENT_TTL).ok()) else {
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
