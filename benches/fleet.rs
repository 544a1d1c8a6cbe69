//! `cargo bench --bench fleet`: how fast cutover stops a bad release, how
//! few API requests it makes, how fast a whole lifecycle can be rehearsed,
//! and what a controller costs while it drives many releases. Prints one
//! line per figure, `name value unit`, to be read by people and scripts.
//!
//! `CUTOVER_BENCH_RELEASES` sets how many releases the controller drives
//! (default 10), `CUTOVER_BENCH_SCALE` its fleet's time scale (default: slower
//! the more releases), `CUTOVER_BENCH_REPLICAS` how many controller processes
//! share them (default 1), `CUTOVER_BENCH_KILL=1` kills one once a third
//! have ended, `CUTOVER_BENCH_LOG=DIR` keeps the controllers' warnings,
//! `CUTOVER_BENCH_WORKERS` sets their `--workers` (default: the controller's),
//! `CUTOVER_BENCH_CONTROLLER=PATH` runs the controllers from another build of
//! `cutover` (the image's, `--profile image --no-default-features`, carries no
//! simulated fleet);
//! `CUTOVER_BENCH_ONLY=reaction,abort,economy,idle,lifecycle,controller` runs some of
//! the parts.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover::cli::Exit;
use cutover::cli::demo::{load_scenario, rehearse};
use cutover::spec::status::TransitionEvent;
use cutover::spec::{ReleaseStatus, Span};
use cutover_sim::Scenario;
use cutover_sim::scenario::Rehearsal;
use cutover_sim::store::Store;
use futures::StreamExt;
use serde_json::json;

