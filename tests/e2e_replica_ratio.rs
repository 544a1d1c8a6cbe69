//! The replica-ratio router end to end: a release whose clusters have no
//! Gateway API moves traffic by pod counts behind the app's own Service,
//! reports the share it achieved, and switches the Service to green only once
//! green can carry everything.

mod common;

use common::{NS, World, finish, tier2_release};
use cutover::fleet::workload::Colour;
use cutover::labels;
use cutover::spec::Percent;
use cutover::spec::quantity::share;
use cutover::spec::status::{Phase, StepKind, TransitionEvent};
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;

fn ratio_release() -> String {
    tier2_release().replace("kind: gatewayHTTPRoute", "kind: replicaRatio")
}

async fn service(w: &World, cluster: &str) -> Service {
    Api::<Service>::namespaced(w.readers[cluster].clone(), NS)
        .get("checkout")
        .await
        .unwrap()
}

fn selected_colour(s: &Service) -> Option<String> {
    s.spec
        .as_ref()?
        .selector
        .as_ref()?
        .get(labels::COLOUR)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_moves_by_pods_and_the_service_switches_to_green_at_the_end() {
    let w = World::start(None, 600.0, &ratio_release()).await;
    let mut uids = Vec::new();
    for c in &w.rel.clusters {
        let s = service(&w, &c.name).await;
        assert_eq!(selected_colour(&s).as_deref(), Some("blue"));
        uids.push(s.metadata.uid.unwrap());
    }
    let run = w.spawn_run(&[]);

    // The canary asks for 10 % of prod-a; with six blue pods the least there
    // is, one green pod in seven, is what is reported.
    let canary = w
        .wait_for("prod-a's canary to take traffic", |s| {
            s.plan.get(s.step as usize).map(|p| p.kind) == Some(StepKind::Canary)
                && s.weights.get("prod-a").is_some_and(|p| *p > Percent::ZERO)
        })
        .await;
    assert_eq!(canary.weights["prod-a"], share(1, 6));
    let green = w.deployment("prod-a", "checkout-green").await.unwrap();
    assert_eq!(green.spec.unwrap().replicas, Some(1));
    let blue = w.deployment("prod-a", "checkout-blue").await.unwrap();
    assert_eq!(blue.spec.unwrap().replicas, Some(6), "blue keeps its size");
    assert_eq!(selected_colour(&service(&w, "prod-a").await), None);

    let (code, out, err) = finish(run).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Completed);
    assert!(
        !s.history.iter().any(|t| matches!(
            t.event,
            TransitionEvent::HoldStarted | TransitionEvent::HoldChanged
        ) && t.message.contains("selects")),
        "no drift was seen: {:?}",
        s.history
    );
    for (c, uid) in w.rel.clusters.iter().zip(uids) {
        let svc = service(&w, &c.name).await;
        assert_eq!(
            selected_colour(&svc).as_deref(),
            Some("green"),
            "{}",
            c.name
        );
        assert_eq!(svc.metadata.uid.unwrap(), uid, "the Service is kept");
        assert_eq!(
            svc.metadata.annotations.unwrap()[labels::GREEN_WEIGHT],
            format!("{}=100%", Colour::Green)
        );
        let green = w.deployment(&c.name, "checkout-green").await.unwrap();
        assert_eq!(green.spec.unwrap().replicas, Some(c.replicas as i32));
        assert!(w.deployment(&c.name, "checkout-blue").await.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_whole_pods_cannot_keep_small_is_refused_before_any_request() {
    // Tier 1 allows a canary of at most 5 % of all traffic; prod-a carries
    // half of it, so one green pod beside six blue ones is 7.15 %.
    let release = common::RELEASE.replace("kind: gatewayHTTPRoute", "kind: replicaRatio");
    let w = World::start(None, 600.0, &tier2_release()).await;
    std::fs::write(&w.release_path, &release).unwrap();
    w.sim.reset_requests();
    let (code, out, err) = finish(w.spawn_run(&[])).await;
    assert_eq!(code, 5, "{out}\n{err}");
    for needle in [
        "spec.router.kind",
        "1 green pod beside 6 blue ones",
        "7.15%",
        "at least 9 replicas",
        "gatewayHTTPRoute",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
    assert_eq!(w.sim.requests().user_agent("cutover").total(), 0);
}
