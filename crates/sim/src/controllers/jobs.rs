//! The Job controller, as far as a hook needs it: a Job starts when it is
//! created, runs for a while of fleet time and ends `Complete` or `Failed`
//! with the conditions a real Job controller sets (`SuccessCriteriaMet`
//! then `Complete`; `FailureTarget` then `Failed`, with the reason), or
//! fails `DeadlineExceeded` once it outlives `activeDeadlineSeconds`. A
//! finished Job is deleted `ttlSecondsAfterFinished` later, as the TTL
//! controller does. No pods are made: nothing here reads a Job's pods.
//!
//! What a Job's pod would do is told by annotations on its pod template:
//! `sim.cutover.dev/runs-for` (fleet time, default 30s) and
//! `sim.cutover.dev/exit-code` (default 0; anything else fails it).

use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;

use super::{Ctx, Pass, Scope, Work};
use crate::meta;

/// How long a Job's pod runs, on its pod template.
pub const RUNS_FOR: &str = "sim.cutover.dev/runs-for";
/// The exit code of a Job's pod, on its pod template.
pub const EXIT_CODE: &str = "sim.cutover.dev/exit-code";

const DEFAULT_RUN: Duration = Duration::from_secs(30);

/// One pass over the Jobs in scope; leaves when each next needs a look.
pub fn reconcile(ctx: &Ctx, scope: &Scope, pass: &mut Pass) {
    let kind = ctx.kind("batch", "jobs");
    let now = ctx.now();
    for job in scope.jobs(&ctx.store) {
        let ns = meta::namespace(&job).to_string();
        let mut due = |t: Timestamp| pass.due(Work::Jobs(ns.clone()), t);
        if job["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let finished = ["Complete", "Failed"]
            .iter()
            .find_map(|c| meta::condition(&job, c).filter(|_| meta::condition_true(&job, c)))
            .and_then(|c| c["lastTransitionTime"].as_str())
            .and_then(meta::parse_time);
        if let Some(at) = finished {
            if let Some(ttl) = job["spec"]["ttlSecondsAfterFinished"].as_u64() {
                let gone = at
                    .checked_add(Duration::from_secs(ttl))
                    .unwrap_or(Timestamp::MAX);
                if now >= gone {
                    let _ = ctx.store.delete(
                        &kind,
                        meta::namespace(&job),
                        meta::name(&job),
                        &Default::default(),
                    );
                } else {
                    due(gone);
                }
            }
            continue;
        }
        if job["spec"]["suspend"] == json!(true) {
            continue;
        }
        let Some(started) = job["status"]["startTime"]
            .as_str()
            .and_then(meta::parse_time)
        else {
            let _ = ctx.update(&kind, &job, |j| {
                j["status"]["startTime"] = json!(meta::time(now));
                j["status"]["active"] = json!(1);
                j["status"]["ready"] = json!(1);
            });
            due(now);
            continue;
        };
        let annotations = &job["spec"]["template"]["metadata"]["annotations"];
        let runs_for = annotations[RUNS_FOR]
            .as_str()
            .and_then(|t| cutover_core::spec::Span::parse(t).ok())
            .map(|s| s.as_duration())
            .unwrap_or(DEFAULT_RUN);
        let exit_code: i64 = annotations[EXIT_CODE]
            .as_str()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let ends = started.checked_add(runs_for).unwrap_or(Timestamp::MAX);
        let deadline = job["spec"]["activeDeadlineSeconds"]
            .as_u64()
            .and_then(|s| started.checked_add(Duration::from_secs(s)).ok());
        let outcome = match deadline {
            Some(d) if d <= ends && now >= d => Some(Err((
                "DeadlineExceeded",
                "Job was active longer than specified deadline".to_string(),
            ))),
            _ if now >= ends && exit_code == 0 => Some(Ok(())),
            _ if now >= ends => Some(Err((
                "BackoffLimitExceeded",
                format!(
                    "Job has reached the specified backoff limit (its pod exited with code {exit_code})"
                ),
            ))),
            _ => None,
        };
        let Some(outcome) = outcome else {
            due(deadline.map_or(ends, |d| d.min(ends)));
            continue;
        };
        let at = meta::time(now);
        let condition = |kind: &str, reason: &str, message: &str| {
            json!({"type": kind, "status": "True", "reason": reason, "message": message,
                   "lastProbeTime": at, "lastTransitionTime": at})
        };
        let _ = ctx.update(&kind, &job, |j| {
            let status = &mut j["status"];
            status["active"] = json!(0);
            status["ready"] = json!(0);
            match &outcome {
                Ok(()) => {
                    status["succeeded"] = json!(1);
                    status["completionTime"] = json!(at);
                    status["conditions"] = json!([
                        condition(
                            "SuccessCriteriaMet",
                            "CompletionsReached",
                            "Reached expected number of succeeded pods"
                        ),
                        condition(
                            "Complete",
                            "CompletionsReached",
                            "Reached expected number of succeeded pods"
                        ),
                    ]);
                }
                Err((reason, message)) => {
                    status["failed"] = json!(1);
                    status["conditions"] = json!([
                        condition("FailureTarget", reason, message),
                        condition("Failed", reason, message),
                    ]);
                }
            }
        });
        due(now);
    }
}
