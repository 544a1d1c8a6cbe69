//! Reliability under faults, end to end through the `cutover` binary on the
//! simulated fleet: another writer storming the Release and the routes with
//! conflicting edits, the driver killed with SIGKILL at random points over a
//! whole lifecycle (a seeded loop), Prometheus down, silent or garbled,
//! watches dropped and expired mid-step, and a new version submitted while
//! gates run.

mod common;

use std::time::Duration;

use common::{NS, World, completed_steps, default_fleet_with, finish, tier2_release};
use cutover::fleet::cache::FleetCache;
use cutover::fleet::router::{http_route_resource, reading};
use cutover::spec::Release;
use cutover::spec::status::{HoldReason, Phase, StepKind, TransitionEvent};
use cutover_sim::faults::ApiFault;
use cutover_sim::scenario::UnreachableMode;
use cutover_sim::store::{Target, WriteOptions};
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

/// A Prometheus that misbehaves on 127.0.0.1: answers every request with
/// `answer`, or with nothing at all (the connection held open, never answered).
async fn bad_prometheus(answer: Option<&'static str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                match answer {
                    Some(body) => {
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(reply.as_bytes()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_down_silent_or_garbled_is_no_promotion_and_rolls_back_as_provider_unreachable()
{
    // Down: nothing listens on port 9, every query fails to connect. Silent:
    // every query times out (three tries of 1 s + 2 s each, so a limit of one
    // error in a row is enough to show it; the fleet runs slower so the wait
    // is a few fleet minutes). Garbled: a 200 whose body is not the API's.
    let cases = [
        (
            "down",
            "http://127.0.0.1:9".to_string(),
            300.0,
            4,
            "(Connect)",
        ),
        (
            "silent",
            bad_prometheus(None).await,
            30.0,
            1,
            "no answer within 3s",
        ),
        (
            "garbled",
            bad_prometheus(Some("<html><body>502 Bad Gateway</body></html>")).await,
            300.0,
            4,
            "unreadable response: HTTP 200",
        ),
    ];
    for (case, address, scale, errors, why) in cases {
        let base = tier2_release();
        let gates_at = base.find("  gates:\n").unwrap();
        let router_at = base.find("  router:\n").unwrap();
        let release = format!(
            "{}  gates:\n    - name: error-ratio\n      provider:\n        prometheus:\n          address: {address}\n          query: sum(rate(http_requests_total[1m]))\n          timeout: 1s\n      interval: 30s\n      max: 0.02\n      consecutiveErrorLimit: {errors}\n{}",
            &base[..gates_at],
            &base[router_at..]
        );
        let w = World::start(None, scale, &release).await;
        let (code, out, err) = finish(w.spawn_run(&[])).await;
        assert_eq!(code, 3, "{case}: {out}\n{err}");
        let s = w.status().await;
        let abort = s
            .history
            .iter()
            .find(|t| t.event == TransitionEvent::AbortStarted)
            .expect("a rollback");
        assert!(
            abort.message.contains("provider unreachable")
                && abort
                    .message
                    .contains(&format!("errors in a row (limit {errors})"))
                && abort.message.contains(why)
                && abort.message.matches(&address).count() == 1,
            "{case}: {}",
            abort.message
        );
        assert!(
            !abort.message.contains("against at most"),
            "{case}: not a metric failure: {}",
            abort.message
        );
        // No step past the first gated one: nothing was promoted on a blind gate.
        assert!(
            !s.history
                .iter()
                .any(|t| t.event == TransitionEvent::StepCompleted
                    && s.plan[t.step as usize].wait > cutover::spec::Span::ZERO),
            "{case}: {:#?}",
            s.history
        );
        w.assert_all_on_blue(case).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_submitted_while_gates_run_starts_over_and_is_never_promoted_unvalidated() {
    let w = World::start(None, 300.0, &tier2_release()).await;
    let first = w.spawn_run(&[]);
    w.wait_for("the ramp on prod-a with its gates running", |s| {
        s.plan
            .get(s.step as usize)
            .is_some_and(|p| p.kind == StepKind::Ramp)
            && s.step_ready_at.is_some()
            && !s.gates.is_empty()
    })
    .await;
    // Without --supersede the next version is refused while one is in flight.
    let (code, _, err) = finish(w.spawn_run(&["--version", "2.15.0", "--detach"])).await;
    assert_eq!(code, 1, "{err}");
    // A pipeline submits the next version, saying it replaces the one in flight.
    let (code, out, err) =
        finish(w.spawn_run(&["--version", "2.15.0", "--supersede", "--detach"])).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = finish(first).await;
    assert_eq!(code, 0, "the new version completes: {out}\n{err}");
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Completed);
    assert_eq!(s.version.as_deref(), Some("2.15.0"));
    let at = |event: TransitionEvent, text: &str| {
        s.history
            .iter()
            .position(|t| t.event == event && t.message.contains(text))
            .unwrap_or_else(|| panic!("{event:?} {text:?} in {:#?}", s.history))
    };
    let withdrawn = at(
        TransitionEvent::AbortStarted,
        "2.15.0 was submitted while 2.14.0",
    );
    let restored = at(TransitionEvent::TrafficRestored, "");
    let over = at(TransitionEvent::Superseded, "2.14.0 withdrawn");
    let started = at(TransitionEvent::Started, "2.15.0 replacing 2.13.0");
    assert!(withdrawn < restored && restored < over && over < started);
    let after: Vec<u32> = s.history[over..]
        .iter()
        .filter(|t| t.event == TransitionEvent::StepCompleted)
        .map(|t| t.step)
        .collect();
    assert_eq!(
        after,
        (0..s.plan.len() as u32).collect::<Vec<_>>(),
        "2.15.0 went through every step, its own gates included"
    );
    // Between the new version arriving and it being deployed, the old one's
    // traffic only went back to blue and its pods only went down.
    let lines: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let from = lines
        .iter()
        .position(|l| l.to_string().contains("was submitted while"))
        .expect("the withdrawal is reported");
    let to = lines[from..]
        .iter()
        .position(|l| l["event"] == "action" && l["action"]["action"] == "deployGreen")
        .expect("2.15.0 deployed")
        + from;
    let between: Vec<&serde_json::Value> = lines[from..to]
        .iter()
        .filter(|l| l["event"] == "action")
        .map(|l| &l["action"])
        .collect();
    assert!(!between.is_empty());
    for a in &between {
        let back = a["action"] == "setWeight" && a["green"] == "0%";
        assert!(back || a["action"] == "scaleDownGreen", "{between:?}");
    }
    for c in &w.rel.clusters {
        let green = w.deployment(&c.name, "checkout-green").await.unwrap();
        assert_eq!(
            green.metadata.labels.unwrap()["cutover.dev/version"],
            "2.15.0",
            "{}",
            c.name
        );
    }
    w.assert_all_on_green("after 2.15.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_dropped_and_expired_mid_step_relist_and_write_nothing_twice() {
    // prod-a closes every connection for a while as its ramp begins, and
    // comes back restarted with its watch history gone: cutover's watches
    // resume from before the restart (410 Expired) and must list again.
    let scenario = default_fleet_with(
        r#"events:
  - name: prod-a drops every connection as its ramp begins, then restarts
    whenReleaseStep: ramp
    for: 1m
    apiUnreachable: {cluster: prod-a, mode: close, restarts: true}
"#,
    );
    let w = World::start(Some(&scenario), 120.0, &tier2_release()).await;
    w.sim.reset_requests();
    let (code, out, err) = finish(w.spawn_run(&["--lease-duration", "30s"])).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Completed);
    assert_eq!(
        completed_steps(&s),
        (0..s.plan.len() as u32).collect::<Vec<_>>()
    );
    let counter = &w.sim.cluster("prod-a").unwrap().counter;
    let prod_a = counter.snapshot().user_agent("cutover/");
    let lists = prod_a.filter(|k| k.verb == "list").by_resource();
    println!("prod-a lists: {lists:?}");
    for watched in [
        "deployfreezes",
        "deployments",
        "httproutes",
        "pods",
        "releases",
    ] {
        assert!(lists.contains_key(watched), "{watched} listed: {lists:?}");
    }
    // Every watch came back to a history that begins after the restart and
    // listed once more, no relist storm: told that its history was gone
    // (410), or first finding the API server answering again (a resumed
    // watch is silent until something changes, so it lists rather than
    // trust what it held from before). (The run also lists the freezes once
    // before it starts, to refuse if frozen.)
    for (resource, n) in lists {
        let expired = counter.expired(&resource, "cutover/");
        let before_start = u64::from(resource == "deployfreezes");
        assert_eq!(
            n,
            before_start + 1 + expired.max(1),
            "{resource}: one list, then one after the restart (one per expired watch): {expired} expired"
        );
    }
    let all = w.sim.requests().user_agent("cutover/");
    let by = |verb: &str, resource: &str| {
        all.filter(|k| k.verb == verb && k.resource == resource)
            .total()
    };
    let traffic_steps = s.plan.iter().filter(|p| p.is_traffic()).count() as u64;
    let deploys = s.plan.iter().filter(|p| p.kind == StepKind::Deploy).count() as u64;
    assert_eq!(
        by("patch", "httproutes"),
        traffic_steps,
        "no route written twice"
    );
    assert_eq!(
        by("patch", "deployments"),
        deploys,
        "no green applied twice"
    );
    assert_eq!(
        by("delete", "deployments"),
        deploys,
        "no blue deleted twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_out_past_the_deadline_after_cluster_a_is_done_holds_and_resumes() {
    // prod-b cannot be reached from the moment its deploy begins, for longer
    // than tier-2's 10 minute progress deadline.
    let scenario = default_fleet_with(
        r#"events:
  - name: prod-b out as its deploy begins
    whenReleaseStep: deploy green on prod-b
    for: 20m
    apiUnreachable: {cluster: prod-b, mode: refuse}
"#,
    );
    let w = World::start(Some(&scenario), 120.0, &tier2_release()).await;
    let run = w.spawn_run(&[]);
    // Its freezes' watch may fail before its workloads' watches do, so the
    // first hold can be "cannot prove unfrozen"; the outage hold follows.
    let held = w
        .wait_for("prod-b held as unreachable", |s| {
            s.phase == Phase::Holding
                && s.holds.iter().any(|h| {
                    h.reason == HoldReason::ClusterUnreachable
                        && h.cluster.as_deref() == Some("prod-b")
                })
        })
        .await;
    assert!(
        held.message
            .as_deref()
            .unwrap_or_default()
            .contains("prod-b is unreachable"),
        "{:?}",
        held.message
    );
    for h in held.holds.iter().filter(|h| h.reason == HoldReason::Freeze) {
        assert_eq!(h.cluster.as_deref(), Some("prod-b"), "{h:?}");
        assert!(
            h.message.contains("cannot read deploy freezes on prod-b ("),
            "{h:?}"
        );
    }
    // Held: blue everywhere it was, nothing cleaned up, prod-a still on green.
    for c in ["staging", "prod-a"] {
        assert!(w.deployment(c, "checkout-blue").await.is_some(), "{c}");
    }
    let (code, out, err) = finish(run).await;
    assert_eq!(code, 0, "resumes and completes: {out}\n{err}");
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Completed);
    assert!(s.abort.is_none());
    assert_eq!(
        completed_steps(&s),
        (0..s.plan.len() as u32).collect::<Vec<_>>()
    );
    // The step outlived the progress deadline (it cannot be ready before
    // prod-b answers again) and was held, not rolled back.
    let step = s
        .plan
        .iter()
        .position(|p| p.to_string() == "deploy green on prod-b")
        .expect("the step is planned") as u32;
    let at = |event: TransitionEvent| {
        s.history
            .iter()
            .find(|t| t.step == step && t.event == event)
            .unwrap_or_else(|| panic!("no {event:?} for the step: {:#?}", s.history))
            .at
    };
    let (started, ready) = (
        at(TransitionEvent::StepStarted),
        at(TransitionEvent::StepReady),
    );
    assert!(
        ready.duration_since(started) > jiff::SignedDuration::from_mins(10),
        "held past the progress deadline without rolling back: {:#?}",
        s.history
    );
    let held_in_step = |event: TransitionEvent, text: &str| {
        s.history
            .iter()
            .any(|t| t.step == step && t.event == event && t.message.contains(text))
    };
    assert!(
        held_in_step(TransitionEvent::HoldStarted, "prod-b")
            && held_in_step(TransitionEvent::HoldCleared, "resumed"),
        "{:#?}",
        s.history
    );
    w.assert_all_on_green("after prod-b came back").await;
}

/// Polls `done` every 5 ms until it holds; fails naming `what` after `secs`.
async fn until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_back_after_an_outage_counts_as_healthy_only_once_it_shows_what_changed_meanwhile()
{
    // A cluster that cutover cannot reach still changes: its people and
    // controllers go on, and a write of cutover's own may land as the
    // connection is cut, its answer and its watch event lost. Here staging's
    // API server is cut off, its route changes meanwhile, and it comes back
    // the way a restarted kube-apiserver does: answering `/version` (which
    // is how a watch that resumes in silence is known to be back) while its
    // watch caches fill and it rejects watches and cached lists (429). The
    // engine trusts a cluster's view while its watches are healthy (a route
    // it reads as all on blue lets an abort go on to replace green), so
    // healthy must mean current: until a watch has listed or resumed, its
    // cluster stays unreachable.
    let w = World::start(None, 100.0, &tier2_release()).await;
    let cache = FleetCache::start(&w.clients, &w.rel);
    let staging = &cache.clusters["staging"];
    until("staging never listed", 30, || staging.reachable().is_ok()).await;
    let sim = w.sim.cluster("staging").unwrap();
    sim.faults
        .activate(1, ApiFault::Unreachable(UnreachableMode::Refuse));
    until("the outage went unnoticed", 30, || {
        staging.reachable().is_err()
    })
    .await;
    let kind = sim
        .store
        .kind_of("gateway.networking.k8s.io", "httproutes")
        .unwrap();
    let mut route = (*sim.store.get(&kind, NS, "checkout").unwrap()).clone();
    for rule in route["spec"]["rules"].as_array_mut().unwrap() {
        for b in rule["backendRefs"].as_array_mut().unwrap() {
            let green = b["name"].as_str().unwrap().ends_with("-green");
            b["weight"] = json!(if green { 30 } else { 70 });
        }
    }
    let changed = sim
        .store
        .update(
            &kind,
            NS,
            "checkout",
            route,
            Target::Main,
            &WriteOptions::default(),
        )
        .unwrap();
    let now = Some(reading(&changed));
    assert_ne!(staging.route(), now, "the change is unseen");
    sim.faults.activate(2, ApiFault::CacheInitializing);
    sim.faults.clear(1);
    // Probed every second, the API server answers throughout.
    let filling = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < filling {
        if staging.reachable().is_ok() {
            assert_eq!(
                staging.route(),
                now,
                "staging counted as reachable while its route was as of before the outage"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sim.faults.clear(2);
    until("staging never came back", 60, || {
        staging.reachable().is_ok()
    })
    .await;
    assert_eq!(staging.route(), now, "back, and current");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_over_whose_answer_a_crash_lost_is_not_withdrawn_on_what_the_watch_held_before() {
    // staging's API server goes down the moment the route write of its cut
    // over commits: the answer and the watch event are lost, and staging's
    // users go to green. It comes back as a restarted API server does,
    // answering while its watch caches fill, and a superseding version
    // arrives meanwhile. The withdrawal must see staging's route as it is
    // (all on green) before green goes down: no request may meet no pod.
    let mut w = World::start(None, 100.0, &tier2_release()).await;
    until("blue never served", 60, || {
        w.sim.unserved_rps("checkout") == 0.0
    })
    .await;
    let audit = w.sim.audit();
    let run = w.spawn_run(&[]);
    let staging = w.sim.cluster("staging").unwrap();
    let kind = staging.store.kind_of("apps", "deployments").unwrap();
    let green_applied = || {
        staging
            .store
            .get(&kind, NS, "checkout-green")
            .is_ok_and(|d| d["metadata"]["labels"]["cutover.dev/version"] == "2.14.0")
    };
    until("green never applied on staging", 60, green_applied).await;
    // Green's applies are done; staging's next write is the cut over's.
    staging.faults.crash_after_next_write(1);
    let down = staging.faults.unreachable();
    until("no write came to staging", 60, || down.borrow().is_some()).await;
    let kind = staging
        .store
        .kind_of("gateway.networking.k8s.io", "httproutes")
        .unwrap();
    let route = staging.store.get(&kind, NS, "checkout").unwrap();
    assert!(
        route.to_string().contains("checkout-green"),
        "the write that committed was the cut over's: {route}"
    );
    staging.faults.activate(2, ApiFault::CacheInitializing);
    staging.faults.clear(1);
    let (code, out, err) =
        finish(w.spawn_run(&["--version", "2.15.0", "--supersede", "--detach"])).await;
    assert_eq!(code, 0, "{out}\n{err}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    staging.faults.clear(2);
    let (code, out, err) = finish(run).await;
    assert_eq!(code, 0, "the new version completes: {out}\n{err}");
    let s = w.status().await;
    assert_eq!(
        (s.phase, s.version.as_deref()),
        (Phase::Completed, Some("2.15.0"))
    );
    assert_eq!(audit.unserved(), vec![], "every request found a Ready pod");
    // Staging counted as unreachable until its watches were current again:
    // nothing was decided from what they held before the crash, so the
    // applier's own check of the route never had to refuse.
    let refused: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("\"event\":\"action\"") && l.contains("refused as unsafe"))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
    for d in audit.deletions() {
        assert!(
            d.resource == "deployments" && d.managed && !d.serving,
            "{d:?}"
        );
    }
}
