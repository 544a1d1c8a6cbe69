//! Rolling back and superseding: blue restored everywhere before anything else.

use super::*;
use crate::engine::RouteView;
use crate::spec::status::AbortStage;

#[test]
fn abort_from_every_stage_restores_blue_everywhere_before_anything_else() {
    let steps = Harness::new().tap_plan_len();
    for k in 0..steps {
        for how in ["gate", "person"] {
            let mut h = Harness::new();
            h.at_step(k);
            let kind = h.status.plan[k as usize].kind;
            if kind == StepKind::Cleanup {
                continue; // blue is being deleted: past the point of rollback.
            }
            match how {
                "gate" => h.world.gate = GateVerdict::Fail,
                _ => {
                    h.rel.abort = Some(AbortRequest {
                        reason: "bad deploy".into(),
                        by: Some("oncall".into()),
                        version: None,
                    })
                }
            }
            let on_green: Vec<_> = h
                .world
                .weights()
                .into_iter()
                .filter(|(_, w)| *w > Percent::ZERO)
                .map(|(c, _)| c)
                .collect();
            let first = h.pass();
            assert!(
                matches!(first.status.phase, Phase::Aborting | Phase::Aborted),
                "step {k} ({how})"
            );
            if !on_green.is_empty() {
                // Traffic first, and only traffic, in every cluster that had any on green.
                let mut want: Vec<_> = on_green.iter().map(|c| set_weight(c, 0)).collect();
                let mut got = first.actions.clone();
                want.sort_by(|a, b| a.cluster().cmp(b.cluster()));
                got.sort_by(|a, b| a.cluster().cmp(b.cluster()));
                assert_eq!(got, want, "step {k} ({how})");
            }
            for c in ["staging", "prod-a", "prod-b"] {
                assert_eq!(
                    h.weight(c),
                    Percent::ZERO,
                    "step {k}: {c} back on blue after one pass"
                );
            }
            h.run_to_end();
            assert_eq!(h.status.phase, Phase::Aborted, "step {k} ({how})");
            let reason = h.status.abort.as_ref().unwrap().reason;
            let want = if how == "gate" {
                AbortReason::GateFailed
            } else {
                AbortReason::Requested
            };
            assert_eq!(reason, want);
            assert!(
                !h.log
                    .iter()
                    .any(|(_, a)| matches!(a, Action::DeleteBlue { .. })),
                "blue is never deleted"
            );
            for view in h.world.clusters.values() {
                assert!(view.blue.is_some(), "step {k}: blue still serves");
                assert!(
                    view.green.as_ref().is_none_or(|g| g.replicas == 0),
                    "step {k}: green scaled down"
                );
            }
        }
    }
}

#[test]
fn an_unreachable_cluster_delays_green_scale_down_until_its_traffic_is_back_on_blue() {
    let mut h = Harness::new();
    h.at_step(28); // bake: every cluster on green
    assert_eq!(h.status.plan[28].kind, StepKind::Bake);
    h.world.clusters.get_mut("prod-b").unwrap().reachable = false;
    h.world.gate = GateVerdict::Fail;
    let d = h.pass();
    assert_eq!(
        d.actions,
        vec![set_weight("staging", 0), set_weight("prod-a", 0)]
    );
    for _ in 0..5 {
        let d = h.pass();
        assert!(
            d.actions.iter().all(|a| !a.is_destructive()),
            "{:?}",
            d.actions
        );
        assert_eq!(h.status.holds[0].reason, HoldReason::ClusterUnreachable);
    }
    h.world.clusters.get_mut("prod-b").unwrap().reachable = true;
    let d = h.pass();
    assert_eq!(d.actions, vec![set_weight("prod-b", 0)]);
    h.run_to_end();
    assert_eq!(h.status.phase, Phase::Aborted);
}

