//! A step's hooks: asked of the driver until each reports a verdict; a pass
//! is kept in the status (never run again, even by a driver that took over),
//! a failure rolls the release back, an inconclusive result holds the step
//! while the driver tries again, for no longer than the progress deadline.

use super::*;
use crate::engine::HookCall;
use crate::spec::hooks::{self, HookRecord, HookVerdict};

impl Pass<'_> {
    /// What the step waits for before its hooks all passed; `None` once they have.
    pub(super) fn run_hooks(&mut self, step: &PlannedStep) -> Option<StepProgress> {
        let cluster = step.cluster.clone()?;
        let point = hooks::point_of(step)?;
        let mut waiting = false;
        let mut held = Vec::new();
        for hook in hooks::of_step(&self.rel.hooks, step) {
            let this = |step_: u32, name: &str, c: &str| {
                step_ == self.st.step && name == hook.name && c == cluster
            };
            if self
                .st
                .hooks
                .iter()
                .any(|r| this(r.step, &r.name, &r.cluster) && r.verdict == HookVerdict::Pass)
            {
                continue;
            }
            let run = self
                .obs
                .hooks
                .iter()
                .find(|r| this(r.step, &r.name, &r.cluster));
            let call = HookCall {
                step: self.st.step,
                name: hook.name.clone(),
                cluster: cluster.clone(),
                weight: step.weight,
            };
            match run.and_then(|r| Some((r.verdict?, r.message.clone()))) {
                Some((HookVerdict::Pass, message)) => {
                    self.keep_hook(&hook.name, &cluster, HookVerdict::Pass, &message);
                    self.record(
                        TransitionEvent::HookPassed,
                        format!("hook {} passed on {cluster} {point}: {message}", hook.name),
                    );
                }
                Some((HookVerdict::Fail, message)) => {
                    self.keep_hook(&hook.name, &cluster, HookVerdict::Fail, &message);
                    self.start_abort(
                        AbortReason::HookFailed,
                        format!(
                            "hook {} failed on {cluster} {point} ({step}): {message}",
                            hook.name
                        ),
                    );
                    return Some(StepProgress::Wait(None));
                }
                Some((HookVerdict::Inconclusive, message)) => {
                    self.hooks.push(call);
                    held.push(Hold {
                        reason: HoldReason::HookInconclusive,
                        cluster: Some(cluster.clone()),
                        message: format!(
                            "hook {} on {cluster} could not decide {point} ({step}): {message}; \
                             it is tried again until it decides or the progress deadline \
                             ({}) passes: fix what it needs, or roll back with `cutover abort`",
                            hook.name, self.rel.timings.progress_deadline
                        ),
                    });
                }
                None => {
                    self.hooks.push(call);
                    waiting = true;
                }
            }
        }
        if !held.is_empty() {
            self.wake(self.hold_deadline());
            return Some(StepProgress::Blocked(held));
        }
        waiting.then_some(StepProgress::Wait(None))
    }

    fn keep_hook(&mut self, name: &str, cluster: &str, verdict: HookVerdict, message: &str) {
        self.st.hooks.push(HookRecord {
            name: name.to_string(),
            step: self.st.step,
            cluster: cluster.to_string(),
            verdict,
            message: message.to_string(),
            at: self.now,
        });
    }
}
