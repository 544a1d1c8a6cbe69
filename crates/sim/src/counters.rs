//! Counts of the API requests each simulated cluster served, by verb,
//! resource and client user agent, so tests and people can check how
//! chatty a driver is (and that it writes only when something changes).
//!
//! Owns the counting; the server decides what a request's verb and resource are.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Verbs that change something.
pub const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// What one counted request was.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestKey {
    pub cluster: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// The resource (`deployments`, `deployments/status`), or the path of a
    /// non-resource request (`/api`, `/openapi/v3`, `/metrics`).
    pub resource: String,
    pub user_agent: String,
}

/// One row of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestCount {
    #[serde(flatten)]
    pub key: RequestKey,
    pub count: u64,
}

/// A snapshot of request counts, with filters that narrow it down.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub requests: Vec<RequestCount>,
}

impl RequestCounts {
    pub fn total(&self) -> u64 {
        self.requests.iter().map(|r| r.count).sum()
    }

    /// Requests that change something: create, update, patch, delete (not
    /// the creates of reviews, which are answered and never stored).
    pub fn writes(&self) -> u64 {
        let review = |resource: &str| {
            crate::auth::reviews::REVIEWS
                .iter()
                .any(|(_, plural)| *plural == resource)
        };
        self.filter(|k| WRITE_VERBS.contains(&k.verb.as_str()) && !review(&k.resource))
            .total()
    }

    pub fn cluster(&self, cluster: &str) -> RequestCounts {
        self.filter(|k| k.cluster == cluster)
    }

    pub fn verb(&self, verb: &str) -> RequestCounts {
        self.filter(|k| k.verb == verb)
    }

    /// A resource, including its subresources (`deployments` counts `deployments/status`).
    pub fn resource(&self, resource: &str) -> RequestCounts {
        self.filter(|k| {
            k.resource == resource
                || k.resource
                    .strip_prefix(resource)
                    .is_some_and(|r| r.starts_with('/'))
        })
    }

    /// Clients whose user agent starts with `prefix` (`kubectl`, `cutover`).
    pub fn user_agent(&self, prefix: &str) -> RequestCounts {
        self.filter(|k| k.user_agent.starts_with(prefix))
    }

    pub fn filter(&self, keep: impl Fn(&RequestKey) -> bool) -> RequestCounts {
        RequestCounts {
            requests: self
                .requests
                .iter()
                .filter(|r| keep(&r.key))
                .cloned()
                .collect(),
        }
    }

    /// Totals per verb.
    pub fn by_verb(&self) -> BTreeMap<String, u64> {
        self.group(|k| k.verb.clone())
    }

    /// Totals per resource.
    pub fn by_resource(&self) -> BTreeMap<String, u64> {
        self.group(|k| k.resource.clone())
    }

    /// Totals per cluster.
    pub fn by_cluster(&self) -> BTreeMap<String, u64> {
        self.group(|k| k.cluster.clone())
    }

    /// Totals per user agent.
    pub fn by_user_agent(&self) -> BTreeMap<String, u64> {
        self.group(|k| k.user_agent.clone())
    }

    fn group(&self, by: impl Fn(&RequestKey) -> String) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for r in &self.requests {
            *out.entry(by(&r.key)).or_insert(0) += r.count;
        }
        out
    }

    /// Adds another snapshot's rows.
    pub fn extend(&mut self, other: RequestCounts) {
        self.requests.extend(other.requests);
    }
}

/// The live counter of one cluster.
#[derive(Debug)]
pub struct RequestCounter {
    cluster: String,
    counts: Mutex<BTreeMap<RequestKey, u64>>,
    /// Watches answered 410 Expired as they began, by (resource, user agent):
    /// each should cost its client exactly one list.
    expired: Mutex<BTreeMap<(String, String), u64>>,
}

impl RequestCounter {
    pub fn new(cluster: &str) -> RequestCounter {
        RequestCounter {
            cluster: cluster.to_string(),
            counts: Mutex::new(BTreeMap::new()),
            expired: Mutex::new(BTreeMap::new()),
        }
    }

    /// A watch of `resource` that began with 410 Expired.
    pub fn record_expired(&self, resource: &str, user_agent: &str) {
        *self
            .expired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((resource.to_string(), user_agent.to_string()))
            .or_insert(0) += 1;
    }

    /// Watches of `resource` from clients whose user agent starts with
    /// `prefix` that began with 410 Expired.
    pub fn expired(&self, resource: &str, prefix: &str) -> u64 {
        self.expired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((r, ua), _)| r == resource && ua.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn record(&self, verb: &str, resource: &str, user_agent: &str) {
        let key = RequestKey {
            cluster: self.cluster.clone(),
            verb: verb.to_string(),
            resource: resource.to_string(),
            user_agent: user_agent.to_string(),
        };
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(0) += 1;
    }

    pub fn snapshot(&self) -> RequestCounts {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        RequestCounts {
            requests: counts
                .iter()
                .map(|(k, c)| RequestCount {
                    key: k.clone(),
                    count: *c,
                })
                .collect(),
        }
    }

    pub fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.expired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_narrow_and_totals_add_up() {
        let a = RequestCounter::new("prod-a");
        a.record("get", "deployments", "cutover/0.1");
        a.record("patch", "deployments/status", "cutover/0.1");
        a.record("patch", "httproutes", "kubectl/v1.32.4");
        a.record("list", "pods", "kubectl/v1.32.4");
        a.record("list", "pods", "kubectl/v1.32.4");
        let b = RequestCounter::new("prod-b");
        b.record("create", "deployments", "cutover/0.1");
        let mut all = a.snapshot();
        all.extend(b.snapshot());
        assert_eq!(all.total(), 6);
        assert_eq!(all.writes(), 3);
        assert_eq!(all.cluster("prod-a").writes(), 2);
        assert_eq!(all.resource("deployments").total(), 3);
        assert_eq!(all.resource("deploy").total(), 0);
        assert_eq!(all.user_agent("kubectl").verb("list").total(), 2);
        assert_eq!(all.by_cluster()["prod-b"], 1);
        assert_eq!(all.by_verb()["patch"], 2);
        a.reset();
        assert_eq!(a.snapshot().total(), 0);
    }
}
