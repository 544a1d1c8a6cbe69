//! Running step hooks beside the driver's loop: each hook the engine asks
//! for runs as a task of its own (an HTTP request, or a Job made from a
//! CronJob's template in the step's cluster), tried up to `retries + 1`
//! times, each try within the hook's timeout. Results land between passes
//! and wake the loop; the engine decides what they mean.
//!
//! A Job's name is fixed by release, hook, revision, step and try, so a
//! driver that took over finds the Job its predecessor created and waits for
//! it rather than starting another.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;
use http_body_util::Full;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::EnvVar;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::task::AbortHandle;

use crate::clock::SharedClock;
use crate::engine::{HookCall, HookRun};
use crate::fleet::workload::{Colour, Slots, slot_name};
use crate::fleet::{ClusterHandle, FleetClients};
use crate::gates::providers::template;
use crate::spec::ResolvedRelease;
use crate::spec::hooks::{Hook, HookVerdict, job_name};

/// Fleet time between an inconclusive hook's runs while its step still waits on it.
const RETRY_INCONCLUSIVE: Duration = Duration::from_secs(60);
/// Fleet time between the tries of one run.
const BETWEEN_TRIES: Duration = Duration::from_secs(10);
/// Fleet time between looks at a hook's Job.
const JOB_POLL: Duration = Duration::from_secs(5);
/// Fleet time a Job may run past its own deadline before the try is
/// inconclusive (a cluster whose Job controller is slow to mark it).
const JOB_GRACE: Duration = Duration::from_secs(60);
/// Finished hook Jobs are kept this long for people to read, then removed by
/// the cluster's TTL controller.
const JOB_TTL_SECONDS: i32 = 24 * 3600;

type Key = (u32, String, String);

struct Run {
    verdict: Option<HookVerdict>,
    message: String,
    task: Option<AbortHandle>,
    /// Bumped on each start, so a stopped run's late result is ignored.
    generation: u64,
    /// When an inconclusive run may start again.
    again_at: Option<Timestamp>,
}

struct Landed {
    key: Key,
    generation: u64,
    verdict: HookVerdict,
    message: String,
}

/// What one hook's run needs, owned so it can run beside the loop.
#[derive(Clone)]
struct Target {
    hook: Hook,
    cluster: ClusterHandle,
    release: String,
    namespace: String,
    app: String,
    version: String,
    colour: Option<Colour>,
    revision: u32,
    step: u32,
    weight: String,
}

/// The hooks of one release's driver.
pub struct Hooks {
    runs: BTreeMap<Key, Run>,
    /// A channel that takes room per message, not a block of them from its
    /// start (as tokio's): a controller has one per release it drives.
    tx: mpsc::UnboundedSender<Box<Landed>>,
    rx: mpsc::UnboundedReceiver<Box<Landed>>,
    http: &'static crate::notify::HttpClient,
    clock: SharedClock,
    generation: u64,
}

/// Where the engine's calls are run.
pub struct Context<'a> {
    pub rel: &'a ResolvedRelease,
    pub revision: u32,
    pub fleet: &'a FleetClients,
    /// Each cluster's slots as observed this pass (green's colour names its Service).
    pub slots: &'a BTreeMap<String, Slots>,
}

impl Hooks {
    pub fn new(clock: SharedClock) -> Hooks {
        let (tx, rx) = mpsc::unbounded();
        Hooks {
            runs: BTreeMap::new(),
            tx,
            rx,
            http: crate::notify::http_client(),
            clock,
            generation: 0,
        }
    }

    /// The runs of the hooks last asked for, as the engine reads them.
    pub fn observed(&mut self) -> Vec<HookRun> {
        while let Ok(l) = self.rx.try_recv() {
            if let Some(run) = self.runs.get_mut(&l.key)
                && run.generation == l.generation
            {
                run.task = None;
                run.verdict = Some(l.verdict);
                run.message = l.message;
                run.again_at = (l.verdict == HookVerdict::Inconclusive).then(|| {
                    self.clock
                        .now()
                        .checked_add(RETRY_INCONCLUSIVE)
                        .unwrap_or(Timestamp::MAX)
                });
            }
        }
        self.runs
            .iter()
            .map(|((step, name, cluster), r)| HookRun {
                step: *step,
                name: name.clone(),
                cluster: cluster.clone(),
                verdict: r.verdict,
                message: r.message.clone(),
            })
            .collect()
    }

