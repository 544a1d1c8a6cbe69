//! Notifications end to end: a release's events reach a local HTTP receiver
//! in cutover's webhook JSON and in Slack's format, filtered per receiver,
//! retried when the receiver fails, and a receiver that is down costs the
//! release nothing but a count in its status.

mod common;

use std::collections::BTreeMap;

use common::receiver::receiver;
use common::{World, finish, tier2_release};
use cutover::spec::notify::{Event, Notification};
use cutover::spec::status::Phase;

/// Adds `notifications` to the simulated fleet's file, each URL in a file of its own.
fn add_receivers(w: &World, receivers: &[(&str, &str, &str, &str)]) {
    let mut yaml = String::from("notifications:\n");
    for (name, format, url, events) in receivers {
        let file = w.dir.path().join(format!("{name}-url"));
        std::fs::write(&file, format!("{url}\n")).unwrap();
        yaml.push_str(&format!(
            "  - name: {name}\n    format: {format}\n    url: {{file: {}}}\n",
            file.display()
        ));
        if !events.is_empty() {
            yaml.push_str(&format!("    events: [{events}]\n"));
        }
    }
    let path = w.sim.fleet_path();
    let mut text = std::fs::read_to_string(path).unwrap();
    text.push_str(&yaml);
    std::fs::write(path, text).unwrap();
}

/// The id `cutover freeze` printed.
fn freeze_id(out: &str) -> String {
    out.split_whitespace()
        .find(|w| w.starts_with("freeze-"))
        .unwrap_or_else(|| panic!("a freeze id in {out}"))
        .to_string()
}

