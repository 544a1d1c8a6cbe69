//! `cutover run`: create or resume a release and drive it through the fleet.
//! Running it again after the pipeline was killed resumes; it never restarts.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use tokio::sync::mpsc;

use super::Output;
use super::connect::{connect, user};
use super::exit::{CliError, CliResult, Exit};
use super::load::Inputs;
use super::report::Reporter;
use crate::driver::{DriveOptions, Driver, Outcome};
use crate::fleet::state::ReleaseStore;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Kubeconfig holding the fleet's contexts; defaults to $KUBECONFIG or ~/.kube/config.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Roll out this version instead of the file's.
    #[arg(long)]
    pub version: Option<String>,
    /// Override a container's image: NAME=IMAGE (repeatable).
    #[arg(long = "image", value_name = "NAME=IMAGE")]
    pub images: Vec<String>,
    /// Submit the release for the controller to drive, and return.
    #[arg(long)]
    pub detach: bool,
    /// How long this driver's lease lasts without renewal; another driver takes over after it.
    #[arg(long, default_value = "15s", value_parser = parse_span)]
    pub lease_duration: crate::spec::Span,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

pub async fn run(args: &RunArgs) -> CliResult {
    let mut loaded = args.inputs.load()?;
    if args.version.is_some() || !args.images.is_empty() {
        let doc = &mut loaded.document;
        if let Some(v) = &args.version {
            doc.spec.version = v.clone();
        }
        for pair in &args.images {
            let (name, image) = pair.split_once('=').ok_or_else(|| {
                CliError::new(
                    Exit::Usage,
                    anyhow!("--image takes NAME=IMAGE, got {pair:?}"),
                )
            })?;
            doc.spec.images.insert(name.to_string(), image.to_string());
        }
        loaded = args
            .inputs
            .resolve(loaded.document, loaded.fleet, loaded.policy)?;
    }
    let rel = &loaded.release;
    let report = crate::policy::rules::check(rel);
    if !report.passes() {
        return Err(CliError::new(
            Exit::Policy,
            anyhow!(
                "{} breaks {} policy, nothing was touched: {}",
                rel.name,
                rel.tier_name,
                report.failure_summary()
            ),
        ));
    }
    let conn = connect(
        loaded.fleet.clone(),
        args.kubeconfig.as_deref(),
        &rel.namespace,
    )
    .await?;
    let store = ReleaseStore::new(conn.clients.home(), &rel.namespace);
    let live = store.upsert(&loaded.document).await?;
    let mut reporter = Reporter::new(
        args.output,
        std::io::stdout().is_terminal(),
        conn.clock.clone(),
    );
    reporter.submitted(&live, &user());
    if args.detach {
        return Ok(Exit::Ok);
    }
    let driver = Driver {
        fleet: conn.clients.clone(),
        fleet_spec: conn.fleet.clone(),
        policy: loaded.policy.clone(),
        clock: conn.clock.clone(),
        identity: crate::driver::identity("cli"),
        lease_duration: args
            .lease_duration
            .as_duration()
            .max(Duration::from_secs(1)),
        idle: Duration::from_secs(2),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let name = rel.name.clone();
    let ns = rel.namespace.clone();
    let drive = tokio::spawn(async move {
        driver
            .drive(
                &ns,
                &name,
                DriveOptions {
                    stop_when_paused: true,
                    wait_for_lease: true,
                },
                Some(tx),
            )
            .await
    });
    while let Some(p) = rx.recv().await {
        reporter.progress(&p);
    }
    let outcome = drive.await.map_err(|e| anyhow!("driver task: {e}"))??;
    reporter.outcome(&outcome);
    let _ = std::io::stdout().flush();
    Ok(exit_of(&outcome))
}

/// The exit status a pipeline sees for an outcome.
pub fn exit_of(outcome: &Outcome) -> Exit {
    match outcome {
        Outcome::Completed => Exit::Ok,
        Outcome::Aborted(_) => Exit::RolledBack,
        Outcome::Failed(_) => Exit::Error,
        Outcome::Invalid {
            breaks_policy: true,
            ..
        } => Exit::Policy,
        Outcome::Invalid { .. } => Exit::Error,
        Outcome::Paused => Exit::Waiting,
    }
}

fn parse_span(s: &str) -> Result<crate::spec::Span, String> {
    crate::spec::Span::parse(s)
}