    /// Keeps running what the engine asks for and stops the rest: a call
    /// without a run starts one; an inconclusive one starts again once its
    /// pause is over.
    pub fn ensure(&mut self, calls: &[HookCall], ctx: &Context<'_>) {
        let asked: Vec<Key> = calls
            .iter()
            .map(|c| (c.step, c.name.clone(), c.cluster.clone()))
            .collect();
        self.runs.retain(|k, r| {
            let keep = asked.contains(k);
            if !keep && let Some(t) = &r.task {
                t.abort();
            }
            keep
        });
        let now = self.clock.now();
        for (call, key) in calls.iter().zip(asked) {
            let due = match self.runs.get(&key) {
                None => true,
                Some(r) => {
                    r.task.is_none()
                        && r.verdict == Some(HookVerdict::Inconclusive)
                        && r.again_at.is_some_and(|t| now >= t)
                }
            };
            if !due {
                continue;
            }
            let Some(target) = target(call, ctx) else {
                continue;
            };
            self.generation += 1;
            let generation = self.generation;
            let tx = self.tx.clone();
            let http = self.http;
            let clock = self.clock.clone();
            let run_key = key.clone();
            let task = tokio::spawn(async move {
                let (verdict, message) = run(&target, http, &clock).await;
                let _ = tx.unbounded_send(Box::new(Landed {
                    key: run_key,
                    generation,
                    verdict,
                    message,
                }));
            });
            let run = self.runs.entry(key).or_insert(Run {
                verdict: None,
                message: String::new(),
                task: None,
                generation,
                again_at: None,
            });
            run.generation = generation;
            run.task = Some(task.abort_handle());
            run.again_at = None;
        }
    }

    /// When an inconclusive hook is due to run again.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.runs.values().filter_map(|r| r.again_at).min()
    }

    /// Resolves when a run lands (the result stays for `observed`).
    pub async fn landed(&mut self) {
        if let Some(l) = self.rx.next().await {
            // Put it back: `observed` takes it on the next pass.
            let _ = self.tx.unbounded_send(l);
        }
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        for r in self.runs.values() {
            if let Some(t) = &r.task {
                t.abort();
            }
        }
    }
}

fn target(call: &HookCall, ctx: &Context<'_>) -> Option<Target> {
    let hook = ctx.rel.hooks.iter().find(|h| h.name == call.name)?.clone();
    let cluster = ctx.fleet.get(&call.cluster).ok()?.clone();
    Some(Target {
        hook,
        cluster,
        release: ctx.rel.name.clone(),
        namespace: ctx.rel.namespace.clone(),
        app: ctx.rel.app.clone(),
        version: ctx.rel.version.clone(),
        colour: ctx.slots.get(&call.cluster).map(|s| s.green),
        revision: ctx.revision,
        step: call.step,
        weight: call.weight.map(|w| w.to_string()).unwrap_or_default(),
    })
}

/// One run: tries until one passes or the tries are spent; the last try's
/// verdict stands.
async fn run(
    t: &Target,
    http: &crate::notify::HttpClient,
    clock: &SharedClock,
) -> (HookVerdict, String) {
    let tries = t.hook.tries();
    let mut last = (HookVerdict::Inconclusive, String::new());
    for attempt in 1..=tries {
        let (verdict, message) = match (&t.hook.http, &t.hook.job) {
            (Some(_), _) => http_try(t, http).await,
            (_, Some(_)) => job_try(t, attempt, clock).await,
            _ => (HookVerdict::Inconclusive, "it has nothing to run".into()),
        };
        let message = if tries > 1 {
            format!("{message} (try {attempt} of {tries})")
        } else {
            message
        };
        last = (verdict, message);
        if verdict == HookVerdict::Pass || attempt == tries {
            break;
        }
        tokio::time::sleep(clock.real(BETWEEN_TRIES).max(Duration::from_millis(50))).await;
    }
    last
}

fn vars(t: &Target) -> Vec<(&str, String)> {
    vec![
        ("app", t.app.clone()),
        ("version", t.version.clone()),
        ("cluster", t.cluster.name.clone()),
        ("namespace", t.namespace.clone()),
        ("weight", t.weight.clone()),
        (
            "colour",
            t.colour.map(|c| c.to_string()).unwrap_or_default(),
        ),
    ]
}

