//! The incident library: every scenario of `examples/scenarios` rehearsed
//! the way `cutover demo --scenario NAME` runs it, with its outcome asserted
//! (exit code, final traffic per cluster, what was and was not deleted, the
//! transition history) and its timing bounds checked in fleet time.

mod common;

use cutover::cli::Exit;
use cutover::cli::demo::{Rehearsed, load_scenario, rehearse};
use cutover::fleet::router::{http_route_resource, route_view};
use cutover::fleet::workload::Colour;
use cutover::spec::status::{StepKind, Transition, TransitionEvent};
use cutover::spec::{Percent, ReleaseStatus};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject};

const NS: &str = "shop";

/// Rehearses scenario `name`, and checks its timeline picture reads: drawn
/// by resvg, no two texts overlap. With `CUTOVER_PICTURES=DIR` the PNG is
/// written to `DIR/NAME.png` (how the pictures in `docs/` are made).
async fn run(name: &str, scale: f64) -> Rehearsed {
    let scenario = load_scenario(name).unwrap();
    let r = rehearse(&scenario, scale, None, |_, _| {}).await.unwrap();
    if let Some(s) = &r.status {
        let png = common::picture::render_checked(&cutover::chart::timeline_svg("checkout", s));
        if let Ok(dir) = std::env::var("CUTOVER_PICTURES") {
            std::fs::write(format!("{dir}/{name}.png"), png).unwrap();
        }
    }
    r
}

fn status(r: &Rehearsed) -> &ReleaseStatus {
    r.status.as_ref().expect("the release has a status")
}

async fn client(r: &Rehearsed, cluster: &str) -> kube::Client {
    common::sim_client(&r.sim, cluster).await
}

async fn green_share(r: &Rehearsed, cluster: &str) -> Percent {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client(r, cluster).await, NS, &http_route_resource());
    let route = serde_json::to_value(api.get("checkout").await.unwrap()).unwrap();
    route_view(&route, "checkout", Colour::Green).green
}

async fn deployment(r: &Rehearsed, cluster: &str, name: &str) -> Option<Deployment> {
    Api::<Deployment>::namespaced(client(r, cluster).await, NS)
        .get_opt(name)
        .await
        .unwrap()
}

const CLUSTERS: [&str; 3] = ["staging", "prod-a", "prod-b"];

/// Every route on blue, blue still running at full size, nothing cleaned up.
async fn assert_rolled_back_whole(r: &Rehearsed) {
    let s = status(r);
    for c in CLUSTERS {
        assert_eq!(green_share(r, c).await, Percent::ZERO, "{c} back on blue");
        let blue = deployment(r, c, "checkout-blue")
            .await
            .unwrap_or_else(|| panic!("blue kept on {c}"));
        let want = r
            .release
            .as_ref()
            .unwrap()
            .cluster(c)
            .map(|t| t.replicas as i32);
        assert_eq!(
            blue.spec.unwrap().replicas,
            want,
            "blue at full size on {c}"
        );
    }
    assert!(
        !started_kinds(s).contains(&StepKind::Cleanup),
        "nothing cleaned up: {:#?}",
        s.history
    );
}

async fn assert_all_on_green(r: &Rehearsed) {
    for c in CLUSTERS {
        assert_eq!(green_share(r, c).await, Percent::HUNDRED, "{c} on green");
        assert!(
            deployment(r, c, "checkout-blue").await.is_none(),
            "blue gone on {c}"
        );
    }
}

fn started_kinds(s: &ReleaseStatus) -> Vec<StepKind> {
    s.history
        .iter()
        .filter(|t| t.event == TransitionEvent::StepStarted)
        .filter_map(|t| s.plan.get(t.step as usize).map(|p| p.kind))
        .collect()
}

fn first(s: &ReleaseStatus, event: TransitionEvent) -> &Transition {
    s.history
        .iter()
        .find(|t| t.event == event)
        .unwrap_or_else(|| panic!("a {event:?} in {:#?}", s.history))
}

/// When the step named `name` started.
fn step_started(s: &ReleaseStatus, name: &str) -> Timestamp {
    let index = s
        .plan
        .iter()
        .position(|p| p.to_string() == name)
        .unwrap_or_else(|| panic!("no step {name:?} in the plan"));
    s.history
        .iter()
        .find(|t| t.event == TransitionEvent::StepStarted && t.step == index as u32)
        .unwrap_or_else(|| panic!("step {name:?} never started"))
        .at
}

