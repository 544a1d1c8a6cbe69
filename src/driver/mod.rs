//! The driver: observe → decide → apply → persist, for one release, shared by
//! the CLI's `run` and the controller. Reads come from watch caches; the
//! engine decides; one applier acts; the status is written once per pass, and
//! only under this driver's lease.

mod apply;
mod parked;
mod stop;
mod turns;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::mpsc;

use parked::Parked;
pub use parked::Parking;
pub use stop::stop_signal;
use stop::{stop_requested, stopping};
pub use turns::Turns;

use crate::admission;
use crate::clock::SharedClock;
use crate::engine::{self, Action};
use crate::fleet::cache::FleetCache;
use crate::fleet::lease::{self, LeaseGuard};
use crate::fleet::observe::{Observed, observe};
use crate::fleet::state::ReleaseStore;
use crate::fleet::workload::Slots;
use crate::fleet::{self, FleetClients, guard, replica_ratio, router, workload};
use crate::gates::analysis::{Analysis, Context};
use crate::spec::status::{GateSeries, Phase, Transition};
use crate::spec::{Fleet, Release, ReleaseStatus, ResolvedRelease, RouterKind, TierPolicyFile};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Fleet(#[from] fleet::Error),
    #[error("release {0} not found in the home cluster")]
    NotFound(String),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Fleet(e) => e.metric_label(),
            Error::NotFound(_) => "not_found",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a drive ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Aborted(String),
    /// Refused or impossible: the status message says why.
    Failed(String),
    /// The spec no longer resolves (bad field, tier bounds): nothing was done.
    Invalid {
        message: String,
        breaks_policy: bool,
    },
    /// Paused by a person (only when asked to stop there).
    Paused,
    /// Told to stop (a signal): stopped between passes, the lease released;
    /// running it again resumes where it stood.
    Stopped,
}

/// What a driver reports as it goes.
///
/// Its large parts are boxed: every drive's channel holds a block of 32
/// messages from its start, and a controller has one per release.
#[derive(Clone, Debug)]
pub enum Progress {
    /// A new entry of the release's history.
    Transition(Box<Transition>),
    /// An action applied (or failed).
    Applied {
        action: Box<Action>,
        error: Option<String>,
    },
    /// The status after a pass that changed it.
    Status(Box<ReleaseStatus>),
    /// Something a person should know that is not a transition.
    Note(String),
}

/// Everything a driver needs besides the release's name.
#[derive(Clone)]
pub struct Driver {
    pub fleet: FleetClients,
    pub fleet_spec: Fleet,
    pub policy: TierPolicyFile,
    pub clock: SharedClock,
    pub identity: String,
    pub lease_duration: Duration,
    /// Longest wait between passes when nothing changes (real time).
    pub idle: Duration,
    /// Scheduled freeze windows from policy.
    pub windows: Vec<crate::freeze::Window>,
    /// The lease each release's lease is held under (the controller's leader
    /// lease), so it needs no renewals of its own; `None`: renewed per release.
    pub under: Option<lease::Parent>,
    /// Sends the release's transitions to the fleet's notification receivers.
    pub notifier: crate::notify::Notifier,
    /// Turns to pass, shared by the drivers made from this one.
    pub turns: Turns,
    /// What the Releases waiting between passes are compressed against.
    pub parking: Parking,
}

