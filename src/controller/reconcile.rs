//! Release objects reconciled by kube-runtime: each runnable Release that is
//! free and within this replica's share (`shard`) gets one task running the
//! shared driver; a spec that cannot run gets an `Invalid` condition and
//! waits for a change; a drive that failed on the way is retried with
//! backoff. Releases are watched as untyped objects, so one that does not
//! even decode is marked `Invalid` instead of stopping the watch for every
//! other.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::metrics::Metrics;
use super::shard::{Driven, Driving, Shard};
use crate::driver::{DriveOptions, Driver, Outcome, Progress};
use crate::fleet::state::{EventRecorder, ReleaseStore, release_resource, untyped_releases};
use crate::spec::Release;
use crate::spec::status::{Phase, StepKind, TransitionEvent};

/// A release's driver task, or how it ended.
enum Task {
    /// Driving; `stop` asks it to hand the release over at its next safe point.
    Running {
        handle: JoinHandle<()>,
        stop: watch::Sender<bool>,
    },
    Ended(Result<Outcome, String>),
}

impl Task {
    /// Driving, and not asked to stop.
    fn driving(&self) -> bool {
        matches!(self, Task::Running { handle, stop } if !handle.is_finished() && !*stop.borrow())
    }
}

/// What admission said of one generation of a Release's spec.
#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    Runs,
    /// The `Invalid` condition's reason and message.
    Refused(&'static str, String),
}

pub struct Reconciler {
    driver: Driver,
    metrics: Arc<Metrics>,
    recorder: EventRecorder,
    resource: ApiResource,
    tasks: Mutex<HashMap<(String, String), Task>>,
    failures: Mutex<HashMap<(String, String), u32>>,
    /// Each Release's last admitted generation and what admission said: a
    /// spec is judged once a generation (a change of spec bumps it, a status
    /// write does not), read from the API then.
    admitted: Mutex<HashMap<(String, String), (i64, Verdict)>>,
    shard: Shard,
    /// Releases that need a driver (not ended at their spec's version), as
    /// last counted from the watch: what the replicas share.
    active: AtomicUsize,
    /// Of the releases driven here, those with no status yet, as last
    /// counted: handed over before those on their way.
    unstarted: AtomicUsize,
}

/// Releases the reconciler's watch lists a page at a time.
const RELEASES_PAGE: u32 = 50;

/// How often a release with a running driver is looked at again (memory
/// only: no API request), to notice a drive that ended in an error.
const RUNNING_RECHECK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("driving {0} failed: {1}; retrying")]
    Drive(String, String),
    #[error("recording the state of {0}: {1}")]
    Record(String, crate::fleet::Error),
    #[error("reading {0}: {1}")]
    Read(String, crate::fleet::Error),
}

impl Reconciler {
    /// Reconciles Releases in `namespace` (all when `None`) until dropped;
    /// the tasks it started run on until `stop_all`.
    pub async fn run(self: Arc<Self>, namespace: Option<&str>) {
        let api = untyped_releases(self.driver.fleet.home(), namespace);
        // The Releases as the reconciler reads them (`trim_release`): only
        // what says whether a driver is needed. Each driver reads its
        // Release in full from the API.
        let writer = reflector::store::Writer::new(self.resource.clone());
        let store = writer.as_reader();
        // Listed a few at a time: a Release is some 15 KB of JSON and
        // more decoded as an untyped object, held whole until it is
        // trimmed (`LIST_PAGE`).
        let pages = watcher::Config::default().page_size(RELEASES_PAGE);
        let releases = watcher(api, pages)
            .default_backoff()
            .modify(trim_release)
            .reflect(writer)
            .applied_objects();
        let controller =
            Controller::for_stream_with(releases, store.clone(), self.resource.clone());
        let count = async {
            loop {
                let all = store.state();
                let n = all.iter().filter(|r| needs_driver(r)).count();
                self.active.store(n, Ordering::Relaxed);
                let unstarted = self.unstarted_here(&all);
                self.unstarted.store(unstarted, Ordering::Relaxed);
                self.forget_deleted(&all);
                drop(all);
                self.shard.refresh();
                self.metrics.replicas.set(self.shard.replicas() as i64);
                let share = if self.shard.settled() {
                    self.shard.share(n)
                } else {
                    0
                };
                self.metrics.share.set(share as i64);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        let work = controller
            .run(reconcile, error_policy, self.clone())
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "reconcile");
                }
            });
        tokio::select! {
            _ = work => {}
            _ = count => {}
        }
    }
}

