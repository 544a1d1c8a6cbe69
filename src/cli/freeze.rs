//! `freeze`, `unfreeze` and `freeze status`: the commands people on call
//! type during an incident. Fast, parallel across the fleet, and working while
//! some clusters are down: each cluster's outcome is reported.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::anyhow;
use serde_json::json;

use super::Output;
use super::connect::{FleetArgs, connect, read_fleet};
use super::exit::{CliError, CliResult, Exit};
use crate::fleet::freezes::{self, Outcome, PerCluster};
use crate::fleet::state::ReleaseStore;
use crate::freeze::{DeployFreeze, DeployFreezeSpec, Scope};
use crate::spec::notify::{Event, FreezeRef, Notification};
use crate::spec::status::HoldReason;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FreezeArgs {
    #[command(subcommand)]
    pub status: Option<FreezeSub>,
    /// Why deploys are frozen.
    #[arg(long)]
    pub reason: Option<String>,
    /// The incident or change ticket.
    #[arg(long)]
    pub ticket: Option<String>,
    /// Freeze only these apps (repeatable).
    #[arg(long = "app")]
    pub apps: Vec<String>,
    /// Freeze only these tiers (repeatable).
    #[arg(long = "tier")]
    pub tiers: Vec<String>,
    /// Freeze only releases touching these clusters (repeatable).
    #[arg(long = "cluster")]
    pub clusters: Vec<String>,
    /// End by itself after this long (e.g. 4h); default: until lifted.
    #[arg(long = "for", value_parser = crate::spec::Span::parse)]
    pub duration: Option<crate::spec::Span>,
    /// Who freezes; defaults to the identity the home cluster gives the caller, else $USER.
    #[arg(long)]
    pub author: Option<String>,
    #[command(flatten)]
    pub fleet: Option<FleetArgs>,
}

#[derive(clap::Subcommand, Debug)]
pub enum FreezeSub {
    /// Active freezes and windows, what each blocks, and which releases hold because of it.
    Status(StatusArgs),
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// (`-n` names the namespace whose holding releases are listed.)
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// A policies directory whose `freezes.yaml` windows are listed too.
    #[arg(long, value_name = "DIR", env = "CUTOVER_POLICIES")]
    pub policies: Option<std::path::PathBuf>,
    /// Judge freezes and windows at this time (RFC 3339, e.g.
    /// 2026-12-24T18:00:00Z) instead of now on the fleet's clock.
    #[arg(long, value_name = "TIME")]
    pub at: Option<jiff::Timestamp>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(clap::Args, Debug)]
pub struct UnfreezeArgs {
    /// The freeze to lift.
    pub id: Option<String>,
    /// Lift every active freeze.
    #[arg(long, conflicts_with = "id")]
    pub all: bool,
    /// Why, for the record.
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

fn report(what: &str, id: &str, home: &str, results: &PerCluster) -> CliResult {
    let mut out = std::io::stdout().lock();
    for (cluster, r) in results {
        match r {
            Ok(Outcome::Done) => writeln!(out, "{what} {id} on {cluster}")?,
            Ok(Outcome::AlreadyLifted { by, at }) => writeln!(
                out,
                "{id} was already lifted on {cluster} (by {by} at {at})"
            )?,
            Ok(Outcome::Absent) => writeln!(out, "no freeze {id} on {cluster}")?,
            Err(e) => writeln!(out, "NOT {what} on {cluster}: {e}")?,
        }
    }
    let missed: Vec<_> = results
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(c, _)| c.as_str())
        .collect();
    let found = |r: &Result<Outcome, String>| matches!(r, Ok(o) if *o != Outcome::Absent);
    if !results.values().any(found) && !results.values().any(Result::is_err) {
        let looked: Vec<&str> = results.keys().map(String::as_str).collect();
        return Err(CliError::new(
            Exit::Error,
            anyhow!(
                "no freeze {id} exists: looked in {}; `cutover freeze status` lists the active ones",
                looked.join(", ")
            ),
        ));
    }
    if results.get(home).is_some_and(found) {
        if !missed.is_empty() {
            writeln!(
                out,
                "not reached: {} (releases there cannot prove they are unfrozen, so they hold)",
                missed.join(", ")
            )?;
        }
        Ok(Exit::Ok)
    } else {
        let why = match results.get(home) {
            Some(Err(e)) => e.to_string(),
            Some(Ok(_)) => "no such freeze there".to_string(),
            None => "it was not asked".to_string(),
        };
        Err(CliError::new(
            Exit::Error,
            anyhow!("{id} is not on record in the home cluster {home}: {why}"),
        ))
    }
}

