//! Controller replicas share the releases, with no coordination beyond
//! Leases. Each replica holds a Lease of its own (`cutover-controller-replica-
//! <identity>`), and every release it drives has its Lease held under that
//! one, so one renewal covers all of them. A replica counts the live replica
//! Leases and takes free releases up to a fair share (the releases that need
//! a driver over the replicas alive); when a replica dies, its Lease lapses
//! and so do its releases' Leases, and the others take them within their
//! next look. A replica takes nothing until it has read the Leases and
//! waited a fifth of a lease after (`settled`): replicas started together
//! (a Deployment rolled out) see each other before any takes a share meant
//! for fewer. When a replica joins, the others hand over what they drive
//! beyond the new share, no more than the others have room for, only once
//! the set of replicas has held for a lease duration (so a slow renewal
//! seen once moves nothing, and a replica alone never stops its own
//! drivers), and releases not started yet before those on their way. A
//! release on its way moves only for a replica that joined, never because
//! others ended: its share is counted from the most releases that needed a
//! driver since the set of replicas last changed. Counted from those left,
//! the share shrinks as releases end, a little sooner on one replica than
//! on another, and the replicas handed releases to each other in their
//! bakes (2,934 in the last minutes of 5,000 on five replicas), each
//! restarting its caches and gate runs elsewhere for no gain: a replica
//! whose releases end takes new ones as they come.
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
    /// When a look first found the Leases' watch listed.
    synced: Option<Instant>,
    /// The time Leases are judged live at (`as_of`).
    as_of: jiff::Timestamp,
    /// Releases handed over since the last look: the others' room is
    /// counted from their Leases, which show a release taken only once it is.
    handed: usize,
    /// The most releases that needed a driver at any look since the set of
    /// live replicas last changed: what the share of releases on their way
    /// is counted from.
    peak: usize,
}

/// What this replica drives, as its reconciler counts its own drivers.
#[derive(Debug, Clone, Copy)]
pub struct Driving {
    /// Drivers running and not asked to stop.
    pub running: usize,
    /// Of them, those whose release has no status yet (not started).
    pub unstarted: usize,
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
                synced: None,
                as_of: jiff::Timestamp::now(),
                handed: 0,
                peak: 0,
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
        let replicas = self.leases.get(&replicas_key(&self.namespace));
        let at = as_of(&replicas, &self.identity);
        let mut held: HashMap<String, usize> = HashMap::from([(self.identity.clone(), 0)]);
        for l in &replicas {
            if let Some(holder) = l.live_holder_at(at)
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
        let healthy = self.leases.state() == WatchState::Healthy;
        let mut view = self.view.lock().expect("view lock");
        let same = view.held.len() == held.len() && held.keys().all(|k| view.held.contains_key(k));
        if !same {
            view.since = Instant::now();
            view.peak = 0;
        }
        if healthy && view.synced.is_none() {
            view.synced = Some(Instant::now());
        }
        view.held = held;
        view.as_of = at;
        view.handed = 0;
    }

    /// Whether this replica may take free releases: the Leases' watch is
    /// listed and was first found so a fifth of a lease ago. Before, it
    /// cannot count the others, and would take a share meant for itself
    /// alone. Nor while the watch fails (a slow or restarted server): every
    /// Lease it shows lapses as its renewals stop showing, and each release
    /// taken on that would cost a driver, two GETs and a refusal.
    pub fn settled(&self) -> bool {
        self.leases.state() == WatchState::Healthy
            && self
                .view
                .lock()
                .expect("view lock")
                .synced
                .is_some_and(|at| at.elapsed() >= self.recheck())
    }
    /// The replicas alive at the last look, this one included.
    pub fn replicas(&self) -> usize {
        self.view.lock().expect("view lock").held.len()
    }

    /// The most releases this replica should drive while `active` releases
    /// need a driver: an even split, rounded up so the shares cover them all.
    pub fn share(&self, active: usize) -> usize {
        split(active, self.replicas())
    }

