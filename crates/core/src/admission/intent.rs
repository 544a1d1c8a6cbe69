//! Which intent a submitted version expresses against the Release as it
//! stands: only an explicit newer intent replaces a release in flight, and a
//! stale file never does. Pure; `cutover run` asks it before writing.

use crate::spec::ReleaseStatus;
use crate::spec::status::Phase;

/// What submitting a version to a Release means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Nothing is in flight or has run: start this version.
    Start,
    /// The version in flight (or the one that ended) is the one asked for: go on with it.
    Resume,
    /// Replace the version in flight with this one (`--supersede`).
    Supersede,
    /// The release ended; this version is its next revision.
    NextRevision,
}

/// The intent of submitting `asked` to a Release whose status is `status`;
/// `supersede` is the person's explicit word that it replaces what is in
/// flight. A refusal says what is in flight and how to do what was meant.
///
/// `submitted` is the version the Release's spec names now: one submitted
/// after the last revision ended that no driver has started yet is in flight
/// too, so a file naming a third version does not replace it.
pub fn intent(
    name: &str,
    status: Option<&ReleaseStatus>,
    submitted: Option<&str>,
    asked: &str,
    supersede: bool,
) -> Result<Intent, String> {
    let Some(st) = status.filter(|s| s.version.is_some()) else {
        return Ok(Intent::Start);
    };
    let current = st.version.as_deref().unwrap_or_default();
    if current == asked {
        return Ok(Intent::Resume);
    }
    if st.phase.is_terminal() {
        if let Some(r) = st.revisions.iter().rev().find(|r| r.version == asked)
            && !supersede
        {
            return Err(format!(
                "{asked} is revision {} of {name}, which {current} followed; nothing was written. \
                 To bring it back through its gates: cutover undo {name} --to-revision {}",
                r.revision, r.revision
            ));
        }
        if let Some(waiting) = submitted.filter(|s| *s != current && *s != asked)
            && !supersede
        {
            return Err(format!(
                "{waiting} was submitted to {name} after {current} ended and has not started yet; \
                 nothing was written. To replace it with {asked}: cutover run -f FILE --version \
                 {asked} --supersede; to go on with {waiting}: cutover run -f FILE --version {waiting}"
            ));
        }
        return Ok(Intent::NextRevision);
    }
    if st.phase == Phase::Pending {
        return Ok(Intent::Start);
    }
    let step = st.step_name.as_deref().unwrap_or("preflight");
    let serving = st.blue_version.as_deref();
    if supersede {
        return Ok(Intent::Supersede);
    }
    if serving == Some(asked) {
        return Err(format!(
            "{current} of {name} is in flight ({step}) and {asked} is the version serving now \
             (blue): this looks like a stale file, and nothing was written. To roll {current} \
             back to {asked}: cutover abort {name} --reason TEXT; to replace {current} with \
             another version: cutover run -f FILE --version V --supersede"
        ));
    }
    Err(format!(
        "{current} of {name} is in flight ({step}); nothing was written. To replace it with \
         {asked}: cutover run -f FILE --version {asked} --supersede; to go on with {current}: \
         cutover run -f FILE --version {current}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::status::Revision;

    fn mk_status(phase: Phase, version: &str, blue: Option<&str>) -> ReleaseStatus {
        ReleaseStatus {
            phase,
            version: Some(version.into()),
            blue_version: blue.map(Into::into),
            revision: 2,
            revisions: vec![Revision {
                revision: 1,
                version: "2.13.0".into(),
                images: Default::default(),
                outcome: Phase::Completed,
                replaced: None,
                started_at: None,
                finished_at: None,
                reason: String::new(),
                gates: String::new(),
            }],
            ..ReleaseStatus::default()
        }
    }

    #[test]
    fn intent_table() {
        use Intent::*;
        let flight = mk_status(Phase::Progressing, "2.15.0", Some("2.14.0"));
        let done = mk_status(Phase::Completed, "2.14.0", Some("2.13.0"));
        let pending = ReleaseStatus::default();
        // (what, the status, the version asked, --supersede, the intent or a piece of the refusal)
        type Row<'a> = (
            &'a str,
            Option<&'a ReleaseStatus>,
            &'a str,
            bool,
            Result<Intent, &'a str>,
        );
        let rows: Vec<Row<'_>> = vec![
            ("no Release yet", None, "2.14.0", false, Ok(Start)),
            (
                "a Release never started",
                Some(&pending),
                "2.14.0",
                false,
                Ok(Start),
            ),
            (
                "the version in flight",
                Some(&flight),
                "2.15.0",
                false,
                Ok(Resume),
            ),
            (
                "the serving version while another is in flight",
                Some(&flight),
                "2.14.0",
                false,
                Err("stale file"),
            ),
            (
                "another version without --supersede",
                Some(&flight),
                "2.16.0",
                false,
                Err("--supersede"),
            ),
            (
                "another version with --supersede",
                Some(&flight),
                "2.16.0",
                true,
                Ok(Supersede),
            ),
            (
                "the version that ended",
                Some(&done),
                "2.14.0",
                false,
                Ok(Resume),
            ),
            (
                "a new version after the end",
                Some(&done),
                "2.15.0",
                false,
                Ok(NextRevision),
            ),
            (
                "an earlier revision's version",
                Some(&done),
                "2.13.0",
                false,
                Err("cutover undo checkout --to-revision 1"),
            ),
        ];
        for (what, status, asked, supersede, want) in rows {
            match (intent("checkout", status, None, asked, supersede), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{what}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{what}: {got}"),
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// A version submitted after the release ended, not yet started, is not
    /// replaced by a file naming a third one; the same file, or --supersede, is taken.
    #[test]
    fn a_submission_waiting_to_start_is_not_replaced_by_a_stale_file() {
        let done = mk_status(Phase::Aborted, "2.14.0", Some("2.13.0"));
        let waiting = Some("2.16.0");
        let refused = intent("checkout", Some(&done), waiting, "2.15.0", false).unwrap_err();
        assert!(
            refused.contains("2.16.0 was submitted") && refused.contains("--supersede"),
            "{refused}"
        );
        assert_eq!(
            intent("checkout", Some(&done), waiting, "2.16.0", false),
            Ok(Intent::NextRevision)
        );
        assert_eq!(
            intent("checkout", Some(&done), waiting, "2.15.0", true),
            Ok(Intent::NextRevision)
        );
        assert_eq!(
            intent("checkout", Some(&done), Some("2.14.0"), "2.15.0", false),
            Ok(Intent::NextRevision)
        );
    }
}
