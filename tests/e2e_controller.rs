//! `cutover controller` end to end: two controller processes against the
//! simulated fleet, Releases applied with kubectl, the leader killed mid-ramp,
//! a malformed Release beside a good one, `/metrics`, `/readyz` and Events.

mod common;

use std::time::{Duration, Instant};

use common::controller::{
    Controller, SYSTEM_NS, http_get as get, leader, start_controller, start_controller_args,
    start_controller_with, system_namespace,
};
use common::{
    NS, World, app_release, completed_steps, default_fleet_with, named_release, tier2_release,
};
use cutover::spec::status::{Phase, StepKind, TransitionEvent};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `text` to `path` and has kubectl apply it: the API server refuses
/// it as invalid, its answer naming each of `needles`.
async fn assert_refused(
    kubectl: &common::Kubectl,
    path: &std::path::Path,
    text: &str,
    needles: &[&str],
) {
    std::fs::write(path, text).unwrap();
    let (ok, _, err) = kubectl
        .try_run(&["apply", "-f", path.to_str().unwrap()])
        .await;
    assert!(!ok, "{} is refused", path.display());
    assert!(err.contains("is invalid"), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
}

/// The namespace's Releases as the API server keeps them, read untyped, so
/// one cutover cannot decode reads too.
fn untyped_releases(w: &World) -> Api<kube::api::DynamicObject> {
    Api::namespaced_with(
        w.readers[&w.fleet.home].clone(),
        NS,
        &cutover::controller::release_resource(),
    )
}

/// A Release's `Invalid` condition, or null when it has none.
fn invalid_of(obj: &kube::api::DynamicObject) -> serde_json::Value {
    obj.data["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Invalid"))
        .cloned()
        .unwrap_or_default()
}

