//! Release after release: a Release lives as long as its app. A version
//! other than the one that ended, put on a release that ended, starts the
//! next revision (today's green is the next blue); the one that ended joins
//! the bounded history. The same version again changes nothing.

use super::*;
use crate::spec::status::{REVISION_LIMIT, Revision};

impl Pass<'_> {
    /// On a release that ended: whether another version was asked for. If
    /// so the ended revision is archived and the state starts afresh, so
    /// preflight runs for the new version in this same pass.
    pub(super) fn next_revision(&mut self) -> bool {
        let ended = self.st.version.clone().unwrap_or_default();
        if !self.st.phase.is_terminal() || ended == self.rel.version {
            return false;
        }
        let kept = std::mem::take(&mut self.st);
        let number = kept.revision_number();
        let record = Revision {
            revision: number,
            version: ended.clone(),
            images: kept.images.clone(),
            outcome: kept.phase,
            replaced: kept.blue_version.clone(),
            started_at: kept.started_at,
            finished_at: kept.finished_at,
            reason: kept.message.clone().unwrap_or_default(),
            gates: gate_summary(&kept),
        };
        let mut revisions = kept.revisions;
        revisions.push(record);
        let excess = revisions.len().saturating_sub(REVISION_LIMIT);
        revisions.drain(..excess);
        self.st = ReleaseStatus {
            revision: number + 1,
            revisions,
            conditions: kept.conditions,
            history: kept.history,
            ..ReleaseStatus::default()
        };
        self.record(
            TransitionEvent::Superseded,
            format!(
                "revision {number} ({ended}, {}) is history; revision {} brings {}",
                kept.phase,
                number + 1,
                self.rel.version
            ),
        );
        true
    }
}

impl Pass<'_> {
    /// An undo's shorter plan is for a version that completed here before:
    /// why this one may not have it, if it may not.
    pub(super) fn undo_refused(&self) -> Option<String> {
        let of = self.rel.undo_of.as_ref()?;
        let found = self.st.revisions.iter().find(|r| r.revision == of.revision);
        let why = match found {
            None => format!("there is no revision {} in the history", of.revision),
            Some(r) if r.version != of.version => {
                format!(
                    "revision {} ran {}, not {}",
                    r.revision, r.version, of.version
                )
            }
            Some(r) if r.outcome != Phase::Completed => {
                format!(
                    "revision {} ({}) ended {}, not Completed",
                    r.revision, r.version, r.outcome
                )
            }
            Some(_) => return None,
        };
        Some(format!(
            "spec.undoOf asks for the tier's undo timings, but {why}: only a version that \
             completed may come back on the shorter plan. Remove spec.undoOf to run the full \
             plan, or `cutover undo` to a revision `cutover history` lists as Completed"
        ))
    }
}

/// How the gates stood when a revision ended, in one line.
fn gate_summary(st: &ReleaseStatus) -> String {
    if st.gates.is_empty() {
        return String::new();
    }
    crate::gates::gate_verdict(&st.gates).1
}
