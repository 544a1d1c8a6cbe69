//! `cutover run`: create or resume a release and drive it through the fleet.
//! Running it again after the pipeline was killed resumes; it never restarts.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use futures::StreamExt;
use futures::channel::mpsc;

use super::Output;
use super::connect::connect;
use super::exit::{CliError, CliResult, Exit};
use super::load::Inputs;
use super::report::Reporter;
use crate::admission::{self, FreezeReading, Intent, overridden_objects};
use crate::driver::{DriveOptions, Driver, Outcome, Progress};
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
    /// Replace the version in flight with --version's (only an explicit
    /// newer intent replaces a release in flight; a stale file never does).
    #[arg(long, requires = "version")]
    pub supersede: bool,
    /// Submit the release for the controller to drive, and return.
    #[arg(long)]
    pub detach: bool,
    /// Break-glass: go on despite these freezes (every active one must be named).
    #[arg(
        long = "override-freeze",
        value_name = "ID[,ID]",
        value_delimiter = ',',
        requires = "reason"
    )]
    pub override_freeze: Vec<String>,
    /// Why the freezes are overridden.
    #[arg(long)]
    pub reason: Option<String>,
    /// How long this driver's lease lasts without renewal; another driver takes over after it.
    #[arg(long, default_value = "15s", value_parser = parse_span)]
    pub lease_duration: crate::spec::Span,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

pub async fn run(args: &RunArgs) -> CliResult {
    let mut loaded = args.inputs.load()?;
    if !args.override_freeze.is_empty() {
        loaded.document.spec.override_freezes = Some(crate::spec::release::FreezeOverride {
            ids: args.override_freeze.clone(),
            reason: args.reason.clone().unwrap_or_default(),
            // Set from the cluster's answer once connected.
            by: None,
        });
    }
    if args.version.is_some() || !args.images.is_empty() || !args.override_freeze.is_empty() {
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
        loaded = args.inputs.resolve(
            loaded.document,
            loaded.source.1,
            loaded.fleet,
            loaded.policy,
        )?;
    }
    // Every refusal that needs no cluster comes before the first request.
    let admitted = loaded.admit(None)?;
    let rel = &admitted;
    let conn = connect(
        loaded.fleet.clone(),
        args.kubeconfig.as_deref(),
        &rel.namespace,
    )
    .await?;
    // Two fleet entries that reach one cluster would move its traffic twice.
    let clusters = rel.cluster_names();
    let within = crate::fleet::ClientLimits::default().request_timeout;
    let uids = crate::fleet::live::cluster_uids(&conn.clients, &clusters, within).await;
    if let Some(why) = crate::policy::not_distinct(&uids) {
        return Err(CliError::new(
            Exit::Policy,
            anyhow!("{}: {why}; nothing was written", rel.name),
        ));
    }
    let store = ReleaseStore::new(conn.clients.home(), &rel.namespace);
    let existing = store.get(&rel.name).await?;
    let status = existing.as_ref().and_then(|r| r.status.as_ref());
    let submitted = existing.as_ref().map(|r| r.spec.version.as_str());
    let intent = admission::intent(&rel.name, status, submitted, &rel.version, args.supersede)
        .map_err(|why| CliError::new(Exit::Error, anyhow!(why)))?;
    let starting = matches!(intent, Intent::Start | Intent::NextRevision)
        || status.is_none_or(|s| s.phase == crate::spec::status::Phase::Pending);
    // A release does not start while a freeze applies: exit 4, nothing
    // written. An override is weighed whenever one is given, in flight too:
    // one naming a freeze that does not exist, or only some of those that
    // apply, is refused, naming them, before anything is written.
    if starting || rel.override_freezes.is_some() {
        let (freezes, unreadable) =
            crate::fleet::freezes::read_all(&conn.clients, &clusters).await?;
        loaded.admit(Some(FreezeReading {
            freezes: &freezes,
            unreadable: &unreadable,
            windows: &loaded.windows,
            now: conn.clock.now(),
        }))?;
    }
    let who = conn.acting_user().await;
    if let Some(o) = &rel.override_freezes {
        authorize_override(&conn, o, &who).await?;
    }
    if let Some(o) = loaded.document.spec.override_freezes.as_mut() {
        o.by = Some(who.clone());
    }
    let live = store.upsert(&loaded.document).await?;
    let mut reporter = Reporter::new(
        args.output,
        std::io::stdout().is_terminal(),
        conn.clock.clone(),
    );
    reporter.submitted(&live, &who);
    if args.detach {
        return Ok(Exit::Ok);
    }
    let driver = Driver {
        fleet: conn.clients.clone(),
        fleet_spec: conn.fleet.clone(),
        policy: loaded.policy.clone(),
        clock: conn.clock.clone(),
        windows: loaded.windows.clone(),
        identity: crate::driver::identity("cli"),
        lease_duration: args
            .lease_duration
            .as_duration()
            .max(Duration::from_secs(1)),
        idle: Duration::from_secs(2),
        under: None,
        notifier: conn.notifier(),
        // One release.
        turns: crate::driver::Turns::new(1),
        parking: Default::default(),
    };
    drive_and_report(driver, &rel.namespace, &rel.name, reporter).await
}

