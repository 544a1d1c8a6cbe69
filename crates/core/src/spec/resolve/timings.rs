//! Timings and weights within the tier's bounds, and the gates' own rules.

use super::*;

pub(super) fn resolve_timings(
    spec: &ReleaseSpec,
    tier: &Tier,
    clusters: &[ResolvedCluster],
    out: &mut Vec<Finding>,
) -> Option<Timings> {
    let undo_rules;
    let r = match (&tier.rollout.undo, &spec.undo_of) {
        // An undo of the version it names runs the tier's undo timings.
        (Some(u), Some(of)) if of.version == spec.version => {
            let mut rules = tier.rollout.clone();
            rules.canary.duration = rules.canary.duration.for_undo(u.canary_duration);
            rules.ramp.interval = rules.ramp.interval.for_undo(u.ramp_interval);
            rules.soak = rules.soak.for_undo(u.soak);
            rules.staging_verify = rules.staging_verify.for_undo(u.staging_verify);
            rules.bake = rules.bake.for_undo(u.bake);
            undo_rules = rules;
            &undo_rules
        }
        _ => &tier.rollout,
    };
    let p = &spec.plan;
    let before = out.len();
    let tier_name = &spec.tier;
    let mut pick_span = |b: &crate::spec::policy::Bounded<Span>, v: Option<Span>, field: &str| {
        b.pick(v).unwrap_or_else(|e| {
            out.push(Finding::policy(
                field,
                format!(
                    "{e} for {tier_name}; raise it or remove it to get the tier's default of {}",
                    b.default
                ),
            ));
            b.default
        })
    };
    let canary = p.canary.clone().unwrap_or_default();
    let ramp = p.ramp.clone().unwrap_or_default();
    let canary_duration = pick_span(
        &r.canary.duration,
        canary.duration,
        "spec.plan.canary.duration",
    );
    let ramp_interval = pick_span(&r.ramp.interval, ramp.interval, "spec.plan.ramp.interval");
    let soak = pick_span(&r.soak, p.soak, "spec.plan.soak");
    let staging_verify = pick_span(
        &r.staging_verify,
        p.staging_verify,
        "spec.plan.stagingVerify",
    );
    let bake = pick_span(&r.bake, p.bake, "spec.plan.bake");
    let progress_deadline = pick_span(
        &r.progress_deadline,
        p.progress_deadline,
        "spec.plan.progressDeadline",
    );
    let mut pick_weight =
        |b: &crate::spec::policy::Bounded<Percent>, v: Option<Percent>, field: &str, what: &str| {
            if v.is_some_and(|w| w == Percent::ZERO || w > Percent::HUNDRED) {
                out.push(Finding::input(
                    field,
                    format!("{what} must be above 0% and at most 100%"),
                ));
                return b.default;
            }
            b.pick(v).unwrap_or_else(|e| {
                out.push(Finding::policy(
                    field,
                    format!("{what} of {e} for {tier_name}"),
                ));
                b.default
            })
        };
    let canary_weight = pick_weight(
        &r.canary.weight,
        canary.weight,
        "spec.plan.canary.weight",
        "a canary (share of total traffic)",
    );
    let ramp_step = pick_weight(
        &r.ramp.step,
        ramp.step,
        "spec.plan.ramp.step",
        "a ramp step",
    );
    if let Some(first) = clusters.iter().find(|c| c.role == ClusterRole::Production) {
        match canary_weight.within(first.traffic_share) {
            None => out.push(Finding::input(
                "spec.clusters",
                format!("{} is the first production cluster but carries 0% of traffic; the canary needs traffic", first.name),
            )),
            Some(w) if w > Percent::HUNDRED => out.push(Finding::input(
                "spec.plan.canary.weight",
                format!(
                    "a canary of {canary_weight} of total traffic is more than {} carries ({}); lower the canary or start with a larger cluster",
                    first.name, first.traffic_share
                ),
            )),
            Some(_) => {}
        }
    }
    if out.len() != before {
        return None;
    }
    Some(Timings {
        canary_weight,
        canary_duration,
        ramp_step,
        ramp_interval,
        soak,
        staging_verify,
        bake,
        progress_deadline,
        later_clusters: p.later_clusters.unwrap_or(r.later_clusters),
    })
}

