//! Step hooks: checks a release runs at fixed points of its steps (after
//! green is deployed on a cluster, before a traffic step raises green's
//! share, before blue is cleaned up), an HTTP request or a Kubernetes Job
//! made from a template in the cluster. A hook's result gates its step like
//! a metric: a pass lets the step go on, a failure rolls the release back,
//! an inconclusive result (the check could not run) holds it.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::quantity::Span;
use super::status::{PlannedStep, StepKind};

/// One hook of a release.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hook {
    /// Shown in the history and verdicts; names the Jobs it creates.
    pub name: String,
    /// When it runs: `afterDeploy` (green available and well placed on a
    /// cluster, before it takes traffic), `beforeTraffic` (before a canary,
    /// ramp or cutover step raises green's share) or `beforeCleanup` (before
    /// blue is deleted on a cluster).
    pub at: HookPoint,
    /// The clusters it runs on; every cluster of the release when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// With `beforeTraffic`: the traffic steps it runs before (`canary`,
    /// `ramp`, `cutover`); all of them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepKind>,
    /// An HTTP request whose answer decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// A Job made from a template in the cluster, whose end decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobHook>,
    /// Longest one try may take; past it the try is inconclusive.
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    /// Tries after the first when one fails or cannot decide.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_timeout() -> Span {
    Span::from_secs(120)
}
fn default_retries() -> u32 {
    2
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum HookPoint {
    AfterDeploy,
    BeforeTraffic,
    BeforeCleanup,
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HookPoint::AfterDeploy => "after deploy",
            HookPoint::BeforeTraffic => "before traffic",
            HookPoint::BeforeCleanup => "before cleanup",
        })
    }
}

