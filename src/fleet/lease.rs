//! One driver per release: a `coordination.k8s.io` Lease in the home cluster,
//! renewed in the background. A driver stops writing as soon as its lease may
//! have lapsed — before anyone else can take it over.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::task::JoinHandle;

use super::{ClusterHandle, Error, Result};
use crate::labels;

/// A held lease. Dropping it stops renewal; `release` hands it back at once.
/// It keeps no `Api` (272 bytes, most of it the client): a controller holds
/// a guard in the drive of every release, and only handing the lease back
/// writes through it, with the home cluster's client lent then.
pub struct LeaseGuard {
    namespace: String,
    name: String,
    identity: String,
    valid_until: Arc<Mutex<Instant>>,
    /// None for a lease held under a parent: the parent's renewals keep it.
    renewer: Option<JoinHandle<()>>,
}

/// A lease other leases can be held under (the controller's leader lease):
/// a release lease held under it needs no renewals of its own, since it is
/// valid exactly while its holder still holds the parent. So a controller
/// driving a thousand releases renews one lease, not a thousand.
#[derive(Clone)]
pub struct Parent {
    namespace: String,
    name: String,
    identity: String,
    valid_until: Arc<Mutex<Instant>>,
}

impl Parent {
    fn reference(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Annotation on a lease held under a parent: the parent's `namespace/name`.
pub const HELD_UNDER: &str = "cutover.dev/held-under";

/// Prefix of the name of each controller replica's Lease, which the
/// Leases of the releases it drives are held under.
pub const REPLICA_PREFIX: &str = "cutover-controller-replica-";

/// Name of the Lease of the controller replica `identity`.
pub fn replica_lease(identity: &str) -> String {
    format!("{REPLICA_PREFIX}{identity}")
}

/// Name of the Lease that guards a release.
pub fn lease_name(release: &str) -> String {
    format!("cutover-release-{release}")
}

/// Who drives a release, as its Lease (or, for a lease held under a
/// controller's, that controller's) says.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub identity: String,
    /// Renewed within its duration: the driver is alive.
    pub live: bool,
    pub renewed: Option<jiff::Timestamp>,
}

fn holder_of(l: &Lease) -> Holder {
    let spec = l.spec.clone().unwrap_or_default();
    Holder {
        identity: spec.holder_identity.unwrap_or_default(),
        live: !expired(l.spec.as_ref(), Duration::from_secs(15)),
        renewed: spec.renew_time.map(|t| t.0),
    }
}

/// What the replicas read of a Lease in the Leases' watch
/// (`Watches::leases`): its name and namespace, the Lease it is held under
/// and its spec. A controller keeps one per release and replica, and a
/// Lease is some 600 bytes inline (its metadata's fields) before any of
/// its text, its one annotation a map's node with room for eleven.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeaseView {
    pub name: Box<str>,
    pub namespace: Box<str>,
    /// `namespace/name` of the Lease it is held under (`HELD_UNDER`).
    held_under: Option<Box<str>>,
    pub spec: Option<LeaseSpec>,
}

impl LeaseView {
    pub fn of(l: Lease) -> LeaseView {
        LeaseView {
            name: l.metadata.name.unwrap_or_default().into(),
            namespace: l.metadata.namespace.unwrap_or_default().into(),
            held_under: l
                .metadata
                .annotations
                .and_then(|mut a| a.remove(HELD_UNDER))
                .map(String::into_boxed_str),
            spec: l.spec,
        }
    }

    /// Who holds it by its own renew time (`live_holder`).
    pub fn live_holder(&self) -> Option<&str> {
        live_holder_of(self.spec.as_ref())
    }

    /// Who held it at `at` by its renew time: a holder named and renewed
    /// within the lease's duration before `at` (or after it).
    pub fn live_holder_at(&self, at: jiff::Timestamp) -> Option<&str> {
        let spec = self.spec.as_ref()?;
        let holder = spec.holder_identity.as_deref()?;
        (!expired_at(Some(spec), Duration::from_secs(15), at)).then_some(holder)
    }

