//! What the engine is told about the world on each pass: a snapshot gathered
//! by the driver (clusters, freezes, gates). Plain data; no kube types.

use std::collections::BTreeMap;

use crate::spec::Percent;

/// One pass's view of everything the release depends on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// Per cluster of the release, by name. A missing entry means not observed
    /// (treated as unreachable).
    pub clusters: BTreeMap<String, ClusterView>,
    pub freezes: FreezeView,
    /// The latest verdict of the current step's gates.
    pub gate: Option<GateReport>,
    /// The current step's hooks the driver ran or is running.
    pub hooks: Vec<HookRun>,
    /// Actions the applier's own guard refused as unsafe, by cluster: a
    /// defect the release holds on, never carried out.
    pub defects: BTreeMap<String, String>,
}

/// One cluster as last seen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterView {
    pub reachable: bool,
    /// Why the cluster could not be observed, when it could not.
    pub unreachable_because: Option<String>,
    /// This release's version, if deployed.
    pub green: Option<WorkloadView>,
    /// The version serving before this release, if any.
    pub blue: Option<WorkloadView>,
    /// The traffic route, once it exists.
    pub route: Option<RouteView>,
    /// Green's live placement against the tier.
    pub placement: PlacementView,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadView {
    pub version: String,
    /// Desired replicas.
    pub replicas: u32,
    /// Replicas available (ready for long enough).
    pub available: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteView {
    /// Green's share of the cluster's traffic as the router achieves it.
    pub green: Percent,
    /// The weight cutover last set on this route, as recorded on the route.
    pub target: Option<Percent>,
    /// Set when the route no longer says what cutover wrote (someone else edited it).
    pub drift: Option<String>,
    /// Whether the router finished carrying out the target (a replica-ratio
    /// router waits for pods; a route's weights apply at once).
    pub settled: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PlacementView {
    Satisfied,
    /// Why not, in words a person can act on (zones, counts, the rule).
    Unsatisfied(String),
    #[default]
    Unknown,
}

/// Deploy freezes that apply to this release.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FreezeView {
    pub active: Vec<FreezeNotice>,
    /// Clusters whose freezes could not be read, and why: the release
    /// cannot prove it is unfrozen.
    pub unreadable: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreezeNotice {
    pub id: String,
    /// Who froze, why, until when.
    pub message: String,
}

/// A gate verdict for one analysis run: the step it belongs to and the epoch of
/// that step (analysis restarts after a freeze, pause or outage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateReport {
    pub step: u32,
    pub epoch: u32,
    /// When this run of the gates began measuring (a driver that took over
    /// starts a new run): a deadline for a verdict counts from here at the
    /// earliest.
    pub since: Option<jiff::Timestamp>,
    pub verdict: GateVerdict,
    /// Which gate, query, value, threshold and cluster decided.
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateVerdict {
    /// Every required measurement is in and passes.
    Pass,
    /// A limit was broken, or a provider kept erroring: roll back.
    Fail,
    /// The gate cannot decide (too many inconclusive measurements): hold.
    Inconclusive,
    /// Not enough measurements yet.
    Pending,
}

/// A hook of the current step as the driver runs it: no verdict while a try
/// is under way, else how the last try ended. An inconclusive hook is tried
/// again while the engine still asks for it, and keeps its last verdict
/// until a try decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookRun {
    pub step: u32,
    pub name: String,
    pub cluster: String,
    pub verdict: Option<crate::spec::hooks::HookVerdict>,
    /// What the last try saw, and which try it was.
    pub message: String,
}
