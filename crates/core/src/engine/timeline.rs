//! The timeline a release will follow if everything goes well: the engine run
//! against a world where every change takes effect at once and every gate
//! passes, with a manual clock. Used by `cutover plan`; no separate logic.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::observe::{
    ClusterView, FreezeView, GateReport, GateVerdict, Observation, PlacementView, RouteView,
    WorkloadView,
};
use super::{Action, decide};
use crate::spec::status::{Phase, PlannedStep};
use crate::spec::{Percent, ReleaseStatus, ResolvedRelease, Span};

/// One step of the timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub index: u32,
    pub name: String,
    #[serde(flatten)]
    pub step: PlannedStep,
    /// Earliest start, from the start of the release.
    #[serde(serialize_with = "ser_span")]
    pub starts_after: SignedDuration,
    /// Green's share of each cluster's traffic while the step holds.
    pub weights: BTreeMap<String, Percent>,
    /// The step hooks it runs, as `name (point)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub entries: Vec<TimelineEntry>,
    /// Minimum duration of the whole release.
    #[serde(serialize_with = "ser_span")]
    pub total: SignedDuration,
}

fn ser_span<S: serde::Serializer>(d: &SignedDuration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&span_of(*d))
}

/// A signed duration shown the way durations are written in specs.
pub fn span_of(d: SignedDuration) -> Span {
    Span(d.unsigned_abs())
}

/// Why a timeline could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("the release would not complete: {0}")]
    Stuck(String),
}

/// Runs the engine from preflight to completion in a world where blue serves
/// everywhere (unless `first_install`) and everything succeeds at once.
pub fn simulate(rel: &ResolvedRelease, first_install: bool) -> Result<Timeline, TimelineError> {
    let start: Timestamp = "2000-01-01T00:00:00Z".parse().expect("valid timestamp");
    let mut world = World::new(rel, first_install);
    let mut status = ReleaseStatus::default();
    let mut now = start;
    let mut entries: Vec<TimelineEntry> = Vec::new();
    for _ in 0..10_000 {
        let obs = world.observe(&status);
        let d = decide(rel, &status, &obs, now);
        let progressed = d.status != status || !d.actions.is_empty();
        for a in &d.actions {
            world.apply(a);
        }
        status = d.status;
        if let Some(step) = status.plan.get(status.step as usize)
            && status.phase != Phase::Completed
        {
            if entries.last().is_none_or(|e| e.index != status.step) {
                entries.push(TimelineEntry {
                    index: status.step,
                    name: step.to_string(),
                    step: step.clone(),
                    starts_after: now.duration_since(start),
                    weights: BTreeMap::new(),
                    hooks: crate::spec::hooks::of_step(&rel.hooks, step)
                        .iter()
                        .map(|h| format!("{} ({})", h.name, h.at))
                        .collect(),
                });
            }
            if let Some(e) = entries.last_mut() {
                e.weights = world.weights();
            }
        }
        match status.phase {
            Phase::Completed => {
                return Ok(Timeline {
                    entries,
                    total: now.duration_since(start),
                });
            }
            Phase::Failed | Phase::Aborted | Phase::Aborting => {
                return Err(TimelineError::Stuck(status.message.unwrap_or_default()));
            }
            _ => {}
        }
        if !progressed {
            match d.wake_at {
                Some(at) if at > now => now = at,
                _ => {
                    let why = status
                        .message
                        .clone()
                        .unwrap_or_else(|| "no timer and nothing to do".into());
                    return Err(TimelineError::Stuck(why));
                }
            }
        }
    }
    Err(TimelineError::Stuck("more than 10000 passes".into()))
}

/// A fleet where every change lands at once. Tests steer it through its fields.
#[derive(Clone)]
pub(crate) struct World {
    pub(crate) version: String,
    pub(crate) clusters: BTreeMap<String, ClusterView>,
    pub(crate) freezes: FreezeView,
    /// The verdict every gate run reports.
    pub(crate) gate: GateVerdict,
    /// Actions an applier's guard refused, by cluster.
    pub(crate) defects: BTreeMap<String, String>,
    /// The release's step hooks, and the verdict each of their runs reports.
    pub(crate) hooks: Vec<String>,
    /// `None`: every hook is still running.
    pub(crate) hook: Option<crate::spec::hooks::HookVerdict>,
}

