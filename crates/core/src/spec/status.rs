//! The Release status: the engine's persisted state. Written after every step,
//! it is all a driver needs to resume exactly where another one stopped.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::quantity::{Percent, Span};

/// Most transitions kept; older ones are dropped first (a full lifecycle needs about 60).
pub const HISTORY_LIMIT: usize = 400;
/// Most earlier revisions kept in `revisions`; older ones are dropped first.
pub const REVISION_LIMIT: usize = 10;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    #[serde(default)]
    pub phase: Phase,
    /// Which revision of the app this state belongs to: 1 for the first
    /// version released through this Release, one more for each after it.
    #[serde(default, skip_serializing_if = "no_revision")]
    pub revision: u32,
    /// The version this state belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `blueGreen`, or `firstInstall` when no version was serving anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// The version serving before this release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_version: Option<String>,
    /// The steps, fixed when the release started so a change of policy or fleet
    /// file never reinterprets a release in flight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<PlannedStep>,
    /// Index of the current step in `plan`.
    #[serde(default)]
    pub step: u32,
    /// The current step, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub step_started_at: Option<Timestamp>,
    /// When the current step's change was seen in the cluster; its wait counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub step_ready_at: Option<Timestamp>,
    /// Bumped when a freeze, pause or unreachable cluster clears, so the step's gates run again.
    #[serde(default)]
    pub analysis_epoch: u32,
    /// The step whose wait a person skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_step: Option<u32>,
    /// Freezes a person overrode (break-glass) for this release.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overridden_freezes: Vec<String>,
    /// Why the release is not advancing, if it is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<Hold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub hold_since: Option<Timestamp>,
    /// When the current freeze, pause or unreachable-cluster hold began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub suspended_since: Option<Timestamp>,
    /// Seconds the current step spent under freeze, pause or unreachable-cluster
    /// holds before the present one: its progress deadline is extended by them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub suspended_seconds: u64,
    /// Set once a rollback begins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortStatus>,
    /// Green's share of each cluster's traffic, as last confirmed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, Percent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<Timestamp>,
    /// The current step's gates: each metric per cluster, its verdict and recent measurements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<crate::gates::MetricReport>,
    /// The hooks of this revision that ended, by step and cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<super::hooks::HookRecord>,
    /// A one-line account of the present state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Standard conditions; `Invalid` is true while the spec cannot be run
    /// (malformed, or against the tier's rules), with the reason and fix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    /// Each change of green's confirmed share in a cluster, oldest first (for
    /// the timeline picture).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<WeightChange>,
    /// Each gate metric's values over the release, downsampled to a bounded
    /// number of points (for the timeline picture). Values measured after the
    /// last status write are lost if the driver dies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gate_series: Vec<GateSeries>,
    /// How sending this release's events to each notification receiver went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<super::notify::Delivery>,
    /// Every transition, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Transition>,
    /// The images this revision runs, by container (for its history and `undo`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// Earlier revisions that ended, oldest first, at most `REVISION_LIMIT`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<Revision>,
}

fn no_revision(n: &u32) -> bool {
    *n == 0
}

/// One version's lifecycle that ended, as the history keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    pub revision: u32,
    pub version: String,
    /// The images it ran, by container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// `Completed`, `Aborted` or `Failed`.
    pub outcome: Phase,
    /// The version it replaced, if one served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<Timestamp>,
    /// Why it ended, in words.
    pub reason: String,
    /// Its gates when it ended: each metric per cluster and how it stood.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gates: String,
}

