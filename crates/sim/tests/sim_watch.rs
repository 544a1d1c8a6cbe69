//! Watches and selectors of the simulated API server through the real
//! `kube` client: resuming from a resourceVersion, starting from the current
//! objects, bookmarks and timeouts, 410 Gone and the relist it forces,
//! kube-runtime's watcher, label and field selectors.

mod support;

use std::time::Duration;

use cutover_sim::SimFleet;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

async fn start(history: usize) -> (SimFleet, Client, tempfile::TempDir) {
    let (fleet, dir) = support::start_sim(support::one_cluster_with_history(history), 600.0).await;
    let client = support::sim_client(&fleet, "one").await;
    (fleet, client, dir)
}

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"v": "1"}}),
    )
    .unwrap()
}

/// Changes ConfigMap `a`'s data `n` times.
async fn bump(cms: &Api<ConfigMap>, n: usize) {
    for i in 0..n {
        cms.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": i.to_string()}})),
        )
        .await
        .unwrap();
    }
}

/// A watch from `from`, which must begin with 410 Expired.
async fn assert_expired(cms: &Api<ConfigMap>, from: &str) {
    let mut stale = cms
        .watch(&WatchParams::default().timeout(5), from)
        .await
        .unwrap()
        .boxed();
    match stale.next().await {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        Some(Err(kube::Error::Api(e))) => assert_eq!(e.code, 410),
        other => panic!("expected 410 Expired, got {other:?}"),
    }
}

#[tokio::test]
async fn watches_resume_and_expire() {
    let (fleet, client, _dir) = start(8).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let a = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let from = a.metadata.resource_version.clone().unwrap();
    cms.create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    cms.delete("b", &DeleteParams::default()).await.unwrap();

    // Resume after `a` was created: exactly what happened since, in order.
    let wp = WatchParams::default().timeout(5);
    let events: Vec<(String, String)> = cms
        .watch(&wp, &from)
        .await
        .unwrap()
        .try_filter_map(|e| async move {
            Ok(match e {
                WatchEvent::Added(o) => Some(("ADDED".to_string(), o.metadata.name.unwrap())),
                WatchEvent::Modified(o) => Some(("MODIFIED".to_string(), o.metadata.name.unwrap())),
                WatchEvent::Deleted(o) => Some(("DELETED".to_string(), o.metadata.name.unwrap())),
                _ => None,
            })
        })
        .take(3)
        .try_collect()
        .await
        .unwrap();
    let want = [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")];
    assert_eq!(events, want.map(|(t, n)| (t.to_string(), n.to_string())));

    // Live events arrive too, filtered by selector.
    let live = cms
        .watch(
            &WatchParams::default().labels("team=x").timeout(5),
            &cms.list(&ListParams::default())
                .await
                .unwrap()
                .metadata
                .resource_version
                .unwrap(),
        )
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("other", json!({"team": "y"})))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("mine", json!({"team": "x"})))
        .await
        .unwrap();
    let first = live
        .try_filter(|e| futures::future::ready(!matches!(e, WatchEvent::Bookmark(_))))
        .boxed()
        .next()
        .await
        .unwrap()
        .unwrap();
    match first {
        WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("mine")),
        other => panic!("unexpected {other:?}"),
    }

    // History holds 8 changes: after 20 more, the old version is gone (410 Expired).
    bump(&cms, 20).await;
    assert_expired(&cms, &from).await;
    // The client relists and watches from the new version.
    let relisted = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(relisted.items.len(), 3);
    let rv = relisted.metadata.resource_version.unwrap();
    let mut resumed = cms
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    loop {
        match resumed.next().await.unwrap().unwrap() {
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Deleted(o) => break assert_eq!(o.metadata.name.as_deref(), Some("a")),
            other => panic!("unexpected {other:?}"),
        }
    }
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_watch_from_zero_starts_with_the_current_objects_and_a_runtime_watcher_works() {
    let (fleet, client, _dir) = start(1000).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for n in ["x", "y"] {
        cms.create(&PostParams::default(), &cm(n, json!({})))
            .await
            .unwrap();
    }
    let names: Vec<String> = cms
        .watch(&WatchParams::default().timeout(2), "0")
        .await
        .unwrap()
        .try_filter_map(|e| async move {
            Ok(if let WatchEvent::Added(o) = e {
                o.metadata.name
            } else {
                None
            })
        })
        .take(2)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(names, ["x", "y"]);

    use kube::runtime::{WatchStreamExt, watcher};
    let mut stream = watcher(cms.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        seen.insert(stream.next().await.unwrap().unwrap().metadata.name.unwrap());
    }
    cms.create(&PostParams::default(), &cm("z", json!({})))
        .await
        .unwrap();
    loop {
        if stream
            .next()
            .await
            .unwrap()
            .unwrap()
            .metadata
            .name
            .as_deref()
            == Some("z")
        {
            break;
        }
    }
    fleet.shutdown().await;
}

