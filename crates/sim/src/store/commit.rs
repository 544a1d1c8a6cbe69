//! Committing writes to the store: server-set metadata (uid, generation,
//! resourceVersion), the status subresource, no-op detection, admission,
//! finalizers, owner garbage collection and the change history.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    Change, ChangeType, Inner, Key, Store, Target, WriteOptions, gr, lookup, namespace_exists,
    scope,
};
use crate::admission;
use crate::api_error::{ApiError, ApiResult};
use crate::kinds::Kind;
use crate::meta;

impl Store {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn commit(
        &self,
        inner: &mut Inner,
        kind: &Kind,
        ns: &str,
        name: &str,
        current: Option<Arc<Value>>,
        mut next: Value,
        target: Target,
        opts: &WriteOptions,
    ) -> ApiResult<Arc<Value>> {
        if let Err(problem) = check_name(kind, name) {
            return Err(ApiError::invalid(&kind.group, &kind.plural, name, problem));
        }
        let problems = cutover_core::spec::object_meta::check(&next["metadata"]);
        if !problems.is_empty() {
            return Err(ApiError::invalid_fields(
                &kind.group,
                &kind.plural,
                name,
                &problems,
            ));
        }
        if kind.namespaced && ns.is_empty() {
            return Err(ApiError::bad_request(
                "the namespace of the object must be set",
            ));
        }
        let body_ns = meta::namespace(&next).to_string();
        if kind.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
            )));
        }
        if current.is_none() && kind.namespaced && !namespace_exists(inner, ns) {
            return Err(ApiError::not_found("", "namespaces", ns));
        }
        let now = self.clock.now();
        let mut obj = match (&current, target) {
            (Some(cur), Target::Status) => {
                let mut o = (**cur).clone();
                o["status"] = next.get("status").cloned().unwrap_or(Value::Null);
                o
            }
            (Some(cur), Target::Main) if kind.status => {
                next["status"] = cur.get("status").cloned().unwrap_or(Value::Null);
                next
            }
            (None, Target::Main) if kind.status => {
                next["status"] = Value::Null;
                next
            }
            (None, Target::Status) => {
                return Err(ApiError::not_found(&kind.group, &kind.plural, name));
            }
            _ => next,
        };
        if obj["status"].is_null()
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        obj["apiVersion"] = json!(kind.api_version(kind.storage_version()));
        obj["kind"] = json!(kind.kind);
        let md = &mut obj["metadata"];
        md["name"] = json!(name);
        if kind.namespaced {
            md["namespace"] = json!(ns);
        } else if let Some(m) = md.as_object_mut() {
            m.remove("namespace");
        }
        match &current {
            Some(cur) => {
                for keep in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                ] {
                    // Only the store itself (a delete with finalizers) marks an object deleted.
                    let own_mark = target == Target::All
                        && keep.starts_with("deletion")
                        && cur["metadata"][keep].is_null();
                    if !own_mark {
                        md[keep] = cur["metadata"][keep].clone();
                    }
                }
                if target == Target::Status {
                    md["managedFields"] = cur["metadata"]["managedFields"].clone();
                }
                // A Deployment's annotations bump it too: they are copied to
                // its ReplicaSets (deploymentStrategy.PrepareForUpdate).
                let annotations_changed = kind.group == "apps"
                    && kind.plural == "deployments"
                    && cur["metadata"]["annotations"] != obj["metadata"]["annotations"];
                if spec_changed(cur, &obj) || annotations_changed {
                    let g = cur["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                    obj["metadata"]["generation"] = json!(g);
                }
            }
            None => {
                md["uid"] = json!(meta::new_uid());
                md["creationTimestamp"] = json!(meta::time(now));
                md["generation"] = json!(1);
                if let Some(m) = md.as_object_mut() {
                    m.remove("deletionTimestamp");
                }
            }
        }
        strip_nulls(&mut obj["metadata"]);
        admission::admit(kind, current.as_deref(), &mut obj, &inner.registry, now)?;
        if let Some(cur) = &current
            && same_object(cur, &obj)
        {
            return Ok(cur.clone());
        }
        if current.is_none() && lookup(inner, kind, ns, name).is_ok() {
            return Err(ApiError::already_exists(&kind.group, &kind.plural, name));
        }
        if opts.dry_run {
            if current.is_none() {
                obj["metadata"]["resourceVersion"] = json!("");
            }
            return Ok(Arc::new(obj));
        }
        // A terminating object whose last finalizer went away is gone.
        if current.is_some()
            && meta::is_terminating(&obj)
            && obj["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty())
        {
            // The deletion's event carries the update; etcd's revision
            // before it is the object as stored, finalizers and all.
            return Ok(self.remove(inner, kind, ns, name, false, Some(obj)));
        }
        admission::after_commit(kind, &obj, &mut inner.registry);
        inner.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let obj = Arc::new(obj);
        inner.put(kind, (scope(kind, ns), name.to_string()), Some(obj.clone()));
        let change = if current.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.record(inner, kind, change, obj.clone(), current);
        Ok(obj)
    }

    /// Removes an object now, with its dependents (or orphaning them), and
    /// records the deletions. The deletion's event carries `last` (an update
    /// that cleared the last finalizer) when given, the stored object
    /// otherwise.
    pub(super) fn remove(
        &self,
        inner: &mut Inner,
        kind: &Kind,
        ns: &str,
        name: &str,
        orphan: bool,
        last: Option<Value>,
    ) -> Arc<Value> {
        let key = (scope(kind, ns), name.to_string());
        let Some(obj) = inner.put(kind, key, None) else {
            return Arc::new(Value::Null);
        };
        inner.rv += 1;
        let mut gone = last.unwrap_or_else(|| (*obj).clone());
        gone["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        let gone = Arc::new(gone);
        // The deletion keeps the object as it was stored, so a list at an
        // earlier resourceVersion finds it as it was then (etcd's older
        // revision), not as the deletion's event carries it.
        self.record(
            inner,
            kind,
            ChangeType::Deleted,
            gone.clone(),
            Some(obj.clone()),
        );
        for (dep_kind, dep_ns, dep_name) in dependents(inner, kind, &obj) {
            if orphan {
                self.orphan(inner, &dep_kind, &dep_ns, &dep_name, meta::uid(&obj));
            } else {
                self.remove(inner, &dep_kind, &dep_ns, &dep_name, false, None);
            }
        }
        if let Some(removed) = admission::after_delete(kind, &obj, &mut inner.registry) {
            let all: Vec<Key> = inner
                .objects
                .get(&gr(&removed))
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for (n, o) in all {
                self.remove(inner, &removed, &n, &o, false, None);
            }
        }
        gone
    }

    fn orphan(&self, inner: &mut Inner, kind: &Kind, ns: &str, name: &str, owner_uid: &str) {
        let Ok(cur) = lookup(inner, kind, ns, name) else {
            return;
        };
        let mut next = (*cur).clone();
        if let Some(refs) = next["metadata"]["ownerReferences"].as_array_mut() {
            refs.retain(|r| r["uid"] != owner_uid);
        }
        let _ = self.commit(
            inner,
            kind,
            ns,
            name,
            Some(cur),
            next,
            Target::All,
            &WriteOptions::default(),
        );
    }

    /// The API server restarts: it renews its identity Lease (as a real one
    /// does), and its watch cache begins after that, so a watch resuming
    /// from any earlier resourceVersion gets 410 Expired. etcd keeps its
    /// history: a continue token still reads it.
    pub fn restart(&self) {
        if let Some(kind) = self.kind_of("coordination.k8s.io", "leases") {
            let now = self.clock().now().to_string();
            let _ = self.modify(
                &kind,
                "kube-system",
                "kube-apiserver",
                Target::Main,
                true,
                &WriteOptions::default(),
                |cur| {
                    let mut lease = cur.cloned().unwrap_or_else(|| {
                        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                            "metadata": {"name": "kube-apiserver", "namespace": "kube-system"},
                            "spec": {"holderIdentity": "kube-apiserver"}})
                    });
                    lease["spec"]["renewTime"] = now.clone().into();
                    Ok(lease)
                },
            );
        }
        let mut inner = self.lock();
        inner.compacted = inner.rv;
        inner.trim_history();
    }

    fn record(
        &self,
        inner: &mut Inner,
        kind: &Kind,
        change: ChangeType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        // etcd's ticks since the last commit saw the revision before this one.
        let before = inner.rv - 1;
        if let Some(etcd) = &mut inner.etcd {
            etcd.tick(before);
        }
        let c = Arc::new(Change {
            rv: inner.rv,
            group: kind.group.clone(),
            resource: kind.plural.clone(),
            change,
            object,
            previous,
            at: std::time::Instant::now(),
            encoded: Default::default(),
        });
        inner.last_change.insert(gr(kind), inner.rv);
        inner.history.push_back(c.clone());
        if let Some(older) = inner
            .history
            .len()
            .checked_sub(super::CHANGES_HELD + 1)
            .and_then(|at| inner.history.get(at))
        {
            older.forget_encoding();
        }
        // The watch cache's bounds: what it holds are the changes after `compacted`.
        let bounds = self.history;
        loop {
            let start = inner.history.partition_point(|c| c.rv <= inner.compacted);
            let Some(oldest) = inner.history.get(start) else {
                break;
            };
            let len = inner.history.len() - start;
            let aged = oldest.at.elapsed() > bounds.window;
            if len <= super::MAX_HISTORY && (len <= bounds.min || !aged) {
                break;
            }
            inner.compacted = oldest.rv;
        }
        inner.trim_history();
        let _ = self.changes.send(c);
        self.latest.send_replace(inner.rv);
    }
}

