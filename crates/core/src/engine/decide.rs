//! The lifecycle state machine: `decide(release, status, observation, now)`.
//!
//! Level-triggered: every pass derives what to do from the persisted status and
//! what is observed, so a pass may be repeated after a crash at any point. A
//! step only moves forward once its effect is seen in the cluster.

use jiff::Timestamp;

use crate::admission::Finding;
use super::observe::{ClusterView, GateVerdict, Observation, PlacementView};
use super::{Action, Decision, plan};
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
    };
    pass.run();
    Decision {
        status: pass.st,
        actions: pass.actions,
        wake_at: pass.wake_at,
    }
}

struct Pass<'a> {
    rel: &'a ResolvedRelease,
    obs: &'a Observation,
    now: Timestamp,
    st: ReleaseStatus,
    actions: Vec<Action>,
    wake_at: Option<Timestamp>,
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
        if self.st.phase.is_terminal() {
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
            self.st.phase = Phase::Completed;
            self.st.version = Some(self.rel.version.clone());
            self.st.finished_at = Some(self.now);
            let msg = format!(
                "{} already serves on every cluster; nothing to do",
                self.rel.version
            );
            self.record(TransitionEvent::Completed, msg.clone());
            self.st.message = Some(msg);
            return;
        }
        self.st.plan = plan::build(self.rel, mode);
        self.st.mode = Some(mode);
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

    fn fail(&mut self, message: String) {
        self.st.phase = Phase::Failed;
        self.st.finished_at = Some(self.now);
        self.st.message = Some(message.clone());
        self.record(TransitionEvent::Failed, message);
    }

    // ---- progress --------------------------------------------------------

    fn advance(&mut self) {
        // Each pass may complete several steps whose effects are already in place.
        for _ in 0..=self.st.plan.len() {
            let Some(step) = self.st.plan.get(self.st.step as usize).cloned() else {
                return self.complete();
            };
            if let Some(gate) = &self.obs.gate
                && gate.step == self.st.step
                && gate.verdict == GateVerdict::Fail
            {
                let msg = format!("gate failed during {step}: {}", gate.message);
                self.start_abort(AbortReason::GateFailed, msg);
                return self.roll_back();
            }
            let mut holds = self.global_holds();
            self.note_suspension(&holds);
            let progress = if holds.is_empty() {
                self.step_progress(&step)
            } else {
                StepProgress::Wait(None)
            };
            if let StepProgress::Blocked(step_holds) = &progress {
                holds.extend(step_holds.iter().cloned());
            }
            if self.st.abort.is_some() {
                return self.roll_back();
            }
            self.set_holds(holds);
            if self.deadline_passed(&step) {
                return self.roll_back();
            }
            match progress {
                StepProgress::Act(actions) => {
                    self.actions.extend(actions);
                    return;
                }
                StepProgress::Wait(until) => {
                    self.wake(until);
                    return;
                }
                StepProgress::Blocked(_) => return,
                StepProgress::Done => {
                    let msg = format!("{step} done");
                    self.record(TransitionEvent::StepCompleted, msg);
                    self.enter_step(self.st.step + 1);
                }
            }
        }
    }

    fn step_progress(&mut self, step: &PlannedStep) -> StepProgress {
        let cluster = step.cluster.as_deref().unwrap_or_default();
        match step.kind {
            StepKind::Deploy => self.deploy_progress(cluster),
            StepKind::Canary | StepKind::Ramp | StepKind::Cutover => {
                let target = step.weight.unwrap_or(Percent::HUNDRED);
                self.traffic_progress(step, cluster, target)
            }
            StepKind::Verify | StepKind::Soak | StepKind::Bake => {
                if self.st.step_ready_at.is_none() {
                    self.mark_ready(format!("{step} began"));
                }
                self.wait_then_gate(step)
            }
            StepKind::Cleanup => self.cleanup_progress(cluster),
        }
    }

    fn deploy_progress(&mut self, cluster: &str) -> StepProgress {
        let Some(c) = self.rel.cluster(cluster) else {
            return StepProgress::Done;
        };
        let view = self.view(cluster).cloned().unwrap_or_default();
        let applied = view
            .green
            .as_ref()
            .is_some_and(|g| g.version == self.rel.version && g.replicas == c.deploy_replicas());
        let deadline = self.step_deadline();
        let waiting = match (applied, self.green_ready(cluster, &view)) {
            (true, None) => {
                self.mark_ready(format!("green available and well placed on {cluster}"));
                return StepProgress::Done;
            }
            (false, _) => None,
            (true, Some(hold)) => Some(hold),
        };
        // Pods starting and being placed is the step's own work, not a hold: it
        // has a deadline, past which the release rolls back with the report.
        if let (Some(d), Some(hold)) = (deadline, &waiting)
            && self.now >= d
        {
            let msg = format!(
                "green on {cluster} was not available and well placed within {}: {}",
                self.rel.timings.progress_deadline, hold.message
            );
            self.start_abort(AbortReason::ProgressDeadline, msg);
            return StepProgress::Wait(None);
        }
        if !applied {
            self.wake(deadline);
            return StepProgress::Act(vec![Action::DeployGreen {
                cluster: cluster.to_string(),
                replicas: c.deploy_replicas(),
            }]);
        }
        StepProgress::Wait(deadline)
    }

    /// Why green on `cluster` cannot take more traffic yet, if it cannot.
    fn green_ready(&self, cluster: &str, view: &ClusterView) -> Option<Hold> {
        let hold = |reason, message: String| {
            Some(Hold {
                reason,
                cluster: Some(cluster.to_string()),
                message,
            })
        };
        match &view.green {
            None => {
                return hold(
                    HoldReason::GreenNotReady,
                    format!("green is not deployed on {cluster}"),
                );
            }
            Some(g) if g.available < g.replicas => {
                return hold(
                    HoldReason::GreenNotReady,
                    format!(
                        "{}/{} green pods available on {cluster}",
                        g.available, g.replicas
                    ),
                );
            }
            Some(_) => {}
        }
        match &view.placement {
            PlacementView::Satisfied => None,
            PlacementView::Unsatisfied(why) => {
                hold(HoldReason::Placement, format!("{cluster}: {why}"))
            }
            PlacementView::Unknown => hold(
                HoldReason::Placement,
                format!("green's placement on {cluster} is not known yet"),
            ),
        }
    }

    fn traffic_progress(
        &mut self,
        step: &PlannedStep,
        cluster: &str,
        target: Percent,
    ) -> StepProgress {
        let view = self.view(cluster).cloned().unwrap_or_default();
        let route = view.route.as_ref();
        let in_place =
            route.is_some_and(|r| r.target == Some(target) && r.drift.is_none() && r.settled);
        if !in_place {
            let current = route.map(|r| r.green).unwrap_or(Percent::ZERO);
            if target > current
                && let Some(hold) = self.green_ready(cluster, &view)
            {
                self.wake(self.hold_deadline());
                return StepProgress::Blocked(vec![hold]);
            }
            return StepProgress::Act(vec![Action::SetWeight {
                cluster: cluster.to_string(),
                green: target,
            }]);
        }
        if self.st.step_ready_at.is_none() {
            self.mark_ready(format!("{cluster} at {target} green"));
        }
        self.wait_then_gate(step)
    }

    /// Holds the step for its wait (unless promoted), then requires the gates to pass.
    fn wait_then_gate(&mut self, step: &PlannedStep) -> StepProgress {
        if step.wait.as_duration().is_zero() {
            return StepProgress::Done;
        }
        let ready = self.st.step_ready_at.unwrap_or(self.now);
        let until = ready
            .checked_add(step.wait.signed())
            .unwrap_or(Timestamp::MAX);
        let promoted = self.promotion_applies();
        if self.now < until && !promoted {
            return StepProgress::Wait(Some(until));
        }
        let gate = self
            .obs
            .gate
            .as_ref()
            .filter(|g| g.step == self.st.step && g.epoch == self.st.analysis_epoch);
        match gate.map(|g| g.verdict) {
            Some(GateVerdict::Pass) => StepProgress::Done,
            Some(GateVerdict::Inconclusive) => StepProgress::Blocked(vec![Hold {
                reason: HoldReason::GateInconclusive,
                cluster: None,
                message: gate.map(|g| g.message.clone()).unwrap_or_default(),
            }]),
            // Pending, or no verdict for this run yet: wait for the gates.
            _ => StepProgress::Wait(None),
        }
    }

    fn promotion_applies(&mut self) -> bool {
        let Some(req) = &self.rel.promote else {
            return false;
        };
        if req.step != self.st.step {
            return false;
        }
        if self.st.promoted_step != Some(self.st.step) {
            self.st.promoted_step = Some(self.st.step);
            let by = req
                .by
                .as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default();
            self.record(
                TransitionEvent::Promoted,
                format!("wait skipped{by}; gates must still pass"),
            );
        }
        true
    }

    fn cleanup_progress(&mut self, cluster: &str) -> StepProgress {
        let view = self.view(cluster).cloned().unwrap_or_default();
        let on_green = view.route.as_ref().is_some_and(|r| {
            r.target == Some(Percent::HUNDRED) && r.green == Percent::HUNDRED && r.drift.is_none()
        });
        if !on_green {
            return StepProgress::Blocked(vec![Hold {
                reason: HoldReason::RouteDrift,
                cluster: Some(cluster.to_string()),
                message: format!("{cluster} does not send all traffic to green; blue is kept"),
            }]);
        }
        // Blue is the fallback capacity: never removed while green is short or badly placed.
        if let Some(hold) = self.green_ready(cluster, &view) {
            return StepProgress::Blocked(vec![Hold {
                message: format!("{}; blue is kept until it clears", hold.message),
                ..hold
            }]);
        }
        match &view.blue {
            Some(_) => StepProgress::Act(vec![Action::DeleteBlue {
                cluster: cluster.to_string(),
            }]),
            None => StepProgress::Done,
        }
    }

    fn complete(&mut self) {
        if self.st.phase == Phase::Completed {
            return;
        }
        self.st.phase = Phase::Completed;
        self.st.finished_at = Some(self.now);
        self.st.step_name = None;
        let msg = format!(
            "{} {} serves on every cluster",
            self.rel.app, self.rel.version
        );
        self.st.message = Some(msg.clone());
        self.record(TransitionEvent::Completed, msg);
    }

    fn enter_step(&mut self, index: u32) {
        self.st.step = index;
        self.st.step_started_at = Some(self.now);
        self.st.step_ready_at = None;
        self.st.analysis_epoch = 0;
        self.st.suspended_seconds = 0;
        match self.st.plan.get(index as usize) {
            Some(step) => {
                let name = step.to_string();
                self.st.step_name = Some(name.clone());
                self.st.message = Some(name.clone());
                self.record(TransitionEvent::StepStarted, name);
            }
            None => self.complete(),
        }
    }

    fn mark_ready(&mut self, message: String) {
        self.st.step_ready_at = Some(self.now);
        self.record(TransitionEvent::StepReady, message);
    }

    // ---- holds -----------------------------------------------------------

    /// Causes that stop any advance, whatever the step.
    fn global_holds(&self) -> Vec<Hold> {
        let mut holds = Vec::new();
        if self.rel.paused {
            holds.push(Hold {
                reason: HoldReason::Paused,
                cluster: None,
                message: "paused by a person".into(),
            });
        }
        let blocking = crate::freeze::blocking(
            &self.obs.freezes.active,
            self.rel.override_freezes.as_ref(),
        );
        for f in &blocking.unnamed {
            holds.push(Hold {
                reason: HoldReason::Freeze,
                cluster: None,
                message: Finding::Frozen {
                    freeze: (*f).clone(),
                    partial_override: blocking.partial,
                }
                .describe(None),
            });
        }
        for (c, why) in &self.obs.freezes.unreadable {
            holds.push(Hold {
                reason: HoldReason::Freeze,
                cluster: Some(c.clone()),
                message: Finding::FreezesUnreadable {
                    cluster: c.clone(),
                    why: why.clone(),
                }
                .describe(None),
            });
        }
        for c in &self.rel.clusters {
            match self.view(&c.name) {
                Some(v) if v.reachable => {
                    if let Some(drift) = v.route.as_ref().and_then(|r| r.drift.as_ref()) {
                        holds.push(Hold {
                            reason: HoldReason::RouteDrift,
                            cluster: Some(c.name.clone()),
                            message: format!(
                                "{}: {drift}; not overwriting another writer's change",
                                c.name
                            ),
                        });
                    }
                }
                other => {
                    let why = other
                        .and_then(|v| v.unreachable_because.as_deref())
                        .map(|w| format!(" ({w})"))
                        .unwrap_or_default();
                    holds.push(Hold {
                        reason: HoldReason::ClusterUnreachable,
                        cluster: Some(c.name.clone()),
                        message: format!(
                            "{} is unreachable{why}; keeping traffic where it is",
                            c.name
                        ),
                    })
                }
            }
        }
        holds
    }

    /// Records the current holds, with a transition whenever their causes change.
    fn set_holds(&mut self, holds: Vec<Hold>) {
        let key = |hs: &[Hold]| {
            let mut k: Vec<_> = hs.iter().map(|h| (h.reason, h.cluster.clone())).collect();
            k.sort();
            k.dedup();
            k
        };
        let (before, after) = (key(&self.st.holds), key(&holds));
        // A deadline hold that follows a freeze, pause or outage starts its own clock.
        if Self::suspends(&self.st.holds) && !Self::suspends(&holds) && !holds.is_empty() {
            self.st.hold_since = Some(self.now);
        }
        let describe = |hs: &[Hold]| {
            hs.iter()
                .map(|h| h.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        };
        if before != after {
            if before.is_empty() {
                self.st.hold_since = Some(self.now);
                self.record(TransitionEvent::HoldStarted, describe(&holds));
            } else if after.is_empty() {
                let restart = Self::suspends(&self.st.holds);
                self.st.hold_since = None;
                let again = if restart {
                    "; gates run again before the next advance"
                } else {
                    ""
                };
                self.record(TransitionEvent::HoldCleared, format!("resumed{again}"));
            } else {
                self.record(TransitionEvent::HoldChanged, describe(&holds));
            }
        }
        let pending = self.st.phase == Phase::Pending;
        self.st.phase = match () {
            _ if pending => Phase::Pending,
            _ if holds.iter().any(|h| h.reason == HoldReason::Paused) => Phase::Paused,
            _ if !holds.is_empty() => Phase::Holding,
            _ => Phase::Progressing,
        };
        if !holds.is_empty() {
            self.st.message = Some(describe(&holds));
        } else if !after.is_empty() || before != after {
            self.st.message = self.st.step_name.clone();
        }
        self.st.holds = holds;
    }

    /// Whether any of `holds` is a freeze, pause or outage: a suspension of
    /// the step rather than a lack of progress.
    fn suspends(holds: &[Hold]) -> bool {
        holds.iter().any(|h| h.reason.restarts_analysis())
    }

    /// When a freeze, pause or outage begins or ends. On its end the step's
    /// gates start a new run (verdicts from before it no longer count) and
    /// its length extends the step's deadline: it is nobody's lack of
    /// progress. Called before the step is looked at, so a suspension that
    /// ends on this pass already counts.
    fn note_suspension(&mut self, global: &[Hold]) {
        match (Self::suspends(&self.st.holds), Self::suspends(global)) {
            (false, true) => self.st.suspended_since = Some(self.now),
            (true, false) => {
                self.st.analysis_epoch += 1;
                if let Some(since) = self.st.suspended_since.take() {
                    let secs = self.now.duration_since(since).as_secs().max(0) as u64;
                    self.st.suspended_seconds += secs;
                }
            }
            _ => {}
        }
    }

    fn step_deadline(&self) -> Option<Timestamp> {
        let start = self.st.step_started_at?;
        start
            .checked_add(self.rel.timings.progress_deadline.signed())
            .ok()?
            .checked_add(jiff::SignedDuration::from_secs(
                self.st.suspended_seconds.min(i64::MAX as u64) as i64,
            ))
            .ok()
    }

    fn hold_deadline(&self) -> Option<Timestamp> {
        let since = self.st.hold_since.unwrap_or(self.now);
        since
            .checked_add(self.rel.timings.progress_deadline.signed())
            .ok()
    }

    /// Starts a rollback when waiting for pods or placement has lasted past the deadline.
    fn deadline_passed(&mut self, step: &PlannedStep) -> bool {
        let waiting: Vec<_> = self
            .st
            .holds
            .iter()
            .filter(|h| h.reason.has_deadline())
            .cloned()
            .collect();
        if waiting.is_empty() {
            return false;
        }
        let deadline = if step.kind == StepKind::Deploy {
            self.step_deadline()
        } else {
            self.hold_deadline()
        };
        if deadline.is_some_and(|d| self.now >= d) {
            let why: Vec<_> = waiting.iter().map(|h| h.message.as_str()).collect();
            let msg = format!(
                "{step} made no progress within {}: {}",
                self.rel.timings.progress_deadline,
                why.join("; ")
            );
            self.start_abort(AbortReason::ProgressDeadline, msg);
            return true;
        }
        false
    }

    // ---- rollback --------------------------------------------------------

    fn start_abort(&mut self, reason: AbortReason, message: String) {
        if self.st.abort.is_some() {
            return;
        }
        self.st.abort = Some(AbortStatus {
            reason,
            message: message.clone(),
            at: self.now,
            stage: AbortStage::RestoringTraffic,
        });
        self.st.holds.clear();
        self.st.hold_since = None;
        self.st.phase = Phase::Aborting;
        self.st.message = Some(message.clone());
        self.record(TransitionEvent::AbortStarted, message);
    }

    /// Traffic back to blue in every cluster first; only then green down.
    fn roll_back(&mut self) {
        self.st.phase = Phase::Aborting;
        let stage = self.st.abort.as_ref().map(|a| a.stage);
        if stage == Some(AbortStage::RestoringTraffic) {
            let mut waiting = Vec::new();
            let mut actions = Vec::new();
            let blue_exists = self.st.mode != Some(Mode::FirstInstall);
            for c in &self.rel.clusters {
                let Some(view) = self.view(&c.name).filter(|v| v.reachable) else {
                    waiting.push(c.name.clone());
                    continue;
                };
                let on_blue = view.route.as_ref().is_none_or(|r| r.green == Percent::ZERO);
                if blue_exists && !on_blue {
                    actions.push(Action::SetWeight {
                        cluster: c.name.clone(),
                        green: Percent::ZERO,
                    });
                }
            }
            if !waiting.is_empty() || !actions.is_empty() {
                self.actions.extend(actions);
                self.note_abort_waiting(&waiting);
                return;
            }
            if let Some(a) = self.st.abort.as_mut() {
                a.stage = AbortStage::ScalingDownGreen;
            }
            self.record(
                TransitionEvent::TrafficRestored,
                "every cluster sends all traffic to blue".into(),
            );
        }
        let mut waiting = Vec::new();
        let mut actions = Vec::new();
        for c in &self.rel.clusters {
            let Some(view) = self.view(&c.name).filter(|v| v.reachable) else {
                waiting.push(c.name.clone());
                continue;
            };
            if view.green.as_ref().is_some_and(|g| g.replicas > 0) {
                actions.push(Action::ScaleDownGreen {
                    cluster: c.name.clone(),
                });
            }
        }
        if !waiting.is_empty() || !actions.is_empty() {
            self.actions.extend(actions);
            self.note_abort_waiting(&waiting);
            return;
        }
        if self
            .st
            .abort
            .as_ref()
            .is_some_and(|a| a.reason == AbortReason::Superseded)
        {
            return self.start_over();
        }
        self.st.phase = Phase::Aborted;
        self.st.finished_at = Some(self.now);
        self.st.holds.clear();
        let why = self
            .st
            .abort
            .as_ref()
            .map(|a| a.message.clone())
            .unwrap_or_default();
        let msg = format!(
            "rolled back to {}: {why}",
            self.st.blue_version.as_deref().unwrap_or("nothing")
        );
        self.st.message = Some(msg.clone());
        self.record(TransitionEvent::Aborted, msg);
    }

    /// A version other than the one in flight was submitted: nothing of the
    /// old one's analysis may promote the new one, so the old one goes back
    /// the way an abort goes (traffic to blue, then green down) and the new
    /// one starts over. Once blue is being deleted the old version is the new
    /// stable: its cleanup finishes first.
    fn supersede_if_replaced(&mut self) {
        let Some(in_flight) = self.st.version.clone() else {
            return;
        };
        let cleaning = self
            .st
            .plan
            .get(self.st.step as usize)
            .is_some_and(|s| s.kind == StepKind::Cleanup);
        if in_flight == self.rel.version || self.st.abort.is_some() || cleaning {
            return;
        }
        let step = self.st.step_name.clone().unwrap_or_default();
        self.start_abort(
            AbortReason::Superseded,
            format!(
                "{} was submitted while {in_flight} was at {step}; {in_flight} goes back to blue and {} starts over",
                self.rel.version, self.rel.version
            ),
        );
    }

    /// After a superseded version is back on blue and scaled down: a fresh
    /// state for the new version, keeping the record of what happened.
    fn start_over(&mut self) {
        let old = self.st.version.clone().unwrap_or_default();
        let msg = format!(
            "{old} withdrawn with every cluster back on {}; {} starts from preflight",
            self.st.blue_version.as_deref().unwrap_or("nothing"),
            self.rel.version
        );
        self.record(TransitionEvent::Superseded, msg.clone());
        let kept = std::mem::take(&mut self.st);
        self.st = ReleaseStatus {
            message: Some(msg),
            overridden_freezes: kept.overridden_freezes,
            conditions: kept.conditions,
            traffic: kept.traffic,
            gate_series: kept.gate_series,
            history: kept.history,
            weights: kept.weights,
            ..ReleaseStatus::default()
        };
        // The next pass runs preflight for the new version.
        self.wake(Some(self.now));
    }

    fn note_abort_waiting(&mut self, unreachable: &[String]) {
        let holds: Vec<_> = unreachable
            .iter()
            .map(|c| Hold {
                reason: HoldReason::ClusterUnreachable,
                cluster: Some(c.clone()),
                message: format!("{c} is unreachable; its rollback is retried until it answers"),
            })
            .collect();
        if holds != self.st.holds {
            if !holds.is_empty() {
                let msg = holds
                    .iter()
                    .map(|h| h.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                self.record(TransitionEvent::HoldChanged, msg);
            }
            self.st.holds = holds;
        }
    }

    // ---- helpers ---------------------------------------------------------

    /// Records, once, that a person overrode every freeze that applies.
    fn note_override(&mut self) {
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
    fn record_weights(&mut self) {
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

    fn view(&self, cluster: &str) -> Option<&ClusterView> {
        self.obs.clusters.get(cluster)
    }

    fn wake(&mut self, at: Option<Timestamp>) {
        if let Some(at) = at {
            self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
        }
    }

    fn record(&mut self, event: TransitionEvent, message: String) {
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