#[tokio::test]
async fn label_and_field_selectors() {
    let (fleet, client, _dir) = start(1000).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &cm("a", json!({"app": "web", "colour": "blue"})),
    )
    .await
    .unwrap();
    cms.create(
        &PostParams::default(),
        &cm("b", json!({"app": "web", "colour": "green"})),
    )
    .await
    .unwrap();
    cms.create(&PostParams::default(), &cm("c", json!({"app": "api"})))
        .await
        .unwrap();
    let names = |lp: ListParams| {
        let cms = cms.clone();
        async move {
            let mut n: Vec<String> = cms
                .list(&lp)
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|c| c.metadata.name)
                .collect();
            n.sort();
            n.join(",")
        }
    };
    let cases = [
        ("app=web", "a,b"),
        ("app!=web", "c"),
        ("colour in (green,red)", "b"),
        ("colour notin (green)", "a,c"),
        ("colour", "a,b"),
        ("!colour", "c"),
        ("app=web,colour=blue", "a"),
    ];
    for (sel, want) in cases {
        assert_eq!(
            names(ListParams::default().labels(sel)).await,
            want,
            "{sel}"
        );
    }
    assert_eq!(
        names(ListParams::default().fields("metadata.name=b")).await,
        "b"
    );
    assert_eq!(
        names(ListParams::default().fields("metadata.name!=b,metadata.namespace=default")).await,
        "a,c"
    );
    let nss: Api<Namespace> = Api::all(client.clone());
    let kube_system = nss.get("kube-system").await.unwrap();
    assert!(
        kube_system.metadata.uid.is_some(),
        "kube-system has a UID that tells clusters apart"
    );
    let bad = cms
        .list(&ListParams::default().labels("a in b"))
        .await
        .unwrap_err();
    assert_eq!(support::api_error(bad).0, 400);
    fleet.shutdown().await;
}

#[tokio::test]
async fn idle_watches_get_bookmarks_and_end_at_their_timeout() {
    let (fleet, client, _dir) = start(1000).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let rv: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    let events: Vec<WatchEvent<ConfigMap>> = tokio::time::timeout(
        Duration::from_secs(60),
        cms.watch(&WatchParams::default().timeout(3), &rv.to_string())
            .await
            .unwrap()
            .try_collect(),
    )
    .await
    .expect("the server ends the watch at its timeout")
    .unwrap();
    let bookmarks: Vec<u64> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Bookmark(b) => b.metadata.resource_version.parse().unwrap(),
            other => panic!("an idle watch got {other:?}"),
        })
        .collect();
    // Bookmarks come a minute apart, and once 2 s before the deadline: a 3 s
    // watch gets exactly that one (cache_watcher.go nextBookmarkTime).
    assert_eq!(bookmarks.len(), 1, "{bookmarks:?}");
    assert!(bookmarks.iter().all(|b| *b >= rv));
    let quiet = cms
        .watch(
            &WatchParams::default().disable_bookmarks().timeout(2),
            &rv.to_string(),
        )
        .await
        .unwrap();
    assert_eq!(
        quiet.try_collect::<Vec<_>>().await.unwrap().len(),
        0,
        "no bookmarks unless asked"
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn streaming_lists_end_their_initial_events_with_a_marked_bookmark() {
    let (fleet, client, _dir) = start(1000).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for n in ["a", "b"] {
        cms.create(&PostParams::default(), &cm(n, json!({})))
            .await
            .unwrap();
    }
    let mut stream = cms
        .watch(&WatchParams::streaming_lists().timeout(5), "")
        .await
        .unwrap()
        .boxed();
    let mut added = Vec::new();
    loop {
        match stream.next().await.unwrap().unwrap() {
            WatchEvent::Added(o) => added.push(o.metadata.name.unwrap()),
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(added, ["a", "b"]);
    fleet.shutdown().await;
}

/// A watch from a resourceVersion the server has not reached waits a few
/// seconds for it, then is a 504 `Too large resource version` with a retry
/// hint (the watch cache's `blockTimeout`), not a watch that never ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_resource_version_ahead_of_the_server_is_a_504() {
    let (fleet, _client, _dir) = start(8).await;
    let url = format!(
        "{}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=999999",
        fleet.url("one").unwrap()
    );
    let token = fleet.admin_token("one").unwrap();
    let r = support::http_as(Some(&token), http::Method::GET, &url, None, String::new()).await;
    assert_eq!(r.code, 504, "{}", r.body);
    let status: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(status["reason"], "Timeout");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("Too large resource version: 999999, current: "),
        "{status}"
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "ResourceVersionTooLarge"
    );
    assert_eq!(status["details"]["retryAfterSeconds"], 1);
}

/// The history a watch resumes from is a time window, as the watch cache's
/// (75 s by default): within it, far more changes than the minimum count are
/// kept; once they age out, a watch from before them gets 410 Expired.
#[tokio::test]
async fn watch_history_is_a_time_window_beyond_its_minimum_count() {
    let (fleet, dir) = support::start_sim(support::one_cluster_keeping(4, "10s"), 600.0).await;
    let client = support::sim_client(&fleet, "one").await;
    let _dir = dir;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let a = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let from = a.metadata.resource_version.clone().unwrap();
    bump(&cms, 12).await;
    let replayed: Vec<WatchEvent<ConfigMap>> = cms
        .watch(&WatchParams::default().timeout(5), &from)
        .await
        .unwrap()
        .try_filter(|e| futures::future::ready(matches!(e, WatchEvent::Modified(_))))
        .take(12)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(replayed.len(), 12, "12 changes kept with a minimum of 4");
    // Past the window, the next change lets the old ones go.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    bump(&cms, 1).await;
    assert_expired(&cms, &from).await;
    fleet.shutdown().await;
}
