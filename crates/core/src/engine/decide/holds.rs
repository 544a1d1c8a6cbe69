//! Holds: the causes that stop any advance (pause, freeze, route drift, an
//! unreachable cluster), when they begin and end, and the deadlines that
//! bound a step and a hold.

use super::*;

impl Pass<'_> {
    // ---- holds -----------------------------------------------------------

    /// Causes that stop any advance, whatever the step.
    pub(super) fn global_holds(&self) -> Vec<Hold> {
        let mut holds = Vec::new();
        if self.rel.paused {
            holds.push(Hold {
                reason: HoldReason::Paused,
                cluster: None,
                message: "paused by a person".into(),
            });
        }
        let blocking =
            crate::freeze::blocking(&self.obs.freezes.active, self.rel.override_freezes.as_ref());
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
        for (c, why) in &self.obs.defects {
            holds.push(Hold {
                reason: HoldReason::UnsafeAction,
                cluster: Some(c.clone()),
                message: format!("{why}; the applier refused it and the release holds"),
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
    pub(super) fn set_holds(&mut self, holds: Vec<Hold>) {
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
    pub(super) fn suspends(holds: &[Hold]) -> bool {
        holds.iter().any(|h| h.reason.restarts_analysis())
    }

    /// When a freeze, pause or outage begins or ends. On its end the step's
    /// gates start a new run (verdicts from before it no longer count) and
    /// its length extends the step's deadline: it is nobody's lack of
    /// progress. Called before the step is looked at, so a suspension that
    /// ends on this pass already counts.
    pub(super) fn note_suspension(&mut self, global: &[Hold]) {
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

    pub(super) fn step_deadline(&self) -> Option<Timestamp> {
        let start = self.st.step_started_at?;
        start
            .checked_add(self.rel.timings.progress_deadline.signed())
            .ok()?
            .checked_add(jiff::SignedDuration::from_secs(
                self.st.suspended_seconds.min(i64::MAX as u64) as i64,
            ))
            .ok()
    }

    pub(super) fn hold_deadline(&self) -> Option<Timestamp> {
        let since = self.st.hold_since.unwrap_or(self.now);
        since
            .checked_add(self.rel.timings.progress_deadline.signed())
            .ok()
    }

    /// Whether the tier holds, rather than rolls back, when gates stay without a verdict.
    pub(super) fn holds_without_verdict(&self) -> bool {
        self.rel.tier.rollout.without_verdict == WithoutVerdict::Hold
    }

    /// The words of a hold kept past the deadline because the tier says so.
    pub(super) fn held_without_verdict(&self, why: &str) -> String {
        format!(
            "{why}; {} holds instead of rolling back (withoutVerdict: hold): fix the gates' data, \
             or roll back with `cutover abort`",
            self.rel.tier_name
        )
    }

    /// Starts a rollback when waiting for pods or placement has lasted past the deadline.
    pub(super) fn deadline_passed(&mut self, step: &PlannedStep) -> bool {
        let keep_holding = self.holds_without_verdict();
        let waiting: Vec<_> = self
            .st
            .holds
            .iter()
            .filter(|h| h.reason.has_deadline())
            .filter(|h| !(keep_holding && h.reason == HoldReason::GateInconclusive))
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
}
