//! `cutover check`: every tier rule with pass/fail, the numbers behind it and
//! what to change; `--live` also reads the clusters: zones with schedulable
//! nodes, the serving version's placement, and whether two entries are one
//! cluster. Exit 0 when all hold, 5 when any fails.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::Output;
use super::connect::connect;
use super::exit::{CliResult, Exit};
use super::load::Inputs;
use crate::fleet::ClusterHandle;
use crate::fleet::live::LiveCluster;
use crate::policy::placement;
use crate::policy::rules::{self, RuleResult, RuleVerdict};
use crate::spec::{ResolvedCluster, ResolvedRelease};

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Also check the clusters as they are now.
    #[arg(long)]
    pub live: bool,
    /// Kubeconfig holding the fleet's contexts (with --live).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Judge the freeze windows at this time (RFC 3339, e.g.
    /// 2026-12-24T18:00:00Z) instead of now on the fleet's clock.
    #[arg(long, value_name = "TIME")]
    pub at: Option<jiff::Timestamp>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

#[derive(Serialize)]
struct Report<'a> {
    release: &'a str,
    tier: &'a str,
    passes: bool,
    rules: &'a [RuleResult],
}

pub async fn run(args: &CheckArgs) -> CliResult {
    let loaded = args.inputs.load()?;
    let rel = &loaded.release;
    let mut results = rules::check(rel).rules;
    let at = args
        .at
        .unwrap_or_else(|| super::connect::clock_of(&loaded.fleet).now());
    results.push(windows_at(rel, &loaded.windows, at));
    if args.live {
        let conn = connect(
            loaded.fleet.clone(),
            args.kubeconfig.as_deref(),
            &rel.namespace,
        )
        .await?;
        let mut uids: BTreeMap<String, String> = BTreeMap::new();
        let mut placements = Vec::new();
        for c in &rel.clusters {
            let handle = conn.clients.get(&c.name)?;
            match live(handle, rel, c).await {
                Ok((found, uid, report)) => {
                    results.extend(found);
                    if let (Some(r), crate::spec::ClusterRole::Production) = (report, c.role) {
                        placements.push((c.name.clone(), r));
                    }
                    uids.insert(c.name.clone(), uid);
                }
                Err(e) => results.push(RuleResult {
                    rule: "reachable",
                    verdict: RuleVerdict::Fail,
                    detail: format!("{}: {e}", c.name),
                    fix: Some(
                        "check the kubeconfig context and that the API server answers".into(),
                    ),
                }),
            }
        }
        if let Some(rule) = &rel.tier.placement.zone_loss {
            let pairs: Vec<_> = placements
                .iter()
                .filter_map(|(name, r)| loaded.fleet.cluster(name).map(|fc| (fc, r)))
                .collect();
            if let Some((zone, left)) = placement::fleet_zone_loss(&pairs) {
                let ok = left >= rule.min_fleet_capacity;
                results.push(RuleResult {
                    rule: "fleet-zone-loss",
                    verdict: if ok { RuleVerdict::Pass } else { RuleVerdict::Fail },
                    detail: format!(
                        "losing physical zone {zone} would leave {left} of the fleet's serving pods; {} requires {}",
                        rel.tier_name, rule.min_fleet_capacity
                    ),
                    fix: (!ok).then(|| "spread the clusters over more independent zones, or add replicas".into()),
                });
            }
        }
        let same = crate::policy::same_clusters(&uids);
        results.push(RuleResult {
            rule: "distinct-clusters",
            verdict: if same.is_empty() {
                RuleVerdict::Pass
            } else {
                RuleVerdict::Fail
            },
            detail: if same.is_empty() {
                "every cluster entry reaches a different cluster (kube-system UIDs differ)".into()
            } else {
                format!("entries reach the same cluster: {}", same.join(", "))
            },
            fix: (!same.is_empty()).then(|| "point each entry at its own cluster".into()),
        });
    }
    let passes = results.iter().all(|r| r.verdict != RuleVerdict::Fail);
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            let report = Report {
                release: &rel.name,
                tier: &rel.tier_name,
                passes,
                rules: &results,
            };
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        }
        Output::Text => {
            writeln!(out, "Release {} ({})", rel.name, rel.tier_name)?;
            for r in &results {
                let mark = match r.verdict {
                    RuleVerdict::Pass => "pass",
                    RuleVerdict::Warn => "WARN",
                    RuleVerdict::Fail => "FAIL",
                };
                writeln!(out, "  {mark}  {:<24} {}", r.rule, r.detail)?;
                if let Some(fix) = &r.fix {
                    writeln!(out, "        {:<24} fix: {fix}", "")?;
                }
            }
            writeln!(
                out,
                "{}",
                if passes {
                    "every rule holds"
                } else {
                    "some rules fail: the release would be refused"
                }
            )?;
        }
    }
    Ok(if passes { Exit::Ok } else { Exit::Policy })
}

