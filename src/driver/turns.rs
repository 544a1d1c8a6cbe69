//! Turns to pass. A release waiting between passes holds its Release
//! compressed; one in a pass holds it whole, with everything the pass
//! observes and decides, until its writes are answered. A controller's
//! thousand releases wake in waves (a watch event, gates measured on one
//! interval) and their writes queue at the API servers' request slots, so
//! without a bound a wave holds as many passes' state as it has releases.
//! Controllers in the field bound the same way: Argo Rollouts'
//! `--rollout-threads`, controller-runtime's `MaxConcurrentReconciles`,
//! kube-rs's `controller::Config::concurrency`. Unlike their workers, a
//! pass gives its turn back while it waits on the clusters it acts on, asks
//! who a cluster is or whether a failing one answers again
//! (`Driver::without_turn`): a cluster that hangs holds a request for its
//! whole timeout, and would otherwise hold every turn while other releases
//! (an abort among them) wait.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::stop::stop_requested;

/// Turns for a number of passes at once, shared by every driver made from
/// one [`super::Driver`].
#[derive(Clone, Debug)]
pub struct Turns {
    slots: Arc<Semaphore>,
    /// Drivers woken and waiting for a turn.
    waiting: Gauge,
    /// Drivers in a pass.
    passing: Gauge,
}

/// A turn, given back when dropped.
#[derive(Debug)]
pub struct Turn {
    _slot: OwnedSemaphorePermit,
    passing: Gauge,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.passing.dec();
    }
}

/// Counts a waiting driver for as long as it waits, however the wait ends.
struct Waiting(Gauge);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Turns {
    /// `n` turns at once (at least one).
    pub fn new(n: usize) -> Turns {
        Turns::counted(n, Gauge::default(), Gauge::default())
    }

    /// `n` turns at once, counting the drivers waiting and passing in the
    /// gauges given (the controller's `/metrics`).
    pub fn counted(n: usize, waiting: Gauge, passing: Gauge) -> Turns {
        Turns {
            slots: Arc::new(Semaphore::new(n.max(1))),
            waiting,
            passing,
        }
    }

    /// Waits for a turn.
    pub async fn take(&self) -> Turn {
        self.waiting.inc();
        let waiting = Waiting(self.waiting.clone());
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the turns' semaphore is never closed");
        drop(waiting);
        self.passing.inc();
        Turn {
            _slot: slot,
            passing: self.passing.clone(),
        }
    }

    /// Waits for a turn, or until `stop` turns true (`None` then).
    pub async fn take_or_stop(&self, stop: Option<watch::Receiver<bool>>) -> Option<Turn> {
        let mut stop = stop;
        tokio::select! {
            t = self.take() => Some(t),
            _ = stop_requested(&mut stop) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_more_pass_at_once_than_there_are_turns_and_the_gauges_count_both() {
        let (waiting, passing) = (Gauge::default(), Gauge::default());
        let turns = Turns::counted(2, waiting.clone(), passing.clone());
        let a = turns.take().await;
        let b = turns.take().await;
        assert_eq!((waiting.get(), passing.get()), (0, 2));
        let third = tokio::spawn({
            let turns = turns.clone();
            async move { turns.take().await }
        });
        tokio::task::yield_now().await;
        while waiting.get() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(
            !third.is_finished(),
            "a third pass began with two turns taken"
        );
        assert_eq!((waiting.get(), passing.get()), (1, 2));
        drop(a);
        let c = third.await.unwrap();
        assert_eq!((waiting.get(), passing.get()), (0, 2));
        drop((b, c));
        assert_eq!(passing.get(), 0);
        // A wait given up (its drive stopped) is no longer counted.
        let held: Vec<Turn> = vec![turns.take().await, turns.take().await];
        let given_up = tokio::spawn({
            let turns = turns.clone();
            async move { turns.take().await }
        });
        while waiting.get() == 0 {
            tokio::task::yield_now().await;
        }
        given_up.abort();
        let _ = given_up.await;
        assert_eq!((waiting.get(), passing.get()), (0, 2));
        drop(held);
    }

    /// A driver asked to hand its release over while it waits for a turn
    /// stops waiting: it would otherwise hold the release's Lease until a
    /// turn came, minutes on a replica driving more than its share.
    #[tokio::test]
    async fn a_wait_for_a_turn_ends_when_the_driver_is_told_to_stop() {
        let (waiting, passing) = (Gauge::default(), Gauge::default());
        let turns = Turns::counted(1, waiting.clone(), passing.clone());
        let held = turns.take().await;
        let (stop, stopped) = watch::channel(false);
        let wait = tokio::spawn({
            let turns = turns.clone();
            async move { turns.take_or_stop(Some(stopped)).await.is_some() }
        });
        while waiting.get() == 0 {
            tokio::task::yield_now().await;
        }
        stop.send(true).unwrap();
        assert!(!wait.await.unwrap(), "took a turn though told to stop");
        assert_eq!((waiting.get(), passing.get()), (0, 1));
        drop(held);
        // Not told to stop, it takes one as `take` does.
        let (_stop, running) = watch::channel(false);
        let t = turns.take_or_stop(Some(running)).await;
        assert!(t.is_some());
        assert_eq!(passing.get(), 1);
    }
}
