//! Freezes set or lifted without cutover's CLI (`kubectl apply` of a
//! DeployFreeze, `kubectl edit` of its `lifted`, a delete) announced to the
//! notification receivers by the leading controller. `cutover freeze` and
//! `unfreeze` announce their own: a freeze they create carries the
//! `managed-by: cutover` label and a lift they make the `lift-announced`
//! annotation, so nothing is announced twice. What the fleet held before the
//! controller began leading (created before then, in the fleet's time) is
//! taken as known, not announced again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use tokio::sync::Notify;

use crate::clock::SharedClock;
use crate::fleet::FleetClients;
use crate::freeze::DeployFreeze;
use crate::labels;
use crate::notify::Notifier;
use crate::spec::notify::{Event, FreezeRef, Notification};

/// One freeze id as the fleet holds it now.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    clusters: Vec<String>,
    lifted: bool,
    /// Set or lifted by cutover's CLI, which announced it.
    set_by_cli: bool,
    lift_by_cli: bool,
    reason: String,
    author: String,
    lifted_by: String,
    lift_reason: String,
    /// When the API server created its first copy.
    created: Option<jiff::Timestamp>,
}

/// Runs until dropped: announces each freeze that appears and each that is
/// lifted or deleted, across every cluster of the fleet.
pub async fn announce(clients: FleetClients, notifier: Notifier, clock: SharedClock) {
    if !notifier.has_receivers() {
        return;
    }
    let leading_since = clock.now();
    let changed = Arc::new(Notify::new());
    let watches: Vec<_> = clients
        .iter()
        .map(|c| {
            let w = clients.watches.freezes(c);
            w.subscribe("", &changed);
            (c.name.clone(), w)
        })
        .collect();
    // What the fleet holds once every watch listed (or after a while, what
    // the ones that did hold) is known already.
    for _ in 0..60 {
        if watches.iter().all(|(_, w)| w.healthy().is_ok()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut known = seen(&watches);
    // Those created since this controller began leading are news, even if
    // its first listing already held them.
    known.retain(|_, s| s.created.is_none_or(|c| c < leading_since));
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        // A watch that fails keeps what it last listed: a freeze is gone only
        // when every cluster's watch is healthy and none holds it.
        let all_read = watches.iter().all(|(_, w)| w.healthy().is_ok());
        let now = seen(&watches);
        for (id, s) in &now {
            match known.get(id) {
                None if !s.set_by_cli => send(&notifier, &clock, Event::FreezeSet, id, s),
                Some(before) if !before.lifted && s.lifted && !s.lift_by_cli => {
                    send(&notifier, &clock, Event::FreezeLifted, id, s)
                }
                _ => {}
            }
        }
        if all_read {
            for (id, s) in known.iter().filter(|(id, _)| !now.contains_key(*id)) {
                if !s.lifted {
                    let gone = Seen {
                        lifted_by: "someone who deleted it".into(),
                        lift_reason: "the DeployFreeze was deleted".into(),
                        ..s.clone()
                    };
                    send(&notifier, &clock, Event::FreezeLifted, id, &gone);
                }
            }
            known = now;
        } else {
            known.extend(now);
        }
    }
}

fn seen(
    watches: &[(
        String,
        Arc<crate::fleet::watches::SharedWatch<DeployFreeze>>,
    )],
) -> BTreeMap<String, Seen> {
    let mut out: BTreeMap<String, Seen> = BTreeMap::new();
    for (cluster, w) in watches {
        for f in w.get("") {
            let id = f.name_any();
            let by_cli = f.labels().get(labels::MANAGED_BY).map(String::as_str)
                == Some(labels::MANAGED_BY_VALUE);
            let lift_by_cli = f.annotations().contains_key(labels::LIFT_ANNOUNCED);
            let e = out.entry(id).or_insert_with(|| Seen {
                clusters: Vec::new(),
                lifted: true,
                set_by_cli: true,
                lift_by_cli: true,
                reason: f.spec.reason.clone(),
                author: f.spec.author.clone(),
                lifted_by: String::new(),
                lift_reason: String::new(),
                created: None,
            });
            let created = f.metadata.creation_timestamp.as_ref().map(|t| t.0);
            e.created = match (e.created, created) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            e.clusters.push(cluster.clone());
            // Set by the CLI only if every copy says so; lifted once every copy is.
            e.set_by_cli &= by_cli;
            e.lifted &= f.spec.lifted.is_some();
            e.lift_by_cli &= lift_by_cli;
            if let Some(l) = &f.spec.lifted {
                e.lifted_by = l.by.clone();
                e.lift_reason = l.reason.clone();
            }
        }
    }
    out
}

fn send(notifier: &Notifier, clock: &SharedClock, event: Event, id: &str, s: &Seen) {
    let clusters: BTreeSet<&String> = s.clusters.iter().collect();
    let on = clusters
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let (message, by, reason) = match event {
        Event::FreezeLifted => (
            format!(
                "freeze {id} lifted by {} on {on}: {}",
                s.lifted_by, s.lift_reason
            ),
            s.lifted_by.clone(),
            s.lift_reason.clone(),
        ),
        _ => (
            format!(
                "deploys frozen by {} on {on} ({id}): {}",
                s.author, s.reason
            ),
            s.author.clone(),
            s.reason.clone(),
        ),
    };
    tracing::info!(
        freeze = id,
        event = event.name(),
        "announcing a freeze change made outside cutover"
    );
    notifier.send(
        None,
        &Notification::of_freeze(
            event,
            clock.now(),
            message,
            FreezeRef {
                id: id.to_string(),
                clusters: clusters.into_iter().cloned().collect(),
                reason,
                by,
            },
        ),
    );
}
