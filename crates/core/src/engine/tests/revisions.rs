//! Release after release: each new version runs its own lifecycle from what
//! serves, the ended one joins the history, and the version that serves is
//! never installed as if nothing served.

use super::*;

/// `version` runs in the green slot and takes all of the cluster's traffic.
fn serve_green(c: &mut crate::engine::ClusterView, version: &str) {
    c.green = Some(crate::engine::WorkloadView {
        version: version.into(),
        replicas: 6,
        available: 6,
    });
    c.route = Some(crate::engine::RouteView {
        green: pct(100),
        target: None,
        drift: None,
        settled: true,
    });
}

fn next(h: &mut Harness, version: &str) {
    h.rel.version = version.into();
    h.world.next_version(version);
    h.log.clear();
    // The pass that sees the new version starts its revision.
    h.pass();
    assert!(!h.status.phase.is_terminal(), "{:?}", h.status.message);
}

#[test]
fn three_versions_in_a_row_each_run_their_own_lifecycle() {
    let mut h = Harness::new();
    h.run_to_end();
    assert_eq!(h.status.phase, Phase::Completed);
    let first = h.status.version.clone().unwrap();
    for (n, version) in [(2, "2.15.0"), (3, "2.16.0")] {
        next(&mut h, version);
        h.run_to_end();
        let s = &h.status;
        assert_eq!(
            (s.phase, s.revision, s.version.as_deref()),
            (Phase::Completed, n, Some(version))
        );
        assert_eq!(
            s.mode,
            Some(crate::spec::status::Mode::BlueGreen),
            "{version}"
        );
        let blue = s.blue_version.clone().unwrap();
        assert_eq!(s.revisions.last().unwrap().version, blue);
        // Its own lifecycle: deployed, moved traffic, cleaned up the old blue.
        assert!(h.log.iter().any(|(_, a)| *a == deploy("prod-a", 6)));
        assert!(h.log.iter().any(|(_, a)| *a
            == Action::DeleteBlue {
                cluster: "prod-b".into()
            }));
        for c in ["staging", "prod-a", "prod-b"] {
            assert_eq!(h.weight(c), pct(100), "{version} serves on {c}");
        }
    }
    let history: Vec<_> = h
        .status
        .revisions
        .iter()
        .map(|r| (r.revision, r.version.as_str(), r.outcome))
        .collect();
    assert_eq!(
        history,
        vec![
            (1, first.as_str(), Phase::Completed),
            (2, "2.15.0", Phase::Completed)
        ]
    );
    assert!(h.status.revisions.iter().all(|r| !r.images.is_empty()));
}

#[test]
fn the_same_version_again_changes_nothing() {
    let mut h = Harness::new();
    h.run_to_end();
    let ended = h.status.clone();
    let d = h.decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.status, ended);
}

#[test]
fn a_new_version_after_a_rollback_starts_from_the_blue_that_still_serves() {
    let mut h = Harness::new();
    h.at_step(4);
    h.world.gate = GateVerdict::Fail;
    h.run_to_end();
    assert_eq!(h.status.phase, Phase::Aborted);
    let serving = h.status.blue_version.clone().unwrap();
    h.world.gate = GateVerdict::Pass;
    h.rel.version = "2.14.1".into();
    h.world.version = "2.14.1".into();
    for c in h.world.clusters.values_mut() {
        c.green = None;
    }
    h.pass();
    h.run_to_end();
    let s = &h.status;
    assert_eq!((s.phase, s.revision), (Phase::Completed, 2));
    assert_eq!(s.blue_version.as_deref(), Some(serving.as_str()));
    assert_eq!(s.revisions[0].outcome, Phase::Aborted);
    assert!(s.revisions[0].gates.contains("Fail") || !s.revisions[0].reason.is_empty());
}

