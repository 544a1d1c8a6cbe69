//! A simulated fleet with the checkout app serving 2.13.0 from blue, and the
//! `cutover` binary pointed at it. Shared by the end-to-end tests.
#![allow(dead_code)]

pub mod controller;
pub mod picture;
pub mod receiver;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cutover::fleet::router::{http_route_resource, route_view};
use cutover::fleet::workload::Colour;
use cutover::fleet::{ClientLimits, FleetClients, bootstrap};
use cutover::spec::release::ReleaseDocument;
use cutover::spec::{
    Fleet, Percent, Release, ReleaseStatus, ResolvedRelease, Source, TierPolicyFile,
};
use cutover_sim::{Scenario, SimFleet, SimOptions};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject};
use tokio::process::{Child, Command};

pub const RELEASE: &str = include_str!("../../examples/checkout/release.yaml");
pub const BLUE: &str = "2.13.0";
pub const NS: &str = "shop";

/// The example as a tier-2 release with the tier's (shorter) default timings.
pub fn tier2_release() -> String {
    let cut = RELEASE.find("  plan:\n").expect("the example has a plan");
    RELEASE[..cut].replace("tier: tier-1", "tier: tier-2")
}

/// The default fleet (staging, prod-a, prod-b) as a scenario, followed by `rest`.
pub fn default_fleet_with(rest: &str) -> String {
    format!(
        r#"home: prod-a
clusters:
  - name: staging
    region: eu-west-1
    zones: [eu-west-1a, eu-west-1b, eu-west-1c]
    trafficShare: 0%
    requestsPerSecond: 5
  - name: prod-a
    region: eu-west-1
    zones: [eu-west-1a, eu-west-1b, eu-west-1c]
    trafficShare: 50%
  - name: prod-b
    region: eu-central-1
    zones: [eu-central-1a, eu-central-1b, eu-central-1c]
    trafficShare: 50%
{rest}"#
    )
}

/// The example as tier-2 for an app (and route) of its own, named as the app.
pub fn app_release(app: &str) -> String {
    named_release(app, app)
}

/// The example as tier-2, Release `name` for `app` (and its route).
pub fn named_release(name: &str, app: &str) -> String {
    tier2_release()
        .replace(
            "name: checkout\n  namespace: shop",
            &format!("name: {name}\n  namespace: shop"),
        )
        .replace("app: checkout", &format!("app: {app}"))
        .replace("route: checkout", &format!("route: {app}"))
}

pub struct World {
    pub sim: SimFleet,
    pub dir: tempfile::TempDir,
    pub fleet: Fleet,
    pub rel: ResolvedRelease,
    pub clients: FleetClients,
    /// Plain kube clients (kube's own user agent) for the test's reads, so the
    /// sim's request counts of cutover's user agent are the binary's alone.
    pub readers: std::collections::BTreeMap<String, kube::Client>,
    pub release_path: PathBuf,
}

impl World {
    /// A fleet running `scenario` (default: healthy) at `scale`, blue serving, `release` written out.
    pub async fn start(scenario: Option<&str>, scale: f64, release: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let scenario = match scenario {
            None => Scenario::default_fleet(),
            // A scenario written in the test itself.
            Some(text) if text.contains('\n') => Scenario::parse("scenario.yaml", text).unwrap(),
            Some(name) => {
                let path = format!(
                    "{}/examples/scenarios/{name}.yaml",
                    env!("CARGO_MANIFEST_DIR")
                );
                Scenario::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap()
            }
        };
        let sim = SimFleet::start(SimOptions {
            scenario,
            time_scale: scale,
            dir: dir.path().join("sim"),
        })
        .await
        .unwrap();
        let fleet = Fleet::parse(
            "fleet.yaml",
            &std::fs::read_to_string(sim.fleet_path()).unwrap(),
        )
        .unwrap();
        let release_path = dir.path().join("release.yaml");
        std::fs::write(&release_path, release).unwrap();
        let doc: ReleaseDocument = Source::new("release.yaml", release).decode().unwrap();
        let rel = ResolvedRelease::resolve(
            &doc.metadata.name,
            doc.metadata.namespace.as_deref(),
            &doc.spec,
            &fleet,
            &TierPolicyFile::builtin(),
        )
        .unwrap();
        let clients = FleetClients::connect(
            &fleet,
            Some(sim.kubeconfig_path()),
            NS,
            ClientLimits::default(),
        )
        .await
        .unwrap();
        for c in &rel.clusters {
            bootstrap::install_crds(clients.get(&c.name).unwrap())
                .await
                .unwrap();
            bootstrap::install_serving(clients.get(&c.name).unwrap(), &rel, BLUE)
                .await
                .unwrap();
        }
        let mut readers = std::collections::BTreeMap::new();
        for c in &fleet.clusters {
            readers.insert(c.name.clone(), sim_client(&sim, &c.name).await);
        }
        World {
            sim,
            dir,
            fleet,
            rel,
            clients,
            readers,
            release_path,
        }
    }

