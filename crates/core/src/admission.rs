//! Admission: whether a release may be acted on, with every reason it may
//! not. One function, `admit`, called by `check`, `run`, `demo`, the driver
//! and the controller, so a refusal reads the same wherever it is met.
//!
//! Owns: the order of the questions (is the spec valid, does it keep its
//! tier's static rules, does a freeze stop it, is its break-glass override
//! well formed) and how each finding maps to an exit class. Must not touch:
//! clusters or files; callers read freezes and pass them in.

mod intent;

use std::fmt;

use jiff::Timestamp;

use crate::engine::FreezeNotice;
use crate::freeze::{self, DeployFreeze, Window};
use crate::spec::release::{FreezeOverride, ReleaseDocument};
use crate::spec::resolve::Finding as SpecFinding;
use crate::spec::{Fleet, ReleaseSpec, ResolvedRelease, Source, TierPolicyFile};
pub use intent::{Intent, intent};

/// What a release is admitted against.
pub struct Request<'a> {
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub spec: &'a ReleaseSpec,
    pub fleet: &'a Fleet,
    pub policy: &'a TierPolicyFile,
    /// The deploy freezes read for a release about to start. `None` for a
    /// release in flight: there a freeze holds it (the engine's part) rather
    /// than refusing it.
    pub freezes: Option<FreezeReading<'a>>,
}

impl<'a> Request<'a> {
    /// The request for a Release document as written.
    pub fn of(
        doc: &'a ReleaseDocument,
        fleet: &'a Fleet,
        policy: &'a TierPolicyFile,
        freezes: Option<FreezeReading<'a>>,
    ) -> Request<'a> {
        Request {
            name: &doc.metadata.name,
            namespace: doc.metadata.namespace.as_deref(),
            spec: &doc.spec,
            fleet,
            policy,
            freezes,
        }
    }
}

/// The freezes that could stop a release, as read from its clusters.
pub struct FreezeReading<'a> {
    pub freezes: &'a [DeployFreeze],
    /// Clusters whose freezes could not be read, with why: the release cannot
    /// be proven unfrozen there.
    pub unreadable: &'a [(String, String)],
    pub windows: &'a [Window],
    pub now: Timestamp,
}

/// One reason a release may not be acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// A field of the spec is wrong, or asks for what its tier forbids.
    Spec(SpecFinding),
    /// The resolved release breaks its tier's static rules (the whole summary).
    Tier(String),
    /// A freeze or window applies and the override does not name it.
    Frozen {
        freeze: FreezeNotice,
        /// An override names other freezes but not this one.
        partial_override: bool,
    },
    /// A cluster's freezes could not be read.
    FreezesUnreadable { cluster: String, why: String },
    /// The break-glass override gives no reason.
    OverrideWithoutReason,
    /// The override names a freeze that does not apply to this release now.
    OverrideUnknown(String),
}

/// How a refusal is classed, most serious first; the CLI maps it to its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// Bad input: fix the file or the flags.
    Invalid,
    /// The tier's rules forbid it.
    Policy,
    /// A freeze stops it, or cannot be ruled out.
    Frozen,
}

impl Finding {
    pub fn refusal(&self) -> Refusal {
        match self {
            Finding::Spec(f) if f.breaks_policy => Refusal::Policy,
            Finding::Spec(_) | Finding::OverrideWithoutReason | Finding::OverrideUnknown(_) => {
                Refusal::Invalid
            }
            Finding::Tier(_) => Refusal::Policy,
            Finding::Frozen { .. } | Finding::FreezesUnreadable { .. } => Refusal::Frozen,
        }
    }

    /// The finding in words; a spec finding is placed in its file when `src` is given.
    pub fn describe(&self, src: Option<&Source>) -> String {
        match (self, src) {
            (Finding::Spec(f), Some(src)) => f.locate(src).to_string(),
            (Finding::Spec(f), None) => format!("field `{}`: {}", f.field, f.problem),
            (Finding::Tier(why), _) => why.clone(),
            (
                Finding::Frozen {
                    freeze,
                    partial_override,
                },
                _,
            ) => {
                let note = if *partial_override {
                    " (an override must name every active freeze; this one is not named)"
                } else {
                    ""
                };
                format!("freeze {}: {}{note}", freeze.id, freeze.message)
            }
            (Finding::FreezesUnreadable { cluster, why }, _) => format!(
                "cannot read deploy freezes on {cluster} ({why}), so cannot prove the release is unfrozen"
            ),
            (Finding::OverrideWithoutReason, _) => {
                "a freeze override needs a reason: say why the freeze is overridden (--reason)"
                    .into()
            }
            (Finding::OverrideUnknown(id), _) => format!(
                "the override names freeze {id}, which does not apply to this release now; \
                 name only active freezes (`cutover freeze status` lists them)"
            ),
        }
    }
}

/// The answer: the resolved release (when the spec resolves) and every finding.
#[derive(Clone, Debug)]
pub struct Admission {
    pub release: Option<ResolvedRelease>,
    pub findings: Vec<Finding>,
}

/// Why a release was refused, every finding with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub findings: Vec<Finding>,
    /// The release's name, for the message.
    pub name: String,
}

