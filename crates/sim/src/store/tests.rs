//! Store semantics without HTTP: versions, generation, status, conflicts,
//! history bounds, garbage collection.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use cutover_core::clock::{ScaledClock, SharedClock};

pub(crate) fn store(history: usize) -> Store {
    let clock: SharedClock = Arc::new(ScaledClock::new(jiff::Timestamp::now(), 1.0));
    let s = Store::new(clock, history);
    namespace(&s, "default");
    s
}

fn namespace(s: &Store, name: &str) {
    let ns = s.kind_of("", "namespaces").unwrap();
    s.create(
        &ns,
        "",
        json!({"metadata": {"name": name}}),
        Target::Main,
        &WriteOptions::default(),
    )
    .unwrap();
}

/// An empty ConfigMap in `default`.
pub(crate) fn config_map(s: &Store, name: &str) -> Arc<Value> {
    s.create(
        &kind(s, "", "configmaps"),
        "default",
        json!({"metadata": {"name": name}}),
        Target::Main,
        &WriteOptions::default(),
    )
    .unwrap()
}

fn kind(s: &Store, group: &str, plural: &str) -> Arc<Kind> {
    s.kind_of(group, plural).unwrap()
}

fn rv(o: &Value) -> u64 {
    meta::resource_version(o).unwrap()
}

fn deployment(replicas: i64) -> Value {
    json!({"metadata": {"name": "web"}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"a": "b"}},
           "template": {"metadata": {"labels": {"a": "b"}}}}})
}

#[test]
fn generation_follows_the_spec_and_no_op_writes_change_nothing() {
    let s = store(100);
    let d = kind(&s, "apps", "deployments");
    let w = WriteOptions::default();
    let created = s
        .create(&d, "default", deployment(1), Target::Main, &w)
        .unwrap();
    assert_eq!(created["metadata"]["generation"], 1);
    let same = s
        .update(&d, "default", "web", (*created).clone(), Target::Main, &w)
        .unwrap();
    assert_eq!(
        rv(&same),
        rv(&created),
        "a no-op write keeps the resourceVersion"
    );
    let mut labelled = (*created).clone();
    labelled["metadata"]["labels"] = json!({"x": "y"});
    let labelled = s
        .update(&d, "default", "web", labelled, Target::Main, &w)
        .unwrap();
    assert_eq!(
        (
            labelled["metadata"]["generation"].as_i64(),
            rv(&labelled) > rv(&created)
        ),
        (Some(1), true)
    );
    let scaled = s.modify(&d, "default", "web", Target::Main, false, &w, |c| {
        let mut n = c.unwrap().clone();
        n["spec"]["replicas"] = json!(3);
        n["status"] = json!({"replicas": 42});
        Ok(n)
    });
    let scaled = scaled.unwrap();
    assert_eq!(scaled["metadata"]["generation"], 2);
    assert!(
        scaled["status"].get("replicas").is_none(),
        "the main resource ignores status"
    );
    let status = s.update(
        &d,
        "default",
        "web",
        json!({"status": {"replicas": 3}, "spec": {"replicas": 9}}),
        Target::Status,
        &w,
    );
    let status = status.unwrap();
    assert_eq!(
        (
            status["status"]["replicas"].as_i64(),
            status["spec"]["replicas"].as_i64()
        ),
        (Some(3), Some(3))
    );
    assert_eq!(status["metadata"]["generation"], 2);
}

