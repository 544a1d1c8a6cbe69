//! API economy: a waiting step reads watches, never polls; writes per step
//! are few and exact.

mod common;

use common::{World, finish, tier2_release};
use cutover::spec::status::{Phase, StepKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_do_not_poll_and_writes_per_step_are_exact() {
    let w = World::start(None, 120.0, &tier2_release()).await;
    w.sim.reset_requests();
    let child = w.spawn_run(&["--lease-duration", "30s"]);
    let soak = w
        // Soaking, with the soak's gates passing: from here only time passes.
        .wait_for("the soak with its gates passing", |s| {
            s.plan
                .get(s.step as usize)
                .is_some_and(|p| p.kind == StepKind::Soak)
                && s.step_ready_at.is_some()
                && !s.gates.is_empty()
                && s.gates
                    .iter()
                    .all(|g| g.verdict == cutover::gates::MetricVerdict::Pass)
        })
        .await;
    let ours = |c: cutover_sim::counters::RequestCounts| c.user_agent("cutover/");
    let at_soak = ours(w.sim.requests());
    // The soak lasts 10 minutes of fleet time (5 s of wall time at 120x); sample inside it.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let later = ours(w.sim.requests());
    assert_eq!(w.status().await.step, soak.step, "still soaking");
    let (code, out, err) = finish(child).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let all = ours(w.sim.requests());
    assert!(
        all.total() > 0,
        "the binary's requests are told apart by its user agent"
    );
    let not_watch_or_lease = |c: &cutover_sim::counters::RequestCounts| {
        c.filter(|k| k.verb != "watch" && k.resource != "leases")
            .total()
    };
    println!(
        "during soak: {:?}",
        later.filter(|k| k.verb != "watch").by_resource()
    );
    assert_eq!(
        not_watch_or_lease(&later),
        not_watch_or_lease(&at_soak),
        "no reads or writes while soaking, apart from watches and the lease"
    );
    let by = |verb: &str, resource: &str| {
        all.filter(|k| k.verb == verb && k.resource == resource)
            .total()
    };
    println!(
        "whole run: {:?}",
        all.filter(|k| k.verb != "watch").by_verb()
    );
    println!(
        "writes by resource: {:?}",
        all.filter(|k| matches!(k.verb.as_str(), "create" | "update" | "patch" | "delete"))
            .by_resource()
    );
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Completed);
    let traffic_steps = s.plan.iter().filter(|p| p.is_traffic()).count() as u64;
    let deploys = s.plan.iter().filter(|p| p.kind == StepKind::Deploy).count() as u64;
    let cleanups = s
        .plan
        .iter()
        .filter(|p| p.kind == StepKind::Cleanup)
        .count() as u64;
    assert_eq!(
        by("patch", "httproutes"),
        traffic_steps,
        "one route write per traffic step"
    );
    assert_eq!(
        by("get", "httproutes"),
        traffic_steps + cleanups,
        "each route write reads the route first, and so does each delete of blue (the guard \
         checks the route as the API server has it)"
    );
    assert_eq!(
        by("patch", "deployments"),
        deploys,
        "one apply of green per cluster"
    );
    assert_eq!(
        by("patch", "poddisruptionbudgets"),
        deploys,
        "one budget per green"
    );
    assert_eq!(
        by("delete", "deployments"),
        cleanups,
        "one delete of blue per cluster"
    );
    assert_eq!(
        by("create", "services") + by("patch", "services") + by("update", "services"),
        0,
        "Services exist already: never rewritten"
    );
    let status_writes = by("update", "releases/status");
    assert!(
        status_writes <= 3 * s.plan.len() as u64,
        "{status_writes} status writes for {} steps",
        s.plan.len()
    );
}
