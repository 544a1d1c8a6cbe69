//! Schema of everything users write: the Release (file and CRD), the fleet
//! file and the tier policy; parsing with located errors; resolving a release
//! against its fleet and tier into the values the engine runs on.
//!
//! Pure: reads strings, never files or clusters (loading lives in the CLI).

pub mod fleet;
pub mod gates;
pub mod hooks;
pub mod notify;
pub mod object_meta;
pub mod policy;
pub mod quantity;
pub mod release;
pub mod resolve;
pub mod schema;
pub mod source;
pub mod status;

pub use fleet::{Fleet, FleetCluster};
pub use policy::{Tier, TierPolicyFile};
pub use quantity::{Percent, Span};
pub use release::{ClusterRole, Release, ReleaseDocument, ReleaseSpec, RouterKind};
pub use resolve::{ResolvedCluster, ResolvedRelease, Timings};
pub use source::{InputError, InputErrors, Source};
pub use status::ReleaseStatus;

/// The API version of every cutover document and resource.
pub const API_VERSION: &str = "cutover.dev/v1alpha1";

/// The longest app name whose slot Services (`<app>-green`, `<app>-blue`)
/// are still valid Service names.
pub const MAX_APP_NAME: usize = 63 - "-green".len();

/// Checks the slot Services an app names are valid Service names: a Service
/// name must be a DNS-1035 label (kube-apiserver's `ValidateServiceName` is
/// `NameIsDNS1035Label`: a lowercase letter first, then lowercase letters,
/// digits or '-', not ending in '-', at most 63 characters).
pub fn check_slot_names(app: &str) -> Result<(), String> {
    let starts_with_letter = app.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if starts_with_letter && app.len() <= MAX_APP_NAME {
        return Ok(());
    }
    Err(format!(
        "{app:?} names the Services {app}-green and {app}-blue, which must be DNS-1035 labels \
         (Kubernetes Service names: a lowercase letter first, at most 63 characters): start \
         the app with a letter and keep it to {MAX_APP_NAME} characters at most"
    ))
}

/// Checks a name is a DNS-1123 label (what Kubernetes object names and label values need).
pub fn check_dns_label(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: use 1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
        ))
    }
}
