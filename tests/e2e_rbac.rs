//! The people roles `deploy/` ships, both ways, on the simulated fleet that
//! authorizes every request with them: an incident and two releases, each
//! command run by the person whose job it is. Nothing they need is refused,
//! a person is refused what their roles do not grant (with the API server's
//! 403), and every rule of every people role allowed something.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{NS, World, finish, tier2_release};
use cutover::spec::status::Phase;
use cutover_sim::auth::bootstrap::PEOPLE;

async fn as_person(w: &World, who: &str, args: &[&str]) -> (i32, String, String) {
    finish(w.cutover_as(who, args).spawn().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_do_their_jobs_under_the_shipped_roles_and_each_rule_is_needed() {
    let w = World::start(None, 150.0, &tier2_release()).await;
    let release = w.release_path.to_str().unwrap();

    // On call freezes the fleet during an incident and checks what it holds.
    let (code, out, err) = as_person(&w, "oncall", &["freeze", "--reason", "incident"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let id = out
        .split_whitespace()
        .find(|w| w.starts_with("freeze-"))
        .expect("a freeze id")
        .to_string();
    let (code, out, err) = as_person(&w, "oncall", &["freeze", "status", "-n", NS]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&id), "{out}");

    // A viewer may read, not freeze: the home cluster's 403 is what they see.
    let (code, out, err) = as_person(&w, "viewer", &["freeze", "--reason", "mine"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("deployfreezes.cutover.dev is forbidden")
            && err.contains(
                "User \"developer@example.com\" cannot create resource \"deployfreezes\""
            ),
        "{err}"
    );

    // The release manager breaks the glass for a security fix, which runs
    // to the end.
    let (code, out, err) = as_person(
        &w,
        "release-manager",
        &[
            "run",
            "-f",
            release,
            "--override-freeze",
            &id,
            "--reason",
            "security fix",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");

    // Anyone may look at it; `kubectl get releases` lists them.
    for args in [
        &["status", "checkout", "-n", NS][..],
        &["history", "checkout", "-n", NS][..],
    ] {
        let (code, out, err) = as_person(&w, "viewer", args).await;
        assert_eq!(code, 0, "{args:?}: {out}\n{err}");
    }
    let listed = w
        .kubectl_as("viewer", &w.fleet.home)
        .run(&["get", "releases", "-n", NS])
        .await;
    assert!(listed.contains("checkout"), "{listed}");

    // The incident is over.
    let (code, out, err) = as_person(
        &w,
        "incident-commander",
        &["unfreeze", &id, "--reason", "resolved"],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");

    // The pipeline ships the next version; it is paused (the driving run
    // stops, exit 6), resumed and driven on, then aborted mid-way.
    let ship = || {
        w.cutover_as("pipeline", &["run", "-f", release, "--version", "2.15.0"])
            .spawn()
            .unwrap()
    };
    let run = ship();
    w.wait_for("2.15.0 in flight", |s| {
        s.version.as_deref() == Some("2.15.0") && s.step >= 2
    })
    .await;
    let (code, out, err) = as_person(&w, "pipeline", &["pause", "checkout", "-n", NS]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = finish(run).await;
    assert_eq!(code, 6, "paused: {out}\n{err}");
    // Nobody drives it now, and `status` says so.
    let (_, out, err) = as_person(&w, "viewer", &["status", "checkout", "-n", NS]).await;
    assert!(out.contains("NOT driven"), "{out}\n{err}");
    let (code, out, err) = as_person(&w, "pipeline", &["resume", "checkout", "-n", NS]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let run = ship();
    w.wait_for("2.15.0 driven again", |s| {
        s.phase == Phase::Progressing && s.step >= 3
    })
    .await;
    let (_, out, err) = as_person(&w, "viewer", &["status", "checkout", "-n", NS]).await;
    assert!(out.contains("driven by "), "{out}\n{err}");
    // A viewer follows it to the end.
    let follow = w
        .cutover_as("viewer", &["status", "checkout", "-n", NS, "--watch"])
        .spawn()
        .unwrap();
    let (code, out, err) = as_person(
        &w,
        "pipeline",
        &["abort", "checkout", "-n", NS, "--reason", "looks wrong"],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = finish(run).await;
    assert_eq!(code, 3, "rolled back: {out}\n{err}");
    let (code, out, err) = finish(follow).await;
    assert_eq!(code, 3, "the watch ends with the release: {out}\n{err}");
    let (code, out, err) = as_person(&w, "viewer", &["freeze", "status", "-n", NS]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.status().await.phase, Phase::Aborted);

    // What each person was allowed and refused, over the whole fleet.
    let mut used: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut refused = Vec::new();
    for (cluster, d) in w.sim.authorizations() {
        if d.allowed {
            used.entry(d.user.clone())
                .or_default()
                .insert((d.verb.clone(), d.resource.clone()));
        } else if d.user != "developer@example.com" {
            refused.push((cluster, d));
        }
    }
    assert!(refused.is_empty(), "refused: {refused:?}");
    // Each rule of each people role is needed: some request of a person
    // bound to it was allowed by that rule and by no other role they hold,
    // so removing the rule would refuse it and fail this test.
    let grants_of =
        |role: &str| common::grants(&["common/people.yaml", "common/member-role.yaml"], &[role]);
    let mut needed: BTreeSet<(String, String, String)> = BTreeSet::new();
    for person in PEOPLE {
        let held: Vec<(&str, BTreeSet<(String, String)>)> = person
            .everywhere
            .iter()
            .chain(person.at_home)
            .map(|r| (*r, grants_of(r)))
            .collect();
        for pair in used.get(person.user).into_iter().flatten() {
            let granting: Vec<&str> = held
                .iter()
                .filter(|(_, g)| g.contains(pair))
                .map(|(r, _)| *r)
                .collect();
            if let [only] = granting[..] {
                needed.insert((only.to_string(), pair.0.clone(), pair.1.clone()));
            }
        }
    }
    for role in [
        "cutover-view",
        "cutover-release",
        "cutover-freeze",
        "cutover-unfreeze",
        "cutover-freeze-override",
    ] {
        let unneeded: Vec<_> = grants_of(role)
            .into_iter()
            .filter(|(v, r)| !needed.contains(&(role.to_string(), v.clone(), r.clone())))
            .collect();
        assert!(unneeded.is_empty(), "{role}: no request needs {unneeded:?}");
    }
}
