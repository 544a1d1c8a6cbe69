//! What every simulated cluster's authorization starts from.
//!
//! - The API server's own bootstrap roles (plugin/pkg/auth/authorizer/rbac/
//!   bootstrappolicy): `cluster-admin` for `system:masters`, discovery and
//!   public info for every authenticated user, and the self-reviews.
//! - cutover's shipped manifests, as `kubectl apply -k deploy/` leaves the
//!   home cluster and `kubectl apply -k deploy/member/` every other one
//!   (its CRDs excepted: setting up a rehearsal installs them, as an admin).
//! - The people of a simulated organisation, each bound to the shipped roles
//!   their job needs, with a token each.

use serde_json::{Value, json};

use super::{Authenticator, MASTERS, UserInfo};
use crate::api_error::ApiError;
use crate::store::{Store, Target, WriteOptions};

const NAMESPACE: &str = include_str!("../../../../deploy/common/namespace.yaml");
const MEMBER_ROLE: &str = include_str!("../../../../deploy/common/member-role.yaml");
const PEOPLE_ROLES: &str = include_str!("../../../../deploy/common/people.yaml");
const CONTROLLER: &str = include_str!("../../../../deploy/controller/rbac.yaml");
const CONTROLLER_FLOWS: &str = include_str!("../../../../deploy/controller/flowschema.yaml");
const MEMBER_IDENTITY: &str = include_str!("../../../../deploy/member/identity.yaml");

/// The namespace the shipped ServiceAccounts live in.
pub const SYSTEM_NAMESPACE: &str = "cutover-system";
/// The controller's ServiceAccount in the home cluster.
pub const CONTROLLER_ACCOUNT: &str = "cutover-controller";
/// The identity cutover uses in every other cluster.
pub const MEMBER_ACCOUNT: &str = "cutover-member";

/// A person of the simulated organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Person {
    /// Names their kubeconfig: `kubeconfig-<key>`.
    pub key: &'static str,
    pub user: &'static str,
    /// Shipped ClusterRoles bound to them in every cluster.
    pub everywhere: &'static [&'static str],
    /// Shipped ClusterRoles bound to them in the home cluster only.
    pub at_home: &'static [&'static str],
}

/// Who acts on the simulated fleet besides cutover's controller.
pub const PEOPLE: &[Person] = &[
    // A delivery pipeline running `cutover run`, `abort`, `undo`: it drives
    // releases itself, so it acts in every cluster as cutover does.
    Person {
        key: "pipeline",
        user: "ci-pipeline",
        everywhere: &["cutover-member"],
        at_home: &["cutover-release"],
    },
    Person {
        key: "oncall",
        user: "oncall@example.com",
        everywhere: &["cutover-freeze", "cutover-view"],
        at_home: &[],
    },
    Person {
        key: "incident-commander",
        user: "incident-commander@example.com",
        everywhere: &["cutover-unfreeze", "cutover-view"],
        at_home: &[],
    },
    // Ships releases and may break a freeze's glass.
    Person {
        key: "release-manager",
        user: "release-manager@example.com",
        everywhere: &["cutover-member", "cutover-freeze-override", "cutover-view"],
        at_home: &["cutover-release"],
    },
    // Reads releases and freezes, changes nothing.
    Person {
        key: "viewer",
        user: "developer@example.com",
        everywhere: &["cutover-view"],
        at_home: &[],
    },
];

/// The user every `kubeconfig` of the simulated fleet holds by default.
pub const ADMIN_USER: &str = "sim-admin";

/// Tokens a cluster hands out at boot.
#[derive(Debug, Clone, Default)]
pub struct BootTokens {
    /// `system:masters`: setup, tests' reads, kubectl as an administrator.
    pub admin: String,
    /// cutover's own identity here: the controller's ServiceAccount at home,
    /// the member ServiceAccount elsewhere.
    pub cutover: String,
    /// `(person key, token)`.
    pub people: Vec<(&'static str, String)>,
}

fn documents(text: &str) -> impl Iterator<Item = Value> + '_ {
    text.split("\n---\n").filter_map(|doc| {
        let v: Value = serde_saphyr::from_str(doc).ok()?;
        v.is_object().then_some(v)
    })
}

fn store_object(store: &Store, obj: Value) -> Result<(), ApiError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind_name = obj["kind"].as_str().unwrap_or_default();
    let kind = store
        .registry()
        .by_kind(api_version, kind_name)
        .ok_or_else(|| ApiError::no_such_resource(&format!("{api_version} {kind_name}")))?;
    let ns = if kind.namespaced {
        obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    } else {
        String::new()
    };
    store
        .create(&kind, &ns, obj, Target::All, &WriteOptions::default())
        .map(|_| ())
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
           "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
           "rules": rules})
}

fn binding(name: &str, role: &str, subjects: Value) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
           "metadata": {"name": name},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
           "subjects": subjects})
}

fn group(name: &str) -> Value {
    json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name}])
}

/// The API server's bootstrap roles this fleet's clients meet.
fn api_server_defaults() -> Vec<Value> {
    let get = json!(["get"]);
    vec![
        cluster_role(
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        binding("cluster-admin", "cluster-admin", group(MASTERS)),
        cluster_role(
            "system:discovery",
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                                         "/openapi", "/openapi/*", "/readyz", "/version", "/version/"],
                    "verbs": get}]),
        ),
        binding(
            "system:discovery",
            "system:discovery",
            group(super::AUTHENTICATED),
        ),
        cluster_role(
            "system:public-info-viewer",
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
                    "verbs": get}]),
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": super::AUTHENTICATED},
                   {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": super::UNAUTHENTICATED}]),
        ),
        cluster_role(
            "system:basic-user",
            json!([{"apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                   {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            group(super::AUTHENTICATED),
        ),
    ]
}

/// Stores the roles and identities of one cluster and issues its tokens.
pub fn install(store: &Store, tokens: &Authenticator, home: bool) -> Result<BootTokens, ApiError> {
    for obj in api_server_defaults()
        .into_iter()
        .chain(crate::flowcontrol::bootstrap_objects())
    {
        store_object(store, obj)?;
    }
    let ours = [NAMESPACE, MEMBER_ROLE, PEOPLE_ROLES];
    let own: &[&str] = if home {
        &[CONTROLLER, CONTROLLER_FLOWS]
    } else {
        &[MEMBER_IDENTITY]
    };
    for text in ours.iter().chain(own) {
        for obj in documents(text) {
            store_object(store, obj)?;
        }
    }
    let mut out = BootTokens {
        admin: tokens.issue_static(UserInfo::named(ADMIN_USER, &[MASTERS])),
        ..Default::default()
    };
    let account = if home {
        CONTROLLER_ACCOUNT
    } else {
        MEMBER_ACCOUNT
    };
    let sa_kind = store
        .kind_of("", "serviceaccounts")
        .ok_or_else(|| ApiError::no_such_resource("serviceaccounts"))?;
    let sa = store.get(&sa_kind, SYSTEM_NAMESPACE, account)?;
    out.cutover = tokens.issue_service_account(SYSTEM_NAMESPACE, account, crate::meta::uid(&sa));
    for person in PEOPLE {
        let roles = person
            .everywhere
            .iter()
            .chain(if home { person.at_home } else { &[] });
        for role in roles {
            let subject = json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": person.user}]);
            store_object(
                store,
                binding(&format!("people:{}:{role}", person.key), role, subject),
            )?;
        }
        out.people.push((
            person.key,
            tokens.issue_static(UserInfo::named(person.user, &[])),
        ));
    }
    Ok(out)
}
