//! Admission as a table: given the checkout example edited one way, and the
//! freezes read, then these findings and this class of refusal.

use super::*;
use crate::freeze::{DeployFreezeSpec, Scope};
use crate::spec::release::ReleaseDocument;

const RELEASE: &str = include_str!("../../../../examples/checkout/release.yaml");
const FLEET: &str = include_str!("../../../../examples/checkout/fleet.yaml");

fn t0() -> Timestamp {
    "2026-03-02T09:00:00Z".parse().unwrap()
}

fn mk_doc(edit: impl FnOnce(&mut ReleaseDocument)) -> ReleaseDocument {
    let mut doc: ReleaseDocument = Source::new("release.yaml", RELEASE).decode().unwrap();
    edit(&mut doc);
    doc
}

fn mk_freeze(id: &str, apps: &[&str]) -> DeployFreeze {
    let mut f = DeployFreeze::new(
        id,
        DeployFreezeSpec {
            reason: format!("incident {id}"),
            author: "oncall".into(),
            ticket: None,
            scope: Scope {
                apps: apps.iter().map(|a| a.to_string()).collect(),
                ..Scope::default()
            },
            expires_at: None,
            lifted: None,
        },
    );
    f.metadata.name = Some(id.into());
    f
}

fn mk_span(s: &str) -> crate::spec::Span {
    crate::spec::Span::parse(s).unwrap()
}

fn mk_override(ids: &[&str], reason: &str) -> Option<FreezeOverride> {
    Some(FreezeOverride {
        ids: ids.iter().map(|i| i.to_string()).collect(),
        reason: reason.into(),
        by: Some("tester".into()),
    })
}

/// Freezes read and clusters unreadable, as a test row gives them.
type Read<'a> = Option<(&'a [DeployFreeze], &'a [(String, String)])>;

fn admit_with(doc: &ReleaseDocument, freezes: Read<'_>) -> Admission {
    let fleet = Fleet::parse("fleet.yaml", FLEET).unwrap();
    let policy = TierPolicyFile::builtin();
    admit(&Request {
        name: &doc.metadata.name,
        namespace: doc.metadata.namespace.as_deref(),
        spec: &doc.spec,
        fleet: &fleet,
        policy: &policy,
        freezes: freezes.map(|(freezes, unreadable)| FreezeReading {
            freezes,
            unreadable,
            windows: &[],
            now: t0(),
        }),
    })
}

/// The kinds of finding, in order, as short words.
fn kinds(a: &Admission) -> Vec<&'static str> {
    a.findings
        .iter()
        .map(|f| match f {
            Finding::Spec(s) if s.breaks_policy => "spec-policy",
            Finding::Spec(_) => "spec",
            Finding::Tier(_) => "tier",
            Finding::Frozen {
                partial_override: true,
                ..
            } => "frozen-partial",
            Finding::Frozen { .. } => "frozen",
            Finding::FreezesUnreadable { .. } => "unreadable",
            Finding::OverrideWithoutReason => "override-no-reason",
            Finding::OverrideUnknown(_) => "override-unknown",
        })
        .collect()
}

