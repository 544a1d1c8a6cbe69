//! Tier policy end to end: `cutover check --live` against the simulated
//! fleet, before and after a zone outage, and a release that breaks the tier
//! refused before any write.

mod common;

use std::time::Duration;

use common::{World, finish};

fn check(w: &World) -> tokio::process::Command {
    let path = w.release_path.to_str().unwrap().to_string();
    w.cutover(&["check", "-f", &path, "--live"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_live_passes_on_a_healthy_fleet_and_names_a_lost_zone() {
    // The zone outage of the scenario starts 20 minutes in: 2 s of wall time at 600x.
    let scenario = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/scenarios/zone-outage.yaml"
    ))
    .unwrap()
    .replace("whenReleaseStep: soak prod-a", "after: 20m");
    let w = World::start(Some(&scenario), 600.0, common::RELEASE).await;
    // Blue's pods become ready and spread before the outage.
    let mut healthy = None;
    for _ in 0..40 {
        let (code, out, _) = finish(check(&w).spawn().unwrap()).await;
        if code == 0 {
            healthy = Some(out);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let out = healthy.expect("a healthy fleet passes check --live");
    assert!(
        out.contains("live-placement") && out.contains("every rule holds"),
        "{out}"
    );
    assert!(out.contains("distinct-clusters"), "{out}");
    assert!(
        out.contains("fleet-zone-loss") && out.contains("83.33%"),
        "losing one zone of six costs a sixth: {out}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, out, err) = finish(check(&w).spawn().unwrap()).await;
    assert_eq!(code, 5, "{out}\n{err}");
    let failing: Vec<_> = out.lines().filter(|l| l.contains("FAIL")).collect();
    assert!(
        failing
            .iter()
            .any(|l| l.contains("live-zones") && l.contains("eu-west-1b")),
        "{out}"
    );
    assert!(
        failing.iter().all(|l| l.contains("prod-a")),
        "only prod-a fails: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier1_release_on_one_production_cluster_is_refused_before_any_write() {
    let single = common::RELEASE.replace("    - name: prod-b\n      role: production\n", "");
    assert_ne!(single, common::RELEASE);
    let w = World::start(None, 60.0, &single).await;
    w.sim.reset_requests();
    let (code, out, err) = finish(w.spawn_run(&[])).await;
    assert_eq!(code, 5, "{out}\n{err}");
    assert!(
        err.contains("min-clusters") && err.contains("nothing was touched"),
        "{err}"
    );
    assert_eq!(
        w.sim.requests().user_agent("cutover/").total(),
        0,
        "not a single request"
    );
    let (code, out, _) = finish(check(&w).spawn().unwrap()).await;
    assert_eq!(code, 5);
    assert!(
        out.contains("FAIL  min-clusters") && out.contains("fix:"),
        "{out}"
    );
}

/// Two fleet entries whose contexts differ but reach one cluster: `run`
/// refuses before writing anything (the static rule only sees context names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_two_entries_that_reach_one_cluster_before_any_write() {
    let w = World::start(None, 120.0, &common::tier2_release()).await;
    // A second context for prod-a, and prod-b's entry pointed at it.
    let text = std::fs::read_to_string(w.sim.kubeconfig_as("pipeline")).unwrap();
    let mut kc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let contexts = kc["contexts"].as_array_mut().unwrap();
    let mut alias = contexts
        .iter()
        .find(|c| c["name"] == "sim-prod-a")
        .unwrap()
        .clone();
    alias["name"] = "alias-of-prod-a".into();
    contexts.push(alias);
    let kubeconfig = w.dir.path().join("aliased-kubeconfig.yaml");
    std::fs::write(&kubeconfig, serde_saphyr::to_string(&kc).unwrap()).unwrap();
    let fleet = std::fs::read_to_string(w.sim.fleet_path())
        .unwrap()
        .replace("context: sim-prod-b", "context: alias-of-prod-a");
    let fleet_path = w.dir.path().join("aliased-fleet.yaml");
    std::fs::write(&fleet_path, fleet).unwrap();
    w.sim.reset_requests();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["run", "-f", w.release_path.to_str().unwrap()])
        .arg("--fleet")
        .arg(&fleet_path)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("prod-a = prod-b") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(w.sim.requests().user_agent("cutover/").writes(), 0);
    assert!(w.release().await.is_none());
}