#[test]
fn stale_writes_conflict_and_names_are_checked() {
    let s = store(100);
    let cm = kind(&s, "", "configmaps");
    let w = WriteOptions::default();
    let a = s
        .create(
            &cm,
            "default",
            json!({"metadata": {"name": "a"}, "data": {"k": "1"}}),
            Target::Main,
            &w,
        )
        .unwrap();
    let mut newer = (*a).clone();
    newer["data"]["k"] = json!("2");
    s.update(&cm, "default", "a", newer, Target::Main, &w)
        .unwrap();
    let mut stale = (*a).clone();
    stale["data"]["k"] = json!("3");
    assert_eq!(
        s.update(&cm, "default", "a", stale, Target::Main, &w)
            .unwrap_err()
            .reason,
        "Conflict"
    );
    let dup = s
        .create(
            &cm,
            "default",
            json!({"metadata": {"name": "a"}}),
            Target::Main,
            &w,
        )
        .unwrap_err();
    assert_eq!((dup.code, dup.reason), (409, "AlreadyExists"));
    let bad = s
        .create(
            &cm,
            "default",
            json!({"metadata": {"name": "Not_OK"}}),
            Target::Main,
            &w,
        )
        .unwrap_err();
    assert_eq!(bad.code, 422);
    let generated = s
        .create(
            &cm,
            "default",
            json!({"metadata": {"generateName": "gen-"}}),
            Target::Main,
            &w,
        )
        .unwrap();
    assert!(meta::name(&generated).starts_with("gen-") && meta::name(&generated).len() == 9);
    let nowhere = s
        .create(
            &cm,
            "nowhere",
            json!({"metadata": {"name": "x"}}),
            Target::Main,
            &w,
        )
        .unwrap_err();
    assert_eq!(
        (nowhere.code, nowhere.message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );
}

#[test]
fn history_is_bounded_and_replayed_in_order() {
    let s = store(5);
    let cm = kind(&s, "", "configmaps");
    let w = WriteOptions::default();
    let first = config_map(&s, "a");
    for i in 0..10 {
        s.modify(&cm, "default", "a", Target::Main, false, &w, |c| {
            let mut n = c.unwrap().clone();
            n["data"] = json!({"i": i.to_string()});
            Ok(n)
        })
        .unwrap();
    }
    let err = s.subscribe(&cm, Start::After(rv(&first))).err().unwrap();
    assert_eq!((err.code, err.reason), (410, "Expired"));
    let now = s.resource_version();
    let sub = s.subscribe(&cm, Start::After(now - 3)).unwrap();
    let rvs: Vec<u64> = sub.backlog.iter().map(|c| c.rv).collect();
    assert_eq!(rvs, [now - 2, now - 1, now]);
    assert!(sub.backlog.iter().all(|c| c.change == ChangeType::Modified));
    let snap = s.subscribe(&cm, Start::Snapshot).unwrap();
    assert_eq!(snap.initial.len(), 1);
}

#[test]
fn deleting_an_owner_deletes_or_orphans_its_dependents() {
    let s = store(100);
    let cm = kind(&s, "", "configmaps");
    let w = WriteOptions::default();
    for (owner, orphan) in [("o1", false), ("o2", true)] {
        let o = config_map(&s, owner);
        let dep = json!({"metadata": {"name": format!("{owner}-dep"), "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": meta::uid(&o)}]}});
        s.create(&cm, "default", dep, Target::Main, &w).unwrap();
        s.delete(
            &cm,
            "default",
            owner,
            &DeleteOptions {
                orphan,
                ..Default::default()
            },
        )
        .unwrap();
        let left = s.get(&cm, "default", &format!("{owner}-dep"));
        match orphan {
            false => assert_eq!(left.unwrap_err().code, 404),
            true => assert_eq!(left.unwrap()["metadata"]["ownerReferences"], json!([])),
        }
    }
}

