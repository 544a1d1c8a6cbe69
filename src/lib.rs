//! cutover: a multi-cluster blue-green rollout orchestrator for Kubernetes.
//!
//! `spec` holds what users write, `engine` decides purely, the CLI and the
//! controller drive it. See the README for the lifecycle.
#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod engine;
pub mod labels;
pub mod sim;
pub mod spec;
