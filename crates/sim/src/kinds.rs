//! The kinds a simulated API server serves: the built-in ones and those of
//! every installed CustomResourceDefinition, with what discovery tells
//! clients about them (scope, short names, subresources).
//!
//! Owns the registry; storing objects belongs to the store.

use std::sync::Arc;

use serde_json::Value;

use super::api_error::ApiError;

/// One resource type, e.g. `deployments.apps/v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Kind {
    pub group: String,
    /// Versions served; the first is the one objects are stored in.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// A `/status` subresource: writes to the main resource leave status alone.
    pub status: bool,
    /// A `/scale` subresource (Deployments).
    pub scale: bool,
    /// Served from a CRD: lists are atomic and strategic merge is refused.
    pub custom: bool,
    /// A CRD's OpenAPI v3 schema of the storage version: objects are pruned,
    /// defaulted and validated against it.
    pub schema: Option<Arc<Value>>,
    /// The schema's `x-kubernetes-validations`, compiled when the CRD is written.
    pub rules: Option<super::cel::Rules>,
}

impl Kind {
    pub fn storage_version(&self) -> &str {
        self.versions.first().map(String::as_str).unwrap_or("v1")
    }

    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    fn builtin(
        group: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        short: &[&str],
        status: bool,
    ) -> Kind {
        Kind {
            group: group.to_string(),
            versions: vec!["v1".to_string()],
            plural: plural.to_string(),
            singular: kind.to_lowercase(),
            kind: kind.to_string(),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: Vec::new(),
            status,
            scale: false,
            custom: false,
            schema: None,
            rules: None,
        }
    }

    /// The kinds every simulated cluster serves from the start. HTTPRoutes come
    /// from a CRD the cluster installs at boot, as in a real cluster.
    pub fn builtins() -> Vec<Kind> {
        let b = Kind::builtin;
        let mut kinds = vec![
            b("", "namespaces", "Namespace", false, &["ns"], true),
            b("", "nodes", "Node", false, &["no"], true),
            b("", "pods", "Pod", true, &["po"], true),
            b("", "services", "Service", true, &["svc"], true),
            b("", "configmaps", "ConfigMap", true, &["cm"], false),
            b("", "events", "Event", true, &["ev"], false),
            b("", "secrets", "Secret", true, &[], false),
            b(
                "",
                "serviceaccounts",
                "ServiceAccount",
                true,
                &["sa"],
                false,
            ),
            b(
                "",
                "persistentvolumeclaims",
                "PersistentVolumeClaim",
                true,
                &["pvc"],
                true,
            ),
            b("", "endpoints", "Endpoints", true, &["ep"], false),
            b("apps", "deployments", "Deployment", true, &["deploy"], true),
            // Served so clients that look for ReplicaSets find none: pods belong to Deployments here.
            b("apps", "replicasets", "ReplicaSet", true, &["rs"], true),
            b("coordination.k8s.io", "leases", "Lease", true, &[], false),
            // API Priority and Fairness's configuration (`flowcontrol`).
            b(
                "flowcontrol.apiserver.k8s.io",
                "flowschemas",
                "FlowSchema",
                false,
                &[],
                true,
            ),
            b(
                "flowcontrol.apiserver.k8s.io",
                "prioritylevelconfigurations",
                "PriorityLevelConfiguration",
                false,
                &[],
                true,
            ),
            b("batch", "jobs", "Job", true, &[], true),
            b("batch", "cronjobs", "CronJob", true, &["cj"], true),
            // Reviews are answered from the same authorization every
            // request meets, and never kept (`auth::reviews`).
            b(
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "SelfSubjectAccessReview",
                false,
                &[],
                false,
            ),
            b(
                "authorization.k8s.io",
                "subjectaccessreviews",
                "SubjectAccessReview",
                false,
                &[],
                false,
            ),
            b(
                "authentication.k8s.io",
                "selfsubjectreviews",
                "SelfSubjectReview",
                false,
                &[],
                false,
            ),
            b(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
                &["crd", "crds"],
                true,
            ),
            b(
                "rbac.authorization.k8s.io",
                "roles",
                "Role",
                true,
                &[],
                false,
            ),
            b(
                "rbac.authorization.k8s.io",
                "rolebindings",
                "RoleBinding",
                true,
                &[],
                false,
            ),
            b(
                "rbac.authorization.k8s.io",
                "clusterroles",
                "ClusterRole",
                false,
                &[],
                false,
            ),
            b(
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
                "ClusterRoleBinding",
                false,
                &[],
                false,
            ),
            b(
                "policy",
                "poddisruptionbudgets",
                "PodDisruptionBudget",
                true,
                &["pdb"],
                true,
            ),
            b("events.k8s.io", "events", "Event", true, &["ev"], false),
        ];
        for k in &mut kinds {
            if matches!(k.plural.as_str(), "pods" | "services" | "deployments") {
                k.categories = vec!["all".to_string()];
            }
            if k.plural == "deployments" {
                k.scale = true;
            }
            if k.plural == "endpoints" {
                k.singular = "endpoints".to_string();
            }
        }
        kinds
    }

