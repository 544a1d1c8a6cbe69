//! Reliability under faults, end to end through the `cutover` binary on the
//! simulated fleet: another writer storming the Release and the routes with
//! conflicting edits, and the driver killed with SIGKILL at random points
//! over a whole lifecycle (a seeded loop).

mod common;

use std::time::Duration;

use common::{NS, World, completed_steps, finish, tier2_release};
use cutover::fleet::router::http_route_resource;
use cutover::spec::Release;
use cutover::spec::status::{Phase, TransitionEvent};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use rand::{Rng, SeedableRng};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_storms_on_the_release_and_the_routes_lose_nothing() {
    let w = World::start(None, 300.0, &tier2_release()).await;
    let run = w.spawn_run(&[]);
    // Another writer edits the Release and every route's metadata every few
    // milliseconds: each edit bumps the resource version, so cutover's writes
    // keep meeting 409s and failed preconditions.
    let releases: Api<Release> = Api::namespaced(w.readers[&w.fleet.home].clone(), NS);
    let routes: Vec<Api<DynamicObject>> = w
        .rel
        .clusters
        .iter()
        .map(|c| Api::namespaced_with(w.readers[&c.name].clone(), NS, &http_route_resource()))
        .collect();
    let edits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = edits.clone();
    let storm = tokio::spawn(async move {
        loop {
            let tick = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let note = json!({"metadata": {"annotations": {"example.com/other-writer": tick.to_string()}}});
            let _ = releases
                .patch("checkout", &PatchParams::default(), &Patch::Merge(&note))
                .await;
            for r in &routes {
                let _ = r
                    .patch("checkout", &PatchParams::default(), &Patch::Merge(&note))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let (code, out, err) = finish(run).await;
    storm.abort();
    assert_eq!(code, 0, "{out}\n{err}");
    let edits = edits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(edits > 200, "the other writer made {edits} edits");
    let r = w.release().await.unwrap();
    let s = r.status.clone().unwrap();
    assert_eq!(s.phase, Phase::Completed);
    assert_eq!(
        completed_steps(&s),
        (0..s.plan.len() as u32).collect::<Vec<_>>(),
        "every step once, none lost to a conflict"
    );
    // The other writer's fields survive cutover's writes, and cutover's own
    // record on each route is intact.
    assert!(
        r.metadata
            .annotations
            .unwrap_or_default()
            .contains_key("example.com/other-writer")
    );
    for c in &w.rel.clusters {
        let route = w.route(&c.name).await;
        assert!(
            route["metadata"]["annotations"]["example.com/other-writer"].is_string(),
            "{route}"
        );
        assert_eq!(
            route["metadata"]["annotations"]["cutover.dev/green-weight"],
            "green=100%"
        );
    }
    w.assert_all_on_green("after the storm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_a_release_ends_as_if_it_never_was() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(20_261_202);
    let w = World::start(None, 300.0, &tier2_release()).await;
    let mut kills = 0;
    loop {
        let mut child = w.spawn_run(&["--lease-duration", "1s"]);
        let after = Duration::from_millis(rng.random_range(300..1500));
        tokio::select! {
            _ = child.wait() => break,
            _ = tokio::time::sleep(after) => {}
        }
        child.kill().await.unwrap();
        kills += 1;
        if w.status().await.phase.is_terminal() {
            break;
        }
        assert!(kills < 60, "the release never finished");
    }
    // One last run sees the end (or drives what is left).
    let (code, out, err) = finish(w.spawn_run(&["--lease-duration", "1s"])).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(kills >= 3, "killed {kills} times");
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Completed);
    assert_eq!(
        completed_steps(&s),
        (0..s.plan.len() as u32).collect::<Vec<_>>(),
        "each step once, in order, after {kills} kills"
    );
    let starts = s
        .history
        .iter()
        .filter(|t| t.event == TransitionEvent::StepStarted)
        .count();
    assert_eq!(starts, s.plan.len(), "no step started twice");
    assert!(
        !s.history
            .iter()
            .any(|t| t.event == TransitionEvent::AbortStarted),
        "never rolled back"
    );
    w.assert_all_on_green("after the kills").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_down_is_no_promotion_and_rolls_back_as_provider_unreachable() {
    // Nothing listens on port 9: every query fails to connect.
    let base = tier2_release();
    let gates_at = base.find("  gates:\n").unwrap();
    let router_at = base.find("  router:\n").unwrap();
    let release = format!(
        "{}  gates:\n    - name: error-ratio\n      provider:\n        prometheus:\n          address: http://127.0.0.1:9\n          query: sum(rate(http_requests_total[1m]))\n      interval: 30s\n      max: 0.02\n{}",
        &base[..gates_at],
        &base[router_at..]
    );
    let w = World::start(None, 300.0, &release).await;
    let (code, out, err) = finish(w.spawn_run(&[])).await;
    assert_eq!(code, 3, "{out}\n{err}");
    let s = w.status().await;
    let abort = s
        .history
        .iter()
        .find(|t| t.event == TransitionEvent::AbortStarted)
        .expect("a rollback");
    assert!(
        abort.message.contains("provider unreachable"),
        "{}",
        abort.message
    );
    assert!(
        !abort.message.contains("against at most"),
        "not a metric failure: {}",
        abort.message
    );
    // No step past the first gated one: nothing was promoted on a blind gate.
    assert!(
        !s.history
            .iter()
            .any(|t| t.event == TransitionEvent::StepCompleted
                && s.plan[t.step as usize].wait > cutover::spec::Span::ZERO),
        "{:#?}",
        s.history
    );
    w.assert_all_on_blue("after a blind gate").await;
}