impl ReleaseStatus {
    /// The revision number this state belongs to (states written before
    /// revisions were kept count as the first).
    pub fn revision_number(&self) -> u32 {
        self.revision.max(1)
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum Phase {
    /// Not started: preflight has not passed yet.
    #[default]
    Pending,
    Progressing,
    /// Not advancing until the causes in `holds` clear.
    Holding,
    /// A person paused it.
    Paused,
    /// Rolling back: traffic to blue first, then green down.
    Aborting,
    Aborted,
    Completed,
    /// Refused or impossible; needs a change by a person.
    Failed,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Aborted | Phase::Completed | Phase::Failed)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Blue serves everywhere; green comes in beside it.
    BlueGreen,
    /// Nothing serves yet: green is installed cluster by cluster, nothing to clean up.
    FirstInstall,
}

/// One atomic move of the plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStep {
    pub kind: StepKind,
    /// The cluster it acts on; none for a fleet-wide wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Green's share of the cluster's traffic for traffic steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<Percent>,
    /// How long the step holds, gating, once its change is in place.
    #[serde(default)]
    pub wait: Span,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StepKind {
    /// Create green at full size with no traffic; wait until available and well placed.
    Deploy,
    /// First traffic to green on the first production cluster.
    Canary,
    /// One more step of traffic to green.
    Ramp,
    /// All of a cluster's traffic to green at once.
    Cutover,
    /// Hold staging on green, gating.
    Verify,
    /// Hold the first production cluster at 100 %, gating.
    Soak,
    /// Hold every cluster on green with blue still at full size, gating.
    Bake,
    /// Delete blue's workload in one cluster.
    Cleanup,
}

impl PlannedStep {
    pub fn is_traffic(&self) -> bool {
        matches!(
            self.kind,
            StepKind::Canary | StepKind::Ramp | StepKind::Cutover
        )
    }
}

impl fmt::Display for PlannedStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.cluster.as_deref().unwrap_or("fleet");
        let w = self.weight.unwrap_or(Percent::ZERO);
        match self.kind {
            StepKind::Deploy => write!(f, "deploy green on {c}"),
            StepKind::Canary => write!(f, "canary {c} {w}"),
            StepKind::Ramp => write!(f, "ramp {c} {w}"),
            StepKind::Cutover => write!(f, "cut over {c}"),
            StepKind::Verify => write!(f, "verify {c} {}", self.wait),
            StepKind::Soak => write!(f, "soak {c} {}", self.wait),
            StepKind::Bake => write!(f, "bake {}", self.wait),
            StepKind::Cleanup => write!(f, "clean up blue on {c}"),
        }
    }
}

/// A cause that keeps the release from advancing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    pub reason: HoldReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub message: String,
}

#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum HoldReason {
    /// A deploy freeze applies, or one could not be ruled out.
    Freeze,
    Paused,
    ClusterUnreachable,
    /// Green's live placement does not satisfy the tier yet.
    Placement,
    /// Green's pods are not all available yet.
    GreenNotReady,
    /// A gate could not decide.
    GateInconclusive,
    /// A step hook could not run or could not decide.
    HookInconclusive,
    /// Someone else changed the traffic route.
    RouteDrift,
    /// The applier refused an action that would have taken traffic away from
    /// what serves (a defect): nothing was done, a person must look.
    UnsafeAction,
}

impl HoldReason {
    /// Holds that suspend analysis: when they clear, the step's gates run afresh.
    pub fn restarts_analysis(self) -> bool {
        matches!(
            self,
            HoldReason::Freeze | HoldReason::Paused | HoldReason::ClusterUnreachable
        )
    }

