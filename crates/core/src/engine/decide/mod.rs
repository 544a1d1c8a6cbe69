//! The lifecycle state machine: `decide(release, status, observation, now)`.
//!
//! Level-triggered: every pass derives what to do from the persisted status and
//! what is observed, so a pass may be repeated after a crash at any point. A
//! step only moves forward once its effect is seen in the cluster.

mod holds;
mod hooks;
mod progress;
mod revisions;
mod rollback;

use jiff::Timestamp;

use super::observe::{ClusterView, GateVerdict, Observation, PlacementView};
use super::{Action, Decision, plan};
use crate::admission::Finding;
use crate::spec::policy::WithoutVerdict;
use crate::spec::status::{
    AbortReason, AbortStage, AbortStatus, HISTORY_LIMIT, Hold, HoldReason, Mode, Phase,
    PlannedStep, StepKind, Transition, TransitionEvent, WeightChange,
};
use crate::spec::{Percent, ReleaseStatus, ResolvedRelease};

/// Decides the next actions of a release. Pure: no I/O, no clock.
pub fn decide(
    rel: &ResolvedRelease,
    status: &ReleaseStatus,
    obs: &Observation,
    now: Timestamp,
) -> Decision {
    let mut pass = Pass {
        rel,
        obs,
        now,
        st: status.clone(),
        actions: Vec::new(),
        wake_at: None,
        hooks: Vec::new(),
    };
    pass.run();
    Decision {
        status: pass.st,
        actions: pass.actions,
        wake_at: pass.wake_at,
        hooks: pass.hooks,
    }
}

struct Pass<'a> {
    rel: &'a ResolvedRelease,
    obs: &'a Observation,
    now: Timestamp,
    st: ReleaseStatus,
    actions: Vec<Action>,
    wake_at: Option<Timestamp>,
    hooks: Vec<super::HookCall>,
}

/// Where the current step stands after looking at the world.
enum StepProgress {
    /// Changes to make before the step can go on.
    Act(Vec<Action>),
    /// Nothing to do until this time (or until something changes).
    Wait(Option<Timestamp>),
    /// Cannot go on until these causes clear.
    Blocked(Vec<Hold>),
    Done,
}