/// Keeps of a Release only what the reconciler reads, in one flat object:
/// its spec's version (`specVersion`), its status's phase and version
/// (`phase`, `statusVersion`) and its `Invalid` condition (`invalid`); of
/// its metadata, what names it and its generation. Not its annotations
/// (kubectl's last applied copy of the spec among them), labels or the rest
/// of its spec and status: those are read from the API when a generation
/// is admitted (`admit`). A controller watches every Release of the
/// namespace; flat, a kept Release is one map node, where the nesting of
/// `spec` and `status` took one each.
fn trim_release(r: &mut DynamicObject) {
    let m = &mut r.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.labels = None;
    m.finalizers = None;
    m.owner_references = None;
    let mut kept = serde_json::Map::new();
    for (field, path) in [
        (SPEC_VERSION, "/spec/version"),
        (PHASE, "/status/phase"),
        (STATUS_VERSION, "/status/version"),
    ] {
        if let Some(v) = r.data.pointer_mut(path) {
            kept.insert(field.into(), v.take());
        }
    }
    let invalid = r
        .data
        .pointer_mut("/status/conditions")
        .and_then(|c| c.as_array_mut())
        .and_then(|c| c.iter_mut().find(|c| c["type"] == "Invalid"))
        .map(serde_json::Value::take);
    if let Some(c) = invalid {
        kept.insert(INVALID.into(), c);
    }
    r.data = serde_json::Value::Object(kept);
}

/// The fields of a kept Release (`trim_release`).
const SPEC_VERSION: &str = "specVersion";
const PHASE: &str = "phase";
const STATUS_VERSION: &str = "statusVersion";
const INVALID: &str = "invalid";

/// The phase its status states, if it states one that decodes.
fn phase_of(r: &DynamicObject) -> Option<Phase> {
    r.data
        .get(PHASE)
        .and_then(|p| serde_json::from_value::<Phase>(p.clone()).ok())
}

/// Whether a Release needs a driver: it has not ended at its spec's version.
fn needs_driver(r: &DynamicObject) -> bool {
    let phase = phase_of(r);
    let ended_at = r.data.get(STATUS_VERSION);
    !(phase.is_some_and(|p| p.is_terminal()) && ended_at == r.data.get(SPEC_VERSION))
}

impl Reconciler {
    pub fn new(
        driver: Driver,
        metrics: Arc<Metrics>,
        recorder: EventRecorder,
        shard: Shard,
    ) -> Arc<Self> {
        let r = Reconciler {
            driver,
            metrics,
            recorder,
            resource: release_resource(),
            tasks: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            admitted: Mutex::new(HashMap::new()),
            shard,
            active: AtomicUsize::new(0),
            unstarted: AtomicUsize::new(0),
        };
        Arc::new(r)
    }

    /// Stops every driver task at once (the replica's lease lost, credentials changed).
    pub fn stop_all(&self) {
        for (_, t) in self.tasks.lock().expect("tasks lock").drain() {
            if let Task::Running { handle, .. } = t {
                handle.abort();
            }
        }
    }

    fn spawn(
        self: &Arc<Self>,
        tasks: &mut HashMap<(String, String), Task>,
        ns: &str,
        name: &str,
        uid: Option<String>,
    ) {
        let key = (ns.to_string(), name.to_string());
        let me = self.clone();
        let (ns, name) = key.clone();
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::spawn(async move {
            let result = me.drive(&ns, &name, uid, stopped).await;
            let key = (ns.clone(), name.clone());
            if result.is_ok() {
                me.failures.lock().expect("failures lock").remove(&key);
            }
            me.tasks
                .lock()
                .expect("tasks lock")
                .insert(key, Task::Ended(result));
        });
        tasks.insert(key, Task::Running { handle, stop });
    }