    /// The kind a CustomResourceDefinition object defines.
    pub fn from_crd(crd: &Value) -> Result<Kind, ApiError> {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default();
        let invalid = |problem: String| {
            ApiError::invalid(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                name,
                problem,
            )
        };
        let spec = &crd["spec"];
        let text = |v: &Value, field: &str| -> Result<String, ApiError> {
            match v.as_str() {
                Some(s) if !s.is_empty() => Ok(s.to_string()),
                _ => Err(invalid(format!("{field}: Required value"))),
            }
        };
        let group = text(&spec["group"], "spec.group")?;
        let names = &spec["names"];
        let plural = text(&names["plural"], "spec.names.plural")?;
        let kind = text(&names["kind"], "spec.names.kind")?;
        if name != format!("{plural}.{group}") {
            return Err(invalid(format!(
                "metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"
            )));
        }
        let namespaced = match spec["scope"].as_str() {
            Some("Namespaced") => true,
            Some("Cluster") => false,
            other => {
                return Err(invalid(format!(
                    "spec.scope: Unsupported value: {:?}: supported values: \"Cluster\", \"Namespaced\"",
                    other.unwrap_or_default()
                )));
            }
        };
        let versions = spec["versions"].as_array().cloned().unwrap_or_default();
        if versions.is_empty() {
            return Err(invalid("spec.versions: Invalid value: must have exactly one version marked as storage version".into()));
        }
        let storage = versions
            .iter()
            .find(|v| v["storage"].as_bool() == Some(true))
            .unwrap_or(&versions[0]);
        let mut served: Vec<String> = Vec::new();
        if let Some(s) = storage["name"].as_str() {
            served.push(s.to_string());
        }
        for v in &versions {
            if v["served"].as_bool() != Some(false)
                && let Some(n) = v["name"].as_str()
                && !served.iter().any(|s| s == n)
            {
                served.push(n.to_string());
            }
        }
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Kind {
            group,
            versions: served,
            singular: names["singular"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| kind.to_lowercase()),
            plural,
            kind,
            namespaced,
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status: storage["subresources"]["status"].is_object(),
            scale: storage["subresources"]["scale"].is_object(),
            custom: true,
            schema: storage["schema"]["openAPIV3Schema"]
                .is_object()
                .then(|| Arc::new(storage["schema"]["openAPIV3Schema"].clone())),
            rules: super::cel::Rules::of(&storage["schema"]["openAPIV3Schema"]),
        })
    }
}

/// Every kind a cluster serves.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    kinds: Vec<Arc<Kind>>,
}

impl Registry {
    pub fn with_builtins() -> Registry {
        Registry {
            kinds: Kind::builtins().into_iter().map(Arc::new).collect(),
        }
    }

