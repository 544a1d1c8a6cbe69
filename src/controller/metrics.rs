//! What the controller exports on `/metrics`, in the Prometheus text format
//! (through `prometheus-client`, the Prometheus project's own Rust crate).

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::gates::verdict::MetricVerdict;
use crate::spec::ReleaseStatus;
use crate::spec::status::{HoldReason, Phase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    pub cluster: String,
    pub verb: String,
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    pub releases: Family<PhaseLabel, Gauge>,
    pub step_seconds: Family<StepLabel, Histogram>,
    pub gate_verdicts: Family<ResultLabel, Counter>,
    pub aborts: Family<ReasonLabel, Counter>,
    pub api_requests: Family<RequestLabel, Counter>,
    pub freeze_holds: Counter,
    pub held: Family<ReasonLabel, Gauge>,
    pub leader: Gauge,
    /// 1 while this replica holds its own Lease and drives its share.
    pub replica: Gauge,
    /// Releases this replica drives now.
    pub driving: Gauge,
    /// Live replicas as this one counts them from their Leases.
    pub replicas: Gauge,
    /// The most releases this replica takes: 0 until it has counted the
    /// others (`shard::Shard::settled`).
    pub share: Gauge,
    /// Drivers asked to hand their release over to a replica with room.
    pub handed_over: Counter,
    pub lease_losses: Counter,
    pub driver_errors: Counter,
    /// Releases woken and waiting for a turn to pass.
    pub passes_waiting: Gauge,
    /// Releases in a pass.
    pub passing: Gauge,
    /// Notification messages by receiver and result.
    pub notifications: Family<crate::notify::DeliveryLabel, Counter>,
    /// Last known phase and verdicts per release, to count changes only.
    seen: Mutex<BTreeMap<String, Seen>>,
}

