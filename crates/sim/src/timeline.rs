//! Runs a scenario's events: waits for each trigger (fleet time since the
//! start, a route's green weight, a Release's step), applies the effect
//! (behaviour change, zone outage, nodes failing one by one, API faults),
//! and clears it after `for`.
//!
//! Owns the event lifecycle; the effects themselves live in faults and nodes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::cluster::SimCluster;
use super::controllers::nodes::{self, NodeHealth};
use super::faults::{ApiFault, Behaviours};
use super::gateway;
use super::scenario::{EventSpec, Scenario};
use super::store::{Target, WriteOptions};

/// How often triggers are checked (wall clock).
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct EventState {
    fired: Option<Timestamp>,
    cleared: bool,
    /// Nodes this event took down, to bring back when it clears.
    downed: Vec<String>,
}

/// The scenario's events over a running fleet.
pub struct Timeline {
    pub events: Vec<EventSpec>,
    pub start: Timestamp,
    pub home: String,
    pub clusters: BTreeMap<String, Arc<SimCluster>>,
    pub behaviours: Arc<Behaviours>,
    states: Mutex<Vec<EventState>>,
}

impl Timeline {
    pub fn new(
        scenario: &Scenario,
        start: Timestamp,
        clusters: BTreeMap<String, Arc<SimCluster>>,
        behaviours: Arc<Behaviours>,
    ) -> Timeline {
        Timeline {
            states: Mutex::new(
                scenario
                    .events
                    .iter()
                    .map(|_| EventState::default())
                    .collect(),
            ),
            events: scenario.events.clone(),
            start,
            home: scenario.home.clone(),
            clusters,
            behaviours,
        }
    }