/// The owner index follows updates: a dependent whose owner reference was
/// taken away by an update is no longer deleted with its owner, and one
/// given a reference by an update is.
#[test]
fn deleting_an_owner_follows_owner_references_as_last_written() {
    let s = store(100);
    let cm = kind(&s, "", "configmaps");
    let w = WriteOptions::default();
    let o = config_map(&s, "owner");
    let owned_by =
        |name: &str, refs: Value| json!({"metadata": {"name": name, "ownerReferences": refs}});
    let reference =
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": meta::uid(&o)}]);
    s.create(
        &cm,
        "default",
        owned_by("freed", reference.clone()),
        Target::Main,
        &w,
    )
    .unwrap();
    s.create(
        &cm,
        "default",
        owned_by("adopted", json!([])),
        Target::Main,
        &w,
    )
    .unwrap();
    s.modify(&cm, "default", "freed", Target::Main, false, &w, |cur| {
        let mut next = cur.cloned().unwrap();
        next["metadata"]["ownerReferences"] = json!([]);
        Ok(next)
    })
    .unwrap();
    s.modify(&cm, "default", "adopted", Target::Main, false, &w, |cur| {
        let mut next = cur.cloned().unwrap();
        next["metadata"]["ownerReferences"] = reference.clone();
        Ok(next)
    })
    .unwrap();
    s.delete(&cm, "default", "owner", &DeleteOptions::default())
        .unwrap();
    assert!(s.get(&cm, "default", "freed").is_ok());
    assert_eq!(s.get(&cm, "default", "adopted").unwrap_err().code, 404);
}

#[test]
fn a_restart_forgets_the_history_so_every_older_watch_relists() {
    let s = store(1000);
    namespace(&s, "kube-system");
    let cm = kind(&s, "", "configmaps");
    config_map(&s, "a");
    let before = s.resource_version();
    assert!(s.subscribe(&cm, Start::After(before)).is_ok());
    s.restart();
    // The restarted server wrote its identity Lease: even a watch that was
    // up to date is from before the restart.
    assert_eq!(s.resource_version(), before + 1);
    let err = s.subscribe(&cm, Start::After(before)).err().unwrap();
    assert_eq!((err.code, err.reason), (410, "Expired"));
    let sub = s
        .subscribe(&cm, Start::After(s.resource_version()))
        .unwrap();
    assert!(sub.backlog.is_empty());
}

/// A list at an earlier resourceVersion (a continue token's) reads etcd,
/// which kube-apiserver compacts every `--etcd-compaction-interval` to the
/// revision it saw at the compaction before
/// (k8s.io/apiserver/pkg/storage/etcd3/compact.go): it reads back past what
/// the watch cache holds for one to two intervals, and across a restart of
/// the API server.
#[test]
fn a_list_at_an_earlier_version_reads_etcd_until_it_compacts_twice() {
    let every = std::time::Duration::from_secs(300);
    let clock: SharedClock = Arc::new(ScaledClock::new(jiff::Timestamp::now(), 1.0));
    let s = Store::with_history(
        clock,
        HistoryBounds {
            min: 5,
            window: std::time::Duration::ZERO,
            compaction: Some(every),
        },
    );
    namespace(&s, "default");
    namespace(&s, "kube-system");
    let cm = kind(&s, "", "configmaps");
    let w = WriteOptions::default();
    let first = config_map(&s, "a");
    let modify = |i: usize| {
        s.modify(&cm, "default", "a", Target::Main, false, &w, |c| {
            let mut n = c.unwrap().clone();
            n["data"] = json!({"i": i.to_string()});
            Ok(n)
        })
        .unwrap();
    };
    for i in 0..20 {
        modify(i);
    }
    let at = rv(&first);
    let watch = s.subscribe(&cm, Start::After(at)).err().unwrap();
    assert_eq!(
        (watch.code, watch.reason),
        (410, "Expired"),
        "the watch cache keeps 5"
    );
    let then = s.list_at(&cm, Some("default"), at).unwrap();
    assert_eq!(
        then.as_slice(),
        std::slice::from_ref(&first),
        "etcd still holds {at}"
    );
    s.restart();
    assert!(
        s.list_at(&cm, Some("default"), at).is_ok(),
        "etcd outlives a restart"
    );
    // The first tick only notes the revision; the second compacts to it.
    s.let_etcd_time_pass(every);
    modify(20);
    let noted = s.resource_version() - 1;
    assert!(
        s.list_at(&cm, Some("default"), at).is_ok(),
        "one tick: not yet compacted"
    );
    modify(21);
    s.let_etcd_time_pass(every);
    let err = s.list_at(&cm, Some("default"), at).err().unwrap();
    assert_eq!(
        (err.code, err.reason),
        (410, "Expired"),
        "two ticks: compacted to {noted}"
    );
    let at_noted = s.list_at(&cm, Some("default"), noted).unwrap();
    assert_eq!(at_noted[0]["data"]["i"], "19", "{noted} is still readable");
    assert!(s.list_at(&cm, Some("default"), noted - 1).is_err());
    // Idle for many intervals: everything up to now is compacted, and the
    // history holds only what the watch cache keeps (its last 5).
    for i in 22..32 {
        modify(i);
    }
    assert!(
        s.list_at(&cm, Some("default"), noted + 1).is_ok(),
        "in etcd only"
    );
    s.let_etcd_time_pass(every * 10);
    assert!(s.list_at(&cm, Some("default"), noted + 1).is_err());
    let now = s.resource_version();
    assert!(s.list_at(&cm, Some("default"), now).is_ok());
    assert!(
        s.list_at(&cm, Some("default"), now - 1).is_err(),
        "a list at a resourceVersion reads etcd, whatever the watch cache holds"
    );
    modify(32);
    assert_eq!(s.history_len(), 5, "the watch cache's");
}

