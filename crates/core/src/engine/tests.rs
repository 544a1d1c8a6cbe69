//! Table-driven tests of the lifecycle, on the checkout example, with a manual
//! clock and a world where changes land at once.

use jiff::{SignedDuration, Timestamp};

use super::observe::{FreezeNotice, GateVerdict, PlacementView};
use super::timeline::World;
use super::{Action, Decision, decide};
use crate::spec::release::{AbortRequest, PromoteRequest, ReleaseDocument};
use crate::spec::status::{AbortReason, HoldReason, Phase, StepKind, TransitionEvent};
use crate::spec::{Fleet, Percent, ReleaseStatus, ResolvedRelease, Source, TierPolicyFile};

const RELEASE: &str = include_str!("../../../../examples/checkout/release.yaml");
const FLEET: &str = include_str!("../../../../examples/checkout/fleet.yaml");

fn mk_release() -> ResolvedRelease {
    let doc: ReleaseDocument = Source::new("release.yaml", RELEASE).decode().unwrap();
    let fleet = Fleet::parse("fleet.yaml", FLEET).unwrap();
    ResolvedRelease::resolve(
        &doc.metadata.name,
        None,
        &doc.spec,
        &fleet,
        &TierPolicyFile::builtin(),
    )
    .unwrap()
}

fn t0() -> Timestamp {
    "2026-03-02T09:00:00Z".parse().unwrap()
}

fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

fn pct(p: u32) -> Percent {
    Percent::from_whole(p)
}

/// A release driven pass by pass against an instant world.
struct Harness {
    rel: ResolvedRelease,
    status: ReleaseStatus,
    world: World,
    now: Timestamp,
    /// Every action applied, with its time from the start.
    log: Vec<(SignedDuration, Action)>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(mk_release(), false)
    }

    fn with(rel: ResolvedRelease, first_install: bool) -> Harness {
        let world = World::new(&rel, first_install);
        Harness {
            rel,
            status: ReleaseStatus::default(),
            world,
            now: t0(),
            log: Vec::new(),
        }
    }

    fn decide(&self) -> Decision {
        decide(
            &self.rel,
            &self.status,
            &self.world.observe(&self.status),
            self.now,
        )
    }

    /// One pass: decide, persist, apply.
    fn pass(&mut self) -> Decision {
        let d = self.decide();
        self.status = d.status.clone();
        for a in &d.actions {
            self.log.push((self.now.duration_since(t0()), a.clone()));
            self.world.apply(a);
        }
        d
    }

    /// Passes until `done` holds, moving the clock to each wake-up when idle.
    /// Returns false if the release got stuck (nothing to do, no timer).
    fn run_until(&mut self, done: impl Fn(&ReleaseStatus) -> bool) -> bool {
        for _ in 0..5_000 {
            if done(&self.status) {
                return true;
            }
            let before = self.status.clone();
            let d = self.pass();
            if d.status == before && d.actions.is_empty() {
                match d.wake_at {
                    Some(at) if at > self.now => self.now = at,
                    _ => return done(&self.status),
                }
            }
        }
        false
    }

    fn run_to_end(&mut self) {
        assert!(
            self.run_until(|s| s.phase.is_terminal()),
            "stuck: {:?}",
            self.status.message
        );
    }

    fn at_step(&mut self, index: u32) {
        assert!(
            self.run_until(|s| s.phase == Phase::Progressing && s.step == index),
            "never reached step {index}"
        );
    }

    fn weight(&self, cluster: &str) -> Percent {
        self.world.weights()[cluster]
    }

    fn completed_steps(&self) -> Vec<u32> {
        self.status
            .history
            .iter()
            .filter(|t| t.event == TransitionEvent::StepCompleted)
            .map(|t| t.step)
            .collect()
    }
}

fn set_weight(c: &str, p: u32) -> Action {
    Action::SetWeight {
        cluster: c.into(),
        green: pct(p),
    }
}

fn deploy(c: &str, r: u32) -> Action {
    Action::DeployGreen {
        cluster: c.into(),
        replicas: r,
    }
}

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

impl Harness {
    fn tap_plan_len(mut self) -> u32 {
        self.run_until(|s| !s.plan.is_empty());
        self.status.plan.len() as u32
    }
}

/// A hold of each kind, applied to the world, and how to lift it.
type Cause = (&'static str, fn(&mut Harness), fn(&mut Harness));

/// Holds that apply at every step. (An inconclusive gate holds where a step
/// waits on its gates; see `an_inconclusive_gate_holds_a_gated_step`.)
const HOLDS: [Cause; 5] = [
    (
        "freeze",
        |h| {
            h.world.freezes.active.push(FreezeNotice {
                id: "inc-42".into(),
                message: "api errors".into(),
            })
        },
        |h| h.world.freezes.active.clear(),
    ),
    (
        "unreadable freezes",
        |h| {
            h.world
                .freezes
                .unreadable
                .insert("prod-b".into(), "connection refused".into());
        },
        |h| h.world.freezes.unreadable.clear(),
    ),
    ("pause", |h| h.rel.paused = true, |h| h.rel.paused = false),
    (
        "unreachable",
        |h| h.world.clusters.get_mut("prod-b").unwrap().reachable = false,
        |h| h.world.clusters.get_mut("prod-b").unwrap().reachable = true,
    ),
    (
        "placement",
        |h| {
            for c in h.world.clusters.values_mut() {
                c.placement = PlacementView::Unsatisfied("zone eu-west-1c has no green pod".into());
            }
        },
        |h| {
            for c in h.world.clusters.values_mut() {
                c.placement = PlacementView::Satisfied;
            }
        },
    ),
];

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
        h.world.gate = GateVerdict::Pass;
        h.run_to_end();
        assert_eq!(h.status.phase, Phase::Completed, "{step}");
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
fn promote_skips_the_wait_but_never_a_gate() {
    let mut h = Harness::new();
    h.at_step(4); // canary, 10 minutes
    h.rel.promote = Some(PromoteRequest {
        step: 4,
        by: Some("alice".into()),
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
    h.rel.promote = Some(PromoteRequest { step: 4, by: None });
    h.world.gate = GateVerdict::Fail;
    h.pass();
    assert_eq!(h.status.phase, Phase::Aborting);
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