    /// Whether this replica should hand over one release it drives (one that
    /// has `started`, or not), and if so the share it drives beyond: it
    /// drives more than its share, the others have room for more than it
    /// handed over since the last look, and the set of replicas has held for
    /// a lease duration (a slow renewal seen once moves nothing). A replica
    /// alone never hands over, however few releases remain. Releases not
    /// started go first, beyond the share of the releases that need a driver
    /// now: handing one over costs nothing. One on its way starts its caches
    /// and gate runs again elsewhere, so it goes only beyond the share of the
    /// most releases that needed a driver since the replicas last changed: a
    /// replica joined, not releases ended. Counted from the drivers running
    /// here, not from the Leases: a driver asked to stop holds its Lease
    /// until it reaches a safe point, and counting it would hand over more
    /// than the excess.
    pub fn hand_over_one(&self, active: usize, here: Driving, started: bool) -> Option<usize> {
        let mut view = self.view.lock().expect("view lock");
        view.peak = view.peak.max(active);
        let replicas = view.held.len();
        // The others take up to the share of what needs a driver now.
        let share = split(active, replicas);
        let room: usize = view
            .held
            .iter()
            .filter(|(who, _)| **who != self.identity)
            .map(|(_, n)| share.saturating_sub(*n))
            .sum();
        let limit = if started {
            split(view.peak, replicas)
        } else {
            share
        };
        let hand_over = here.running > limit
            && view.handed < room
            && !(started && here.unstarted > 0)
            && view.since.elapsed() >= self.duration;
        if hand_over {
            view.handed += 1;
        }
        hand_over.then_some(limit)
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
        let at = self.view.lock().expect("view lock").as_of;
        let alive = match l.parent_reference() {
            // Held under a replica's Lease: alive while that replica holds it.
            Some((ns, name)) => {
                self.leases
                    .get(&lease_key(ns, name))
                    .iter()
                    .find(|p| *p.name == *name)
                    .and_then(|p| p.live_holder_at(at))
                    == Some(holder.as_str())
            }
            None => l.live_holder_at(at).is_some(),
        };
        match (alive, holder == self.identity) {
            (false, _) => Driven::Free,
            (true, true) => Driven::Here,
            (true, false) => Driven::Elsewhere(holder),
        }
    }
}

/// An even split of `releases` over `replicas`, rounded up so the shares
/// cover them all, and at least one.
fn split(releases: usize, replicas: usize) -> usize {
    releases.div_ceil(replicas.max(1)).max(1)
}

