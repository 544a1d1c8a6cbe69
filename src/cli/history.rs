//! `cutover history` and `cutover undo`: a Release lives as long as its app,
//! and keeps the revisions it ran. `undo` releases an earlier revision's
//! version and images again, through the whole lifecycle and its gates.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::anyhow;
use serde_json::json;

use super::Output;
use super::connect::FleetArgs;
use super::exit::{CliError, CliResult, Exit};
use super::load::{exit_of_refusal, tier_policy, windows};
use super::report::Reporter;
use super::run::drive_and_report;
use crate::admission::{self, FreezeReading};
use crate::driver::Driver;
use crate::fleet::state::ReleaseStore;
use crate::spec::release::UndoOf;
use crate::spec::status::{Phase, Revision};
use crate::spec::{Release, ReleaseStatus};

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// The Release's name.
    pub name: String,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(clap::Args, Debug)]
pub struct UndoArgs {
    /// The Release's name.
    pub name: String,
    /// The revision to bring back (`cutover history` lists them); defaults
    /// to the latest completed revision of another version.
    #[arg(long, value_name = "N")]
    pub to_revision: Option<u32>,
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// A directory holding tiers.yaml (and freezes.yaml); defaults to the built-in tier policy.
    #[arg(long, value_name = "DIR", env = "CUTOVER_POLICIES")]
    pub policies: Option<std::path::PathBuf>,
    /// Submit the undo for the controller to drive, and return.
    #[arg(long)]
    pub detach: bool,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

async fn read(args: &FleetArgs, name: &str) -> CliResult<(super::connect::Connected, Release)> {
    let conn = args.connect().await?;
    let store = ReleaseStore::new(conn.clients.home(), &args.namespace);
    let release = store.get(name).await?.ok_or_else(|| {
        CliError::new(
            Exit::Error,
            anyhow!("no Release {name} in namespace {}", args.namespace),
        )
    })?;
    Ok((conn, release))
}

pub async fn history(args: &HistoryArgs) -> CliResult {
    let (_, release) = read(&args.fleet, &args.name).await?;
    let s = release.status.clone().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if args.output == Output::Json {
        let current = s.version.as_ref().map(|v| {
            json!({"revision": s.revision_number(), "version": v, "phase": s.phase,
                   "images": s.images, "replaced": s.blue_version,
                   "startedAt": s.started_at, "finishedAt": s.finished_at, "message": s.message})
        });
        let doc = json!({"release": args.name, "revisions": s.revisions, "current": current});
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(Exit::Ok);
    }
    writeln!(
        out,
        "{:<9} {:<12} {:<12} {:<21} {:<21} WHY",
        "REVISION", "VERSION", "OUTCOME", "STARTED", "ENDED"
    )?;
    for r in &s.revisions {
        writeln!(out, "{}", row(r))?;
        if !r.gates.is_empty() {
            writeln!(out, "{:<9} gates: {}", "", r.gates)?;
        }
    }
    if let Some(v) = &s.version {
        let now = Revision {
            revision: s.revision_number(),
            version: v.clone(),
            images: s.images.clone(),
            outcome: s.phase,
            replaced: s.blue_version.clone(),
            started_at: s.started_at,
            finished_at: s.finished_at,
            reason: s.message.clone().unwrap_or_default(),
            gates: String::new(),
        };
        writeln!(out, "{} (current)", row(&now))?;
    } else if s.revisions.is_empty() {
        writeln!(out, "(no revision has run yet)")?;
    }
    Ok(Exit::Ok)
}

fn row(r: &Revision) -> String {
    let at = |t: Option<jiff::Timestamp>| {
        t.map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "{:<9} {:<12} {:<12} {:<21} {:<21} {}",
        r.revision,
        r.version,
        r.outcome.to_string(),
        at(r.started_at),
        at(r.finished_at),
        r.reason
    )
}

/// The revision `undo` brings back: the one named, or the latest completed
/// revision of another version than the current one.
pub fn undo_target(s: &ReleaseStatus, to: Option<u32>) -> Result<&Revision, String> {
    let current = s.version.as_deref().unwrap_or_default();
    match to {
        Some(n) => s.revisions.iter().find(|r| r.revision == n).ok_or_else(|| {
            let kept: Vec<String> = s.revisions.iter().map(|r| r.revision.to_string()).collect();
            format!(
                "no revision {n} in the history (kept: {}); `cutover history` lists them",
                if kept.is_empty() {
                    "none".into()
                } else {
                    kept.join(", ")
                }
            )
        }),
        None => s
            .revisions
            .iter()
            .rev()
            .find(|r| r.outcome == Phase::Completed && r.version != current)
            .ok_or_else(|| {
                "no earlier completed revision of another version to go back to; \
                 `cutover history` lists the revisions"
                    .to_string()
            }),
    }
}

pub async fn undo(args: &UndoArgs) -> CliResult {
    let (conn, release) = read(&args.fleet, &args.name).await?;
    let s = release.status.clone().unwrap_or_default();
    let current = s.version.clone().unwrap_or_default();
    if !s.phase.is_terminal() && s.phase != Phase::Pending {
        return Err(CliError::new(
            Exit::Error,
            anyhow!(
                "{current} of {} is in flight ({}); nothing was written. Roll it back with \
                 `cutover abort {} --reason TEXT`, or replace it with `cutover run --version V --supersede`",
                args.name,
                s.step_name.as_deref().unwrap_or("preflight"),
                args.name
            ),
        ));
    }
    let target = undo_target(&s, args.to_revision)
        .map_err(|why| CliError::new(Exit::Error, anyhow!(why)))?
        .clone();
    if target.version == current {
        return Err(CliError::new(
            Exit::Error,
            anyhow!(
                "revision {} ran {}, which is the current version; nothing to undo",
                target.revision,
                target.version
            ),
        ));
    }
    let policy = tier_policy(args.policies.as_deref())?;
    let windows = windows(args.policies.as_deref())?;
    let mut spec = release.spec.clone();
    spec.version = target.version.clone();
    spec.images = target.images.clone();
    spec.undo_of = Some(UndoOf {
        revision: target.revision,
        version: target.version.clone(),
    });
    spec.abort = None;
    spec.promote = None;
    let ns = args.fleet.namespace.clone();
    // Admitted as `run` admits a release: the tier's rules first, then freezes.
    let admit = |freezes| {
        admission::admit(&admission::Request {
            name: &args.name,
            namespace: Some(&ns),
            spec: &spec,
            fleet: &conn.fleet,
            policy: &policy,
            freezes,
        })
        .admitted(&args.name)
        .map_err(|r| {
            CliError::new(
                exit_of_refusal(r.refusal()),
                anyhow!(r.message(None, ", nothing was touched")),
            )
        })
    };
    let rel = admit(None)?;
    let clusters = rel.cluster_names();
    let (freezes, unreadable) = crate::fleet::freezes::read_all(&conn.clients, &clusters).await?;
    admit(Some(FreezeReading {
        freezes: &freezes,
        unreadable: &unreadable,
        windows: &windows,
        now: conn.clock.now(),
    }))?;
    let store = ReleaseStore::new(conn.clients.home(), &ns);
    store
        .patch_spec(
            &args.name,
            json!({"version": target.version, "images": target.images, "abort": null, "promote": null,
                   "undoOf": spec.undo_of}),
        )
        .await?;
    let reporter = Reporter::new(
        args.output,
        std::io::stdout().is_terminal(),
        conn.clock.clone(),
    );
    match args.output {
        Output::Json => println!(
            "{}",
            json!({"event": "undo", "release": args.name, "toRevision": target.revision,
                   "version": target.version, "replacing": current, "by": conn.acting_user().await})
        ),
        Output::Text => println!(
            "undo {}: revision {} ({}) comes back as revision {}, replacing {current}, through every step and its gates",
            args.name,
            target.revision,
            target.version,
            s.revision_number() + 1
        ),
    }
    if args.detach {
        return Ok(Exit::Ok);
    }
    let driver = Driver {
        fleet: conn.clients.clone(),
        fleet_spec: conn.fleet.clone(),
        policy,
        clock: conn.clock.clone(),
        windows,
        identity: crate::driver::identity("cli"),
        lease_duration: Duration::from_secs(15),
        idle: Duration::from_secs(2),
        under: None,
        notifier: conn.notifier(),
        // One release.
        turns: crate::driver::Turns::new(1),
        parking: Default::default(),
    };
    drive_and_report(driver, &ns, &args.name, reporter).await
}
