//! `cutover run`, `abort`, crash and resume, and concurrent drivers, end to
//! end through the binary against the simulated fleet.

mod common;

use std::collections::BTreeMap;

use common::{BLUE, World, completed_steps, finish, tier2_release};
use cutover::fleet::workload::Colour;
use cutover::spec::Percent;
use cutover::spec::status::{Phase, StepKind, TransitionEvent};
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;

async fn service_uids(w: &World) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for c in &w.rel.clusters {
        let api: Api<Service> =
            Api::namespaced(w.clients.get(&c.name).unwrap().client.clone(), common::NS);
        for name in ["checkout-blue", "checkout-green"] {
            let uid = api.get(name).await.unwrap().metadata.uid.unwrap();
            out.insert(format!("{}/{name}", c.name), uid);
        }
        let route = w.route(&c.name).await;
        out.insert(
            format!("{}/route", c.name),
            route["metadata"]["uid"].as_str().unwrap().to_string(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tier1_lifecycle_ends_with_green_everywhere_and_blue_gone() {
    let w = World::start(None, 1000.0, common::RELEASE).await;
    let before = service_uids(&w).await;
    let (code, out, err) = finish(w.spawn_run(&[])).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.lines().last().unwrap().contains("\"completed\""),
        "{out}"
    );
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Completed);
    assert_eq!(
        completed_steps(&s),
        (0..s.plan.len() as u32).collect::<Vec<_>>()
    );
    for c in &w.rel.clusters {
        assert_eq!(
            w.green_share(&c.name, Colour::Green).await,
            Percent::HUNDRED,
            "{}",
            c.name
        );
        assert!(
            w.deployment(&c.name, "checkout-blue").await.is_none(),
            "blue deleted on {}",
            c.name
        );
        let green = w
            .deployment(&c.name, "checkout-green")
            .await
            .expect("green stays");
        assert_eq!(
            green.metadata.labels.unwrap()["cutover.dev/version"],
            "2.14.0"
        );
    }
    assert_eq!(
        service_uids(&w).await,
        before,
        "Services and routes are never deleted or recreated"
    );
    // The timeline picture, from the Release's status.
    let svg = w.dir.path().join("checkout.svg");
    let report = format!("--report={}", svg.display());
    let (code, out, err) = finish(
        w.cutover(&["status", "checkout", "-n", common::NS, &report])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let picture = std::fs::read_to_string(&svg).unwrap();
    for needle in [
        "release checkout 2.14.0: Completed",
        "staging",
        "prod-b",
        "error-ratio",
        "cluster-health",
        "completed",
    ] {
        assert!(picture.contains(needle), "{needle} in the timeline");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_mid_ramp_restores_blue_everywhere_before_green_is_scaled_down() {
    let w = World::start(None, 300.0, &tier2_release()).await;
    let child = w.spawn_run(&[]);
    w.wait_for("the ramp", |s| {
        s.plan
            .get(s.step as usize)
            .is_some_and(|p| p.kind == StepKind::Ramp)
            && s.step_ready_at.is_some()
    })
    .await;
    let (code, _, err) = finish(
        w.cutover(&[
            "abort",
            "checkout",
            "-n",
            "shop",
            "--reason",
            "latency alarm",
        ])
        .spawn()
        .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = finish(child).await;
    assert_eq!(code, 3, "rolled back: {out}\n{err}");
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Aborted);
    let abort = s.abort.as_ref().unwrap();
    assert!(
        abort.message.contains("latency alarm") && abort.message.contains("ci-pipeline"),
        "{}",
        abort.message
    );
    // The history shows traffic restored everywhere before anything else.
    let events: Vec<_> = s.history.iter().map(|t| t.event).collect();
    let restored = events
        .iter()
        .position(|e| *e == TransitionEvent::TrafficRestored)
        .unwrap();
    assert!(
        restored
            < events
                .iter()
                .position(|e| *e == TransitionEvent::Aborted)
                .unwrap()
    );
    // The JSON lines show every route write to 0% before the first scale-down.
    let actions: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "action")
        .map(|v| v["action"].clone())
        .collect();
    let first_scale = actions
        .iter()
        .position(|a| a["action"] == "scaleDownGreen")
        .expect("green scaled down");
    let last_restore = actions
        .iter()
        .rposition(|a| a["action"] == "setWeight" && a["green"] == "0%")
        .expect("traffic restored");
    assert!(last_restore < first_scale, "{actions:?}");
    for c in &w.rel.clusters {
        assert_eq!(
            w.green_share(&c.name, Colour::Green).await,
            Percent::ZERO,
            "{} back on blue",
            c.name
        );
        let blue = w
            .deployment(&c.name, "checkout-blue")
            .await
            .expect("blue kept");
        assert_eq!(blue.metadata.labels.unwrap()["cutover.dev/version"], BLUE);
        if let Some(g) = w.deployment(&c.name, "checkout-green").await {
            assert_eq!(
                g.spec.unwrap().replicas,
                Some(0),
                "green scaled down on {}",
                c.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_resumes_where_it_stopped_and_repeats_nothing() {
    // (what, the step the run is killed at or after)
    type KillPoint = (&'static str, fn(&cutover::spec::ReleaseStatus) -> bool);
    let points: [KillPoint; 4] = [
        ("after green is created on prod-a", |s| {
            s.plan
                .get(s.step as usize)
                .is_some_and(|p| p.kind == StepKind::Canary)
        }),
        ("mid-ramp", |s| {
            s.plan.get(s.step as usize).is_some_and(|p| {
                p.kind == StepKind::Ramp && p.weight.unwrap() >= Percent::from_whole(50)
            })
        }),
        ("during the soak", |s| {
            s.plan
                .get(s.step as usize)
                .is_some_and(|p| p.kind == StepKind::Soak)
        }),
        ("during cleanup", |s| {
            s.plan
                .get(s.step as usize)
                .is_some_and(|p| p.kind == StepKind::Cleanup)
        }),
    ];
    // A cleanup step can pass within one poll of the status, before the kill
    // lands; a Job hook before each cleanup holds it for 10 minutes of fleet
    // time (2 s here), so the kill lands with the hook's Job running or about
    // to be made, and the second run must take that Job over, not make another.
    let hooked = format!(
        "{}  hooks:\n    - name: smoke\n      at: beforeCleanup\n      timeout: 30m\n      \
         job: {{fromCronJob: checkout-smoke}}\n",
        tier2_release()
    );
    for (what, at) in points {
        let cleanup = what == "during cleanup";
        let release = if cleanup {
            hooked.clone()
        } else {
            tier2_release()
        };
        let w = World::start(None, 300.0, &release).await;
        if cleanup {
            for c in &w.rel.clusters {
                w.smoke_template(&c.name, "10m", 0).await;
            }
        }
        let mut child = w.spawn_run(&["--lease-duration", "2s"]);
        w.wait_for(what, at).await;
        child.kill().await.unwrap();
        let killed_at = w.status().await;
        assert!(
            !killed_at.phase.is_terminal(),
            "{what}: ended before the kill"
        );
        let (code, out, err) = finish(w.spawn_run(&["--lease-duration", "2s"])).await;
        assert_eq!(code, 0, "{what}: {out}\n{err}");
        let s = w.status().await;
        assert_eq!(s.phase, Phase::Completed, "{what}");
        assert_eq!(
            completed_steps(&s),
            (0..s.plan.len() as u32).collect::<Vec<_>>(),
            "{what}: each step once, in order"
        );
        w.assert_all_on_green(what).await;
        assert!(
            out.contains("waiting for its lease") || out.contains("took over"),
            "{what}: the second run waited for the dead driver's lease: {out}"
        );
        if cleanup {
            // One hook Job per cluster, its first try's: none made twice.
            for c in &w.rel.clusters {
                let step = common::step_index(&s, StepKind::Cleanup, &c.name);
                let names = w.job_names(&c.name).await;
                assert_eq!(
                    names,
                    [format!("checkout-smoke-r1-s{}-1", step + 1)],
                    "{what}: {}",
                    c.name
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_runs_one_drives_the_other_waits() {
    let w = World::start(None, 300.0, &tier2_release()).await;
    let a = w.spawn_run(&["--lease-duration", "3s"]);
    w.wait_for("the release to start", |s| s.phase != Phase::Pending)
        .await;
    let b = w.spawn_run(&["--lease-duration", "3s"]);
    let ((ca, oa, ea), (cb, ob, eb)) = tokio::join!(finish(a), finish(b));
    assert_eq!((ca, cb), (0, 0), "{oa}\n{ea}\n{ob}\n{eb}");
    let acted = |out: &str| out.lines().any(|l| l.contains("\"event\":\"action\""));
    assert!(acted(&oa), "the first run drives");
    assert!(!acted(&ob), "the second never acts: {ob}");
    assert!(
        ob.contains("is driven by"),
        "the second says who drives: {ob}"
    );
    let s = w.status().await;
    assert_eq!(
        completed_steps(&s),
        (0..s.plan.len() as u32).collect::<Vec<_>>()
    );
}