    /// The kind served at `/apis/<group>/<version>/<plural>`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Kind>> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.plural == plural && k.serves(version))
            .cloned()
    }

    /// The kind of a resource regardless of version.
    pub fn by_resource(&self, group: &str, plural: &str) -> Option<Arc<Kind>> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.plural == plural)
            .cloned()
    }

    /// The kind an object claims with its `apiVersion` and `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<Kind>> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.kinds
            .iter()
            .find(|k| k.group == group && k.kind == kind && k.serves(version))
            .cloned()
    }

    /// Adds or replaces a kind defined by a CRD; `false` when a built-in kind already owns it.
    pub fn install(&mut self, kind: Kind) -> bool {
        if let Some(i) = self
            .kinds
            .iter()
            .position(|k| k.group == kind.group && k.plural == kind.plural)
        {
            if !self.kinds[i].custom {
                return false;
            }
            self.kinds[i] = Arc::new(kind);
        } else {
            self.kinds.push(Arc::new(kind));
        }
        true
    }

    /// Removes a custom kind.
    pub fn remove(&mut self, group: &str, plural: &str) -> Option<Arc<Kind>> {
        let i = self
            .kinds
            .iter()
            .position(|k| k.custom && k.group == group && k.plural == plural)?;
        Some(self.kinds.remove(i))
    }

    pub fn all(&self) -> &[Arc<Kind>] {
        &self.kinds
    }

    /// API groups (core first, as `""`) and the versions each serves, in the order first seen.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for k in &self.kinds {
            let i = match out.iter().position(|(g, _)| *g == k.group) {
                Some(i) => i,
                None => {
                    out.push((k.group.clone(), Vec::new()));
                    out.len() - 1
                }
            };
            for v in &k.versions {
                if !out[i].1.contains(v) {
                    out[i].1.push(v.clone());
                }
            }
        }
        out
    }

    /// The kinds served under one group and version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<Kind>> {
        self.kinds
            .iter()
            .filter(|k| k.group == group && k.serves(version))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(name: &str, scope: &str) -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {
                "group": "cutover.dev",
                "scope": scope,
                "names": {"plural": "releases", "kind": "Release", "shortNames": ["rel"]},
                "versions": [
                    {"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}}},
                ],
            },
        })
    }

    #[test]
    fn a_crd_defines_a_kind() {
        let k = Kind::from_crd(&crd("releases.cutover.dev", "Namespaced")).unwrap();
        assert_eq!(
            (k.group.as_str(), k.plural.as_str(), k.kind.as_str()),
            ("cutover.dev", "releases", "Release")
        );
        assert!(k.namespaced && k.status && k.custom && !k.scale);
        assert_eq!(k.singular, "release");
        assert_eq!(k.short_names, vec!["rel"]);
        let mut reg = Registry::with_builtins();
        assert!(reg.install(k));
        assert!(reg.find("cutover.dev", "v1alpha1", "releases").is_some());
        assert!(reg.find("cutover.dev", "v1", "releases").is_none());
        assert!(reg.by_kind("cutover.dev/v1alpha1", "Release").is_some());
        assert!(
            reg.groups()
                .iter()
                .any(|(g, v)| g == "cutover.dev" && v == &["v1alpha1"])
        );
    }

    #[test]
    fn a_crd_must_be_named_after_its_plural_and_group() {
        let err = Kind::from_crd(&crd("rels.cutover.dev", "Namespaced")).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(err.message.contains("spec.names.plural"), "{}", err.message);
        let err = Kind::from_crd(&crd("releases.cutover.dev", "Galaxy")).unwrap_err();
        assert!(err.message.contains("spec.scope"), "{}", err.message);
    }

    #[test]
    fn builtins_cannot_be_replaced_by_a_crd() {
        let mut reg = Registry::with_builtins();
        let mut k = Kind::from_crd(&crd("releases.cutover.dev", "Namespaced")).unwrap();
        k.group = "apps".into();
        k.plural = "deployments".into();
        assert!(!reg.install(k));
        assert!(!reg.by_resource("apps", "deployments").unwrap().custom);
    }
}
