//! `cutover demo`: starts the simulated fleet in-process, installs the CRDs
//! and a serving version, and drives the checkout example through the whole
//! lifecycle with live progress, ending with a summary in fleet time.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use jiff::Timestamp;
use tokio::sync::mpsc;

use super::Output;
use super::connect::{connect, read_fleet};
use super::exit::{CliResult, Exit};
use super::load::exit_of_refusal;
use super::report::Reporter;
use super::run::exit_of;
use crate::admission;
use crate::driver::{DriveOptions, Driver, Outcome, Progress};
use crate::engine::timeline::span_of;
use crate::fleet::bootstrap;
use crate::fleet::state::ReleaseStore;
use crate::sim::{Scenario, SimFleet, SimOptions};
use crate::spec::release::ReleaseDocument;
use crate::spec::status::{StepKind, TransitionEvent};
use crate::spec::{Fleet, InputErrors, ReleaseStatus, ResolvedRelease, Source, TierPolicyFile};

const RELEASE: &str = include_str!("../../examples/checkout/release.yaml");
/// The version serving before the demo's release.
pub const BLUE_VERSION: &str = "2.13.0";

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// A scenario: a name from examples/scenarios (e.g. bad-canary) or a file.
    #[arg(long)]
    pub scenario: Option<String>,
    /// List the scenarios, one line each, and exit.
    #[arg(long, conflicts_with = "scenario")]
    pub list: bool,
    /// How much faster than the wall clock fleet time runs.
    #[arg(long, default_value_t = 600.0)]
    pub time_scale: f64,
    /// Draw the release's timeline into this SVG file at the end.
    #[arg(long, value_name = "FILE.svg")]
    pub report: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

/// Where the scenarios shipped with cutover live.
pub fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/scenarios")
}

fn scenario_path(name: &str) -> PathBuf {
    let p = PathBuf::from(name);
    if p.exists() || name.ends_with(".yaml") {
        return p;
    }
    scenarios_dir().join(format!("{name}.yaml"))
}

/// Reads a scenario by name (from examples/scenarios) or path.
pub fn load_scenario(name: &str) -> CliResult<Scenario> {
    let path = scenario_path(name);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read scenario {}", path.display()))?;
    Ok(Scenario::parse(&path.display().to_string(), &text)?)
}

/// Every shipped scenario: its name and one line on what it replays.
pub fn list_scenarios() -> CliResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    for p in paths {
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let s = load_scenario(&p.display().to_string())?;
        let line = s
            .rehearsal
            .as_ref()
            .map(|r| r.summary.clone())
            .or(s.description.clone())
            .unwrap_or_default();
        out.push((name, line));
    }
    Ok(out)
}

pub async fn run(args: &DemoArgs) -> CliResult {
    if args.list {
        let all = list_scenarios()?;
        let width = all.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, line) in all {
            println!("{name:<width$}  {line}");
        }
        return Ok(Exit::Ok);
    }
    let scenario = match &args.scenario {
        None => Scenario::default_fleet(),
        Some(name) => load_scenario(name)?,
    };
    let clock_tty = std::io::stdout().is_terminal();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let time_scale = args.time_scale;
    let output = args.output;
    if scenario.time_scale(time_scale) < time_scale && output == Output::Text {
        println!(
            "time scale {}x: this scenario stays faithful up to it (its API server's latency is wall-clock time)",
            scenario.time_scale(time_scale)
        );
    }
    let rehearsal = tokio::spawn(async move {
        rehearse(&scenario, time_scale, Some(tx), |sim, rel| {
            if output == Output::Text {
                println!(
                    "simulated fleet: {} (kubeconfig {})",
                    sim.cluster_names().join(", "),
                    sim.kubeconfig_path().display()
                );
                println!(
                    "installing CRDs and {} {BLUE_VERSION} (blue) on every cluster",
                    rel.app
                );
            }
        })
        .await
    });
    let mut reporter: Option<Reporter> = None;
    let mut last_status = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            p = rx.recv() => match p {
                Some(Event::Started { release, clock }) => {
                    let mut r = Reporter::new(args.output, clock_tty, clock);
                    r.submitted(&release, "demo");
                    reporter = Some(r);
                }
                Some(Event::Progress(p)) => {
                    if let Progress::Status(s) = &p {
                        last_status = Some(s.clone());
                    }
                    if let Some(r) = reporter.as_mut() {
                        r.progress(&p);
                    }
                }
                None => break,
            },
            _ = ticker.tick() => if let Some(r) = reporter.as_mut() { r.tick() },
        }
    }
    let done = rehearsal
        .await
        .map_err(|e| anyhow!("rehearsal task: {e}"))??;
    if let Some(refusal) = &done.refusal {
        eprintln!("error: {refusal}");
    }
    if let (Some(r), Some(o)) = (reporter.as_mut(), &done.outcome) {
        r.outcome(o);
    }
    let status = done.status.clone().or(last_status.map(|b| *b));
    if let (Output::Text, Some(s)) = (args.output, &status) {
        println!("{}", summary(s));
    }
    if let (Some(path), Some(s)) = (&args.report, &status) {
        let svg = crate::chart::timeline_svg(&done.name, s);
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        if args.output == Output::Text {
            println!("timeline: {}", path.display());
        }
    }
    let exit = done.exit;
    done.sim.shutdown().await;
    Ok(exit)
}