pub async fn freeze(args: &FreezeArgs) -> CliResult {
    if let Some(FreezeSub::Status(s)) = &args.status {
        return status(s).await;
    }
    let fleet_args = args
        .fleet
        .as_ref()
        .ok_or_else(|| CliError::new(Exit::Usage, anyhow!("--fleet is required")))?;
    let reason = args
        .reason
        .clone()
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| {
            CliError::new(
                Exit::Usage,
                anyhow!("--reason is required: say why deploys are frozen"),
            )
        })?;
    if args.duration.is_some_and(|d| d.as_duration().is_zero()) {
        return Err(CliError::new(
            Exit::Usage,
            anyhow!(
                "--for must be longer than 0s: a freeze that ends as it starts blocks nothing; leave --for out to freeze until lifted"
            ),
        ));
    }
    let fleet = read_fleet(&fleet_args.fleet)?;
    let home = fleet.home.clone();
    let conn = connect(
        fleet,
        fleet_args.kubeconfig.as_deref(),
        &fleet_args.namespace,
    )
    .await?;
    // The fleet's clock, which releases judge freezes by.
    let now = conn.clock.now();
    let expires_at = match args.duration {
        Some(d) => Some(
            now.checked_add(d.signed())
                .map_err(|e| anyhow!("--for: {e}"))?
                .to_string(),
        ),
        None => None,
    };
    let spec = DeployFreezeSpec {
        reason,
        author: match &args.author {
            Some(a) => a.clone(),
            None => conn.acting_user().await,
        },
        ticket: args.ticket.clone(),
        scope: Scope {
            apps: args.apps.clone(),
            tiers: args.tiers.clone(),
            clusters: args.clusters.clone(),
        },
        expires_at,
        lifted: None,
    };
    let id = format!(
        "freeze-{}-{:04x}",
        now.strftime("%Y%m%d-%H%M%S"),
        rand::random::<u16>()
    );
    let results = freezes::freeze(&conn.clients, &id, &spec, now).await;
    let exit = report("frozen", &id, &home, &results);
    let mut scope = Vec::new();
    if !spec.scope.apps.is_empty() {
        scope.push(format!("apps {}", spec.scope.apps.join(", ")));
    }
    if !spec.scope.tiers.is_empty() {
        scope.push(format!("tiers {}", spec.scope.tiers.join(", ")));
    }
    let scope = if scope.is_empty() {
        "every release".to_string()
    } else {
        scope.join("; ")
    };
    let until = match &spec.expires_at {
        Some(t) => format!("until {t}"),
        None => "until lifted".to_string(),
    };
    let message = format!("deploys frozen for {scope}, {until}: {}", spec.reason);
    notify_freeze(
        &conn,
        Event::FreezeSet,
        message,
        &id,
        &results,
        &spec.reason,
        &spec.author,
    )
    .await;
    exit
}

/// Tells the notification receivers a freeze was set or lifted on the
/// clusters where it was, then waits a little for them.
async fn notify_freeze(
    conn: &super::connect::Connected,
    event: Event,
    message: String,
    id: &str,
    results: &PerCluster,
    reason: &str,
    by: &str,
) {
    let clusters: Vec<String> = results
        .iter()
        .filter(|(_, r)| matches!(r, Ok(Outcome::Done)))
        .map(|(c, _)| c.clone())
        .collect();
    if clusters.is_empty() || conn.fleet.notifications.is_empty() {
        return;
    }
    let notifier = conn.notifier();
    let n = Notification::of_freeze(
        event,
        conn.clock.now(),
        message,
        FreezeRef {
            id: id.to_string(),
            clusters,
            reason: reason.to_string(),
            by: by.to_string(),
        },
    );
    notifier.send(None, &n);
    notifier.flush(Duration::from_secs(10)).await;
    for (receiver, _, error) in notifier.failures() {
        eprintln!("notification to {receiver} not delivered: {error}");
    }
}

