//! Controller replicas share the releases, with no coordination beyond
//! Leases. Each replica holds a Lease of its own (`cutover-controller-replica-
//! <identity>`), and every release it drives has its Lease held under that
//! one, so one renewal covers all of them. A replica counts the live replica
//! Leases and takes free releases up to a fair share (the releases that need
//! a driver over the replicas alive); when a replica dies, its Lease lapses
//! and so do its releases' Leases, and the others take them within their
//! next look. When a replica joins, the others hand over what they hold
//! beyond the new share once the count has held for a lease duration (so a
//! slow renewal seen once moves nothing). Everything here is read from a
//! watch of cutover's Leases: no request per release and look.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;

use crate::fleet::cache::replicas_key;
use crate::fleet::lease::{self, replica_lease};
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
    leases: Arc<SharedWatch<Lease>>,
    /// How many replicas were alive at the last look, and since when.
    seen: Mutex<(usize, Instant)>,
    duration: Duration,
}

impl Shard {
    pub fn new(
        identity: &str,
        namespace: &str,
        leases: Arc<SharedWatch<Lease>>,
        duration: Duration,
    ) -> Shard {
        Shard {
            identity: identity.to_string(),
            namespace: namespace.to_string(),
            leases,
            seen: Mutex::new((1, Instant::now())),
            duration,
        }
    }

    /// How often a release driven elsewhere, or left for lack of room, is
    /// looked at again: a fifth of the lease, so a dead replica's releases
    /// are taken soon after its Lease lapses.
    pub fn recheck(&self) -> Duration {
        self.duration / 5
    }

    /// The replicas alive now, this one included.
    pub fn replicas(&self) -> usize {
        let mine = replica_lease(&self.identity);
        let others = self
            .leases
            .get(&replicas_key(&self.namespace))
            .iter()
            .filter(|l| l.metadata.name.as_deref() != Some(mine.as_str()))
            .filter(|l| lease::live_holder(l).is_some())
            .count();
        let n = others + 1;
        let mut seen = self.seen.lock().expect("seen lock");
        if seen.0 != n {
            *seen = (n, Instant::now());
        }
        n
    }

    /// The most releases this replica should drive while `active` releases
    /// need a driver: an even split, rounded up so the shares cover them all.
    pub fn share(&self, active: usize) -> usize {
        active.div_ceil(self.replicas()).max(1)
    }

    /// Whether the count of replicas has held for a lease duration: only
    /// then is anything handed over for a smaller share.
    pub fn settled(&self) -> bool {
        self.replicas();
        self.seen.lock().expect("seen lock").1.elapsed() >= self.duration
    }

    /// Who drives `release` in `namespace`. With the Leases' watch not
    /// healthy, `Free`: taking the Lease is what decides, and it refuses a
    /// Lease held by someone alive.
    pub fn driven(&self, namespace: &str, release: &str) -> Driven {
        if self.leases.state() != WatchState::Healthy {
            return Driven::Free;
        }
        let key = format!("{namespace}/{}", lease::lease_name(release));
        let Some(l) = self.leases.get(&key).into_iter().next() else {
            return Driven::Free;
        };
        let Some(holder) = l.spec.as_ref().and_then(|s| s.holder_identity.clone()) else {
            return Driven::Free;
        };
        if holder.is_empty() {
            return Driven::Free;
        }
        let alive = match lease::parent_reference(&l) {
            // Held under a replica's Lease: alive while that replica holds it.
            Some((ns, name)) => {
                self.leases
                    .get(&format!("{ns}/{name}"))
                    .first()
                    .and_then(|p| lease::live_holder(p))
                    == Some(holder.as_str())
            }
            None => lease::live_holder(&l).is_some(),
        };
        match (alive, holder == self.identity) {
            (false, _) => Driven::Free,
            (true, true) => Driven::Here,
            (true, false) => Driven::Elsewhere(holder),
        }
    }
}