impl World {
    pub(crate) fn new(rel: &ResolvedRelease, first_install: bool) -> World {
        let blue = WorkloadView {
            version: format!("before-{}", rel.version),
            replicas: 0,
            available: 0,
        };
        let clusters = rel
            .clusters
            .iter()
            .map(|c| {
                let view = ClusterView {
                    reachable: true,
                    unreachable_because: None,
                    green: None,
                    blue: (!first_install).then(|| WorkloadView {
                        replicas: c.replicas,
                        available: c.replicas,
                        ..blue.clone()
                    }),
                    // The route (or Service) exists before the release: blue takes it all.
                    route: Some(RouteView {
                        green: Percent::ZERO,
                        target: None,
                        drift: None,
                        settled: true,
                    }),
                    placement: PlacementView::Satisfied,
                };
                (c.name.clone(), view)
            })
            .collect();
        World {
            version: rel.version.clone(),
            clusters,
            freezes: FreezeView::default(),
            gate: GateVerdict::Pass,
            defects: BTreeMap::new(),
            hooks: rel.hooks.iter().map(|h| h.name.clone()).collect(),
            hook: Some(crate::spec::hooks::HookVerdict::Pass),
        }
    }

    pub(crate) fn observe(&self, status: &ReleaseStatus) -> Observation {
        let reachable = |name: &String| self.clusters.get(name).is_some_and(|c| c.reachable);
        Observation {
            clusters: self
                .clusters
                .iter()
                .filter(|(n, _)| reachable(n))
                .map(|(n, c)| (n.clone(), c.clone()))
                .collect(),
            freezes: self.freezes.clone(),
            gate: Some(GateReport {
                step: status.step,
                epoch: status.analysis_epoch,
                since: None,
                verdict: self.gate,
                message: format!("every gate reports {:?}", self.gate),
            }),
            defects: self.defects.clone(),
            hooks: self.hook_runs(status),
        }
    }

    /// A run of each hook in the current step, all with the world's verdict.
    fn hook_runs(&self, status: &ReleaseStatus) -> Vec<super::HookRun> {
        let Some(cluster) = status
            .plan
            .get(status.step as usize)
            .and_then(|s| s.cluster.clone())
        else {
            return Vec::new();
        };
        self.hooks
            .iter()
            .map(|name| super::HookRun {
                step: status.step,
                name: name.clone(),
                cluster: cluster.clone(),
                verdict: self.hook,
                message: format!("every hook reports {:?}", self.hook),
            })
            .collect()
    }

    /// Applies an action, unless its cluster is unreachable.
    pub(crate) fn apply(&mut self, action: &Action) {
        let Some(c) = self
            .clusters
            .get_mut(action.cluster())
            .filter(|c| c.reachable)
        else {
            return;
        };
        match action {
            Action::DeployGreen { replicas, .. } => {
                c.green = Some(WorkloadView {
                    version: self.version.clone(),
                    replicas: *replicas,
                    available: *replicas,
                });
            }
            Action::SetWeight { green, .. } => {
                c.route = Some(RouteView {
                    green: *green,
                    target: Some(*green),
                    drift: None,
                    settled: true,
                });
            }
            Action::ScaleDownGreen { .. } => {
                if let Some(g) = c.green.as_mut() {
                    g.replicas = 0;
                    g.available = 0;
                }
            }
            Action::DeleteBlue { .. } => c.blue = None,
        }
    }

    /// A new version is asked for: what serves now (green, or blue where
    /// green never took traffic) is the next release's blue.
    #[cfg(test)]
    pub(crate) fn next_version(&mut self, version: &str) {
        for c in self.clusters.values_mut() {
            // The slots swap only where green took the traffic.
            let green_serves = c.route.as_ref().is_some_and(|r| r.green > Percent::ZERO);
            if green_serves && let Some(g) = c.green.take() {
                c.blue = Some(g);
                c.route = c.route.as_ref().map(|r| RouteView {
                    green: r.green.rest(),
                    target: r.target.map(Percent::rest),
                    ..r.clone()
                });
            }
            c.green = None;
        }
        self.version = version.to_string();
    }

    pub(crate) fn weights(&self) -> BTreeMap<String, Percent> {
        self.clusters
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    c.route.as_ref().map(|r| r.green).unwrap_or(Percent::ZERO),
                )
            })
            .collect()
    }
}
