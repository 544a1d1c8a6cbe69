//! Table-driven tests of the lifecycle, on the checkout example, with a manual
//! clock and a world where changes land at once.

use jiff::{SignedDuration, Timestamp};

use super::observe::{FreezeNotice, GateVerdict, PlacementView};
use super::timeline::World;
use super::{Action, Decision, decide};
use crate::spec::release::{AbortRequest, PromoteRequest, ReleaseDocument};
use crate::spec::status::{AbortReason, HoldReason, Phase, StepKind, TransitionEvent};
use crate::spec::{Fleet, Percent, ReleaseStatus, ResolvedRelease, Source, TierPolicyFile};

mod holds;
mod hooks;
mod lifecycle;
mod model;
mod revisions;
mod rollback;

const RELEASE: &str = include_str!("../../../../../examples/checkout/release.yaml");
const FLEET: &str = include_str!("../../../../../examples/checkout/fleet.yaml");

pub(crate) fn mk_release() -> ResolvedRelease {
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
