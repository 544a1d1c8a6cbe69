//! Step hooks in the engine: asked for at their point of the step, before
//! the change they guard; a pass kept in the status and never asked again;
//! a failure rolls back before green takes traffic; an inconclusive hook
//! holds, for no longer than the progress deadline.

use super::*;
use crate::spec::hooks::{Hook, HookVerdict};

fn with_hook(yaml: &str) -> Harness {
    let mut rel = mk_release();
    rel.hooks
        .push(serde_saphyr::from_str::<Hook>(yaml).unwrap());
    Harness::with(rel, false)
}

fn canary_step(h: &Harness) -> u32 {
    h.status
        .plan
        .iter()
        .position(|p| p.kind == StepKind::Canary)
        .unwrap() as u32
}

#[test]
fn a_hook_runs_before_the_canary_moves_traffic_and_a_pass_is_never_asked_again() {
    let mut h =
        with_hook("{name: smoke, at: beforeTraffic, steps: [canary], http: {url: 'http://smoke'}}");
    h.world.hook = None;
    h.pass();
    let canary = canary_step(&h);
    h.at_step(canary);
    let d = h.pass();
    assert_eq!(d.hooks.len(), 1, "{:?}", d.hooks);
    let call = &d.hooks[0];
    assert_eq!(
        (call.name.as_str(), call.cluster.as_str(), call.step),
        ("smoke", "prod-a", canary)
    );
    assert_eq!(call.weight, h.status.plan[canary as usize].weight);
    assert!(
        d.actions.is_empty(),
        "no traffic before the hook: {:?}",
        d.actions
    );
    assert_eq!(h.weight("prod-a"), Percent::ZERO);

    // It passes: kept, recorded, and the weight moves in the same pass. The
    // driver dies before applying it.
    h.world.hook = Some(HookVerdict::Pass);
    let d = h.decide();
    assert!(
        matches!(d.actions[..], [Action::SetWeight { .. }]),
        "{:?}",
        d.actions
    );
    assert_eq!(d.status.hooks.len(), 1);
    assert!(d.status.history.iter().any(|t| {
        t.event == TransitionEvent::HookPassed
            && t.message
                .starts_with("hook smoke passed on prod-a before traffic")
    }));
    h.status = d.status;
    // Another driver takes over; the hook would now fail, but it passed
    // already: the weight is set, nothing is asked.
    h.world.hook = Some(HookVerdict::Fail);
    let d = h.pass();
    assert!(d.hooks.is_empty(), "{:?}", d.hooks);
    assert!(
        matches!(d.actions[..], [Action::SetWeight { .. }]),
        "{:?}",
        d.actions
    );
    h.run_to_end();
    assert_eq!(h.status.phase, Phase::Completed, "{:?}", h.status.message);
    assert_eq!(h.status.hooks.len(), 1, "the canary's hook only");
}

#[test]
fn a_failing_hook_rolls_back_before_green_takes_traffic() {
    let mut h = with_hook(
        "{name: smoke, at: beforeTraffic, clusters: [prod-a], http: {url: 'http://smoke'}}",
    );
    h.world.hook = Some(HookVerdict::Fail);
    h.run_to_end();
    assert_eq!(h.status.phase, Phase::Aborted);
    let abort = h.status.abort.clone().unwrap();
    assert_eq!(abort.reason, AbortReason::HookFailed);
    assert!(
        abort
            .message
            .starts_with("hook smoke failed on prod-a before traffic (canary prod-a"),
        "{}",
        abort.message
    );
    assert!(
        h.log.iter().all(|(_, a)| !matches!(a, Action::SetWeight { cluster, green } if cluster == "prod-a" && *green > Percent::ZERO)),
        "{:?}",
        h.log
    );
}

#[test]
fn an_inconclusive_hook_holds_the_step_and_rolls_back_past_the_deadline() {
    let mut h =
        with_hook("{name: drain, at: afterDeploy, clusters: [prod-b], job: {fromCronJob: drain}}");
    h.world.hook = Some(HookVerdict::Inconclusive);
    assert!(h.run_until(|s| !s.holds.is_empty()));
    let hold = &h.status.holds[0];
    assert_eq!(hold.reason, HoldReason::HookInconclusive);
    assert_eq!(hold.cluster.as_deref(), Some("prod-b"));
    assert!(
        hold.message
            .contains("hook drain on prod-b could not decide after deploy")
    );
    // Still asked for, so the driver tries again.
    assert_eq!(h.decide().hooks.len(), 1);
    // prod-b's deploy step is not ready: blue keeps all of prod-b's traffic.
    assert_eq!(h.weight("prod-b"), Percent::ZERO);
    h.run_to_end();
    let abort = h.status.abort.clone().unwrap();
    assert_eq!(abort.reason, AbortReason::ProgressDeadline);
    assert!(abort.message.contains("hook drain"), "{}", abort.message);
}