    /// Holds that count against the progress deadline: no hold that no
    /// person asked for lasts for ever. A gate without data past the deadline
    /// rolls back, naming the gate and what it lacked.
    pub fn has_deadline(self) -> bool {
        matches!(
            self,
            HoldReason::Placement
                | HoldReason::GreenNotReady
                | HoldReason::GateInconclusive
                | HoldReason::HookInconclusive
        )
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortStatus {
    pub reason: AbortReason,
    pub message: String,
    #[schemars(with = "String")]
    pub at: Timestamp,
    pub stage: AbortStage,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AbortReason {
    GateFailed,
    /// A step hook failed.
    HookFailed,
    Requested,
    ProgressDeadline,
    /// A new version was submitted while this one was in flight: this one's
    /// traffic goes back to blue and the new version starts from the first step.
    Superseded,
}

impl AbortReason {
    /// Short label for metrics and Event reasons.
    pub fn label(self) -> &'static str {
        match self {
            AbortReason::GateFailed => "gate_failed",
            AbortReason::HookFailed => "hook_failed",
            AbortReason::Requested => "requested",
            AbortReason::ProgressDeadline => "progress_deadline",
            AbortReason::Superseded => "superseded",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AbortStage {
    /// Setting every cluster's route back to blue.
    RestoringTraffic,
    /// Every route is on blue; scaling green down.
    ScalingDownGreen,
}

/// One recorded change of state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    #[schemars(with = "String")]
    pub at: Timestamp,
    pub step: u32,
    pub event: TransitionEvent,
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TransitionEvent {
    Started,
    StepStarted,
    StepReady,
    StepCompleted,
    Promoted,
    /// A step hook passed.
    HookPassed,
    HoldStarted,
    HoldChanged,
    HoldCleared,
    FreezeOverridden,
    AbortStarted,
    TrafficRestored,
    Aborted,
    /// The version in flight was withdrawn for a newer one, which starts over.
    Superseded,
    Completed,
    Failed,
}

/// Green's share of a cluster's traffic from `at` on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WeightChange {
    #[schemars(with = "String")]
    pub at: Timestamp,
    pub cluster: String,
    pub green: Percent,
}

/// One gate metric's measured values in one cluster. Written compactly
/// (`SeriesWire`): when the first value was measured, then each value's
/// seconds after it and the values, to six significant digits, in two
/// arrays; a full series (`MAX_POINTS`) is a few kilobytes however long the
/// release runs. The one object per value of earlier statuses is still read.
///
/// Kept as compactly: each point is its seconds after the first and its
/// value as an `f32`, 8 bytes where a `Point` is 16 (a controller keeps a
/// series per gate and cluster of every release it drives, for the
/// release's whole life). An `f32` holds any value of six significant
/// digits exactly enough to give those digits back (`f32::DIGITS` is 6),
/// which is what the status writes; a value beyond its range (about
/// ±3.4e38) is not kept, as a value that is not finite is not.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(into = "SeriesWire", try_from = "SeriesWire")]
pub struct GateSeries {
    pub name: String,
    pub cluster: String,
    /// As the gate states it, e.g. `≤ 0.02`.
    pub threshold: String,
    /// When the first point was measured (Unix seconds).
    start: i64,
    /// Each point's seconds after `start` and its value, oldest first.
    points: Vec<(u32, f32)>,
}

/// One gate metric's measured values in one cluster: when the first was
/// measured, each one's seconds after it, and the values.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "GateSeries")]
struct SeriesWire {
    name: String,
    cluster: String,
    /// As the gate states it, e.g. `≤ 0.02`.
    threshold: String,
    /// When the first value was measured (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<i64>,
    /// When each value was measured, in seconds after `start`; oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    offsets: Vec<i64>,
    /// The values measured at `offsets`, to six significant digits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    values: Vec<f64>,
    /// Earlier statuses' form, an object per value: read, never written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    points: Vec<Point>,
}

impl From<GateSeries> for SeriesWire {
    fn from(g: GateSeries) -> SeriesWire {
        SeriesWire {
            start: (!g.points.is_empty()).then_some(g.start),
            offsets: g.points.iter().map(|&(o, _)| i64::from(o)).collect(),
            values: g.points().map(|p| p.value).collect(),
            name: g.name,
            cluster: g.cluster,
            threshold: g.threshold,
            points: Vec::new(),
        }
    }
}

impl TryFrom<SeriesWire> for GateSeries {
    type Error = String;
    fn try_from(w: SeriesWire) -> Result<GateSeries, String> {
        if w.offsets.len() != w.values.len() {
            return Err(format!(
                "gate series {} in {}: {} offsets but {} values; each value needs its offset",
                w.name,
                w.cluster,
                w.offsets.len(),
                w.values.len()
            ));
        }
        if !w.offsets.is_empty() && w.start.is_none() {
            return Err(format!(
                "gate series {} in {}: offsets without a start",
                w.name, w.cluster
            ));
        }
        let start = w.start.unwrap_or_default();
        let points = w
            .points
            .into_iter()
            .chain(w.offsets.iter().zip(&w.values).map(|(o, v)| Point {
                at: start.saturating_add(*o),
                value: *v,
            }));
        Ok(GateSeries::of(w.name, w.cluster, w.threshold, points))
    }
}

impl JsonSchema for GateSeries {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        SeriesWire::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        SeriesWire::json_schema(generator)
    }
}

/// `v` to `digits` significant digits: what a chart shows, in fewer bytes.
/// The nearest `f64` to the rounded decimal, as reading it written out
/// would give: scaled by a power of ten that an `f64` holds exactly (up to
/// 10^22) where one does, and through its text where none does.
fn significant(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let exp = digits - 1 - v.abs().log10().floor() as i32;
    let rounded = match exp {
        0..=22 => {
            let scale = 10f64.powi(exp);
            (v * scale).round() / scale
        }
        -22..0 => {
            let scale = 10f64.powi(-exp);
            (v / scale).round() * scale
        }
        _ => format!("{v:.*e}", (digits - 1).max(0) as usize)
            .parse()
            .unwrap_or(v),
    };
    if rounded.is_finite() { rounded } else { v }
}

/// One measured value. Earlier statuses wrote it as `{at, value}`, and
/// before that as an `[at, value]` pair; both are still read.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, JsonSchema)]
pub struct Point {
    /// Unix seconds.
    pub at: i64,
    pub value: f64,
}

impl<'de> Deserialize<'de> for Point {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Object { at: i64, value: f64 },
            Pair(i64, f64),
        }
        Ok(match Written::deserialize(d)? {
            Written::Object { at, value } | Written::Pair(at, value) => Point { at, value },
        })
    }
}

impl GateSeries {
    /// Most points kept; past it every other point is dropped.
    pub const MAX_POINTS: usize = 240;

