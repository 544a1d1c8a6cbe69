//! Gate verdicts: how one measurement is classed (`verdict`), how a metric's
//! measurements become its verdict, and how a gate's metrics roll up into the
//! verdict the engine acts on. Pure: the providers that measure live in the
//! product's `gates` module.

pub mod verdict;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::engine::GateVerdict;
pub use verdict::{Class, Measurement, MetricVerdict, RawResult, Sample};

/// One metric in one cluster, as it stands, with what it was judged on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricReport {
    pub name: String,
    pub cluster: String,
    /// The query as sent (templated), or what was measured.
    pub query: String,
    pub threshold: String,
    #[serde(default)]
    pub dry_run: bool,
    pub verdict: MetricVerdict,
    /// The most recent measurements, oldest first.
    pub measurements: Vec<Measurement>,
}

/// Measurements kept per metric in a report.
pub const KEPT_MEASUREMENTS: usize = 10;

/// The gate's verdict over its metrics: any failure fails it, then any
/// inconclusive holds it, then any pending waits; dry-run metrics never decide.
pub fn gate_verdict(reports: &[MetricReport]) -> (GateVerdict, String) {
    let deciding: Vec<_> = reports.iter().filter(|r| !r.dry_run).collect();
    let describe = |r: &MetricReport, why: &str| {
        format!(
            "{} on {}: {why} [threshold {}; query: {}]",
            r.name, r.cluster, r.threshold, r.query
        )
    };
    let pick = |want: fn(&MetricVerdict) -> Option<&str>| {
        deciding
            .iter()
            .filter_map(|r| want(&r.verdict).map(|why| describe(r, why)))
            .collect::<Vec<_>>()
    };
    let failed = pick(|v| {
        if let MetricVerdict::Fail(w) = v {
            Some(w)
        } else {
            None
        }
    });
    if !failed.is_empty() {
        return (GateVerdict::Fail, failed.join("; "));
    }
    let inconclusive = pick(|v| {
        if let MetricVerdict::Inconclusive(w) = v {
            Some(w)
        } else {
            None
        }
    });
    if !inconclusive.is_empty() {
        return (GateVerdict::Inconclusive, inconclusive.join("; "));
    }
    let pending: Vec<_> = deciding
        .iter()
        .filter(|r| r.verdict == MetricVerdict::Pending)
        .map(|r| format!("{} on {}", r.name, r.cluster))
        .collect();
    if !pending.is_empty() {
        return (
            GateVerdict::Pending,
            format!("waiting for measurements of {}", pending.join(", ")),
        );
    }
    let passed: Vec<_> = deciding
        .iter()
        .map(|r| format!("{} on {}", r.name, r.cluster))
        .collect();
    if passed.is_empty() {
        (GateVerdict::Pass, "no gates configured".into())
    } else {
        (GateVerdict::Pass, format!("passing: {}", passed.join(", ")))
    }
}
