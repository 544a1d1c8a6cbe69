//! Faults in force right now: how each API server misbehaves (errors,
//! throttling, latency, unreachable) and how app versions serve (error
//! ratio, latency, crash loops), as the defaults plus the overrides of
//! active scenario events.
//!
//! Owns the state and the decision per request; the timeline turns faults on
//! and off, the server and the gateway ask.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::scenario::{BehaviourChange, BehaviourSpec, UnreachableMode};

/// One API server fault.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiFault {
    /// Answer `ratio` (0..=1) of requests with `code`.
    Errors {
        code: u16,
        ratio: f64,
    },
    /// Delay every request by this much wall-clock time.
    Latency(Duration),
    Unreachable(UnreachableMode),
    /// The API server is back from a restart and its watch caches are still
    /// filling: it rejects watches, and the lists it would answer from a
    /// cache, with 429 "storage is (re)initializing", and answers the rest
    /// (`/version`, gets, consistent lists) from etcd. KEP-4568, "Resilient
    /// watchcache initialization", on by default since Kubernetes 1.31.
    CacheInitializing,
}

/// What the server should do with one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub delay: Duration,
    pub fail: Option<u16>,
}

/// The faults of one API server, keyed by the event that caused them.
#[derive(Debug)]
pub struct ApiFaults {
    active: Mutex<BTreeMap<usize, ApiFault>>,
    unreachable: watch::Sender<Option<UnreachableMode>>,
    /// `/metrics` sends its headers, then trickles until this is lifted.
    metrics_stalled: AtomicBool,
    /// Armed: the next write is committed and the server goes down before
    /// it answers, as the fault of this event.
    crash_after_write: Mutex<Option<usize>>,
}

impl Default for ApiFaults {
    fn default() -> Self {
        ApiFaults {
            active: Mutex::new(BTreeMap::new()),
            unreachable: watch::channel(None).0,
            metrics_stalled: AtomicBool::new(false),
            crash_after_write: Mutex::new(None),
        }
    }
}

impl ApiFaults {
    pub fn activate(&self, event: usize, fault: ApiFault) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active.insert(event, fault);
        self.publish(&active);
    }

    pub fn clear(&self, event: usize) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active.remove(&event);
        self.publish(&active);
    }

    fn publish(&self, active: &BTreeMap<usize, ApiFault>) {
        let mode = active.values().rev().find_map(|f| match f {
            ApiFault::Unreachable(m) => Some(*m),
            _ => None,
        });
        self.unreachable.send_if_modified(|cur| {
            let changed = *cur != mode;
            *cur = mode;
            changed
        });
    }

    /// Makes `/metrics` hang after its headers (a slow exporter), or lifts that.
    pub fn stall_metrics(&self, stalled: bool) {
        self.metrics_stalled.store(stalled, Ordering::Relaxed);
    }

    pub fn metrics_stalled(&self) -> bool {
        self.metrics_stalled.load(Ordering::Relaxed)
    }

    /// The next write to succeed is committed, and then the server refuses
    /// connections (`Unreachable(Refuse)`, as event `event`) before it
    /// answers: the writer's answer and its watchers' events are lost.
    pub fn crash_after_next_write(&self, event: usize) {
        *self
            .crash_after_write
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(event);
    }

    /// Disarms `crash_after_next_write`; whether it was still armed (no
    /// write had come).
    pub fn disarm_crash(&self) -> bool {
        self.crash_after_write
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some()
    }

    /// After a committed write: goes down if armed to (and disarms).
    /// Whether it went down.
    pub fn crash_if_armed(&self) -> bool {
        let armed = self
            .crash_after_write
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(event) = armed {
            self.activate(event, ApiFault::Unreachable(UnreachableMode::Refuse));
        }
        armed.is_some()
    }

    /// Whether the watch caches are filling (`ApiFault::CacheInitializing`).
    pub fn cache_initializing(&self) -> bool {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active
            .values()
            .any(|f| matches!(f, ApiFault::CacheInitializing))
    }

    /// Whether (and how) the server is unreachable; changes are signalled.
    pub fn unreachable(&self) -> watch::Receiver<Option<UnreachableMode>> {
        self.unreachable.subscribe()
    }

    /// The fate of one request: summed latency, and an error drawn with the newest error fault's ratio.
    pub fn verdict(&self) -> Verdict {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let delay = active
            .values()
            .map(|f| {
                if let ApiFault::Latency(d) = f {
                    *d
                } else {
                    Duration::ZERO
                }
            })
            .sum();
        let fail = active.values().rev().find_map(|f| match f {
            ApiFault::Errors { code, ratio } => Some((*code, *ratio)),
            _ => None,
        });
        let fail = fail
            .filter(|(_, ratio)| rand::random::<f64>() < *ratio)
            .map(|(code, _)| code);
        Verdict { delay, fail }
    }
}

