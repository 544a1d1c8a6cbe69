//! The pure lifecycle engine. `decide(release, status, observation, now)`
//! returns the actions to take, the status to persist and when to look again.
//!
//! Must not touch: clusters, files, the network, tokio or the clock. Every
//! lifecycle rule lives here (stage order, weights, waits, holds, abort,
//! cleanup only after the bake) and is tested as tables without a cluster.

mod decide;
pub mod drive;
pub mod observe;
pub mod plan;
pub mod timeline;

#[cfg(test)]
mod tests;

use std::fmt;

use jiff::Timestamp;
use serde::Serialize;

pub use decide::decide;
pub use observe::{
    ClusterView, FreezeNotice, FreezeView, GateReport, GateVerdict, HookRun, Observation,
    PlacementView, RouteView, WorkloadView,
};

use crate::spec::{Percent, ReleaseStatus};

/// What one pass decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to persist before acting.
    pub status: ReleaseStatus,
    /// Changes to make, in order. Each is idempotent.
    pub actions: Vec<Action>,
    /// When a timer of the current step runs out; the driver also wakes on any change it watches.
    pub wake_at: Option<Timestamp>,
    /// The step hooks the current step waits on: the driver keeps each
    /// running (or tried again) until it reports a verdict, and stops those
    /// no longer asked for.
    pub hooks: Vec<HookCall>,
}

/// A hook to run in one step and cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookCall {
    pub step: u32,
    pub name: String,
    pub cluster: String,
    /// Green's share the step moves the cluster to (a traffic step).
    pub weight: Option<Percent>,
}

/// A change to make in one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// Create or update green at full size, with no traffic.
    DeployGreen { cluster: String, replicas: u32 },
    /// Set green's share of the cluster's traffic (blue gets the rest).
    SetWeight { cluster: String, green: Percent },
    /// After a rollback moved every route to blue: scale green to zero.
    ScaleDownGreen { cluster: String },
    /// After the bake: delete the workloads cutover created for blue, nothing else.
    DeleteBlue { cluster: String },
}

impl Action {
    pub fn cluster(&self) -> &str {
        match self {
            Action::DeployGreen { cluster, .. }
            | Action::SetWeight { cluster, .. }
            | Action::ScaleDownGreen { cluster }
            | Action::DeleteBlue { cluster } => cluster,
        }
    }

    /// Whether the action removes serving capacity.
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            Action::ScaleDownGreen { .. } | Action::DeleteBlue { .. }
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::DeployGreen { cluster, replicas } => {
                write!(f, "deploy green on {cluster} ({replicas} replicas)")
            }
            Action::SetWeight { cluster, green } => write!(f, "set {cluster} to {green} green"),
            Action::ScaleDownGreen { cluster } => write!(f, "scale green down on {cluster}"),
            Action::DeleteBlue { cluster } => write!(f, "delete blue on {cluster}"),
        }
    }
}