async fn http_try(t: &Target, client: &crate::notify::HttpClient) -> (HookVerdict, String) {
    let Some(check) = &t.hook.http else {
        return (HookVerdict::Inconclusive, "no request is set".into());
    };
    let vars = vars(t);
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let url = template(&check.url, &pairs);
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(_) => {
            return (
                HookVerdict::Inconclusive,
                format!("{url} is not a valid URL"),
            );
        }
    };
    let mut request = http::Request::builder()
        .method(check.method.as_str())
        .uri(uri)
        .header(http::header::USER_AGENT, "cutover");
    for (k, v) in &check.headers {
        request = request.header(k.as_str(), template(v, &pairs));
    }
    let body = check
        .body
        .as_deref()
        .map(|b| template(b, &pairs))
        .unwrap_or_default();
    let request = match request.body(Full::new(Bytes::from(body))) {
        Ok(r) => r,
        Err(e) => {
            return (
                HookVerdict::Inconclusive,
                format!("cannot build the request: {e}"),
            );
        }
    };
    let started = std::time::Instant::now();
    let within = t.hook.timeout.as_duration();
    let response = match tokio::time::timeout(within, client.request(request)).await {
        Err(_) => {
            return (
                HookVerdict::Inconclusive,
                format!(
                    "{} {url}: no answer within {}",
                    check.method, t.hook.timeout
                ),
            );
        }
        Ok(Err(e)) => {
            return (
                HookVerdict::Inconclusive,
                format!(
                    "{} {url}: cannot reach it: {}",
                    check.method,
                    crate::notify::chain(&e)
                ),
            );
        }
        Ok(Ok(r)) => r,
    };
    let status = response.status().as_u16();
    let took = started.elapsed().as_millis();
    let text = match tokio::time::timeout(
        within,
        crate::gates::providers::read_body(response.into_body()),
    )
    .await
    {
        Ok(Ok(b)) => String::from_utf8_lossy(&b).to_string(),
        _ => String::new(),
    };
    let status_ok = if check.expect_status.is_empty() {
        (200..300).contains(&status)
    } else {
        check.expect_status.contains(&status)
    };
    let said = || {
        let s: String = text.trim().chars().take(200).collect();
        if s.is_empty() {
            String::new()
        } else {
            format!(": {s}")
        }
    };
    if !status_ok {
        let expected = if check.expect_status.is_empty() {
            "2xx".to_string()
        } else {
            check
                .expect_status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        };
        return (
            HookVerdict::Fail,
            format!(
                "{} {url} answered HTTP {status}, expected {expected}{}",
                check.method,
                said()
            ),
        );
    }
    if let Some(needle) = &check.body_contains
        && !text.contains(needle.as_str())
    {
        return (
            HookVerdict::Fail,
            format!(
                "{} {url} answered HTTP {status} without {needle:?} in its body{}",
                check.method,
                said()
            ),
        );
    }
    (
        HookVerdict::Pass,
        format!("{} {url} answered HTTP {status} in {took} ms", check.method),
    )
}

