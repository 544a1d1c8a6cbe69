//! Tier policy: what a service's tier demands of its placement and rollout
//! (`policies/tiers.yaml`). Owns the schema and its own consistency checks;
//! applying the rules to a release belongs to `spec::resolve` and `policy`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::quantity::{Percent, Span};
use super::source::{InputError, InputErrors, Source};

/// The tier policy shipped with cutover, used when no `--policies` directory is given.
pub const BUILTIN_TIERS: &str = include_str!("../../../../policies/tiers.yaml");

/// `policies/tiers.yaml`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierPolicyFile {
    pub api_version: String,
    pub kind: String,
    pub tiers: BTreeMap<String, Tier>,
}

/// What one tier demands.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tier {
    /// Who the tier is for, shown in reports.
    #[serde(default)]
    pub description: String,
    pub placement: PlacementRules,
    pub manifest: ManifestRules,
    pub rollout: RolloutRules,
}

/// Where and how many instances must run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementRules {
    /// Distinct production clusters the release must run in.
    pub min_clusters: u32,
    /// Replicas of green in every production cluster.
    pub min_replicas_per_cluster: u32,
    pub zone_spread: ZoneSpreadRule,
    /// Capacity that must survive the loss of one zone; absent: not required.
    #[serde(default)]
    pub zone_loss: Option<ZoneLossRule>,
}

/// How pods must be spread across availability zones.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneSpreadRule {
    /// Largest allowed difference between the most and least loaded eligible zone.
    pub max_skew: u32,
    /// The `whenUnsatisfiable` the manifest's zone constraint must use.
    pub when_unsatisfiable: WhenUnsatisfiable,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenUnsatisfiable {
    DoNotSchedule,
    ScheduleAnyway,
}

/// Capacity left after losing the busiest zone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneLossRule {
    /// Ready green pods each cluster must keep when its busiest zone is lost.
    pub min_replicas_left: u32,
    /// Share of the fleet's green pods that must survive the loss of any one physical zone.
    pub min_fleet_capacity: Percent,
}

/// Checks on the manifest before anything is touched.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestRules {
    pub image_digest: Enforcement,
    pub readiness_probe: Enforcement,
    pub pod_disruption_budget: Enforcement,
}

/// How strictly a rule is applied.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// A violation refuses the release.
    Error,
    /// A violation is reported, the release goes on.
    Warn,
    Off,
}

/// The rollout the tier requires, with defaults and the bounds a release may move them within.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutRules {
    pub strategy: Strategy,
    pub canary: CanaryRules,
    pub ramp: RampRules,
    pub soak: Bounded<Span>,
    pub staging_verify: Bounded<Span>,
    pub bake: Bounded<Span>,
    pub progress_deadline: Bounded<Span>,
    pub later_clusters: LaterClusters,
    /// What happens when gates reach no verdict (no data, inconclusive) past
    /// the progress deadline: roll back (the default) or hold, shown as a hold.
    #[serde(default)]
    pub without_verdict: WithoutVerdict,
    /// Shorter timings for an undo (`cutover undo`), which brings back a
    /// version that completed before: each replaces the tier's default and
    /// lowers its minimum. Absent: an undo runs the full plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<UndoTimings>,
}

/// The timings an undo may run with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UndoTimings {
    #[serde(default)]
    pub canary_duration: Option<Span>,
    #[serde(default)]
    pub ramp_interval: Option<Span>,
    #[serde(default)]
    pub soak: Option<Span>,
    #[serde(default)]
    pub staging_verify: Option<Span>,
    #[serde(default)]
    pub bake: Option<Span>,
}

impl Bounded<Span> {
    /// These bounds with `undo` as the default and no minimum above it.
    pub fn for_undo(&self, undo: Option<Span>) -> Bounded<Span> {
        let Some(u) = undo else {
            return *self;
        };
        Bounded {
            default: u,
            min: self.min.map(|m| if u < m { u } else { m }),
            max: self.max,
        }
    }
}

