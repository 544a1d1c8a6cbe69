//! The tier's rules applied to a release before anything is touched: cluster
//! and replica counts, the zone spread constraint, the disruption budget,
//! readiness probes, image digests and the rollout strategy. Pure.

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use crate::labels;
use crate::spec::policy::{Enforcement, Strategy, WhenUnsatisfiable};
use crate::spec::{ClusterRole, ResolvedRelease};

/// The result of one rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleResult {
    /// Short name of the rule, e.g. `min-clusters`.
    pub rule: &'static str,
    pub verdict: RuleVerdict,
    /// The numbers behind the verdict.
    pub detail: String,
    /// What to change, when it fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleVerdict {
    Pass,
    Warn,
    Fail,
}

/// Every static rule of the release's tier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StaticReport {
    pub rules: Vec<RuleResult>,
}

impl StaticReport {
    pub fn failures(&self) -> impl Iterator<Item = &RuleResult> {
        self.rules.iter().filter(|r| r.verdict == RuleVerdict::Fail)
    }

    pub fn passes(&self) -> bool {
        self.failures().next().is_none()
    }

    /// One line naming every failing rule, for statuses and errors.
    pub fn failure_summary(&self) -> String {
        self.failures()
            .map(|r| {
                format!(
                    "{}: {}{}",
                    r.rule,
                    r.detail,
                    r.fix
                        .as_ref()
                        .map(|f| format!(" ({f})"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn result(
    rule: &'static str,
    ok: bool,
    enforcement: Enforcement,
    detail: String,
    fix: &str,
) -> RuleResult {
    let verdict = match (ok, enforcement) {
        (true, _) | (false, Enforcement::Off) => RuleVerdict::Pass,
        (false, Enforcement::Warn) => RuleVerdict::Warn,
        (false, Enforcement::Error) => RuleVerdict::Fail,
    };
    RuleResult {
        rule,
        verdict,
        detail,
        fix: (verdict != RuleVerdict::Pass).then(|| fix.to_string()),
    }
}

/// Why the release may not run under its tier's static rules, if it may
/// not: `{name} breaks {tier} policy{note}: {failing rules}`.
pub fn refusal(rel: &ResolvedRelease, note: &str) -> Option<String> {
    let report = check(rel);
    (!report.passes()).then(|| {
        format!(
            "{} breaks {} policy{note}: {}",
            rel.name,
            rel.tier_name,
            report.failure_summary()
        )
    })
}

/// Checks the release against its tier's static rules.
pub fn check(rel: &ResolvedRelease) -> StaticReport {
    let tier = &rel.tier;
    let p = &tier.placement;
    let m = &tier.manifest;
    let mut rules = Vec::new();
    let production: Vec<_> = rel
        .clusters
        .iter()
        .filter(|c| c.role == ClusterRole::Production)
        .collect();
    // Two entries that reach the same kubeconfig context are one cluster.
    let mut contexts: Vec<_> = production
        .iter()
        .map(|c| c.context.clone().unwrap_or_else(|| c.name.clone()))
        .collect();
    contexts.sort();
    contexts.dedup();
    let names: Vec<_> = production.iter().map(|c| c.name.as_str()).collect();
    rules.push(result(
        "min-clusters",
        contexts.len() as u32 >= p.min_clusters,
        Enforcement::Error,
        format!(
            "{} distinct production cluster(s) ({}); {} requires {}",
            contexts.len(),
            names.join(", "),
            rel.tier_name,
            p.min_clusters
        ),
        "add production clusters in separate failure domains to spec.clusters",
    ));
    let short: Vec<_> = production
        .iter()
        .filter(|c| c.replicas < p.min_replicas_per_cluster)
        .map(|c| format!("{}={}", c.name, c.replicas))
        .collect();
    rules.push(result(
        "min-replicas",
        short.is_empty(),
        Enforcement::Error,
        if short.is_empty() {
            format!(
                "every production cluster runs at least {} replicas",
                p.min_replicas_per_cluster
            )
        } else {
            format!(
                "{} below the {} replicas per cluster {} requires",
                short.join(", "),
                p.min_replicas_per_cluster,
                rel.tier_name
            )
        },
        "raise spec.replicas (or the cluster's replicas)",
    ));
    rules.push(zone_spread(rel));
    let pod = rel.template.spec.clone().unwrap_or_default();
    let no_probe: Vec<_> = pod
        .containers
        .iter()
        .filter(|c| c.readiness_probe.is_none())
        .map(|c| c.name.clone())
        .collect();
    rules.push(result(
        "readiness-probe",
        no_probe.is_empty(),
        m.readiness_probe,
        if no_probe.is_empty() {
            "every container has a readiness probe".into()
        } else {
            format!("no readiness probe on {}", no_probe.join(", "))
        },
        "add a readinessProbe to every container: traffic must only reach ready pods",
    ));
    let unpinned: Vec<_> = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .filter(|c| !c.image.as_deref().unwrap_or_default().contains("@sha256:"))
        .map(|c| format!("{}={}", c.name, c.image.as_deref().unwrap_or_default()))
        .collect();
    rules.push(result(
        "image-digest",
        unpinned.is_empty(),
        m.image_digest,
        if unpinned.is_empty() {
            "every image is pinned by digest".into()
        } else {
            format!("not pinned by digest: {}", unpinned.join(", "))
        },
        "pin images as name@sha256:<digest> (spec.images) so every cluster runs the same bits",
    ));
    rules.push(disruption_budget(rel));
    rules.push(result(
        "strategy",
        tier.rollout.strategy == Strategy::BlueGreen,
        Enforcement::Error,
        "blue-green, canary first".into(),
        "the tier must require blue-green",
    ));
    StaticReport { rules }
}

fn zone_spread(rel: &ResolvedRelease) -> RuleResult {
    let rule = &rel.tier.placement.zone_spread;
    let constraints: Vec<TopologySpreadConstraint> = rel
        .template
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.clone())
        .unwrap_or_default();
    let fix = format!(
        "add a topologySpreadConstraint on {} with maxSkew {}, whenUnsatisfiable {:?} and matchLabelKeys [pod-template-hash]",
        labels::ZONE,
        rule.max_skew,
        rule.when_unsatisfiable
    );
    let Some(c) = constraints.iter().find(|c| c.topology_key == labels::ZONE) else {
        return result(
            "zone-spread",
            false,
            Enforcement::Error,
            format!("no spread constraint on {}", labels::ZONE),
            &fix,
        );
    };
    let mut problems = Vec::new();
    if c.max_skew as u32 > rule.max_skew {
        problems.push(format!("maxSkew {} above {}", c.max_skew, rule.max_skew));
    }
    if rule.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule
        && c.when_unsatisfiable != "DoNotSchedule"
    {
        problems.push(format!(
            "whenUnsatisfiable {} where {} requires DoNotSchedule",
            c.when_unsatisfiable, rel.tier_name
        ));
    }
    let hash_key = c
        .match_label_keys
        .iter()
        .flatten()
        .any(|k| k == "pod-template-hash" || k == labels::VERSION);
    let selects_version = c
        .label_selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .is_some_and(|m| m.contains_key(labels::VERSION));
    if !hash_key && !selects_version {
        problems.push(
            "it counts old and new revisions together; add matchLabelKeys: [pod-template-hash]"
                .into(),
        );
    }
    let template_labels = rel
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let selects_pods = c
        .label_selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .is_none_or(|m| {
            m.iter().all(|(k, v)| {
                template_labels.get(k) == Some(v) || k == labels::VERSION || k == labels::APP
            })
        });
    if !selects_pods {
        problems.push("its labelSelector does not select the workload's own pods".into());
    }
    let ok = problems.is_empty();
    let detail = if ok {
        format!(
            "{} maxSkew {} {} counting only the new revision",
            labels::ZONE,
            c.max_skew,
            c.when_unsatisfiable
        )
    } else {
        problems.join("; ")
    };
    result("zone-spread", ok, Enforcement::Error, detail, &fix)
}

fn disruption_budget(rel: &ResolvedRelease) -> RuleResult {
    let enforcement = rel.tier.manifest.pod_disruption_budget;
    let fix =
        "set spec.disruptionBudget.maxUnavailable to 1 (or minAvailable below the replica count)";
    let Some(b) = &rel.disruption_budget else {
        return result(
            "disruption-budget",
            false,
            enforcement,
            "no disruption budget".into(),
            fix,
        );
    };
    let min_replicas = rel.clusters.iter().map(|c| c.replicas).min().unwrap_or(0);
    let blocks_all = match (&b.min_available, &b.max_unavailable) {
        (_, Some(IntOrString::Int(0))) => true,
        (_, Some(IntOrString::String(s))) if s.trim() == "0%" => true,
        (Some(IntOrString::Int(n)), _) => *n >= min_replicas as i32,
        (Some(IntOrString::String(s)), _) => s.trim() == "100%",
        _ => false,
    };
    let detail = if blocks_all {
        "the budget allows no voluntary disruption: node drains would hang".to_string()
    } else {
        let show = |v: &Option<IntOrString>| match v {
            Some(IntOrString::Int(n)) => n.to_string(),
            Some(IntOrString::String(s)) => s.clone(),
            None => "-".into(),
        };
        format!(
            "minAvailable {}, maxUnavailable {}",
            show(&b.min_available),
            show(&b.max_unavailable)
        )
    };
    result("disruption-budget", !blocks_all, enforcement, detail, fix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::release::ReleaseDocument;
    use crate::spec::{Fleet, Source, TierPolicyFile};

    fn rel(edit: impl Fn(&mut ReleaseDocument)) -> ResolvedRelease {
        let mut doc: ReleaseDocument = Source::new(
            "r",
            include_str!("../../../../examples/checkout/release.yaml"),
        )
        .decode()
        .unwrap();
        edit(&mut doc);
        let fleet = Fleet::parse(
            "f",
            include_str!("../../../../examples/checkout/fleet.yaml"),
        )
        .unwrap();
        ResolvedRelease::resolve(
            "checkout",
            None,
            &doc.spec,
            &fleet,
            &TierPolicyFile::builtin(),
        )
        .unwrap()
    }

    fn verdict(r: &StaticReport, rule: &str) -> RuleVerdict {
        r.rules.iter().find(|x| x.rule == rule).unwrap().verdict
    }

    #[test]
    fn the_example_passes_every_rule() {
        let r = check(&rel(|_| {}));
        assert!(r.passes(), "{}", r.failure_summary());
    }

    #[test]
    fn each_rule_fails_on_its_own() {
        type Edit = Box<dyn Fn(&mut ReleaseDocument)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "min-clusters",
                Box::new(|d| d.spec.clusters.retain(|c| c.name != "prod-b")),
            ),
            ("min-replicas", Box::new(|d| d.spec.replicas = 2)),
            (
                "zone-spread",
                Box::new(|d| {
                    d.spec
                        .workload
                        .template
                        .as_mut()
                        .unwrap()
                        .spec
                        .as_mut()
                        .unwrap()
                        .topology_spread_constraints = None
                }),
            ),
            (
                "zone-spread",
                Box::new(|d| {
                    let c = &mut d
                        .spec
                        .workload
                        .template
                        .as_mut()
                        .unwrap()
                        .spec
                        .as_mut()
                        .unwrap()
                        .topology_spread_constraints
                        .as_mut()
                        .unwrap()[0];
                    c.match_label_keys = None;
                }),
            ),
            (
                "zone-spread",
                Box::new(|d| {
                    let c = &mut d
                        .spec
                        .workload
                        .template
                        .as_mut()
                        .unwrap()
                        .spec
                        .as_mut()
                        .unwrap()
                        .topology_spread_constraints
                        .as_mut()
                        .unwrap()[0];
                    c.when_unsatisfiable = "ScheduleAnyway".into();
                }),
            ),
            (
                "readiness-probe",
                Box::new(|d| {
                    d.spec
                        .workload
                        .template
                        .as_mut()
                        .unwrap()
                        .spec
                        .as_mut()
                        .unwrap()
                        .containers[0]
                        .readiness_probe = None
                }),
            ),
            ("image-digest", Box::new(|d| d.spec.images.clear())),
            (
                "disruption-budget",
                Box::new(|d| d.spec.disruption_budget = None),
            ),
            (
                "disruption-budget",
                Box::new(|d| {
                    d.spec.disruption_budget.as_mut().unwrap().max_unavailable =
                        Some(IntOrString::Int(0))
                }),
            ),
        ];
        for (rule, edit) in cases {
            let r = check(&rel(edit));
            assert_eq!(
                verdict(&r, rule),
                RuleVerdict::Fail,
                "{rule}: {:?}",
                r.rules
            );
            assert_eq!(
                r.failures().count(),
                1,
                "{rule} fails alone: {}",
                r.failure_summary()
            );
            assert!(r.failures().all(|f| f.fix.is_some()));
        }
    }

    #[test]
    fn tier2_only_warns_about_digests() {
        let r = check(&rel(|d| {
            d.spec.tier = "tier-2".into();
            d.spec.images.clear();
        }));
        assert_eq!(verdict(&r, "image-digest"), RuleVerdict::Warn);
        assert!(r.passes());
    }

    #[test]
    fn two_entries_on_one_context_count_once() {
        let mut fleet = Fleet::parse(
            "f",
            include_str!("../../../../examples/checkout/fleet.yaml"),
        )
        .unwrap();
        fleet.clusters[2].context = fleet.clusters[1].context.clone();
        let doc: ReleaseDocument = Source::new(
            "r",
            include_str!("../../../../examples/checkout/release.yaml"),
        )
        .decode()
        .unwrap();
        let rel = ResolvedRelease::resolve(
            "checkout",
            None,
            &doc.spec,
            &fleet,
            &TierPolicyFile::builtin(),
        )
        .unwrap();
        assert_eq!(verdict(&check(&rel), "min-clusters"), RuleVerdict::Fail);
    }
}
