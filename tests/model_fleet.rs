//! The model test against the simulated fleet: random sequences of what
//! pipelines, people and the world do to one Release that two controller
//! replicas drive, through the `cutover` binary. After every event it checks,
//! from an audit of every change in every cluster (so no state between two
//! looks is missed):
//!
//! - every request finds a Ready pod: the gateway never answers 503;
//! - nothing was deleted but an old colour's cutover-owned Deployment that no
//!   request reached;
//! - a version whose gates fail from its start never took more than its
//!   canary share on a production cluster;
//! - the status never says a version completed unless it serves everywhere,
//!   nor that it went back to blue while it still takes requests;
//! - a stale file never replaced what was in flight.
//!
//! Seeded and reproducible: a failure prints the seed and the events;
//! `MODEL_SEED=N` runs that sequence alone, `MODEL_SEQUENCES=N` sets how many
//! sequences each test runs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::time::Duration;

use common::controller::{Controller, start_controller, system_namespace};
use common::{BLUE, NS, World, finish, tier2_release};
use cutover::engine::plan;
use cutover::spec::status::{AbortStage, Mode, Phase, StepKind};
use cutover::spec::{ClusterRole, Percent, Release, ReleaseStatus};
use cutover_sim::audit::Audit;
use cutover_sim::faults::ApiFault;
use cutover_sim::scenario::{BehaviourChange, UnreachableMode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Fleet seconds per wall second: a tier-2 lifecycle takes a few seconds.
const SCALE: f64 = 1000.0;
const EVENTS: usize = 30;
/// Sequences per test; four tests run (two at a time on two cores).
const SEQUENCES: u64 = 13;
const EPS: f64 = 1e-9;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Event {
    /// A pipeline ships the next version (`--supersede` when one is in flight);
    /// `bad`: its error ratio fails the gates from its start.
    NewVersion {
        bad: bool,
    },
    /// `run -f` of a file still naming an earlier version.
    StaleFile,
    /// `run -f` of the file naming the version the Release has now.
    SameFile,
    Abort,
    Pause,
    Resume,
    Promote,
    Freeze,
    Unfreeze,
    /// kill -9 of a controller replica; a new one starts in its place.
    KillController,
    /// A cluster's API server refuses connections, or restarts and refuses
    /// watches while its watch caches fill.
    Outage,
    Recover,
    /// The version in flight starts failing its gates.
    GateFails,
    /// A cluster's metrics endpoint sends headers and then trickles.
    MetricsHang,
    MetricsBack,
    /// Nothing happens for a while.
    Wait,
}

/// What a command that failed said, for the log.
fn said(code: i32, out: &str) -> String {
    if code == 0 {
        return String::new();
    }
    let text: String = out.split_whitespace().collect::<Vec<_>>().join(" ");
    format!(": {}", text.chars().take(240).collect::<String>())
}

fn draw(rng: &mut StdRng) -> Event {
    const WEIGHTED: [(Event, u32); 16] = [
        (Event::NewVersion { bad: false }, 6),
        (Event::NewVersion { bad: true }, 2),
        (Event::StaleFile, 2),
        (Event::SameFile, 1),
        (Event::Abort, 2),
        (Event::Pause, 1),
        (Event::Resume, 2),
        (Event::Promote, 2),
        (Event::Freeze, 1),
        (Event::Unfreeze, 2),
        (Event::KillController, 2),
        (Event::Outage, 1),
        (Event::Recover, 2),
        (Event::GateFails, 1),
        (Event::MetricsHang, 1),
        (Event::MetricsBack, 2),
    ];
    let total: u32 = WEIGHTED.iter().map(|(_, w)| w).sum::<u32>() + 4;
    let mut pick = rng.random_range(0..total);
    for (e, w) in WEIGHTED {
        if pick < w {
            return e;
        }
        pick -= w;
    }
    Event::Wait
}

struct Sequence {
    seed: u64,
    w: World,
    audit: std::sync::Arc<Audit>,
    controllers: Vec<Controller>,
    started: u32,
    rng: StdRng,
    /// Versions shipped, oldest first.
    shipped: Vec<String>,
    bad_from_birth: BTreeSet<String>,
    faults: usize,
    /// Cluster, fault, and whether it crashed after a write (and comes back restarting).
    outages: Vec<(String, usize, bool)>,
    stalled: BTreeSet<String>,
    production: Vec<String>,
    canary: (String, f64),
    log: Vec<String>,
    violations: Vec<String>,
}

impl Sequence {
    async fn start(seed: u64) -> Sequence {
        let mut w = World::start(None, SCALE, &tier2_release()).await;
        // The audit starts once blue serves everywhere.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while w.sim.unserved_rps("checkout") > 0.0 {
            assert!(std::time::Instant::now() < deadline, "blue never served");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let audit = w.sim.audit();
        system_namespace(&w).await;
        let controllers = vec![start_controller(&w, "ctl-0"), start_controller(&w, "ctl-1")];
        let steps = plan::build(&w.rel, Mode::BlueGreen);
        let canary = steps
            .iter()
            .find(|s| s.kind == StepKind::Canary)
            .expect("the plan has a canary");
        let canary = (
            canary.cluster.clone().unwrap(),
            f64::from(canary.weight.unwrap_or(Percent::ZERO).basis_points()) / 10_000.0,
        );
        let production = w
            .rel
            .clusters
            .iter()
            .filter(|c| c.role == ClusterRole::Production)
            .map(|c| c.name.clone())
            .collect();
        Sequence {
            seed,
            w,
            audit,
            controllers,
            started: 2,
            rng: StdRng::seed_from_u64(seed),
            shipped: vec![BLUE.to_string()],
            bad_from_birth: BTreeSet::new(),
            faults: 1000,
            outages: Vec::new(),
            stalled: BTreeSet::new(),
            production,
            canary,
            log: Vec::new(),
            violations: Vec::new(),
        }
    }

    /// The Release as stored in the home cluster (read behind its API
    /// server, so an outage of it does not blind the checks).
    async fn status(&self) -> Option<(String, ReleaseStatus)> {
        let store = &self.w.sim.cluster(&self.w.fleet.home)?.store;
        let kind = store.kind_of("cutover.dev", "releases")?;
        let obj = store.get(&kind, NS, "checkout").ok()?;
        let r: Release = serde_json::from_value((*obj).clone()).expect("a stored Release reads");
        Some((r.spec.version.clone(), r.status.unwrap_or_default()))
    }

    /// Runs a `cutover` command; returns its exit code.
    async fn cutover(&self, args: &[&str]) -> (i32, String) {
        let (code, out, err) = finish(self.w.cutover(args).spawn().unwrap()).await;
        (code, format!("{out}{err}"))
    }

    async fn run_file(&self, version: &str, extra: &[&str]) -> (i32, String) {
        let path = self.w.dir.path().join(format!("release-{version}.yaml"));
        let text = tier2_release().replace("version: 2.14.0", &format!("version: {version}"));
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap().to_string();
        let mut args = vec!["run", "-f", path.as_str(), "--detach"];
        args.extend_from_slice(extra);
        self.cutover(&args).await
    }

    /// `version` answers 40 % errors from now on, in `cluster` or everywhere.
    fn fail(&mut self, version: &str, cluster: Option<String>) {
        self.faults += 1;
        self.w.sim.behaviours().activate(
            self.faults,
            BehaviourChange {
                app: Some("checkout".into()),
                version: Some(version.into()),
                cluster,
                error_ratio: Some(Percent::from_whole(40)),
                ..Default::default()
            },
        );
    }

    async fn apply(&mut self, e: Event) -> String {
        let name = "checkout";
        match e {
            Event::NewVersion { bad } => {
                let v = format!("3.{}.0", self.shipped.len());
                if bad {
                    // Fine on staging, failing under production's traffic:
                    // only the canary's gates can stop it.
                    for c in self.production.clone() {
                        self.fail(&v, Some(c));
                    }
                    self.bad_from_birth.insert(v.clone());
                }
                self.shipped.push(v.clone());
                let in_flight = self
                    .status()
                    .await
                    .is_some_and(|(_, s)| s.version.is_some() && !s.phase.is_terminal());
                // Pipelines name the version on the command line or write it into the file.
                let (code, out) = if in_flight {
                    let file = self.shipped[self.shipped.len() - 2].clone();
                    self.run_file(&file, &["--version", &v, "--supersede"])
                        .await
                } else if self.rng.random_bool(0.5) {
                    self.run_file(BLUE, &["--version", &v]).await
                } else {
                    self.run_file(&v, &[]).await
                };
                format!(
                    "new version {v} (bad: {bad}, supersede: {in_flight}) → exit {code}{}",
                    said(code, &out)
                )
            }
            Event::StaleFile => {
                let i = self.rng.random_range(0..self.shipped.len());
                let stale = self.shipped[i].clone();
                let before = self.status().await;
                let (code, out) = self.run_file(&stale, &[]).await;
                let after = self.status().await;
                // While the same revision stayed in flight throughout, a file
                // naming another version must have been refused, unwritten. A
                // file naming the version already submitted (a superseding
                // one the driver has not picked up yet) is the pipeline's own
                // retry, not stale: submitting it again changes nothing.
                if let (Some((spec0, s0)), Some((spec1, s1))) = (&before, &after) {
                    let in_flight = |s: &ReleaseStatus| {
                        s.version.is_some() && !s.phase.is_terminal() && s.phase != Phase::Pending
                    };
                    if in_flight(s0)
                        && in_flight(s1)
                        && s0.revision == s1.revision
                        && s0.version.as_deref() != Some(stale.as_str())
                        && *spec0 != stale
                        && (code == 0 || spec0 != spec1)
                    {
                        self.violations.push(format!(
                            "a stale file naming {stale} was taken while {:?} was in flight (exit {code}, spec {spec0} → {spec1}): {out}",
                            s0.version
                        ));
                    }
                }
                format!("stale file {stale} → exit {code}")
            }
            Event::SameFile => {
                let Some((spec, _)) = self.status().await else {
                    return "same file: no release yet".into();
                };
                let (code, _) = self.run_file(&spec, &[]).await;
                format!("same file {spec} → exit {code}")
            }
            Event::Abort => {
                let (code, _) = self
                    .cutover(&["abort", name, "--reason", "model", "-n", NS])
                    .await;
                format!("abort → exit {code}")
            }
            Event::Pause | Event::Resume | Event::Promote => {
                let verb = match e {
                    Event::Pause => "pause",
                    Event::Resume => "resume",
                    _ => "promote",
                };
                let (code, _) = self.cutover(&[verb, name, "-n", NS]).await;
                format!("{verb} → exit {code}")
            }
            Event::Freeze => {
                let (code, _) = self
                    .cutover(&["freeze", "--reason", "model", "--author", "model", "-n", NS])
                    .await;
                format!("freeze → exit {code}")
            }
            Event::Unfreeze => {
                let (code, _) = self
                    .cutover(&["unfreeze", "--all", "--reason", "model", "-n", NS])
                    .await;
                format!("unfreeze → exit {code}")
            }
            Event::KillController => {
                let i = self.rng.random_range(0..self.controllers.len());
                let mut old = self.controllers.remove(i);
                let _ = old.child.start_kill();
                let _ = old.child.wait().await;
                let identity = format!("ctl-{}", self.started);
                self.started += 1;
                self.controllers.push(start_controller(&self.w, &identity));
                format!("kill -9 {} (started {identity})", old.identity)
            }
            Event::Outage => {
                let names = self.w.sim.cluster_names();
                let c = names[self.rng.random_range(0..names.len())].clone();
                let kind = self.rng.random_range(0..3);
                self.faults += 2;
                let faults = self.w.sim.cluster(&c).unwrap().faults.clone();
                let cut = ApiFault::Unreachable(UnreachableMode::Refuse);
                match kind {
                    0 => {
                        faults.activate(self.faults, cut);
                        self.outages.push((c.clone(), self.faults, false));
                        format!("outage of {c}")
                    }
                    1 => {
                        // A restart: every connection cut, then the API
                        // server answers while its watch caches fill
                        // (watches and cached lists refused) until it recovers.
                        faults.activate(self.faults - 1, cut);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        faults.activate(self.faults, ApiFault::CacheInitializing);
                        faults.clear(self.faults - 1);
                        self.outages.push((c.clone(), self.faults, false));
                        format!("{c} restarts, its watch caches filling")
                    }
                    _ => {
                        // The next write lands, and its answer and events are lost.
                        faults.crash_after_next_write(self.faults);
                        self.outages.push((c.clone(), self.faults, true));
                        format!("{c} goes down after its next write commits")
                    }
                }
            }
            Event::Recover => {
                let Some((c, id, crash)) = self.outages.pop() else {
                    return "recover: no outage".into();
                };
                let faults = self.w.sim.cluster(&c).unwrap().faults.clone();
                if crash && !faults.disarm_crash() {
                    // It went down: it comes back as a restarted server does,
                    // its watch caches filling for a while.
                    faults.activate(id + 1, ApiFault::CacheInitializing);
                    faults.clear(id);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    faults.clear(id + 1);
                    return format!("{c} recovers from its crash");
                }
                faults.clear(id);
                format!("{c} recovers")
            }
            Event::GateFails => {
                let Some((v, _)) = self.status().await else {
                    return "gate fails: no release yet".into();
                };
                self.fail(&v, None);
                format!("{v} starts failing its gates")
            }
            Event::MetricsHang => {
                let names = self.w.sim.cluster_names();
                let c = names[self.rng.random_range(0..names.len())].clone();
                self.w.sim.cluster(&c).unwrap().faults.stall_metrics(true);
                self.stalled.insert(c.clone());
                format!("metrics of {c} hang")
            }
            Event::MetricsBack => {
                let Some(c) = self.stalled.pop_first() else {
                    return "metrics back: none hung".into();
                };
                self.w.sim.cluster(&c).unwrap().faults.stall_metrics(false);
                format!("metrics of {c} answer again")
            }
            Event::Wait => "wait".into(),
        }
    }

    /// The invariants, as of now.
    async fn check(&mut self, event: usize) {
        let at = |what: String| format!("after event {event}: {what}");
        for u in self.audit.unserved() {
            self.violations.push(at(format!(
                "{:.1} req/s of {} {} ({}) on {} found no Ready pod (rv {})",
                u.rps, u.app, u.version, u.colour, u.cluster, u.rv
            )));
        }
        for d in self.audit.deletions() {
            let allowed = d.resource == "deployments" && d.managed && !d.serving;
            if !allowed {
                self.violations.push(at(format!(
                    "{} {}/{} deleted on {} (managed by cutover: {}, serving: {})",
                    d.resource, d.namespace, d.name, d.cluster, d.managed, d.serving
                )));
            }
        }
        for v in &self.bad_from_birth {
            for c in &self.production {
                let peak = self.audit.peak_share(c, "checkout", v);
                let limit = if *c == self.canary.0 {
                    self.canary.1
                } else {
                    0.0
                };
                if peak > limit + EPS {
                    self.violations.push(at(format!(
                        "{v}, failing its gates from the start, took {:.1} % of {c}",
                        peak * 100.0
                    )));
                }
            }
        }
        // A Completed status is checked between two identical looks at where requests go.
        let before = self.w.sim.shares("checkout");
        let status = self.status().await;
        let after = self.w.sim.shares("checkout");
        if let Some((_, s)) = &status
            && s.phase == Phase::Completed
            && before == after
        {
            let v = s.version.clone().unwrap_or_default();
            for c in &self.w.rel.clusters {
                let share = after
                    .get(&c.name)
                    .and_then(|m| m.get(&v))
                    .copied()
                    .unwrap_or(0.0);
                if (share - 1.0).abs() > 1e-6 {
                    self.violations.push(at(format!(
                        "the status says {v} completed, but it takes {:.1} % of {}",
                        share * 100.0,
                        c.name
                    )));
                }
            }
        }
        // Nor that a version went back to blue (traffic restored, or rolled
        // back) while it still takes requests somewhere.
        if let Some((_, s)) = &status
            && before == after
            && let Some(v) = s.version.clone()
            && s.blue_version.as_deref() != Some(v.as_str())
        {
            let restored = s
                .abort
                .as_ref()
                .is_some_and(|a| a.stage == AbortStage::ScalingDownGreen);
            if restored || s.phase == Phase::Aborted {
                for (cluster, by_version) in &after {
                    let share = by_version.get(&v).copied().unwrap_or(0.0);
                    if share > EPS {
                        self.violations.push(at(format!(
                            "the status says {v} is back on blue ({:?}), but it takes {:.1} % of {cluster}",
                            s.phase,
                            share * 100.0
                        )));
                    }
                }
            }
        }
        // Each violation is reported once.
        self.violations.dedup();
    }

    async fn play(mut self) -> (usize, Vec<String>) {
        for i in 0..EVENTS {
            let e = draw(&mut self.rng);
            let what = self.apply(e).await;
            self.log.push(format!("{i:>2}: {what}"));
            let pause = self.rng.random_range(50..400);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            self.check(i).await;
            if !self.violations.is_empty() {
                break;
            }
        }
        if std::env::var_os("MODEL_VERBOSE").is_some() {
            let s = self.status().await.map(|(_, s)| s).unwrap_or_default();
            println!(
                "seed {}: {} changes audited, {} lost; ends {:?} {:?} revision {}\n  {}",
                self.seed,
                self.audit.changes(),
                self.audit.lost(),
                s.phase,
                s.version,
                s.revision,
                self.log.join("\n  ")
            );
            for t in &s.history {
                println!("    {t:?}");
            }
            let keep = std::env::temp_dir().join(format!("model-{}", self.seed));
            let _ = std::fs::create_dir_all(&keep);
            for e in std::fs::read_dir(self.w.dir.path()).unwrap().flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
                }
            }
        }
        let events = self.log.len();
        let mut report = Vec::new();
        if !self.violations.is_empty() {
            let mut seen = BTreeSet::new();
            self.violations.retain(|v| seen.insert(v.clone()));
            report.push(format!(
                "seed {} (MODEL_SEED={} to replay), {} changes audited, {} lost\n  events:\n    {}\n  violations:\n    {}",
                self.seed,
                self.seed,
                self.audit.changes(),
                self.audit.lost(),
                self.log.join("\n    "),
                self.violations.join("\n    ")
            ));
        }
        (events, report)
    }
}

