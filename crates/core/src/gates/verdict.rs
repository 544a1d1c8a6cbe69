//! Verdicts, purely: a query result becomes a measurement (Pass, Fail,
//! Inconclusive, NoData, Error); a metric's measurements roll up under its
//! limits; metrics make the gate's verdict. Independent of the order in which
//! series arrive; nothing missing or broken ever counts as a pass.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::spec::gates::{MetricGate, Outcome, Reduce};

/// One series of a result.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// What a provider returned for one measurement.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RawResult {
    pub series: Vec<Sample>,
    pub warnings: Vec<String>,
    /// Requests per second behind the value, for the traffic guard.
    pub request_rate: Option<f64>,
}

/// The class of one measurement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Class {
    Pass,
    Fail,
    Inconclusive,
    NoData,
    Error,
}

/// One measurement, with what it was judged on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    #[schemars(with = "String")]
    pub at: Timestamp,
    pub class: Class,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Value against threshold, or what went wrong.
    pub detail: String,
}

fn from_outcome(o: Outcome) -> Class {
    match o {
        Outcome::Pass => Class::Pass,
        Outcome::Fail => Class::Fail,
        Outcome::Inconclusive => Class::Inconclusive,
        Outcome::Error => Class::Error,
    }
}

/// A value as people read it: four significant decimals at most.
pub fn show(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

fn threshold(gate: &MetricGate) -> String {
    match (gate.min, gate.max) {
        (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
        (None, Some(hi)) => format!("at most {hi}"),
        (Some(lo), None) => format!("at least {lo}"),
        (None, None) => "any value".into(),
    }
}

/// Judges one value against the thresholds and the special-value rules.
fn judge_value(gate: &MetricGate, v: f64) -> Class {
    if v.is_nan() {
        return from_outcome(gate.on.nan);
    }
    if v.is_infinite() {
        return from_outcome(gate.on.inf);
    }
    let low = gate.min.is_some_and(|m| v < m);
    let high = gate.max.is_some_and(|m| v > m);
    if low || high {
        Class::Fail
    } else {
        Class::Pass
    }
}

/// Reduces several series to one value under the rule (for Max/Min/Avg), or
/// `None` when the rule judges series one by one.
fn reduce_values(rule: &Reduce, values: &[f64]) -> Option<f64> {
    if values.iter().any(|v| v.is_nan()) && matches!(rule, Reduce::Max | Reduce::Min | Reduce::Avg)
    {
        return Some(f64::NAN);
    }
    match rule {
        Reduce::All | Reduce::Any => None,
        Reduce::Max => values.iter().copied().reduce(f64::max),
        Reduce::Min => values.iter().copied().reduce(f64::min),
        Reduce::Avg => Some(values.iter().sum::<f64>() / values.len() as f64),
    }
}

/// The class of one measurement of `gate`, from green's result (and blue's,
/// measured at the same time, when the gate compares).
pub fn measure(
    gate: &MetricGate,
    at: Timestamp,
    green: Result<RawResult, String>,
    blue: Option<Result<RawResult, String>>,
) -> Measurement {
    match (&gate.group_by, green) {
        (Some(label), Ok(result)) if !result.series.is_empty() => {
            measure_groups(gate, label, at, result)
        }
        (_, green) => measure_one(gate, at, green, blue),
    }
}

/// Each value of `label` judged on its own; the worst group decides.
fn measure_groups(gate: &MetricGate, label: &str, at: Timestamp, result: RawResult) -> Measurement {
    let mut groups: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for s in result.series {
        groups
            .entry(s.labels.get(label).cloned().unwrap_or_default())
            .or_default()
            .push(s);
    }
    if let Some(n) = gate.expected_series
        && groups.len() != n
    {
        return Measurement {
            at,
            class: Class::Error,
            value: None,
            detail: format!("expected {n} groups of {label}, got {}", groups.len()),
        };
    }
    let single = MetricGate {
        group_by: None,
        expected_series: None,
        ..gate.clone()
    };
    let judged: Vec<(String, Measurement)> = groups
        .into_iter()
        .map(|(k, series)| {
            let r = RawResult {
                series,
                warnings: result.warnings.clone(),
                request_rate: result.request_rate,
            };
            (k, measure_one(&single, at, Ok(r), None))
        })
        .collect();
    let rank = |c: Class| match c {
        Class::Fail => 4,
        Class::Error => 3,
        Class::Inconclusive => 2,
        Class::NoData => 1,
        Class::Pass => 0,
    };
    let (_, worst) = judged
        .iter()
        .max_by_key(|(_, m)| rank(m.class))
        .expect("at least one group");
    let failing: Vec<_> = judged
        .iter()
        .filter(|(_, m)| m.class == worst.class)
        .map(|(k, _)| format!("{label}={k}"))
        .collect();
    let detail = if worst.class == Class::Pass {
        format!("{} groups of {label} pass", judged.len())
    } else {
        let class = format!("{:?}", worst.class).to_lowercase();
        format!("{} ({class}): {}", failing.join(", "), worst.detail)
    };
    Measurement {
        at,
        class: worst.class,
        value: worst.value,
        detail,
    }
}

fn measure_one(
    gate: &MetricGate,
    at: Timestamp,
    green: Result<RawResult, String>,
    blue: Option<Result<RawResult, String>>,
) -> Measurement {
    let m = |class, value, detail: String| Measurement {
        at,
        class,
        value,
        detail,
    };
    let result = match green {
        Ok(r) => r,
        Err(e) => return m(Class::Error, None, e),
    };
    // A traffic guard that cannot be evaluated never lets a value through:
    // without a measured request rate, no traffic and a quiet error ratio
    // would look the same.
    match (gate.min_request_rate, result.request_rate) {
        (Some(min), Some(rate)) if rate < min || rate.is_nan() => {
            return m(
                Class::NoData,
                None,
                format!("{rate:.3} req/s is below the {min} req/s needed to judge"),
            );
        }
        (Some(min), None) => {
            return m(
                Class::Error,
                None,
                format!(
                    "minRequestRate {min} req/s is set but no request rate was measured \
                     (set provider.prometheus.requestRateQuery)"
                ),
            );
        }
        _ => {}
    }
    if let Some(n) = gate.expected_series
        && result.series.len() != n
        && !result.series.is_empty()
    {
        return m(
            Class::Error,
            None,
            format!("expected {n} series, got {}", result.series.len()),
        );
    }
    if result.series.is_empty() {
        return m(
            from_outcome(gate.on.empty),
            None,
            "the query returned no series".into(),
        );
    }
    let mut values: Vec<f64> = result.series.iter().map(|s| s.value).collect();
    values.sort_by(f64::total_cmp);
    let (mut class, value) = match reduce_values(&gate.reduce, &values) {
        Some(v) => (judge_value(gate, v), Some(v)),
        None => {
            let classes: Vec<Class> = values.iter().map(|v| judge_value(gate, *v)).collect();
            let has = |c| classes.contains(&c);
            let class = match gate.reduce {
                Reduce::Any if has(Class::Pass) => Class::Pass,
                Reduce::Any if has(Class::Inconclusive) => Class::Inconclusive,
                Reduce::Any if has(Class::Error) => Class::Error,
                Reduce::Any => Class::Fail,
                _ if has(Class::Fail) => Class::Fail,
                _ if has(Class::Error) => Class::Error,
                _ if has(Class::Inconclusive) => Class::Inconclusive,
                _ => Class::Pass,
            };
            // The value shown is the worst one for the threshold.
            let worst = if gate.max.is_some() {
                values.last()
            } else {
                values.first()
            };
            (class, worst.copied())
        }
    };
    let mut detail = match value {
        Some(v) if values.len() > 1 => {
            format!(
                "{} ({} series) against {}",
                show(v),
                values.len(),
                threshold(gate)
            )
        }
        Some(v) => format!("{} against {}", show(v), threshold(gate)),
        None => format!("no value against {}", threshold(gate)),
    };
    if let (Some(_), Some(Err(e))) = (&gate.compare_to_blue, &blue) {
        // Green may pass only against a blue that was measured.
        return m(
            Class::Error,
            value,
            format!("{detail}; blue could not be measured to compare: {e}"),
        );
    }
    if let (Some(_), None) = (&gate.compare_to_blue, &blue) {
        detail.push_str("; no blue serves to compare with");
    }
    if let (Some(cmp), Some(Ok(blue)), Some(v)) = (&gate.compare_to_blue, blue, value)
        && class == Class::Pass
    {
        let mut bv: Vec<f64> = blue
            .series
            .iter()
            .map(|s| s.value)
            .filter(|v| v.is_finite())
            .collect();
        bv.sort_by(f64::total_cmp);
        if bv.is_empty() {
            detail.push_str("; blue returned no series to compare with");
        }
        if let Some(b) = reduce_values(&Reduce::Max, &bv) {
            let worse = if gate.min.is_some() && gate.max.is_none() {
                v < b * (1.0 - cmp.relative) - cmp.absolute
            } else {
                v > b * (1.0 + cmp.relative) + cmp.absolute
            };
            detail.push_str(&format!("; blue {}", show(b)));
            if worse {
                class = Class::Fail;
                detail.push_str(&format!(
                    " (green worse by more than {}% + {})",
                    cmp.relative * 100.0,
                    cmp.absolute
                ));
            }
        }
    }
    if !result.warnings.is_empty() && class == Class::Pass {
        class = from_outcome(gate.on.warning);
        detail.push_str(&format!("; warnings: {}", result.warnings.join("; ")));
    }
    m(class, value, detail)
}

/// Where one metric stands.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "verdict", content = "reason")]
pub enum MetricVerdict {
    Pass,
    Fail(String),
    Inconclusive(String),
    Pending,
}

/// Rolls a metric's measurements (oldest first) up under its limits.
pub fn metric_verdict(gate: &MetricGate, ms: &[Measurement]) -> MetricVerdict {
    let mut tally = Tally::default();
    for m in ms {
        tally.record(gate, m.clone());
    }
    tally.verdict(gate)
}

/// A metric's measurements in one run, as its verdict needs them: how many
/// of each class, the longest run of failures, the errors in a row, the
/// classes of the last `window.of`, the text of the last one of each class,
/// and the latest few whole for people. Every measurement of the run counts
/// toward the limits, as the counters of Argo Rollouts' analysis runs do,
/// and a run of days holds no more than a run of minutes.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Judged measurements (`NoData` is not judged) of each class, by `Class as usize`.
    counts: [u32; 5],
    /// The longest run of failures, and the one going on.
    longest_failing: u32,
    failing: u32,
    /// Errors since the last judged measurement that was not one.
    erring: u32,
    /// The class of the last judged measurement.
    last_class: Option<Class>,
    /// The classes of the last `window.of` judged measurements, oldest first.
    window: std::collections::VecDeque<Class>,
    /// The last detail of each class, by `Class as usize`: one of the kept
    /// measurements' texts while that one is kept.
    last: [Option<Arc<str>>; 5],
    /// The latest `KEPT_MEASUREMENTS`, oldest first.
    recent: std::collections::VecDeque<Kept>,
}

/// A kept measurement in 40 bytes rather than a `Measurement`'s 64 (a
/// controller keeps ten of each metric in each cluster for every release it
/// drives), its text shared with the last of its class and with the one
/// before it when they read the same: a steady metric or a healthy
/// cluster says the same thing measurement after measurement.
#[derive(Clone, Debug)]
struct Kept {
    second: i64,
    /// NaN when there is none and `valued` is false (NaN is also a value).
    value: f64,
    detail: Arc<str>,
    nanosecond: i32,
    class: Class,
    valued: bool,
}

impl Kept {
    fn measurement(&self) -> Measurement {
        Measurement {
            at: Timestamp::new(self.second, self.nanosecond)
                .expect("made from a timestamp's own parts"),
            class: self.class,
            value: self.valued.then_some(self.value),
            detail: self.detail.to_string(),
        }
    }
}

impl Tally {
    /// Counts `m` under `gate` (whose window says how many classes to keep).
    pub fn record(&mut self, gate: &MetricGate, m: Measurement) {
        let c = m.class;
        // The text as one already kept says it, or a copy of exactly its length.
        let detail = self
            .recent
            .back()
            .map(|k| &k.detail)
            .into_iter()
            .chain(self.last.iter().flatten())
            .find(|d| ***d == *m.detail)
            .cloned()
            .unwrap_or_else(|| Arc::from(m.detail.as_str()));
        if c != Class::NoData {
            self.counts[c as usize] += 1;
            self.failing = if c == Class::Fail {
                self.failing + 1
            } else {
                0
            };
            self.longest_failing = self.longest_failing.max(self.failing);
            self.erring = if c == Class::Error {
                self.erring + 1
            } else {
                0
            };
            self.last_class = Some(c);
            let of = gate.window.map_or(0, |w| w.of as usize);
            self.window.push_back(c);
            while self.window.len() > of {
                self.window.pop_front();
            }
            self.last[c as usize] = Some(detail.clone());
        }
        // Room for exactly the measurements kept, one more at a time until
        // there are ten: growing would double it, and most of a release's
        // runs (a canary's, a ramp step's) end with two or three.
        if self.recent.len() == super::KEPT_MEASUREMENTS {
            self.recent.pop_front();
        } else if self.recent.len() == self.recent.capacity() {
            self.recent.reserve_exact(1);
        }
        self.recent.push_back(Kept {
            second: m.at.as_second(),
            nanosecond: m.at.subsec_nanosecond(),
            class: c,
            valued: m.value.is_some(),
            value: m.value.unwrap_or(f64::NAN),
            detail,
        });
    }

    /// The latest measurements, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = Measurement> + '_ {
        self.recent.iter().map(Kept::measurement)
    }

    /// How many measurements the kept ones have room for.
    #[cfg(test)]
    pub(crate) fn room_for_recent(&self) -> usize {
        self.recent.capacity()
    }

    /// Whether the latest kept measurements' texts are one allocation.
    #[cfg(test)]
    pub(crate) fn shares_recent_details(&self) -> bool {
        let mut kept = self.recent.iter().rev();
        match (kept.next(), kept.next()) {
            (Some(a), Some(b)) => Arc::ptr_eq(&a.detail, &b.detail),
            _ => false,
        }
    }

    /// The metric's verdict under `gate`'s limits.
    pub fn verdict(&self, gate: &MetricGate) -> MetricVerdict {
        let count = |c: Class| self.counts[c as usize];
        let last_of = |c: Class| {
            self.last[c as usize]
                .as_deref()
                .unwrap_or_default()
                .to_string()
        };
        let fails = count(Class::Fail);
        if gate.critical && fails > 0 {
            return MetricVerdict::Fail(format!(
                "critical metric failed: {}",
                last_of(Class::Fail)
            ));
        }
        if fails > gate.failure_limit {
            return MetricVerdict::Fail(format!(
                "{fails} failed measurements (limit {}): {}",
                gate.failure_limit,
                last_of(Class::Fail)
            ));
        }
        if let Some(limit) = gate.consecutive_failure_limit
            && self.longest_failing > limit
        {
            return MetricVerdict::Fail(format!(
                "{} failures in a row (limit {limit}): {}",
                self.longest_failing,
                last_of(Class::Fail)
            ));
        }
        if let Some(w) = gate.window {
            let recent = self.window.iter().filter(|c| **c == Class::Fail).count() as u32;
            if recent > w.failures {
                return MetricVerdict::Fail(format!(
                    "{recent} of the last {} measurements failed: {}",
                    w.of,
                    last_of(Class::Fail)
                ));
            }
        }
        let trailing_errors = self.erring;
        if trailing_errors > gate.consecutive_error_limit {
            return MetricVerdict::Fail(format!(
                "provider unreachable or failing: {trailing_errors} errors in a row (limit {}): {}",
                gate.consecutive_error_limit,
                last_of(Class::Error)
            ));
        }
        let inconclusive = count(Class::Inconclusive);
        if inconclusive > gate.inconclusive_limit {
            return MetricVerdict::Inconclusive(format!(
                "{inconclusive} inconclusive measurements: {}",
                last_of(Class::Inconclusive)
            ));
        }
        let last_pass = self.last_class == Some(Class::Pass);
        if count(Class::Pass) >= gate.min_measurements.max(1) && last_pass {
            MetricVerdict::Pass
        } else {
            MetricVerdict::Pending
        }
    }
}