/// Objects that name `owner` in their owner references (from the owner
/// index), or live in it when it is a namespace.
fn dependents(inner: &Inner, kind: &Kind, owner: &Value) -> Vec<(Kind, String, String)> {
    let owner_ns = meta::namespace(owner);
    let mut out = Vec::new();
    for ((group, resource), (ns, name)) in inner.owned.get(meta::uid(owner)).into_iter().flatten() {
        let Some(k) = inner.registry.by_resource(group, resource) else {
            continue;
        };
        if !kind.namespaced || *ns == owner_ns {
            out.push(((*k).clone(), ns.clone(), name.clone()));
        }
    }
    if kind.group.is_empty() && kind.plural == "namespaces" {
        for k in inner.registry.all().iter().filter(|k| k.namespaced) {
            let Some(objs) = inner.objects.get(&gr(k)) else {
                continue;
            };
            for (ns, name) in objs.keys().filter(|(ns, _)| ns == meta::name(owner)) {
                let dep = ((**k).clone(), ns.clone(), name.clone());
                if !out.contains(&dep) {
                    out.push(dep);
                }
            }
        }
    }
    out
}

/// Kubernetes object names: DNS subdomains (RBAC names may also hold `:`);
/// a Service's name is a DNS-1035 label and a Namespace's a DNS-1123 label
/// (kube-apiserver's `ValidateServiceName`, `ValidateNamespaceName`).
fn check_name(kind: &Kind, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("metadata.name: Required value: name or generateName is required".into());
    }
    match (kind.group.as_str(), kind.plural.as_str()) {
        ("", "services") => {
            return cutover_core::spec::object_meta::dns1035_label(name)
                .map_err(|e| format!("metadata.name: Invalid value: {name:?}: {e}"));
        }
        ("", "namespaces") => {
            return cutover_core::spec::object_meta::dns1123_label(name)
                .map_err(|e| format!("metadata.name: Invalid value: {name:?}: {e}"));
        }
        _ => {}
    }
    let rbac = kind.group == "rbac.authorization.k8s.io";
    let ok = name.len() <= 253
        && name.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '-'
                || c == '.'
                || (rbac && c == ':')
        })
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case \
             alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

/// Whether anything outside `metadata` and `status` differs (what bumps `generation`).
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            for k in ["metadata", "status", "apiVersion", "kind"] {
                m.remove(k);
            }
        }
        v
    };
    strip(old) != strip(new)
}

/// Equal but for `resourceVersion` and the times in `managedFields`: a no-op write.
fn same_object(old: &Value, new: &Value) -> bool {
    let norm = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            if let Some(Value::Array(fields)) = m.get_mut("managedFields") {
                for f in fields {
                    if let Some(f) = f.as_object_mut() {
                        f.remove("time");
                    }
                }
            }
        }
        v
    };
    norm(old) == norm(new)
}

fn strip_nulls(v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, x| !x.is_null());
    }
}