    /// `cutover ARGS --fleet F --kubeconfig K` (for commands that take
    /// them), as the person whose job the command is, under the roles
    /// `deploy/` ships: `freeze` as on call, `unfreeze` as the incident
    /// commander, a break-glass `run --override-freeze` as the release
    /// manager, everything else as the delivery pipeline.
    pub fn cutover(&self, args: &[&str]) -> Command {
        let who = match args.first().copied() {
            Some("freeze") => "oncall",
            Some("unfreeze") => "incident-commander",
            Some("run") if args.contains(&"--override-freeze") => "release-manager",
            _ => "pipeline",
        };
        self.cutover_as(who, args)
    }

    /// `cutover ARGS` as one identity of the simulated fleet (a person of
    /// `cutover_sim::auth::bootstrap::PEOPLE`, or `cutover` itself).
    pub fn cutover_as(&self, who: &str, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
        c.args(args)
            .arg("--fleet")
            .arg(self.sim.fleet_path())
            .arg("--kubeconfig")
            .arg(self.sim.kubeconfig_as(who))
            .env("CUTOVER_USER", "tester")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// `cutover run` of the release file.
    pub fn run(&self, extra: &[&str]) -> Command {
        let path = self.release_path.to_str().unwrap().to_string();
        let mut args = vec!["run", "-f", path.as_str()];
        args.extend_from_slice(extra);
        let mut c = self.cutover(&args);
        c.arg("-o").arg("json");
        c
    }

    pub fn spawn_run(&self, extra: &[&str]) -> Child {
        self.run(extra).spawn().expect("start cutover run")
    }

    pub async fn release(&self) -> Option<Release> {
        self.release_named("checkout").await
    }

    pub async fn release_named(&self, name: &str) -> Option<Release> {
        Api::<Release>::namespaced(self.readers[&self.fleet.home].clone(), NS)
            .get_opt(name)
            .await
            .unwrap()
    }

    pub async fn status(&self) -> ReleaseStatus {
        self.status_of("checkout").await
    }

    pub async fn status_of(&self, name: &str) -> ReleaseStatus {
        self.release_named(name)
            .await
            .and_then(|r| r.status)
            .unwrap_or_default()
    }

    /// Blue serving `release_text`'s app (its Deployment and route) on each of its clusters.
    pub async fn serve_blue(&self, release_text: &str) {
        let doc: ReleaseDocument = Source::new("release.yaml", release_text).decode().unwrap();
        let rel = ResolvedRelease::resolve(
            &doc.metadata.name,
            doc.metadata.namespace.as_deref(),
            &doc.spec,
            &self.fleet,
            &TierPolicyFile::builtin(),
        )
        .unwrap();
        for c in &rel.clusters {
            bootstrap::install_serving(self.clients.get(&c.name).unwrap(), &rel, BLUE)
                .await
                .unwrap();
        }
    }

    /// Waits (wall clock, bounded) until the release's status satisfies `pred`.
    pub async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&ReleaseStatus) -> bool,
    ) -> ReleaseStatus {
        self.wait_for_release("checkout", what, pred).await
    }

    /// Waits (wall clock, bounded) until Release `name`'s status satisfies `pred`.
    pub async fn wait_for_release(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&ReleaseStatus) -> bool,
    ) -> ReleaseStatus {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let s = self.status_of(name).await;
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status: {:?} {:?}",
                s.phase,
                s.message
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn route(&self, cluster: &str) -> serde_json::Value {
        self.route_of(cluster, "checkout").await
    }

    /// The route of `app` on `cluster`.
    pub async fn route_of(&self, cluster: &str, app: &str) -> serde_json::Value {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.clients.get(cluster).unwrap().client.clone(),
            NS,
            &http_route_resource(),
        );
        serde_json::to_value(api.get(app).await.unwrap()).unwrap()
    }

    /// Green's share of a cluster's route, where green is the slot running the release's version.
    pub async fn green_share(&self, cluster: &str, green: Colour) -> Percent {
        self.green_share_of(cluster, "checkout", green).await
    }

    /// Green's share of `app`'s route on `cluster`.
    pub async fn green_share_of(&self, cluster: &str, app: &str, green: Colour) -> Percent {
        route_view(&self.route_of(cluster, app).await, app, green).green
    }

    /// A suspended CronJob `checkout-smoke` in `shop` on `cluster` whose Job
    /// template is a smoke test: its pod runs for `runs_for` of fleet time,
    /// then exits with `exit_code`.
    pub async fn smoke_template(&self, cluster: &str, runs_for: &str, exit_code: u8) {
        use k8s_openapi::api::batch::v1::CronJob;
        let cron: CronJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "checkout-smoke", "namespace": NS},
            "spec": {
                "schedule": "@yearly",
                "suspend": true,
                "jobTemplate": {"spec": {"template": {
                    "metadata": {"annotations": {
                        "sim.cutover.dev/runs-for": runs_for,
                        "sim.cutover.dev/exit-code": exit_code.to_string(),
                    }},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "smoke", "image": "registry.example.com/shop/smoke:1"}],
                    },
                }}},
            },
        }))
        .unwrap();
        Api::<CronJob>::namespaced(self.readers[cluster].clone(), NS)
            .create(&kube::api::PostParams::default(), &cron)
            .await
            .unwrap();
    }

    /// The names of the Jobs in `shop` on `cluster`.
    pub async fn job_names(&self, cluster: &str) -> Vec<String> {
        Api::<k8s_openapi::api::batch::v1::Job>::namespaced(self.readers[cluster].clone(), NS)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .collect()
    }

    pub async fn deployment(&self, cluster: &str, name: &str) -> Option<Deployment> {
        Api::<Deployment>::namespaced(self.readers[cluster].clone(), NS)
            .get_opt(name)
            .await
            .unwrap()
    }
}

