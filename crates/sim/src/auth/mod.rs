//! Who is asking, and whether they may: bearer-token authentication (static
//! tokens for the admin and the simulated people, bound ServiceAccount
//! tokens from the TokenRequest API), impersonation, and the RBAC authorizer
//! over the Roles and bindings stored in the cluster (`rbac`). The reviews
//! that ask the same questions over the API live in `reviews`; the roles a
//! cluster starts with in `bootstrap`.
//!
//! Owns identities and decisions; the server calls it before any handler.

pub mod bootstrap;
pub mod rbac;
pub mod reviews;

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::api_error::{ApiError, ApiResult};
use super::store::Store;

/// The user a request runs as (`user.Info` in the API server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

pub const MASTERS: &str = "system:masters";
pub const AUTHENTICATED: &str = "system:authenticated";
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
const SA_PREFIX: &str = "system:serviceaccount:";

impl UserInfo {
    /// A user the cluster knows by a static token, in `groups` and
    /// `system:authenticated`.
    pub fn named(name: &str, groups: &[&str]) -> UserInfo {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        groups.push(AUTHENTICATED.to_string());
        UserInfo {
            name: name.to_string(),
            uid: String::new(),
            groups,
        }
    }

    /// `system:serviceaccount:NS:NAME`, in the groups every ServiceAccount is in.
    pub fn service_account(ns: &str, name: &str, uid: &str) -> UserInfo {
        UserInfo {
            name: format!("{SA_PREFIX}{ns}:{name}"),
            uid: uid.to_string(),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{ns}"),
                AUTHENTICATED.to_string(),
            ],
        }
    }

    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: "system:anonymous".to_string(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED.to_string()],
        }
    }

    /// `(namespace, name)` when this user is a ServiceAccount.
    pub fn as_service_account(&self) -> Option<(&str, &str)> {
        self.name.strip_prefix(SA_PREFIX)?.split_once(':')
    }

    /// As the `userInfo` of a review's status.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        v
    }
}

/// What a token stands for.
#[derive(Debug, Clone)]
enum Credential {
    Static(UserInfo),
    /// A bound ServiceAccount token: valid while that ServiceAccount (same
    /// UID) exists, as the API server's bound-token validation requires.
    ServiceAccount {
        ns: String,
        name: String,
        uid: String,
    },
}

/// One authorization decision, as tests read them back: who, the verb, the
/// resource (`resource/subresource`) or path, and whether it was allowed.
/// Access reviews' answers are decisions too.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Decided {
    pub user: String,
    pub verb: String,
    pub resource: String,
    pub allowed: bool,
}

/// The bearer tokens one API server accepts, and the decisions made on its
/// requests.
#[derive(Debug, Default)]
pub struct Authenticator {
    tokens: Mutex<HashMap<String, Credential>>,
    decided: Mutex<std::collections::BTreeSet<Decided>>,
    /// Requests without credentials run as `system:anonymous` instead of
    /// getting 401 (`--anonymous-auth`); off unless a test opts in.
    pub anonymous: std::sync::atomic::AtomicBool,
}

impl Authenticator {
    /// Notes a decision made on a request.
    pub fn record(&self, user: &UserInfo, attrs: &rbac::Attributes, allowed: bool) {
        let resource = match (&attrs.path, attrs.subresource.is_empty()) {
            (Some(path), _) => path.clone(),
            (None, true) => attrs.resource.clone(),
            (None, false) => format!("{}/{}", attrs.resource, attrs.subresource),
        };
        self.decided
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Decided {
                user: user.name.clone(),
                verb: attrs.verb.clone(),
                resource,
                allowed,
            });
    }

    /// Authorizes a request's `attrs` for `user` and notes the decision.
    pub fn decide(
        &self,
        store: &Store,
        user: &UserInfo,
        attrs: &rbac::Attributes,
    ) -> rbac::Decision {
        let decision = rbac::authorize(store, user, attrs);
        self.record(user, attrs, decision == rbac::Decision::Allow);
        decision
    }

    /// Every distinct decision made so far.
    pub fn decisions(&self) -> Vec<Decided> {
        self.decided
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn new_token(&self, credential: Credential) -> String {
        let token = format!("sim.{}", super::meta::random_suffix(40));
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), credential);
        token
    }

    /// A static token for `user` (the API server's token file).
    pub fn issue_static(&self, user: UserInfo) -> String {
        self.new_token(Credential::Static(user))
    }

    /// A token bound to the ServiceAccount `ns/name` with `uid`.
    pub fn issue_service_account(&self, ns: &str, name: &str, uid: &str) -> String {
        self.new_token(Credential::ServiceAccount {
            ns: ns.to_string(),
            name: name.to_string(),
            uid: uid.to_string(),
        })
    }

    /// The user of an `Authorization` header: 401 for a missing header
    /// (unless anonymous requests are allowed) or a token nobody issued.
    pub fn authenticate(&self, header: Option<&str>, store: &Store) -> ApiResult<UserInfo> {
        let Some(header) = header.filter(|h| !h.is_empty()) else {
            if self.anonymous.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(UserInfo::anonymous());
            }
            return Err(ApiError::unauthorized());
        };
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        let credential = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
            .ok_or_else(ApiError::unauthorized)?;
        match credential {
            Credential::Static(user) => Ok(user),
            Credential::ServiceAccount { ns, name, uid } => {
                let alive = store
                    .kind_of("", "serviceaccounts")
                    .and_then(|k| store.get(&k, &ns, &name).ok())
                    .is_some_and(|sa| super::meta::uid(&sa) == uid);
                if !alive {
                    return Err(ApiError::unauthorized());
                }
                Ok(UserInfo::service_account(&ns, &name, &uid))
            }
        }
    }
}

/// `Impersonate-User` and `Impersonate-Group`: each is authorized as the verb
/// `impersonate` on `users`, `groups` or `serviceaccounts`
/// (apiserver/pkg/endpoints/filters/impersonation.go), then the request runs
/// as the impersonated user.
pub fn impersonate(
    real: UserInfo,
    user: Option<&str>,
    groups: &[String],
    store: &Store,
) -> ApiResult<UserInfo> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        if groups.is_empty() {
            return Ok(real);
        }
        return Err(ApiError::bad_request(
            "requested group impersonation without user impersonation",
        ));
    };
    let ask = |resource: &str, ns: &str, name: &str| rbac::Attributes {
        verb: "impersonate".to_string(),
        group: String::new(),
        resource: resource.to_string(),
        subresource: String::new(),
        namespace: ns.to_string(),
        name: name.to_string(),
        path: None,
    };
    let (target, check) = match user.strip_prefix(SA_PREFIX).and_then(|s| s.split_once(':')) {
        Some((ns, name)) => (
            UserInfo::service_account(ns, name, ""),
            ask("serviceaccounts", ns, name),
        ),
        None => (
            UserInfo {
                name: user.to_string(),
                uid: String::new(),
                groups: Vec::new(),
            },
            ask("users", "", user),
        ),
    };
    let mut checks = vec![check];
    checks.extend(groups.iter().map(|g| ask("groups", "", g)));
    for attrs in &checks {
        if let rbac::Decision::Deny(why) = rbac::authorize(store, &real, attrs) {
            return Err(attrs.forbidden(&real, &why));
        }
    }
    let mut target = target;
    if !groups.is_empty() {
        target.groups = groups.to_vec();
    }
    if target.name != "system:anonymous" && !target.groups.iter().any(|g| g == AUTHENTICATED) {
        target.groups.push(AUTHENTICATED.to_string());
    }
    Ok(target)
}
