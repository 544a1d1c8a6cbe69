//! cutover: a multi-cluster blue-green rollout orchestrator for Kubernetes.
//!
//! `spec` holds what users write, `engine` decides purely, `driver` runs
//! observe → decide → apply → persist for the CLI and the controller, `fleet`
//! is the only code that talks to clusters, and `sim` is a simulated fleet
//! that speaks the Kubernetes API. See the README for the lifecycle.
#![forbid(unsafe_code)]

pub mod chart;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod driver;
pub mod engine;
pub mod fleet;
pub mod freeze;
pub mod gates;
pub mod labels;
pub mod policy;
pub mod sim;
pub mod spec;