/// `(verb, resource)` pairs granted by the named roles of some manifests.
pub fn grants(files: &[&str], roles: &[&str]) -> std::collections::BTreeSet<(String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for f in files {
        let path = format!("{}/deploy/{f}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in text.split("\n---\n") {
            let v: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
            let kind = v["kind"].as_str().unwrap_or_default();
            let name = v["metadata"]["name"].as_str().unwrap_or_default();
            if !matches!(kind, "ClusterRole" | "Role") || !roles.contains(&name) {
                continue;
            }
            for rule in v["rules"].as_array().unwrap() {
                let targets = rule["resources"]
                    .as_array()
                    .or(rule["nonResourceURLs"].as_array())
                    .unwrap();
                for t in targets {
                    for verb in rule["verbs"].as_array().unwrap() {
                        out.insert((
                            verb.as_str().unwrap().to_string(),
                            t.as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Waits for a child to exit and returns its code, stdout and stderr.
pub async fn finish(child: Child) -> (i32, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("cutover finished in time")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Where in the plan the `kind` step on `cluster` is.
pub fn step_index(
    s: &ReleaseStatus,
    kind: cutover::spec::status::StepKind,
    cluster: &str,
) -> usize {
    s.plan
        .iter()
        .position(|p| p.kind == kind && p.cluster.as_deref() == Some(cluster))
        .unwrap_or_else(|| panic!("no {kind:?} step on {cluster}"))
}

/// The steps completed, in the order the history records them.
pub fn completed_steps(s: &ReleaseStatus) -> Vec<u32> {
    use cutover::spec::status::TransitionEvent;
    s.history
        .iter()
        .filter(|t| t.event == TransitionEvent::StepCompleted)
        .map(|t| t.step)
        .collect()
}

impl World {
    /// kubectl pointed at one simulated cluster, as the delivery pipeline
    /// (the shipped cutover-release role at home, cutover-member everywhere).
    pub fn kubectl(&self, cluster: &str) -> Kubectl {
        self.kubectl_as("pipeline", cluster)
    }

    /// kubectl as one identity of the simulated fleet; `admin` is
    /// `system:masters`, for setup.
    pub fn kubectl_as(&self, who: &str, cluster: &str) -> Kubectl {
        let kubeconfig = match who {
            "admin" => self.sim.kubeconfig_path().to_path_buf(),
            other => self.sim.kubeconfig_as(other),
        };
        Kubectl {
            bin: kubectl_binary().expect("kubectl"),
            kubeconfig,
            cache: self.dir.path().join("kube-cache"),
            context: cutover_sim::context_name(cluster),
        }
    }

    /// Every cluster sends all traffic to green, and blue's Deployment is gone.
    pub async fn assert_all_on_green(&self, what: &str) {
        for c in &self.rel.clusters {
            let share = self.green_share(&c.name, Colour::Green).await;
            assert_eq!(share, Percent::HUNDRED, "{what}: {} on green", c.name);
            assert!(
                self.deployment(&c.name, "checkout-blue").await.is_none(),
                "{what}: blue deleted on {}",
                c.name
            );
        }
    }

    /// Every cluster sends all traffic to blue, which still runs.
    pub async fn assert_all_on_blue(&self, what: &str) {
        for c in &self.rel.clusters {
            let share = self.green_share(&c.name, Colour::Green).await;
            assert_eq!(share, Percent::ZERO, "{what}: {} back on blue", c.name);
            assert!(
                self.deployment(&c.name, "checkout-blue").await.is_some(),
                "{what}: blue kept on {}",
                c.name
            );
        }
    }
}

#[path = "../../crates/sim/tests/support/mod.rs"]
mod support;
pub use support::*;