    /// A series with no points yet.
    pub fn new(name: String, cluster: String, threshold: String) -> GateSeries {
        GateSeries {
            name,
            cluster,
            threshold,
            start: 0,
            points: Vec::new(),
        }
    }

    /// A series of `points`, each added as `push` adds it.
    pub fn of(
        name: String,
        cluster: String,
        threshold: String,
        points: impl IntoIterator<Item = Point>,
    ) -> GateSeries {
        let mut g = GateSeries::new(name, cluster, threshold);
        for p in points {
            g.push(p.at, p.value);
        }
        g
    }

    /// The points, oldest first, each value to six significant digits.
    pub fn points(&self) -> impl DoubleEndedIterator<Item = Point> + ExactSizeIterator + '_ {
        self.points.iter().map(|&(o, v)| Point {
            at: self.start + i64::from(o),
            value: significant(f64::from(v), 6),
        })
    }

    /// How many points it has.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Adds a point later than the last one, halving the resolution when full.
    pub fn push(&mut self, at: i64, value: f64) {
        // An `f32` of a value beyond its range is infinite.
        let kept = value as f32;
        if !kept.is_finite() {
            return;
        }
        let start = if self.points.is_empty() {
            at
        } else {
            self.start
        };
        let offset = match at.checked_sub(start).map(u32::try_from) {
            Some(Ok(o)) => o,
            // Before the first point, or 136 years after it.
            _ => return,
        };
        if self.points.last().is_some_and(|&(last, _)| last >= offset) {
            return;
        }
        self.start = start;
        // Grown a few points at a time: a series is kept for the release's
        // whole life, and doubling would leave up to half of it spare.
        if self.points.len() == self.points.capacity() {
            self.points.reserve_exact(GROW_POINTS);
        }
        self.points.push((offset, kept));
        if self.points.len() > Self::MAX_POINTS {
            let mut i = 0;
            self.points.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
    }

    /// How many points it has room for.
    #[cfg(test)]
    fn room(&self) -> usize {
        self.points.capacity()
    }
}

/// Points a series grows by when full.
const GROW_POINTS: usize = 16;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(i64, f64)]) -> GateSeries {
        GateSeries::of(
            "error-rate".into(),
            "prod-a".into(),
            "≤ 0.02".into(),
            points.iter().map(|&(at, value)| Point { at, value }),
        )
    }

    #[test]
    fn a_gate_series_grows_a_few_points_at_a_time_and_stays_bounded() {
        let mut g = series(&[]);
        for i in 0..1000 {
            g.push(i * 30, 0.5);
            let (len, room) = (g.len(), g.room());
            // Until it first fills; then it keeps the room it had.
            if i < GateSeries::MAX_POINTS as i64 {
                assert!(room - len < GROW_POINTS, "{len} points in room for {room}");
            }
            assert!(len <= GateSeries::MAX_POINTS);
            assert!(
                room <= GateSeries::MAX_POINTS + GROW_POINTS,
                "room for {room}"
            );
        }
    }

    #[test]
    fn gate_series_are_written_as_a_start_offsets_and_values() {
        let g = series(&[(1_800_000_000, 0.25), (1_800_000_030, 0.012_345_678_9)]);
        let written = serde_json::to_value(&g).unwrap();
        assert_eq!(
            written,
            serde_json::json!({
                "name": "error-rate", "cluster": "prod-a", "threshold": "≤ 0.02",
                "start": 1_800_000_000, "offsets": [0, 30], "values": [0.25, 0.012_345_7],
            })
        );
        let read: GateSeries = serde_json::from_value(written).unwrap();
        let points: Vec<Point> = read.points().collect();
        assert_eq!(points[0], g.points().next().unwrap());
        assert_eq!(points[1].at, 1_800_000_030);
        assert_eq!(points[1].value, 0.012_345_7);
        let empty = serde_json::to_value(series(&[])).unwrap();
        assert_eq!(
            serde_json::from_value::<GateSeries>(empty).unwrap(),
            series(&[])
        );
    }

    #[test]
    fn a_point_is_kept_in_eight_bytes_and_reads_back_to_six_significant_digits() {
        assert_eq!(std::mem::size_of::<(u32, f32)>(), 8);
        let values = [0.012_345_678_9, 123_456_789.0, -0.25, 1e-30, 3.0e38, 0.0];
        let g = series(
            &values
                .iter()
                .enumerate()
                .map(|(i, v)| (1_800_000_000 + 30 * i as i64, *v))
                .collect::<Vec<_>>(),
        );
        let read: Vec<f64> = g.points().map(|p| p.value).collect();
        assert_eq!(
            read,
            [0.012_345_7, 123_457_000.0, -0.25, 1e-30, 3.0e38, 0.0]
        );
        // Beyond an f32's range, or not after the last point: not kept.
        let mut g = series(&[(1_800_000_000, 0.5)]);
        g.push(1_800_000_030, 1e39);
        g.push(1_800_000_000, 0.7);
        g.push(1_799_999_000, 0.7);
        assert_eq!(g.len(), 1);
        g.push(1_800_000_060, 0.75);
        let at: Vec<i64> = g.points().map(|p| p.at).collect();
        assert_eq!(at, [1_800_000_000, 1_800_000_060]);
    }

    #[test]
    fn a_full_series_is_a_few_kilobytes() {
        let mut g = series(&[]);
        for i in 0..1_000 {
            g.push(1_800_000_000 + i * 60, 0.010_000_1 + i as f64 * 1e-7);
        }
        let bytes = serde_json::to_string(&g).unwrap().len();
        assert!(bytes < 5_000, "{bytes} bytes");
    }

    #[test]
    fn earlier_objects_and_pairs_are_still_read() {
        let objects = serde_json::json!({
            "name": "error-rate", "cluster": "prod-a", "threshold": "≤ 0.02",
            "points": [{"at": 1_800_000_000, "value": 0.25}, [1_800_000_030, 0.5]],
        });
        assert_eq!(
            serde_json::from_value::<GateSeries>(objects).unwrap(),
            series(&[(1_800_000_000, 0.25), (1_800_000_030, 0.5)])
        );
    }

    #[test]
    fn offsets_and_values_of_different_lengths_are_refused() {
        let bad = serde_json::json!({
            "name": "error-rate", "cluster": "prod-a", "threshold": "≤ 0.02",
            "start": 1_800_000_000, "offsets": [0, 30], "values": [0.25],
        });
        let err = serde_json::from_value::<GateSeries>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 offsets but 1 values"), "{err}");
    }
}
