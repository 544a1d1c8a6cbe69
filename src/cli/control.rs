//! `status`, `promote`, `abort`, `pause`, `resume`: reading a release and
//! telling its driver what a person wants. Requests are written to the
//! Release's spec; the driver (CLI or controller) acts on them.

use std::io::IsTerminal;

use anyhow::anyhow;
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use super::Output;
use super::connect::{Connected, FleetArgs};
use super::exit::{CliError, CliResult, Exit};
use super::report::Reporter;
use crate::fleet::state::ReleaseStore;
use crate::spec::status::Phase;
use crate::spec::{Release, ReleaseStatus};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The Release's name.
    pub name: String,
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Keep printing as the release moves, until it ends.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Draw the release's timeline (traffic, gate values, events) into this SVG
    /// file; with --watch, once the release ends.
    #[arg(long, value_name = "FILE.svg")]
    pub report: Option<std::path::PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

fn write_report(args: &StatusArgs, s: &crate::spec::ReleaseStatus) -> CliResult<()> {
    if let Some(path) = &args.report {
        let svg = crate::chart::timeline_svg(&args.name, s);
        std::fs::write(path, svg).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct NameArgs {
    /// The Release's name.
    pub name: String,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

#[derive(clap::Args, Debug)]
pub struct AbortArgs {
    /// The Release's name.
    pub name: String,
    /// Why, for the record.
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// The connection to the fleet and who the home cluster says is acting.
async fn connect_as_user(args: &FleetArgs) -> CliResult<(Connected, String)> {
    let conn = args.connect().await?;
    let who = conn.acting_user().await;
    Ok((conn, who))
}

async fn get(store: &ReleaseStore<'_>, name: &str) -> CliResult<Release> {
    store.get(name).await?.ok_or_else(|| {
        CliError::new(
            Exit::Error,
            anyhow!("no Release {name} in the home cluster"),
        )
    })
}

/// The exit status that tells a pipeline where a release stands.
pub fn exit_of_status(s: &ReleaseStatus) -> Exit {
    match s.phase {
        Phase::Completed => Exit::Ok,
        Phase::Aborted | Phase::Aborting => Exit::RolledBack,
        Phase::Failed => Exit::Error,
        Phase::Paused => Exit::Waiting,
        _ => Exit::Ok,
    }
}

pub async fn status(args: &StatusArgs) -> CliResult {
    let conn = args.fleet.connect().await?;
    let store = ReleaseStore::new(conn.clients.home(), &args.fleet.namespace);
    let mut reporter = Reporter::new(
        args.output,
        std::io::stdout().is_terminal(),
        conn.clock.clone(),
    );
    let r = get(&store, &args.name).await?;
    // Who drives it: a release in flight that nobody drives does not move.
    let driver =
        crate::fleet::lease::holder(conn.clients.home(), &args.fleet.namespace, &args.name).await?;
    reporter.status(&r, driver.as_ref());
    let mut last = r.status.clone().unwrap_or_default();
    if !args.watch || last.phase.is_terminal() {
        write_report(args, &last)?;
        return Ok(exit_of_status(&last));
    }
    let config = watcher::Config::default().fields(&format!("metadata.name={}", args.name));
    let mut stream = std::pin::pin!(
        watcher::watcher(store.watch_api(), config)
            .default_backoff()
            .applied_objects()
    );
    while let Some(item) = stream.next().await {
        let Ok(r) = item else { continue };
        let s = r.status.clone().unwrap_or_default();
        if s == last {
            continue;
        }
        for t in s.history.iter().skip(last.history.len()) {
            reporter.progress(&crate::driver::Progress::Transition(Box::new(t.clone())));
        }
        reporter.progress(&crate::driver::Progress::Status(Box::new(s.clone())));
        if s.phase.is_terminal() {
            write_report(args, &s)?;
            return Ok(exit_of_status(&s));
        }
        last = s;
    }
    write_report(args, &last)?;
    Ok(exit_of_status(&last))
}

pub async fn promote(args: &NameArgs) -> CliResult {
    let (conn, who) = connect_as_user(&args.fleet).await?;
    let store = ReleaseStore::new(conn.clients.home(), &args.fleet.namespace);
    let r = get(&store, &args.name).await?;
    let s = r.status.unwrap_or_default();
    if s.phase.is_terminal() || s.plan.is_empty() {
        return Err(CliError::new(
            Exit::Error,
            anyhow!("release {} is {}: nothing to promote", args.name, s.phase),
        ));
    }
    store
        .patch_spec(
            &args.name,
            json!({"promote": {"step": s.step, "by": who, "version": s.version}}),
        )
        .await?;
    println!(
        "promoted {}: the wait of step {} ({}) is skipped once its gates pass",
        args.name,
        s.step + 1,
        s.step_name.unwrap_or_default()
    );
    Ok(Exit::Ok)
}

pub async fn abort(args: &AbortArgs) -> CliResult {
    let (conn, who) = connect_as_user(&args.fleet).await?;
    let store = ReleaseStore::new(conn.clients.home(), &args.fleet.namespace);
    let r = get(&store, &args.name).await?;
    let s = r.status.unwrap_or_default();
    if s.phase.is_terminal() {
        return Err(CliError::new(
            Exit::Error,
            anyhow!("release {} has already ended", args.name),
        ));
    }
    // Tied to the version in flight: left on the Release, it never aborts a later one.
    let version = s.version.or(Some(r.spec.version));
    store
        .patch_spec(
            &args.name,
            json!({"abort": {"reason": args.reason, "by": who, "version": version}}),
        )
        .await?;
    println!(
        "abort requested for {}: traffic goes back to blue everywhere, then green is scaled down",
        args.name
    );
    Ok(Exit::Ok)
}

pub async fn pause(args: &NameArgs, paused: bool) -> CliResult {
    let conn = args.fleet.connect().await?;
    let store = ReleaseStore::new(conn.clients.home(), &args.fleet.namespace);
    get(&store, &args.name).await?;
    let value = if paused {
        json!(true)
    } else {
        serde_json::Value::Null
    };
    store
        .patch_spec(&args.name, json!({ "paused": value }))
        .await?;
    println!(
        "{} {}",
        if paused { "paused" } else { "resumed" },
        args.name
    );
    Ok(Exit::Ok)
}
