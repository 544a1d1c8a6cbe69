//! Holds: what stops a release without destroying anything, and the
//! deadlines that bound them.

use super::*;

#[test]
fn a_hold_never_destroys_or_adds_traffic_and_resumes_when_clear() {
    let steps = Harness::new().tap_plan_len();
    for (name, hold, lift) in HOLDS {
        for k in (0..steps).step_by(3) {
            let mut h = Harness::new();
            h.at_step(k);
            hold(&mut h);
            let weights = h.world.weights();
            // An hour of passes under the hold (short of the progress deadline for placement).
            for _ in 0..20 {
                let d = h.pass();
                for a in &d.actions {
                    assert!(!a.is_destructive(), "{name} at step {k}: {a}");
                    if let Action::SetWeight { cluster, green } = a {
                        assert!(
                            *green <= weights[cluster],
                            "{name} at step {k}: traffic added: {a}"
                        );
                    }
                }
                h.now += SignedDuration::from_secs(30);
            }
            assert!(h.status.phase != Phase::Completed, "{name} at step {k}");
            assert!(
                h.status.abort.is_none(),
                "{name} at step {k}: {:?}",
                h.status.message
            );
            lift(&mut h);
            h.run_to_end();
            assert_eq!(
                h.status.phase,
                Phase::Completed,
                "{name} at step {k}: {:?}",
                h.status.message
            );
            assert_eq!(
                h.completed_steps(),
                (0..steps).collect::<Vec<_>>(),
                "{name} at step {k}"
            );
        }
    }
}

#[test]
fn an_inconclusive_gate_holds_a_gated_step() {
    let plan = {
        let mut h = Harness::new();
        h.run_until(|s| !s.plan.is_empty());
        h.status.plan.clone()
    };
    for (k, step) in plan
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.wait.as_duration().is_zero())
    {
        let mut h = Harness::new();
        h.at_step(k as u32);
        h.pass(); // the step's change is in place: its wait begins
        h.world.gate = GateVerdict::Inconclusive;
        h.now += SignedDuration::from_hours(5);
        let d = h.pass();
        assert!(d.actions.is_empty(), "{step}: {:?}", d.actions);
        assert_eq!(h.status.step, k as u32, "{step}");
        assert_eq!(
            h.status.holds[0].reason,
            HoldReason::GateInconclusive,
            "{step}"
        );
        h.now += mins(10);
        let d = h.pass();
        assert!(d.actions.is_empty(), "{step}: still within the deadline");
        h.world.gate = GateVerdict::Pass;
        h.run_to_end();
        assert_eq!(h.status.phase, Phase::Completed, "{step}");
    }
}

#[test]
fn an_inconclusive_gate_past_the_progress_deadline_rolls_back_naming_the_gate() {
    let mut h = Harness::new();
    h.at_step(4);
    h.pass();
    h.world.gate = GateVerdict::Inconclusive;
    h.now += mins(10); // the canary's wait is over; its gates cannot decide
    h.pass();
    assert_eq!(h.status.holds[0].reason, HoldReason::GateInconclusive);
    h.now += mins(14);
    assert!(h.pass().actions.is_empty(), "within the deadline it holds");
    h.now += mins(1);
    h.pass();
    let abort = h.status.abort.clone().expect("rolled back at the deadline");
    assert_eq!(abort.reason, AbortReason::ProgressDeadline);
    assert!(
        abort.message.contains("made no progress within 15m")
            && abort.message.contains("every gate reports Inconclusive"),
        "{}",
        abort.message
    );
    h.run_to_end();
    assert_eq!(h.status.phase, Phase::Aborted);
    for c in ["staging", "prod-a", "prod-b"] {
        assert_eq!(h.weight(c), pct(0), "{c} back on blue");
    }
}

