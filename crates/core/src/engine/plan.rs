//! The steps of a release, derived from its resolved spec. Pure and
//! deterministic: the same release always gives the same plan.

use crate::spec::policy::LaterClusters;
use crate::spec::status::{Mode, PlannedStep, StepKind};
use crate::spec::{ClusterRole, Percent, ResolvedRelease, Span};

/// Every step of the release, in order.
pub fn build(rel: &ResolvedRelease, mode: Mode) -> Vec<PlannedStep> {
    let t = &rel.timings;
    let mut steps = Vec::new();
    let step = |kind, cluster: &str, weight: Option<Percent>, wait: Span| PlannedStep {
        kind,
        cluster: Some(cluster.to_string()),
        weight,
        wait,
    };
    for c in rel
        .clusters
        .iter()
        .filter(|c| c.role == ClusterRole::Staging)
    {
        steps.push(step(StepKind::Deploy, &c.name, None, Span::ZERO));
        steps.push(step(
            StepKind::Cutover,
            &c.name,
            Some(Percent::HUNDRED),
            Span::ZERO,
        ));
        steps.push(step(StepKind::Verify, &c.name, None, t.staging_verify));
    }
    let production: Vec<_> = rel
        .clusters
        .iter()
        .filter(|c| c.role == ClusterRole::Production)
        .collect();
    let Some((first, rest)) = production.split_first() else {
        return steps;
    };
    steps.push(step(StepKind::Deploy, &first.name, None, Span::ZERO));
    match mode {
        Mode::BlueGreen => {
            let canary = rel.canary_weight_on_first();
            let canary_wait = if canary == Percent::HUNDRED {
                Span::ZERO
            } else {
                t.canary_duration
            };
            steps.push(step(
                StepKind::Canary,
                &first.name,
                Some(canary),
                canary_wait,
            ));
            for w in ramp_weights(canary, t.ramp_step) {
                let wait = if w == Percent::HUNDRED {
                    Span::ZERO
                } else {
                    t.ramp_interval
                };
                steps.push(step(StepKind::Ramp, &first.name, Some(w), wait));
            }
        }
        Mode::FirstInstall => {
            steps.push(step(
                StepKind::Cutover,
                &first.name,
                Some(Percent::HUNDRED),
                Span::ZERO,
            ));
        }
    }
    steps.push(step(StepKind::Soak, &first.name, None, t.soak));
    for c in rest {
        steps.push(step(StepKind::Deploy, &c.name, None, Span::ZERO));
        if mode == Mode::BlueGreen && t.later_clusters == LaterClusters::Ramp {
            for w in ramp_weights(Percent::ZERO, t.ramp_step) {
                let wait = if w == Percent::HUNDRED {
                    Span::ZERO
                } else {
                    t.ramp_interval
                };
                steps.push(step(StepKind::Ramp, &c.name, Some(w), wait));
            }
        } else {
            steps.push(step(
                StepKind::Cutover,
                &c.name,
                Some(Percent::HUNDRED),
                Span::ZERO,
            ));
        }
    }
    if mode == Mode::BlueGreen {
        steps.push(PlannedStep {
            kind: StepKind::Bake,
            cluster: None,
            weight: None,
            wait: t.bake,
        });
        for c in &rel.clusters {
            steps.push(step(StepKind::Cleanup, &c.name, None, Span::ZERO));
        }
    }
    steps
}

/// The ramp after `from`: each multiple of `step` above `from`, then 100 %.
/// From a 4 % canary with 5 % steps: 5, 10, …, 95, 100.
pub fn ramp_weights(from: Percent, step: Percent) -> Vec<Percent> {
    let step = step.basis_points().max(1);
    let mut out = Vec::new();
    let mut w = (from.basis_points() / step + 1) * step;
    while w < Percent::HUNDRED.basis_points() {
        out.push(Percent::from_basis_points(w));
        w += step;
    }
    if from < Percent::HUNDRED {
        out.push(Percent::HUNDRED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcts(v: &[Percent]) -> Vec<u32> {
        v.iter().map(|p| p.basis_points()).collect()
    }

    #[test]
    fn ramp_weights_walk_the_grid_to_100() {
        let four = Percent::from_whole(4);
        let five = Percent::from_whole(5);
        let got = ramp_weights(four, five);
        assert_eq!(got.len(), 20);
        assert_eq!(got[0], five);
        assert_eq!(*got.last().unwrap(), Percent::HUNDRED);
        assert_eq!(pcts(&ramp_weights(Percent::from_whole(5), five))[0], 1000);
        assert_eq!(
            pcts(&ramp_weights(
                Percent::from_whole(30),
                Percent::from_whole(40)
            )),
            vec![4000, 8000, 10_000]
        );
        assert!(ramp_weights(Percent::HUNDRED, five).is_empty());
        assert_eq!(
            pcts(&ramp_weights(
                Percent::from_basis_points(333),
                Percent::from_whole(25)
            )),
            vec![2500, 5000, 7500, 10_000]
        );
    }
}
