//! The lifecycle moving forward: timings, the canary share, promote, crash
//! repeats, preflight, first install and cleanup.

use super::*;

#[test]
fn full_tier1_lifecycle_takes_every_action_at_its_time() {
    let mut h = Harness::new();
    h.run_to_end();
    assert_eq!(h.status.phase, Phase::Completed);
    let mut expected = vec![
        (mins(0), deploy("staging", 3)),
        (mins(0), set_weight("staging", 100)),
        (mins(10), deploy("prod-a", 6)),
        (mins(10), set_weight("prod-a", 4)),
    ];
    for (i, w) in (5..=100).step_by(5).enumerate() {
        expected.push((mins(20 + 5 * i as i64), set_weight("prod-a", w)));
    }
    // 100 % at +1h55m, then a 30 minute soak, then prod-b, a 2 hour bake, cleanup.
    expected.push((mins(145), deploy("prod-b", 6)));
    expected.push((mins(145), set_weight("prod-b", 100)));
    for c in ["staging", "prod-a", "prod-b"] {
        expected.push((mins(265), Action::DeleteBlue { cluster: c.into() }));
    }
    assert_eq!(h.log, expected);
    assert_eq!(
        h.completed_steps(),
        (0..h.status.plan.len() as u32).collect::<Vec<_>>()
    );
    assert_eq!(h.status.finished_at, Some(t0() + mins(265)));
}

#[test]
fn the_canary_is_a_share_of_total_traffic() {
    let mut rel = mk_release();
    rel.clusters[1].traffic_share = pct(25);
    rel.clusters[2].traffic_share = pct(75);
    let mut h = Harness::with(rel, false);
    h.run_to_end();
    assert!(
        h.log.iter().any(|(_, a)| *a == set_weight("prod-a", 8)),
        "2% of total on a 25% cluster is 8%"
    );
    assert!(
        !h.log.iter().any(|(_, a)| *a == set_weight("prod-a", 5)),
        "the ramp starts above the canary"
    );
}

#[test]
fn promote_skips_the_wait_but_never_a_gate() {
    let mut h = Harness::new();
    h.at_step(4); // canary, 10 minutes
    h.rel.promote = Some(PromoteRequest {
        step: 4,
        by: Some("alice".into()),
        version: None,
    });
    h.world.gate = GateVerdict::Pending;
    h.pass();
    assert_eq!(
        h.status.step, 4,
        "no verdict yet: the promotion waits for the gates"
    );
    h.world.gate = GateVerdict::Pass;
    h.pass();
    assert_eq!(h.status.step, 5, "promoted before the 10 minutes were up");
    assert!(
        h.status
            .history
            .iter()
            .any(|t| t.event == TransitionEvent::Promoted && t.message.contains("alice"))
    );
    // A promotion of step 4 does not skip step 5's wait.
    let before = h.now;
    h.pass();
    assert_eq!(h.status.step, 5);
    assert_eq!(h.now, before);
    // A failing gate is never promoted past.
    let mut h = Harness::new();
    h.at_step(4);
    h.rel.promote = Some(PromoteRequest {
        step: 4,
        by: None,
        version: None,
    });
    h.world.gate = GateVerdict::Fail;
    h.pass();
    assert_eq!(h.status.phase, Phase::Aborting);
}

#[test]
fn a_pass_repeated_after_a_crash_repeats_nothing_and_skips_nothing() {
    // The uninterrupted run, for reference.
    let mut reference = Harness::new();
    reference.run_to_end();
    let passes = reference.status.history.len();
    for crash_at in 0..passes * 2 {
        for applied_before_crash in [true, false] {
            let mut h = Harness::new();
            let mut n = 0;
            let mut crashed = false;
            for _ in 0..5_000 {
                if h.status.phase.is_terminal() {
                    break;
                }
                let d = h.decide();
                if n == crash_at && !crashed {
                    crashed = true;
                    // The driver dies: either after acting but before persisting,
                    // or after persisting but before acting.
                    if applied_before_crash {
                        d.actions.iter().for_each(|a| h.world.apply(a));
                    } else {
                        h.status = d.status.clone();
                    }
                    let again = h.decide();
                    if !applied_before_crash {
                        assert_eq!(
                            again.actions, d.actions,
                            "crash {crash_at}: the same actions are due again"
                        );
                    } else {
                        for a in &again.actions {
                            assert!(
                                !d.actions.contains(a),
                                "crash {crash_at}: {a} repeated though it took effect"
                            );
                        }
                    }
                    continue;
                }
                n += 1;
                let before = h.status.clone();
                let d = h.pass();
                if d.status == before && d.actions.is_empty() {
                    h.now = d.wake_at.expect("a timer while idle");
                }
            }
            assert_eq!(h.status.phase, Phase::Completed, "crash {crash_at}");
            assert_eq!(
                h.completed_steps(),
                reference.completed_steps(),
                "crash {crash_at}: no step repeated or skipped"
            );
            assert_eq!(
                h.status.finished_at, reference.status.finished_at,
                "crash {crash_at}"
            );
        }
    }
}

#[test]
fn preflight_outcomes() {
    // A freeze before the start: nothing happens, the release stays pending.
    let mut h = Harness::new();
    h.world.freezes.active.push(FreezeNotice {
        id: "f".into(),
        message: "holiday".into(),
    });
    let d = h.pass();
    assert_eq!(d.status.phase, Phase::Pending);
    assert!(d.actions.is_empty() && d.status.plan.is_empty());
    assert_eq!(d.status.holds[0].reason, HoldReason::Freeze);

    // Blue on some clusters only.
    let mut h = Harness::new();
    h.world.clusters.get_mut("prod-b").unwrap().blue = None;
    h.pass();
    assert_eq!(h.status.phase, Phase::Failed);
    assert!(
        h.status
            .message
            .as_deref()
            .unwrap()
            .contains("not on prod-b")
    );

    // Already serving this version.
    let mut h = Harness::new();
    for c in h.world.clusters.values_mut() {
        c.blue.as_mut().unwrap().version = "2.14.0".into();
    }
    h.pass();
    assert_eq!(h.status.phase, Phase::Completed);
    assert!(h.log.is_empty());
}

#[test]
fn first_install_deploys_and_cuts_over_with_nothing_to_clean_up() {
    let mut h = Harness::with(mk_release(), true);
    h.run_to_end();
    assert_eq!(h.status.phase, Phase::Completed);
    let actions: Vec<_> = h.log.iter().map(|(_, a)| a.clone()).collect();
    assert_eq!(
        actions,
        vec![
            deploy("staging", 3),
            set_weight("staging", 100),
            deploy("prod-a", 6),
            set_weight("prod-a", 100),
            deploy("prod-b", 6),
            set_weight("prod-b", 100),
        ]
    );
    // staging verify 10m + soak 30m
    assert_eq!(h.status.finished_at, Some(t0() + mins(40)));
}

#[test]
fn cleanup_refuses_while_a_route_is_not_fully_on_green() {
    let mut h = Harness::new();
    h.at_step(29); // first cleanup
    let route = h
        .world
        .clusters
        .get_mut("staging")
        .unwrap()
        .route
        .as_mut()
        .unwrap();
    route.green = pct(90);
    let d = h.pass();
    assert!(d.actions.is_empty());
    assert_eq!(h.status.holds[0].reason, HoldReason::RouteDrift);
}
