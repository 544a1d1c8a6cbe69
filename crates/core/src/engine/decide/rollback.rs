//! Rolling back: abort (traffic to blue everywhere first, then green down),
//! and a newer version superseding the one in flight.

use super::*;

impl Pass<'_> {
    // ---- rollback --------------------------------------------------------

    pub(super) fn start_abort(&mut self, reason: AbortReason, message: String) {
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
    /// Where traffic stands is looked at again on every pass, not only until
    /// it was first seen on blue: a route may send to green again (a view
    /// that was not yet current, a person's edit), and green goes down
    /// nowhere while any route that answers sends to it.
    pub(super) fn roll_back(&mut self) {
        self.st.phase = Phase::Aborting;
        let (waiting, actions) = self.traffic_to_blue();
        let restoring =
            self.st.abort.as_ref().map(|a| a.stage) == Some(AbortStage::RestoringTraffic);
        // Until traffic was first seen on blue everywhere, an unseen cluster
        // holds it too; after, only a route seen on green again does.
        if !actions.is_empty() || (restoring && !waiting.is_empty()) {
            self.actions.extend(actions);
            self.note_abort_waiting(&waiting);
            return;
        }
        if restoring {
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

    /// The routes to set back to blue, and the clusters that cannot be seen.
    fn traffic_to_blue(&self) -> (Vec<String>, Vec<Action>) {
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
        (waiting, actions)
    }

    /// A version other than the one in flight was submitted: nothing of the
    /// old one's analysis may promote the new one, so the old one goes back
    /// the way an abort goes (traffic to blue, then green down) and the new
    /// one starts over. Once blue is being deleted the old version is the new
    /// stable: its cleanup finishes first.
    pub(super) fn supersede_if_replaced(&mut self) {
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
    pub(super) fn start_over(&mut self) {
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

    pub(super) fn note_abort_waiting(&mut self, unreachable: &[String]) {
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
}