/// How one app version serves at a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// 0..=1.
    pub error_ratio: f64,
    pub latency: Duration,
    pub crash_loop: bool,
}

/// Who a behaviour applies to.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    pub cluster: &'a str,
    pub app: &'a str,
    pub version: &'a str,
    pub colour: &'a str,
}

/// Default behaviour plus the overrides of active events, newest last (it wins).
#[derive(Debug)]
pub struct Behaviours {
    default: Behaviour,
    active: Mutex<BTreeMap<usize, BehaviourChange>>,
    /// Counts changes, so the kubelets look again at pods a change may concern.
    changes: watch::Sender<u64>,
}

impl Behaviours {
    pub fn new(spec: &BehaviourSpec) -> Behaviours {
        Behaviours {
            default: Behaviour {
                error_ratio: spec.error_ratio.as_f64() / 100.0,
                latency: spec.latency.as_duration(),
                crash_loop: false,
            },
            active: Mutex::new(BTreeMap::new()),
            changes: watch::channel(0).0,
        }
    }

    /// Wakes whenever an event switches a behaviour on or off.
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn activate(&self, event: usize, change: BehaviourChange) {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(event, change);
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn clear(&self, event: usize) {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&event);
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn of(&self, w: Workload) -> Behaviour {
        let mut b = self.default.clone();
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        for c in active.values() {
            let matches =
                |want: &Option<String>, got: &str| want.as_deref().is_none_or(|x| x == got);
            if matches(&c.cluster, w.cluster)
                && matches(&c.app, w.app)
                && matches(&c.version, w.version)
                && matches(&c.colour, w.colour)
            {
                if let Some(r) = c.error_ratio {
                    b.error_ratio = r.as_f64() / 100.0;
                }
                if let Some(l) = c.latency {
                    b.latency = l.as_duration();
                }
                if let Some(x) = c.crash_loop {
                    b.crash_loop = x;
                }
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_core::spec::Percent;

    #[test]
    fn api_faults_stack_and_clear() {
        let f = ApiFaults::default();
        assert_eq!(
            f.verdict(),
            Verdict {
                delay: Duration::ZERO,
                fail: None
            }
        );
        f.activate(
            1,
            ApiFault::Errors {
                code: 503,
                ratio: 1.0,
            },
        );
        f.activate(2, ApiFault::Latency(Duration::from_millis(5)));
        assert_eq!(
            f.verdict(),
            Verdict {
                delay: Duration::from_millis(5),
                fail: Some(503)
            }
        );
        let rx = f.unreachable();
        f.activate(3, ApiFault::Unreachable(UnreachableMode::Close));
        assert_eq!(*rx.borrow(), Some(UnreachableMode::Close));
        f.clear(1);
        f.clear(3);
        assert_eq!(*rx.borrow(), None);
        assert_eq!(f.verdict().fail, None);
        f.activate(
            4,
            ApiFault::Errors {
                code: 429,
                ratio: 0.0,
            },
        );
        assert_eq!(f.verdict().fail, None);
    }

    #[test]
    fn behaviour_overrides_match_what_they_name() {
        let b = Behaviours::new(&BehaviourSpec::default());
        let green = Workload {
            cluster: "prod-a",
            app: "web",
            version: "v2",
            colour: "green",
        };
        let blue = Workload {
            colour: "blue",
            version: "v1",
            ..green
        };
        b.activate(
            0,
            BehaviourChange {
                colour: Some("green".into()),
                error_ratio: Some(Percent::from_whole(20)),
                ..Default::default()
            },
        );
        assert_eq!(b.of(green).error_ratio, 0.2);
        assert_eq!(b.of(blue).error_ratio, 0.001);
        b.activate(
            1,
            BehaviourChange {
                cluster: Some("prod-b".into()),
                crash_loop: Some(true),
                ..Default::default()
            },
        );
        assert!(!b.of(green).crash_loop);
        b.clear(0);
        assert_eq!(b.of(green).error_ratio, 0.001);
    }
}
