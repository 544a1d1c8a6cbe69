//! cutover-core: everything cutover decides, with nothing that talks to a
//! cluster. `spec` holds what users write and the status cutover keeps,
//! `engine` decides the whole lifecycle purely, `policy` holds the tier rules
//! and placement math, `freeze` the freeze windows and the one freeze rule,
//! `gates` the verdicts and their roll-up, `admission` every refusal.
//!
//! Must not touch: an async runtime, HTTP or a kube client. The product
//! (`cutover`) and the simulated fleet (`cutover-sim`) build on this crate.
#![forbid(unsafe_code)]

pub mod admission;
pub mod clock;
pub mod engine;
pub mod freeze;
pub mod gates;
pub mod labels;
pub mod policy;
pub mod spec;
