//! Gates: the providers that measure (`providers`) and the analysis of one
//! step that runs them on an interval and reports the gate's verdict to the
//! engine. The verdict logic itself is pure and lives in `cutover_core::gates`.

pub mod analysis;
pub mod providers;

pub use cutover_core::gates::*;