#[test]
fn admission_table() {
    let one = [mk_freeze("one", &[])];
    let two = [mk_freeze("one", &[]), mk_freeze("two", &["checkout"])];
    let elsewhere = [mk_freeze("other-app", &["payments"])];
    let unreadable = [("prod-b".to_string(), "connection refused".to_string())];
    type Edit = fn(&mut ReleaseDocument);
    let none: Edit = |_| {};
    type Row<'a> = (&'a str, Edit, Read<'a>, Vec<&'a str>, Option<Refusal>);
    let rows: Vec<Row<'_>> = vec![
        ("the example as shipped", none, None, vec![], None),
        (
            "no freezes read at all (in flight)",
            none,
            Some((&[], &[])),
            vec![],
            None,
        ),
        (
            "a freeze of another app",
            none,
            Some((&elsewhere, &[])),
            vec![],
            None,
        ),
        (
            "a bad version field",
            |d| d.spec.version = String::new(),
            None,
            vec!["spec"],
            Some(Refusal::Invalid),
        ),
        (
            "a soak shorter than the tier allows",
            |d| d.spec.plan.soak = Some(mk_span("1m")),
            None,
            vec!["spec-policy"],
            Some(Refusal::Policy),
        ),
        (
            "too few replicas for the tier",
            |d| d.spec.replicas = 2,
            None,
            vec!["tier"],
            Some(Refusal::Policy),
        ),
        (
            "the tier's rules and a freeze: the policy refusal is the one given",
            |d| d.spec.replicas = 2,
            Some((&one, &[])),
            vec!["tier", "frozen"],
            Some(Refusal::Policy),
        ),
        (
            "frozen",
            none,
            Some((&one, &[])),
            vec!["frozen"],
            Some(Refusal::Frozen),
        ),
        (
            "two freezes, both listed",
            none,
            Some((&two, &[])),
            vec!["frozen", "frozen"],
            Some(Refusal::Frozen),
        ),
        (
            "an override naming one of two",
            |d| d.spec.override_freezes = mk_override(&["one"], "security fix"),
            Some((&two, &[])),
            vec!["frozen-partial"],
            Some(Refusal::Frozen),
        ),
        (
            "an override naming both",
            |d| d.spec.override_freezes = mk_override(&["one", "two"], "security fix"),
            Some((&two, &[])),
            vec![],
            None,
        ),
        (
            "an override naming a freeze that is not active",
            |d| d.spec.override_freezes = mk_override(&["one", "typo"], "security fix"),
            Some((&one, &[])),
            vec!["override-unknown"],
            Some(Refusal::Invalid),
        ),
        (
            "an override without a reason",
            |d| d.spec.override_freezes = mk_override(&["one"], "  "),
            Some((&one, &[])),
            vec!["override-no-reason"],
            Some(Refusal::Invalid),
        ),
        (
            "freezes unreadable on a cluster",
            none,
            Some((&[], &unreadable)),
            vec!["unreadable"],
            Some(Refusal::Frozen),
        ),
        (
            "bad input wins over a freeze",
            |d| d.spec.version = String::new(),
            Some((&one, &[])),
            vec!["spec"],
            Some(Refusal::Invalid),
        ),
    ];
    for (name, edit, freezes, want, refusal) in rows {
        let doc = mk_doc(edit);
        let a = admit_with(&doc, freezes);
        assert_eq!(kinds(&a), want, "{name}");
        let got = a.admitted(&doc.metadata.name).err().map(|r| r.refusal());
        assert_eq!(got, refusal, "{name}");
    }
}

#[test]
fn a_frozen_refusal_names_every_freeze_and_how_to_go_on() {
    let two = [mk_freeze("one", &[]), mk_freeze("two", &[])];
    let doc = mk_doc(|_| {});
    let refused = admit_with(&doc, Some((&two, &[])))
        .admitted("checkout")
        .unwrap_err();
    let msg = refused.message(None, "");
    assert!(
        msg.starts_with("checkout is frozen, nothing was written: one (incident one")
            && msg.contains("two (incident two")
            && msg.ends_with("override with --override-freeze ID --reason TEXT"),
        "{msg}"
    );
    let doc = mk_doc(|d| d.spec.override_freezes = mk_override(&["one"], "fix"));
    let msg = admit_with(&doc, Some((&two, &[])))
        .admitted("checkout")
        .unwrap_err()
        .message(None, "");
    assert!(
        msg.contains("two (") && msg.ends_with("an override must name every active freeze"),
        "{msg}"
    );
}

#[test]
fn spec_findings_are_placed_in_their_file() {
    let doc = mk_doc(|d| d.spec.plan.soak = Some(mk_span("1m")));
    let refused = admit_with(&doc, None).admitted("checkout").unwrap_err();
    let src = Source::new("release.yaml", RELEASE);
    let msg = refused.message(Some(&src), "");
    assert!(
        msg.starts_with("release.yaml:") && msg.contains("field `spec.plan.soak`"),
        "{msg}"
    );
    assert!(refused.breaks_policy());
}

#[test]
fn the_one_freeze_rule() {
    let notice = |id: &str| FreezeNotice {
        id: id.into(),
        message: String::new(),
    };
    let active = [notice("a"), notice("b")];
    let o = |ids: &[&str]| mk_override(ids, "r");
    let b = crate::freeze::blocking(&active, None);
    assert_eq!((b.unnamed.len(), b.partial), (2, false));
    let ov = o(&["a"]);
    let b = crate::freeze::blocking(&active, ov.as_ref());
    assert_eq!((b.unnamed.len(), b.partial), (1, true));
    let ov = o(&["a", "b"]);
    let b = crate::freeze::blocking(&active, ov.as_ref());
    assert!(b.unnamed.is_empty() && b.overridden(&active));
    let b = crate::freeze::blocking(&[], ov.as_ref());
    assert!(b.unnamed.is_empty() && !b.overridden(&[]));
}