#[derive(Clone, Debug, Default)]
pub struct DriveOptions {
    /// Return `Outcome::Paused` when a person pauses the release.
    pub stop_when_paused: bool,
    /// When another driver holds the release's lease, wait for it instead of failing.
    pub wait_for_lease: bool,
    /// Becomes true when the driver must stop at its next safe point: between
    /// passes, never in the middle of applying a pass's actions.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// A status a driver decided but could not write before its lease lapsed,
/// and the Release's resourceVersion it was decided from: the next lease's
/// drive goes on from it only if nobody wrote the Release in between.
pub struct Carried {
    decided_from: Option<String>,
    status: ReleaseStatus,
}

/// How long a release that ended waits for its last notifications (real time).
const NOTIFY_SETTLE: Duration = Duration::from_secs(10);

/// How long an applied action is given to show up in the caches before it is applied again.
const SETTLE: Duration = Duration::from_secs(5);

/// How long a pass waits for a cluster's answer to a question it can ask
/// again next pass (who the cluster is; whether a failing one answers yet).
const ASK_WITHIN: Duration = Duration::from_secs(2);

impl Driver {
    /// Drives release `name` until it completes, rolls back or fails.
    pub async fn drive(
        &self,
        namespace: &str,
        name: &str,
        opts: DriveOptions,
        events: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<Outcome> {
        let emit = |p: Progress| {
            if let Some(tx) = &events {
                let _ = tx.unbounded_send(p);
            }
        };
        let home = self.fleet.home();
        let store = ReleaseStore::new(home, namespace);
        // What the driver decided but could not write before its lease
        // lapsed, and the Release's version it decided from.
        // Boxed: a status is hundreds of bytes inline, and this is almost
        // always empty in every waiting drive.
        let mut carried: Option<Box<Carried>> = None;
        let mut lapsed = false;
        loop {
            let mut told = false;
            let lease = loop {
                let taken = match &self.under {
                    Some(p) => {
                        Box::pin(lease::acquire_under(
                            home,
                            namespace,
                            name,
                            p,
                            self.lease_duration,
                        ))
                        .await
                    }
                    None => {
                        Box::pin(lease::acquire(
                            home,
                            namespace,
                            name,
                            &self.identity,
                            self.lease_duration,
                        ))
                        .await
                    }
                };
                match taken {
                    Ok(l) => break l,
                    Err(fleet::Error::LeaseHeld { .. }) if stopping(&opts) => {
                        return Ok(Outcome::Stopped);
                    }
                    Err(fleet::Error::LeaseHeld { release, holder })
                        if opts.wait_for_lease || lapsed =>
                    {
                        if !told {
                            emit(Progress::Note(format!(
                                "release {release} is driven by {holder}; waiting for its lease"
                            )));
                            told = true;
                        }
                        let mut stop = opts.stop.clone();
                        tokio::select! {
                            _ = tokio::time::sleep(self.lease_duration / 3) => {}
                            _ = stop_requested(&mut stop) => {}
                        }
                    }
                    // The home cluster still failing after a lapse: try again.
                    Err(e) if lapsed && e.is_unavailable() => {
                        if stopping(&opts) {
                            return Ok(Outcome::Stopped);
                        }
                        tokio::time::sleep(self.lease_duration / 3).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            if told {
                emit(Progress::Note(format!("took over the lease of {name}")));
            }
            let outcome = self
                .drive_leased(&store, &lease, name, opts.clone(), &emit, &mut carried)
                .await;
            match outcome {
                // A driver of its own (not a controller's, whose leadership
                // decides) whose renewals failed: nothing is acted on without
                // the lease, so take it again once the home cluster answers,
                // and go on from the Release as it is then.
                Err(Error::Fleet(fleet::Error::LeaseLost(_)))
                    if self.under.is_none() && !stopping(&opts) =>
                {
                    emit(Progress::Note(format!(
                        "the lease of {name} lapsed (its renewals failed); taking it again"
                    )));
                    lapsed = true;
                }
                other => {
                    Box::pin(lease.release(home)).await;
                    return other;
                }
            }
        }
    }

    async fn turn(&self) -> Option<turns::Turn> {
        Some(self.turns.take().await)
    }

    /// A turn, or `None` once the driver is told to stop: a driver asked to
    /// hand its release over holds the release's Lease until it stops, and
    /// a replica's drivers can wait minutes for a turn when it drives more
    /// than its share, which is when it hands releases over.
    async fn turn_or_stop(&self, opts: &DriveOptions) -> Option<turns::Turn> {
        if stopping(opts) {
            return None;
        }
        self.turns.take_or_stop(opts.stop.clone()).await
    }

    /// Awaits `wait` with the pass's turn given back, then takes a turn
    /// again: what waits on clusters (or on what every driver waits for)
    /// is not a pass's work, and a cluster that hangs would otherwise hold
    /// the turn while other releases, an abort among them, wait for one.
    /// Only before a pass decides: told to stop meanwhile, it takes no turn
    /// (`turn` is left `None`) and the driver stops there.
    async fn without_turn<T>(
        &self,
        turn: &mut Option<turns::Turn>,
        opts: &DriveOptions,
        wait: impl std::future::Future<Output = T>,
    ) -> T {
        drop(turn.take());
        let out = wait.await;
        *turn = self.turn_or_stop(opts).await;
        out
    }

    // The calls awaited in a pass are boxed: a task's future is as large as
    // its largest state, and a controller keeps one per release it drives,
    // almost always waiting between passes.
    async fn drive_leased(
        &self,
        store: &ReleaseStore<'_>,
        lease: &LeaseGuard,
        name: &str,
        opts: DriveOptions,
        emit: &impl Fn(Progress),
        carried: &mut Option<Box<Carried>>,
    ) -> Result<Outcome> {
        // Reading and resolving the Release is a pass's work: it takes a
        // turn. Told to stop before, nothing was read or written.
        let mut turn = self.turn_or_stop(&opts).await;
        if turn.is_none() {
            return Ok(Outcome::Stopped);
        }
        // The large values kept across a pass's awaits are boxed.
        let current = read(store, name).await?;
        let key = format!("{}/{name}", store.namespace);
        if let Some(s) = &current.status {
            self.notifier.seed(&key, &s.notifications);
        }
        // Boxed as it is made: the match's value would otherwise hold a
        // resolved release's room (kilobytes) in every waiting drive.
        let first = match self.resolve(&current).map(Box::new) {
            Ok(r) => r,
            Err(outcome) => {
                return Box::pin(self.refuse(store, lease, &current, outcome, emit)).await;
            }
        };
        // Asking clusters who they are waits on them (up to `ASK_WITHIN` for
        // one that hangs).
        let names = first.cluster_names();
        let ask = fleet::live::cluster_uids(&self.fleet, &names, ASK_WITHIN);
        let mut uids = self.without_turn(&mut turn, &opts, Box::pin(ask)).await;
        if turn.is_none() {
            return Ok(Outcome::Stopped);
        }
        if let Some(why) = crate::policy::not_distinct(&uids) {
            let outcome = Outcome::Invalid {
                message: why,
                breaks_policy: true,
            };
            let started = current
                .status
                .as_ref()
                .is_some_and(|s| s.phase != Phase::Pending);
            if !started {
                return Box::pin(self.refuse(store, lease, &current, outcome, emit)).await;
            }
        }
        let cache = FleetCache::start(&self.fleet, &first);
        // Each pass resolves the Release as it is then.
        drop(first);
        // People's changes (pause, promote, abort) wake the driver.
        let releases = self
            .fleet
            .watches
            .releases(self.fleet.home(), &store.namespace);
        releases.subscribe(name, &cache.notifier());
        // Waiting for the caches is not: every driver started with this one
        // waits the same, its Release parked meanwhile (a controller that
        // starts takes up every release at once).
        let parked = Parked::of(current, &self.parking);
        let mut stop = opts.stop.clone();
        let caches = async {
            tokio::select! {
                _ = self.wait_for_caches(&cache) => {}
                _ = stop_requested(&mut stop) => {}
            }
        };
        self.without_turn(&mut turn, &opts, Box::pin(caches)).await;
        if turn.is_none() {
            return Ok(Outcome::Stopped);
        }
        let mut current = match parked.unpark() {
            Some(r) => r,
            None => read(store, name).await?,
        };
        let mut analysis = Analysis::default();
        let mut hooks = crate::hooks::Hooks::new(self.clock.clone());
        // Gate values over the release, kept in memory between status writes.
        // Kept here only, not also in `current`: they are most of a
        // status's bytes, and a controller holds a Release per release.
        let mut series: Vec<GateSeries> = take_series(&mut current);
        let mut last_applied: Option<(Vec<Action>, Instant)> = None;
        let mut unavailable: BTreeMap<String, String> = BTreeMap::new();
        // Actions the applier's guard refused, by cluster: the release holds on them.
        let mut defects: BTreeMap<String, String> = BTreeMap::new();
        let mut backoff = Duration::from_millis(200);
        // A status decided while the home cluster could not take it: the
        // next pass decides from it, so what happened while the home failed
        // (the hold it caused, above all) reaches the history once it answers.
        let mut unwritten: Option<Box<ReleaseStatus>> = carried
            .take()
            .filter(|c| c.decided_from == current.metadata.resource_version)
            .map(|c| Box::new(c.status));
        loop {
            if stopping(&opts) {
                return Ok(Outcome::Stopped);
            }
            lease.check(name)?;
            // The watch keeps no statuses: a newer version someone else
            // wrote (a person pausing, a pipeline superseding) is read whole.
            if is_newer(&releases.get(name), &current)
                && let Ok(Some(newer)) = Box::pin(store.get(name)).await
            {
                *current = newer;
                take_series(&mut current);
            }
            let rel = match self.resolve(&current).map(Box::new) {
                Ok(r) => r,
                Err(outcome) => {
                    let last = with_series(current, series);
                    return Box::pin(self.refuse(store, lease, &last, outcome, emit)).await;
                }
            };
            // Clusters not identified yet are asked each pass until they answer
            // (those known answer from the fleet's memory); entries found to
            // reach one cluster hold the release. Asked before the pass looks,
            // so what it decides from is as fresh as it can be.
            if uids.len() < rel.clusters.len() {
                let names = rel.cluster_names();
                let ask = fleet::live::cluster_uids(&self.fleet, &names, ASK_WITHIN);
                uids = self.without_turn(&mut turn, &opts, Box::pin(ask)).await;
                if turn.is_none() {
                    return Ok(Outcome::Stopped);
                }
            }
            // What the pass decides from, borrowed: a status is mostly its
            // history, and a pass already makes the copies it writes.
            let held = Box::new(match (&unwritten, &current.status) {
                (Some(u), _) => Cow::Borrowed(&**u),
                (None, Some(s)) => Cow::Borrowed(s),
                (None, None) => Cow::Owned(ReleaseStatus::default()),
            });
            let status: &ReleaseStatus = &held;
            let persisted = current.status.as_ref().map_or(0, |s| s.history.len());
            let now = self.clock.now();
            // Until a version replaced in flight is back on blue, its
            // workloads are the ones observed, measured and acted on.
            let seen = Box::new(engine::drive::in_flight(&rel, status));
            let observed = observe(&seen, &cache, &self.windows, now);
            let mut obs = observed.observation.clone();
            obs.defects = defects.clone();
            if let Some(why) = crate::policy::not_distinct(&uids) {
                obs.defects.insert(self.fleet_spec.home.clone(), why);
            }
            // A cluster whose API server kept failing cutover's writes is
            // unreachable for the engine (a hold that says so) until it
            // answers again, even while its watches still stream.
            let mut answering = BTreeSet::new();
            if !unavailable.is_empty() {
                // Asking a failing cluster takes up to `ASK_WITHIN`.
                let ask = async {
                    for cluster in unavailable.keys() {
                        if let Ok(c) = self.fleet.get(cluster)
                            && c.answers(ASK_WITHIN).await
                        {
                            answering.insert(cluster.clone());
                        }
                    }
                };
                self.without_turn(&mut turn, &opts, Box::pin(ask)).await;
                if turn.is_none() {
                    return Ok(Outcome::Stopped);
                }
            }
            let recovered =
                engine::drive::mark_unreachable(&mut obs, &unavailable, |c| answering.contains(c));
            for c in recovered {
                unavailable.remove(&c);
            }
            let ctx = Context {
                rel: &seen,
                fleet: &self.fleet_spec,
                cache: &cache,
                slots: &observed.slots,
                clusters: engine::drive::gate_scope(status),
            };
            let (gate, reports) = analysis.tick(&ctx, status.step, status.analysis_epoch, now);
            obs.gate = Some(gate);
            obs.hooks = hooks.observed();
            record_series(&mut series, &reports);
            let input = Box::new(engine::drive::with_reports(status, reports));
            let mut d = Box::new(engine::decide(&rel, &input, &obs, now));
            drop(input);
            hooks.ensure(
                &d.hooks,
                &crate::hooks::Context {
                    rel: &seen,
                    revision: d.status.revision,
                    fleet: &self.fleet,
                    slots: &observed.slots,
                },
            );
            d.status.notifications = self.notifier.deliveries(&key, &status.notifications);
            let changed = d.status != *status || unwritten.is_some();
            drop(held);
            // The decided status goes into the write (`out`) rather than a copy.
            let (phase, message) = (d.status.phase, d.status.message.clone());
            let repeat = last_applied
                .as_ref()
                .is_some_and(|(a, at)| *a == d.actions && at.elapsed() < SETTLE);
            let mut failed = false;
            if !d.actions.is_empty() && !repeat {
                // Acting waits on the clusters acted on, and one that hangs
                // holds a request for its whole timeout and retries: the
                // turn is given back meanwhile, so a hung cluster holds up
                // only the releases acting on it, not an abort elsewhere.
                drop(turn.take());
                // Nor does it hold the Release as objects meanwhile: a wave
                // of releases stepping together (their pipelines shipped at
                // once) acts at once, and each would hold its Release, some
                // 15 KB decoded, until its actions are answered and a turn
                // is free again.
                let parked = Parked::of(current, &self.parking);
                for a in &d.actions {
                    lease.check(name)?;
                    let result = Box::pin(self.apply(&seen, &observed, &cache, a)).await;
                    match &result {
                        Err(fleet::Error::Unsafe(why)) => {
                            defects.insert(a.cluster().to_string(), why.clone());
                        }
                        Ok(()) => {
                            defects.remove(a.cluster());
                        }
                        Err(_) => {}
                    }
                    if let Err(e) = &result
                        && e.is_unavailable()
                    {
                        unavailable.insert(a.cluster().to_string(), e.to_string());
                    }
                    let error = result.err().map(|e| e.to_string());
                    if let Some(e) = &error {
                        tracing::warn!(release = name, cluster = a.cluster(), action = %a, error = %e, "action failed");
                        failed = true;
                    }
                    emit(Progress::Applied {
                        action: Box::new(a.clone()),
                        error,
                    });
                }
                last_applied = Some((d.actions.clone(), Instant::now()));
                turn = self.turn().await;
                current = match parked.unpark() {
                    Some(r) => r,
                    // Text it wrote itself that does not read back: what
                    // was decided is written against the Release it was
                    // decided from, so decide again from the Release as it
                    // is (the actions are safe to repeat).
                    None => {
                        current = read_anew(store, name).await?;
                        continue;
                    }
                };
            }
            // What the pass observed is not kept while its status write
            // waits for the home cluster (writes queue there when many
            // releases pass at once); the resolved release only where the
            // write brings transitions to notify of.
            drop((obs, observed, seen));
            let rel = (d.status.history.len() > persisted).then_some(rel);
            if changed {
                if unavailable.contains_key(&self.fleet_spec.home) {
                    // Decided knowing the home fails: kept for the next lease
                    // should this one lapse before the home answers.
                    *carried = Some(Box::new(Carried {
                        decided_from: current.metadata.resource_version.clone(),
                        status: d.status.clone(),
                    }));
                }
                lease.check(name)?;
                let mut out = Box::new(std::mem::take(&mut d.status));
                // The gate values go out with the write and come back once it
                // answers: lent, not copied.
                out.gate_series = std::mem::take(&mut series);
                // Boxed as it lands: a Release is kilobytes inline, and the
                // match's value would hold that room in every waiting drive.
                let written = Box::pin(store.write_status(&current, &out))
                    .await
                    .map(Box::new);
                series = std::mem::take(&mut out.gate_series);
                match written {
                    Ok(written) => {
                        unwritten = None;
                        *carried = None;
                        for t in out.history.iter().skip(persisted) {
                            if let Some(rel) = &rel {
                                self.notify(&key, rel, t, &out);
                            }
                            emit(Progress::Transition(Box::new(t.clone())));
                        }
                        emit(Progress::Status(out));
                        current = written;
                        take_series(&mut current);
                    }
                    Err(fleet::Error::Conflict(_)) => {
                        // Someone changed the Release (a person pausing, say): read it and decide again.
                        current = read_anew(store, name).await?;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(release = name, error = %e, "status write failed");
                        failed = true;
                        let home = &self.fleet_spec.home;
                        if e.is_unavailable() {
                            if unavailable.contains_key(home) {
                                // Decided knowing the home fails: kept until it answers.
                                unwritten = Some(out);
                            } else {
                                // Decide again at once, with the home cluster unreachable.
                                unavailable.insert(home.clone(), e.to_string());
                                continue;
                            }
                        }
                    }
                }
            }
            if phase.is_terminal() {
                // Waiting for the last notifications is not a pass's work,
                // and what the pass decided is done with: releases end
                // together (a fleet's pipelines ship at once), so what each
                // holds meanwhile adds up.
                drop(turn.take());
                drop((d, rel));
                // Nor are its gates' runs (their tallies and last scrapes)
                // or its view of the caches: an ended release measures and
                // observes nothing more. Its hooks stay until it returns.
                drop((analysis, cache));
                let last = with_series(current, std::mem::take(&mut series));
                Box::pin(self.settle_notifications(store, lease, name, &key, last)).await;
                let message = message.unwrap_or_default();
                return Ok(match phase {
                    Phase::Completed => Outcome::Completed,
                    Phase::Aborted => Outcome::Aborted(message),
                    // The only other terminal phase.
                    _ => Outcome::Failed(message),
                });
            }
            if phase == Phase::Paused && opts.stop_when_paused {
                return Ok(Outcome::Paused);
            }
            let wake_at = [
                d.wake_at,
                analysis.next_due().filter(|_| !phase.is_terminal()),
                hooks.next_due(),
            ]
            .into_iter()
            .flatten()
            .min();
            let mut wait = match wake_at {
                Some(at) => self
                    .clock
                    .real(at.duration_since(now).unsigned_abs())
                    .min(self.idle),
                None => self.idle,
            };
            if failed {
                wait = wait.min(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            } else {
                backoff = Duration::from_millis(200);
            }
            if !d.actions.is_empty() && !repeat && !failed {
                // Acted: look again as soon as the effect shows.
                wait = wait.min(SETTLE);
            }
            // What a pass decided is not kept while it waits (a release
            // waits far longer than it decides): it would otherwise live on
            // in the waiting future, one set per release.
            drop((d, rel));
            // Nor is the Release kept as objects: its struct alone is 5.8 KB
            // (a pod template's fields are inline) before any of its strings.
            let parked = Parked::of(current, &self.parking);
            drop(turn.take());
            let mut stop = opts.stop.clone();
            tokio::select! {
                _ = cache.changed() => {}
                _ = analysis.landed() => {}
                _ = hooks.landed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop_requested(&mut stop) => {}
            }
            // Unparked only once it is this release's turn; told to stop
            // while it waits for one, it stops there.
            turn = self.turn_or_stop(&opts).await;
            if turn.is_none() {
                return Ok(Outcome::Stopped);
            }
            current = match parked.unpark() {
                Some(r) => r,
                // Text it wrote itself that does not read back: read it anew.
                None => read_anew(store, name).await?,
            };
        }
    }

    /// Hands a transition to the notification receivers.
    fn notify(&self, key: &str, rel: &ResolvedRelease, t: &Transition, status: &ReleaseStatus) {
        let Some(event) = crate::spec::notify::Event::of(t, status) else {
            return;
        };
        let n = crate::spec::notify::Notification::of_transition(
            event,
            t,
            &rel.namespace,
            &rel.name,
            &rel.app,
            &rel.version,
            status,
        );
        self.notifier.send(Some(key), &n);
    }

    /// Once a release has ended: waits a little for its last messages, and
    /// records in its status how they went, so a receiver that was down
    /// shows there even for the final message.
    async fn settle_notifications(
        &self,
        store: &ReleaseStore<'_>,
        lease: &LeaseGuard,
        name: &str,
        key: &str,
        current: Box<Release>,
    ) {
        // Parked while it waits for its messages and a turn: releases that
        // end together wait together, each with its whole Release and its
        // gate series.
        let parked = Parked::of(current, &self.parking);
        self.notifier.flush(NOTIFY_SETTLE).await;
        // The write of the deliveries is a pass's work, as any status write.
        // Taken even with nothing to record: it paces releases that end
        // together, whose drives would otherwise all end at once (a replica
        // of three rose by 30 MiB for a few seconds without it).
        let _turn = self.turn().await;
        let mut current = match parked.unpark() {
            Some(r) => r,
            None => match store.get(name).await {
                Ok(Some(r)) => Box::new(r),
                _ => return,
            },
        };
        for _ in 0..3 {
            let Some(mut status) = current.status.clone() else {
                return;
            };
            let deliveries = self.notifier.deliveries(key, &status.notifications);
            if deliveries == status.notifications || lease.check(name).is_err() {
                return;
            }
            status.notifications = deliveries;
            match store.write_status(&current, &status).await {
                Err(fleet::Error::Conflict(_)) => match store.get(name).await {
                    Ok(Some(fresh)) => *current = fresh,
                    _ => return,
                },
                Err(e) => {
                    tracing::warn!(release = name, error = %e, "status write failed");
                    return;
                }
                Ok(_) => return,
            }
        }
    }

    fn resolve(&self, r: &Release) -> std::result::Result<ResolvedRelease, Outcome> {
        let name = r.metadata.name.clone().unwrap_or_default();
        admit(
            &name,
            r.metadata.namespace.as_deref(),
            &r.spec,
            &self.fleet_spec,
            &self.policy,
        )
        .map_err(|(message, breaks_policy)| Outcome::Invalid {
            message,
            breaks_policy,
        })
    }

    /// Records on the Release that its spec cannot be run, and why.
    async fn refuse(
        &self,
        store: &ReleaseStore<'_>,
        lease: &LeaseGuard,
        current: &Release,
        outcome: Outcome,
        emit: &impl Fn(Progress),
    ) -> Result<Outcome> {
        let Outcome::Invalid { message, .. } = &outcome else {
            return Ok(outcome);
        };
        let mut status = current.status.clone().unwrap_or_default();
        if status.phase == Phase::Pending && status.message.as_deref() != Some(message.as_str()) {
            status.message = Some(message.clone());
            lease.check(current.metadata.name.as_deref().unwrap_or_default())?;
            store.write_status(current, &status).await?;
            emit(Progress::Status(Box::new(status)));
        }
        Ok(outcome)
    }

    async fn wait_for_caches(&self, cache: &FleetCache) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if cache.clusters.values().all(|c| c.reachable().is_ok()) {
                return;
            }
            tokio::select! {
                _ = cache.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}

/// Admits a release for a driver (CLI, controller, demo) before it acts: the
/// core's one admission, without freezes (in flight a freeze holds rather than
/// refuses). On refusal: why, and whether only the tier's rules are broken.
pub fn admit(
    name: &str,
    namespace: Option<&str>,
    spec: &crate::spec::ReleaseSpec,
    fleet: &Fleet,
    policy: &TierPolicyFile,
) -> std::result::Result<ResolvedRelease, (String, bool)> {
    let request = admission::Request {
        name,
        namespace,
        spec,
        fleet,
        policy,
        freezes: None,
    };
    admission::admit(&request)
        .admitted(name)
        .map_err(|refused| (refused.message(None, ""), refused.breaks_policy()))
}

/// Adds each report's newest measured value to its metric's series.
fn record_series(series: &mut Vec<GateSeries>, reports: &[crate::gates::MetricReport]) {
    for r in reports {
        let Some((at, value)) = r
            .measurements
            .iter()
            .rev()
            .find_map(|m| Some((m.at.as_second(), m.value?)))
        else {
            continue;
        };
        let i = match series
            .iter()
            .position(|s| s.name == r.name && s.cluster == r.cluster)
        {
            Some(i) => i,
            None => {
                // One more, not double: a release has a series per gate
                // and cluster, kept for its whole life.
                series.reserve_exact(1);
                series.push(GateSeries::new(
                    r.name.clone(),
                    r.cluster.clone(),
                    r.threshold.clone(),
                ));
                series.len() - 1
            }
        };
        series[i].push(at, value);
    }
}

/// Reads release `name` from the API, boxed; `NotFound` if it is gone.
async fn read(store: &ReleaseStore<'_>, name: &str) -> Result<Box<Release>> {
    let found = Box::pin(store.get(name)).await?;
    Ok(Box::new(
        found.ok_or_else(|| Error::NotFound(name.to_string()))?,
    ))
}

/// Reads release `name` again in a drive that keeps its gate series: the
/// ones read are dropped, as the drive's own are as new or newer.
async fn read_anew(store: &ReleaseStore<'_>, name: &str) -> Result<Box<Release>> {
    let mut r = read(store, name).await?;
    take_series(&mut r);
    Ok(r)
}

/// Takes the gate series out of a Release's status, for the driver to keep
/// once (`series`); they are put back in every status it writes. Its
/// `managedFields` go too: the server's record of who wrote which field,
/// never read here, and a status write that sends none keeps them.
fn take_series(r: &mut Release) -> Vec<GateSeries> {
    r.metadata.managed_fields = None;
    r.status
        .as_mut()
        .map(|s| std::mem::take(&mut s.gate_series))
        .unwrap_or_default()
}

/// `r` with its gate series put back, for a status written from it as a
/// drive ends (moved, not copied: its driver is done with it).
fn with_series(mut r: Box<Release>, series: Vec<GateSeries>) -> Box<Release> {
    if let Some(s) = r.status.as_mut() {
        s.gate_series = series;
    }
    r
}

/// Whether the cached Release is newer than the one in hand.
/// (`cached`: the resourceVersion the shared watch last saw.)
fn is_newer(cached: &[Arc<String>], current: &Release) -> bool {
    let Some(cached) = cached.first() else {
        return false;
    };
    let held = current.metadata.resource_version.as_deref();
    match (cached.parse::<u64>(), held.map(str::parse::<u64>)) {
        (Ok(a), Some(Ok(b))) => a > b,
        _ => Some(cached.as_str()) != held,
    }
}

/// A driver identity: host, process and a random suffix.
pub fn identity(prefix: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".into());
    format!(
        "{prefix}-{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Green's share per cluster, for progress lines.
pub fn weights_line(status: &ReleaseStatus) -> String {
    let w: BTreeMap<_, _> = status.weights.iter().collect();
    w.iter()
        .map(|(c, p)| format!("{c}={p}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async function returns, without calling it.
    fn future_size<'a, F: std::future::Future>(
        _: impl FnOnce(
            &'a Driver,
            &'a str,
            &'a str,
            DriveOptions,
            Option<mpsc::UnboundedSender<Progress>>,
        ) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_drive_waiting_between_passes_holds_a_few_kilobytes() {
        // A controller keeps one such future per release it drives; the
        // calls a pass awaits, and its large values, are boxed so they do
        // not count here. It was 30 KB before they were, and 15 KB while a
        // match over a Release (or a resolved release) that awaited in one
        // of its arms kept that value's room (unoptimised); 3.7 KB while
        // the Release store, the lease guard, the gate runs and the hooks
        // each kept a client of their own (an HTTP client is 336 bytes, a
        // kube `Api` 272) where they now borrow the process's.
        let size = future_size(Driver::drive);
        println!("a drive's future: {size} bytes");
        assert!(size < 3 * 1024, "{size} bytes");
    }

    #[test]
    fn a_progress_message_is_a_few_words() {
        // A drive's channel allocates a block of 32 messages as it starts.
        let size = std::mem::size_of::<Progress>();
        assert!(size <= 48, "{size} bytes");
    }
}
