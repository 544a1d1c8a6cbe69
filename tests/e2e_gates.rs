//! Gates end to end: the scrape provider and cluster health against the
//! simulated fleet, and PromQL gates against a real Prometheus server
//! scraping the simulated fleet.

mod common;

use std::time::Duration;

use common::{World, finish};
use cutover::fleet::workload::Colour;
use cutover::spec::Percent;
use cutover::spec::status::{AbortReason, Phase, TransitionEvent};

async fn assert_rolled_back(w: &World, gate: &str) -> cutover::spec::ReleaseStatus {
    let s = w.status().await;
    assert_eq!(s.phase, Phase::Aborted, "{:?}", s.message);
    let abort = s.abort.clone().unwrap();
    assert_eq!(abort.reason, AbortReason::GateFailed);
    assert!(abort.message.contains(gate), "{}", abort.message);
    w.assert_all_on_blue(gate).await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_gates_roll_a_bad_canary_back_within_one_interval() {
    let w = World::start(Some("bad-canary"), 600.0, common::RELEASE).await;
    let (code, out, err) = finish(w.spawn_run(&[])).await;
    assert_eq!(code, 3, "{out}\n{err}");
    // Green is bad wherever it serves, and each cluster's measurements run
    // side by side: staging (green at 100 %, little traffic) and prod-a (the
    // canary) may each be the first to fail. Either is a correct verdict.
    let s = assert_rolled_back(&w, "error-ratio on ").await;
    let failed_on = s.abort.as_ref().unwrap().message.clone();
    assert!(
        failed_on.contains("error-ratio on prod-a") || failed_on.contains("error-ratio on staging"),
        "{failed_on}"
    );
    // From the canary weight being in place to the rollback decision: one gate
    // interval (1m of fleet time), plus the time a pass takes.
    let at = |e: TransitionEvent| {
        s.history
            .iter()
            .find(|t| t.event == e && t.step == 4)
            .map(|t| t.at)
    };
    let ready = at(TransitionEvent::StepReady).expect("the canary was in place");
    let abort = s
        .history
        .iter()
        .find(|t| t.event == TransitionEvent::AbortStarted)
        .unwrap()
        .at;
    let reaction = abort.duration_since(ready);
    assert!(
        reaction <= jiff::SignedDuration::from_secs(80),
        "reacted after {reaction:?}"
    );
    assert!(
        s.gates.iter().any(|g| g.name == "error-ratio"
            && failed_on.contains(&format!("on {}", g.cluster))
            && !g.measurements.is_empty()),
        "the verdict is recorded with its measurements: {:?}",
        s.gates
    );
}

const NODES_FAIL_IN_CANARY: &str = "
apiVersion: cutover.dev/v1alpha1
kind: Scenario
home: prod-a
clusters:
  - {name: staging, region: eu-west-1, zones: [eu-west-1a, eu-west-1b, eu-west-1c], trafficShare: 0%, requestsPerSecond: 5}
  - {name: prod-a, region: eu-west-1, zones: [eu-west-1a, eu-west-1b, eu-west-1c], trafficShare: 50%}
  - {name: prod-b, region: eu-central-1, zones: [eu-central-1a, eu-central-1b, eu-central-1c], trafficShare: 50%}
pods:
  evictAfter: 3h
events:
  - name: nodes drift NotReady while the app looks fine
    whenGreenWeight: {cluster: prod-a, atLeast: 4%}
    nodesNotReady: {cluster: prod-a, count: 2, every: 1m}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_health_stops_a_rollout_when_nodes_go_not_ready() {
    let w = World::start(Some(NODES_FAIL_IN_CANARY), 600.0, common::RELEASE).await;
    let (code, out, err) = finish(w.spawn_run(&[])).await;
    assert_eq!(code, 3, "{out}\n{err}");
    let s = assert_rolled_back(&w, "cluster-health on prod-a").await;
    assert!(
        s.abort.unwrap().message.contains("not ready"),
        "names the nodes"
    );
}

/// A Prometheus server scraping every cluster of the fleet each second.
struct Prometheus {
    child: tokio::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(w: &World) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut jobs = String::new();
        for c in &w.fleet.clusters {
            let url = w.sim.url(&c.name).unwrap();
            let host = url.trim_start_matches("http://");
            jobs.push_str(&format!(
                "  - job_name: {0}\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{host}']\n        labels: {{cluster: {0}}}\n",
                c.name
            ));
        }
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}"),
        )
        .unwrap();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the prometheus binary (./scripts/test installs Debian's package)");
        let p = Prometheus {
            child,
            port,
            _dir: dir,
        };
        // Ready, and with a few scrapes of every cluster in.
        let client = cutover::gates::providers::prometheus::Prometheus::new(&p.address());
        for _ in 0..300 {
            let up = client
                .query(
                    "count(up == 1)",
                    jiff::Timestamp::now(),
                    Duration::from_secs(2),
                )
                .await;
            if up.is_ok_and(|r| r.series.first().is_some_and(|s| s.value >= 3.0)) {
                tokio::time::sleep(Duration::from_secs(3)).await;
                return p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus did not come up on {}", p.address());
    }

    fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The example with PromQL gates and tier-2's shortest timings.
fn promql_release(address: &str) -> String {
    let base = common::RELEASE;
    let gates_at = base.find("  gates:\n").unwrap();
    let router_at = base.find("  router:\n").unwrap();
    let gates = format!(
        r#"  gates:
    - name: error-ratio
      provider:
        prometheus:
          address: {address}
          query: >-
            sum(rate(http_requests_total{{cluster="{{{{cluster}}}}",app="{{{{app}}}}",version="{{{{version}}}}",code=~"5.."}}[5s]))
            / sum(rate(http_requests_total{{cluster="{{{{cluster}}}}",app="{{{{app}}}}",version="{{{{version}}}}"}}[5s]))
      interval: 30s
      max: 0.02
      on:
        empty: inconclusive
      inconclusiveLimit: 20
    - name: p99-latency
      provider:
        prometheus:
          address: {address}
          query: >-
            histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{cluster="{{{{cluster}}}}",app="{{{{app}}}}",version="{{{{version}}}}"}}[5s])))
      interval: 30s
      max: 0.5
      inconclusiveLimit: 20
