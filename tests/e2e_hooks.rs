//! Step hooks end to end through `cutover run` under the roles `deploy/`
//! ships: an HTTP check retried until it passes gates the canary; one that
//! keeps failing rolls the release back before green takes any traffic; a
//! Job hook made from a CronJob's template holds the release while the
//! template is missing, then runs on every cluster (the simulated Job
//! controller runs it to completion); a failing Job rolls back.

mod common;

use common::receiver::receiver;
use common::{World, finish, tier2_release};
use cutover::spec::status::{AbortReason, HoldReason, Phase, TransitionEvent};
use k8s_openapi::api::batch::v1::Job;
use kube::Api;

fn with_hooks(hooks: &str) -> String {
    format!("{}  hooks:\n{hooks}", tier2_release())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_hook_is_retried_until_it_passes_and_gates_each_canary_before_traffic() {
    let (base, got) = receiver().await;
    let release = with_hooks(&format!(
        "    - name: smoke\n      at: beforeTraffic\n      steps: [canary]\n      \
         http:\n        url: '{base}/flaky-smoke?cluster={{{{cluster}}}}&weight={{{{weight}}}}'\n"
    ));
    let w = World::start(None, 300.0, &release).await;
    let (code, out, err) = finish(w.run(&[]).spawn().unwrap()).await;
    assert_eq!(code, 0, "the release completes: {out}\n{err}");
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Completed);
    // Refused twice, passed on the third try; asked once, of the canary's
    // cluster, with the weight the canary moves it to.
    assert_eq!(got.refused.lock().unwrap()["/flaky-smoke"], 2);
    let heard = got.at("/flaky-smoke");
    assert_eq!(heard.len(), 1, "{heard:?}");
    let canary = s
        .plan
        .iter()
        .position(|p| p.kind == cutover::spec::status::StepKind::Canary)
        .unwrap();
    let weight = s.plan[canary].weight.unwrap();
    assert_eq!(
        heard[0]["query"],
        format!("cluster=prod-a&weight={weight}"),
        "{heard:?}"
    );
    let passed: Vec<_> = s
        .history
        .iter()
        .filter(|t| t.event == TransitionEvent::HookPassed)
        .collect();
    assert_eq!(passed.len(), 1, "{passed:?}");
    assert_eq!(passed[0].step as usize, canary);
    assert!(
        passed[0]
            .message
            .contains("hook smoke passed on prod-a before traffic")
            && passed[0].message.contains("HTTP 200")
            && passed[0].message.contains("try 3 of 3"),
        "{}",
        passed[0].message
    );
    // The hook passed before the canary's weight was set: green had no
    // traffic on prod-a until then.
    let set = s
        .traffic
        .iter()
        .find(|c| c.cluster == "prod-a" && c.green.basis_points() > 0)
        .unwrap();
    assert!(passed[0].at <= set.at, "{passed:?} {set:?}");
    assert_eq!(s.hooks.len(), 1, "{:?}", s.hooks);
    // `plan` shows where it runs.
    let plan = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["plan", "-f", w.release_path.to_str().unwrap(), "--fleet"])
        .arg(w.sim.fleet_path())
        .output()
        .unwrap();
    assert!(plan.status.success(), "{plan:?}");
    let plan = String::from_utf8(plan.stdout).unwrap();
    assert_eq!(
        plan.matches("hooks: smoke (before traffic)").count(),
        1,
        "{plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_hook_that_keeps_failing_rolls_back_before_green_takes_traffic() {
    let (base, got) = receiver().await;
    let release = with_hooks(&format!(
        "    - name: smoke\n      at: beforeTraffic\n      clusters: [prod-a]\n      retries: 1\n      \
         http:\n        url: '{base}/fail-smoke'\n"
    ));
    let w = World::start(None, 300.0, &release).await;
    let (code, out, err) = finish(w.run(&[]).spawn().unwrap()).await;
    assert_eq!(code, 3, "rolled back: {out}\n{err}");
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Aborted, "{:?}", s.message);
    let abort = s.abort.clone().unwrap();
    assert_eq!(abort.reason, AbortReason::HookFailed);
    assert!(
        abort
            .message
            .contains("hook smoke failed on prod-a before traffic")
            && abort
                .message
                .contains("answered HTTP 503, expected 2xx: database unreachable")
            && abort.message.contains("try 2 of 2"),
        "{}",
        abort.message
    );
    assert_eq!(got.refused.lock().unwrap()["/fail-smoke"], 2);
    // prod-a never sent green a request; everything serves from blue.
    assert!(
        s.traffic
            .iter()
            .all(|c| c.cluster != "prod-a" || c.green.basis_points() == 0),
        "{:?}",
        s.traffic
    );
    w.assert_all_on_blue("a failed hook").await;
    assert!(out.contains("hook smoke failed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_hook_holds_while_its_template_is_missing_then_runs_a_job_on_every_cluster() {
    let release = with_hooks(
        "    - name: smoke\n      at: afterDeploy\n      retries: 0\n      timeout: 5m\n      \
         job: {fromCronJob: checkout-smoke}\n",
    );
    let w = World::start(None, 300.0, &release).await;
    for c in ["prod-a", "prod-b"] {
        w.smoke_template(c, "20s", 0).await;
    }
    let run = w.run(&[]).spawn().unwrap();
    // staging has no template: the release holds, saying what to create.
    let held = w
        .wait_for("a hold on the missing template", |s| {
            s.holds
                .iter()
                .any(|h| h.reason == HoldReason::HookInconclusive)
        })
        .await;
    let hold = &held.holds[0];
    assert_eq!(hold.cluster.as_deref(), Some("staging"));
    assert!(
        hold.message
            .contains("CronJob shop/checkout-smoke does not exist on staging: create it"),
        "{}",
        hold.message
    );
    assert!(held.weights.values().all(|w| w.basis_points() == 0));
    w.smoke_template("staging", "20s", 0).await;
    let (code, out, err) = finish(run).await;
    assert_eq!(
        code, 0,
        "the release completes once it exists: {out}\n{err}"
    );
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Completed);
    // One Job per cluster, after each deploy, named for its release,
    // revision, step and try, carrying the release's facts.
    for c in ["staging", "prod-a", "prod-b"] {
        let step = common::step_index(&s, cutover::spec::status::StepKind::Deploy, c);
        let names = w.job_names(c).await;
        assert_eq!(names, [format!("checkout-smoke-r1-s{}-1", step + 1)], "{c}");
        let job = &Api::<Job>::namespaced(w.readers[c].clone(), "shop")
            .get(&names[0])
            .await
            .unwrap();
        let complete = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            });
        assert!(complete, "{job:?}");
        let env = job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .clone()
            .unwrap();
        let var = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(var("CUTOVER_CLUSTER").as_deref(), Some(c));
        assert_eq!(var("CUTOVER_VERSION").as_deref(), Some("2.14.0"));
        assert_eq!(
            var("CUTOVER_GREEN_SERVICE").as_deref(),
            Some("checkout-green")
        );
        assert!(
            s.history
                .iter()
                .any(|t| t.event == TransitionEvent::HookPassed
                    && t.message
                        .contains(&format!("hook smoke passed on {c} after deploy"))),
            "{c}"
        );
    }
    // kubectl reads them as it would on a real cluster.
    let listed = w
        .kubectl_as("admin", "prod-a")
        .run(&["get", "jobs", "-n", "shop", "-o", "name"])
        .await;
    assert!(listed.contains("job.batch/checkout-smoke-r1-s"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_hook_rolls_back_and_its_job_says_why() {
    let release = with_hooks(
        "    - name: smoke\n      at: afterDeploy\n      clusters: [prod-a]\n      retries: 0\n      \
         job: {fromCronJob: checkout-smoke}\n",
    );
    let w = World::start(None, 300.0, &release).await;
    w.smoke_template("prod-a", "20s", 1).await;
    let (code, out, err) = finish(w.run(&[]).spawn().unwrap()).await;
    assert_eq!(code, 3, "rolled back: {out}\n{err}");
    let s = w.status().await;
    let abort = s.abort.clone().unwrap();
    assert_eq!(abort.reason, AbortReason::HookFailed);
    assert!(
        abort
            .message
            .contains("hook smoke failed on prod-a after deploy")
            && abort.message.contains("(BackoffLimitExceeded)")
            && abort.message.contains("exited with code 1"),
        "{}",
        abort.message
    );
    w.assert_all_on_blue("a failed Job hook").await;
}