/// What a release does when its gates stay without a verdict past the deadline.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WithoutVerdict {
    /// Roll back, naming the gate and what was missing.
    #[default]
    RollBack,
    /// Hold where it is until the gates decide or a person does; the hold is
    /// shown with its reason like any other.
    Hold,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    BlueGreen,
}

/// How clusters after the first production cluster take traffic.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LaterClusters {
    /// Straight to 100 % once green is placed.
    Cutover,
    /// The same ramp as the first production cluster.
    Ramp,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryRules {
    /// Canary weight as a share of the service's **total** traffic.
    pub weight: Bounded<Percent>,
    pub duration: Bounded<Span>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RampRules {
    /// Step as a share of the first production cluster's traffic.
    pub step: Bounded<Percent>,
    pub interval: Bounded<Span>,
}

/// A default and the range a release may choose within.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bounded<T> {
    pub default: T,
    #[serde(default)]
    pub min: Option<T>,
    #[serde(default)]
    pub max: Option<T>,
}

impl<T: PartialOrd + Copy + std::fmt::Display> Bounded<T> {
    /// The value a release gets: its own choice if within bounds, else the default.
    pub fn pick(&self, chosen: Option<T>) -> Result<T, String> {
        let Some(v) = chosen else {
            return Ok(self.default);
        };
        if let Some(min) = self.min
            && v < min
        {
            return Err(format!("{v} is below the tier's minimum of {min}"));
        }
        if let Some(max) = self.max
            && v > max
        {
            return Err(format!("{v} is above the tier's maximum of {max}"));
        }
        Ok(v)
    }

    fn check(&self) -> Result<(), String> {
        let d = self.default;
        match (self.min, self.max) {
            (Some(min), Some(max)) if min > max => Err(format!("min {min} is above max {max}")),
            (Some(min), _) if d < min => Err(format!("default {d} is below min {min}")),
            (_, Some(max)) if d > max => Err(format!("default {d} is above max {max}")),
            _ => Ok(()),
        }
    }
}

impl TierPolicyFile {
    /// Parses and checks a tier policy; every inconsistency is reported with its place.
    pub fn parse(file: &str, text: &str) -> Result<TierPolicyFile, InputErrors> {
        let src = Source::new(file, text);
        let policy: TierPolicyFile = src.decode().map_err(|e| InputErrors(vec![e]))?;
        let mut errors = Vec::new();
        if policy.api_version != super::API_VERSION {
            errors.push(src.error_at(
                "apiVersion",
                format!(
                    "expected {:?}, got {:?}",
                    super::API_VERSION,
                    policy.api_version
                ),
            ));
        }
        if policy.kind != "TierPolicy" {
            errors.push(src.error_at(
                "kind",
                format!("expected \"TierPolicy\", got {:?}", policy.kind),
            ));
        }
        if policy.tiers.is_empty() {
            errors.push(src.error_at("tiers", "at least one tier is required"));
        }
        for (name, tier) in &policy.tiers {
            tier.check(&src, &format!("tiers.{name}"), &mut errors);
        }
        if errors.is_empty() {
            Ok(policy)
        } else {
            Err(InputErrors(errors))
        }
    }

    pub fn builtin() -> TierPolicyFile {
        TierPolicyFile::parse("policies/tiers.yaml (built in)", BUILTIN_TIERS)
            .expect("the built-in tier policy is valid (checked by a test)")
    }

    /// The tier named `name`, or an error listing the known tiers.
    pub fn tier(&self, name: &str) -> Result<&Tier, String> {
        self.tiers.get(name).ok_or_else(|| {
            let known: Vec<_> = self.tiers.keys().map(String::as_str).collect();
            format!(
                "unknown tier {name:?}; the tier policy defines {}",
                known.join(", ")
            )
        })
    }
}