    /// Looks at every trigger every [`POLL`], and after every write any
    /// API server answers (see [`Timeline::look`]), until every event is over.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if self.events.is_empty() {
            return;
        }
        for c in self.clusters.values() {
            let weak = Arc::downgrade(&self);
            let hook: super::server::AfterWrite = Arc::new(move || {
                if let Some(t) = weak.upgrade() {
                    t.look();
                }
            });
            let _ = c.api.after_write.set(hook);
        }
        loop {
            if self.look() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Fires and clears the events due now; whether every event is over.
    /// Also called before an API server answers a write, so an event
    /// triggered by it (a Release entering a step, a route reaching a weight)
    /// is in force before the writer's next request, however short the step.
    pub fn look(&self) -> bool {
        let Some(any) = self.clusters.values().next() else {
            return true;
        };
        let now = any.ctx.clock.now();
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        for (i, e) in self.events.iter().enumerate() {
            self.step(i, e, &mut states[i], now);
        }
        states.iter().zip(&self.events).all(|(s, e)| {
            s.cleared || (s.fired.is_some() && e.lasts.is_none() && !self.progressive(e, s))
        })
    }

    /// Whether a fired event still has nodes to take down.
    fn progressive(&self, e: &EventSpec, s: &EventState) -> bool {
        e.nodes_not_ready
            .as_ref()
            .is_some_and(|n| s.downed.len() < n.count as usize)
    }

    fn triggered(&self, e: &EventSpec, now: Timestamp) -> bool {
        if let Some(after) = e.after {
            return now
                >= self
                    .start
                    .checked_add(after.signed())
                    .unwrap_or(Timestamp::MAX);
        }
        if let Some(t) = &e.when_green_weight {
            return self
                .clusters
                .get(&t.cluster)
                .and_then(|c| gateway::green_weight(&c.store, t.app.as_deref()))
                .is_some_and(|w| w + 1e-9 >= t.at_least.as_f64());
        }
        if let Some(prefix) = &e.when_release_step {
            let Some(home) = self.clusters.get(&self.home) else {
                return false;
            };
            return home.store.all("cutover.dev", "releases").iter().any(|r| {
                r["status"]["stepName"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(prefix.as_str()))
            });
        }
        false
    }

    fn step(&self, i: usize, e: &EventSpec, s: &mut EventState, now: Timestamp) {
        if s.cleared {
            return;
        }
        let fired = match s.fired {
            Some(t) => t,
            None if self.triggered(e, now) => {
                tracing::info!(
                    event = i,
                    name = e.name.as_deref().unwrap_or_default(),
                    "scenario event fires"
                );
                s.fired = Some(now);
                self.activate(i, e, s, now);
                now
            }
            None => return,
        };
        if let Some(n) = &e.nodes_not_ready {
            let every = n.every.as_duration().as_secs_f64().max(1e-3);
            let due = ((now.duration_since(fired).as_secs_f64() / every).floor() as usize + 1)
                .min(n.count as usize);
            if let Some(c) = self.clusters.get(&n.cluster) {
                let candidates = nodes::in_zone(&c.ctx, n.zone.as_deref());
                let more = due.saturating_sub(s.downed.len());
                let next: Vec<String> = candidates
                    .into_iter()
                    .filter(|c| !s.downed.contains(c))
                    .take(more)
                    .collect();
                for name in next {
                    if nodes::set_health(&c.ctx, &name, NodeHealth::NotReady).is_ok() {
                        s.downed.push(name);
                    }
                }
            }
        }
        if let Some(lasts) = e.lasts
            && now
                >= fired
                    .checked_add(
                        SignedDuration::try_from(lasts.as_duration())
                            .unwrap_or(SignedDuration::MAX),
                    )
                    .unwrap_or(Timestamp::MAX)
        {
            tracing::info!(
                event = i,
                name = e.name.as_deref().unwrap_or_default(),
                "scenario event clears"
            );
            self.clear(i, e, s);
            s.cleared = true;
        }
    }

    fn activate(&self, i: usize, e: &EventSpec, s: &mut EventState, _now: Timestamp) {
        if let Some(b) = &e.behaviour {
            self.behaviours.activate(i, b.clone());
        }
        if let Some(z) = &e.zone_outage
            && let Some(c) = self.clusters.get(&z.cluster)
        {
            for name in nodes::in_zone(&c.ctx, Some(&z.zone)) {
                if nodes::set_health(&c.ctx, &name, NodeHealth::Unreachable).is_ok() {
                    s.downed.push(name);
                }
            }
        }
        let fault = |cluster: &str, f: ApiFault| {
            if let Some(c) = self.clusters.get(cluster) {
                c.faults.activate(i, f);
            }
        };
        if let Some(a) = &e.api_errors {
            fault(
                &a.cluster,
                ApiFault::Errors {
                    code: a.code,
                    ratio: a.ratio.as_f64() / 100.0,
                },
            );
        }
        if let Some(a) = &e.api_latency {
            fault(&a.cluster, ApiFault::Latency(a.latency.as_duration()));
        }
        if let Some(a) = &e.api_unreachable {
            fault(&a.cluster, ApiFault::Unreachable(a.mode));
        }
        if let Some(f) = &e.deploy_freeze {
            let spec = json!({"reason": f.reason, "author": f.author, "scope": {}});
            self.write_freeze(i, |_| spec.clone());
        }
    }

    /// Writes the scenario's DeployFreeze `i` in every cluster that has the CRD.
    fn write_freeze(&self, i: usize, spec: impl Fn(Option<&Value>) -> Value) {
        let name = format!("scenario-freeze-{i}");
        for c in self.clusters.values() {
            let Some(kind) = c.store.kind_of("cutover.dev", "deployfreezes") else {
                continue;
            };
            let _ = c.store.modify(
                &kind,
                "",
                &name,
                Target::Main,
                true,
                &WriteOptions::default(),
                |cur| {
                    let mut obj = cur.cloned().unwrap_or_else(|| {
                        json!({"apiVersion": "cutover.dev/v1alpha1", "kind": "DeployFreeze", "metadata": {"name": name}})
                    });
                    obj["spec"] = spec(cur.map(|c| &c["spec"]));
                    Ok(obj)
                },
            );
        }
    }

    fn clear(&self, i: usize, e: &EventSpec, s: &mut EventState) {
        self.behaviours.clear(i);
        if let Some(f) = &e.deploy_freeze {
            let now = self
                .clusters
                .values()
                .next()
                .map(|c| c.ctx.clock.now())
                .unwrap_or_else(Timestamp::now);
            let lifted =
                json!({"by": f.author, "reason": "the incident is over", "at": now.to_string()});
            self.write_freeze(i, |cur| {
                let mut spec = cur.cloned().unwrap_or_default();
                spec["lifted"] = lifted.clone();
                spec
            });
        }
        let cluster = e
            .zone_outage
            .as_ref()
            .map(|z| &z.cluster)
            .or(e.nodes_not_ready.as_ref().map(|n| &n.cluster))
            .and_then(|c| self.clusters.get(c));
        if let Some(c) = cluster {
            for name in s.downed.drain(..) {
                let _ = nodes::set_health(&c.ctx, &name, NodeHealth::Ready);
            }
        }
        if let Some(a) = e.api_unreachable.as_ref().filter(|a| a.restarts)
            && let Some(c) = self.clusters.get(&a.cluster)
        {
            c.store.restart();
        }
        for c in self.clusters.values() {
            c.faults.clear(i);
        }
    }
}