impl Pass<'_> {
    fn run(&mut self) {
        if self.st.phase.is_terminal() && !self.next_revision() {
            return;
        }
        self.record_weights();
        self.note_override();
        if self.st.phase == Phase::Pending {
            self.preflight();
            if self.st.phase != Phase::Progressing {
                return;
            }
        }
        self.supersede_if_replaced();
        if self.st.abort.is_none()
            && let Some(req) = &self.rel.abort
            && crate::spec::release::request_applies(
                req.version.as_deref(),
                self.st.version.as_deref(),
            )
        {
            let by = req
                .by
                .as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default();
            self.start_abort(
                AbortReason::Requested,
                format!("abort requested{by}: {}", req.reason),
            );
        }
        if self.st.abort.is_some() {
            self.roll_back();
        } else {
            self.advance();
        }
    }

    // ---- preflight -------------------------------------------------------

    fn preflight(&mut self) {
        let holds = self.global_holds();
        if !holds.is_empty() {
            self.set_holds(holds);
            return;
        }
        self.set_holds(Vec::new());
        if let Some(why) = self.undo_refused() {
            return self.fail(why);
        }
        let no_route: Vec<String> = self
            .rel
            .clusters
            .iter()
            .filter(|c| self.view(&c.name).is_some_and(|v| v.route.is_none()))
            .map(|c| {
                let what = match c.router.kind {
                    crate::spec::RouterKind::GatewayHttpRoute => "HTTPRoute",
                    crate::spec::RouterKind::ReplicaRatio => "Service",
                };
                format!(
                    "{} ({what} {}/{})",
                    c.name, self.rel.namespace, c.router.route
                )
            })
            .collect();
        if !no_route.is_empty() {
            return self.fail(format!(
                "no traffic route on {}: cutover moves traffic through an existing route (an \
                 HTTPRoute's backend weights, or the app's Service with replicaRatio); create it, \
                 or name the right one in spec.router.route",
                no_route.join(", ")
            ));
        }
        if self
            .rel
            .clusters
            .iter()
            .all(|c| self.view(&c.name).is_some_and(|v| v.blue.is_none()))
            && self.green_already_serves()
        {
            return;
        }
        let mut blues = Vec::new();
        let mut missing = Vec::new();
        for c in &self.rel.clusters {
            match self.view(&c.name).and_then(|v| v.blue.as_ref()) {
                Some(b) => blues.push((c.name.as_str(), b.version.as_str())),
                None => missing.push(c.name.as_str()),
            }
        }
        let mode = if blues.is_empty() {
            Mode::FirstInstall
        } else if missing.is_empty() {
            Mode::BlueGreen
        } else {
            let serving: Vec<_> = blues.iter().map(|(c, v)| format!("{v} on {c}")).collect();
            return self.fail(format!(
                "a version serves on some clusters but not on {}: {}; install it there first or remove it everywhere",
                missing.join(", "),
                serving.join(", ")
            ));
        };
        let versions: std::collections::BTreeSet<_> = blues.iter().map(|(_, v)| *v).collect();
        if versions.len() > 1 {
            let serving: Vec<_> = blues.iter().map(|(c, v)| format!("{v} on {c}")).collect();
            return self.fail(format!(
                "the clusters serve different versions ({}); bring them to one version before a release",
                serving.join(", ")
            ));
        }
        let blue_version = versions.into_iter().next().map(str::to_string);
        if blue_version.as_deref() == Some(self.rel.version.as_str()) {
            return self.already_serves();
        }
        self.st.plan = plan::build(self.rel, mode);
        self.st.mode = Some(mode);
        self.st.revision = self.st.revision_number();
        self.st.images = self.rel.images();
        self.st.blue_version = blue_version.clone();
        self.st.version = Some(self.rel.version.clone());
        self.st.started_at = Some(self.now);
        self.st.phase = Phase::Progressing;
        let from = blue_version
            .map(|b| format!(" replacing {b}"))
            .unwrap_or_else(|| " (first install)".into());
        self.record(
            TransitionEvent::Started,
            format!(
                "release of {} {}{from}: {} steps",
                self.rel.app,
                self.rel.version,
                self.st.plan.len()
            ),
        );
        self.enter_step(0);
    }

    /// With no other version serving anywhere, whether this release's own
    /// version already takes traffic: a first install is only for clusters
    /// where nothing serves. Serving everywhere, there is nothing to do;
    /// serving on some clusters only, no lifecycle can start from it.
    fn green_already_serves(&mut self) -> bool {
        let serving: Vec<(&str, Percent)> = self
            .rel
            .clusters
            .iter()
            .filter_map(|c| {
                let v = self.view(&c.name)?;
                let share = v.route.as_ref()?.green;
                let runs = v.green.as_ref().is_some_and(|g| g.replicas > 0);
                (runs && share > Percent::ZERO).then_some((c.name.as_str(), share))
            })
            .collect();
        if serving.is_empty() {
            return false;
        }
        let everywhere = serving.len() == self.rel.clusters.len()
            && serving.iter().all(|(_, s)| *s == Percent::HUNDRED);
        if everywhere {
            self.already_serves();
        } else {
            let on: Vec<_> = serving.iter().map(|(c, s)| format!("{s} on {c}")).collect();
            self.fail(format!(
                "{} already takes traffic ({}) but not on every cluster, and no release of it is in flight; \
                 bring every cluster to one serving version before a release",
                self.rel.version,
                on.join(", ")
            ));
        }
        true
    }

    /// The version asked for is the one serving everywhere: nothing to do.
    fn already_serves(&mut self) {
        self.st.version = Some(self.rel.version.clone());
        self.st.revision = self.st.revision_number();
        self.st.images = self.rel.images();
        self.st.phase = Phase::Completed;
        self.st.finished_at = Some(self.now);
        let msg = format!(
            "{} already serves on every cluster; nothing to do",
            self.rel.version
        );
        self.record(TransitionEvent::Completed, msg.clone());
        self.st.message = Some(msg);
    }

    fn fail(&mut self, message: String) {
        self.st.phase = Phase::Failed;
        self.st.version = Some(self.rel.version.clone());
        self.st.finished_at = Some(self.now);
        self.st.message = Some(message.clone());
        self.record(TransitionEvent::Failed, message);
    }
    // ---- helpers ---------------------------------------------------------

    /// Records, once, that a person overrode every freeze that applies.
    pub(super) fn note_override(&mut self) {
        let Some(o) = &self.rel.override_freezes else {
            return;
        };
        let notices = &self.obs.freezes.active;
        let mut active: Vec<String> = notices.iter().map(|f| f.id.clone()).collect();
        active.sort();
        if !crate::freeze::blocking(notices, Some(o)).overridden(notices)
            || self.st.overridden_freezes == active
        {
            return;
        }
        let by = o.by.as_deref().unwrap_or("someone");
        let msg = format!("{by} overrode {}: {}", active.join(", "), o.reason);
        self.st.overridden_freezes = active;
        self.record(TransitionEvent::FreezeOverridden, msg);
    }

    /// Keeps green's confirmed share per cluster in the status, for people.
    pub(super) fn record_weights(&mut self) {
        let seen: Vec<(String, Percent)> = self
            .rel
            .clusters
            .iter()
            .filter_map(|c| {
                let v = self.view(&c.name).filter(|v| v.reachable)?;
                Some((c.name.clone(), v.route.as_ref()?.green))
            })
            .collect();
        for (cluster, green) in seen {
            if self.st.weights.get(&cluster) != Some(&green) {
                self.st.traffic.push(WeightChange {
                    at: self.now,
                    cluster: cluster.clone(),
                    green,
                });
                if self.st.traffic.len() > HISTORY_LIMIT {
                    self.st.traffic.remove(0);
                }
            }
            self.st.weights.insert(cluster, green);
        }
    }

    pub(super) fn view(&self, cluster: &str) -> Option<&ClusterView> {
        self.obs.clusters.get(cluster)
    }

    pub(super) fn wake(&mut self, at: Option<Timestamp>) {
        if let Some(at) = at {
            self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
        }
    }

    pub(super) fn record(&mut self, event: TransitionEvent, message: String) {
        self.st.history.push(Transition {
            at: self.now,
            step: self.st.step,
            event,
            message,
        });
        if self.st.history.len() > HISTORY_LIMIT {
            let excess = self.st.history.len() - HISTORY_LIMIT;
            self.st.history.drain(..excess);
        }
    }
}
