//! Time, injected. The system clock in production; a scaled clock for the
//! simulated fleet and demos (fleet time runs `scale` times faster than the
//! wall clock, from a shared origin, so separate processes agree on it).
//! The engine never reads a clock: drivers pass `now` in.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
    /// How much faster than the wall clock this clock runs (1 for the system clock).
    fn scale(&self) -> f64 {
        1.0
    }
    /// The wall-clock time to sleep for `fleet` to pass on this clock.
    fn real(&self, fleet: Duration) -> Duration {
        fleet.div_f64(self.scale())
    }
}

pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Fleet time: `start + (wall - origin) × scale`; `start` is `origin` unless
/// the fleet begins at another moment (a rehearsal set on a given morning).
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    origin: Timestamp,
    start: Timestamp,
    scale: f64,
}

impl ScaledClock {
    /// A clock that agrees with every other `ScaledClock` of the same origin and scale.
    pub fn new(origin: Timestamp, scale: f64) -> ScaledClock {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        ScaledClock {
            origin,
            start: origin,
            scale,
        }
    }

    /// A clock whose fleet time is `start` at wall time `origin`.
    pub fn starting_at(origin: Timestamp, start: Timestamp, scale: f64) -> ScaledClock {
        ScaledClock {
            start,
            ..ScaledClock::new(origin, scale)
        }
    }

    pub fn origin(&self) -> Timestamp {
        self.origin
    }

    /// Fleet time at the origin.
    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// Fleet time at a given wall-clock time.
    pub fn at(&self, wall: Timestamp) -> Timestamp {
        let real = wall.duration_since(self.origin);
        let scaled = SignedDuration::try_from_secs_f64(real.as_secs_f64() * self.scale)
            .unwrap_or(SignedDuration::MAX);
        self.start.checked_add(scaled).unwrap_or(Timestamp::MAX)
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Timestamp {
        self.at(Timestamp::now())
    }
    fn scale(&self) -> f64 {
        self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_clock_runs_faster_from_its_origin() {
        let origin: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let c = ScaledClock::new(origin, 60.0);
        let wall = origin.checked_add(SignedDuration::from_secs(10)).unwrap();
        assert_eq!(
            c.at(wall),
            origin.checked_add(SignedDuration::from_mins(10)).unwrap()
        );
        assert_eq!(c.real(Duration::from_secs(600)), Duration::from_secs(10));
        assert_eq!(ScaledClock::new(origin, -3.0).scale(), 1.0);
    }
}