pub async fn unfreeze(args: &UnfreezeArgs) -> CliResult {
    let fleet = read_fleet(&args.fleet.fleet)?;
    let home = fleet.home.clone();
    let conn = connect(
        fleet,
        args.fleet.kubeconfig.as_deref(),
        &args.fleet.namespace,
    )
    .await?;
    let ids: Vec<String> = match (&args.id, args.all) {
        (Some(id), false) => vec![id.clone()],
        (None, true) => {
            let mut ids = Vec::new();
            for c in conn.clients.iter() {
                if let Ok(list) = freezes::list(c).await {
                    ids.extend(
                        list.iter()
                            .filter(|f| f.is_active(conn.clock.now()))
                            .filter_map(|f| f.metadata.name.clone()),
                    );
                }
            }
            ids.sort();
            ids.dedup();
            ids
        }
        _ => {
            return Err(CliError::new(
                Exit::Usage,
                anyhow!("name the freeze to lift, or pass --all"),
            ));
        }
    };
    if ids.is_empty() {
        println!("no active freeze");
        return Ok(Exit::Ok);
    }
    let mut exit = Exit::Ok;
    let who = conn.acting_user().await;
    for id in ids {
        let results =
            freezes::unfreeze(&conn.clients, &id, &who, &args.reason, conn.clock.now()).await;
        let reported = report("lifted", &id, &home, &results);
        let message = format!("freeze {id} lifted: {}", args.reason);
        notify_freeze(
            &conn,
            Event::FreezeLifted,
            message,
            &id,
            &results,
            &args.reason,
            &who,
        )
        .await;
        exit = reported?;
    }
    Ok(exit)
}

async fn status(args: &StatusArgs) -> CliResult {
    let conn = args.fleet.connect().await?;
    // What applies at `--at`, or now on the fleet's clock.
    let now = args.at.unwrap_or_else(|| conn.clock.now());
    let mut active: BTreeMap<String, (DeployFreeze, Vec<String>)> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for c in conn.clients.iter() {
        match freezes::list(c).await {
            Ok(list) => {
                for f in list.into_iter().filter(|f| f.is_active(now)) {
                    let id = f.metadata.name.clone().unwrap_or_default();
                    active
                        .entry(id)
                        .or_insert_with(|| (f, Vec::new()))
                        .1
                        .push(c.name.clone());
                }
            }
            Err(e) => unreadable.push(format!("{}: {e}", c.name)),
        }
    }
    let store = ReleaseStore::new(conn.clients.home(), &args.fleet.namespace);
    let releases = match store.list().await {
        Ok((list, undecodable)) => {
            unreadable.extend(undecodable);
            list
        }
        Err(e) => {
            unreadable.push(format!("releases holding for a freeze: {e}"));
            Vec::new()
        }
    };
    let holding: Vec<(String, String)> = releases
        .iter()
        .filter_map(|r| {
            let s = r.status.as_ref()?;
            let h = s.holds.iter().find(|h| h.reason == HoldReason::Freeze)?;
            Some((
                r.metadata.name.clone().unwrap_or_default(),
                h.message.clone(),
            ))
        })
        .collect();
    let windows = match &args.policies {
        Some(dir) if dir.join("freezes.yaml").exists() => {
            let path = dir.join("freezes.yaml");
            let text = std::fs::read_to_string(&path)?;
            crate::freeze::window::parse(&path.display().to_string(), &text)?
        }
        _ => Vec::new(),
    };
    let windows: Vec<(String, bool)> = windows
        .iter()
        .map(|w| (w.describe(), w.contains(now)))
        .collect();
    let mut out = std::io::stdout().lock();
    if args.output == Output::Json {
        let freezes: Vec<_> = active
            .iter()
            .map(|(id, (f, on))| json!({"id": id, "spec": f.spec, "clusters": on, "history": f.status.as_ref().map(|s| &s.history)}))
            .collect();
        let holding: Vec<_> = holding
            .iter()
            .map(|(n, m)| json!({"release": n, "hold": m}))
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(
                &json!({"active": freezes, "windows": windows.iter().map(|(w, on)| json!({"window": w, "activeNow": on})).collect::<Vec<_>>(), "unreadable": unreadable, "holding": holding})
            )?
        )?;
        return Ok(Exit::Ok);
    }
    if active.is_empty() {
        writeln!(out, "no active freeze")?;
    }
    for (id, (f, on)) in &active {
        writeln!(
            out,
            "{id}: {} — by {}{}",
            f.spec.reason,
            f.spec.author,
            f.spec
                .ticket
                .as_deref()
                .map(|t| format!(" [{t}]"))
                .unwrap_or_default()
        )?;
        writeln!(
            out,
            "  blocks: {}; until: {}; on: {}",
            f.spec.scope.describe(),
            f.spec.expires_at.as_deref().unwrap_or("lifted"),
            on.join(", ")
        )?;
    }
    let active_label = match args.at {
        Some(at) => format!(" — ACTIVE AT {at}"),
        None => " — ACTIVE NOW".to_string(),
    };
    for (w, on) in &windows {
        writeln!(out, "{w}{}", if *on { active_label.as_str() } else { "" })?;
    }
    for u in &unreadable {
        writeln!(out, "cannot read freezes on {u}")?;
    }
    for (name, why) in &holding {
        writeln!(out, "release {name} holds: {why}")?;
    }
    Ok(Exit::Ok)
}