    /// When to look again at a release whose driver runs here; `None` if
    /// none does. More than a fair share since a replica joined (or, not
    /// started yet, more than a share of the releases left): the
    /// driver is asked to hand this one over at its next safe point, and a
    /// replica with room takes it. `started`: the release has a status.
    fn still_driving(&self, key: &(String, String), started: bool) -> Option<Action> {
        let tasks = self.tasks.lock().expect("tasks lock");
        let t = tasks.get(key)?;
        let Task::Running { handle, stop } = t else {
            return None;
        };
        if handle.is_finished() {
            return None;
        }
        let active = self.active.load(Ordering::Relaxed);
        let here = Driving {
            running: self.count_driving(&tasks),
            unstarted: self.unstarted.load(Ordering::Relaxed),
        };
        if t.driving()
            && let Some(share) = self.shard.hand_over_one(active, here, started)
        {
            tracing::info!(release = %format!("{}/{}", key.0, key.1), share, driving = here.running, started, "handing over: more than this replica's share");
            let _ = stop.send(true);
            self.metrics.handed_over.inc();
        }
        Some(Action::requeue(RUNNING_RECHECK))
    }

    /// Of `all` the Releases, how many have no status and a driver here.
    fn unstarted_here(&self, all: &[Arc<DynamicObject>]) -> usize {
        let tasks = self.tasks.lock().expect("tasks lock");
        all.iter()
            .filter(|r| r.data.get(PHASE).is_none())
            .filter(|r| {
                let key = (
                    r.namespace().unwrap_or_else(|| "default".into()),
                    r.name_any(),
                );
                tasks.get(&key).is_some_and(Task::driving)
            })
            .count()
    }

    /// How many of `tasks` are driving, as the `driving` gauge then shows.
    fn count_driving(&self, tasks: &HashMap<(String, String), Task>) -> usize {
        let driving = tasks.values().filter(|t| t.driving()).count();
        self.metrics.driving.set(driving as i64);
        driving
    }

    /// One drive of a release, its progress turned into Events, logs and
    /// metrics; until it ends or `stop` asks it to hand the release over.
    async fn drive(
        &self,
        ns: &str,
        name: &str,
        uid: Option<String>,
        stop: watch::Receiver<bool>,
    ) -> Result<Outcome, String> {
        let key = format!("{ns}/{name}");
        // A channel that takes room per message, not a block of them from
        // its start (as tokio's): one is open per release driven.
        let (tx, mut rx) = mpsc::unbounded();
        // Another replica or a `cutover run` holds it (taken since it was
        // looked at): theirs to drive.
        let opts = DriveOptions {
            stop_when_paused: false,
            wait_for_lease: false,
            stop: Some(stop),
        };
        let forward = async {
            // The kind of each step of the plan, for the step metrics (not
            // the plan itself: one is held per release driven).
            let mut plan: Vec<StepKind> = Vec::new();
            let mut started: BTreeMap<u32, jiff::Timestamp> = BTreeMap::new();
            while let Some(p) = rx.next().await {
                let regarding = (ns, name, uid.as_deref());
                Box::pin(self.report(&key, regarding, &p, &mut plan, &mut started)).await;
            }
        };
        let drive = async {
            match self.driver.drive(ns, name, opts, Some(tx)).await {
                Err(crate::driver::Error::Fleet(crate::fleet::Error::LeaseHeld {
                    holder, ..
                })) => {
                    tracing::debug!(release = %key, %holder, "driven elsewhere");
                    Ok(Outcome::Stopped)
                }
                r => r.map_err(|e| e.to_string()),
            }
        };
        let (result, ()) = tokio::join!(drive, forward);
        match &result {
            Ok(o) => tracing::info!(release = %key, outcome = ?o, "drive ended"),
            Err(e) => {
                self.metrics.driver_errors.inc();
                tracing::warn!(release = %key, error = %e, "drive failed");
            }
        }
        result
    }

