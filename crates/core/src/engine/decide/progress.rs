//! Moving a release forward: the current step's progress (deploy, traffic,
//! waits with gates, cleanup) and entering the next step.

use super::*;
use crate::spec::release::request_applies;

impl Pass<'_> {
    // ---- progress --------------------------------------------------------

    pub(super) fn advance(&mut self) {
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

    pub(super) fn step_progress(&mut self, step: &PlannedStep) -> StepProgress {
        let cluster = step.cluster.as_deref().unwrap_or_default();
        match step.kind {
            StepKind::Deploy => self.deploy_progress(step, cluster),
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
            StepKind::Cleanup => self.cleanup_progress(step, cluster),
        }
    }

    pub(super) fn deploy_progress(&mut self, step: &PlannedStep, cluster: &str) -> StepProgress {
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
                if let Some(waits) = self.run_hooks(step) {
                    return waits;
                }
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
    pub(super) fn green_ready(&self, cluster: &str, view: &ClusterView) -> Option<Hold> {
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

    pub(super) fn traffic_progress(
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
            if target > current {
                if let Some(hold) = self.green_ready(cluster, &view) {
                    self.wake(self.hold_deadline());
                    return StepProgress::Blocked(vec![hold]);
                }
                if let Some(waits) = self.run_hooks(step) {
                    return waits;
                }
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
    pub(super) fn wait_then_gate(&mut self, step: &PlannedStep) -> StepProgress {
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
            Some(GateVerdict::Inconclusive) => {
                let mut message = gate.map(|g| g.message.clone()).unwrap_or_default();
                let past = self.hold_deadline().is_some_and(|d| self.now >= d);
                if past && self.holds_without_verdict() {
                    message = self.held_without_verdict(&format!(
                        "{step}'s gates stayed inconclusive past {}: {message}",
                        self.rel.timings.progress_deadline
                    ));
                }
                StepProgress::Blocked(vec![Hold {
                    reason: HoldReason::GateInconclusive,
                    cluster: None,
                    message,
                }])
            }
            // Pending: wait for the gates, but not for ever. The deadline counts
            // from the end of the wait or from when this run of the gates began
            // measuring, whichever is later; time under a freeze, pause or
            // outage is not counted.
            Some(GateVerdict::Pending) => {
                let g = gate.expect("a verdict comes with its report");
                let suspended = jiff::SignedDuration::from_secs(
                    self.st.suspended_seconds.min(i64::MAX as u64) as i64,
                );
                let measuring_since = g.since.map_or(until, |s| s.max(until));
                let deadline = measuring_since
                    .checked_add(self.rel.timings.progress_deadline.signed())
                    .and_then(|t| t.checked_add(suspended))
                    .unwrap_or(Timestamp::MAX);
                if self.now < deadline {
                    return StepProgress::Wait(Some(deadline));
                }
                let why = format!(
                    "{step} made no progress within {}: its gates reached no verdict after its wait ({})",
                    self.rel.timings.progress_deadline, g.message
                );
                if self.holds_without_verdict() {
                    return StepProgress::Blocked(vec![Hold {
                        reason: HoldReason::GateInconclusive,
                        cluster: None,
                        message: self.held_without_verdict(&why),
                    }]);
                }
                self.start_abort(AbortReason::ProgressDeadline, why);
                StepProgress::Wait(None)
            }
            // No report for this run of the gates yet (a driver that just
            // started, an epoch that just began): the next pass brings one.
            _ => StepProgress::Wait(None),
        }
    }

    pub(super) fn promotion_applies(&mut self) -> bool {
        let Some(req) = &self.rel.promote else {
            return false;
        };
        let this_version = request_applies(req.version.as_deref(), self.st.version.as_deref());
        if req.step != self.st.step || !this_version {
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

    pub(super) fn cleanup_progress(&mut self, step: &PlannedStep, cluster: &str) -> StepProgress {
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
        if view.blue.is_some()
            && let Some(waits) = self.run_hooks(step)
        {
            return waits;
        }
        match &view.blue {
            Some(_) => StepProgress::Act(vec![Action::DeleteBlue {
                cluster: cluster.to_string(),
            }]),
            None => StepProgress::Done,
        }
    }

    pub(super) fn complete(&mut self) {
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

    pub(super) fn enter_step(&mut self, index: u32) {
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

    pub(super) fn mark_ready(&mut self, message: String) {
        self.st.step_ready_at = Some(self.now);
        self.record(TransitionEvent::StepReady, message);
    }
}