#[test]
fn holds_are_explained_and_recorded() {
    let mut h = Harness::new();
    h.at_step(6);
    h.world.freezes.active.push(FreezeNotice {
        id: "inc-42".into(),
        message: "checkout errors, by alice".into(),
    });
    h.pass();
    assert_eq!(h.status.phase, Phase::Holding);
    assert_eq!(h.status.holds[0].reason, HoldReason::Freeze);
    assert!(h.status.message.as_deref().unwrap().contains("inc-42"));
    h.rel.paused = true;
    h.pass();
    assert_eq!(h.status.phase, Phase::Paused);
    let events: Vec<_> = h
        .status
        .history
        .iter()
        .rev()
        .take(2)
        .map(|t| t.event)
        .collect();
    assert_eq!(
        events,
        vec![TransitionEvent::HoldChanged, TransitionEvent::HoldStarted]
    );
}

#[test]
fn after_a_freeze_the_step_gates_run_again_before_advancing() {
    let mut h = Harness::new();
    h.at_step(4); // canary on prod-a
    h.pass(); // its weight is seen in place: the canary's wait begins
    let epoch = h.status.analysis_epoch;
    h.world.freezes.active.push(FreezeNotice {
        id: "f1".into(),
        message: "incident".into(),
    });
    h.pass();
    h.now += mins(60); // the canary's 10 minutes are long over
    h.world.freezes.active.clear();
    // A verdict from the run before the freeze does not count.
    let stale = h.world.observe(&h.status);
    let d = decide(&h.rel, &h.status, &stale, h.now);
    assert_eq!(d.status.analysis_epoch, epoch + 1);
    assert_eq!(
        d.status.step, 4,
        "no advance on a verdict from before the freeze"
    );
    assert!(d.actions.is_empty());
    h.status = d.status;
    h.pass(); // the world now reports for the new epoch
    assert_eq!(h.status.step, 5);
}

#[test]
fn placement_that_never_comes_right_aborts_at_the_deadline_with_the_report() {
    let mut h = Harness::new();
    h.at_step(3); // deploy green on prod-a
    h.world.clusters.get_mut("prod-a").unwrap().placement = PlacementView::Unsatisfied(
        "zones eu-west-1a=4 eu-west-1b=2 eu-west-1c=0; skew 4 > 1".into(),
    );
    h.run_until(|s| s.phase == Phase::Aborting || s.phase.is_terminal());
    let abort = h.status.abort.clone().expect("aborted");
    assert_eq!(abort.reason, AbortReason::ProgressDeadline);
    assert!(abort.message.contains("eu-west-1c=0"), "{}", abort.message);
    assert_eq!(
        abort.at,
        t0() + mins(10) + mins(15),
        "deploy began at +10m; deadline 15m"
    );
}

#[test]
fn a_route_edited_by_someone_else_holds_the_release() {
    let mut h = Harness::new();
    h.at_step(8);
    h.world
        .clusters
        .get_mut("prod-a")
        .unwrap()
        .route
        .as_mut()
        .unwrap()
        .drift = Some("backend weights are 50/50, cutover set 80/20".into());
    let d = h.pass();
    assert!(d.actions.is_empty());
    assert_eq!(h.status.phase, Phase::Holding);
    assert!(
        h.status
            .message
            .as_deref()
            .unwrap()
            .contains("not overwriting")
    );
}