/// What a rehearsal reports as it goes.
pub enum Event {
    /// The Release was submitted; the fleet's clock, for progress lines.
    Started {
        release: Box<crate::spec::Release>,
        clock: crate::clock::SharedClock,
    },
    Progress(Progress),
}

/// A finished rehearsal, its fleet still running for inspection.
pub struct Rehearsed {
    pub sim: SimFleet,
    pub dir: tempfile::TempDir,
    pub fleet: Fleet,
    pub name: String,
    /// The release as resolved; none when it was refused.
    pub release: Option<ResolvedRelease>,
    pub exit: Exit,
    /// How the drive ended; none when the release was refused before it started.
    pub outcome: Option<Outcome>,
    /// The Release's final status.
    pub status: Option<ReleaseStatus>,
    /// Why the release was refused before any write, when it was.
    pub refusal: Option<String>,
    /// The scenario's objects as created before the release.
    pub objects: Vec<SharedObject>,
}

impl Rehearsed {
    /// A rehearsal whose release was refused before it was submitted, as
    /// `cutover run` refuses it: the same exit code and words.
    fn refused(
        sim: SimFleet,
        dir: tempfile::TempDir,
        fleet: Fleet,
        why: &admission::Refused,
        src: &Source,
        objects: Vec<SharedObject>,
    ) -> Rehearsed {
        Rehearsed {
            sim,
            dir,
            fleet,
            name: why.name.clone(),
            release: None,
            exit: exit_of_refusal(why.refusal()),
            outcome: None,
            status: None,
            refusal: Some(why.message(Some(src), ", nothing was touched")),
            objects,
        }
    }
}

/// An object a scenario created beside the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedObject {
    pub cluster: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// The example release (examples/checkout/release.yaml) as built in.
pub fn example_release() -> &'static str {
    RELEASE
}

/// The example release as the scenario changes it, as YAML text.
pub fn scenario_release(scenario: &Scenario) -> CliResult<String> {
    let Some(patch) = scenario.rehearsal.as_ref().and_then(|r| r.release.as_ref()) else {
        return Ok(RELEASE.to_string());
    };
    let mut doc: serde_json::Value = serde_saphyr::from_str(RELEASE)?;
    json_patch::merge(&mut doc, patch);
    Ok(serde_saphyr::to_string(&doc)?)
}

