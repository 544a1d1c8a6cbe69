//! Release after release, end to end through the binary: one Release carries
//! version after version, each through its own lifecycle; `history` lists
//! them and `undo` brings an earlier one back through its gates; a stale
//! file never replaces what is in flight.

mod common;

use common::{BLUE, World, finish, tier2_release};
use cutover::fleet::workload::Colour;
use cutover::spec::Percent;
use cutover::spec::status::{Phase, StepKind};

/// Every cluster serves `version` alone: the slot running it takes all the
/// traffic and the other slot's Deployment is gone.
async fn serves_only(w: &World, version: &str) {
    for c in &w.rel.clusters {
        let mut running = None;
        for colour in [Colour::Blue, Colour::Green] {
            let name = format!("checkout-{colour}");
            if let Some(d) = w.deployment(&c.name, &name).await {
                let v = d.metadata.labels.unwrap()["cutover.dev/version"].clone();
                assert_eq!(v, version, "{}: {name} runs {v}, not {version}", c.name);
                running = Some(colour);
            }
        }
        let colour = running.unwrap_or_else(|| panic!("{}: nothing runs {version}", c.name));
        assert_eq!(
            w.green_share(&c.name, colour).await,
            Percent::HUNDRED,
            "{}: {version} takes all the traffic",
            c.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_versions_in_a_row_each_run_their_lifecycle_and_undo_brings_one_back() {
    let w = World::start(None, 1000.0, &tier2_release()).await;
    serves_only(&w, BLUE).await;
    let (code, out, err) = finish(w.spawn_run(&[])).await;
    assert_eq!(code, 0, "{out}\n{err}");
    serves_only(&w, "2.14.0").await;

    // The next version: its own lifecycle, 2.14.0 as its blue.
    let (code, out, err) = finish(w.spawn_run(&["--version", "2.15.0"])).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.lines().next().unwrap().contains("\"Pending\""),
        "the new version is submitted as a new revision, not as the old one's state: {out}"
    );
    serves_only(&w, "2.15.0").await;
    let s = w.status().await;
    assert_eq!(
        (
            s.phase,
            s.revision,
            s.version.as_deref(),
            s.blue_version.as_deref()
        ),
        (Phase::Completed, 2, Some("2.15.0"), Some("2.14.0"))
    );

    // The same version again deploys nothing.
    w.sim.reset_requests();
    let (code, out, err) = finish(w.spawn_run(&["--version", "2.15.0"])).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let writes = w.sim.requests().user_agent("cutover/");
    assert_eq!(
        writes.filter(|k| k.resource == "deployments").writes(),
        0,
        "nothing re-deploys what already serves"
    );

    // history lists both revisions.
    let (code, out, err) = finish(
        w.cutover(&["history", "checkout", "-n", common::NS, "-o", "json"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let h: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(h["revisions"][0]["revision"], 1);
    assert_eq!(h["revisions"][0]["version"], "2.14.0");
    assert_eq!(h["revisions"][0]["outcome"], "Completed");
    assert_eq!(h["current"]["revision"], 2);
    assert_eq!(h["current"]["version"], "2.15.0");
    let (code, text, _) = finish(
        w.cutover(&["history", "checkout", "-n", common::NS])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        text.lines().nth(1).unwrap().starts_with("1 ") && text.contains("(current)"),
        "{text}"
    );

    // A stale file with an earlier revision's version is refused; undo is the way.
    let (code, _, err) = finish(w.spawn_run(&["--version", "2.14.0"])).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cutover undo checkout --to-revision 1"),
        "{err}"
    );

    // undo: revision 1's version comes back as revision 3, through its gates.
    let (code, out, err) = finish(
        w.cutover(&["undo", "checkout", "-n", common::NS, "--to-revision", "1"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("revision 1 (2.14.0) comes back as revision 3"),
        "{out}"
    );
    serves_only(&w, "2.14.0").await;
    let s = w.status().await;
    assert_eq!((s.revision, s.version.as_deref()), (3, Some("2.14.0")));
    assert_eq!(s.blue_version.as_deref(), Some("2.15.0"));
    assert!(
        s.plan.iter().any(|p| p.is_traffic()) && !s.gates.is_empty(),
        "the undo ran the lifecycle with its gates"
    );
    let versions: Vec<_> = s.revisions.iter().map(|r| r.version.as_str()).collect();
    assert_eq!(versions, ["2.14.0", "2.15.0"]);
    // tier-2's policy gives an undo shorter timings: its soak and bake, not the tier's defaults.
    let wait = |kind: StepKind| {
        s.plan
            .iter()
            .find(|p| p.kind == kind)
            .map(|p| p.wait.to_string())
            .unwrap()
    };
    assert_eq!(
        (wait(StepKind::Soak), wait(StepKind::Bake)),
        ("5m".to_string(), "10m".to_string())
    );

    // The next version after the undo runs the tier's full plan again.
    let (code, out, err) = finish(w.spawn_run(&["--version", "2.16.0"])).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let s = w.status().await;
    assert_eq!(s.version.as_deref(), Some("2.16.0"));
    let soak = s.plan.iter().find(|p| p.kind == StepKind::Soak).unwrap();
    assert_eq!(soak.wait.to_string(), "10m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_input_never_replaces_the_release_in_flight() {
    let w = World::start(None, 100.0, &tier2_release()).await;
    let mut child = w.spawn_run(&[]);
    w.wait_for("the canary", |s| {
        s.phase == Phase::Progressing && s.weights.values().any(|p| *p > Percent::ZERO)
    })
    .await;
    child.kill().await.unwrap();
    let in_flight = w.status().await;

    // The file as it was before this release (the serving version): refused.
    let stale = tier2_release().replace("version: 2.14.0", &format!("version: {BLUE}"));
    let stale_path = w.dir.path().join("stale.yaml");
    std::fs::write(&stale_path, stale).unwrap();
    w.sim.reset_requests();
    let (code, _, err) = finish(
        w.cutover(&["run", "-f", stale_path.to_str().unwrap()])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("2.14.0 of checkout is in flight") && err.contains("stale file"),
        "{err}"
    );
    // Another version without --supersede: refused, with how to replace.
    let (code, _, err) = finish(w.spawn_run(&["--version", "2.16.0"])).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--version 2.16.0 --supersede"), "{err}");
    assert_eq!(
        w.sim.requests().user_agent("cutover/").writes(),
        0,
        "a refused command writes nothing"
    );
    let now = w.status().await;
    assert_eq!(now.version, in_flight.version);
    assert_eq!(w.release().await.unwrap().spec.version, "2.14.0");

    // The file of the version in flight resumes it to the end.
    let (code, out, err) = finish(w.spawn_run(&[])).await;
    assert_eq!(code, 0, "{out}\n{err}");
    serves_only(&w, "2.14.0").await;
}