/// Live findings for one cluster, and the UID that identifies the cluster.
async fn live(
    c: &ClusterHandle,
    rel: &ResolvedRelease,
    target: &ResolvedCluster,
) -> crate::fleet::Result<(Vec<RuleResult>, String, Option<placement::PlacementReport>)> {
    let LiveCluster {
        uid,
        nodes,
        serving,
    } = crate::fleet::live::read(c, rel).await?;
    let mut out = Vec::new();
    out.extend(prerequisites(c).await);
    let pod = rel.template.spec.clone().unwrap_or_default();
    let zones_ok: Vec<_> = target
        .zones
        .iter()
        .filter(|z| {
            nodes.iter().any(|n| {
                n.ready && placement::can_host(&pod, n) && n.zone.as_deref() == Some(z.as_str())
            })
        })
        .collect();
    // Nodes in zones the fleet file does not declare: not capacity, not spread.
    let mut undeclared: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.zone.clone())
        .filter(|z| !target.zones.contains(z))
        .collect();
    undeclared.sort();
    undeclared.dedup();
    if !undeclared.is_empty() {
        out.push(RuleResult {
            rule: "live-undeclared-zones",
            verdict: RuleVerdict::Warn,
            detail: format!(
                "{}: nodes in zone {} that the fleet file does not declare for this cluster; they never count toward spread or zone loss",
                c.name,
                undeclared.join(", ")
            ),
            fix: Some(format!(
                "declare the zone under clusters[{}].zones in the fleet file if green should spread there",
                c.name
            )),
        });
    }
    let missing: Vec<_> = target
        .zones
        .iter()
        .filter(|z| !zones_ok.contains(z))
        .cloned()
        .collect();
    out.push(RuleResult {
        rule: "live-zones",
        verdict: if missing.is_empty() { RuleVerdict::Pass } else { RuleVerdict::Fail },
        detail: if missing.is_empty() {
            format!("{}: every declared zone has ready schedulable nodes ({})", c.name, target.zones.join(", "))
        } else {
            format!("{}: zone {} has no ready node green can be scheduled on", c.name, missing.join(", "))
        },
        fix: (!missing.is_empty()).then(|| "restore the zone's nodes (down, cordoned or tainted), or make green's tolerations, nodeSelector and node affinity allow them".into()),
    });
    let mut kept = None;
    if let Some((w, pods)) = serving {
        let report = placement::evaluate(
            &rel.tier.placement,
            &target.zones,
            &rel.template.spec.clone().unwrap_or_default(),
            w.replicas,
            &nodes,
            &pods,
        );
        out.push(RuleResult {
            rule: "live-placement",
            verdict: if report.satisfied() {
                RuleVerdict::Pass
            } else {
                RuleVerdict::Fail
            },
            detail: format!(
                "{}: {} {} — {}",
                c.name,
                rel.app,
                w.version,
                report.summary()
            ),
            fix: (!report.satisfied())
                .then(|| "wait for pods to reschedule, or add capacity in the empty zone".into()),
        });
        kept = Some(report);
    } else {
        out.push(RuleResult {
            rule: "live-placement",
            verdict: RuleVerdict::Pass,
            detail: format!(
                "{}: no version of {} runs yet (first install)",
                c.name, rel.app
            ),
            fix: None,
        });
    }
    Ok((out, uid, kept))
}

/// Whether a scheduled freeze window holds the release at `at`: a warning,
/// as a window holds a release rather than breaking a tier rule.
fn windows_at(
    rel: &ResolvedRelease,
    windows: &[crate::freeze::Window],
    at: jiff::Timestamp,
) -> RuleResult {
    let applying = crate::freeze::applicable(rel, &[], windows, at);
    if applying.is_empty() {
        return RuleResult {
            rule: "freeze-windows",
            verdict: RuleVerdict::Pass,
            detail: format!(
                "no scheduled freeze window applies at {at} ({} window(s) read)",
                windows.len()
            ),
            fix: None,
        };
    }
    let ids: Vec<String> = applying.iter().map(|f| f.id.clone()).collect();
    RuleResult {
        rule: "freeze-windows",
        verdict: RuleVerdict::Warn,
        detail: format!(
            "{} applies at {at}: the release would not start (exit 4) and would hold there",
            ids.join(", ")
        ),
        fix: Some(format!(
            "run outside the window, or override it with a reason: --override-freeze {}",
            ids.join(" --override-freeze ")
        )),
    }
}

/// What `run` needs in a cluster before it can start: cutover's CRDs (a
/// release cannot prove it is unfrozen without them). Missing ones fail with
/// the command that fixes it.
async fn prerequisites(c: &ClusterHandle) -> Vec<RuleResult> {
    use kube::api::{Api, ListParams};
    let mut out = Vec::new();
    let freezes: Api<crate::freeze::DeployFreeze> = Api::all(c.client.clone());
    let crds = match freezes.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(format!(
            "{}: the DeployFreeze CRD is not installed, so a release there cannot prove it is unfrozen and holds",
            c.name
        )),
        Err(e) => Err(format!(
            "{}: cannot list deployfreezes: {}",
            c.name,
            crate::fleet::Error::api(&c.name)(e)
        )),
    };
    out.push(match crds {
        Ok(()) => RuleResult {
            rule: "live-crds",
            verdict: RuleVerdict::Pass,
            detail: format!("{}: cutover's CRDs are installed", c.name),
            fix: None,
        },
        Err(detail) => RuleResult {
            rule: "live-crds",
            verdict: RuleVerdict::Fail,
            detail,
            fix: Some(
                "install them: kubectl apply -k deploy/ (or cutover crd | kubectl apply -f -)"
                    .into(),
            ),
        },
    });
    out
}