#[test]
fn time_under_an_outage_does_not_count_against_the_deploy_deadline() {
    // prod-b goes dark as its deploy begins, for longer than the 15m deadline;
    // when it answers again green is not well placed yet.
    for (name, placed_after, aborts) in [
        ("placed in time", Some(mins(10)), false),
        ("never placed", None, true),
    ] {
        let mut h = Harness::new();
        h.at_step(26);
        assert_eq!(h.status.plan[26].kind, StepKind::Deploy, "{name}");
        let started = h.status.step_started_at.unwrap();
        let b = h.world.clusters.get_mut("prod-b").unwrap();
        b.reachable = false;
        b.placement = PlacementView::Unsatisfied("zones eu-central-1c=0".into());
        for _ in 0..40 {
            h.pass();
            assert!(h.status.abort.is_none(), "{name}: {:?}", h.status.abort);
            h.now += SignedDuration::from_secs(30);
        }
        assert_eq!(
            h.status.holds[0].reason,
            HoldReason::ClusterUnreachable,
            "{name}"
        );
        h.world.clusters.get_mut("prod-b").unwrap().reachable = true;
        h.pass();
        assert!(h.status.abort.is_none(), "{name}: {:?}", h.status.abort);
        assert_eq!(h.status.suspended_seconds, 20 * 60, "{name}");
        if let Some(after) = placed_after {
            h.now += after;
            h.world.clusters.get_mut("prod-b").unwrap().placement = PlacementView::Satisfied;
        }
        h.run_until(|s| s.phase == Phase::Aborting || s.phase.is_terminal());
        match aborts {
            false => {
                h.run_to_end();
                assert_eq!(h.status.phase, Phase::Completed, "{name}");
            }
            true => {
                let abort = h.status.abort.clone().expect("aborted");
                assert_eq!(abort.reason, AbortReason::ProgressDeadline, "{name}");
                assert_eq!(
                    abort.at,
                    started + mins(15) + mins(20),
                    "{name}: the deadline moves by the outage"
                );
            }
        }
    }
}

#[test]
fn an_action_the_applier_refused_holds_the_release_and_says_why() {
    let mut h = Harness::new();
    h.at_step(4);
    let before = h.weight("prod-a");
    h.world.defects.insert(
        "prod-a".into(),
        "prod-a: deleting checkout-blue while checkout sends it traffic".into(),
    );
    h.now += mins(30);
    let d = h.pass();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(h.status.phase, Phase::Holding);
    let hold = &h.status.holds[0];
    assert_eq!(hold.reason, HoldReason::UnsafeAction);
    assert!(
        hold.message.contains("the applier refused it"),
        "{}",
        hold.message
    );
    assert_eq!(h.weight("prod-a"), before);
    h.world.defects.clear();
    h.run_to_end();
    assert_eq!(h.status.phase, Phase::Completed);
}

#[test]
fn gates_that_never_reach_a_verdict_roll_back_at_the_deadline_after_the_wait() {
    let mut h = Harness::new();
    h.at_step(4);
    h.pass();
    h.world.gate = GateVerdict::Pending;
    h.now += mins(10 + 14);
    assert!(h.pass().actions.is_empty(), "still waiting for its gates");
    assert!(h.status.abort.is_none());
    h.now += mins(1);
    h.pass();
    let abort = h.status.abort.clone().expect("rolled back");
    assert_eq!(abort.reason, AbortReason::ProgressDeadline);
    assert!(
        abort.message.contains("reached no verdict") && abort.message.contains("Pending"),
        "{}",
        abort.message
    );
}

#[test]
fn a_tier_that_holds_without_a_verdict_holds_past_the_deadline_and_says_so() {
    for verdict in [GateVerdict::Pending, GateVerdict::Inconclusive] {
        let mut h = Harness::new();
        h.rel.tier.rollout.without_verdict = crate::spec::policy::WithoutVerdict::Hold;
        h.at_step(4);
        h.pass();
        let weight = h.weight("prod-a");
        h.world.gate = verdict;
        for _ in 0..12 {
            h.now += mins(10);
            assert!(h.pass().actions.is_empty(), "{verdict:?}: traffic stays");
        }
        assert!(
            h.status.abort.is_none(),
            "{verdict:?}: {:?}",
            h.status.abort
        );
        assert_eq!(h.status.phase, Phase::Holding, "{verdict:?}");
        let hold = &h.status.holds[0];
        assert_eq!(hold.reason, HoldReason::GateInconclusive, "{verdict:?}");
        assert!(
            hold.message.contains("holds instead of rolling back"),
            "{verdict:?}: {}",
            hold.message
        );
        assert_eq!(h.weight("prod-a"), weight);
        // The gates decide at last: the release goes on.
        h.world.gate = GateVerdict::Pass;
        h.run_to_end();
        assert_eq!(h.status.phase, Phase::Completed, "{verdict:?}");
    }
}
