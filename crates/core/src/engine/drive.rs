//! What a driver decides around each pass of the engine, as pure rules: the
//! version it acts on while a newer one waits, the clusters it gates, the
//! clusters it treats as unreachable, and when gate reports enter the status.
//! Drivers (CLI, controller, demo) do the I/O; these decide.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::Observation;
use crate::gates::{MetricReport, MetricVerdict};
use crate::spec::{ReleaseStatus, ResolvedRelease};

/// The release as it is in flight: the version the status belongs to while
/// a newer one waits for it to be withdrawn (back on blue), else the spec's.
/// Its workloads are the ones observed, measured and acted on.
pub fn in_flight<'a>(rel: &'a ResolvedRelease, status: &ReleaseStatus) -> Cow<'a, ResolvedRelease> {
    match &status.version {
        Some(v) if *v != rel.version && !status.phase.is_terminal() => {
            let mut old = rel.clone();
            old.version = v.clone();
            // An undo's mark belongs to the version that asked for it.
            old.undo_of = None;
            Cow::Owned(old)
        }
        _ => Cow::Borrowed(rel),
    }
}

/// Clusters whose green takes traffic now, or is about to in the current
/// step: where the gates measure. None once a rollback began or the release ended.
pub fn gate_scope(status: &ReleaseStatus) -> Vec<String> {
    if status.abort.is_some() || status.phase.is_terminal() {
        return Vec::new();
    }
    let mut clusters: Vec<String> = status
        .weights
        .iter()
        .filter(|(_, w)| w.basis_points() > 0)
        .map(|(c, _)| c.clone())
        .collect();
    if let Some(step) = status.plan.get(status.step as usize)
        && step.is_traffic()
        && let Some(c) = &step.cluster
        && !clusters.contains(c)
    {
        clusters.push(c.clone());
    }
    clusters
}

/// The status the engine decides from, with this pass's gate reports in it
/// when a verdict changed (not on every measurement, so the status is not
/// rewritten each interval). After a rollback began, or once the release
/// ended, the reports that led there stay on record.
pub fn with_reports(status: &ReleaseStatus, reports: Vec<MetricReport>) -> ReleaseStatus {
    let mut input = status.clone();
    let analysing = input.abort.is_none() && !input.phase.is_terminal();
    if analysing && verdicts(&input.gates) != verdicts(&reports) {
        input.gates = reports;
    }
    input
}

fn verdicts(reports: &[MetricReport]) -> Vec<(&str, &str, &MetricVerdict)> {
    reports
        .iter()
        .map(|r| (r.name.as_str(), r.cluster.as_str(), &r.verdict))
        .collect()
}