impl Tier {
    fn check(&self, src: &Source, at: &str, errors: &mut Vec<InputError>) {
        let p = &self.placement;
        if p.min_clusters == 0 {
            errors.push(src.error_at(&format!("{at}.placement.minClusters"), "must be at least 1"));
        }
        if p.min_replicas_per_cluster == 0 {
            errors.push(src.error_at(
                &format!("{at}.placement.minReplicasPerCluster"),
                "must be at least 1",
            ));
        }
        if p.zone_spread.max_skew == 0 {
            errors.push(src.error_at(
                &format!("{at}.placement.zoneSpread.maxSkew"),
                "must be at least 1",
            ));
        }
        if let Some(zl) = &p.zone_loss
            && zl.min_fleet_capacity > Percent::HUNDRED
        {
            errors.push(src.error_at(
                &format!("{at}.placement.zoneLoss.minFleetCapacity"),
                "must be at most 100%",
            ));
        }
        let r = &self.rollout;
        let bounded_spans = [
            ("canary.duration", &r.canary.duration),
            ("ramp.interval", &r.ramp.interval),
            ("soak", &r.soak),
            ("stagingVerify", &r.staging_verify),
            ("bake", &r.bake),
            ("progressDeadline", &r.progress_deadline),
        ];
        for (field, b) in bounded_spans {
            if let Err(e) = b.check() {
                errors.push(src.error_at(&format!("{at}.rollout.{field}"), e));
            }
        }
        for (field, b) in [
            ("canary.weight", &r.canary.weight),
            ("ramp.step", &r.ramp.step),
        ] {
            if let Err(e) = b.check() {
                errors.push(src.error_at(&format!("{at}.rollout.{field}"), e));
            }
            let too_big = [Some(b.default), b.min, b.max]
                .into_iter()
                .flatten()
                .any(|v| v > Percent::HUNDRED);
            let zero = b.default == Percent::ZERO;
            if too_big || zero {
                errors.push(src.error_at(
                    &format!("{at}.rollout.{field}"),
                    "weights must be above 0% and at most 100%",
                ));
            }
        }
        if r.progress_deadline.default.0.is_zero() {
            errors.push(src.error_at(
                &format!("{at}.rollout.progressDeadline"),
                "must be above zero",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_policy_states_the_tier1_rules() {
        let p = TierPolicyFile::builtin();
        let t1 = p.tier("tier-1").unwrap();
        assert_eq!(t1.placement.min_clusters, 2);
        assert_eq!(t1.placement.min_replicas_per_cluster, 3);
        assert_eq!(t1.placement.zone_spread.max_skew, 1);
        assert_eq!(
            t1.placement.zone_spread.when_unsatisfiable,
            WhenUnsatisfiable::DoNotSchedule
        );
        assert!(t1.placement.zone_loss.is_some());
        assert_eq!(t1.rollout.strategy, Strategy::BlueGreen);
        assert_eq!(t1.rollout.canary.weight.min, Some(Percent::from_whole(1)));
        assert_eq!(t1.rollout.canary.weight.max, Some(Percent::from_whole(5)));
        assert_eq!(t1.rollout.ramp.step.default, Percent::from_whole(5));
        assert_eq!(t1.rollout.ramp.interval.default, Span::from_mins(5));
        assert_eq!(t1.rollout.soak.default, Span::from_mins(30));
        assert_eq!(t1.rollout.soak.min, Some(Span::from_mins(30)));
        assert_eq!(t1.rollout.bake.default, Span::from_mins(120));
        assert_eq!(t1.manifest.image_digest, Enforcement::Error);
        assert_eq!(
            p.tier("tier-2").unwrap().manifest.image_digest,
            Enforcement::Warn
        );
        assert!(p.tier("tier-9").unwrap_err().contains("tier-1, tier-2"));
    }

    #[test]
    fn inconsistent_bounds_are_refused_with_their_place() {
        let text = BUILTIN_TIERS.replacen(
            "default: 30m\n        min: 30m",
            "default: 10m\n        min: 30m",
            1,
        );
        assert_ne!(text, BUILTIN_TIERS, "fixture must change the soak");
        let err = TierPolicyFile::parse("tiers.yaml", &text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("tiers.tier-1.rollout.soak"), "{msg}");
        assert!(msg.contains("default 10m is below min 30m"), "{msg}");
        assert!(msg.starts_with("tiers.yaml:"), "{msg}");
    }
}