fn log_of(w: &World, c: &Controller) -> String {
    std::fs::read_to_string(w.dir.path().join(format!("{}.log", c.identity))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_applied_with_kubectl_completes_though_its_replica_dies_mid_ramp() {
    let w = World::start(None, 300.0, &tier2_release()).await;
    system_namespace(&w).await;
    let mut a = start_controller(&w, "ctl-a");
    let mut b = start_controller(&w, "ctl-b");
    wait_until("a leader", || async { leader(&w).await.is_some() }).await;
    for c in [&a, &b] {
        wait_until("/readyz", || async {
            get(c.port, "/readyz").is_some_and(|(s, _)| s == 200)
        })
        .await;
    }
    let kubectl = w.kubectl(&w.fleet.home);
    kubectl
        .run(&["apply", "-f", w.release_path.to_str().unwrap()])
        .await;

    let ramp = w
        .wait_for("the ramp on prod-a", |s| {
            s.plan.get(s.step as usize).map(|p| p.kind) == Some(StepKind::Ramp)
        })
        .await;
    // The release's Lease is held under the Lease of the replica that
    // drives it: one renewal covers every release it drives, and it needs
    // none of its own.
    let release_lease = || async {
        Api::<Lease>::namespaced(w.readers[&w.fleet.home].clone(), NS)
            .get("cutover-release-checkout")
            .await
            .unwrap()
    };
    let held = release_lease().await;
    let spec = held.spec.clone().unwrap();
    let first = spec.holder_identity.clone().unwrap();
    assert!([&a.identity, &b.identity].contains(&&first), "{first}");
    assert_eq!(
        held.metadata.annotations.as_ref().unwrap()["cutover.dev/held-under"],
        format!("{SYSTEM_NS}/cutover-controller-replica-{first}")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        release_lease().await.spec.unwrap().renew_time,
        spec.renew_time,
        "no renewals of the release's own lease"
    );
    let (killed, standby) = if first == a.identity {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    killed.child.start_kill().unwrap();
    killed.child.wait().await.unwrap();

    let done = w
        .wait_for("the release to complete", |s| s.phase.is_terminal())
        .await;
    assert_eq!(
        done.phase,
        Phase::Completed,
        "{:?}\n{}",
        done.message,
        log_of(&w, standby)
    );
    assert!(done.step > ramp.step);
    // Every step completed once, in order: none repeated, none skipped.
    assert_eq!(
        completed_steps(&done),
        (0..done.plan.len() as u32).collect::<Vec<_>>()
    );
    let starts = done
        .history
        .iter()
        .filter(|t| t.event == TransitionEvent::StepStarted)
        .count();
    assert_eq!(starts, done.plan.len(), "{:#?}", done.history);
    // The one replica left also leads (it announces freezes set with kubectl).
    wait_until("the survivor to lead", || async {
        leader(&w).await.as_deref() == Some(standby.identity.as_str())
    })
    .await;
    w.assert_all_on_green("after the takeover").await;

    // Events on the Release for its transitions. They are published after
    // the status write that records each transition, so the last may lag it.
    let events_api = Api::<Event>::namespaced(w.readers[&w.fleet.home].clone(), NS);
    let reasons = || async {
        let events = events_api.list(&ListParams::default()).await.unwrap();
        events
            .items
            .iter()
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.kind.as_deref() == Some("Release"))
            })
            .filter_map(|e| e.reason.clone())
            .collect::<Vec<String>>()
    };
    // Events expire after an hour of fleet time (12 s here, as a real
    // cluster's --event-ttl would): the first ones may be gone on a slow run.
    let expected = ["StepCompleted", "Completed"];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = reasons().await;
        if expected.iter().all(|r| seen.iter().any(|x| x == r)) {
            break;
        }
        assert!(Instant::now() < deadline, "{expected:?} in {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each is about this Release by its UID too (`kubectl describe` selects
    // Events by `involvedObject.uid`), created once for its transition and
    // never patched into a series: a series keeps its first note, so a
    // later step's start would read as the first one's.
    let uid = Api::<cutover::spec::Release>::namespaced(w.readers[&w.fleet.home].clone(), NS)
        .get("checkout")
        .await
        .unwrap()
        .metadata
        .uid
        .expect("a uid");
    let started: Vec<&str> = done
        .history
        .iter()
        .filter(|t| t.event == TransitionEvent::StepStarted)
        .map(|t| t.message.as_str())
        .collect();
    for e in events_api.list(&ListParams::default()).await.unwrap().items {
        let regarding = e.regarding.as_ref().unwrap();
        if regarding.kind.as_deref() != Some("Release") {
            continue;
        }
        assert_eq!(regarding.uid.as_deref(), Some(uid.as_str()), "{e:?}");
        assert!(e.series.is_none(), "{e:?}");
        if e.reason.as_deref() == Some("StepStarted") {
            let note = e.note.as_deref().unwrap_or_default();
            assert!(started.contains(&note), "{note:?} in {started:#?}");
        }
    }

    // The standby's metrics after it finished the release.
    let (status, metrics) = get(standby.port, "/metrics").unwrap();
    assert_eq!(status, 200);
    for line in [
        "cutover_leader 1",
        "cutover_replica 1",
        "cutover_lease_losses_total 0",
        "cutover_releases{phase=\"Completed\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} in\n{metrics}\n{}",
            log_of(&w, standby)
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cutover_api_requests_total{cluster=\"prod-b\",verb=\"patch\"}")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cutover_step_duration_seconds_count{kind=\"Bake\"} 1")),
        "{metrics}"
    );
    assert_eq!(get(standby.port, "/healthz").unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_release_is_marked_invalid_while_another_completes() {
    let w = World::start(None, 300.0, &tier2_release()).await;
    system_namespace(&w).await;
    let c = start_controller(&w, "ctl-solo");
    let kubectl = w.kubectl(&w.fleet.home);
    // typo, an app of its own, names a cluster the fleet does not have.
    w.serve_blue(&app_release("typo")).await;
    let unknown_cluster = app_release("typo").replace("- name: prod-b", "- name: prod-z");
    let wrong_type = tier2_release()
        .replace(
            "name: checkout\n  namespace: shop",
            "name: mangled\n  namespace: shop",
        )
        .replace("replicas: 6", "replicas: six");
    let typo = w.dir.path().join("typo.yaml");
    std::fs::write(&typo, &unknown_cluster).unwrap();
    kubectl.run(&["apply", "-f", typo.to_str().unwrap()]).await;
    // A duration cutover cannot read at all is refused when it is written:
    // the CRD's pattern for a duration is enforced by the API server
    // (apiextensions-apiserver validates `pattern` on every write).
    let garbled = w.dir.path().join("garbled.yaml");
    let soon = named_release("garbled", "garbled").replacen("interval: 1m", "interval: soon", 1);
    assert_refused(
        &kubectl,
        &garbled,
        &soon,
        &["spec.gates[0].interval", "should match"],
    )
    .await;
    // One that matches the pattern but does not decode is stored (a
    // fraction of an hour that is not whole seconds): it is refused by
    // cutover, naming the field, and the namespace's other Releases are
    // read as ever.
    std::fs::write(
        &garbled,
        named_release("garbled", "garbled").replacen("interval: 1m", "interval: 0.001h", 1),
    )
    .unwrap();
    kubectl
        .run(&["apply", "-f", garbled.to_str().unwrap()])
        .await;
    // A wrong type never gets stored: the CRD's schema refuses it, as
    // apiextensions-apiserver would, naming the field.
    let mangled = w.dir.path().join("mangled.yaml");
    assert_refused(
        &kubectl,
        &mangled,
        &wrong_type,
        &["spec.replicas", "integer"],
    )
    .await;
    // Nor a number beyond what its field holds: the CRD bounds each
    // unsigned field by its type (the server ignores `format: uint32`).
    let too_many = wrong_type.replace("replicas: six", "replicas: 5000000000");
    let needles = ["spec.replicas", "less than or equal to"];
    assert_refused(&kubectl, &mangled, &too_many, &needles).await;
    kubectl
        .run(&["apply", "-f", w.release_path.to_str().unwrap()])
        .await;

    let done = w
        .wait_for("the good release to complete", |s| s.phase.is_terminal())
        .await;
    assert_eq!(done.phase, Phase::Completed, "{}", log_of(&w, &c));
    let api = untyped_releases(&w);
    assert!(
        api.get_opt("mangled").await.unwrap().is_none(),
        "nothing stored"
    );
    // Every driver sees a person's pause or abort through the shared watch
    // of the namespace's Releases: it lists them all, garbled too.
    let releases = w.clients.watches.releases(w.clients.home(), NS);
    wait_until("the Releases' watch to list them all", || async {
        releases.state() == cutover::fleet::watches::WatchState::Healthy
            && ["checkout", "typo", "garbled"]
                .iter()
                .all(|n| !releases.get(n).is_empty())
    })
    .await;
    for (name, reason, needle) in [
        ("typo", "InvalidSpec", "spec.clusters[2].name"),
        ("garbled", "MalformedSpec", "spec.gates[0].interval"),
    ] {
        let obj = api.get(name).await.unwrap();
        let invalid = invalid_of(&obj);
        assert!(
            !invalid.is_null(),
            "{name} has an Invalid condition: {}",
            obj.data
        );
        assert_eq!(invalid["status"], "True", "{name}");
        assert_eq!(invalid["reason"], reason, "{name}: {invalid}");
        let message = invalid["message"].as_str().unwrap();
        assert!(message.contains(needle), "{name}: {message}");
        assert_eq!(
            obj.data["status"]["phase"].as_str().unwrap_or("Pending"),
            "Pending",
            "{name} was never started"
        );
    }
    // What lists the Releases names the one it cannot read, and goes on.
    let out = w
        .cutover(&["freeze", "status", "-n", NS, "-o", "json"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["unreadable"]
            .as_array()
            .is_some_and(|u| u.iter().any(|m| m
                .as_str()
                .is_some_and(|m| m.starts_with("Release garbled: ") && m.contains("0.001h")))),
        "{report}"
    );
    // typo and garbled, never started.
    let (_, metrics) = get(c.port, "/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "cutover_releases{phase=\"Pending\"} 2"),
        "{metrics}"
    );
    // Changed but still wrong, it is a new generation with the same
    // verdict: the condition says it is of the new one.
    let first = invalid_of(&api.get("typo").await.unwrap());
    std::fs::write(&typo, unknown_cluster.replace("replicas: 6", "replicas: 9")).unwrap();
    kubectl.run(&["apply", "-f", typo.to_str().unwrap()]).await;
    wait_until("the condition to be of the new generation", || async {
        let obj = api.get("typo").await.unwrap();
        invalid_of(&obj)["observedGeneration"].as_i64() == obj.metadata.generation
    })
    .await;
    let again = invalid_of(&api.get("typo").await.unwrap());
    assert_eq!(
        (
            &again["status"],
            &again["reason"],
            &again["lastTransitionTime"]
        ),
        (
            &first["status"],
            &first["reason"],
            &first["lastTransitionTime"]
        ),
        "still invalid since it first was"
    );
    // Fixed, it is a new generation: judged again, valid, and it runs.
    std::fs::write(&typo, app_release("typo")).unwrap();
    kubectl.run(&["apply", "-f", typo.to_str().unwrap()]).await;
    let fixed = w
        .wait_for_release("typo", "the fixed release to complete", |s| {
            s.phase.is_terminal()
        })
        .await;
    assert_eq!(fixed.phase, Phase::Completed, "{:?}", fixed.message);
    let obj = api.get("typo").await.unwrap();
    let invalid = invalid_of(&obj);
    assert_eq!(
        (invalid["status"].as_str(), invalid["reason"].as_str()),
        (Some("False"), Some("Valid")),
        "{invalid}"
    );
    assert_eq!(
        invalid["observedGeneration"].as_i64(),
        obj.metadata.generation,
        "the verdict is of the spec as it is: {invalid}"
    );
}

/// A person edits a running release into a spec the API server stores but
/// cutover cannot decode (a gate interval of `0.001h`, 3.6 s, which is not
/// whole seconds). The release holds where it is: nothing more is acted on,
/// green keeps the traffic it had on the pods that serve it, the Release
/// says why (`Invalid`, `MalformedSpec`, the field), and once the spec is
/// fixed it goes on from where it held and completes. As Argo Rollouts
/// stops progressing a Rollout whose spec is invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_release_edited_into_an_undecodable_spec_holds_its_traffic_until_fixed() {
    use cutover::fleet::workload::Colour;
    let w = World::start(None, 300.0, &tier2_release()).await;
    system_namespace(&w).await;
    let c = start_controller(&w, "ctl-solo");
    let kubectl = w.kubectl(&w.fleet.home);
    kubectl
        .run(&["apply", "-f", w.release_path.to_str().unwrap()])
        .await;
    let prod_a = "prod-a";
    wait_until("green to take traffic on prod-a", || async {
        w.green_share(prod_a, Colour::Green).await > cutover::spec::Percent::ZERO
    })
    .await;
    let garbled = w.dir.path().join("garbled.yaml");
    std::fs::write(
        &garbled,
        tier2_release().replacen("interval: 1m", "interval: 0.001h", 1),
    )
    .unwrap();
    kubectl
        .run(&["apply", "-f", garbled.to_str().unwrap()])
        .await;
    let api = untyped_releases(&w);
    wait_until("the Release to say its spec does not decode", || async {
        let c = invalid_of(&api.get("checkout").await.unwrap());
        c["status"] == "True"
            && c["reason"] == "MalformedSpec"
            && c["message"]
                .as_str()
                .is_some_and(|m| m.contains("spec.gates[0].interval"))
    })
    .await;
    // What the release's driver had under way when the edit landed ends
    // with its next write of the status, which the edit makes conflict.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snapshot = || async {
        let obj = api.get("checkout").await.unwrap();
        let mut shares = Vec::new();
        for cluster in ["staging", "prod-a", "prod-b"] {
            shares.push(w.green_share(cluster, Colour::Green).await);
        }
        let green = w.deployment(prod_a, "checkout-green").await;
        let available = green
            .and_then(|d| d.status)
            .and_then(|s| s.available_replicas)
            .unwrap_or_default();
        (
            obj.data["status"]["phase"].clone(),
            obj.data["status"]["step"].clone(),
            obj.data["status"]["history"]
                .as_array()
                .map(Vec::len)
                .unwrap_or_default(),
            shares,
            available,
        )
    };
    let held = snapshot().await;
    assert!(
        held.3[1] != cutover::spec::Percent::ZERO,
        "green keeps prod-a's traffic: {held:?}"
    );
    assert!(held.4 > 0, "on green pods that are available: {held:?}");
    // Ten minutes of the fleet's time: driven, the ramp would have moved.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(snapshot().await, held, "{}", log_of(&w, &c));
    assert_ne!(held.0, "Completed");

    // Fixed, it goes on from where it held.
    kubectl
        .run(&["apply", "-f", w.release_path.to_str().unwrap()])
        .await;
    let done = w
        .wait_for("the fixed release to complete", |s| s.phase.is_terminal())
        .await;
    assert_eq!(done.phase, Phase::Completed, "{}", log_of(&w, &c));
    assert_eq!(done.revision, 1, "the same revision, held, then resumed");
    let c = invalid_of(&api.get("checkout").await.unwrap());
    assert_eq!(c["status"], "False", "{c}");
    w.assert_all_on_green("once fixed, the release completes")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_secrets_and_the_shipped_rbac_is_exactly_what_is_used() {
    use cutover::fleet::workload::Colour;
    use cutover::spec::fleet::SecretKeyRef;
    use cutover::spec::status::HoldReason;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::PostParams;

    // prod-b has no Gateway API here: its router is the replica-ratio one.
    let release = tier2_release().replace(
        "    - name: prod-b\n      role: production\n",
        "    - name: prod-b\n      role: production\n      router:\n        kind: replicaRatio\n",
    );
    assert!(release.contains("replicaRatio"));
    // A Job hook before prod-a's cleanup, from a CronJob's template there.
    let release = format!(
        "{release}  hooks:\n    - name: smoke\n      at: beforeCleanup\n      clusters: [prod-a]\n      \
         job: {{fromCronJob: checkout-smoke}}\n"
    );
    let w = World::start(None, 300.0, &release).await;
    system_namespace(&w).await;
    let cron: k8s_openapi::api::batch::v1::CronJob = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "checkout-smoke"},
        "spec": {"schedule": "@yearly", "suspend": true, "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "smoke", "image": "registry.example.com/shop/smoke:1"}],
        }}}}},
    }))
    .unwrap();
    Api::<k8s_openapi::api::batch::v1::CronJob>::namespaced(w.readers["prod-a"].clone(), NS)
        .create(&PostParams::default(), &cron)
        .await
        .unwrap();
    // prod-a as a previous cutover release leaves it: blue with the disruption
    // budget cutover made, and no green slot Service (cutover creates it).
    let home = w.readers[&w.fleet.home].clone();
    let blue_budget = cutover::fleet::workload::slot_budget(&w.rel, Colour::Blue).unwrap();
    Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(home.clone(), NS)
        .create(&PostParams::default(), &blue_budget)
        .await
        .unwrap();
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(home.clone(), NS)
        .delete("checkout-green", &Default::default())
        .await
        .unwrap();
    w.sim.reset_requests();

    // prod-b is reached through a kubeconfig Secret, wrong at first.
    let mut fleet = w.fleet.clone();
    let b = fleet
        .clusters
        .iter_mut()
        .find(|c| c.name == "prod-b")
        .unwrap();
    b.context = None;
    b.kubeconfig_secret = Some(SecretKeyRef {
        name: "cutover-kubeconfig-prod-b".into(),
        key: "kubeconfig".into(),
    });
    // Notifications go to a webhook whose URL only a Secret holds.
    let (base, got) = common::receiver::receiver().await;
    let hook = format!("{base}/ops-hook");
    fleet.notifications = vec![cutover::spec::notify::Receiver {
        name: "ops".into(),
        format: cutover::spec::notify::Format::Webhook,
        url: cutover::spec::notify::UrlSource {
            secret_key_ref: Some(cutover::spec::notify::SecretKey {
                name: "cutover-notifications".into(),
                key: "ops".into(),
            }),
            file: None,
        },
        events: vec![cutover::spec::notify::Event::Completed],
        apps: vec!["checkout".into()],
    }];
    let fleet_path = w.dir.path().join("fleet-secrets.yaml");
    std::fs::write(&fleet_path, serde_saphyr::to_string(&fleet).unwrap()).unwrap();
    // The member identity's kubeconfig for prod-b, as `deploy/member/` sets it up.
    let kubeconfig = std::fs::read_to_string(w.sim.kubeconfig_as("cutover")).unwrap();
    let current = kubeconfig
        .lines()
        .find(|l| l.starts_with("current-context:"))
        .unwrap();
    let for_b = kubeconfig.replace(current, "current-context: sim-prod-b");
    let b_url = w.sim.api_url("prod-b").unwrap();
    let broken = for_b.replace(&b_url, "https://127.0.0.1:9");
    let secrets: Api<Secret> = Api::namespaced(home, SYSTEM_NS);
    let mut secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("cutover-kubeconfig-prod-b".into()),
            ..Default::default()
        },
        string_data: Some([("kubeconfig".to_string(), broken)].into()),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let hook_secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("cutover-notifications".into()),
            ..Default::default()
        },
        string_data: Some([("ops".to_string(), hook.clone())].into()),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &hook_secret)
        .await
        .unwrap();

    let ctl = start_controller_with(&w, "ctl", &fleet_path, "json");
    let kubectl = w.kubectl(&w.fleet.home);
    kubectl
        .run(&["apply", "-f", w.release_path.to_str().unwrap()])
        .await;
    // And one the controller must refuse, so its Invalid condition is written.
    let typo = tier2_release()
        .replace(
            "name: checkout\n  namespace: shop",
            "name: typo\n  namespace: shop",
        )
        .replace("- name: prod-b", "- name: prod-z");
    let typo_path = w.dir.path().join("typo.yaml");
    std::fs::write(&typo_path, typo).unwrap();
    kubectl
        .run(&["apply", "-f", typo_path.to_str().unwrap()])
        .await;

    w.wait_for("a hold on unreachable prod-b", |s| {
        s.holds.iter().any(|h| {
            h.reason == HoldReason::ClusterUnreachable && h.cluster.as_deref() == Some("prod-b")
        })
    })
    .await;
    secret.string_data = Some([("kubeconfig".to_string(), for_b.clone())].into());
    secrets
        .replace("cutover-kubeconfig-prod-b", &PostParams::default(), &secret)
        .await
        .unwrap();
    let done = w
        .wait_for("the release to complete", |s| s.phase.is_terminal())
        .await;
    let log = std::fs::read_to_string(w.dir.path().join("ctl.log")).unwrap();
    assert_eq!(done.phase, Phase::Completed, "{:?}\n{log}", done.message);
    assert!(
        done.history.iter().any(
            |t| t.event == cutover::spec::status::TransitionEvent::HookPassed
                && t.message
                    .contains("hook smoke passed on prod-a before cleanup")
        ),
        "{:?}",
        done.history
    );
    // The completion reached the webhook the Secret names (sent beside the
    // driver, after the status that says completed), and the status says so.
    let mut heard = got.at("/ops-hook");
    for _ in 0..100 {
        if !heard.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        heard = got.at("/ops-hook");
    }
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!(heard[0]["event"], "completed");
    assert_eq!(heard[0]["release"]["name"], "checkout");
    let counted = w
        .wait_for("the completion's delivery to be counted", |s| {
            s.notifications.iter().any(|d| d.delivered + d.failed > 0)
        })
        .await;
    let ops = counted
        .notifications
        .iter()
        .find(|d| d.receiver == "ops")
        .expect("the status counts the receiver's deliveries");
    assert_eq!((ops.delivered, ops.failed), (1, 0), "{ops:?}");
    assert!(!log.contains(&hook), "the webhook URL is never logged");
    let (_, metrics) = get(ctl.port, "/metrics").unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "cutover_notifications_total{receiver=\"ops\",result=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(log.contains("credentials Secret changed"), "{log}");
    assert!(
        !log.contains("current-context") && !log.contains(&b_url),
        "the Secret's content is never logged:\n{log}"
    );
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("a structured log line: {e}: {line}"));
    }

    // Every decision the clusters' RBAC made on the controller's requests,
    // under the identities deploy/ sets up: none was refused, and every rule
    // of the shipped roles allowed something somewhere in the fleet (an apply
    // that created counts as the create it was authorized as).
    let controller = "system:serviceaccount:cutover-system:cutover-controller";
    let member = "system:serviceaccount:cutover-system:cutover-member";
    let decided: Vec<_> = w
        .sim
        .authorizations()
        .into_iter()
        .filter(|(cluster, d)| {
            d.user
                == if *cluster == w.fleet.home {
                    controller
                } else {
                    member
                }
        })
        .collect();
    let refused: Vec<_> = decided.iter().filter(|(_, d)| !d.allowed).collect();
    assert!(
        refused.is_empty(),
        "refused by the shipped roles: {refused:?}"
    );
    let used: std::collections::BTreeSet<(String, String)> = decided
        .iter()
        .map(|(_, d)| (d.verb.clone(), d.resource.clone()))
        .collect();
    assert!(
        used.contains(&("create".into(), "deployments".into())),
        "green's first apply is authorized as a create: {used:?}"
    );
    let home_roles = common::grants(
        &["controller/rbac.yaml", "common/member-role.yaml"],
        &[
            "cutover-controller",
            "cutover-controller-credentials",
            "cutover-member",
        ],
    );
    let unused: Vec<_> = home_roles.difference(&used).collect();
    assert!(unused.is_empty(), "granted but never used: {unused:?}");
}

