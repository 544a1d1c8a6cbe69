//! The Release a driver holds while it waits between passes, as JSON text,
//! compressed: a controller holds one per release it drives, and as objects
//! a Release is a 5.8 KB struct (a pod template's fields are inline) before
//! any of its strings and vectors; as JSON it is about 12 KB at the end of
//! a tier-2 lifecycle (most of it history). LZ4 costs a pass microseconds
//! beside the JSON's tens.
//!
//! Compressed on its own, a Release is 3.7 KB at the end of a lifecycle.
//! The releases of one controller say much the same: the same fields, the
//! same steps, transitions and gate texts, in apps that differ by their
//! names. So each is compressed against a dictionary (LZ4's preset
//! dictionary, up to its 64 KiB window): the text of a Release parked
//! before it, shared by every drive of the process. The dictionary is
//! replaced by a text a quarter longer than it, up to the window, so it
//! follows the releases to the later, longer parts of their lifecycles;
//! each parked text keeps the dictionary it was compressed against, so
//! an old one is let go once every release has parked again.

use std::sync::{Arc, Mutex};

use crate::spec::Release;

/// The longest dictionary LZ4 reads: its window.
const MAX_DICTIONARY: usize = 64 * 1024;

/// What the Releases of one process's drives are compressed against.
#[derive(Clone, Debug, Default)]
pub struct Parking {
    dictionary: Arc<Mutex<Arc<[u8]>>>,
}

impl Parking {
    /// The dictionary to compress `text` against, `text` itself when it
    /// is a quarter longer than the one in use (and within the window).
    fn against(&self, text: &[u8]) -> Arc<[u8]> {
        let mut d = self.dictionary.lock().expect("dictionary lock");
        if text.len() <= MAX_DICTIONARY && text.len() > d.len() + d.len() / 4 {
            *d = Arc::from(text);
        }
        d.clone()
    }
}

pub(super) enum Parked {
    Text {
        /// What `text` was compressed against.
        dictionary: Arc<[u8]>,
        text: Box<[u8]>,
    },
    /// Kept as it was when it could not be written out (never expected).
    Release(Box<Release>),
}

impl Parked {
    pub(super) fn of(r: Box<Release>, parking: &Parking) -> Parked {
        match serde_json::to_vec(&*r) {
            Ok(text) => {
                let dictionary = parking.against(&text);
                let packed = lz4_flex::block::compress_prepend_size_with_dict(&text, &dictionary);
                Parked::Text {
                    dictionary,
                    text: packed.into_boxed_slice(),
                }
            }
            Err(_) => Parked::Release(r),
        }
    }

    /// The Release again; `None` if its text does not read back.
    pub(super) fn unpark(self) -> Option<Box<Release>> {
        match self {
            Parked::Text { dictionary, text } => {
                lz4_flex::block::decompress_size_prepended_with_dict(&text, &dictionary)
                    .ok()
                    .and_then(|t| serde_json::from_slice(&t).ok())
                    .map(Box::new)
            }
            Parked::Release(r) => Some(r),
        }
    }

    /// The bytes it keeps of its own (its dictionary is shared).
    #[cfg(test)]
    fn kept(&self) -> usize {
        match self {
            Parked::Text { text, .. } => text.len(),
            Parked::Release(_) => panic!("kept as text"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ReleaseStatus;
    use crate::spec::status::{Phase, Transition, TransitionEvent};

    /// The example Release as app `app` at `version`, `steps` steps in.
    fn release(app: &str, version: &str, steps: u32) -> Release {
        let text = include_str!("../../examples/checkout/release.yaml")
            .replace("checkout", app)
            .replace("2.14.0", version);
        let doc: crate::spec::release::ReleaseDocument =
            crate::spec::Source::new("release.yaml", &text)
                .decode()
                .unwrap();
        let mut r = Release::new(&doc.metadata.name, doc.spec);
        r.metadata.namespace = Some("shop".into());
        r.metadata.resource_version = Some(format!("{}", 40 + steps));
        r.status = Some(ReleaseStatus {
            phase: Phase::Progressing,
            step: steps,
            step_name: Some(format!("ramp prod-a {steps}%")),
            history: (1..=steps)
                .map(|step| Transition {
                    at: jiff::Timestamp::from_second(1_796_000_000 + 60 * i64::from(step)).unwrap(),
                    step,
                    event: TransitionEvent::StepStarted,
                    message: format!("{app} {version}: ramp prod-a to {step}%"),
                })
                .collect(),
            ..Default::default()
        });
        r
    }

    fn round_trip(parked: Parked, before: &serde_json::Value) {
        let back = parked.unpark().expect("reads back");
        assert_eq!(&serde_json::to_value(&*back).unwrap(), before);
    }

    #[test]
    fn a_parked_release_reads_back_as_it_was() {
        let r = release("checkout", "2.14.0", 1);
        let before = serde_json::to_value(&r).unwrap();
        let json = serde_json::to_vec(&r).unwrap().len();
        // Alone (a process's first, with nothing parked before it).
        let alone = lz4_flex::compress_prepend_size(&serde_json::to_vec(&r).unwrap()).len();
        assert!(alone * 4 < json * 3, "{alone} bytes of {json}");
        let parked = Parked::of(Box::new(r), &Parking::default());
        round_trip(parked, &before);
    }

    /// Another app's Release, parked after the first, is compressed
    /// against the first's text: a fraction of what it is alone. Each
    /// reads back with the dictionary it was compressed against, after the
    /// dictionary has moved on to a longer text.
    #[test]
    fn a_release_parked_after_another_is_compressed_against_its_text() {
        let parking = Parking::default();
        let first = release("checkout", "2.14.0", 4);
        let first_json = serde_json::to_value(&first).unwrap();
        let first = Parked::of(Box::new(first), &parking);
        let second = release("payments", "7.1.3", 4);
        let second_json = serde_json::to_value(&second).unwrap();
        let alone = lz4_flex::compress_prepend_size(&serde_json::to_vec(&second).unwrap()).len();
        let second = Parked::of(Box::new(second), &parking);
        assert!(
            second.kept() * 3 < alone,
            "{} bytes against the first, {alone} alone",
            second.kept()
        );
        // A longer one (further in) becomes the dictionary; the earlier
        // ones keep theirs.
        let third = release("search", "1.0.0", 40);
        let third_json = serde_json::to_value(&third).unwrap();
        let third = Parked::of(Box::new(third), &parking);
        let Parked::Text { dictionary, .. } = &third else {
            panic!("kept as text")
        };
        assert_eq!(
            dictionary.len(),
            serde_json::to_vec(&third_json).unwrap().len()
        );
        round_trip(first, &first_json);
        round_trip(second, &second_json);
        round_trip(third, &third_json);
    }
}