/// Runs the example release through `scenario` on a new simulated fleet:
/// installs the CRDs and blue, creates the scenario's objects, submits the
/// release and drives it to its end. `ready` is told once the fleet is up.
pub async fn rehearse(
    scenario: &Scenario,
    time_scale: f64,
    events: Option<mpsc::UnboundedSender<Event>>,
    ready: impl FnOnce(&SimFleet, &ResolvedRelease),
) -> CliResult<Rehearsed> {
    let release_text = scenario_release(scenario)?;
    let source_name = if scenario
        .rehearsal
        .as_ref()
        .is_some_and(|r| r.release.is_some())
    {
        "examples/checkout/release.yaml (as the scenario changes it)"
    } else {
        "examples/checkout/release.yaml"
    };
    let src = Source::new(source_name, &release_text);
    let doc: ReleaseDocument = src.decode().map_err(|e| InputErrors(vec![e]))?;
    let windows = match scenario.rehearsal.as_ref().map(|r| &r.freeze_windows) {
        Some(w) if !w.is_empty() => {
            let file = serde_json::json!({
                "apiVersion": crate::spec::API_VERSION,
                "kind": "FreezeWindows",
                "windows": w,
            });
            crate::freeze::window::parse(
                "the scenario's freezeWindows",
                &serde_saphyr::to_string(&file)?,
            )?
        }
        _ => Vec::new(),
    };
    let dir = tempfile::tempdir()?;
    let time_scale = scenario.time_scale(time_scale);
    let sim = SimFleet::start(SimOptions {
        scenario: scenario.clone(),
        time_scale,
        dir: dir.path().to_path_buf(),
    })
    .await
    .map_err(|e| anyhow!("starting the simulated fleet: {e}"))?;
    let fleet = read_fleet(sim.fleet_path())?;
    let policy = TierPolicyFile::builtin();
    // Refused as `cutover run` refuses it: before any request.
    let rel = match admission::admit(&admission::Request::of(&doc, &fleet, &policy, None))
        .admitted(&doc.metadata.name)
    {
        Ok(r) => r,
        Err(refused) => {
            return Ok(Rehearsed::refused(
                sim,
                dir,
                fleet,
                &refused,
                &src,
                Vec::new(),
            ));
        }
    };
    ready(&sim, &rel);
    let conn = connect(fleet.clone(), Some(sim.kubeconfig_path()), &rel.namespace).await?;
    for c in &rel.clusters {
        bootstrap::install_crds(conn.clients.get(&c.name)?).await?;
        bootstrap::install_serving(conn.clients.get(&c.name)?, &rel, BLUE_VERSION).await?;
    }
    let mut objects = Vec::new();
    for o in scenario.rehearsal.iter().flat_map(|r| r.objects.iter()) {
        let uid =
            bootstrap::install_object(conn.clients.get(&o.cluster)?, &rel.namespace, &o.object)
                .await?;
        objects.push(SharedObject {
            cluster: o.cluster.clone(),
            kind: o.object["kind"].as_str().unwrap_or_default().to_string(),
            name: o.object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            uid,
        });
    }
    // And, as `cutover run` does, it does not start while a freeze applies.
    let clusters = rel.cluster_names();
    let (freezes, unreadable) = crate::fleet::freezes::read_all(&conn.clients, &clusters).await?;
    let reading = admission::FreezeReading {
        freezes: &freezes,
        unreadable: &unreadable,
        windows: &windows,
        now: conn.clock.now(),
    };
    let request = admission::Request::of(&doc, &fleet, &policy, Some(reading));
    if let Err(refused) = admission::admit(&request).admitted(&rel.name) {
        return Ok(Rehearsed::refused(sim, dir, fleet, &refused, &src, objects));
    }
    // The release itself runs as a delivery pipeline would run `cutover
    // run`: under the roles deploy/ ships (cutover-release at home,
    // cutover-member everywhere), not as the administrator who set up.
    let conn = connect(
        fleet.clone(),
        Some(&sim.kubeconfig_as("pipeline")),
        &rel.namespace,
    )
    .await?;
    let store = ReleaseStore::new(conn.clients.home(), &rel.namespace);
    let live = store.upsert(&doc).await?;
    let (tx, mut rx) = futures::channel::mpsc::unbounded();
    if let Some(events) = &events {
        let _ = events.send(Event::Started {
            release: Box::new(live),
            clock: conn.clock.clone(),
        });
    }
    let driver = Driver {
        fleet: conn.clients.clone(),
        fleet_spec: fleet.clone(),
        policy,
        clock: conn.clock.clone(),
        windows,
        identity: crate::driver::identity("demo"),
        lease_duration: Duration::from_secs(15),
        idle: Duration::from_millis(500),
        under: None,
        notifier: conn.notifier(),
        // One release.
        turns: crate::driver::Turns::new(1),
        parking: Default::default(),
    };
    let (name, ns) = (rel.name.clone(), rel.namespace.clone());
    let forward = async {
        while let Some(p) = futures::StreamExt::next(&mut rx).await {
            if let Some(events) = &events {
                let _ = events.send(Event::Progress(p));
            }
        }
    };
    let drive = async {
        driver
            .drive(&ns, &name, DriveOptions::default(), Some(tx))
            .await
    };
    let (outcome, ()) = tokio::join!(drive, forward);
    let outcome = outcome?;
    let status = store.get(&rel.name).await?.and_then(|r| r.status);
    Ok(Rehearsed {
        sim,
        dir,
        fleet,
        exit: exit_of(&outcome),
        name: rel.name.clone(),
        release: Some(rel),
        outcome: Some(outcome),
        status,
        refusal: None,
        objects,
    })
}

/// Per cluster: green's final share; per stage: how long it took in fleet time.
fn summary(s: &crate::spec::ReleaseStatus) -> String {
    let mut out = String::from("\nsummary (fleet time)\n");
    for (c, w) in &s.weights {
        out.push_str(&format!("  {c:<10} green {w}\n"));
    }
    let mut stages: BTreeMap<usize, (String, Timestamp, Timestamp)> = BTreeMap::new();
    let mut order = Vec::new();
    for t in s.history.iter().filter(|t| {
        t.event == TransitionEvent::StepStarted || t.event == TransitionEvent::StepCompleted
    }) {
        let Some(step) = s.plan.get(t.step as usize) else {
            continue;
        };
        let key = stage_of(step.kind, step.cluster.as_deref());
        let idx = match order.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                order.push(key.clone());
                order.len() - 1
            }
        };
        let e = stages.entry(idx).or_insert((key, t.at, t.at));
        e.2 = e.2.max(t.at);
    }
    for (_, (key, from, to)) in stages {
        out.push_str(&format!(
            "  {key:<28} {}\n",
            span_of(to.duration_since(from))
        ));
    }
    if let Some(m) = &s.message {
        out.push_str(&format!("  {m}\n"));
    }
    out
}

fn stage_of(kind: StepKind, cluster: Option<&str>) -> String {
    let c = cluster.unwrap_or("fleet");
    match kind {
        StepKind::Deploy => format!("deploy {c}"),
        StepKind::Canary | StepKind::Ramp => format!("canary and ramp {c}"),
        StepKind::Cutover => format!("cut over {c}"),
        StepKind::Verify => format!("verify {c}"),
        StepKind::Soak => format!("soak {c}"),
        StepKind::Bake => "bake".to_string(),
        StepKind::Cleanup => "cleanup".to_string(),
    }
}