pub(super) fn check_gates(gates: &[crate::spec::gates::MetricGate], out: &mut Vec<Finding>) {
    let mut names = BTreeSet::new();
    for (i, g) in gates.iter().enumerate() {
        let at = format!("spec.gates[{i}]");
        if !names.insert(g.name.as_str()) {
            out.push(Finding::input(
                format!("{at}.name"),
                format!("gate {:?} is listed twice", g.name),
            ));
        }
        let p = &g.provider;
        let n = [
            p.prometheus.is_some(),
            p.scrape.is_some(),
            p.cluster_health.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n != 1 {
            out.push(Finding::input(
                format!("{at}.provider"),
                "set exactly one of `prometheus`, `scrape` or `clusterHealth`",
            ));
        }
        if p.cluster_health.is_none() && g.max.is_none() && g.min.is_none() {
            out.push(Finding::input(
                at.clone(),
                "a metric needs a threshold: set `max`, `min` or both",
            ));
        }
        if let (Some(lo), Some(hi)) = (g.min, g.max)
            && lo > hi
        {
            out.push(Finding::input(
                format!("{at}.min"),
                format!("min {lo} is above max {hi}"),
            ));
        }
        if g.interval.as_duration().is_zero() {
            out.push(Finding::input(
                format!("{at}.interval"),
                "must be above zero",
            ));
        }
        if let Some(w) = g.window
            && w.failures >= w.of
        {
            out.push(Finding::input(
                format!("{at}.window"),
                format!(
                    "the metric fails when more than `failures` of the last `of` measurements fail: \
                     `failures` ({}) must be below `of` ({})",
                    w.failures, w.of
                ),
            ));
        }
        check_numbers(g, &at, out);
        check_guards(g, &at, out);
        if let Some(s) = &p.scrape
            && s.measure == crate::spec::gates::ScrapeMeasure::Quantile
            && !s.quantile.is_some_and(|q| q > 0.0 && q < 1.0)
        {
            out.push(Finding::input(
                format!("{at}.provider.scrape.quantile"),
                "set a quantile between 0 and 1, e.g. 0.99",
            ));
        }
        if let Some(q) = &p.prometheus
            && q.query.trim().is_empty()
        {
            out.push(Finding::input(
                format!("{at}.provider.prometheus.query"),
                "the query is empty",
            ));
        }
    }
}

/// Every numeric threshold finite and in its range: a NaN or infinite `max`
/// makes a gate that can never fail, a NaN `minRequestRate` a guard that is off.
fn check_numbers(g: &crate::spec::gates::MetricGate, at: &str, out: &mut Vec<Finding>) {
    let mut number = |field: &str, v: Option<f64>, non_negative: bool| {
        let Some(v) = v else { return };
        if !v.is_finite() {
            out.push(Finding::input(
                format!("{at}.{field}"),
                format!(
                    "{v} is not a number a measurement can be judged against: give a finite value"
                ),
            ));
        } else if non_negative && v < 0.0 {
            out.push(Finding::input(
                format!("{at}.{field}"),
                format!("{v} is below 0: give 0 or more"),
            ));
        }
    };
    number("max", g.max, false);
    number("min", g.min, false);
    number("minRequestRate", g.min_request_rate, true);
    if let Some(c) = &g.compare_to_blue {
        number("compareToBlue.relative", Some(c.relative), true);
        number("compareToBlue.absolute", Some(c.absolute), true);
    }
}

/// Guards and comparisons a gate's provider can evaluate; one it cannot is
/// refused, never skipped.
fn check_guards(g: &crate::spec::gates::MetricGate, at: &str, out: &mut Vec<Finding>) {
    let p = &g.provider;
    if g.min_request_rate.is_some() {
        if let Some(q) = &p.prometheus
            && q.request_rate_query
                .as_deref()
                .is_none_or(|r| r.trim().is_empty())
        {
            out.push(Finding::input(
                format!("{at}.minRequestRate"),
                "the guard needs the request rate measured: set provider.prometheus.requestRateQuery \
                 (e.g. sum(rate(http_requests_total[1m]))), or remove minRequestRate",
            ));
        }
        if p.cluster_health.is_some() {
            out.push(Finding::input(
                format!("{at}.minRequestRate"),
                "clusterHealth measures nodes, not requests: remove minRequestRate",
            ));
        }
    }
    if g.compare_to_blue.is_some() {
        let provider = if p.scrape.is_some() {
            Some("scrape")
        } else if p.cluster_health.is_some() {
            Some("clusterHealth")
        } else {
            None
        };
        if let Some(provider) = provider {
            out.push(Finding::input(
                format!("{at}.compareToBlue"),
                format!(
                    "a {provider} gate measures green only: compare with blue through a prometheus gate, \
                     or remove compareToBlue"
                ),
            ));
        }
        if g.group_by.is_some() {
            out.push(Finding::input(
                format!("{at}.compareToBlue"),
                "groupBy judges each group on its own and has no blue group to compare with: \
                 remove compareToBlue or groupBy",
            ));
        }
    }
}