/// The time the replicas' Leases are judged live at: this replica's own
/// last renewal as the watch shows it (or now, if that is earlier or the
/// watch does not show it yet). A watch that delivers late, as one from a
/// server under load does, shows every Lease as renewed some seconds ago;
/// judged by the clock, a replica would count the others dead, take a
/// share meant for itself alone and try to take the releases they drive.
/// Its own Lease, renewed every few seconds, says how far the watch has
/// come: a replica is dead when it had not renewed for a lease by then, as
/// client-go's leader election judges a leader by when it last saw the
/// record change, not by the time written in it (`observedTime`).
fn as_of(replicas: &[Arc<LeaseView>], identity: &str) -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    let own = replica_lease(identity);
    replicas
        .iter()
        .find(|l| *l.name == own)
        .and_then(|l| l.renewed())
        .map_or(now, |seen| seen.min(now))
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

    /// Replicas `(identity, releases held)`, every one live, each release's
    /// Lease held under its replica's.
    fn fleet_of(replicas: &[(&str, usize)]) -> Arc<SharedWatch<LeaseView>> {
        let mut leases = Vec::new();
        let mut n = 0;
        for (who, held) in replicas {
            leases.push(lease(&replica_lease(who), who, 1, None));
            for _ in 0..*held {
                leases.push(lease(
                    &lease_name(&format!("rel-{n}")),
                    who,
                    120,
                    Some(&replica_lease(who)),
                ));
                n += 1;
            }
        }
        watch(leases)
    }

    /// `n` drivers running, every one started.
    fn running(n: usize) -> Driving {
        Driving {
            running: n,
            unstarted: 0,
        }
    }

    /// Asks as the reconciler does, one driver at a time, each yes stopping
    /// one: how many are handed over before a no.
    fn hand_over_all(shard: &Shard, active: usize, mut here: Driving, started: bool) -> usize {
        let mut handed = 0;
        while shard.hand_over_one(active, here, started).is_some() {
            here.running -= 1;
            handed += 1;
        }
        handed
    }

    /// Drivers asked to stop hold their Leases until they reach a safe
    /// point: counted from the Leases, the excess was handed over again at
    /// every look while they waited, down to far below the share.
    #[test]
    fn a_replica_hands_over_what_it_drives_beyond_its_share_not_what_its_leases_show() {
        // 18 releases over three replicas: a share of 6. ctl-0's Leases
        // show 10, but three of its drivers are already stopping.
        let shard = Shard::new(
            "ctl-0",
            "shop",
            fleet_of(&[("ctl-0", 10), ("ctl-1", 2), ("ctl-2", 5)]),
            Duration::ZERO,
        );
        shard.refresh();
        assert_eq!(shard.share(18), 6);
        let here = running(7);
        assert_eq!(hand_over_all(&shard, 18, here, true), 1);
        // At the next look, with none of them taken yet, nothing more.
        shard.refresh();
        let here = running(6);
        assert_eq!(hand_over_all(&shard, 18, here, true), 0);
    }

    #[test]
    fn a_replica_hands_over_no_more_than_the_others_have_room_for_between_looks() {
        // A share of 7; the others have room for 4 + 1.
        let shard = Shard::new(
            "ctl-0",
            "shop",
            fleet_of(&[("ctl-0", 13), ("ctl-1", 3), ("ctl-2", 6)]),
            Duration::ZERO,
        );
        shard.refresh();
        assert_eq!(shard.share(21), 7);
        let here = running(13);
        assert_eq!(hand_over_all(&shard, 21, here, true), 5);
        // The next look finds them not taken yet (their Leases still this
        // replica's): room for five again, but only one more is excess.
        shard.refresh();
        let here = running(8);
        assert_eq!(hand_over_all(&shard, 21, here, true), 1);
        // Alone, a replica hands nothing over.
        let alone = Shard::new("ctl-0", "shop", fleet_of(&[("ctl-0", 13)]), Duration::ZERO);
        alone.refresh();
        let here = running(13);
        assert_eq!(hand_over_all(&alone, 5, here, true), 0);
    }

    #[test]
    fn releases_not_started_are_handed_over_before_those_on_their_way() {
        let shard = Shard::new(
            "ctl-0",
            "shop",
            fleet_of(&[("ctl-0", 8), ("ctl-1", 2)]),
            Duration::ZERO,
        );
        shard.refresh();
        let here = Driving {
            running: 8,
            unstarted: 1,
        };
        assert_eq!(shard.hand_over_one(10, here, true), None, "one on its way");
        assert_eq!(
            shard.hand_over_one(10, here, false),
            Some(5),
            "one not started"
        );
        let here = running(7);
        assert_eq!(
            shard.hand_over_one(10, here, true),
            Some(5),
            "none left unstarted: one on its way"
        );
    }

    /// As releases end, the share of those left shrinks, a little sooner on
    /// one replica than on another: counted from it, the replicas handed
    /// each other releases in their bakes (2,934 in the last minutes of
    /// 5,000 on five replicas). One on its way moves only for a replica
    /// that joined.
    #[test]
    fn releases_ending_move_no_release_on_its_way_and_a_replica_joining_does() {
        let leases = fleet_of(&[("ctl-0", 6), ("ctl-1", 2), ("ctl-2", 3)]);
        let shard = Shard::new("ctl-0", "shop", leases.clone(), Duration::ZERO);
        shard.refresh();
        assert_eq!(shard.hand_over_one(18, running(6), true), None, "its share");
        // Seven of the others' releases ended: a share of 4 now, and room
        // for 3 on the others.
        assert_eq!(shard.share(11), 4);
        assert_eq!(
            hand_over_all(&shard, 11, running(6), true),
            0,
            "releases ended, no replica joined"
        );
        let one_unstarted = Driving {
            running: 6,
            unstarted: 1,
        };
        assert_eq!(
            shard.hand_over_one(11, one_unstarted, false),
            Some(4),
            "one not started goes beyond the share of those left"
        );
        // A fourth replica joins, driving nothing: a share of 3 of the 11,
        // and room for 1 + 0 + 3 on the others.
        let joined = replica_lease("ctl-3");
        leases.put(
            &format!("shop/{joined}"),
            &lease_key("shop", &joined),
            LeaseView::of(lease(&joined, "ctl-3", 1, None)),
        );
        shard.refresh();
        assert_eq!(shard.replicas(), 4);
        assert_eq!(hand_over_all(&shard, 11, running(6), true), 3);
    }

    #[test]
    fn nothing_is_handed_over_until_the_replicas_have_held_for_a_lease_and_nothing_taken_until_settled()
     {
        let d = Duration::from_secs(15);
        let shard = Shard::new("ctl-0", "shop", fleet_of(&[("ctl-0", 8), ("ctl-1", 0)]), d);
        assert!(!shard.settled(), "the Leases not counted yet");
        shard.refresh();
        assert_eq!(shard.replicas(), 2);
        assert!(!shard.settled(), "counted, but not a fifth of a lease ago");
        let here = running(8);
        assert_eq!(
            shard.hand_over_one(8, here, false),
            None,
            "the replicas were first seen now"
        );
        let at_once = Shard::new("ctl-0", "shop", fleet_of(&[("ctl-0", 0)]), Duration::ZERO);
        assert!(!at_once.settled(), "no look yet");
        at_once.refresh();
        assert!(at_once.settled());
    }

    /// A watch from a server under load delivers late: every Lease in it,
    /// this replica's own among them, looks renewed half a minute ago.
    /// Judged by the clock every other replica was dead, so one replica took
    /// a share meant for itself alone (1,117 drivers where 521 was its share,
    /// at 5,000 releases on five replicas).
    #[test]
    fn leases_are_judged_as_of_this_replicas_own_last_renewal_the_watch_shows() {
        let held = |who: &str, age: i64, n: usize| {
            let mut v = vec![lease(&replica_lease(who), who, age, None)];
            for i in 0..n {
                v.push(lease(
                    &lease_name(&format!("{who}-rel-{i}")),
                    who,
                    120,
                    Some(&replica_lease(who)),
                ));
            }
            v
        };
        // ctl-0's view, 30 s behind: ctl-1 renewed about when ctl-0 did,
        // ctl-3 just after it, ctl-2 had not renewed for a lease by then.
        let mut leases = held("ctl-0", 30, 1);
        leases.extend(held("ctl-1", 31, 2));
        leases.extend(held("ctl-2", 60, 3));
        leases.extend(held("ctl-3", 29, 1));
        let shard = Shard::new("ctl-0", "shop", watch(leases), Duration::from_secs(15));
        shard.refresh();
        assert_eq!(
            shard.replicas(),
            3,
            "ctl-0, ctl-1 and ctl-3 live, ctl-2 dead"
        );
        assert_eq!(
            shard.driven("shop", "ctl-3-rel-0"),
            Driven::Elsewhere("ctl-3".into()),
            "renewed after ctl-0's last renewal"
        );
        assert_eq!(
            shard.driven("shop", "ctl-1-rel-0"),
            Driven::Elsewhere("ctl-1".into())
        );
        assert_eq!(shard.driven("shop", "ctl-0-rel-0"), Driven::Here);
        assert_eq!(shard.driven("shop", "ctl-2-rel-0"), Driven::Free);
    }
}
