//! The gate schema: metrics a step must satisfy, how they are measured and
//! how measurements roll up into a verdict. No outcome defaults to a pass.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::quantity::Span;

/// One metric of a release's gates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricGate {
    /// Shown in verdicts (`error-ratio`).
    pub name: String,
    /// Where the value comes from: exactly one of `prometheus`, `scrape`, `clusterHealth`.
    pub provider: Provider,
    /// Time between measurements.
    #[serde(default = "default_interval")]
    pub interval: Span,
    /// Wait before the first measurement of a step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<Span>,
    /// Fails when the value is above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Fails when the value is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Failed measurements allowed in a step before the metric fails (total).
    #[serde(default)]
    pub failure_limit: u32,
    /// Failed measurements in a row allowed before the metric fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failure_limit: Option<u32>,
    /// Fails when more than `failures` of the last `of` measurements failed
    /// (`failures` below `of`; 0: any failure among the last `of`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<FailureWindow>,
    /// Errors in a row (provider unreachable, bad query) before the metric fails.
    #[serde(default = "default_error_limit")]
    pub consecutive_error_limit: u32,
    /// Inconclusive measurements allowed before the gate holds the release.
    #[serde(default)]
    pub inconclusive_limit: u32,
    /// Passing measurements needed before the metric passes.
    #[serde(default = "default_min_measurements")]
    pub min_measurements: u32,
    /// The first failure fails the metric, whatever the limits.
    #[serde(default)]
    pub critical: bool,
    /// Measured and recorded, never decides.
    #[serde(default)]
    pub dry_run: bool,
    /// What an empty result, NaN, ±Inf or a provider warning counts as.
    #[serde(default)]
    pub on: Outcomes,
    /// Below this request rate (per second) a measurement is NoData: too
    /// little traffic to judge. A prometheus gate measures the rate with
    /// `provider.prometheus.requestRateQuery`, which it then needs; scrape
    /// gates measure it from the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_request_rate: Option<f64>,
    /// How several series reduce to one verdict.
    #[serde(default)]
    pub reduce: Reduce,
    /// Judge each value of this label on its own (per pod, per route, per
    /// status code…): each group is reduced by `reduce`, and any failing group
    /// fails the measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// Series (or groups, with `groupBy`) expected in the result; another count is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_series: Option<usize>,
    /// Also measure blue at the same time and compare (prometheus gates
    /// without `groupBy`); a blue that cannot be measured is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare_to_blue: Option<Comparison>,
}

fn default_interval() -> Span {
    Span::from_secs(60)
}
fn default_error_limit() -> u32 {
    4
}
fn default_min_measurements() -> u32 {
    1
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailureWindow {
    pub failures: u32,
    pub of: u32,
}

/// Where a metric comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Provider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusQuery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape: Option<ScrapeQuery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_health: Option<ClusterHealthQuery>,
}

/// An instant PromQL query. `{{app}}`, `{{version}}`, `{{colour}}`, `{{cluster}}`
/// and `{{namespace}}` are replaced before it is sent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusQuery {
    pub query: String,
    /// The server; defaults to the cluster's `prometheus` in the fleet file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Request rate query for the traffic guard (templated like `query`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate_query: Option<String>,
    #[serde(default = "default_query_timeout")]
    pub timeout: Span,
}

fn default_query_timeout() -> Span {
    Span::from_secs(10)
}

/// A value computed from two reads of a Prometheus text endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScrapeQuery {
    /// `errorRatio`, `rate` or `quantile`.
    pub measure: ScrapeMeasure,
    /// Counter (for `errorRatio`/`rate`) or histogram (for `quantile`) name.
    pub metric: String,
    /// Label values selecting the series (templated); defaults to app and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    /// For `errorRatio`: the label and value prefix of errors (`code`, `5`).
    #[serde(default = "default_error_label")]
    pub error_label: String,
    #[serde(default = "default_error_prefix")]
    pub error_prefix: String,
    /// For `quantile`: which (0.99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// The endpoint; defaults to the cluster's `metricsUrl` in the fleet file.
    /// Templated like queries (`{{app}}`, `{{cluster}}`, …), for an endpoint per app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

fn default_error_label() -> String {
    "code".into()
}
fn default_error_prefix() -> String {
    "5".into()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ScrapeMeasure {
    ErrorRatio,
    Rate,
    Quantile,
}

/// Health of green and of the cluster, from the Kubernetes API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterHealthQuery {
    /// Container restarts of green allowed during a step.
    #[serde(default)]
    pub max_restarts: u32,
    /// Nodes NotReady or Unknown allowed in the cluster.
    #[serde(default)]
    pub max_not_ready_nodes: u32,
    /// Pods of the app that cannot be scheduled allowed.
    #[serde(default)]
    pub max_unschedulable_pods: u32,
}

/// What special results count as. None of the defaults is a pass.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outcomes {
    #[serde(default = "inconclusive")]
    pub empty: Outcome,
    #[serde(default = "inconclusive")]
    pub nan: Outcome,
    #[serde(default = "fail")]
    pub inf: Outcome,
    #[serde(default = "inconclusive")]
    pub warning: Outcome,
}

impl Default for Outcomes {
    fn default() -> Self {
        Outcomes {
            empty: Outcome::Inconclusive,
            nan: Outcome::Inconclusive,
            inf: Outcome::Fail,
            warning: Outcome::Inconclusive,
        }
    }
}

fn inconclusive() -> Outcome {
    Outcome::Inconclusive
}
fn fail() -> Outcome {
    Outcome::Fail
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Pass,
    Fail,
    Inconclusive,
    Error,
}

/// How a result with several series becomes one verdict; never "the first one".
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum Reduce {
    /// Every series must pass.
    #[default]
    All,
    /// One passing series is enough.
    Any,
    /// The largest value is judged.
    Max,
    /// The smallest value is judged.
    Min,
    /// The mean is judged.
    Avg,
}

/// Green against blue measured at the same time: green fails when it is worse
/// than blue by more than both tolerances.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Comparison {
    /// Allowed relative excess over blue (0.5: 50 % worse).
    #[serde(default)]
    pub relative: f64,
    /// Allowed absolute excess over blue.
    #[serde(default)]
    pub absolute: f64,
}