/// Release after release through the controller: `kubectl apply` of a new
/// version on a completed Release runs its next revision to the end, and
/// SIGTERM makes the controller give its leader Lease back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_applied_to_a_completed_release_runs_its_next_revision() {
    let w = World::start(None, 600.0, &tier2_release()).await;
    system_namespace(&w).await;
    let mut c = start_controller(&w, "ctl-a");
    wait_until("a leader", || async { leader(&w).await.is_some() }).await;
    let kubectl = w.kubectl(&w.fleet.home);
    kubectl
        .run(&["apply", "-f", w.release_path.to_str().unwrap()])
        .await;
    let first = w
        .wait_for("the first version to complete", |s| s.phase.is_terminal())
        .await;
    assert_eq!(first.phase, Phase::Completed, "{:?}", first.message);
    let next = tier2_release().replace("version: 2.14.0", "version: 2.15.0");
    let path = w.dir.path().join("next.yaml");
    std::fs::write(&path, next).unwrap();
    kubectl.run(&["apply", "-f", path.to_str().unwrap()]).await;
    let done = w
        .wait_for("the next revision to complete", |s| {
            s.revision == 2 && s.phase.is_terminal()
        })
        .await;
    assert_eq!(
        (
            done.phase,
            done.version.as_deref(),
            done.blue_version.as_deref()
        ),
        (Phase::Completed, Some("2.15.0"), Some("2.14.0")),
        "{:?}\n{}",
        done.message,
        log_of(&w, &c)
    );
    assert_eq!(done.revisions.len(), 1);
    assert_eq!(done.revisions[0].version, "2.14.0");
    // What kubectl shows is what serves: 2.15.0 takes all of every cluster's traffic.
    for cluster in &w.rel.clusters {
        let blue = w.deployment(&cluster.name, "checkout-blue").await.unwrap();
        assert_eq!(
            blue.metadata.labels.unwrap()["cutover.dev/version"],
            "2.15.0"
        );
        assert!(
            w.deployment(&cluster.name, "checkout-green")
                .await
                .is_none()
        );
        assert_eq!(
            w.green_share(&cluster.name, cutover::fleet::workload::Colour::Blue)
                .await,
            cutover::spec::Percent::HUNDRED
        );
    }
    // SIGTERM: the controller exits and gives its leader Lease back.
    let pid = c.child.id().unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), c.child.wait())
        .await
        .expect("the controller exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", log_of(&w, &c));
    assert_eq!(leader(&w).await, None, "the leader Lease is given back");
    let replica = Api::<Lease>::namespaced(w.readers[&w.fleet.home].clone(), SYSTEM_NS)
        .get("cutover-controller-replica-ctl-a")
        .await
        .unwrap();
    assert_eq!(
        replica.spec.unwrap().holder_identity,
        None,
        "the replica's Lease is given back: its releases are free at once"
    );
}