impl schemars::JsonSchema for MetricVerdict {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MetricVerdict".into()
    }
    /// One structural object (CRD schemas cannot hold a tagged union).
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "properties": {
                "verdict": {"type": "string", "enum": ["pass", "fail", "inconclusive", "pending"]},
                "reason": {"type": "string"}
            },
            "required": ["verdict"]
        })
    }
}

#[cfg(test)]
mod kept {
    use super::*;

    /// What a kept measurement costs, exactly: a controller keeps ten of
    /// each metric in each cluster for every release it drives.
    #[test]
    fn a_kept_measurement_is_40_bytes_and_a_repeated_text_is_kept_once() {
        assert_eq!(std::mem::size_of::<Kept>(), 40);
        assert_eq!(std::mem::size_of::<Measurement>(), 64);
        let text = "name: errors\nprovider:\n  prometheus:\n    query: q\nmax: 1\n";
        let gate: MetricGate = crate::spec::Source::new("gate.yaml", text)
            .decode()
            .unwrap();
        let mut tally = Tally::default();
        for (i, detail) in ["0.5 against at most 1", "0.5 against at most 1"]
            .iter()
            .enumerate()
        {
            tally.record(
                &gate,
                Measurement {
                    at: Timestamp::from_second(1_700_000_000 + i as i64).unwrap(),
                    class: Class::Pass,
                    value: Some(0.5),
                    detail: detail.to_string(),
                },
            );
        }
        assert!(tally.shares_recent_details());
    }
}