/// kube-apiserver's deployment strategy bumps `generation` when the
/// annotations change, since they are copied to the ReplicaSets; other kinds
/// bump only for their spec.
/// Creates `obj` as `kind`, then updates it with an annotation added:
/// the generation it ends with.
fn generation_after_annotating(store: &Store, kind: &str, obj: Value) -> Value {
    let (group, plural) = kind.split_once('/').unwrap();
    let kind = store.kind_of(group, plural).unwrap();
    let created = store
        .create(
            &kind,
            "default",
            obj,
            Target::Main,
            &WriteOptions::default(),
        )
        .unwrap();
    let mut annotated = (*created).clone();
    annotated["metadata"]["annotations"] = json!({"example.com/why": "release 2"});
    let name = meta::name(&annotated).to_string();
    let updated = store
        .update(
            &kind,
            "default",
            &name,
            annotated,
            Target::Main,
            &WriteOptions::default(),
        )
        .unwrap();
    updated["metadata"]["generation"].clone()
}

#[test]
fn a_deployments_annotations_bump_its_generation() {
    let store = store(100);
    let web = json!({"metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "a"}]}}}});
    assert_eq!(
        generation_after_annotating(&store, "apps/deployments", web),
        2
    );
    let svc = json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}});
    assert_eq!(generation_after_annotating(&store, "/services", svc), 1);
}

proptest::proptest! {
    /// A list at an earlier resourceVersion finds exactly the objects a
    /// list found then, in the same order, for one namespace and for all:
    /// a paginated list's later pages are read this way.
    #[test]
    fn a_list_at_an_earlier_version_finds_what_a_list_found_then(
        ops in proptest::collection::vec((0..3u8, 0..2usize, 0..5u8), 1..60)
    ) {
        let s = store(1000);
        // "a" and "a-b": a namespace whose name another one's begins with.
        let namespaces = ["a", "a-b"];
        for ns in namespaces {
            namespace(&s, ns);
        }
        let cm = kind(&s, "", "configmaps");
        let w = WriteOptions::default();
        let lists = |s: &Store| -> Vec<Vec<Arc<Value>>> {
            let all = (LabelSelector::default(), FieldSelector::default());
            [None, Some("a"), Some("a-b")]
                .map(|ns| s.list(&cm, ns, &all.0, &all.1).0)
                .to_vec()
        };
        let mut seen = vec![(s.resource_version(), lists(&s))];
        for (op, ns, name) in ops {
            let (ns, name) = (namespaces[ns], format!("cm-{name}"));
            let _ = match op {
                0 => s.delete(&cm, ns, &name, &Default::default()),
                _ => s.modify(&cm, ns, &name, Target::Main, true, &w, |cur| {
                    let mut o = cur.cloned().unwrap_or_else(|| json!({"metadata": {"name": name}}));
                    o["data"] = json!({"op": op.to_string()});
                    Ok(o)
                }),
            };
            seen.push((s.resource_version(), lists(&s)));
            // Listed while changes go on: the state kept for later pages
            // must stay the state at its version.
            let (mid, _) = seen[seen.len() / 2];
            for ns in [None, Some("a"), Some("a-b")] {
                let _ = s.list_at(&cm, ns, mid);
            }
        }
        for (at, then) in seen {
            for (ns, was) in [None, Some("a"), Some("a-b")].into_iter().zip(then) {
                let listed = s.list_at(&cm, ns, at).unwrap();
                let same = listed.len() == was.len()
                    && listed.iter().zip(&was).all(|(l, w)| Arc::ptr_eq(l, w));
                proptest::prop_assert!(same, "at {} in {:?}: {:?} where {:?} was listed", at, ns,
                    listed.iter().map(|o| meta::name(o)).collect::<Vec<_>>(),
                    was.iter().map(|o| meta::name(o)).collect::<Vec<_>>());
            }
        }
    }
}