/// A member cluster that hangs (its API server takes requests and answers
/// none, as one whose etcd stalls) holds up only what acts on it. With one
/// worker, checkout's apply of its green to prod-b never gets an answer,
/// and meanwhile app-y, whose new version fails its gates, rolls back on
/// staging and prod-a: a pass waiting on a cluster holds no worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_waiting_on_a_hung_cluster_does_not_hold_up_another_ones_rollback() {
    let scenario = default_fleet_with(
        r#"events:
  - name: prod-b hangs as checkout's deploy there begins
    whenReleaseStep: deploy green on prod-b
    apiLatency: {cluster: prod-b, latency: 1h}
  - name: app-y's new version fails half its requests
    after: 0s
    behaviour: {app: app-y, version: 2.14.0, errorRatio: 50%}
"#,
    );
    let w = World::start(Some(&scenario), 120.0, &tier2_release()).await;
    let app_y = app_release("app-y");
    w.serve_blue(&app_y).await;
    system_namespace(&w).await;
    // An hour's request timeout: nothing is given up during the test, so
    // the rollback cannot wait for checkout's request to fail either.
    let c = start_controller_args(
        &w,
        "ctl-solo",
        w.sim.fleet_path(),
        "text",
        &["--workers", "1", "--request-timeout", "1h"],
    );
    let kubectl = w.kubectl(&w.fleet.home);
    kubectl
        .run(&["apply", "-f", w.release_path.to_str().unwrap()])
        .await;
    let at_b = w
        .wait_for("checkout's deploy on prod-b", |s| {
            s.plan
                .get(s.step as usize)
                .is_some_and(|p| p.to_string() == "deploy green on prod-b")
        })
        .await;
    // Its green is sent to prod-b, which never answers.
    let prod_b = w.sim.cluster("prod-b").unwrap().counter.clone();
    wait_until("checkout's green sent to prod-b", || {
        let prod_b = prod_b.clone();
        async move {
            prod_b
                .snapshot()
                .user_agent("cutover/")
                .filter(|k| k.verb == "patch" && k.resource == "deployments")
                .total()
                > 0
        }
    })
    .await;
    let path = w.dir.path().join("app-y.yaml");
    std::fs::write(&path, &app_y).unwrap();
    kubectl.run(&["apply", "-f", path.to_str().unwrap()]).await;
    let y = w
        .wait_for_release("app-y", "app-y to roll back", |s| s.phase.is_terminal())
        .await;
    assert_eq!(
        y.phase,
        Phase::Aborted,
        "{:?}\n{}",
        y.message,
        log_of(&w, &c)
    );
    // Blue takes all of app-y's traffic again (prod-b, hung, cannot be read).
    for cluster in ["staging", "prod-a"] {
        let green = w
            .green_share_of(cluster, "app-y", cutover::fleet::workload::Colour::Green)
            .await;
        assert_eq!(green, cutover::spec::Percent::ZERO, "{cluster}");
    }
    // All the while checkout waited on prod-b: still at that step, not ready.
    let x = w.status().await;
    assert_eq!((x.step, x.phase), (at_b.step, Phase::Progressing));
    assert!(
        !x.history
            .iter()
            .any(|t| t.step == at_b.step && t.event == TransitionEvent::StepReady),
        "{:#?}",
        x.history
    );
}