/// Every step completed exactly once, in order.
fn assert_each_step_once(s: &ReleaseStatus) {
    assert_eq!(
        common::completed_steps(s),
        (0..s.plan.len() as u32).collect::<Vec<_>>(),
        "{:#?}",
        s.history
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_cluster_tier1_is_refused_before_any_write() {
    let r = run("single-cluster-tier1", 600.0).await;
    assert_eq!(r.exit, Exit::Policy);
    let why = r.refusal.as_deref().unwrap();
    for needle in ["min-clusters", "tier-1 requires 2", "spec.clusters"] {
        assert!(why.contains(needle), "{needle} in {why}");
    }
    assert!(r.status.is_none());
    assert_eq!(r.sim.requests().user_agent("cutover/").total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_completes_everywhere() {
    let r = run("healthy", 1000.0).await;
    assert_eq!(r.exit, Exit::Ok, "{:?}", r.outcome);
    assert_each_step_once(status(&r));
    assert_all_on_green(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_canary_rolls_back_within_one_gate_interval() {
    // One wall second is twenty fleet seconds here, so the bound is not noise.
    let r = run("bad-canary", 20.0).await;
    assert_eq!(r.exit, Exit::RolledBack, "{:?}", r.outcome);
    let s = status(&r);
    let canary = s
        .traffic
        .iter()
        .find(|w| w.cluster == "prod-a" && w.green > Percent::ZERO)
        .expect("prod-a took canary traffic")
        .at;
    let abort = first(s, TransitionEvent::AbortStarted);
    let took = abort.at.duration_since(canary);
    // The gate interval is 1m; a measurement may land just before the
    // canary's traffic, so the next one decides: at most one interval plus
    // the time to serve and read it.
    assert!(
        took <= SignedDuration::from_secs(90),
        "rolled back {took:?} after the canary took traffic"
    );
    assert!(abort.message.contains("error-ratio"), "{}", abort.message);
    assert_rolled_back_whole(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_not_ready_stop_the_canary_through_cluster_health() {
    let r = run("nodes-not-ready", 300.0).await;
    assert_eq!(r.exit, Exit::RolledBack, "{:?}", r.outcome);
    let s = status(&r);
    let abort = first(s, TransitionEvent::AbortStarted);
    assert_eq!(
        s.plan[abort.step as usize].kind,
        StepKind::Canary,
        "{}",
        abort.message
    );
    assert!(
        abort.message.contains("cluster-health") && abort.message.contains("not ready"),
        "{}",
        abort.message
    );
    assert_rolled_back_whole(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_regression_returns_everything_to_blue_from_the_bake() {
    let r = run("late-regression", 1000.0).await;
    assert_eq!(r.exit, Exit::RolledBack, "{:?}", r.outcome);
    let s = status(&r);
    let abort = first(s, TransitionEvent::AbortStarted);
    assert_eq!(s.plan[abort.step as usize].kind, StepKind::Bake);
    // Every cluster had been on green before the regression.
    for c in CLUSTERS {
        assert!(
            s.traffic
                .iter()
                .any(|w| w.cluster == c && w.green == Percent::HUNDRED && w.at < abort.at),
            "{c} was on green before the bake failed"
        );
    }
    assert_rolled_back_whole(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_outage_during_soak_rolls_back_naming_the_zone() {
    let r = run("zone-outage", 600.0).await;
    assert_eq!(r.exit, Exit::RolledBack, "{:?}", r.outcome);
    let s = status(&r);
    let abort = first(s, TransitionEvent::AbortStarted);
    assert_eq!(s.plan[abort.step as usize].kind, StepKind::Soak);
    assert!(abort.message.contains("eu-west-1b"), "{}", abort.message);
    assert!(
        !s.traffic
            .iter()
            .any(|w| w.cluster == "prod-b" && w.green > Percent::ZERO),
        "prod-b never took green traffic"
    );
    assert_rolled_back_whole(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_freeze_holds_then_completes_after_the_unfreeze() {
    let r = run("incident-freeze", 1000.0).await;
    assert_eq!(r.exit, Exit::Ok, "{:?}", r.outcome);
    let s = status(&r);
    let held = s
        .history
        .iter()
        .find(|t| t.event == TransitionEvent::HoldStarted && t.message.contains("INC-4711"))
        .unwrap_or_else(|| panic!("a freeze hold in {:#?}", s.history));
    let cleared = s
        .history
        .iter()
        .find(|t| t.event == TransitionEvent::HoldCleared && t.at >= held.at)
        .expect("the hold cleared");
    // The freeze lasts 30 minutes of fleet time; nothing moved meanwhile.
    assert!(cleared.at.duration_since(held.at) >= SignedDuration::from_mins(25));
    // No step starts while frozen; a weight the step before the freeze set
    // may still be seen on the route a few fleet seconds into it.
    assert!(
        !s.history
            .iter()
            .any(|t| t.event == TransitionEvent::StepStarted
                && t.at > held.at
                && t.at < cleared.at),
        "no step started while frozen"
    );
    let seen_from = held.at + SignedDuration::from_mins(1);
    assert!(
        !s.traffic
            .iter()
            .any(|w| w.at > seen_from && w.at < cleared.at),
        "no traffic moved while frozen"
    );
    assert_each_step_once(s);
    assert_all_on_green(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_window_holds_inside_it_and_resumes_after() {
    let r = run("maintenance-window", 1000.0).await;
    assert_eq!(r.exit, Exit::Ok, "{:?}", r.outcome);
    let s = status(&r);
    let from: Timestamp = "2026-03-02T06:00:00Z".parse().unwrap();
    let to: Timestamp = "2026-03-02T07:00:00Z".parse().unwrap();
    assert!(
        s.history
            .iter()
            .any(|t| t.event == TransitionEvent::HoldStarted
                && t.message.contains("node-maintenance")
                && t.at >= from
                && t.at < from + SignedDuration::from_mins(2)),
        "a hold names the window as it begins: {:#?}",
        s.history
    );
    // No step is started inside the window. A weight set by a step that
    // started just before it is seen on the route a few milliseconds later
    // (a few fleet seconds at this scale), hence the minute of grace for
    // observed weights.
    assert!(
        !s.history
            .iter()
            .any(|t| t.event == TransitionEvent::StepStarted && t.at >= from && t.at < to),
        "no step started inside the window: {:#?}",
        s.history
    );
    let seen_from = from + SignedDuration::from_mins(1);
    assert!(
        !s.traffic.iter().any(|w| w.at >= seen_from && w.at < to),
        "no traffic moved inside the window: {:#?}",
        s.traffic
    );
    assert!(s.finished_at.unwrap() > to);
    assert_each_step_once(s);
    assert_all_on_green(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_resources_keep_their_uids() {
    let r = run("shared-resources", 1000.0).await;
    assert_eq!(r.exit, Exit::Ok, "{:?}", r.outcome);
    assert_eq!(r.objects.len(), 6);
    for o in &r.objects {
        let plural = format!("{}s", o.kind.to_lowercase());
        let ar = kube::api::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("", "v1", &o.kind),
            &plural,
        );
        let api: Api<DynamicObject> = Api::namespaced_with(client(&r, &o.cluster).await, NS, &ar);
        let now = api
            .get_opt(&o.name)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} {} on {} survives", o.kind, o.name, o.cluster));
        assert_eq!(now.metadata.uid.as_deref(), Some(o.uid.as_str()), "{o:?}");
    }
    assert_all_on_green(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_degraded_holds_and_never_reaches_prod_b_early() {
    let r = run("control-plane-degraded", 600.0).await;
    assert_eq!(r.exit, Exit::Ok, "{:?}", r.outcome);
    let s = status(&r);
    let degraded = step_started(s, "ramp prod-a 20%");
    let recovered = degraded + SignedDuration::from_mins(20);
    // prod-a is also the home cluster: while its API server fails, even the
    // Release cannot be written, so the hold shows in what did not happen.
    // The 20% step (5 minutes when healthy) ends only after the recovery,
    // and no traffic moves anywhere in between.
    let done = s
        .history
        .iter()
        .find(|t| {
            t.event == TransitionEvent::StepCompleted
                && s.plan[t.step as usize].to_string() == "ramp prod-a 20%"
        })
        .unwrap();
    assert!(done.at >= recovered, "{:?} < {recovered:?}", done.at);
    // The hold the failing API server caused, kept while the Release could
    // not be written and recorded once prod-a answered again.
    let held = s
        .history
        .iter()
        .find(|t| t.event == TransitionEvent::HoldStarted && t.message.contains("prod-a"))
        .unwrap_or_else(|| panic!("the history shows the hold: {:#?}", s.history));
    assert!(
        held.at >= degraded && held.at < recovered,
        "held at {:?}, degraded {degraded:?}, recovered {recovered:?}",
        held.at
    );
    assert!(held.message.contains("API server"), "{}", held.message);
    assert!(
        s.history
            .iter()
            .any(|t| t.event == TransitionEvent::HoldCleared && t.at >= held.at),
        "and its end"
    );
    // The 20% step's own change may land late through the failing API
    // server; nothing goes beyond it, and prod-b is not touched.
    assert!(
        !s.traffic.iter().any(|w| w.at > degraded
            && w.at < recovered
            && (w.cluster != "prod-a" || w.green > Percent::from_whole(20))),
        "no traffic moved past the last safe weight while prod-a was degraded: {:#?}",
        s.traffic
    );
    assert!(
        !s.history
            .iter()
            .any(|t| t.event == TransitionEvent::AbortStarted),
        "nothing destructive"
    );
    assert!(step_started(s, "deploy green on prod-b") >= recovered);
    assert_each_step_once(s);
    assert_all_on_green(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_flaky_completes_without_repeating_a_step() {
    let r = run("api-flaky", 1000.0).await;
    assert_eq!(r.exit, Exit::Ok, "{:?}", r.outcome);
    assert_each_step_once(status(&r));
    assert_all_on_green(&r).await;
}

/// The picture check itself: two texts drawn over each other are named.
#[test]
fn the_picture_check_names_two_texts_that_overlap() {
    let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="100"><text x="10" y="50" font-size="12" font-family="DejaVu Sans">rollback</text><text x="30" y="52" font-size="12" font-family="DejaVu Sans">all on blue</text></svg>"#;
    let refused = std::panic::catch_unwind(|| common::picture::render_checked(svg))
        .expect_err("overlapping texts are refused");
    let why = refused
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        why.contains("rollback") && why.contains("all on blue"),
        "{why}"
    );
}

/// However long the release and however many events crowd one instant,
/// no two labels overlap: a week-long release with a step every few
/// minutes, holds, a failing gate and a rollback's pile of events.
#[test]
fn a_long_release_and_a_pile_of_events_still_read() {
    use cutover::spec::status::{GateSeries, Phase, PlannedStep, Point, WeightChange};
    let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let at = |m: i64| t0.checked_add(SignedDuration::from_mins(m)).unwrap();
    let mut s = ReleaseStatus {
        phase: Phase::Aborted,
        version: Some("2.14.0".into()),
        started_at: Some(t0),
        finished_at: Some(at(7 * 24 * 60)),
        message: Some(
            "rolled back: ".to_string() + &"error-ratio on prod-a above 0.02; ".repeat(20),
        ),
        ..Default::default()
    };
    for (i, kind) in [
        StepKind::Canary,
        StepKind::Verify,
        StepKind::Soak,
        StepKind::Cutover,
    ]
    .iter()
    .cycle()
    .take(400)
    .enumerate()
    {
        s.plan.push(PlannedStep {
            kind: *kind,
            cluster: Some(format!("cluster-{}", i % 7)),
            weight: None,
            wait: cutover::spec::Span::ZERO,
        });
        s.history.push(Transition {
            at: at(i as i64 * 25),
            step: i as u32,
            event: TransitionEvent::StepStarted,
            message: format!("step {i}"),
        });
        if i % 9 == 0 {
            for (event, m) in [
                (TransitionEvent::HoldStarted, 0),
                (TransitionEvent::HoldCleared, 20),
            ] {
                s.history.push(Transition {
                    at: at(i as i64 * 25 + m),
                    step: i as u32,
                    event,
                    message: "deploy freeze incident-4711 by oncall: database failover".into(),
                });
            }
        }
    }
    let end = 7 * 24 * 60;
    for event in [
        TransitionEvent::AbortStarted,
        TransitionEvent::TrafficRestored,
        TransitionEvent::Aborted,
        TransitionEvent::Promoted,
        TransitionEvent::FreezeOverridden,
        TransitionEvent::Superseded,
    ] {
        s.history.push(Transition {
            at: at(end - 1),
            step: 399,
            event,
            message: "the end".into(),
        });
    }
    for c in 0..7 {
        s.traffic.push(WeightChange {
            at: at(c * 60),
            cluster: format!("cluster-{c}"),
            green: cutover::spec::Percent::from_whole(100),
        });
    }
    s.gate_series.push(GateSeries::of(
        "error-ratio-of-the-checkout-service-api".into(),
        "cluster-with-a-long-name-0".into(),
        "≤ 0.02".into(),
        (0..300).map(|i| Point {
            at: at(i * 33).as_second(),
            value: if i % 50 == 49 { 0.4 } else { 0.001 },
        }),
    ));
    s.gate_series.push(GateSeries::new(
        "health".into(),
        "cluster-1".into(),
        "restarts ≤ 3, unschedulable ≤ 0, nodes not ready ≤ 1".into(),
    ));
    common::picture::render_checked(&cutover::chart::timeline_svg("checkout", &s));
}