/// An HTTP request. `{{app}}`, `{{version}}`, `{{cluster}}`, `{{namespace}}`
/// and `{{weight}}` (green's share the step moves to) are replaced in the URL.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCheck {
    pub url: String,
    /// `GET` (default), `POST`, `PUT` or `HEAD`.
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A body to send (with `POST` or `PUT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Status codes that pass; any 2xx when empty. Any other answer fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<u16>,
    /// Text the answer's body must contain to pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
}

fn default_method() -> String {
    "GET".to_string()
}

/// A Job made from the Job template of a CronJob in the release's namespace
/// on the step's cluster, as `kubectl create job --from=cronjob/<name>` does;
/// a suspended CronJob is a template that never runs on its own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobHook {
    pub from_cron_job: String,
}

impl Hook {
    /// Whether the hook runs at `point` of `step` on `cluster`.
    pub fn applies(&self, point: HookPoint, step: &PlannedStep, cluster: &str) -> bool {
        self.at == point
            && (self.clusters.is_empty() || self.clusters.iter().any(|c| c == cluster))
            && (self.steps.is_empty() || self.steps.contains(&step.kind))
    }

    /// What the hook does, in a few words.
    pub fn describe(&self) -> String {
        match (&self.http, &self.job) {
            (Some(h), _) => format!("{} {}", h.method, h.url),
            (_, Some(j)) => format!("Job from CronJob {}", j.from_cron_job),
            _ => "nothing".to_string(),
        }
    }

    /// Tries in all.
    pub fn tries(&self) -> u32 {
        self.retries.saturating_add(1)
    }
}

/// The point of a step where its hooks run, if it has one.
pub fn point_of(step: &PlannedStep) -> Option<HookPoint> {
    match step.kind {
        StepKind::Deploy => Some(HookPoint::AfterDeploy),
        StepKind::Canary | StepKind::Ramp | StepKind::Cutover => Some(HookPoint::BeforeTraffic),
        StepKind::Cleanup => Some(HookPoint::BeforeCleanup),
        StepKind::Verify | StepKind::Soak | StepKind::Bake => None,
    }
}

/// The hooks that run in `step`, in the order the release lists them.
pub fn of_step<'a>(hooks: &'a [Hook], step: &PlannedStep) -> Vec<&'a Hook> {
    let (Some(point), Some(cluster)) = (point_of(step), step.cluster.as_deref()) else {
        return Vec::new();
    };
    hooks
        .iter()
        .filter(|h| h.applies(point, step, cluster))
        .collect()
}

/// The name of the Job one try of a hook creates: the same for the same
/// try, so a driver that took over finds the Job its predecessor created
/// instead of starting another. A Job's name is a label value of its pods
/// (`job-name`), so at most 63 characters: long names keep a hash.
pub fn job_name(release: &str, hook: &str, revision: u32, step: u32, attempt: u32) -> String {
    let full = format!("{release}-{hook}-r{revision}-s{}-{attempt}", step + 1);
    if full.len() <= 63 {
        return full;
    }
    let tail = format!("-r{revision}-s{}-{attempt}", step + 1);
    let hash = fnv(&format!("{release}/{hook}"));
    let keep = 63 - tail.len() - 9;
    let head: String = format!("{release}-{hook}").chars().take(keep).collect();
    format!("{}-{hash:08x}{tail}", head.trim_end_matches('-'))
}

fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// How a hook ended in one step and cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HookVerdict {
    Pass,
    Fail,
    /// It could not run or could not decide (unreachable, timed out, no template).
    Inconclusive,
}

/// A hook's result in one step and cluster, kept in the release's status so
/// a driver that takes over never runs a passed hook again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookRecord {
    pub name: String,
    pub step: u32,
    pub cluster: String,
    pub verdict: HookVerdict,
    /// What the last try saw (status code, the Job's condition) and how many tries it took.
    pub message: String,
    #[schemars(with = "String")]
    pub at: Timestamp,
}

/// Problems with the release's hooks, as (field, problem); `clusters` are the release's.
pub fn check(hooks: &[Hook], clusters: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, h) in hooks.iter().enumerate() {
        let at = format!("spec.hooks[{i}]");
        let mut push = |field: &str, problem: String| {
            let f = if field.is_empty() {
                at.clone()
            } else {
                format!("{at}.{field}")
            };
            out.push((f, problem));
        };
        if let Err(e) = super::check_dns_label(&h.name) {
            push("name", e);
        } else if h.name.len() > 30 {
            push(
                "name",
                format!(
                    "{:?} is {} characters: keep hook names to 30 at most (they name its Jobs)",
                    h.name,
                    h.name.len()
                ),
            );
        }
        if !names.insert(h.name.as_str()) {
            push("name", format!("hook {:?} is listed twice", h.name));
        }
        match (&h.http, &h.job) {
            (Some(_), Some(_)) | (None, None) => {
                push("", "set exactly one of `http` or `job`".to_string())
            }
            _ => {}
        }
        if let Some(http) = &h.http {
            if !(http.url.starts_with("http://") || http.url.starts_with("https://")) {
                push(
                    "http.url",
                    format!("{:?} is not an http:// or https:// URL", http.url),
                );
            }
            if !matches!(http.method.as_str(), "GET" | "POST" | "PUT" | "HEAD") {
                push(
                    "http.method",
                    format!("{:?} is not one of GET, POST, PUT, HEAD", http.method),
                );
            }
            if let Some(bad) = http
                .expect_status
                .iter()
                .find(|s| !(100..=599).contains(*s))
            {
                push(
                    "http.expectStatus",
                    format!("{bad} is not an HTTP status code (100 to 599)"),
                );
            }
        }
        if let Some(job) = &h.job
            && let Err(e) = super::check_dns_label(&job.from_cron_job)
        {
            push("job.fromCronJob", e);
        }
        if h.timeout.as_duration().is_zero() {
            push("timeout", "must be above zero".to_string());
        }
        if h.retries > 10 {
            push(
                "retries",
                format!(
                    "{} retries is more than 10: a hook that fails that often is not a check",
                    h.retries
                ),
            );
        }
        if !h.steps.is_empty() && h.at != HookPoint::BeforeTraffic {
            push(
                "steps",
                "only `beforeTraffic` hooks pick steps: remove `steps`, or set `at: beforeTraffic`"
                    .to_string(),
            );
        }
        if let Some(bad) = h
            .steps
            .iter()
            .find(|k| !matches!(k, StepKind::Canary | StepKind::Ramp | StepKind::Cutover))
        {
            push(
                "steps",
                format!(
                    "{} is not a traffic step: pick from canary, ramp and cutover",
                    serde_json::to_value(bad)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ),
            );
        }
        for (j, c) in h.clusters.iter().enumerate() {
            if !clusters.contains(&c.as_str()) {
                push(
                    &format!("clusters[{j}]"),
                    format!(
                        "{c:?} is not a cluster of this release (its clusters: {})",
                        clusters.join(", ")
                    ),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Percent;

    fn hook(yaml: &str) -> Hook {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn step(kind: StepKind, cluster: &str) -> PlannedStep {
        PlannedStep {
            kind,
            cluster: Some(cluster.to_string()),
            weight: Some(Percent::from_whole(5)),
            wait: Span::ZERO,
        }
    }

    #[test]
    fn hooks_run_at_their_point_on_their_clusters_and_steps() {
        let smoke = hook(
            "{name: smoke, at: beforeTraffic, steps: [canary], clusters: [a], http: {url: 'http://x'}}",
        );
        let hooks = [smoke];
        assert_eq!(of_step(&hooks, &step(StepKind::Canary, "a")).len(), 1);
        assert!(of_step(&hooks, &step(StepKind::Ramp, "a")).is_empty());
        assert!(of_step(&hooks, &step(StepKind::Canary, "b")).is_empty());
        assert!(of_step(&hooks, &step(StepKind::Deploy, "a")).is_empty());
        let cleanup = [hook(
            "{name: drain-check, at: beforeCleanup, job: {fromCronJob: drain}}",
        )];
        assert_eq!(of_step(&cleanup, &step(StepKind::Cleanup, "b")).len(), 1);
        assert!(of_step(&cleanup, &step(StepKind::Soak, "b")).is_empty());
        assert_eq!(cleanup[0].tries(), 3);
        assert_eq!(cleanup[0].timeout, Span::from_secs(120));
    }

    #[test]
    fn each_problem_names_its_field_and_the_fix() {
        let bad = [
            hook("{name: Smoke, at: afterDeploy}"),
            hook(
                "{name: x, at: afterDeploy, steps: [canary], http: {url: 'ftp://x', method: GET, expectStatus: [700]}, job: {fromCronJob: y}}",
            ),
            hook(
                "{name: x, at: beforeTraffic, steps: [soak], clusters: [nowhere], job: {fromCronJob: y}, timeout: 0s}",
            ),
        ];
        let fields: Vec<String> = check(&bad, &["a", "b"])
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.hooks[0].name",
                "spec.hooks[0]",
                "spec.hooks[1]",
                "spec.hooks[1].http.url",
                "spec.hooks[1].http.expectStatus",
                "spec.hooks[1].steps",
                "spec.hooks[2].name",
                "spec.hooks[2].timeout",
                "spec.hooks[2].steps",
                "spec.hooks[2].clusters[0]",
            ]
        );
        let ok = [hook(
            "{name: smoke, at: afterDeploy, http: {url: 'https://x/{{cluster}}'}}",
        )];
        assert!(check(&ok, &["a"]).is_empty());
    }

    #[test]
    fn job_names_are_stable_labels_however_long_the_release() {
        assert_eq!(
            job_name("checkout", "smoke", 2, 4, 1),
            "checkout-smoke-r2-s5-1"
        );
        let long = "a".repeat(60);
        let n = job_name(&long, "smoke-test", 12, 30, 3);
        assert!(n.len() <= 63, "{n}");
        assert!(n.ends_with("-r12-s31-3"), "{n}");
        assert_eq!(n, job_name(&long, "smoke-test", 12, 30, 3));
        assert_ne!(n, job_name(&long, "smoke-tesu", 12, 30, 3));
        crate::spec::check_dns_label(&n).unwrap();
    }
}
