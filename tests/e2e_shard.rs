//! Controller replicas sharing the releases: `cutover controller` processes
//! against the simulated fleet, six Releases applied with kubectl. Two
//! replicas drive three each, each release's Lease held under its replica's;
//! a third joins and is handed a fair share (two each); one is killed
//! mid-run and the other two take its releases over, and every release
//! completes with every step exactly once. Each replica has one worker
//! (`--workers 1`): its releases take turns to pass, never two at once.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::controller::{
    Controller, SYSTEM_NS, http_get, start_controller_args, system_namespace,
};
use common::{NS, World, completed_steps, named_release, tier2_release};
use cutover::spec::Release;
use cutover::spec::status::{Phase, TransitionEvent};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};

const RELEASES: usize = 6;

/// Release `i`: the example as tier-2 for its own app and route.
fn release(i: usize) -> String {
    named_release(&format!("rel-{i}"), &format!("app-{i}"))
}

/// Who holds each release's Lease now, and under which Lease.
async fn holders(w: &World) -> BTreeMap<String, (String, String)> {
    let leases = Api::<Lease>::namespaced(w.readers[&w.fleet.home].clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    leases
        .items
        .into_iter()
        .filter_map(|l| {
            let name = l.metadata.name.clone()?;
            let release = name.strip_prefix("cutover-release-")?.to_string();
            let holder = l.spec.as_ref()?.holder_identity.clone()?;
            let under = l
                .metadata
                .annotations
                .as_ref()?
                .get("cutover.dev/held-under")?;
            Some((release, (holder, under.clone())))
        })
        .collect()
}

/// Waits for the Lease of each of `replicas`.
async fn joined(w: &World, replicas: &[Controller]) {
    let api = Api::<Lease>::namespaced(w.readers[&w.fleet.home].clone(), SYSTEM_NS);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let names: Vec<String> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|l| l.metadata.name)
            .collect();
        if replicas
            .iter()
            .all(|c| names.contains(&format!("cutover-controller-replica-{}", c.identity)))
        {
            return;
        }
        assert!(Instant::now() < deadline, "replica leases: {names:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `replicas` replicas drive an even share each, every
/// release's Lease held under its driver's; returns who holds which.
async fn shared_as(w: &World, replicas: usize) -> BTreeMap<String, (String, String)> {
    let each = RELEASES / replicas;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held = holders(w).await;
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for (holder, under) in held.values() {
            assert_eq!(
                under,
                &format!("{SYSTEM_NS}/cutover-controller-replica-{holder}")
            );
            *per.entry(holder.clone()).or_default() += 1;
        }
        if held.len() == RELEASES && per.len() == replicas && per.values().all(|n| *n == each) {
            return held;
        }
        assert!(
            Instant::now() < deadline,
            "not shared {each} each: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn statuses(w: &World) -> Vec<Release> {
    Api::<Release>::namespaced(w.readers[&w.fleet.home].clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

/// A replica with one worker: its releases pass one at a time.
fn replica(w: &World, identity: &str) -> Controller {
    start_controller_args(w, identity, w.sim.fleet_path(), "text", &["--workers", "1"])
}

/// A gauge of the `/metrics` on `port`; `None` while it does not answer.
fn gauge(port: u16, name: &str) -> Option<f64> {
    let (_, text) = http_get(port, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Reads `cutover_passes_running` of the replicas on `ports` every few
/// milliseconds until `stop`: how many readings there were, and the most.
fn watch_passing(
    ports: Arc<Mutex<Vec<u16>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, f64)> {
    std::thread::spawn(move || {
        let (mut readings, mut most) = (0, 0.0f64);
        while !stop.load(Ordering::Relaxed) {
            let now: Vec<u16> = ports.lock().unwrap().clone();
            for port in now {
                if let Some(n) = gauge(port, "cutover_passes_running") {
                    readings += 1;
                    most = most.max(n);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (readings, most)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_six_releases_hand_some_to_a_new_one_and_take_over_a_killed_ones() {
    let w = World::start(None, 200.0, &tier2_release()).await;
    system_namespace(&w).await;
    let mut docs = String::new();
    for i in 0..RELEASES {
        let text = release(i);
        w.serve_blue(&text).await;
        docs.push_str("---\n");
        docs.push_str(&text);
    }
    let mut replicas: Vec<_> = ["ctl-a", "ctl-b"]
        .into_iter()
        .map(|id| replica(&w, id))
        .collect();
    let ports = Arc::new(Mutex::new(replicas.iter().map(|c| c.port).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let passing = watch_passing(ports.clone(), stop.clone());
    // Every replica's own Lease, before there is anything to share.
    joined(&w, &replicas).await;
    let path = w.dir.path().join("releases.yaml");
    std::fs::write(&path, docs).unwrap();
    w.kubectl(&w.fleet.home)
        .run(&["apply", "-f", path.to_str().unwrap()])
        .await;

    // A fair share each: three releases per replica, each release's Lease
    // held under the Lease of the replica that drives it.
    // Three releases each, each release's Lease held under the Lease of the
    // replica that drives it.
    shared_as(&w, 2).await;
    // A third replica joins: the others hand it two releases between passes.
    replicas.push(replica(&w, "ctl-c"));
    ports.lock().unwrap().push(replicas[2].port);
    joined(&w, &replicas).await;
    let shared = shared_as(&w, 3).await;
    // Each counts three replicas and a share of two; the two first handed
    // over one each, their excess, and no more.
    let mut handed = 0.0;
    for c in &replicas {
        assert_eq!(gauge(c.port, "cutover_replicas_live"), Some(3.0));
        assert_eq!(gauge(c.port, "cutover_releases_share"), Some(2.0));
        handed += gauge(c.port, "cutover_releases_handed_over_total").unwrap();
    }
    assert_eq!(handed, 2.0);
    // Killed while its releases are on their way.
    let mut killed = replicas.remove(0);
    killed.child.start_kill().unwrap();
    killed.child.wait().await.unwrap();
    let orphans: Vec<String> = shared
        .iter()
        .filter(|(_, (holder, _))| *holder == killed.identity)
        .map(|(r, _)| r.clone())
        .collect();
    assert_eq!(orphans.len(), 2);
    // Who took each of them over, as seen while they ran on.
    let mut taken_by: BTreeMap<String, String> = BTreeMap::new();

    let deadline = Instant::now() + Duration::from_secs(600);
    let done = loop {
        for (r, (holder, _)) in holders(&w).await {
            if orphans.contains(&r) && holder != killed.identity {
                taken_by.insert(r, holder);
            }
        }
        let all = statuses(&w).await;
        let ended = all
            .iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
            .count();
        if ended == RELEASES {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "{ended} of {RELEASES} releases ended; {:#?}",
            all.iter()
                .map(|r| (r.metadata.name.clone(), r.status.as_ref().map(|s| s.phase)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for r in &done {
        let name = r.metadata.name.clone().unwrap();
        let s = r.status.as_ref().unwrap();
        assert_eq!(s.phase, Phase::Completed, "{name}: {:?}", s.message);
        // Every step completed once, in order: none repeated, none skipped,
        // the killed replica's releases included.
        assert_eq!(
            completed_steps(s),
            (0..s.plan.len() as u32).collect::<Vec<_>>(),
            "{name}"
        );
        let starts = s
            .history
            .iter()
            .filter(|t| t.event == TransitionEvent::StepStarted)
            .count();
        assert_eq!(starts, s.plan.len(), "{name}: {:#?}", s.history);
    }
    // No replica ever had two of its releases passing at once.
    stop.store(true, Ordering::Relaxed);
    let (readings, most) = passing.join().unwrap();
    assert!(
        readings > 0,
        "no replica's /metrics had cutover_passes_running"
    );
    assert_eq!(most, 1.0, "{readings} readings of cutover_passes_running");
    // The killed replica's releases were taken over by the others.
    assert_eq!(
        taken_by.keys().cloned().collect::<Vec<_>>(),
        orphans,
        "{taken_by:?}"
    );
}