#[test]
fn the_serving_version_is_never_taken_for_a_first_install() {
    // A fresh Release for the version that already serves everywhere (green
    // in the slot holding it, nothing in the other): nothing to do.
    let mut h = Harness::with(mk_release(), true);
    let version = h.rel.version.clone();
    for c in h.world.clusters.values_mut() {
        serve_green(c, &version);
    }
    let d = h.pass();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(h.status.phase, Phase::Completed);
    assert!(
        h.status
            .message
            .as_deref()
            .unwrap()
            .contains("already serves")
    );
    // Serving on one cluster only: no lifecycle can start from that.
    let mut h = Harness::with(mk_release(), true);
    let version = h.rel.version.clone();
    serve_green(h.world.clusters.get_mut("prod-a").unwrap(), &version);
    let d = h.pass();
    assert!(d.actions.is_empty());
    assert_eq!(h.status.phase, Phase::Failed);
    assert!(
        h.status
            .message
            .as_deref()
            .unwrap()
            .contains("not on every cluster"),
        "{:?}",
        h.status.message
    );
}

#[test]
fn a_request_left_on_the_release_never_acts_on_a_later_revision() {
    let mut h = Harness::new();
    h.at_step(4);
    let first = h.status.version.clone();
    h.rel.abort = Some(AbortRequest {
        reason: "bad canary".into(),
        by: Some("oncall".into()),
        version: first,
    });
    h.run_to_end();
    assert_eq!(h.status.phase, Phase::Aborted);
    // The abort stays in the spec (kubectl apply keeps fields it did not set):
    // the next version runs its whole lifecycle regardless.
    h.rel.version = "2.14.1".into();
    h.world.version = "2.14.1".into();
    for c in h.world.clusters.values_mut() {
        c.green = None;
    }
    h.pass();
    h.run_to_end();
    assert_eq!(h.status.phase, Phase::Completed, "{:?}", h.status.message);
}

#[test]
fn an_undo_runs_its_shorter_plan_only_for_a_version_that_completed() {
    use crate::spec::release::UndoOf;
    // Revision 1 (2.14.0) completes, revision 2 (2.15.0) is rolled back.
    let mut h = Harness::new();
    h.run_to_end();
    next(&mut h, "2.15.0");
    h.world.gate = GateVerdict::Fail;
    h.run_until(|s| s.phase.is_terminal());
    assert_eq!(h.status.phase, Phase::Aborted);
    h.world.gate = GateVerdict::Pass;
    // Revision 3 (2.16.0) completes and serves.
    next(&mut h, "2.16.0");
    h.run_to_end();
    assert_eq!(h.status.phase, Phase::Completed);
    for (of, refused) in [
        (
            UndoOf {
                revision: 9,
                version: "2.14.0".into(),
            },
            Some("there is no revision 9"),
        ),
        (
            UndoOf {
                revision: 2,
                version: "2.15.0".into(),
            },
            Some("ended Aborted, not Completed"),
        ),
        (
            UndoOf {
                revision: 1,
                version: "2.13.0".into(),
            },
            Some("ran 2.14.0, not 2.13.0"),
        ),
        (
            UndoOf {
                revision: 1,
                version: "2.14.0".into(),
            },
            None,
        ),
    ] {
        let mut h2 = Harness::with(h.rel.clone(), false);
        h2.status = h.status.clone();
        h2.world = h.world.clone();
        h2.now = h.now;
        h2.rel.version = of.version.clone();
        h2.rel.undo_of = Some(of.clone());
        h2.world.next_version(&of.version);
        h2.log.clear();
        h2.pass();
        match refused {
            Some(why) => {
                assert_eq!(h2.status.phase, Phase::Failed, "{of:?}");
                let msg = h2.status.message.clone().unwrap_or_default();
                assert!(msg.contains(why) && msg.contains("spec.undoOf"), "{msg}");
                assert!(h2.log.is_empty(), "{of:?}: nothing written: {:?}", h2.log);
            }
            None => assert_eq!(
                h2.status.phase,
                Phase::Progressing,
                "{:?}",
                h2.status.message
            ),
        }
    }
}