"#
    );
    let plan = "  plan:\n    canary:\n      weight: 5%\n      duration: 1m\n    ramp:\n      step: 25%\n      interval: 30s\n    soak: 5m\n    stagingVerify: 1m\n    bake: 10m\n";
    let body = format!(
        "{}{gates}{}",
        &base[..gates_at],
        &base[router_at..base.find("  plan:\n").unwrap()]
    );
    format!("{}{plan}", body.replace("tier: tier-1", "tier: tier-2"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_gates_against_a_real_prometheus() {
    for (scenario, want) in [(None, 0), (Some("bad-canary"), 3)] {
        let w = World::start(scenario, 60.0, &promql_release("http://127.0.0.1:9")).await;
        let prom = Prometheus::start(&w).await;
        std::fs::write(&w.release_path, promql_release(&prom.address())).unwrap();
        let (code, out, err) = finish(w.spawn_run(&[])).await;
        assert_eq!(code, want, "{scenario:?}: {out}\n{err}");
        let s = w.status().await;
        if want == 0 {
            assert_eq!(s.phase, Phase::Completed);
            for c in &w.rel.clusters {
                assert_eq!(
                    w.green_share(&c.name, Colour::Green).await,
                    Percent::HUNDRED
                );
            }
        } else {
            let s = assert_rolled_back(&w, "error-ratio on").await;
            assert!(
                s.abort
                    .unwrap()
                    .message
                    .contains("sum(rate(http_requests_total{cluster="),
                "the query as sent is named"
            );
        }
    }
}
