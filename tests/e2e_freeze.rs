//! Deploy freezes end to end: frozen while a cluster is down, a release in
//! flight holds and resumes, a new release refuses to start and writes
//! nothing, break-glass must name every freeze, and Events record who and why.

mod common;

use std::time::Duration;

use common::{World, finish, tier2_release};
use cutover::spec::status::{HoldReason, Phase, StepKind, TransitionEvent};
use cutover_sim::faults::ApiFault;
use cutover_sim::scenario::UnreachableMode;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};

async fn freeze(w: &World, reason: &str) -> (i32, String, String) {
    finish(
        w.cutover(&["freeze", "--reason", reason, "--ticket", "INC-7"])
            .spawn()
            .unwrap(),
    )
    .await
}

/// The Events about a freeze (they expire after an hour of fleet time, like a real cluster's).
async fn events_about(w: &World, id: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(w.readers["prod-a"].clone(), "default");
    let list = events.list(&ListParams::default()).await.unwrap().items;
    list.into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(id))
        .collect()
}

fn freeze_id(out: &str) -> String {
    out.split_whitespace()
        .find(|w| w.starts_with("freeze-"))
        .expect("a freeze id")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_during_an_outage_holds_a_release_until_it_is_lifted() {
    let w = World::start(None, 120.0, &tier2_release()).await;
    let run = w.spawn_run(&[]);
    w.wait_for("the ramp", |s| {
        s.plan
            .get(s.step as usize)
            .is_some_and(|p| p.kind == StepKind::Ramp)
    })
    .await;
    // prod-b's API server goes down; on call freezes everything anyway.
    let prod_b = &w.sim.cluster("prod-b").unwrap().faults;
    prod_b.activate(9_000, ApiFault::Unreachable(UnreachableMode::Refuse));
    let (code, out, err) = freeze(&w, "checkout errors after the node upgrade").await;
    assert_eq!(code, 0, "lands on the home cluster: {out}\n{err}");
    assert!(
        out.contains("NOT frozen on prod-b") && out.contains("not reached: prod-b"),
        "{out}"
    );
    let id = freeze_id(&out);
    let created = events_about(&w, &id).await;
    let created = created
        .iter()
        .find(|e| e.reason.as_deref() == Some("FreezeCreated"))
        .expect("a FreezeCreated event");
    let message = created.message.clone().unwrap();
    // Who: the user the home cluster says the caller is (a
    // SelfSubjectReview), not what the caller's environment claims.
    assert!(
        message.contains("oncall@example.com") && message.contains("node upgrade"),
        "who and why: {message}"
    );
    assert!(!message.contains("tester"), "{message}");
    assert!(created.event_time.is_some(), "and when");
    prod_b.clear(9_000);
    let held = w
        .wait_for("a freeze hold", |s| {
            s.holds.iter().any(|h| h.reason == HoldReason::Freeze)
        })
        .await;
    assert!(
        held.message
            .unwrap()
            .contains("checkout errors after the node upgrade")
    );
    let step = held.step;
    let weights = held.weights.clone();
    tokio::time::sleep(Duration::from_secs(3)).await; // six minutes of fleet time
    let still = w.status().await;
    assert_eq!(
        (still.step, &still.weights),
        (step, &weights),
        "traffic stays where it is while frozen"
    );
    assert_eq!(still.phase, Phase::Holding);
    // Break-glass in flight naming a freeze that does not exist is refused,
    // naming it, and writes nothing (the running driver keeps its lease).
    let (code, out, err) = finish(
        w.run(&["--override-freeze", "freeze-nope", "--reason", "ship it"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("freeze-nope"), "{err}");
    let spec = w.release().await.unwrap().spec;
    assert!(spec.override_freezes.is_none(), "nothing was written");
    let (code, out, err) = finish(
        w.cutover(&["freeze", "status", "-n", "shop"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&id) && out.contains("release checkout holds"),
        "{out}"
    );
    let (code, out, err) = finish(
        w.cutover(&["unfreeze", &id, "--reason", "fixed"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = finish(run).await;
    assert_eq!(code, 0, "completes once unfrozen: {out}\n{err}");
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Completed);
    let cleared = s
        .history
        .iter()
        .find(|t| t.event == TransitionEvent::HoldCleared && t.step == step)
        .expect("the hold cleared");
    assert!(
        cleared.message.contains("gates run again"),
        "{}",
        cleared.message
    );
    w.assert_all_on_green("after the freeze").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_release_refuses_to_start_during_a_freeze_and_override_must_name_every_freeze() {
    let w = World::start(None, 120.0, &tier2_release()).await;
    let (_, one, _) = freeze(&w, "incident one").await;
    let (_, two, _) = freeze(&w, "incident two").await;
    let (a, b) = (freeze_id(&one), freeze_id(&two));
    w.sim.reset_requests();
    let (code, out, err) = finish(w.spawn_run(&[])).await;
    assert_eq!(code, 4, "blocked by a freeze: {out}\n{err}");
    assert!(
        err.contains("nothing was written")
            && err.contains("incident one")
            && err.contains("incident two"),
        "{err}"
    );
    let writes = w.sim.requests().user_agent("cutover/").writes();
    assert_eq!(writes, 0, "a frozen run writes nothing");
    assert!(w.release().await.is_none());
    // Break-glass naming only one of the two is refused.
    let (code, _, err) =
        finish(w.spawn_run(&["--override-freeze", &a, "--reason", "security fix"])).await;
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&b) && err.contains("must name every active freeze"),
        "{err}"
    );
    assert_eq!(w.sim.requests().user_agent("cutover/").writes(), 0);
    // The pipeline may ship releases but holds no `override` verb on
    // deployfreezes: the home cluster's SelfSubjectAccessReview says no, and
    // nothing is written.
    let both = format!("{a},{b}");
    let (code, _, err) = finish(
        w.cutover_as(
            "pipeline",
            &[
                "run",
                "-f",
                w.release_path.to_str().unwrap(),
                "--override-freeze",
                &both,
                "--reason",
                "security fix",
            ],
        )
        .spawn()
        .unwrap(),
    )
    .await;
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!("you may not override freeze {a}"))
            && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(w.sim.requests().user_agent("cutover/").writes(), 0);
    assert!(w.release().await.is_none());
    // The release manager, naming both, goes on, and the override is on record.
    let (code, out, err) =
        finish(w.spawn_run(&["--override-freeze", &both, "--reason", "security fix"])).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let s = w.status().await;
    let o = s
        .history
        .iter()
        .find(|t| t.event == TransitionEvent::FreezeOverridden)
        .expect("override recorded");
    assert!(
        o.message.contains("release-manager@example.com")
            && o.message.contains("security fix")
            && o.message.contains(&a)
            && o.message.contains(&b),
        "{}",
        o.message
    );
    assert_eq!(s.overridden_freezes.len(), 2);
    // Recorded on the freeze itself (its Event has long expired: the run took hours of fleet time).
    let freezes: Api<cutover::freeze::DeployFreeze> = Api::all(w.readers["prod-a"].clone());
    let history = freezes.get(&a).await.unwrap().status.unwrap().history;
    let o = history
        .iter()
        .find(|h| h.action == "Overridden")
        .expect("the override is on the freeze's record");
    assert!(
        o.by == "release-manager@example.com" && o.message.contains("security fix"),
        "{o:?}"
    );
    // The override was authorized by the cluster before anything was written.
    assert!(
        w.sim
            .requests()
            .filter(|k| k.resource == "selfsubjectaccessreviews")
            .total()
            >= 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reason_freezes_every_cluster_and_its_events_carry_what_fits() {
    let w = World::start(None, 60.0, &tier2_release()).await;
    // Longer than an Event message may be (1 KiB once eventTime is set).
    let reason = format!(
        "payments incident: {}",
        "ledger drift in eu-central ".repeat(80)
    );
    assert!(reason.len() > 2000);
    let (code, out, err) = freeze(&w, &reason).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        !err.contains("not frozen") && !out.contains("could not"),
        "{out}\n{err}"
    );
    let id = freeze_id(&out);
    let freezes: Api<cutover::freeze::DeployFreeze> = Api::all(w.readers["prod-a"].clone());
    let f = freezes.get(&id).await.unwrap();
    assert_eq!(f.spec.reason, reason, "the freeze keeps the whole reason");
    let events = events_about(&w, &id).await;
    assert!(!events.is_empty(), "the freeze was recorded as an Event");
    for e in events {
        let message = e.message.unwrap_or_default();
        assert!(
            message.len() <= 1024 && message.ends_with('…'),
            "{}",
            message.len()
        );
    }
}

/// The bookkeeping around freezes: lifting an id on record nowhere exits 1
/// and says where it looked; a freeze written while a release's clusters were
/// down is on record at home and binds that release once they are back;
/// `--for` counts the fleet's time, which releases judge freezes by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_bookkeeping_unknown_ids_the_home_record_and_fleet_time() {
    // A tier-2 release on staging and prod-b only: home (prod-a) is not its cluster.
    let release = tier2_release().replacen("    - name: prod-a\n      role: production\n", "", 1);
    let w = World::start(None, 120.0, &release).await;
    assert!(w.rel.cluster_names().iter().all(|c| *c != "prod-a"));
    // The home cluster keeps the record of every freeze, as deploy/ sets it up.
    cutover::fleet::bootstrap::install_crds(w.clients.get("prod-a").unwrap())
        .await
        .unwrap();

    let (code, out, err) = finish(
        w.cutover(&["unfreeze", "freeze-nope", "--reason", "tidying"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 1, "nothing was lifted: {out}\n{err}");
    assert!(
        err.contains("no freeze freeze-nope exists: looked in prod-a, prod-b, staging"),
        "{err}"
    );
    assert!(out.contains("no freeze freeze-nope on prod-b"), "{out}");

    // Frozen while both of the release's clusters are down: only home has it.
    for c in ["staging", "prod-b"] {
        let faults = &w.sim.cluster(c).unwrap().faults;
        faults.activate(9_100, ApiFault::Unreachable(UnreachableMode::Refuse));
    }
    let (code, out, err) = freeze(&w, "payments incident").await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("frozen freeze-") && out.contains("on prod-a"),
        "{out}"
    );
    let id = freeze_id(&out);
    for c in ["staging", "prod-b"] {
        w.sim.cluster(c).unwrap().faults.clear(9_100);
    }
    let (code, out, err) = finish(w.run(&[]).spawn().unwrap()).await;
    assert_eq!(code, 4, "the home record binds the release: {out}\n{err}");
    assert!(err.contains(&id) || out.contains(&id), "{out}\n{err}");
    assert!(w.release().await.is_none(), "nothing was written");
    let (code, out, err) = finish(
        w.cutover(&["unfreeze", &id, "--reason", "resolved"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("lifted {id} on prod-a")), "{out}");
    assert!(out.contains(&format!("no freeze {id} on prod-b")), "{out}");
    let (code, out, _) = finish(
        w.cutover(&["unfreeze", &id, "--reason", "again"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        out.contains("was already lifted on prod-a (by incident-commander@example.com"),
        "{out}"
    );

    // Windows judged at a chosen time: a Saturday in Berlin.
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/policies");
    let (code, out, err) = finish(
        w.cutover(&[
            "freeze",
            "status",
            "-n",
            "shop",
            "--policies",
            policies,
            "--at",
            "2026-12-05T11:00:00Z",
        ])
        .spawn()
        .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("weekend") && l.contains("ACTIVE AT 2026-12-05T11:00:00Z")),
        "{out}"
    );
    // Ten minutes of fleet time pass in five seconds at 120x.
    let (code, out, err) = finish(
        w.cutover(&["freeze", "--reason", "short", "--for", "10m"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let short = freeze_id(&out);
    let status = || async {
        finish(
            w.cutover(&["freeze", "status", "-n", "shop"])
                .spawn()
                .unwrap(),
        )
        .await
        .1
    };
    assert!(status().await.contains(&short));
    tokio::time::sleep(Duration::from_secs(7)).await;
    let after = status().await;
    assert!(
        !after.contains(&short),
        "expired on the fleet's clock after 10 minutes of fleet time: {after}"
    );
}