impl Refused {
    /// The most serious class among the findings.
    pub fn refusal(&self) -> Refusal {
        self.findings
            .iter()
            .map(Finding::refusal)
            .min()
            .unwrap_or(Refusal::Invalid)
    }

    /// Whether only the tier's rules are broken (exit 5 rather than 1).
    pub fn breaks_policy(&self) -> bool {
        self.refusal() == Refusal::Policy
    }

    /// The refusal in words. Spec findings (which come alone: nothing else is
    /// asked of a spec that does not resolve) are listed one a line, placed
    /// in the file when `src` is given. Otherwise every finding of the most
    /// serious class; `note` follows a tier refusal's first words
    /// (", nothing was touched").
    pub fn message(&self, src: Option<&Source>, note: &str) -> String {
        if self.findings.iter().all(|f| matches!(f, Finding::Spec(_))) {
            let sep = if src.is_some() { "\n" } else { "; " };
            return self
                .findings
                .iter()
                .map(|f| f.describe(src))
                .collect::<Vec<_>>()
                .join(sep);
        }
        let class = self.refusal();
        let mine: Vec<&Finding> = self
            .findings
            .iter()
            .filter(|f| f.refusal() == class)
            .collect();
        if class != Refusal::Frozen {
            return mine
                .iter()
                .map(|f| match f {
                    Finding::Tier(why) => why.replacen(" policy:", &format!(" policy{note}:"), 1),
                    _ => f.describe(src),
                })
                .collect::<Vec<_>>()
                .join("; ");
        }
        let partial = mine.iter().any(|f| {
            matches!(
                f,
                Finding::Frozen {
                    partial_override: true,
                    ..
                }
            )
        });
        let unreadable = mine
            .iter()
            .any(|f| matches!(f, Finding::FreezesUnreadable { .. }));
        let list = mine
            .iter()
            .map(|f| match f {
                Finding::Frozen { freeze, .. } => format!("{} ({})", freeze.id, freeze.message),
                other => other.describe(None),
            })
            .collect::<Vec<_>>()
            .join("; ");
        let hint = if unreadable {
            "it starts once every cluster's freezes can be read"
        } else if partial {
            "an override must name every active freeze"
        } else {
            "wait for it to be lifted, or override with --override-freeze ID --reason TEXT"
        };
        // Freezes are read only before a release starts: nothing was written yet.
        format!(
            "{} is frozen, nothing was written: {list}; {hint}",
            self.name
        )
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message(None, ""))
    }
}

impl Admission {
    /// The resolved release, or why it is refused.
    pub fn admitted(self, name: &str) -> Result<ResolvedRelease, Refused> {
        match (self.release, self.findings.is_empty()) {
            (Some(rel), true) => Ok(rel),
            (_, _) => Err(Refused {
                findings: self.findings,
                name: name.to_string(),
            }),
        }
    }
}

/// Every reason `req` may not be acted on: the spec's findings; else the
/// tier's static rules; then, for a release about to start, the freezes that
/// apply and the override's own findings.
pub fn admit(req: &Request<'_>) -> Admission {
    let rel =
        match ResolvedRelease::resolve(req.name, req.namespace, req.spec, req.fleet, req.policy) {
            Ok(rel) => rel,
            Err(findings) => {
                return Admission {
                    release: None,
                    findings: findings.into_iter().map(Finding::Spec).collect(),
                };
            }
        };
    let mut findings = Vec::new();
    if let Some(why) = crate::policy::rules::refusal(&rel, "") {
        findings.push(Finding::Tier(why));
    }
    if let Some(o) = &rel.override_freezes
        && o.reason.trim().is_empty()
    {
        findings.push(Finding::OverrideWithoutReason);
    }
    if let Some(reading) = &req.freezes {
        findings.extend(freeze_findings(&rel, reading));
    }
    Admission {
        release: Some(rel),
        findings,
    }
}

fn freeze_findings(rel: &ResolvedRelease, reading: &FreezeReading<'_>) -> Vec<Finding> {
    let mut out: Vec<Finding> = reading
        .unreadable
        .iter()
        .map(|(cluster, why)| Finding::FreezesUnreadable {
            cluster: cluster.clone(),
            why: why.clone(),
        })
        .collect();
    let active = freeze::applicable(rel, reading.freezes, reading.windows, reading.now);
    let o = rel.override_freezes.as_ref();
    let blocking = freeze::blocking(&active, o);
    out.extend(blocking.unnamed.iter().map(|f| Finding::Frozen {
        freeze: (*f).clone(),
        partial_override: blocking.partial,
    }));
    if reading.unreadable.is_empty() {
        for id in o.iter().flat_map(|o| o.ids.iter()) {
            if !active.iter().any(|f| &f.id == id) {
                out.push(Finding::OverrideUnknown(id.clone()));
            }
        }
    }
    out
}

/// The ids of an override that name freeze objects (not scheduled windows).
pub fn overridden_objects(o: &FreezeOverride) -> impl Iterator<Item = &str> {
    o.ids
        .iter()
        .map(String::as_str)
        .filter(|id| !id.starts_with("window/"))
}

#[cfg(test)]
mod tests;
