//! Controller replicas share the releases, with no coordination beyond
//! Leases. Each replica holds a Lease of its own (`cutover-controller-replica-
//! <identity>`), and every release it drives has its Lease held under that
//! one, so one renewal covers all of them. A replica counts the live replica
//! Leases and takes free releases up to a fair share (the releases that need
//! a driver over the replicas alive); when a replica dies, its Lease lapses
//! and so do its releases' Leases, and the others take them within their
//! next look. When a replica joins, the others hand over what they hold
//! beyond the new share, only while another replica has room and once the
//! set of replicas has held for a lease duration (so a slow renewal seen
//! once moves nothing, and a replica alone never stops its own drivers).
//! Everything here is read from a watch of cutover's Leases: no request per
//! release and look.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fleet::cache::{lease_key, replicas_key};
use crate::fleet::lease::{self, LeaseView, replica_lease};
use crate::fleet::watches::{SharedWatch, WatchState};

/// Who drives a release, as this replica reads its Lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Driven {
    /// Nobody alive holds it: any replica with room may take it.
    Free,
    /// Held by this replica (taken before a restart under the same identity).
    Here,
    /// Driven by another replica or a `cutover run` that is alive.
    Elsewhere(String),
}

/// One replica's view of the others and of the releases' Leases.
pub struct Shard {
    identity: String,
    namespace: String,
    leases: Arc<SharedWatch<LeaseView>>,
    /// As of the last `refresh`.
    view: Mutex<View>,
    duration: Duration,
}

/// The live replicas and how many releases each holds.
struct View {
    /// Releases held under each live replica's Lease, by identity (this
    /// replica always among them).
    held: HashMap<String, usize>,
    /// Since when the set of live replicas has been what it is.
    since: Instant,
}

impl Shard {
    pub fn new(
        identity: &str,
        namespace: &str,
        leases: Arc<SharedWatch<LeaseView>>,
        duration: Duration,
    ) -> Shard {
        Shard {
            identity: identity.to_string(),
            namespace: namespace.to_string(),
            leases,
            view: Mutex::new(View {
                held: HashMap::from([(identity.to_string(), 0)]),
                since: Instant::now(),
            }),
            duration,
        }
    }

    /// How often a release driven elsewhere, or left for lack of room, is
    /// looked at again: a fifth of the lease, so a dead replica's releases
    /// are taken soon after its Lease lapses.
    pub fn recheck(&self) -> Duration {
        self.duration / 5
    }

