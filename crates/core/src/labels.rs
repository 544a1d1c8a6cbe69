//! Names cutover writes on Kubernetes objects, shared by every module that
//! reads or writes them (and by the simulated fleet).

/// The app an object belongs to.
pub const APP: &str = "app.kubernetes.io/name";
/// The version a workload runs.
pub const VERSION: &str = "cutover.dev/version";
/// The colour slot (`blue` or `green`) of a workload and of its pods.
pub const COLOUR: &str = "cutover.dev/colour";
/// Marks objects cutover created; only these are ever deleted, and only workloads.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "cutover";
/// The Release that created an object.
pub const RELEASE: &str = "cutover.dev/release";
/// Annotation on a DeployFreeze `cutover unfreeze` lifted: it announced the
/// lift itself, so the controller does not announce it again.
pub const LIFT_ANNOUNCED: &str = "cutover.dev/lift-announced";
/// The step hook a Job was created for.
pub const HOOK: &str = "cutover.dev/hook";
/// Annotation on a route: the green weight cutover last set, so a change by
/// someone else is detected instead of overwritten.
pub const GREEN_WEIGHT: &str = "cutover.dev/green-weight";
/// The well-known zone label of nodes.
pub const ZONE: &str = "topology.kubernetes.io/zone";
/// The field manager of every server-side apply cutover makes.
pub const FIELD_MANAGER: &str = "cutover";