async fn sequences(first_seed: u64) {
    let seeds: Vec<u64> = match std::env::var("MODEL_SEED") {
        Ok(s) => vec![s.parse().expect("MODEL_SEED is a number")],
        Err(_) => {
            let n = std::env::var("MODEL_SEQUENCES")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(SEQUENCES);
            (first_seed..first_seed + n).collect()
        }
    };
    let (mut events, mut failures) = (0, BTreeMap::new());
    for seed in &seeds {
        let (n, report) = Sequence::start(*seed).await.play().await;
        events += n;
        if !report.is_empty() {
            failures.insert(*seed, report.join("\n"));
        }
    }
    // Straight to stderr, past the test harness's capture: CI's log shows it.
    let _ = writeln!(
        std::io::stderr(),
        "model on the simulated fleet (seeds {first_seed}..): {} sequences × {EVENTS} events ({events} run) × {} violating sequences",
        seeds.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{}",
        failures.into_values().collect::<Vec<_>>().join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operator_and_world_events_never_break_what_serves_seeds_1000() {
    sequences(1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operator_and_world_events_never_break_what_serves_seeds_2000() {
    sequences(2000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operator_and_world_events_never_break_what_serves_seeds_3000() {
    sequences(3000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operator_and_world_events_never_break_what_serves_seeds_4000() {
    sequences(4000).await;
}
