//! The RBAC authorizer, with kube-apiserver's semantics
//! (plugin/pkg/auth/authorizer/rbac/rbac.go and its rule matching in
//! pkg/apis/rbac/v1/evaluation_helpers.go): a request is allowed when a rule
//! of a role bound to the user (a ClusterRoleBinding anywhere, a RoleBinding
//! in the request's namespace) covers its verb, API group, resource or
//! `resource/subresource`, name, or non-resource path. Rules only grant;
//! aggregated ClusterRoles take the rules of the roles their selectors pick.
//!
//! Reads the RBAC objects stored in the cluster at each decision, so a role
//! changed through the API applies to the next request.

use std::sync::Arc;

use serde_json::Value;

use super::UserInfo;
use crate::api_error::ApiError;
use crate::selectors::LabelSelector;
use crate::store::Store;

const GROUP: &str = "rbac.authorization.k8s.io";

/// What is being asked (`authorizer.Attributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// Set for a non-resource request (`/version`, `/apis`).
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; the reason is empty unless a binding could not be resolved
    /// (as RBAC's `RBAC: clusterrole... not found`).
    Deny(String),
}

impl Attributes {
    /// A resource request.
    pub fn resource(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.to_string(),
            group: group.to_string(),
            resource: resource.to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// The 403 a denied request gets.
    pub fn forbidden(&self, user: &UserInfo, reason: &str) -> ApiError {
        let who = &user.name;
        let mut why = match &self.path {
            Some(path) => format!("User {who:?} cannot {} path {path:?}", self.verb),
            None => {
                let resource = if self.subresource.is_empty() {
                    self.resource.clone()
                } else {
                    format!("{}/{}", self.resource, self.subresource)
                };
                if self.namespace.is_empty() {
                    format!(
                        "User {who:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
                        self.verb, self.group
                    )
                } else {
                    format!(
                        "User {who:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
                        self.verb, self.group, self.namespace
                    )
                }
            }
        };
        if !reason.is_empty() {
            why = format!("{why}: {reason}");
        }
        match &self.path {
            Some(_) => ApiError::forbidden("", "", "", &why),
            None => ApiError::forbidden(&self.group, &self.resource, &self.name, &why),
        }
    }
}

/// Whether `user` may do what `attrs` asks.
pub fn authorize(store: &Store, user: &UserInfo, attrs: &Attributes) -> Decision {
    let mut problems = Vec::new();
    for binding in store.all(GROUP, "clusterrolebindings") {
        if !binds(&binding, user, "") {
            continue;
        }
        match rules_of(store, &binding["roleRef"], "") {
            Ok(rules) if rules.iter().any(|r| allows(r, attrs)) => return Decision::Allow,
            Ok(_) => {}
            Err(e) => problems.push(e),
        }
    }
    if !attrs.namespace.is_empty() {
        for binding in store.all(GROUP, "rolebindings") {
            let ns = crate::meta::namespace(&binding);
            if ns != attrs.namespace || !binds(&binding, user, ns) {
                continue;
            }
            match rules_of(store, &binding["roleRef"], ns) {
                Ok(rules) if rules.iter().any(|r| allows(r, attrs)) => return Decision::Allow,
                Ok(_) => {}
                Err(e) => problems.push(e),
            }
        }
    }
    if problems.is_empty() {
        Decision::Deny(String::new())
    } else {
        Decision::Deny(format!("RBAC: {}", problems.join(", ")))
    }
}

/// Whether a binding's subjects include the user (`appliesToUser`): a User by
/// name, a Group the user is in, or a ServiceAccount by namespace and name
/// (a RoleBinding's own namespace when the subject names none).
fn binds(binding: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let Some(subjects) = binding["subjects"].as_array() else {
        return false;
    };
    subjects.iter().any(|s| {
        let name = s["name"].as_str().unwrap_or_default();
        match s["kind"].as_str() {
            Some("User") => user.name == name,
            Some("Group") => user.groups.iter().any(|g| g == name),
            Some("ServiceAccount") => {
                let ns = s["namespace"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(binding_ns);
                user.as_service_account() == Some((ns, name))
            }
            _ => false,
        }
    })
}

/// The rules of a binding's role; an aggregated ClusterRole's are those of
/// every ClusterRole its selectors match (what the aggregation controller
/// writes into it).
fn rules_of(store: &Store, role_ref: &Value, ns: &str) -> Result<Vec<Value>, String> {
    let name = role_ref["name"].as_str().unwrap_or_default();
    let (kind, plural, scope) = match role_ref["kind"].as_str() {
        Some("Role") => ("role", "roles", ns),
        _ => ("clusterrole", "clusterroles", ""),
    };
    let role = store
        .kind_of(GROUP, plural)
        .and_then(|k| store.get(&k, scope, name).ok())
        .ok_or_else(|| format!("{kind}.{GROUP} {name:?} not found"))?;
    let mut rules: Vec<Value> = role["rules"].as_array().cloned().unwrap_or_default();
    if let Some(selectors) = role["aggregationRule"]["clusterRoleSelectors"].as_array() {
        let selectors: Vec<LabelSelector> = selectors
            .iter()
            .filter_map(|s| LabelSelector::from_object(s).ok())
            .collect();
        let others: Vec<Arc<Value>> = store.all(GROUP, "clusterroles");
        for other in others {
            if crate::meta::name(&other) != name
                && selectors.iter().any(|s| s.matches_object(&other))
            {
                rules.extend(other["rules"].as_array().cloned().unwrap_or_default());
            }
        }
    }
    Ok(rules)
}

fn has(list: &Value, want: &str) -> bool {
    list.as_array().is_some_and(|l| {
        l.iter()
            .any(|v| v.as_str().is_some_and(|v| v == "*" || v == want))
    })
}

/// `RuleAllows`: verbs, then groups, resources and names for a resource
/// request, or paths for a non-resource one.
pub fn allows(rule: &Value, attrs: &Attributes) -> bool {
    if !has(&rule["verbs"], &attrs.verb) {
        return false;
    }
    if let Some(path) = &attrs.path {
        return rule["nonResourceURLs"].as_array().is_some_and(|urls| {
            urls.iter().filter_map(Value::as_str).any(|u| {
                u == "*"
                    || u == path
                    || u.strip_suffix('*')
                        .is_some_and(|prefix| path.starts_with(prefix))
            })
        });
    }
    if !has(&rule["apiGroups"], &attrs.group) {
        return false;
    }
    let resource_matches = rule["resources"].as_array().is_some_and(|rs| {
        rs.iter().filter_map(Value::as_str).any(|r| {
            if attrs.subresource.is_empty() {
                r == "*" || r == attrs.resource
            } else {
                r == "*"
                    || r == format!("{}/{}", attrs.resource, attrs.subresource)
                    || r == format!("*/{}", attrs.subresource)
            }
        })
    });
    if !resource_matches {
        return false;
    }
    match rule["resourceNames"].as_array() {
        None => true,
        Some(names) if names.is_empty() => true,
        Some(names) => names
            .iter()
            .any(|n| n.as_str() == Some(attrs.name.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ask(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: "shop".into(),
            name: name.into(),
            path: None,
        }
    }

    #[test]
    fn rules_match_as_evaluation_helpers_go_does() {
        let rule = json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["patch"]});
        assert!(allows(
            &rule,
            &ask("patch", "apps", "deployments", "", "web")
        ));
        assert!(!allows(
            &rule,
            &ask("create", "apps", "deployments", "", "web")
        ));
        assert!(!allows(&rule, &ask("patch", "", "deployments", "", "web")));
        // A subresource needs its own entry (or `*/sub`, or `*`).
        assert!(!allows(
            &rule,
            &ask("patch", "apps", "deployments", "scale", "web")
        ));
        let sub = json!({"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["*"]});
        assert!(allows(
            &sub,
            &ask("update", "apps", "deployments", "scale", "web")
        ));
        let named = json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"], "verbs": ["get"]});
        assert!(allows(&named, &ask("get", "", "secrets", "", "a")));
        assert!(!allows(&named, &ask("get", "", "secrets", "", "b")));
        // A create has no name yet: a rule with resourceNames never covers it.
        let create = json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"], "verbs": ["create"]});
        assert!(!allows(&create, &ask("create", "", "secrets", "", "")));
        let paths = json!({"nonResourceURLs": ["/apis/*", "/version"], "verbs": ["get"]});
        let path = |p: &str| Attributes {
            verb: "get".into(),
            path: Some(p.into()),
            ..Default::default()
        };
        assert!(allows(&paths, &path("/version")));
        assert!(allows(&paths, &path("/apis/apps/v1")));
        assert!(!allows(&paths, &path("/api")));
    }
}