    /// Counts again, from the Leases' watch, the live replicas and the
    /// releases held under each (one pass over cutover's Leases; the
    /// reconciler calls it every second, not per release).
    pub fn refresh(&self) {
        let mut held: HashMap<String, usize> = HashMap::from([(self.identity.clone(), 0)]);
        for l in self.leases.get(&replicas_key(&self.namespace)) {
            if let Some(holder) = l.live_holder()
                && *l.name == replica_lease(holder)
            {
                held.entry(holder.to_string()).or_default();
            }
        }
        for l in self.leases.get_all() {
            let Some(holder) = l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) else {
                continue;
            };
            if let (Some(n), Some((ns, name))) = (held.get_mut(holder), l.parent_reference())
                && ns == self.namespace
                && name == replica_lease(holder)
            {
                *n += 1;
            }
        }
        let mut view = self.view.lock().expect("view lock");
        let same = view.held.len() == held.len() && held.keys().all(|k| view.held.contains_key(k));
        if !same {
            view.since = Instant::now();
        }
        view.held = held;
    }

    /// The replicas alive at the last look, this one included.
    pub fn replicas(&self) -> usize {
        self.view.lock().expect("view lock").held.len()
    }

    /// The most releases this replica should drive while `active` releases
    /// need a driver: an even split, rounded up so the shares cover them all.
    pub fn share(&self, active: usize) -> usize {
        active.div_ceil(self.replicas()).max(1)
    }

    /// Whether this replica should hand a release over: it holds more than
    /// its share, another live replica has room, and the set of replicas has
    /// held for a lease duration (a slow renewal seen once moves nothing).
    /// A replica alone never hands over, however few releases remain. A yes
    /// counts the release as handed over until the next `refresh`, so a burst
    /// of looks hands over no more than the excess.
    pub fn hand_over_one(&self, active: usize) -> bool {
        let share = self.share(active);
        let mut view = self.view.lock().expect("view lock");
        let mine = view.held.get(&self.identity).copied().unwrap_or(0);
        let room = view
            .held
            .iter()
            .any(|(who, n)| *who != self.identity && *n < share);
        let hand_over = mine > share && room && view.since.elapsed() >= self.duration;
        if hand_over && let Some(n) = view.held.get_mut(&self.identity) {
            *n -= 1;
        }
        hand_over
    }

    /// Who drives `release` in `namespace`. With the Leases' watch not
    /// healthy, `Free`: taking the Lease is what decides, and it refuses a
    /// Lease held by someone alive.
    pub fn driven(&self, namespace: &str, release: &str) -> Driven {
        if self.leases.state() != WatchState::Healthy {
            return Driven::Free;
        }
        let key = lease_key(namespace, &lease::lease_name(release));
        let Some(l) = self.leases.get(&key).into_iter().next() else {
            return Driven::Free;
        };
        let Some(holder) = l.spec.as_ref().and_then(|s| s.holder_identity.clone()) else {
            return Driven::Free;
        };
        if holder.is_empty() {
            return Driven::Free;
        }
        let alive = match l.parent_reference() {
            // Held under a replica's Lease: alive while that replica holds it.
            Some((ns, name)) => {
                self.leases
                    .get(&lease_key(ns, name))
                    .iter()
                    .find(|p| *p.name == *name)
                    .and_then(|p| p.live_holder())
                    == Some(holder.as_str())
            }
            None => l.live_holder().is_some(),
        };
        match (alive, holder == self.identity) {
            (false, _) => Driven::Free,
            (true, true) => Driven::Here,
            (true, false) => Driven::Elsewhere(holder),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    use super::*;
    use crate::fleet::lease::{HELD_UNDER, lease_name};

    fn lease(name: &str, holder: &str, renewed_secs_ago: i64, under: Option<&str>) -> Lease {
        let renewed = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(renewed_secs_ago);
        Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                annotations: under.map(|u| [(HELD_UNDER.to_string(), format!("shop/{u}"))].into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..Default::default()
            }),
        }
    }

    fn watch(leases: Vec<Lease>) -> Arc<SharedWatch<LeaseView>> {
        let objects = leases
            .into_iter()
            .map(|l| {
                let name = l.metadata.name.clone().unwrap();
                (
                    format!("shop/{name}"),
                    lease_key("shop", &name),
                    LeaseView::of(l),
                )
            })
            .collect();
        Arc::new(SharedWatch::holding("leases", objects))
    }

    /// A release's own Lease is renewed only by its replica's: it is driven
    /// elsewhere while that replica's Lease is live, however old its own
    /// renew time (read wrongly, every release of another replica looked
    /// free, and each look cost a driver, two GETs and a refusal).
    #[test]
    fn a_release_held_under_a_live_replica_is_driven_there_and_free_once_that_replica_lapses() {
        let held = |who: &str, age: i64| {
            vec![
                lease(&replica_lease(who), who, age, None),
                lease(&lease_name("rel-0"), who, 120, Some(&replica_lease(who))),
            ]
        };
        let d = Duration::from_secs(15);
        let other = Shard::new("ctl-0", "shop", watch(held("ctl-1", 1)), d);
        assert_eq!(
            other.driven("shop", "rel-0"),
            Driven::Elsewhere("ctl-1".into())
        );
        let mine = Shard::new("ctl-1", "shop", watch(held("ctl-1", 1)), d);
        assert_eq!(mine.driven("shop", "rel-0"), Driven::Here);
        let lapsed = Shard::new("ctl-0", "shop", watch(held("ctl-1", 60)), d);
        assert_eq!(lapsed.driven("shop", "rel-0"), Driven::Free);
        assert_eq!(
            other.driven("shop", "rel-9"),
            Driven::Free,
            "no Lease at all"
        );
        other.refresh();
        assert_eq!(other.replicas(), 2, "ctl-1's replica Lease is live");
    }
}
