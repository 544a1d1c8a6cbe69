//! Carrying out one action in its cluster, behind the applier's own guard.

use super::*;

impl Driver {
    /// Carries out one action in its cluster.
    pub(super) async fn apply(
        &self,
        rel: &ResolvedRelease,
        observed: &Observed,
        cache: &FleetCache,
        action: &Action,
    ) -> fleet::Result<()> {
        let cluster = action.cluster();
        let handle = self.fleet.get(cluster)?;
        let target = rel
            .cluster(cluster)
            .ok_or_else(|| fleet::Error::UnknownCluster(cluster.to_string()))?;
        let slots: Slots =
            observed.slots.get(cluster).cloned().ok_or_else(|| {
                fleet::Error::Refused(format!("{cluster} has not been observed yet"))
            })?;
        // What takes capacity away is checked against the route as the API
        // server has it now, not as a watch last told it: a watch lags, and
        // one back from an outage may hold what was true before it.
        let route = if action.is_destructive() {
            router::read(handle, &rel.namespace, target).await?
        } else {
            cache.clusters.get(cluster).and_then(|c| c.route())
        };
        if let Some(why) = guard::unsafe_because(action, rel, target, &slots, route.as_ref()) {
            return Err(fleet::Error::Unsafe(why));
        }
        match action {
            Action::DeployGreen { replicas, .. } => {
                workload::deploy_green(handle, rel, slots.green, *replicas, target.router.port)
                    .await
            }
            Action::SetWeight { green, .. } => match target.router.kind {
                RouterKind::GatewayHttpRoute => router::set_weight(
                    handle,
                    &rel.namespace,
                    &target.router.route,
                    &rel.app,
                    slots.green,
                    *green,
                )
                .await
                .map(|_| ()),
                RouterKind::ReplicaRatio => {
                    replica_ratio::set_weight(handle, rel, target, &slots, *green).await
                }
            },
            Action::ScaleDownGreen { .. } => match &slots.green_workload {
                Some(w) => workload::scale_down(handle, &rel.namespace, w).await,
                None => Ok(()),
            },
            Action::DeleteBlue { .. } => match &slots.blue_workload {
                Some(w) => workload::delete_blue(handle, &rel.namespace, w).await,
                None => Ok(()),
            },
        }
    }
}