    /// When its holder last renewed it.
    pub fn renewed(&self) -> Option<jiff::Timestamp> {
        Some(self.spec.as_ref()?.renew_time.as_ref()?.0)
    }

    /// The namespace and name of the Lease it is held under, if any.
    pub fn parent_reference(&self) -> Option<(&str, &str)> {
        self.held_under.as_deref()?.split_once('/')
    }
}

/// The holder of `release`'s Lease in `namespace`; `None` when no driver
/// ever took it.
pub async fn holder(c: &ClusterHandle, namespace: &str, release: &str) -> Result<Option<Holder>> {
    let api: Api<Lease> = Api::namespaced(c.client.clone(), namespace);
    let Some(lease) = api
        .get_opt(&lease_name(release))
        .await
        .map_err(Error::api(&c.name))?
    else {
        return Ok(None);
    };
    if let Some(p) = parent_of(&c.client, &lease)
        .await
        .map_err(Error::api(&c.name))?
    {
        let mut h = holder_of(&p);
        // Held under a leader that has changed since: nobody drives it.
        if h.identity
            != lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default()
        {
            h.live = false;
        }
        return Ok(Some(h));
    }
    Ok(Some(holder_of(&lease)))
}

fn now_micro() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

fn expired(spec: Option<&LeaseSpec>, duration: Duration) -> bool {
    expired_at(spec, duration, jiff::Timestamp::now())
}

/// Whether a Lease of this spec had lapsed by `at`: no holder, or not
/// renewed within its duration before `at`. Renewed after `at` (a holder's
/// clock ahead, or `at` a watch's view behind) it has not: the difference is
/// negative, not a large unsigned number.
fn expired_at(spec: Option<&LeaseSpec>, duration: Duration, at: jiff::Timestamp) -> bool {
    let Some(spec) = spec else { return true };
    if spec
        .holder_identity
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        return true;
    }
    let secs = spec
        .lease_duration_seconds
        .map(i64::from)
        .unwrap_or(duration.as_secs() as i64);
    match &spec.renew_time {
        Some(t) => at.duration_since(t.0).as_secs() > secs,
        None => true,
    }
}

/// Takes the lease of `release` for `identity`, or says who holds it.
pub async fn acquire(
    home: &ClusterHandle,
    namespace: &str,
    release: &str,
    identity: &str,
    duration: Duration,
) -> Result<LeaseGuard> {
    acquire_named(
        home,
        namespace,
        &lease_name(release),
        release,
        identity,
        duration,
    )
    .await
}

/// Takes the lease of `release` for the holder of `parent`, valid while it
/// holds the parent; or says who holds it.
pub async fn acquire_under(
    home: &ClusterHandle,
    namespace: &str,
    release: &str,
    parent: &Parent,
    duration: Duration,
) -> Result<LeaseGuard> {
    take(
        home,
        namespace,
        &lease_name(release),
        release,
        &parent.identity,
        duration,
        Some(parent),
    )
    .await
}

/// Takes the Lease `name` (guarding `what`) for `identity`, or says who holds it.
/// The controller's leader election uses it with its own Lease.
pub async fn acquire_named(
    home: &ClusterHandle,
    namespace: &str,
    name: &str,
    what: &str,
    identity: &str,
    duration: Duration,
) -> Result<LeaseGuard> {
    take(home, namespace, name, what, identity, duration, None).await
}

/// Whether `l`, lapsed by its own renew time, is still held through the
/// parent it names: the parent is live and held by the same holder. A parent
/// that cannot be read counts as held: a lapse that cannot be proven is none.
async fn held_through_parent(client: &kube::Client, l: &Lease, holder: &str) -> bool {
    match parent_of(client, l).await {
        Ok(Some(p)) => live_holder(&p) == Some(holder),
        Ok(None) => false,
        Err(_) => true,
    }
}

/// Who holds `l` by its own renew time, if anyone does: a holder named and
/// renewed within the lease's duration.
pub fn live_holder(l: &Lease) -> Option<&str> {
    live_holder_of(l.spec.as_ref())
}

/// Who holds a Lease of this spec by its renew time, if anyone does.
fn live_holder_of(spec: Option<&LeaseSpec>) -> Option<&str> {
    let holder = spec?.holder_identity.as_deref()?;
    (!expired(spec, Duration::from_secs(15))).then_some(holder)
}

