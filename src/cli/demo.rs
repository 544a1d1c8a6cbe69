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
use super::exit::CliResult;
use super::report::Reporter;
use super::run::exit_of;
use crate::driver::{DriveOptions, Driver, Progress};
use crate::engine::timeline::span_of;
use crate::fleet::bootstrap;
use crate::fleet::state::ReleaseStore;
use crate::sim::{Scenario, SimFleet, SimOptions};
use crate::spec::release::ReleaseDocument;
use crate::spec::status::{StepKind, TransitionEvent};
use crate::spec::{ResolvedRelease, Source, TierPolicyFile};

const RELEASE: &str = include_str!("../../examples/checkout/release.yaml");
/// The version serving before the demo's release.
pub const BLUE_VERSION: &str = "2.13.0";

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// A scenario: a name from examples/scenarios (e.g. bad-canary) or a file.
    #[arg(long)]
    pub scenario: Option<String>,
    /// How much faster than the wall clock fleet time runs.
    #[arg(long, default_value_t = 600.0)]
    pub time_scale: f64,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

fn scenario_path(name: &str) -> PathBuf {
    let p = PathBuf::from(name);
    if p.exists() || name.ends_with(".yaml") {
        return p;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/scenarios")
        .join(format!("{name}.yaml"))
}

pub async fn run(args: &DemoArgs) -> CliResult {
    let scenario = match &args.scenario {
        None => Scenario::default_fleet(),
        Some(name) => {
            let path = scenario_path(name);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read scenario {}", path.display()))?;
            Scenario::parse(&path.display().to_string(), &text)?
        }
    };
    let dir = tempfile::tempdir()?;
    let sim = SimFleet::start(SimOptions {
        scenario,
        time_scale: args.time_scale,
        dir: dir.path().to_path_buf(),
    })
    .await
    .map_err(|e| anyhow!("starting the simulated fleet: {e}"))?;
    let result = demo(args, &sim).await;
    sim.shutdown().await;
    result
}

async fn demo(args: &DemoArgs, sim: &SimFleet) -> CliResult {
    let fleet = read_fleet(sim.fleet_path())?;
    let policy = TierPolicyFile::builtin();
    let doc: ReleaseDocument = Source::new("examples/checkout/release.yaml", RELEASE).decode()?;
    let rel = ResolvedRelease::resolve(
        &doc.metadata.name,
        doc.metadata.namespace.as_deref(),
        &doc.spec,
        &fleet,
        &policy,
    )
    .map_err(|f| anyhow!("the example does not fit the simulated fleet: {f:?}"))?;
    let conn = connect(fleet.clone(), Some(sim.kubeconfig_path()), &rel.namespace).await?;
    let mut reporter = Reporter::new(
        args.output,
        std::io::stdout().is_terminal(),
        conn.clock.clone(),
    );
    if args.output == Output::Text {
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
    for c in &rel.clusters {
        bootstrap::install_crds(conn.clients.get(&c.name)?).await?;
        bootstrap::install_serving(conn.clients.get(&c.name)?, &rel, BLUE_VERSION).await?;
    }
    let store = ReleaseStore::new(conn.clients.home(), &rel.namespace);
    let live = store.upsert(&doc).await?;
    reporter.submitted(&live, "demo");
    let driver = Driver {
        fleet: conn.clients.clone(),
        fleet_spec: fleet,
        policy,
        clock: conn.clock.clone(),
        windows: Vec::new(),
        identity: crate::driver::identity("demo"),
        lease_duration: Duration::from_secs(15),
        idle: Duration::from_millis(500),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (name, ns) = (rel.name.clone(), rel.namespace.clone());
    let drive = tokio::spawn(async move {
        driver
            .drive(&ns, &name, DriveOptions::default(), Some(tx))
            .await
    });
    let mut last_status = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            p = rx.recv() => match p {
                Some(p) => {
                    if let Progress::Status(s) = &p {
                        last_status = Some(s.clone());
                    }
                    reporter.progress(&p);
                }
                None => break,
            },
            _ = ticker.tick() => reporter.tick(),
        }
    }
    let outcome = drive.await.map_err(|e| anyhow!("driver task: {e}"))??;
    reporter.outcome(&outcome);
    if let (Output::Text, Some(s)) = (args.output, last_status) {
        println!("{}", summary(&s));
    }
    Ok(exit_of(&outcome))
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