/// Marks as unreachable each cluster whose API server kept failing the
/// driver's writes and does not answer yet (`failing`: cluster → the error;
/// `answers`: whether it answers now), even while its watches still stream.
/// Returns the clusters that answer again, no longer failing.
pub fn mark_unreachable(
    obs: &mut Observation,
    failing: &BTreeMap<String, String>,
    answers: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut recovered = Vec::new();
    for (cluster, why) in failing {
        if answers(cluster) {
            recovered.push(cluster.clone());
        } else if let Some(v) = obs.clusters.get_mut(cluster) {
            v.reachable = false;
            v.unreachable_because = Some(format!("its API server fails: {why}"));
        }
    }
    recovered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ClusterView;
    use crate::engine::tests::mk_release;
    use crate::gates::MetricVerdict;
    use crate::spec::Percent;
    use crate::spec::status::{AbortReason, AbortStage, AbortStatus, Phase, PlannedStep, StepKind};

    fn status(phase: Phase, version: &str) -> ReleaseStatus {
        ReleaseStatus {
            phase,
            version: Some(version.into()),
            ..ReleaseStatus::default()
        }
    }

    #[test]
    fn the_version_acted_on_is_the_one_in_flight_until_it_is_withdrawn() {
        let rel = mk_release();
        let spec = rel.version.clone();
        for (phase, version, acted_on) in [
            (Phase::Progressing, "2.13.9", "2.13.9"),
            (Phase::Aborting, "2.13.9", "2.13.9"),
            (Phase::Holding, "2.13.9", "2.13.9"),
            (Phase::Completed, "2.13.9", spec.as_str()),
            (Phase::Aborted, "2.13.9", spec.as_str()),
            (Phase::Progressing, spec.as_str(), spec.as_str()),
        ] {
            let got = in_flight(&rel, &status(phase, version));
            assert_eq!(got.version, acted_on, "{phase:?} {version}");
        }
        assert!(matches!(
            in_flight(&rel, &ReleaseStatus::default()),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn gates_measure_where_green_takes_traffic_or_is_about_to() {
        let step = |kind, cluster: &str| PlannedStep {
            kind,
            cluster: Some(cluster.into()),
            weight: Some(Percent::from_whole(10)),
            wait: Default::default(),
        };
        let mut s = status(Phase::Progressing, "2.14.0");
        s.plan = vec![
            step(StepKind::Cutover, "staging"),
            step(StepKind::Deploy, "prod-a"),
            step(StepKind::Canary, "prod-a"),
        ];
        s.weights.insert("staging".into(), Percent::HUNDRED);
        s.weights.insert("prod-b".into(), Percent::ZERO);
        s.step = 1;
        assert_eq!(
            gate_scope(&s),
            ["staging"],
            "a deploy step moves no traffic"
        );
        s.step = 2;
        assert_eq!(
            gate_scope(&s),
            ["staging", "prod-a"],
            "the canary's cluster"
        );
        s.abort = Some(AbortStatus {
            reason: AbortReason::GateFailed,
            message: String::new(),
            at: jiff::Timestamp::UNIX_EPOCH,
            stage: AbortStage::RestoringTraffic,
        });
        assert!(gate_scope(&s).is_empty(), "none once a rollback began");
        s.abort = None;
        s.phase = Phase::Completed;
        assert!(gate_scope(&s).is_empty(), "none once it ended");
    }

    fn report(verdict: MetricVerdict, value: &str) -> MetricReport {
        MetricReport {
            name: "error-ratio".into(),
            cluster: "prod-a".into(),
            query: value.into(),
            threshold: String::new(),
            dry_run: false,
            verdict,
            measurements: Vec::new(),
        }
    }

    #[test]
    fn gate_reports_enter_the_status_when_a_verdict_changes() {
        let mut s = status(Phase::Progressing, "2.14.0");
        s.gates = vec![report(MetricVerdict::Pass, "old")];
        let same = with_reports(&s, vec![report(MetricVerdict::Pass, "new")]);
        assert_eq!(same.gates[0].query, "old", "same verdict: status unchanged");
        let changed = with_reports(&s, vec![report(MetricVerdict::Fail("0.4".into()), "new")]);
        assert_eq!(changed.gates[0].query, "new");
        let more = with_reports(
            &s,
            vec![
                report(MetricVerdict::Pass, "new"),
                MetricReport {
                    cluster: "prod-b".into(),
                    ..report(MetricVerdict::Pass, "new")
                },
            ],
        );
        assert_eq!(more.gates.len(), 2, "a cluster joined");
        for ended in [Phase::Aborting, Phase::Aborted, Phase::Completed] {
            let mut e = s.clone();
            e.phase = ended;
            if ended == Phase::Aborting {
                e.abort = Some(AbortStatus {
                    reason: AbortReason::GateFailed,
                    message: String::new(),
                    at: jiff::Timestamp::UNIX_EPOCH,
                    stage: AbortStage::RestoringTraffic,
                });
            }
            let kept = with_reports(&e, vec![report(MetricVerdict::Fail("0.4".into()), "new")]);
            assert_eq!(kept.gates[0].query, "old", "{ended:?}: the record stays");
        }
    }

    #[test]
    fn a_cluster_that_fails_writes_is_unreachable_until_it_answers() {
        let mut obs = Observation::default();
        for c in ["prod-a", "prod-b"] {
            obs.clusters.insert(
                c.into(),
                ClusterView {
                    reachable: true,
                    ..ClusterView::default()
                },
            );
        }
        let failing = BTreeMap::from([
            ("prod-a".to_string(), "503".to_string()),
            ("prod-b".to_string(), "refused".to_string()),
        ]);
        let recovered = mark_unreachable(&mut obs, &failing, |c| c == "prod-b");
        assert_eq!(recovered, ["prod-b"]);
        let a = &obs.clusters["prod-a"];
        assert!(!a.reachable);
        assert_eq!(
            a.unreachable_because.as_deref(),
            Some("its API server fails: 503")
        );
        assert!(obs.clusters["prod-b"].reachable);
    }
}
