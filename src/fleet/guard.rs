//! The applier's last line of defence, independent of the engine: whatever
//! the engine decided, no action scales to zero, shrinks below the tier's
//! minimum, or deletes a workload that the release's route (or Service)
//! sends traffic to. Scaling to zero and deleting are checked against the
//! route as the API server has it at that moment (the applier reads it),
//! shrinking against the watch. A refusal is a defect: the action is not
//! carried out and the release holds, saying why.

use serde_json::Value;

use super::workload::{Colour, SlotWorkload, Slots};
use crate::engine::Action;
use crate::spec::{ResolvedCluster, ResolvedRelease, RouterKind};

/// Why `action` would take traffic away from what serves, if it would.
/// `route` is the release's route (or, for the replica-ratio router, the
/// app's Service), read afresh for a destructive action; `None` when there
/// is none.
pub fn unsafe_because(
    action: &Action,
    rel: &ResolvedRelease,
    target: &ResolvedCluster,
    slots: &Slots,
    route: Option<&Value>,
) -> Option<String> {
    let serves = |colour: Colour, workload: &Option<SlotWorkload>| {
        let runs_pods = workload.as_ref().is_some_and(|w| w.replicas > 0);
        route.is_some_and(|r| match target.router.kind {
            RouterKind::GatewayHttpRoute => super::router::sends_to(r, &rel.app, colour),
            RouterKind::ReplicaRatio => {
                super::replica_ratio::sends_to(r, &rel.app, colour, runs_pods)
            }
        })
    };
    let cluster = &target.name;
    let what = |w: &Option<SlotWorkload>, colour: Colour| {
        w.as_ref()
            .map(|w| format!("{} ({} {})", w.name, rel.app, w.version))
            .unwrap_or_else(|| format!("the {colour} slot"))
    };
    match action {
        Action::ScaleDownGreen { .. } if serves(slots.green, &slots.green_workload) => {
            Some(format!(
                "{cluster}: scaling {} to zero while {} sends it traffic",
                what(&slots.green_workload, slots.green),
                target.router.route
            ))
        }
        Action::DeleteBlue { .. } if serves(slots.green.other(), &slots.blue_workload) => {
            Some(format!(
                "{cluster}: deleting {} while {} sends it traffic",
                what(&slots.blue_workload, slots.green.other()),
                target.router.route
            ))
        }
        Action::DeployGreen { replicas, .. }
            if *replicas < rel.tier.placement.min_replicas_per_cluster
                && serves(slots.green, &slots.green_workload) =>
        {
            Some(format!(
                "{cluster}: shrinking {} to {replicas}, below the {} replicas {} requires, while {} sends it traffic",
                what(&slots.green_workload, slots.green),
                rel.tier.placement.min_replicas_per_cluster,
                rel.tier_name,
                target.router.route
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use crate::spec::release::ReleaseDocument;
    use crate::spec::{Fleet, Source, TierPolicyFile};

    fn mk_release() -> ResolvedRelease {
        let fleet = Fleet::parse("f", include_str!("../../examples/checkout/fleet.yaml")).unwrap();
        example_release(&fleet)
    }

    /// The example release (examples/checkout/release.yaml) resolved against `fleet`.
    pub(crate) fn example_release(fleet: &Fleet) -> ResolvedRelease {
        let text = include_str!("../../examples/checkout/release.yaml");
        let doc: ReleaseDocument = Source::new("release.yaml", text).decode().unwrap();
        ResolvedRelease::resolve(
            "checkout",
            None,
            &doc.spec,
            fleet,
            &TierPolicyFile::builtin(),
        )
        .unwrap()
    }

    fn mk_slots(green: Colour) -> Slots {
        let w = |colour: Colour, version: &str| SlotWorkload {
            name: format!("checkout-{colour}"),
            uid: None,
            colour,
            version: version.into(),
            replicas: 6,
            available: 6,
            managed: true,
        };
        Slots {
            green,
            green_workload: Some(w(green, "2.14.0")),
            blue_workload: Some(w(green.other(), "2.13.0")),
        }
    }

    fn mk_route(blue: u64, green: u64) -> Value {
        json!({"spec": {"rules": [{"backendRefs": [
            {"name": "checkout-blue", "port": 80, "weight": blue},
            {"name": "checkout-green", "port": 80, "weight": green},
        ]}]}})
    }

    #[test]
    fn guard_table() {
        let rel = mk_release();
        let target = rel.cluster("prod-a").unwrap();
        let scale_down = Action::ScaleDownGreen {
            cluster: "prod-a".into(),
        };
        let delete = Action::DeleteBlue {
            cluster: "prod-a".into(),
        };
        let shrink = Action::DeployGreen {
            cluster: "prod-a".into(),
            replicas: 1,
        };
        let deploy = Action::DeployGreen {
            cluster: "prod-a".into(),
            replicas: 6,
        };
        let rows = [
            (
                "green scaled down, no traffic on it",
                &scale_down,
                Colour::Green,
                Some(mk_route(100, 0)),
                false,
            ),
            (
                "green scaled down while it takes 5 %",
                &scale_down,
                Colour::Green,
                Some(mk_route(95, 5)),
                true,
            ),
            (
                "green is the slot that serves everything",
                &scale_down,
                Colour::Blue,
                Some(mk_route(100, 0)),
                true,
            ),
            (
                "blue deleted once all traffic is on green",
                &delete,
                Colour::Green,
                Some(mk_route(0, 100)),
                false,
            ),
            (
                "blue deleted while it takes traffic",
                &delete,
                Colour::Green,
                Some(mk_route(1, 99)),
                true,
            ),
            (
                "green shrunk below the tier while serving",
                &shrink,
                Colour::Green,
                Some(mk_route(0, 100)),
                true,
            ),
            (
                "green shrunk before it takes traffic",
                &shrink,
                Colour::Green,
                Some(mk_route(100, 0)),
                false,
            ),
            (
                "green deployed at full size while serving",
                &deploy,
                Colour::Green,
                Some(mk_route(0, 100)),
                false,
            ),
            ("no route at all", &delete, Colour::Green, None, false),
        ];
        for (what, action, green, route, refused) in rows {
            let why = unsafe_because(action, &rel, target, &mk_slots(green), route.as_ref());
            assert_eq!(why.is_some(), refused, "{what}: {why:?}");
        }
    }
}