    /// `regarding` is the Release's namespace, name and UID: its Events'
    /// reference is made only for an Event, not kept in every release's drive.
    async fn report(
        &self,
        key: &str,
        regarding: (&str, &str, Option<&str>),
        p: &Progress,
        plan: &mut Vec<StepKind>,
        started: &mut BTreeMap<u32, jiff::Timestamp>,
    ) {
        match p {
            Progress::Transition(t) => {
                tracing::info!(release = %key, step = t.step, event = ?t.event, "{}", t.message);
                match t.event {
                    TransitionEvent::StepStarted => {
                        started.insert(t.step, t.at);
                    }
                    TransitionEvent::StepCompleted => {
                        if let (Some(s), Some(step)) =
                            (started.remove(&t.step), plan.get(t.step as usize))
                        {
                            let secs = t.at.duration_since(s).as_secs_f64().max(0.0);
                            self.metrics.step_completed(&format!("{step:?}"), secs);
                        }
                    }
                    _ => {}
                }
                let warning = matches!(
                    t.event,
                    TransitionEvent::HoldStarted
                        | TransitionEvent::AbortStarted
                        | TransitionEvent::Aborted
                        | TransitionEvent::Failed
                );
                // The whole message stays in the Release's history; the
                // Event takes what fits.
                let reason = format!("{:?}", t.event);
                let (ns, name, uid) = regarding;
                let reference = ObjectReference {
                    api_version: Some(Release::api_version(&()).into_owned()),
                    kind: Some(Release::kind(&()).into_owned()),
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    // `kubectl describe` finds an object's Events by its UID
                    // too (`involvedObject.uid`, kubectl's `searchEvents`).
                    uid: uid.map(String::from),
                    ..Default::default()
                };
                if let Err(e) = self
                    .recorder
                    .publish(&reference, warning, &reason, &t.message)
                    .await
                {
                    tracing::warn!(release = %key, error = %e, "could not record an Event");
                }
            }
            Progress::Status(s) => {
                if !s.plan.is_empty() {
                    *plan = s.plan.iter().map(|p| p.kind).collect();
                }
                self.metrics.status(key, s);
            }
            Progress::Applied { action, error } => match error {
                None => tracing::info!(release = %key, cluster = action.cluster(), "{action}"),
                Some(e) => {
                    tracing::warn!(release = %key, cluster = action.cluster(), error = %e, "{action} failed")
                }
            },
            Progress::Note(n) => tracing::info!(release = %key, "{n}"),
        }
    }

    /// Forgets the verdicts of Releases no longer among `all`.
    fn forget_deleted(&self, all: &[Arc<DynamicObject>]) {
        let mut admitted = self.admitted.lock().expect("admitted lock");
        if admitted.len() > all.len() {
            let kept: std::collections::HashSet<(String, String)> = all
                .iter()
                .map(|r| {
                    let ns = r.namespace().unwrap_or_else(|| "default".into());
                    (ns, r.name_any())
                })
                .collect();
            admitted.retain(|k, _| kept.contains(k));
        }
    }

    /// Reads Release `ns/name` from the API and judges its spec: whether it
    /// decodes, resolves against the fleet and keeps its tier's rules. The
    /// verdict is kept for the generation read, and returned with it.
    /// `None` if it is gone.
    async fn admit(&self, ns: &str, name: &str) -> Result<Option<(i64, Verdict)>, Error> {
        let home = self.driver.fleet.home();
        let read_error = |e| {
            Error::Read(
                format!("{ns}/{name}"),
                crate::fleet::Error::api(&home.name)(e),
            )
        };
        // Decoded as every driver decodes a Release; only one that does not
        // decode is read again to say which field fails. The decoding that
        // tracks each field's path is code of its own for every type it
        // decodes, and code that runs stays resident: run on every
        // admission, that crate held 1.3 MiB of a controller's resident code.
        let typed = kube::Api::<Release>::namespaced(home.client.clone(), ns);
        let judge = |release: &Release| match crate::driver::admit(
            name,
            Some(ns),
            &release.spec,
            &self.driver.fleet_spec,
            &self.driver.policy,
        ) {
            Ok(_) => Verdict::Runs,
            Err((message, true)) => Verdict::Refused("PolicyViolation", message),
            Err((message, false)) => Verdict::Refused("InvalidSpec", message),
        };
        let (generation, verdict) = match typed.get_opt(name).await {
            Ok(None) => return Ok(None),
            Ok(Some(release)) => (
                release.metadata.generation.unwrap_or_default(),
                judge(&release),
            ),
            Err(kube::Error::SerdeError(_)) => {
                let Some(obj) = untyped_releases(home, Some(ns))
                    .get_opt(name)
                    .await
                    .map_err(read_error)?
                else {
                    return Ok(None);
                };
                let generation = obj.metadata.generation.unwrap_or_default();
                let verdict = match crate::fleet::state::decode(obj) {
                    Err(why) => Verdict::Refused(
                        "MalformedSpec",
                        format!("{why}; fix the Release and apply it again"),
                    ),
                    // Changed between the two reads, and decodes now.
                    Ok(release) => judge(&release),
                };
                (generation, verdict)
            }
            Err(e) => return Err(read_error(e)),
        };
        self.admitted.lock().expect("admitted lock").insert(
            (ns.to_string(), name.to_string()),
            (generation, verdict.clone()),
        );
        Ok(Some((generation, verdict)))
    }