fn events_of(bodies: &[serde_json::Value]) -> Vec<Event> {
    bodies
        .iter()
        .map(|b| {
            serde_json::from_value::<Notification>(b.clone())
                .unwrap()
                .event
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transition_reaches_the_receivers_in_order_and_one_that_is_down_costs_nothing() {
    let w = World::start(None, 300.0, &tier2_release()).await;
    let (base, got) = receiver().await;
    add_receivers(
        &w,
        &[
            ("audit", "webhook", &format!("{base}/flaky-audit"), ""),
            (
                "chat",
                "slack",
                &format!("{base}/chat"),
                "started, gateFailed, rolledBack, completed",
            ),
            // Nothing listens on port 9 (discard).
            ("pager", "webhook", "http://127.0.0.1:9/down", ""),
        ],
    );
    let (code, out, err) = finish(w.run(&[]).spawn().unwrap()).await;
    assert_eq!(code, 0, "the release completes: {out}\n{err}");
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Completed);

    // The webhook heard every transition that is an event, in the order the
    // history has them, though its first two requests were refused (retried).
    let expected: Vec<Event> = s.history.iter().filter_map(|t| Event::of(t, &s)).collect();
    let audit = got.at("/flaky-audit");
    assert_eq!(events_of(&audit), expected);
    assert_eq!(got.refused.lock().unwrap()["/flaky-audit"], 2);
    // The release's start (under load a hold, a cluster not answering yet,
    // may come before it, when the plan is not known yet).
    let started: Notification = audit
        .iter()
        .map(|b| serde_json::from_value::<Notification>(b.clone()).unwrap())
        .find(|n| n.event == Event::Started)
        .expect("a started event");
    let r = started
        .release
        .as_ref()
        .expect("a release event names its release");
    assert_eq!(
        (r.app.as_str(), r.version.as_str(), r.name.as_str()),
        ("checkout", "2.14.0", "checkout"),
        "{r:?}"
    );
    assert!(
        r.steps > 0 && r.step >= 1,
        "steps are counted from 1: {r:?}"
    );

    // Slack's format, and only the events the receiver asked for.
    let chat = got.at("/chat");
    assert_eq!(chat.len(), 2, "started and completed: {chat:?}");
    for body in &chat {
        let fields: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(fields, ["text"], "an incoming-webhook message: {body}");
    }
    let text = chat[1]["text"].as_str().unwrap();
    assert!(
        text.starts_with("*checkout* 2.14.0") && text.contains("completed"),
        "{text}"
    );

    // The receiver that is down: the status and the run's output say so.
    let by: BTreeMap<_, _> = s
        .notifications
        .iter()
        .map(|d| (d.receiver.as_str(), d))
        .collect();
    assert_eq!(by["audit"].delivered as usize, expected.len());
    assert_eq!(by["audit"].failed, 0);
    assert_eq!(by["chat"].delivered, 2);
    assert_eq!(by["pager"].delivered, 0);
    assert_eq!(by["pager"].failed as usize, expected.len());
    let why = by["pager"].last_error.as_deref().unwrap_or_default();
    assert!(why.contains("cannot reach it"), "{why}");
    assert!(
        out.contains(&format!(
            "notifications: {} not delivered to pager",
            expected.len()
        )),
        "{out}"
    );
    let (code, status, _) = finish(
        w.cutover(&["status", "checkout", "-n", "shop"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        status.contains(&format!(
            "Notify:  pager: 0 delivered, {} NOT delivered",
            expected.len()
        )),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_gate_carries_its_values_and_freezes_are_announced() {
    let w = World::start(Some("bad-canary"), 600.0, common::RELEASE).await;
    let (base, got) = receiver().await;
    add_receivers(
        &w,
        &[
            (
                "chat",
                "slack",
                &format!("{base}/chat"),
                "gateFailed, rolledBack, freezeSet, freezeLifted",
            ),
            ("audit", "webhook", &format!("{base}/audit"), "gateFailed"),
        ],
    );
    let (code, out, err) = finish(w.spawn_run(&[])).await;
    assert_eq!(code, 3, "rolled back: {out}\n{err}");
    let audit = got.at("/audit");
    assert_eq!(audit.len(), 1, "{audit:?}");
    let failed: Notification = serde_json::from_value(audit[0].clone()).unwrap();
    assert_eq!(failed.event, Event::GateFailed);
    let gate = failed
        .gates
        .first()
        .expect("the failing gate and its value");
    assert_eq!(gate.name, "error-ratio");
    assert!(gate.value.is_some(), "{gate:?}");
    let chat = got.at("/chat");
    let texts: Vec<&str> = chat.iter().map(|b| b["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].contains("gate failed") && texts[0].contains("• error-ratio on "),
        "{}",
        texts[0]
    );
    assert!(texts[1].contains("rolled back"), "{}", texts[1]);

    // A freeze set and lifted from the command line is announced too.
    let (code, out, err) = finish(
        w.cutover(&[
            "freeze",
            "--reason",
            "payments incident",
            "--ticket",
            "INC-9",
        ])
        .spawn()
        .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let id = freeze_id(&out);
    let (code, out, err) = finish(
        w.cutover(&["unfreeze", &id, "--reason", "mitigated"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let chat = got.at("/chat");
    let set = chat[2]["text"].as_str().unwrap();
    let lifted = chat[3]["text"].as_str().unwrap();
    assert!(
        set.contains("freeze set") && set.contains("payments incident") && set.contains(&id),
        "{set}"
    );
    assert!(
        lifted.contains("freeze lifted") && lifted.contains("mitigated"),
        "{lifted}"
    );
}

/// Bodies at `path` once there are `n` of them (at most 30 s).
async fn heard(got: &common::receiver::Received, path: &str, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..300 {
        let bodies = got.at(path);
        if bodies.len() >= n {
            return bodies;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{n} messages at {path}: {:?}", got.at(path));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freezes_set_and_lifted_with_kubectl_are_announced_by_the_controller_once() {
    use common::controller::{leader, start_controller, system_namespace};
    let w = World::start(None, 300.0, &tier2_release()).await;
    system_namespace(&w).await;
    let (base, got) = receiver().await;
    add_receivers(
        &w,
        &[(
            "ops",
            "webhook",
            &format!("{base}/ops"),
            "freezeSet, freezeLifted",
        )],
    );
    let _ctl = start_controller(&w, "ctl");
    for _ in 0..300 {
        if leader(&w).await.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // On call freezes with kubectl: the controller announces it.
    let path = w.dir.path().join("freeze.yaml");
    std::fs::write(
        &path,
        "apiVersion: cutover.dev/v1alpha1\nkind: DeployFreeze\nmetadata:\n  name: change-4711\n\
         spec:\n  reason: database failover\n  author: oncall@example.com\n",
    )
    .unwrap();
    w.kubectl_as("oncall", &w.fleet.home)
        .run(&["create", "-f", path.to_str().unwrap()])
        .await;
    let ops = heard(&got, "/ops", 1).await;
    let set: Notification = serde_json::from_value(ops[0].clone()).unwrap();
    assert_eq!(set.event, Event::FreezeSet);
    let f = set.freeze.unwrap();
    assert_eq!(
        (f.id.as_str(), f.by.as_str(), f.reason.as_str()),
        ("change-4711", "oncall@example.com", "database failover")
    );
    assert_eq!(f.clusters, std::slice::from_ref(&w.fleet.home));

    // `cutover freeze` announces its own, once: the controller stays quiet.
    let (code, out, err) = finish(
        w.cutover(&["freeze", "--reason", "payments incident"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let id = freeze_id(&out);
    // The controller looks at least every 5 s: give it two looks.
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    assert_eq!(
        events_of(&got.at("/ops")),
        [Event::FreezeSet, Event::FreezeSet]
    );

    // Lifted with kubectl: announced by the controller; with `unfreeze`: by it alone.
    w.kubectl_as("admin", &w.fleet.home)
        .run(&[
            "patch",
            "deployfreeze",
            "change-4711",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"lifted":{"by":"alice","reason":"failover done","at":"2026-12-04T10:00:00Z"}}}"#,
        ])
        .await;
    let ops = heard(&got, "/ops", 3).await;
    let lifted: Notification = serde_json::from_value(ops[2].clone()).unwrap();
    assert_eq!(lifted.event, Event::FreezeLifted);
    assert!(
        lifted.message.contains("lifted by alice") && lifted.message.contains("failover done"),
        "{}",
        lifted.message
    );
    let (code, out, err) = finish(
        w.cutover(&["unfreeze", &id, "--reason", "mitigated"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    assert_eq!(
        events_of(&got.at("/ops")),
        [
            Event::FreezeSet,
            Event::FreezeSet,
            Event::FreezeLifted,
            Event::FreezeLifted
        ]
    );
}
