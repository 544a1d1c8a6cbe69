//! Tier policy applied to what runs: the live placement of green's pods
//! across zones. Pure: takes snapshots, returns reports.

pub mod placement;
pub mod rules;

pub use placement::{NodeInfo, PlacementReport, PodInfo};