/// An update that clears a terminating object's last finalizer deletes it:
/// the DELETED event carries the update, and a list at the revision before
/// finds the object as it was stored, finalizers and all (etcd's older
/// revision).
#[test]
fn clearing_the_last_finalizer_deletes_and_a_list_before_finds_it_as_stored() {
    let s = store(100);
    let cm = kind(&s, "", "configmaps");
    let w = WriteOptions::default();
    s.create(
        &cm,
        "default",
        json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
        Target::Main,
        &w,
    )
    .unwrap();
    s.delete(&cm, "default", "held", &DeleteOptions::default())
        .unwrap();
    let terminating = s.resource_version();
    let mut live = s.subscribe(&cm, Start::Now).unwrap().live;
    s.modify(&cm, "default", "held", Target::Main, false, &w, |c| {
        let mut n = c.unwrap().clone();
        n["metadata"]["finalizers"] = json!([]);
        Ok(n)
    })
    .unwrap();
    let event = live.try_recv().unwrap();
    assert_eq!(event.change, ChangeType::Deleted);
    let finalizers = &event.object["metadata"]["finalizers"];
    assert!(
        finalizers.as_array().is_none_or(|f| f.is_empty()),
        "the update: {finalizers}"
    );
    let then = s.list_at(&cm, Some("default"), terminating).unwrap();
    assert_eq!(then.len(), 1);
    assert_eq!(
        then[0]["metadata"]["finalizers"],
        json!(["example.com/hold"])
    );
    assert!(then[0]["metadata"]["deletionTimestamp"].is_string());
    assert!(
        s.list_at(&cm, Some("default"), s.resource_version())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn only_the_latest_changes_keep_the_encoding_their_watches_share() {
    let s = store(2 * CHANGES_HELD);
    let cm = kind(&s, "", "configmaps");
    let first = config_map(&s, "first");
    let sub = s.subscribe(&cm, Start::After(rv(&first) - 1)).unwrap();
    let change = sub.backlog[0].clone();
    let once = change.served("v1");
    assert!(Arc::ptr_eq(&change, &sub.backlog[0]));
    assert_eq!(
        once.as_ptr(),
        change.served("v1").as_ptr(),
        "encoded once, then shared"
    );
    let at_v2: Value = serde_json::from_slice(&change.served("v2")).unwrap();
    assert_eq!(
        at_v2["apiVersion"], "v2",
        "another version is encoded for itself"
    );
    for i in 1..CHANGES_HELD {
        config_map(&s, &format!("cm-{i}"));
    }
    assert!(
        change.encoded.lock().unwrap().is_some(),
        "the oldest of the latest"
    );
    config_map(&s, "one-more");
    assert!(
        change.encoded.lock().unwrap().is_none(),
        "no longer among the latest"
    );
    let again: Value = serde_json::from_slice(&change.served("v1")).unwrap();
    assert_eq!(again["metadata"]["name"], "first");
}
