//! No hold that no person asked for lasts for ever: gates without data roll
//! back at the progress deadline, naming the gate and what was missing, and a
//! missing route is found in preflight, before any traffic step.

mod common;

use common::{World, finish, tier2_release};
use cutover::spec::status::{AbortReason, Phase};
use kube::api::{Api, DeleteParams, DynamicObject};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_without_data_roll_back_at_the_progress_deadline() {
    // Far more traffic than the fleet carries is needed to judge: every
    // measurement of the error ratio is NoData.
    let release = tier2_release().replace("minRequestRate: 1", "minRequestRate: 1000000");
    assert_ne!(
        release,
        tier2_release(),
        "the example has a minimum request rate"
    );
    let w = World::start(None, 600.0, &release).await;
    let (code, out, err) = finish(w.spawn_run(&[])).await;
    assert_eq!(code, 3, "rolled back: {out}\n{err}");
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Aborted);
    let abort = s.abort.expect("an abort record");
    assert_eq!(abort.reason, AbortReason::ProgressDeadline);
    assert!(
        abort.message.contains("made no progress within 10m")
            && abort.message.contains("error-ratio"),
        "{}",
        abort.message
    );
    w.assert_all_on_blue("after the deadline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_that_holds_without_a_verdict_shows_the_hold_in_status_and_kubectl() {
    let release = tier2_release().replace("minRequestRate: 1", "minRequestRate: 1000000");
    let w = World::start(None, 600.0, &release).await;
    // The built-in tiers, with tier-2 holding instead of rolling back.
    let tiers = include_str!("../policies/tiers.yaml");
    let at = tiers.find("  tier-2:").expect("tier-2 in the policy");
    let held = format!(
        "{}{}",
        &tiers[..at],
        tiers[at..].replacen("withoutVerdict: roll-back", "withoutVerdict: hold", 1)
    );
    assert_ne!(held, tiers, "the policy file names tier-2's choice");
    let policies = w.dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("tiers.yaml"), held).unwrap();
    let run = w.spawn_run(&["--policies", policies.to_str().unwrap()]);
    let s = w
        .wait_for("a hold past the deadline", |s| {
            s.holds
                .iter()
                .any(|h| h.message.contains("holds instead of rolling back"))
        })
        .await;
    assert_eq!(s.phase, Phase::Holding);
    assert!(s.abort.is_none());
    let hold = &s.holds[0];
    assert!(
        hold.message.contains("error-ratio") && hold.message.contains("withoutVerdict: hold"),
        "{}",
        hold.message
    );
    let (code, out, err) = finish(
        w.cutover(&["status", "checkout", "-n", common::NS])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("holds instead of rolling back"), "{out}");
    let table = w
        .kubectl(&w.fleet.home)
        .run(&["get", "releases", "-n", common::NS])
        .await;
    assert!(table.contains("Holding"), "{table}");
    drop(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_route_fails_preflight_with_a_clear_error() {
    let w = World::start(None, 600.0, &tier2_release()).await;
    let routes: Api<DynamicObject> = Api::namespaced_with(
        w.clients.get("prod-b").unwrap().client.clone(),
        common::NS,
        &cutover::fleet::router::http_route_resource(),
    );
    routes
        .delete("checkout", &DeleteParams::default())
        .await
        .unwrap();
    w.sim.reset_requests();
    let (code, out, err) = finish(w.spawn_run(&[])).await;
    assert_eq!(code, 1, "{out}\n{err}");
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Failed);
    let msg = s.message.unwrap_or_default();
    assert!(
        msg.contains("no traffic route on prod-b (HTTPRoute shop/checkout)"),
        "{msg}"
    );
    let writes = w
        .sim
        .requests()
        .user_agent("cutover/")
        .filter(|k| k.resource == "deployments" || k.resource == "httproutes")
        .writes();
    assert_eq!(writes, 0, "nothing deployed or routed before the error");
}