fn figure(name: &str, value: f64, unit: &str) {
    println!("{name} {value:.2} {unit}");
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` builds this
    // target too but must not spend minutes measuring.
    if !std::env::args().any(|a| a == "--bench") {
        println!("the fleet benchmark runs with `cargo bench --bench fleet`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let only = std::env::var("CUTOVER_BENCH_ONLY").unwrap_or_default();
    let wanted = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
    runtime.block_on(async {
        if wanted("reaction") {
            reaction().await;
        }
        if wanted("abort") {
            abort_to_route().await;
        }
        if wanted("economy") {
            economy().await;
        }
        if wanted("idle") {
            idle().await;
        }
        if wanted("lifecycle") {
            lifecycle().await;
        }
        if wanted("controller") {
            controller().await;
        }
    });
}

/// The example release as a tier-2 release on prod-a and prod-b; with
/// `fast_gates`, its one gate checked every second and failing on the first
/// failure.
fn tier2_scenario(bad_after_canary: bool, fast_gates: bool) -> Scenario {
    let mut s = Scenario::default_fleet();
    let gate = |name: &str, provider: serde_json::Value, max: f64| json!({"name": name, "provider": provider, "interval": "1s", "max": max, "failureLimit": 0});
    s.rehearsal = Some(Rehearsal {
        summary: "reaction".into(),
        expect: "rolls back".into(),
        release: Some({
            let mut spec = json!({
                "tier": "tier-2",
                "clusters": [{"name": "prod-a", "role": "production"}, {"name": "prod-b", "role": "production"}],
                "plan": null,
            });
            if fast_gates {
                spec["gates"] = json!([gate(
                    "error-ratio",
                    json!({"scrape": {"measure": "errorRatio", "metric": "http_requests_total"}}),
                    0.02
                )]);
            }
            json!({ "spec": spec })
        }),
        ..Default::default()
    });
    if bad_after_canary {
        let event: cutover_sim::scenario::EventSpec = serde_json::from_value(json!({
            "name": "green fails",
            "whenGreenWeight": {"cluster": "prod-a", "atLeast": "1%"},
            "behaviour": {"colour": "green", "errorRatio": "50%"}
        }))
        .expect("an event");
        s.events.push(event);
    }
    s
}

/// From green's error ratio breaching the gate to every route back on blue,
/// as the simulated API server sees it, in real time (time scale 1).
async fn reaction() {
    let mut samples = Vec::new();
    for _ in 0..3 {
        let stores: Arc<Mutex<BTreeMap<String, Arc<Store>>>> = Arc::default();
        let keep = stores.clone();
        let scenario = tier2_scenario(true, true);
        let run = tokio::spawn(async move {
            rehearse(&scenario, 1.0, None, move |sim, _| {
                for c in sim.cluster_names() {
                    keep.lock()
                        .unwrap()
                        .insert(c.clone(), sim.cluster(&c).unwrap().store.clone());
                }
            })
            .await
        });
        let green = |store: &Store| cutover_sim::gateway::green_weight(store, Some("checkout"));
        // The scenario turns green bad once prod-a sends it traffic.
        let breach = loop {
            let hit = stores
                .lock()
                .unwrap()
                .get("prod-a")
                .and_then(|s| green(s))
                .is_some_and(|w| w >= 1.0);
            if hit {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let restored = loop {
            let all_blue = stores
                .lock()
                .unwrap()
                .iter()
                .filter(|(c, _)| *c != "staging")
                .all(|(_, s)| green(s).unwrap_or(0.0) == 0.0);
            if all_blue {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let done = run.await.expect("task").expect("rehearsal");
        assert_eq!(done.exit, Exit::RolledBack, "{:?}", done.outcome);
        samples.push(restored.duration_since(breach).as_secs_f64() * 1000.0);
        done.sim.shutdown().await;
    }
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    figure("reaction_ms", median, "ms");
    figure("reaction_over_interval", median / 1000.0, "intervals");
}

/// From a person's abort written to the Release to cutover's first route
/// write, in real time, while every cluster's metrics endpoint hangs after
/// its headers (so each gate measurement is stuck until its deadline): the
/// driver acts on the abort without waiting for them. p50 and p99 over
/// `CUTOVER_BENCH_ABORTS` rehearsals (default 20), each aborted at its canary.
async fn abort_to_route() {
    let runs: usize = std::env::var("CUTOVER_BENCH_ABORTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let mut samples = Vec::new();
    for _ in 0..runs {
        let stores: Arc<Mutex<BTreeMap<String, Arc<Store>>>> = Arc::default();
        let keep = stores.clone();
        let scenario = tier2_scenario(false, true);
        let run = tokio::spawn(async move {
            rehearse(&scenario, 20.0, None, move |sim, _| {
                for c in sim.cluster_names() {
                    let cluster = sim.cluster(&c).unwrap();
                    cluster.faults.stall_metrics(true);
                    keep.lock()
                        .unwrap()
                        .insert(c.clone(), cluster.store.clone());
                }
            })
            .await
        });
        let prod_a = loop {
            if let Some(s) = stores.lock().unwrap().get("prod-a") {
                break s.clone();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !cutover_sim::gateway::green_weight(&prod_a, Some("checkout"))
            .is_some_and(|w| w > 0.0)
        {
            assert!(
                Instant::now() < deadline,
                "no canary on prod-a within 2 minutes"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let routes = ("gateway.networking.k8s.io", "httproutes");
        let kind = prod_a.kind_of("cutover.dev", "releases").expect("releases");
        let release = prod_a.all("cutover.dev", "releases")[0].clone();
        let ns = release["metadata"]["namespace"]
            .as_str()
            .unwrap()
            .to_string();
        let name = release["metadata"]["name"].as_str().unwrap().to_string();
        let before = prod_a.last_change(routes.0, routes.1);
        prod_a
            .modify(
                &kind,
                &ns,
                &name,
                cutover_sim::store::Target::Main,
                false,
                &Default::default(),
                |cur| {
                    let mut next = cur.cloned().unwrap_or_default();
                    next["spec"]["abort"] = json!({"reason": "bench", "by": "bench"});
                    next["metadata"]["resourceVersion"] = serde_json::Value::Null;
                    Ok(next)
                },
            )
            .expect("the abort is written");
        let written = Instant::now();
        while prod_a.last_change(routes.0, routes.1) == before {
            assert!(
                written.elapsed() < Duration::from_secs(60),
                "no route write within a minute of the abort"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(written.elapsed().as_secs_f64() * 1000.0);
        let done = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("the rehearsal ends within 2 minutes of the abort")
            .expect("task")
            .expect("rehearsal");
        done.sim.shutdown().await;
    }
    samples.sort_by(f64::total_cmp);
    let at =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    figure("abort_to_route_p50_ms", at(0.5), "ms");
    figure("abort_to_route_ms", at(0.99), "ms (p99)");
}

/// Writes and requests (watches excluded) per step over the default Tier-1
/// lifecycle.
async fn economy() {
    let scenario = load_scenario("healthy").expect("the healthy scenario");
    let done = rehearse(&scenario, 1000.0, None, |_, _| {})
        .await
        .expect("rehearsal");
    assert_eq!(done.exit, Exit::Ok);
    let steps = done.status.as_ref().map_or(1, |s| s.plan.len()) as f64;
    let sent = done.sim.requests().user_agent("cutover/");
    let requests = sent.filter(|k| k.verb != "watch").total() as f64;
    figure("writes_per_step", sent.writes() as f64 / steps, "writes");
    figure("requests_per_step", requests / steps, "requests");
    done.sim.shutdown().await;
}

/// API requests per minute of wall time (watches and gate scrapes excluded)
/// while a release waits in its bake with nothing to do.
async fn idle() {
    let scenario = tier2_scenario(false, false);
    let stores: Arc<Mutex<Option<Arc<Store>>>> = Arc::default();
    let counters: Arc<Mutex<Vec<Arc<cutover_sim::counters::RequestCounter>>>> = Arc::default();
    let (keep, keep_counters) = (stores.clone(), counters.clone());
    let run = tokio::spawn(async move {
        rehearse(&scenario, 60.0, None, move |sim, _| {
            let home = sim.cluster("prod-a").unwrap();
            *keep.lock().unwrap() = Some(home.store.clone());
            for c in sim.cluster_names() {
                keep_counters
                    .lock()
                    .unwrap()
                    .push(sim.cluster(&c).unwrap().counter.clone());
            }
        })
        .await
    });
    let count = || {
        counters
            .lock()
            .unwrap()
            .iter()
            .map(|c| {
                c.snapshot()
                    .user_agent("cutover/")
                    .filter(|k| k.verb != "watch" && !k.resource.starts_with('/'))
                    .total()
            })
            .sum::<u64>()
    };
    // Wait for the bake, then count for a while.
    loop {
        let baking = stores.lock().unwrap().as_ref().is_some_and(|home| {
            home.all("cutover.dev", "releases").iter().any(|r| {
                r["status"]["stepName"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("bake"))
            })
        });
        if baking {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the step's own writes land first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = count();
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;
    let during = count() - before;
    figure(
        "idle_requests_per_min",
        during as f64 / window.as_secs_f64() * 60.0,
        "requests/min",
    );
    let done = run.await.expect("task").expect("rehearsal");
    done.sim.shutdown().await;
}

/// Wall time of the default Tier-1 lifecycle at the highest time scale that
/// still completes with every step once.
async fn lifecycle() {
    let scenario = load_scenario("healthy").expect("the healthy scenario");
    let mut best = None;
    for scale in [1000.0, 2000.0, 4000.0] {
        let started = Instant::now();
        let done = rehearse(&scenario, scale, None, |_, _| {})
            .await
            .expect("rehearsal");
        let wall = started.elapsed().as_secs_f64();
        let correct = done.exit == Exit::Ok
            && done.status.as_ref().is_some_and(|s| {
                let completed: Vec<u32> = s
                    .history
                    .iter()
                    .filter(|t| t.event == TransitionEvent::StepCompleted)
                    .map(|t| t.step)
                    .collect();
                completed == (0..s.plan.len() as u32).collect::<Vec<_>>()
            });
        done.sim.shutdown().await;
        if !correct {
            break;
        }
        best = Some((scale, wall));
    }
    let (scale, wall) = best.expect("the lifecycle completes at 1000x");
    figure("lifecycle_wall_s", wall, "s");
    figure("lifecycle_time_scale", scale, "x");
}

/// One controller process driving many releases on a simulated fleet that
/// runs in a process of its own.
async fn controller() {
    let n: usize = std::env::var("CUTOVER_BENCH_RELEASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // Every release measures its gates on fleet-time intervals: the more
    // releases, the slower the fleet clock two cores can keep up with.
    let scale: f64 = std::env::var("CUTOVER_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or((1200.0 / n as f64).clamp(4.0, 120.0));
    let bin = env!("CARGO_BIN_EXE_cutover");
    let dir = tempfile::tempdir().expect("a directory");
    // The default fleet, with nodes enough for every release's blue and
    // green (three replicas each, one more surging) at 110 pods a node, as
    // a real fleet running that many apps would have.
    let mut scenario = Scenario::default_fleet();
    for c in &mut scenario.clusters {
        let per_zone = (7 * n as u32).div_ceil(c.zones.len() as u32 * c.pods_per_node);
        c.nodes_per_zone = c.nodes_per_zone.max(per_zone);
    }
    let scenario_path = dir.path().join("scenario.yaml");
    // JSON is YAML.
    std::fs::write(&scenario_path, serde_json::to_string(&scenario).unwrap()).unwrap();
    let mut sim = tokio::process::Command::new(bin)
        .args([
            "sim",
            "serve",
            "--time-scale",
            &scale.to_string(),
            "--scenario",
        ])
        .arg(&scenario_path)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("cutover sim serve");
    let fleet_path = dir.path().join("fleet.yaml");
    let kubeconfig = dir.path().join("kubeconfig");
    while !fleet_path.exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Each app's own metrics endpoint, as each app in a real fleet has one.
    let fleet_text = std::fs::read_to_string(&fleet_path)
        .unwrap()
        .replace("/metrics", "/metrics?app={{app}}");
    std::fs::write(&fleet_path, &fleet_text).unwrap();
    let fleet = cutover::spec::Fleet::parse("fleet.yaml", &fleet_text).unwrap();
    let clients = cutover::fleet::FleetClients::connect(
        &fleet,
        Some(&kubeconfig),
        "shop",
        cutover::fleet::ClientLimits::default(),
    )
    .await
    .expect("clients");
    let example = include_str!("../examples/checkout/release.yaml");
    let cut = example.find("  plan:\n").unwrap();
    // Tier-2 at its shortest timings (about 25 minutes of fleet time), the
    // gates measured every 30 s: the cost of driving releases, not of waiting.
    let tier2 = example[..cut]
        .replace("tier: tier-1", "tier: tier-2")
        .replace("  replicas: 6\n", "  replicas: 3\n")
        .replace("interval: 1m", "interval: 30s")
        + "  plan:\n    canary: {weight: 5%, duration: 1m}\n    ramp: {step: 25%, interval: 30s}\n    soak: 5m\n    bake: 10m\n    stagingVerify: 1m\n";
    let policy = cutover::spec::TierPolicyFile::builtin();
    for c in clients.iter() {
        cutover::fleet::bootstrap::install_crds(c).await.unwrap();
    }
    let mut docs = Vec::new();
    for i in 0..n {
        let text = tier2
            .replace(
                "  name: checkout\n  namespace: shop",
                &format!("  name: rel-{i}\n  namespace: shop"),
            )
            .replace("app: checkout", &format!("app: app-{i}"))
            .replace("route: checkout", &format!("route: app-{i}"));
        let doc: cutover::spec::ReleaseDocument = cutover::spec::Source::new("release.yaml", &text)
            .decode()
            .unwrap();
        let rel = cutover::spec::ResolvedRelease::resolve(
            &doc.metadata.name,
            doc.metadata.namespace.as_deref(),
            &doc.spec,
            &fleet,
            &policy,
        )
        .unwrap();
        docs.push((doc, rel));
    }
    let installs = docs.iter().flat_map(|(_, rel)| {
        rel.clusters.iter().map(|c| {
            let handle = clients.get(&c.name).unwrap();
            cutover::fleet::bootstrap::install_serving(handle, rel, "1.0.0")
        })
    });
    futures::stream::iter(installs)
        .buffer_unordered(16)
        .for_each(|r| async move { r.unwrap() })
        .await;
    let docs: Vec<_> = docs.into_iter().map(|(d, _)| d).collect();
    let store = cutover::fleet::state::ReleaseStore::new(clients.home(), "shop");
    // `CUTOVER_BENCH_REPLICAS` controller processes share the releases;
    // with `CUTOVER_BENCH_KILL=1` the first is killed once a third of the
    // releases have ended, and the others take its releases over.
    let replicas: usize = std::env::var("CUTOVER_BENCH_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let kill = std::env::var("CUTOVER_BENCH_KILL").is_ok_and(|v| v == "1");
    let log_dir = std::env::var_os("CUTOVER_BENCH_LOG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().to_path_buf());
    std::fs::create_dir_all(&log_dir).expect("the log directory");
    let log_path = |i: usize| log_dir.join(format!("controller-{i}.log"));
    let workers = std::env::var("CUTOVER_BENCH_WORKERS")
        .unwrap_or_else(|_| cutover::controller::WORKERS.to_string());
    let ctl_bin = std::env::var("CUTOVER_BENCH_CONTROLLER").unwrap_or_else(|_| bin.to_string());
    let mut ctls = Vec::new();
    for i in 0..replicas {
        let ctl = tokio::process::Command::new(&ctl_bin)
            .args(["controller", "--fleet"])
            .arg(&fleet_path)
            // Under the roles deploy/ ships, as every test runs it.
            .arg("--kubeconfig")
            .arg(dir.path().join("kubeconfig-cutover"))
            .args(["--namespace", "shop", "--listen", "127.0.0.1:0"])
            .args(["--identity", &format!("ctl-{i}")])
            .args(["--lease-duration", "15s", "--log-format", "json"])
            // A few requests per release and step, steps every few seconds of
            // wall time: the default 50 a second per cluster is for tens of
            // releases, not a thousand.
            .args(["--qps", &n.div_ceil(replicas).max(50).to_string()])
            .args(["--workers", &workers])
            .env("CUTOVER_LOG", "warn")
            .stdout(Stdio::null())
            // Its warnings are read for lost leases; `CUTOVER_BENCH_LOG=DIR` keeps them.
            .stderr(std::fs::File::create(log_path(i)).expect("the log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("cutover controller");
        ctls.push(ctl);
    }
    let pids: Vec<u32> = ctls.iter().map(|c| c.id().expect("a pid")).collect();
    // Applied as a pipeline fleet applies them: many at once, not one after
    // another (at 5,000, one at a time took about 20 minutes).
    futures::stream::iter(docs.iter().map(|doc| store.upsert(doc)))
        .buffer_unordered(16)
        .for_each(|r| async move {
            r.unwrap();
        })
        .await;
    let sampling = Arc::new(AtomicBool::new(true));
    let peaks = sample_peaks(pids.clone(), sampling.clone());
    let mut killed = false;
    // The most releases one live replica held beyond its fair share of the
    // releases unfinished when the replicas last changed (their start, or
    // the kill), at any look: what the sharing leaves uneven. Not of those
    // unfinished at the look: a replica keeps the releases on their way as
    // others' end, rather than hand them over in their bakes.
    let mut beyond_share = 0usize;
    let mut unfinished_since_change = n;
    let leases = kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        clients.home().client.clone(),
        "shop",
    );
    // The simulated fleet's own work while the releases run: what a change
    // to it saves (or costs) the machine the controllers share.
    let fleet_pid = sim.id().expect("the fleet's pid");
    let fleet_cpu_before = cpu_seconds(fleet_pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3600);
    let statuses: Vec<ReleaseStatus> = loop {
        let all: Vec<ReleaseStatus> = match store.list().await {
            Ok((list, _)) => list.into_iter().filter_map(|r| r.status).collect(),
            Err(_) => Vec::new(),
        };
        let ended = all.iter().filter(|s| s.phase.is_terminal()).count();
        if all.len() == docs.len() && ended == docs.len() {
            break all;
        }
        if let Ok(list) = leases.list(&Default::default()).await {
            let alive = replicas - usize::from(killed);
            let share = unfinished_since_change.div_ceil(alive);
            let mut held: BTreeMap<String, usize> = BTreeMap::new();
            for l in list.items {
                let under = l
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(cutover::fleet::lease::HELD_UNDER));
                let holder = l.spec.and_then(|s| s.holder_identity);
                if let (Some(_), Some(holder)) = (under, holder)
                    && !(killed && holder == "ctl-0")
                {
                    *held.entry(holder).or_default() += 1;
                }
            }
            let most = held.values().copied().max().unwrap_or(0);
            beyond_share = beyond_share.max(most.saturating_sub(share));
        }
        if kill && !killed && replicas > 1 && ended * 3 >= docs.len() {
            let _ = ctls[0].start_kill();
            let _ = ctls[0].wait().await;
            killed = true;
            unfinished_since_change = n - ended;
        }
        if Instant::now() > deadline {
            let open: Vec<_> = all.iter().filter(|s| !s.phase.is_terminal()).collect();
            panic!(
                "{} of {n} releases did not finish; one: {:?}",
                n - (all.len() - open.len()),
                open.first().map(|s| &s.message)
            );
        }
        // Listing a thousand releases is work for the fleet too (their
        // statuses, some 17 KB each): not too often, the more the rarer
        // (every 10 s at 1,000; at 5,000, 85 MB every 50 s).
        tokio::time::sleep(Duration::from_secs((n as u64 / 100).clamp(3, 60))).await;
    };
    let wall = started.elapsed().as_secs_f64();
    let fleet_cpu = cpu_seconds(fleet_pid) - fleet_cpu_before;
    sampling.store(false, Ordering::Relaxed);
    let (peak_rss_kb, peak_file_kb) = peaks.join().expect("the sampler");
    // Every replica alive at the end (a killed one's share is lost with it).
    let cpu: f64 = pids[usize::from(killed)..]
        .iter()
        .map(|p| cpu_seconds(*p))
        .sum();
    let completed = statuses
        .iter()
        .filter(|s| s.phase == cutover::spec::status::Phase::Completed)
        .count();
    // Why the others ended as they did, grouped by phase and message (its
    // figures taken out, so one cause is one line).
    let mut why: BTreeMap<String, usize> = BTreeMap::new();
    for s in statuses
        .iter()
        .filter(|s| s.phase != cutover::spec::status::Phase::Completed)
    {
        let message: String = s
            .message
            .as_deref()
            .unwrap_or("")
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        *why.entry(format!("{:?}: {message}", s.phase)).or_default() += 1;
    }
    let mut why: Vec<(usize, String)> = why.into_iter().map(|(m, n)| (n, m)).collect();
    why.sort_by_key(|w| std::cmp::Reverse(w.0));
    for (count, message) in why.iter().take(10) {
        println!("# not completed, {count}: {message}");
    }
    // Every step started and completed exactly once, in order.
    let not_once = statuses
        .iter()
        .filter(|s| {
            let of = |e: TransitionEvent| {
                s.history
                    .iter()
                    .filter(|t| t.event == e)
                    .map(|t| t.step)
                    .collect::<Vec<u32>>()
            };
            let all: Vec<u32> = (0..s.plan.len() as u32).collect();
            of(TransitionEvent::StepStarted) != all || of(TransitionEvent::StepCompleted) != all
        })
        .count();
    // From a timed step becoming due (ready + wait) to its completion's write.
    let mut late: Vec<f64> = Vec::new();
    // `CUTOVER_BENCH_LATE=N` prints the N latest steps.
    let mut worst: Vec<(f64, String)> = Vec::new();
    for s in &statuses {
        let mut ready = BTreeMap::new();
        for t in &s.history {
            match t.event {
                TransitionEvent::StepReady => {
                    ready.insert(t.step, t.at);
                }
                TransitionEvent::StepCompleted => {
                    let wait = s.plan[t.step as usize].wait;
                    if let (Some(r), false) = (ready.get(&t.step), wait == Span::ZERO) {
                        let due = *r + wait.signed();
                        let fleet = t.at.duration_since(due).as_secs_f64().max(0.0);
                        late.push(fleet / scale * 1000.0);
                        worst.push((
                            fleet / scale * 1000.0,
                            format!(
                                "{:?} {:?} (step {})",
                                s.plan[t.step as usize].kind,
                                s.plan[t.step as usize].cluster,
                                t.step
                            ),
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    late.sort_by(f64::total_cmp);
    if let Some(n) = std::env::var("CUTOVER_BENCH_LATE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        worst.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (ms, step) in worst.iter().take(n) {
            println!("# late {ms:.0} ms: {step}");
        }
    }
    let p99 = late
        .get(((late.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    figure("controller_releases", n as f64, "releases");
    figure("controller_replicas", replicas as f64, "replicas");
    figure(
        "controller_replicas_killed",
        if killed { 1.0 } else { 0.0 },
        "replicas",
    );
    figure("releases_not_every_step_once", not_once as f64, "releases");
    figure(
        "controller_releases_completed",
        completed as f64,
        "releases",
    );
    figure("controller_time_scale", scale, "x");
    figure("controller_wall_s", wall, "s");
    figure("controller_rss_mb", peak_rss_kb as f64 / 1024.0, "MiB");
    figure(
        "controller_rss_file_mb",
        peak_file_kb as f64 / 1024.0,
        "MiB",
    );
    figure(
        "controller_rss_mb_per_release",
        peak_rss_kb as f64 / 1024.0 / n.div_ceil(replicas) as f64,
        "MiB",
    );
    figure("controller_cpu_s", cpu, "s");
    figure("fleet_cpu_s", fleet_cpu, "s");
    figure("step_latency_p99_ms", p99, "ms");
    figure(
        "controller_held_beyond_share_max",
        beyond_share as f64,
        "releases",
    );
    // Stopped as a rollout stops them (SIGTERM), so a heap profile
    // (`--features dhat-heap`) is written on the way out.
    let alive = if killed { &pids[1..] } else { &pids[..] };
    for pid in alive {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    for ctl in &mut ctls {
        if tokio::time::timeout(Duration::from_secs(120), ctl.wait())
            .await
            .is_err()
        {
            let _ = ctl.start_kill();
        }
    }
    let losses: usize = (0..replicas)
        .map(|i| {
            let log = std::fs::read_to_string(log_path(i)).unwrap_or_default();
            log.lines().filter(|l| l.contains(LEASE_LOST)).count()
        })
        .sum();
    figure("leader_losses", losses as f64, "losses");
    let _ = sim.start_kill();
}

/// What the controller logs when the Lease it drove releases under lapsed.
const LEASE_LOST: &str = cutover::controller::LEASE_LOST;

/// The largest resident memory of any of `pids` while `sampling`, in kB, and
/// of it the pages mapped from files (the executable's code, the shared
/// libraries: a fixed cost, whatever the number of releases). The largest
/// replica is what one process needs. Sampled every second on a thread of
/// its own, not when the releases are listed (every 10 s at 1,000): a rise
/// of a few seconds between two lists counts. A replica killed is sampled
/// until it is gone.
fn sample_peaks(pids: Vec<u32>, sampling: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut rss_peak, mut file_peak) = (0, 0);
        while sampling.load(Ordering::Relaxed) {
            for p in &pids {
                let rss = rss_kb(*p, "VmRSS:");
                if rss > rss_peak {
                    rss_peak = rss;
                    file_peak = rss_kb(*p, "RssFile:");
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        (rss_peak, file_peak)
    })
}

/// A figure in kB of `/proc/PID/status` (`VmRSS:`, `RssFile:`).
fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}