    /// Sets the `Invalid` condition (and the status message) unless it already says so.
    /// `generation` is the one the verdict is of (the condition's
    /// `observedGeneration`), which can be newer than `obj`'s.
    async fn set_invalid(
        &self,
        obj: &DynamicObject,
        generation: i64,
        invalid: Option<(&str, &str)>,
    ) -> Result<(), Error> {
        let ns = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        let current = obj.data.get(INVALID).cloned();
        let same = match (&current, invalid) {
            (Some(c), Some((reason, message))) => {
                c["status"] == "True"
                    && c["reason"] == reason
                    && c["message"] == message
                    && c["observedGeneration"] == generation
            }
            (Some(c), None) => c["status"] != "True" && c["observedGeneration"] == generation,
            (None, None) => true,
            (None, Some(_)) => false,
        };
        if same {
            return Ok(());
        }
        let (status, reason, message) = match invalid {
            Some((r, m)) => ("True", r, m),
            None => (
                "False",
                "Valid",
                "the spec resolves against the fleet and its tier",
            ),
        };
        // The transition's time stays while the status does (a message or
        // generation changed), as Kubernetes conditions keep it.
        let since = current
            .as_ref()
            .filter(|c| c["status"] == status)
            .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_string))
            .unwrap_or_else(|| {
                jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            });
        let mut patch = json!({"conditions": [{
            "type": "Invalid",
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": since,
            "observedGeneration": generation,
        }]});
        if invalid.is_some() {
            patch["message"] = json!(message);
        }
        ReleaseStore::new(self.driver.fleet.home(), &ns)
            .patch_status(&name, patch)
            .await
            .map_err(|e| Error::Record(format!("{ns}/{name}"), e))?;
        if let Some((reason, message)) = invalid {
            tracing::warn!(release = %format!("{ns}/{name}"), reason, "invalid: {message}");
        }
        Ok(())
    }
}

