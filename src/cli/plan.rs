//! `cutover plan`: the timeline the engine will follow, computed by running
//! the engine itself against a world where everything succeeds at once.

use std::io::Write;

use serde::Serialize;

use super::load::Inputs;
use super::{CliResult, Exit, Output};
use crate::engine::timeline::{self, Timeline, span_of};
use crate::spec::Percent;

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Plan a first install (no version serving yet) instead of a blue-green release.
    #[arg(long)]
    pub first_install: bool,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanReport<'a> {
    release: &'a str,
    app: &'a str,
    version: &'a str,
    tier: &'a str,
    clusters: Vec<ClusterLine<'a>>,
    #[serde(flatten)]
    timeline: &'a Timeline,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterLine<'a> {
    name: &'a str,
    role: crate::spec::ClusterRole,
    traffic_share: Percent,
    replicas: u32,
}

pub fn run(args: &PlanArgs) -> CliResult {
    let loaded = args.inputs.load()?;
    let rel = &loaded.release;
    let tl = timeline::simulate(rel, args.first_install)?;
    let report = PlanReport {
        release: &rel.name,
        app: &rel.app,
        version: &rel.version,
        tier: &rel.tier_name,
        clusters: rel
            .clusters
            .iter()
            .map(|c| ClusterLine {
                name: &c.name,
                role: c.role,
                traffic_share: c.traffic_share,
                replicas: c.replicas,
            })
            .collect(),
        timeline: &tl,
    };
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Output::Text => write_text(&mut out, &report)?,
    }
    Ok(Exit::Ok)
}

fn write_text(out: &mut impl Write, r: &PlanReport) -> std::io::Result<()> {
    writeln!(
        out,
        "Release {}: {} {} ({})",
        r.release, r.app, r.version, r.tier
    )?;
    for c in &r.clusters {
        let role = format!("{:?}", c.role).to_lowercase();
        writeln!(
            out,
            "  {:<12} {:<10} {:>6} of traffic, {} replicas",
            c.name,
            role,
            c.traffic_share.to_string(),
            c.replicas
        )?;
    }
    writeln!(out)?;
    let names: Vec<&str> = r.clusters.iter().map(|c| c.name).collect();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0).max(7);
    write!(
        out,
        "{:>3}  {:>9}  {:<28} {:>8}",
        "#", "starts", "step", "holds"
    )?;
    for n in &names {
        write!(out, "  {n:>width$}")?;
    }
    writeln!(out)?;
    for e in &r.timeline.entries {
        let starts = format!("+{}", span_of(e.starts_after));
        let holds = if e.step.wait.as_duration().is_zero() {
            "-".to_string()
        } else {
            e.step.wait.to_string()
        };
        write!(
            out,
            "{:>3}  {:>9}  {:<28} {:>8}",
            e.index + 1,
            starts,
            e.name,
            holds
        )?;
        for n in &names {
            let w = e
                .weights
                .get(*n)
                .copied()
                .unwrap_or(Percent::ZERO)
                .to_string();
            write!(out, "  {w:>width$}")?;
        }
        writeln!(out)?;
        if !e.hooks.is_empty() {
            writeln!(out, "{:>16}hooks: {}", "", e.hooks.join(", "))?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "{} steps, at least {} from start to cleanup",
        r.timeline.entries.len(),
        span_of(r.timeline.total)
    )
}