#[test]
fn a_route_seen_on_green_again_after_traffic_was_restored_goes_back_before_green_goes_down() {
    // Traffic was seen on blue everywhere, and green's scale-down was
    // decided but not carried out (the applier refused it: the route read
    // afresh still sent staging to green, where the view had not caught up).
    // The view now shows staging on green: it goes back to blue first.
    let mut h = Harness::new();
    h.at_step(28); // bake: every cluster on green
    h.world.gate = GateVerdict::Fail;
    let d = h.pass();
    assert!(d.actions.iter().all(|a| !a.is_destructive()));
    let d = h.decide();
    assert_eq!(
        d.status.abort.as_ref().map(|a| a.stage),
        Some(AbortStage::ScalingDownGreen)
    );
    assert!(
        d.actions.iter().all(Action::is_destructive),
        "{:?}",
        d.actions
    );
    h.status = d.status;
    let staging = h.world.clusters.get_mut("staging").unwrap();
    staging.route = Some(RouteView {
        green: pct(100),
        target: Some(pct(100)),
        drift: None,
        settled: true,
    });
    let d = h.pass();
    assert_eq!(d.actions, vec![set_weight("staging", 0)]);
    h.run_to_end();
    assert_eq!(h.status.phase, Phase::Aborted);
    for (c, view) in &h.world.clusters {
        assert_eq!(h.weight(c), Percent::ZERO, "{c}");
        assert!(view.green.as_ref().is_none_or(|g| g.replicas == 0), "{c}");
    }
}

#[test]
fn a_version_submitted_in_flight_sends_the_old_one_back_to_blue_and_starts_over() {
    let steps = Harness::new().tap_plan_len();
    for k in [4u32, 10, 26, 28] {
        let mut h = Harness::new();
        h.at_step(k);
        let old = h.status.version.clone().unwrap();
        h.rel.version = "2.15.0".into();
        let before = h.log.len();
        // Old traffic back to blue first, then the old green down; nothing new yet.
        h.run_until(|s| s.phase == Phase::Pending);
        let withdrawn: Vec<Action> = h.log[before..].iter().map(|(_, a)| a.clone()).collect();
        assert!(
            withdrawn.iter().all(|a| matches!(
                a,
                Action::SetWeight { green, .. } if *green == Percent::ZERO
            ) || matches!(a, Action::ScaleDownGreen { .. })),
            "step {k}: {withdrawn:?}"
        );
        let first_scale_down = withdrawn
            .iter()
            .position(|a| matches!(a, Action::ScaleDownGreen { .. }));
        let last_weight = withdrawn
            .iter()
            .rposition(|a| matches!(a, Action::SetWeight { .. }));
        assert!(first_scale_down > last_weight, "step {k}: {withdrawn:?}");
        assert!(
            h.world.weights().values().all(|w| *w == Percent::ZERO),
            "step {k}"
        );
        assert_eq!(h.status.step, 0, "step {k}");
        assert!(h.status.gates.is_empty() && h.status.plan.is_empty());
        let superseded = h
            .status
            .history
            .iter()
            .rposition(|t| t.event == TransitionEvent::Superseded)
            .expect("recorded");
        assert!(
            h.status.history[superseded].message.contains(&old),
            "{:?}",
            h.status.history[superseded]
        );
        // The new version then goes through every step, its own gates included.
        h.world.version = "2.15.0".into();
        h.run_to_end();
        assert_eq!(h.status.phase, Phase::Completed, "step {k}");
        assert_eq!(h.status.version.as_deref(), Some("2.15.0"));
        let after: Vec<u32> = h.status.history[superseded..]
            .iter()
            .filter(|t| t.event == TransitionEvent::StepCompleted)
            .map(|t| t.step)
            .collect();
        assert_eq!(after, (0..steps).collect::<Vec<_>>(), "step {k}");
    }
}

#[test]
fn a_version_submitted_during_cleanup_waits_for_it() {
    let last = Harness::new().tap_plan_len() - 1;
    let mut h = Harness::new();
    h.at_step(last);
    assert_eq!(h.status.plan[last as usize].kind, StepKind::Cleanup);
    h.rel.version = "2.15.0".into();
    h.run_to_end();
    assert_eq!(h.status.phase, Phase::Completed);
    assert_eq!(h.status.version.as_deref(), Some("2.14.0"));
}