async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Reconciler>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let name = obj.name_any();
    let key = (ns.clone(), name.clone());
    ctx.metrics
        .observed_phase(&format!("{ns}/{name}"), phase_of(&obj).unwrap_or_default());
    // A release that ended waits for a new version: that starts its next revision.
    if !needs_driver(&obj) {
        return Ok(Action::await_change());
    }
    // Driving here: looked at again every few seconds, from memory only
    // (its spec was admitted when its driver started, and the driver
    // refuses a spec changed into one that cannot run).
    if let Some(early) = ctx.still_driving(&key, obj.data.get(PHASE).is_some()) {
        return Ok(early);
    }
    let known = obj.metadata.generation.and_then(|g| {
        let admitted = ctx.admitted.lock().expect("admitted lock");
        admitted.get(&key).filter(|(at, _)| *at == g).cloned()
    });
    // The generation judged can be newer than the event's.
    let (generation, verdict) = match known {
        Some(v) => v,
        None => match Box::pin(ctx.admit(&ns, &name)).await? {
            Some(v) => v,
            // Deleted since the event.
            None => return Ok(Action::await_change()),
        },
    };
    if let Verdict::Refused(reason, message) = &verdict {
        Box::pin(ctx.set_invalid(&obj, generation, Some((reason, message)))).await?;
        return Ok(Action::await_change());
    }
    Box::pin(ctx.set_invalid(&obj, generation, None)).await?;
    let mut tasks = ctx.tasks.lock().expect("tasks lock");
    if let Some(Task::Ended(_)) = tasks.get(&key)
        && let Some(Task::Ended(Err(e))) = tasks.remove(&key)
    {
        drop(tasks);
        *ctx.failures
            .lock()
            .expect("failures lock")
            .entry(key)
            .or_default() += 1;
        return Err(Error::Drive(format!("{ns}/{name}"), e));
    }
    // Looked at every few seconds while driven elsewhere (thousands, on a
    // replica of a large fleet): its drivers are counted only for one free.
    match ctx.shard.driven(&ns, &name) {
        Driven::Elsewhere(_) => return Ok(Action::requeue(ctx.shard.recheck())),
        Driven::Free => {
            let share = ctx.shard.share(ctx.active.load(Ordering::Relaxed));
            if !ctx.shard.settled() || ctx.count_driving(&tasks) >= share {
                return Ok(Action::requeue(ctx.shard.recheck()));
            }
        }
        Driven::Here => {}
    }
    ctx.spawn(&mut tasks, &ns, &name, obj.uid());
    Ok(Action::requeue(RUNNING_RECHECK))
}

fn error_policy(obj: Arc<DynamicObject>, err: &Error, ctx: Arc<Reconciler>) -> Action {
    let key = (obj.namespace().unwrap_or_default(), obj.name_any());
    let n = ctx
        .failures
        .lock()
        .expect("failures lock")
        .get(&key)
        .copied()
        .unwrap_or(1);
    let delay = Duration::from_secs(1u64 << n.min(8)).min(Duration::from_secs(300));
    tracing::warn!(release = %format!("{}/{}", key.0, key.1), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async function returns, without calling it.
    fn future_size<F: std::future::Future>(
        _: impl FnOnce(Arc<DynamicObject>, Arc<Reconciler>) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_reconcile_awaiting_a_write_holds_no_release() {
        // A thousand releases starting together each await a condition's
        // write. It was 14 KB (unoptimised) while the Release read back from
        // the cache (5.8 KB inline), its resolution (2.8 KB) and the write's
        // own future were kept in it across those awaits.
        let size = future_size(reconcile);
        println!("a reconcile's future: {size} bytes");
        assert!(size < 2 * 1024, "{size} bytes");
    }

    #[test]
    fn the_kept_release_holds_of_its_spec_only_the_version() {
        let text = include_str!("../../examples/checkout/release.yaml");
        let doc: serde_json::Value = crate::spec::Source::new("release.yaml", text)
            .decode()
            .unwrap();
        let invalid = json!({"type": "Invalid", "status": "True", "reason": "InvalidSpec",
            "message": "m", "observedGeneration": 3});
        let mut obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": doc["apiVersion"],
            "kind": doc["kind"],
            "metadata": {"name": "checkout", "namespace": "shop", "generation": 3,
                "labels": {"team": "payments"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": doc["spec"],
            "status": {"phase": "Completed", "version": doc["spec"]["version"],
                "history": [{"step": 0}],
                "conditions": [{"type": "Other", "status": "True"}, invalid.clone()]},
        }))
        .unwrap();
        trim_release(&mut obj);
        assert_eq!(
            obj.data,
            json!({"specVersion": doc["spec"]["version"], "phase": "Completed",
                "statusVersion": doc["spec"]["version"], "invalid": invalid})
        );
        assert_eq!(obj.metadata.annotations, None);
        assert_eq!(obj.metadata.labels, None);
        assert_eq!(
            obj.metadata.generation,
            Some(3),
            "what admission is kept by"
        );
        assert_eq!(phase_of(&obj), Some(Phase::Completed));
        assert!(!needs_driver(&obj), "ended at its spec's version");
        obj.data[SPEC_VERSION] = json!("9.9.9");
        assert!(needs_driver(&obj), "a new version needs a driver");
    }
}