/// The `namespace/name` of the Lease `l` is held under, if any.
pub fn parent_reference(l: &Lease) -> Option<(&str, &str)> {
    l.metadata
        .annotations
        .as_ref()?
        .get(HELD_UNDER)?
        .split_once('/')
}

/// The Lease `l` is held under, when it names one that exists.
async fn parent_of(client: &kube::Client, l: &Lease) -> kube::Result<Option<Lease>> {
    let Some((ns, name)) = parent_reference(l) else {
        return Ok(None);
    };
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
}

async fn take(
    home: &ClusterHandle,
    namespace: &str,
    name: &str,
    what: &str,
    identity: &str,
    duration: Duration,
    parent: Option<&Parent>,
) -> Result<LeaseGuard> {
    let api: Api<Lease> = Api::namespaced(home.client.clone(), namespace);
    let name = name.to_string();
    let release = what;
    let mark = |meta: &mut ObjectMeta| {
        let a = meta.annotations.get_or_insert_with(Default::default);
        match parent {
            Some(p) => {
                a.insert(HELD_UNDER.to_string(), p.reference());
            }
            None => {
                a.remove(HELD_UNDER);
            }
        }
        if a.is_empty() {
            meta.annotations = None;
        }
    };
    let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(duration.as_secs().max(1) as i32),
        acquire_time: acquired.or_else(|| Some(now_micro())),
        renew_time: Some(now_micro()),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let started = Instant::now();
    let taken = match api.get_opt(&name).await.map_err(Error::api(&home.name))? {
        None => {
            let mut lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(
                        [(
                            labels::MANAGED_BY.to_string(),
                            labels::MANAGED_BY_VALUE.to_string(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                spec: Some(spec(0, None)),
            };
            mark(&mut lease.metadata);
            api.create(&PostParams::default(), &lease).await
        }
        Some(existing) => {
            let held_by = existing
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default();
            if held_by != identity
                && (!expired(existing.spec.as_ref(), duration)
                    || held_through_parent(&home.client, &existing, &held_by).await)
            {
                return Err(Error::LeaseHeld {
                    release: release.to_string(),
                    holder: held_by,
                });
            }
            let transitions = existing
                .spec
                .as_ref()
                .and_then(|s| s.lease_transitions)
                .unwrap_or(0);
            let mut lease = existing.clone();
            let same = held_by == identity;
            let acquired = if same {
                existing.spec.as_ref().and_then(|s| s.acquire_time.clone())
            } else {
                None
            };
            lease.spec = Some(spec(
                if same { transitions } else { transitions + 1 },
                acquired,
            ));
            mark(&mut lease.metadata);
            api.replace(&name, &PostParams::default(), &lease).await
        }
    };
    let lease = match taken {
        Ok(l) => l,
        Err(kube::Error::Api(s)) if s.code == 409 => {
            return Err(Error::LeaseHeld {
                release: release.to_string(),
                holder: "another driver (it won the race)".into(),
            });
        }
        Err(e) => return Err(Error::api(&home.name)(e)),
    };
    let (valid_until, renewer) = match parent {
        Some(p) => (p.valid_until.clone(), None),
        None => {
            // Stop writing a third of the lease early: another driver may take over only once it is past.
            let margin = duration / 3;
            let valid_until = Arc::new(Mutex::new(started + duration - margin));
            let renewer = tokio::spawn(renew(
                api.clone(),
                lease,
                duration,
                margin,
                valid_until.clone(),
            ));
            (valid_until, Some(renewer))
        }
    };
    Ok(LeaseGuard {
        namespace: namespace.to_string(),
        name,
        identity: identity.to_string(),
        valid_until,
        renewer,
    })
}

async fn renew(
    api: Api<Lease>,
    mut lease: Lease,
    duration: Duration,
    margin: Duration,
    valid_until: Arc<Mutex<Instant>>,
) {
    let name = lease.metadata.name.clone().unwrap_or_default();
    // client-go's leader election timings: 15 s leases, renewed every 2 s
    // (`RetryPeriod`, client-go's `renew` loop), acting stops 10 s after the
    // last renewal (`RenewDeadline`). Renewing that often, a server that
    // stalls for a few seconds costs a few renewals, not the lease (every
    // 5 s, two slow answers in a row were enough to lose it).
    // Each try is given that long too: a renewal stuck in a slow server's
    // queue is tried again, as client-go's tries are bounded by their
    // deadline, instead of waiting out the time the lease has left.
    let retry = duration.mul_f64(2.0 / 15.0);
    let mut wait = retry;
    loop {
        tokio::time::sleep(wait).await;
        wait = retry;
        let started = Instant::now();
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(now_micro());
        }
        let tried =
            tokio::time::timeout(retry, api.replace(&name, &PostParams::default(), &lease)).await;
        match tried {
            Ok(Ok(l)) => {
                lease = l;
                *valid_until.lock().expect("lease lock") = started + duration - margin;
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => {
                // Written since we read it: by a try of ours that timed out
                // but landed (still ours: go on from it), or by someone else.
                let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
                match api.get_opt(&name).await {
                    Ok(Some(now))
                        if now.spec.as_ref().and_then(|s| s.holder_identity.clone()) == holder =>
                    {
                        lease = now;
                        wait = Duration::ZERO;
                    }
                    Ok(_) => {
                        tracing::warn!(lease = %name, "the lease was taken by another holder");
                        *valid_until.lock().expect("lease lock") = Instant::now();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(lease = %name, error = %e, "lease renewal failed; retrying");
                        wait = retry;
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %name, error = %e, "lease renewal failed; retrying");
                wait = retry;
            }
            Err(_) => {
                tracing::warn!(lease = %name, after = ?retry, "lease renewal unanswered; retrying");
                wait = Duration::ZERO;
            }
        }
    }
}

impl LeaseGuard {
    /// This lease as a parent for others.
    pub fn as_parent(&self) -> Parent {
        Parent {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            identity: self.identity.clone(),
            valid_until: self.valid_until.clone(),
        }
    }

    /// Whether writes may still be made under this lease.
    pub fn is_valid(&self) -> bool {
        Instant::now() < *self.valid_until.lock().expect("lease lock")
    }

    pub fn check(&self, release: &str) -> Result<()> {
        if self.is_valid() {
            Ok(())
        } else {
            Err(Error::LeaseLost(release.to_string()))
        }
    }

    /// Hands the lease back so the next driver need not wait for it to
    /// expire. `home` is the cluster it was taken in.
    pub async fn release(self, home: &ClusterHandle) {
        let api: Api<Lease> = Api::namespaced(home.client.clone(), &self.namespace);
        // A lease held under a parent leaves the parent's validity alone.
        if let Some(r) = &self.renewer {
            r.abort();
            *self.valid_until.lock().expect("lease lock") = Instant::now();
        }
        if let Ok(Some(mut l)) = api.get_opt(&self.name).await
            && l.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                == Some(self.identity.as_str())
        {
            if let Some(spec) = l.spec.as_mut() {
                spec.holder_identity = None;
            }
            let _ = api.replace(&self.name, &PostParams::default(), &l).await;
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(r) = &self.renewer {
            r.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renewed(secs_ago: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some("ctl-0".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                jiff::Timestamp::now() - jiff::SignedDuration::from_secs(secs_ago),
            )),
            ..Default::default()
        }
    }

    /// A holder whose clock runs ahead writes a renew time in the future:
    /// read as unsigned, its Lease looked lapsed and could be taken from it.
    #[test]
    fn a_lease_renewed_after_the_time_it_is_judged_at_has_not_lapsed() {
        let d = Duration::from_secs(15);
        assert!(!expired(Some(&renewed(-5)), d), "renewed 5 s ahead");
        assert!(!expired(Some(&renewed(3)), d));
        assert!(expired(Some(&renewed(20)), d));
        let at = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(30);
        assert!(!expired_at(Some(&renewed(20)), d, at), "judged 30 s ago");
        assert!(expired_at(Some(&renewed(50)), d, at));
    }
}