async fn job_try(t: &Target, attempt: u32, clock: &SharedClock) -> (HookVerdict, String) {
    let Some(spec) = &t.hook.job else {
        return (HookVerdict::Inconclusive, "no Job is set".into());
    };
    let c = &t.cluster;
    let name = job_name(&t.release, &t.hook.name, t.revision, t.step, attempt);
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), &t.namespace);
    let where_ = format!("Job {}/{name} on {}", t.namespace, c.name);
    match jobs.get_opt(&name).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            let crons: Api<CronJob> = Api::namespaced(c.client.clone(), &t.namespace);
            let cron = match crons.get_opt(&spec.from_cron_job).await {
                Ok(Some(cron)) => cron,
                Ok(None) => {
                    return (
                        HookVerdict::Inconclusive,
                        format!(
                            "CronJob {}/{} does not exist on {}: create it with the Job to \
                             run (`suspend: true` keeps it from running on its own)",
                            t.namespace, spec.from_cron_job, c.name
                        ),
                    );
                }
                Err(e) => {
                    return (
                        HookVerdict::Inconclusive,
                        format!(
                            "cannot read CronJob {}/{} on {}: {}",
                            t.namespace,
                            spec.from_cron_job,
                            c.name,
                            crate::fleet::in_words(&e)
                        ),
                    );
                }
            };
            let job = job_from(&cron, &name, t);
            match jobs.create(&PostParams::default(), &job).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    return (
                        HookVerdict::Inconclusive,
                        format!("cannot create {where_}: {}", crate::fleet::in_words(&e)),
                    );
                }
            }
        }
        Err(e) => {
            return (
                HookVerdict::Inconclusive,
                format!("cannot read {where_}: {}", crate::fleet::in_words(&e)),
            );
        }
    }
    let give_up = clock
        .now()
        .checked_add(t.hook.timeout.as_duration() + JOB_GRACE)
        .unwrap_or(Timestamp::MAX);
    loop {
        match jobs.get_opt(&name).await {
            Ok(Some(job)) => {
                if let Some(end) = ended(&job, &where_) {
                    return end;
                }
            }
            Ok(None) => {
                return (
                    HookVerdict::Inconclusive,
                    format!("{where_} was deleted before it finished"),
                );
            }
            // A failed look is not the Job's verdict: look again.
            Err(_) => {}
        }
        if clock.now() >= give_up {
            return (
                HookVerdict::Inconclusive,
                format!("{where_} did not finish within {}", t.hook.timeout),
            );
        }
        tokio::time::sleep(clock.real(JOB_POLL).max(Duration::from_millis(50))).await;
    }
}

/// How a Job ended, if it did: its `Complete` or `Failed` condition.
fn ended(job: &Job, where_: &str) -> Option<(HookVerdict, String)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let done = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    if done("Complete").is_some() {
        return Some((HookVerdict::Pass, format!("{where_} completed")));
    }
    let failed = done("Failed")?;
    let reason = failed.reason.clone().unwrap_or_default();
    let message = failed
        .message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    // Running out of time says nothing of what the Job checks.
    let verdict = if reason == "DeadlineExceeded" {
        HookVerdict::Inconclusive
    } else {
        HookVerdict::Fail
    };
    Some((verdict, format!("{where_} failed ({reason}){message}")))
}

/// The Job one try runs: the CronJob's Job template, as `kubectl create job
/// --from=cronjob/…` makes it, with the try's deadline, no retries of its
/// own (the hook's tries are cutover's) and the release's facts in each
/// container's environment.
fn job_from(cron: &CronJob, name: &str, t: &Target) -> Job {
    let template = cron
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let mut meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.take().unwrap_or_default();
    labels.insert(crate::labels::APP.to_string(), t.app.clone());
    labels.insert(crate::labels::RELEASE.to_string(), t.release.clone());
    labels.insert(crate::labels::HOOK.to_string(), t.hook.name.clone());
    let mut annotations = meta.annotations.take().unwrap_or_default();
    annotations.insert("cronjob.kubernetes.io/instantiate".into(), "manual".into());
    let mut spec = template.spec.unwrap_or_default();
    spec.active_deadline_seconds = Some(t.hook.timeout.as_duration().as_secs().max(1) as i64);
    spec.backoff_limit = Some(0);
    spec.ttl_seconds_after_finished = Some(JOB_TTL_SECONDS);
    let env: Vec<EnvVar> = [
        ("CUTOVER_RELEASE", t.release.clone()),
        ("CUTOVER_APP", t.app.clone()),
        ("CUTOVER_VERSION", t.version.clone()),
        ("CUTOVER_CLUSTER", t.cluster.name.clone()),
        ("CUTOVER_NAMESPACE", t.namespace.clone()),
        ("CUTOVER_STEP", (t.step + 1).to_string()),
        ("CUTOVER_WEIGHT", t.weight.clone()),
        (
            "CUTOVER_GREEN_SERVICE",
            t.colour.map(|c| slot_name(&t.app, c)).unwrap_or_default(),
        ),
    ]
    .into_iter()
    .map(|(name, value)| EnvVar {
        name: name.to_string(),
        value: Some(value),
        ..EnvVar::default()
    })
    .collect();
    if let Some(pod) = spec.template.spec.as_mut() {
        for c in &mut pod.containers {
            let own = c.env.take().unwrap_or_default();
            let mut all: Vec<EnvVar> = env.clone();
            all.extend(own.into_iter().filter(|e| !e.name.starts_with("CUTOVER_")));
            c.env = Some(all);
        }
    }
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(t.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}
