//! cutover: a multi-cluster blue-green rollout orchestrator for Kubernetes.
//!
//! What cutover decides lives in `cutover-core` (re-exported here as `spec`,
//! `engine`, `policy`, `freeze`, `labels` and `clock`); this crate does the
//! I/O: `fleet` is the only code that talks to clusters, `gates` measures,
//! `driver` runs observe → decide → apply → persist for the CLI and the
//! controller. The simulated fleet (`cutover-sim`) comes in only with the
//! `rehearsal` feature. See the README for the lifecycle.
#![forbid(unsafe_code)]

pub mod chart;
pub mod cli;
pub mod controller;
pub mod driver;
pub mod fleet;
pub mod gates;
pub mod hooks;
pub mod notify;

pub use cutover_core::{admission, clock, engine, freeze, labels, policy, spec};
#[cfg(feature = "rehearsal")]
pub use cutover_sim as sim;