/// Drives a release in this process with live progress until it ends, a
/// person pauses it, or SIGINT/SIGTERM asks it to stop: then it stops
/// between passes, releases its lease and says how to resume.
pub async fn drive_and_report(
    driver: Driver,
    namespace: &str,
    name: &str,
    mut reporter: Reporter,
) -> CliResult {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (tx, mut rx) = mpsc::unbounded();
    let (ns, name) = (namespace.to_string(), name.to_string());
    let notifier = driver.notifier.clone();
    let drive = tokio::spawn(async move {
        driver
            .drive(
                &ns,
                &name,
                DriveOptions {
                    stop_when_paused: true,
                    wait_for_lease: true,
                    stop: Some(stop_rx),
                },
                Some(tx),
            )
            .await
    });
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut signals = std::pin::pin!(crate::driver::stop_signal());
    loop {
        tokio::select! {
            p = rx.next() => match p {
                Some(p) => reporter.progress(&p),
                None => break,
            },
            _ = ticker.tick() => reporter.tick(),
            _ = &mut signals, if !*stop_tx.borrow() => {
                let _ = stop_tx.send(true);
            }
        }
    }
    let outcome = drive.await.map_err(|e| anyhow!("driver task: {e}"))??;
    for (receiver, missed, error) in notifier.failures() {
        reporter.progress(&Progress::Note(format!(
            "notifications: {missed} not delivered to {receiver} (last: {error}); `cutover status` keeps the count"
        )));
    }
    reporter.outcome(&outcome);
    let _ = std::io::stdout().flush();
    Ok(exit_of(&outcome))
}

/// Break-glass is its own permission: every named freeze must be overridable
/// by the caller, and each override is recorded as an Event on the freeze.
async fn authorize_override(
    conn: &super::connect::Connected,
    o: &crate::spec::release::FreezeOverride,
    who: &str,
) -> CliResult<()> {
    let home = conn.clients.home();
    for id in overridden_objects(o) {
        if let Err(why) = crate::fleet::freezes::may_override(home, id).await? {
            return Err(CliError::new(
                Exit::Frozen,
                anyhow!("{why}; nothing was written"),
            ));
        }
    }
    let by = o.by.clone().unwrap_or_else(|| who.to_string());
    for id in overridden_objects(o) {
        crate::fleet::freezes::record_override(
            home,
            id,
            &by,
            &format!("overridden by {by}: {}", o.reason),
            conn.clock.now(),
        )
        .await?;
    }
    Ok(())
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
        Outcome::Paused | Outcome::Stopped => Exit::Waiting,
    }
}

fn parse_span(s: &str) -> Result<crate::spec::Span, String> {
    crate::spec::Span::parse(s)
}