#[derive(Default)]
struct Seen {
    phase: Option<Phase>,
    verdicts: Vec<(String, String, &'static str)>,
    holds: Vec<HoldReason>,
}

const PHASES: [Phase; 8] = [
    Phase::Pending,
    Phase::Progressing,
    Phase::Holding,
    Phase::Paused,
    Phase::Aborting,
    Phase::Aborted,
    Phase::Completed,
    Phase::Failed,
];

fn phase_label(p: Phase) -> String {
    format!("{p:?}")
}

fn hold_label(r: HoldReason) -> String {
    format!("{r:?}")
}

fn verdict_label(v: &MetricVerdict) -> &'static str {
    match v {
        MetricVerdict::Pass => "pass",
        MetricVerdict::Fail(_) => "fail",
        MetricVerdict::Inconclusive(_) => "inconclusive",
        MetricVerdict::Pending => "pending",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cutover");
        let releases = Family::<PhaseLabel, Gauge>::default();
        let step_seconds = Family::<StepLabel, Histogram>::new_with_constructor(|| {
            // Fleet time: a canary of minutes to a bake of hours.
            Histogram::new([
                10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0,
            ])
        });
        let gate_verdicts = Family::<ResultLabel, Counter>::default();
        let aborts = Family::<ReasonLabel, Counter>::default();
        let api_requests = Family::<RequestLabel, Counter>::default();
        let freeze_holds = Counter::default();
        let held = Family::<ReasonLabel, Gauge>::default();
        let leader = Gauge::default();
        let replica = Gauge::default();
        let driving = Gauge::default();
        let replicas = Gauge::default();
        let share = Gauge::default();
        let handed_over = Counter::default();
        let lease_losses = Counter::default();
        let driver_errors = Counter::default();
        let passes_waiting = Gauge::default();
        let passing = Gauge::default();
        let notifications = Family::<crate::notify::DeliveryLabel, Counter>::default();
        registry.register(
            "releases",
            "Releases this controller has seen, by phase",
            releases.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Fleet time from a step's start to its completion, by kind of step",
            step_seconds.clone(),
        );
        registry.register(
            "gate_verdicts",
            "Changes of a metric gate's verdict, by the new verdict",
            gate_verdicts.clone(),
        );
        registry.register("aborts", "Rollbacks started, by reason", aborts.clone());
        registry.register(
            "api_requests",
            "Kubernetes API requests sent, by cluster and verb",
            api_requests.clone(),
        );
        registry.register(
            "freeze_holds",
            "Times a release began holding for a deploy freeze",
            freeze_holds.clone(),
        );
        registry.register(
            "releases_held",
            "Releases holding now, by the reason of their first hold",
            held.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader and announces freezes set with kubectl",
            leader.clone(),
        );
        registry.register(
            "replica",
            "1 while this replica holds its own Lease and drives its share of the releases",
            replica.clone(),
        );
        registry.register(
            "releases_driven",
            "Releases this replica drives now",
            driving.clone(),
        );
        registry.register(
            "replicas_live",
            "Controller replicas alive (their Leases renewed), this one included, as this replica counts them",
            replicas.clone(),
        );
        registry.register(
            "releases_share",
            "The most releases this replica takes: those that need a driver over the replicas alive, rounded up; 0 until it has counted the replicas",
            share.clone(),
        );
        registry.register(
            "releases_handed_over",
            "Releases this replica asked its driver to hand over, driving more than its share while another replica had room",
            handed_over.clone(),
        );
        registry.register(
            "lease_losses",
            "Times this replica's Lease lapsed (its renewals failed) and every driver it ran stopped",
            lease_losses.clone(),
        );
        registry.register(
            "driver_errors",
            "Drives that ended in an error and were retried",
            driver_errors.clone(),
        );
        registry.register(
            "passes_waiting",
            "Releases woken and waiting for a turn to pass (see --workers); staying high means passes queue",
            passes_waiting.clone(),
        );
        registry.register(
            "passes_running",
            "Releases in a pass now: observing, deciding, acting or writing their status",
            passing.clone(),
        );
        registry.register(
            "notifications",
            "Notification messages by receiver and result: delivered, failed after every retry, or dropped while the receiver's queue was full",
            notifications.clone(),
        );
        Metrics {
            registry,
            notifications,
            releases,
            step_seconds,
            gate_verdicts,
            aborts,
            api_requests,
            freeze_holds,
            held,
            leader,
            replica,
            driving,
            replicas,
            share,
            handed_over,
            lease_losses,
            driver_errors,
            passes_waiting,
            passing,
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// The text exposition of every metric. The releases by phase and by
    /// hold are counted here, at a scrape, not at every status: a replica
    /// looks at each release it does not drive every few seconds, and
    /// counting its thousands of releases at each look was a fifth of its CPU.
    pub fn encode(&self) -> String {
        self.refresh(&self.seen.lock().expect("metrics lock"));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn api_request(&self, cluster: &str, verb: &str) {
        self.api_requests
            .get_or_create(&RequestLabel {
                cluster: cluster.to_string(),
                verb: verb.to_string(),
            })
            .inc();
    }

    /// Records a release's latest status: its phase, new verdicts, completed
    /// steps' durations, a new rollback or hold.
    pub fn status(&self, key: &str, s: &ReleaseStatus) {
        let mut seen = self.seen.lock().expect("metrics lock");
        let entry = seen.entry(key.to_string()).or_default();
        if entry.phase != Some(s.phase) {
            let rollback_began = s.phase == Phase::Aborting
                || (s.phase == Phase::Aborted && entry.phase != Some(Phase::Aborting));
            if rollback_began {
                let reason = s
                    .abort
                    .as_ref()
                    .map(|a| a.reason.label().to_string())
                    .unwrap_or_else(|| "unknown".into());
                self.aborts.get_or_create(&ReasonLabel { reason }).inc();
            }
            entry.phase = Some(s.phase);
        }
        let verdicts: Vec<_> = s
            .gates
            .iter()
            .map(|g| (g.name.clone(), g.cluster.clone(), verdict_label(&g.verdict)))
            .collect();
        for v in &verdicts {
            if !entry.verdicts.contains(v) {
                self.gate_verdicts
                    .get_or_create(&ResultLabel {
                        result: v.2.to_string(),
                    })
                    .inc();
            }
        }
        if !verdicts.is_empty() {
            entry.verdicts = verdicts;
        }
        let holds: Vec<HoldReason> = s.holds.iter().map(|h| h.reason).collect();
        if holds.contains(&HoldReason::Freeze) && !entry.holds.contains(&HoldReason::Freeze) {
            self.freeze_holds.inc();
        }
        entry.holds = holds;
    }

    /// A step completed after `seconds` of fleet time.
    pub fn step_completed(&self, kind: &str, seconds: f64) {
        self.step_seconds
            .get_or_create(&StepLabel {
                kind: kind.to_string(),
            })
            .observe(seconds);
    }

    /// Sets a release's phase as read from the API (before any driver ran).
    pub fn observed_phase(&self, key: &str, phase: Phase) {
        let mut seen = self.seen.lock().expect("metrics lock");
        seen.entry(key.to_string()).or_default().phase = Some(phase);
    }

    fn refresh(&self, seen: &BTreeMap<String, Seen>) {
        for p in PHASES {
            let n = seen.values().filter(|s| s.phase == Some(p)).count();
            self.releases
                .get_or_create(&PhaseLabel {
                    phase: phase_label(p),
                })
                .set(n as i64);
        }
        let mut held: BTreeMap<String, i64> = BTreeMap::new();
        for s in seen.values() {
            if let Some(r) = s.holds.first() {
                *held.entry(hold_label(*r)).or_default() += 1;
            }
        }
        self.held.clear();
        for (reason, n) in held {
            self.held.get_or_create(&ReasonLabel { reason }).set(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::status::{AbortReason, AbortStage, AbortStatus, Hold};

    #[test]
    fn counts_changes_not_repeats() {
        let m = Metrics::new();
        let mut s = ReleaseStatus {
            phase: Phase::Progressing,
            ..Default::default()
        };
        m.status("shop/checkout", &s);
        m.status("shop/checkout", &s);
        s.phase = Phase::Holding;
        s.holds = vec![Hold {
            reason: HoldReason::Freeze,
            cluster: None,
            message: "frozen".into(),
        }];
        m.status("shop/checkout", &s);
        m.status("shop/checkout", &s);
        s.phase = Phase::Aborting;
        s.holds.clear();
        s.abort = Some(AbortStatus {
            reason: AbortReason::GateFailed,
            message: "error-ratio failed".into(),
            at: jiff::Timestamp::UNIX_EPOCH,
            stage: AbortStage::RestoringTraffic,
        });
        m.status("shop/checkout", &s);
        s.phase = Phase::Aborted;
        m.status("shop/checkout", &s);
        m.api_request("prod-a", "patch");
        let text = m.encode();
        for line in [
            "cutover_releases{phase=\"Aborted\"} 1",
            "cutover_releases{phase=\"Progressing\"} 0",
            "cutover_freeze_holds_total 1",
            "cutover_aborts_total{reason=\"gate_failed\"} 1",
            "cutover_api_requests_total{cluster=\"prod-a\",verb=\"patch\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
