//! Scenario files: the shape of a simulated fleet (clusters, zones, nodes,
//! traffic), how app versions behave by default, and timed events (faults,
//! behaviour changes) triggered by fleet time or by rollout progress.
//!
//! Owns the schema and its checks; running a scenario belongs to `timeline`.

use serde::{Deserialize, Serialize};

use cutover_core::spec::source::{InputError, InputErrors, Source};
use cutover_core::spec::{Percent, Span};

mod events;

pub use events::{
    ApiErrors, ApiLatency, ApiUnreachable, BehaviourChange, DeployFreezeEvent, EventSpec,
    GreenWeightTrigger, NodesNotReady, UnreachableMode, ZoneOutage,
};

/// A simulated fleet and what happens to it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "scenario_kind")]
    pub kind: String,
    /// What this scenario replays, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The cluster that holds Release objects.
    pub home: String,
    pub clusters: Vec<ClusterSpec>,
    #[serde(default)]
    pub traffic: TrafficSpec,
    /// How every app version behaves unless an event says otherwise.
    #[serde(default)]
    pub behaviour: BehaviourSpec,
    #[serde(default)]
    pub pods: PodSpec,
    #[serde(default)]
    pub api_server: ApiServerSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventSpec>,
    /// Fleet time when the scenario starts (RFC 3339); the wall clock's now when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<jiff::Timestamp>,
    /// How `cutover demo` rehearses a release on this fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rehearsal: Option<Rehearsal>,
}

/// What `cutover demo --scenario` does beyond running the example release:
/// changes to the release, scheduled freeze windows, objects that exist
/// before it, and what cutover must make of it all.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rehearsal {
    /// One line for `cutover demo --list`.
    pub summary: String,
    /// The outcome cutover must produce (the scenario's test asserts it).
    pub expect: String,
    /// A JSON merge patch applied to `examples/checkout/release.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<serde_json::Value>,
    /// Scheduled freeze windows, as in a policies directory's freezes.yaml.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze_windows: Vec<serde_json::Value>,
    /// Objects created before the release, e.g. resources the app shares.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ClusterObject>,
    /// The fastest fleet clock the rehearsal stays faithful at. An API
    /// server's latency is wall-clock time: on a faster clock one slow,
    /// retried request outlasts minutes of fleet time, and an outage shorter
    /// than the client's retries goes unseen, as no real one would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_time_scale: Option<f64>,
}

impl Scenario {
    /// The time scale a rehearsal asked to run at `asked` runs at.
    pub fn time_scale(&self, asked: f64) -> f64 {
        match self.rehearsal.as_ref().and_then(|r| r.max_time_scale) {
            Some(max) if max > 0.0 => asked.min(max),
            _ => asked,
        }
    }
}

/// A Kubernetes object in one cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterObject {
    pub cluster: String,
    pub object: serde_json::Value,
}

fn api_version() -> String {
    cutover_core::spec::API_VERSION.to_string()
}

fn scenario_kind() -> String {
    "Scenario".to_string()
}

/// One simulated cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: String,
    pub region: String,
    pub zones: Vec<String>,
    #[serde(default = "two")]
    pub nodes_per_zone: u32,
    /// Pods a node can hold.
    #[serde(default = "pods_per_node")]
    pub pods_per_node: u32,
    /// Share of the service's global traffic.
    pub traffic_share: Percent,
    /// Requests per second each app's route gets here; defaults to the global rate × the share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
}

fn two() -> u32 {
    2
}

/// The largest cluster Kubernetes supports, in nodes.
const MAX_NODES: u64 = 5_000;

fn pods_per_node() -> u32 {
    110
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficSpec {
    /// The service's global request rate, split between clusters by traffic share.
    pub requests_per_second: f64,
}

impl Default for TrafficSpec {
    fn default() -> Self {
        TrafficSpec {
            requests_per_second: 200.0,
        }
    }
}

/// How an app version serves.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BehaviourSpec {
    /// Share of requests answered with 500.
    #[serde(default = "default_error_ratio")]
    pub error_ratio: Percent,
    /// Median request latency (latencies are log-normal around it).
    #[serde(default = "default_latency")]
    pub latency: Span,
}

fn default_error_ratio() -> Percent {
    Percent::from_basis_points(10)
}

fn default_latency() -> Span {
    Span(std::time::Duration::from_millis(40))
}

impl Default for BehaviourSpec {
    fn default() -> Self {
        BehaviourSpec {
            error_ratio: default_error_ratio(),
            latency: default_latency(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    /// Fleet time from a pod being scheduled to being Ready.
    #[serde(default = "default_readiness")]
    pub readiness_delay: Span,
    /// Pods on a node NotReady this long are evicted (and replaced elsewhere).
    #[serde(default = "default_evict")]
    pub evict_after: Span,
}

fn default_readiness() -> Span {
    Span::from_secs(5)
}

fn default_evict() -> Span {
    Span::from_mins(5)
}

impl Default for PodSpec {
    fn default() -> Self {
        PodSpec {
            readiness_delay: default_readiness(),
            evict_after: default_evict(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServerSpec {
    /// Changes always kept for watches to resume from (the watch cache's
    /// lower bound, 100). Older resourceVersions get 410 Expired once both
    /// this count and the window are past.
    #[serde(default = "default_history")]
    pub watch_history: usize,
    /// Changes younger than this (wall time) are kept too, up to 102,400:
    /// kube-apiserver's events history window, 75 s.
    #[serde(default = "default_history_window")]
    pub watch_history_window: Span,
    /// How often etcd's history is compacted, to the revision seen at the
    /// compaction before (kube-apiserver's `--etcd-compaction-interval`, 5
    /// minutes): a list's continue token reads the state at its first
    /// page's resourceVersion for one to two intervals, whatever the watch
    /// cache still holds.
    #[serde(default = "default_compaction")]
    pub etcd_compaction_interval: Span,
    /// How often a watch that allows bookmarks gets one; kube-apiserver sends
    /// one a minute, and one 2 s before the watch's deadline.
    #[serde(default = "default_bookmark_every")]
    pub bookmark_every: Span,
    /// Requests served at once, shared between API Priority and Fairness's
    /// priority levels: kube-apiserver's `--max-requests-inflight` (400)
    /// plus `--max-mutating-requests-inflight` (200).
    #[serde(default = "default_concurrency")]
    pub max_requests_in_flight: usize,
}

fn default_concurrency() -> usize {
    crate::flowcontrol::DEFAULT_CONCURRENCY
}

fn default_history() -> usize {
    100
}

fn default_history_window() -> Span {
    Span(std::time::Duration::from_secs(75))
}

fn default_compaction() -> Span {
    Span(std::time::Duration::from_secs(5 * 60))
}

fn default_bookmark_every() -> Span {
    Span(std::time::Duration::from_secs(60))
}

impl Default for ApiServerSpec {
    fn default() -> Self {
        ApiServerSpec {
            watch_history: default_history(),
            watch_history_window: default_history_window(),
            etcd_compaction_interval: default_compaction(),
            bookmark_every: default_bookmark_every(),
            max_requests_in_flight: default_concurrency(),
        }
    }
}

impl Scenario {
    /// Parses and checks a scenario; every problem is reported with its file, line and field.
    pub fn parse(file: &str, text: &str) -> Result<Scenario, InputErrors> {
        let src = Source::new(file, text);
        let scenario: Scenario = src.decode().map_err(|e| InputErrors(vec![e]))?;
        let errors = scenario.check(&src);
        if errors.is_empty() {
            Ok(scenario)
        } else {
            Err(InputErrors(errors))
        }
    }

    /// `staging` (no traffic), `prod-a` and `prod-b` (half each), three zones of two nodes each.
    pub fn default_fleet() -> Scenario {
        let cluster = |name: &str, region: &str, share: u32, rps: Option<f64>| ClusterSpec {
            name: name.to_string(),
            region: region.to_string(),
            zones: ["a", "b", "c"]
                .iter()
                .map(|z| format!("{region}{z}"))
                .collect(),
            nodes_per_zone: 2,
            pods_per_node: pods_per_node(),
            traffic_share: Percent::from_whole(share),
            requests_per_second: rps,
        };
        Scenario {
            api_version: api_version(),
            kind: scenario_kind(),
            description: Some(
                "The default fleet: staging, prod-a and prod-b, healthy.".to_string(),
            ),
            home: "prod-a".to_string(),
            clusters: vec![
                cluster("staging", "eu-west-1", 0, Some(5.0)),
                cluster("prod-a", "eu-west-1", 50, None),
                cluster("prod-b", "eu-central-1", 50, None),
            ],
            traffic: TrafficSpec::default(),
            behaviour: BehaviourSpec::default(),
            pods: PodSpec::default(),
            api_server: ApiServerSpec::default(),
            events: Vec::new(),
            starts_at: None,
            rehearsal: None,
        }
    }

    pub fn cluster(&self, name: &str) -> Option<&ClusterSpec> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// Requests per second one app's route gets in a cluster.
    pub fn rate_of(&self, cluster: &ClusterSpec) -> f64 {
        cluster
            .requests_per_second
            .unwrap_or(self.traffic.requests_per_second * cluster.traffic_share.as_f64() / 100.0)
    }

    fn check(&self, src: &Source) -> Vec<InputError> {
        let mut errors = Vec::new();
        let mut err = |field: String, problem: String| errors.push(src.error_at(&field, problem));
        if self.api_version != cutover_core::spec::API_VERSION {
            err(
                "apiVersion".into(),
                format!(
                    "expected {:?}, got {:?}",
                    cutover_core::spec::API_VERSION,
                    self.api_version
                ),
            );
        }
        if self.kind != "Scenario" {
            err(
                "kind".into(),
                format!("expected \"Scenario\", got {:?}", self.kind),
            );
        }
        if self.clusters.is_empty() {
            err("clusters".into(), "at least one cluster is required".into());
        }
        let mut total = 0;
        for (i, c) in self.clusters.iter().enumerate() {
            if let Err(e) = cutover_core::spec::check_dns_label(&c.name) {
                err(format!("clusters[{i}].name"), e);
            }
            if self.clusters[..i].iter().any(|o| o.name == c.name) {
                err(
                    format!("clusters[{i}].name"),
                    format!("cluster {:?} is listed twice", c.name),
                );
            }
            if c.zones.is_empty() {
                err(
                    format!("clusters[{i}].zones"),
                    "list at least one zone".into(),
                );
            }
            for (j, z) in c.zones.iter().enumerate() {
                if cutover_core::spec::check_dns_label(z).is_err() || c.zones[..j].contains(z) {
                    err(
                        format!("clusters[{i}].zones[{j}]"),
                        format!("zone {z:?} must be a unique lowercase name"),
                    );
                }
            }
            // Kubernetes supports clusters of up to 5,000 nodes
            // (kubernetes.io/docs/setup/best-practices/cluster-large/).
            if u64::from(c.nodes_per_zone) * c.zones.len() as u64 > MAX_NODES {
                err(
                    format!("clusters[{i}].nodesPerZone"),
                    format!(
                        "at most {MAX_NODES} nodes a cluster, {} a zone across its {} zones",
                        MAX_NODES / c.zones.len().max(1) as u64,
                        c.zones.len()
                    ),
                );
            }
            if c.requests_per_second
                .is_some_and(|r| !(r.is_finite() && r >= 0.0))
            {
                err(
                    format!("clusters[{i}].requestsPerSecond"),
                    "must be a number of at least 0".into(),
                );
            }
            total += c.traffic_share.basis_points();
        }
        if total != 0 && total != Percent::HUNDRED.basis_points() {
            err(
                "clusters".into(),
                format!(
                    "the clusters' trafficShare values add up to {}; they must add up to 100%",
                    Percent::from_basis_points(total)
                ),
            );
        }
        if !self.clusters.is_empty() && self.cluster(&self.home).is_none() {
            err(
                "home".into(),
                format!(
                    "home cluster {:?} is not one of the scenario's clusters",
                    self.home
                ),
            );
        }
        if !(self.traffic.requests_per_second.is_finite()
            && self.traffic.requests_per_second >= 0.0)
        {
            err(
                "traffic.requestsPerSecond".into(),
                "must be a number of at least 0".into(),
            );
        }
        if self.behaviour.error_ratio > Percent::HUNDRED {
            err("behaviour.errorRatio".into(), "must be at most 100%".into());
        }
        if self.api_server.watch_history == 0 {
            err("apiServer.watchHistory".into(), "must be at least 1".into());
        }
        if self
            .api_server
            .etcd_compaction_interval
            .as_duration()
            .is_zero()
        {
            // kube-apiserver's 0 turns compaction off; this store keeps its history in memory.
            err(
                "apiServer.etcdCompactionInterval".into(),
                "must be above 0s (the simulated etcd keeps its history in memory, so it must compact)"
                    .into(),
            );
        }
        for (i, e) in self.events.iter().enumerate() {
            for (field, problem) in self.check_event(e) {
                err(format!("events[{i}]{field}"), problem);
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: &str = "\
home: prod-a
clusters:
  - name: prod-a
    region: eu-west-1
    zones: [eu-west-1a, eu-west-1b]
    trafficShare: 100%
events:
  - after: 10m
    for: 5m
    zoneOutage: {cluster: prod-a, zone: eu-west-1b}
  - whenGreenWeight: {cluster: prod-a, atLeast: 4%}
    behaviour: {colour: green, errorRatio: 20%}
";

    #[test]
    fn a_scenario_parses_with_defaults() {
        let s = Scenario::parse("s.yaml", EVENTS).unwrap();
        assert_eq!(s.clusters[0].nodes_per_zone, 2);
        assert_eq!(s.events[0].lasts, Some(Span::from_mins(5)));
        assert_eq!(
            s.events[1].behaviour.as_ref().unwrap().error_ratio,
            Some(Percent::from_whole(20))
        );
        assert_eq!(s.rate_of(&s.clusters[0]), 200.0);
        assert_eq!(s.pods.readiness_delay, Span::from_secs(5));
    }

    #[test]
    fn unknown_fields_and_bad_durations_name_file_line_and_field() {
        let err = Scenario::parse("s.yaml", &EVENTS.replace("for: 5m", "for: soon"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.yaml:9:"), "{err}");
        assert!(err.contains("events[0].for"), "{err}");
        let err = Scenario::parse("s.yaml", &EVENTS.replace("zoneOutage:", "zoneOutrage:"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("s.yaml:10:"), "{err}");
        assert!(err.contains("zoneOutrage"), "{err}");
    }

    /// A cluster of up to 5,000 nodes, as Kubernetes supports
    /// (kubernetes.io/docs/setup/best-practices/cluster-large/), and an etcd
    /// that compacts (kube-apiserver's `--etcd-compaction-interval`).
    #[test]
    fn a_cluster_holds_up_to_5000_nodes_and_etcd_compacts() {
        let largest = EVENTS.replace(
            "    trafficShare: 100%",
            "    nodesPerZone: 2500\n    trafficShare: 100%",
        );
        let s = Scenario::parse("s.yaml", &largest).unwrap();
        assert_eq!(s.clusters[0].nodes_per_zone, 2500);
        assert_eq!(s.api_server.etcd_compaction_interval, Span::from_mins(5));
        let err = Scenario::parse("s.yaml", &largest.replace("2500", "2501"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("clusters[0].nodesPerZone`: at most 5000 nodes a cluster, 2500 a zone across its 2 zones"),
            "{err}"
        );
        let never = format!("{EVENTS}apiServer:\n  etcdCompactionInterval: 0s\n");
        let err = Scenario::parse("s.yaml", &never).unwrap_err().to_string();
        assert!(
            err.contains("apiServer.etcdCompactionInterval`: must be above 0s"),
            "{err}"
        );
    }

    #[test]
    fn events_are_checked_against_the_fleet() {
        let text = EVENTS
            .replace("zone: eu-west-1b}", "zone: eu-west-1z}")
            .replace("cluster: prod-a, atLeast", "cluster: prod-c, atLeast");
        let err = Scenario::parse("s.yaml", &text).unwrap_err().to_string();
        assert!(
            err.contains("field `events[0].zoneOutage.zone`: zone \"eu-west-1z\""),
            "{err}"
        );
        assert!(
            err.contains("field `events[1].whenGreenWeight.cluster`"),
            "{err}"
        );
        let two_effects = EVENTS.replace(
            "    behaviour: {colour",
            "    apiLatency: {cluster: prod-a, latency: 1s}\n    behaviour: {colour",
        );
        let err = Scenario::parse("s.yaml", &two_effects)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one of `behaviour`"), "{err}");
    }

    #[test]
    fn the_default_fleet_is_the_healthy_example() {
        let healthy = Scenario::parse(
            "healthy.yaml",
            include_str!("../../../../examples/scenarios/healthy.yaml"),
        )
        .unwrap();
        let mut default = Scenario::default_fleet();
        default.description = healthy.description.clone();
        default.rehearsal = healthy.rehearsal.clone();
        assert_eq!(healthy, default);
        assert_eq!(
            default.clusters[2].zones,
            ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
        );
    }

    #[test]
    fn every_example_scenario_parses_and_says_what_it_replays() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let file = path.display().to_string();
            let s = Scenario::parse(&file, &text).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                text.starts_with("# Replays"),
                "{file} must say what it replays"
            );
            let r = s
                .rehearsal
                .unwrap_or_else(|| panic!("{file} has no rehearsal"));
            assert!(!r.summary.is_empty() && !r.expect.is_empty(), "{file}");
            seen += 1;
        }
        assert!(seen >= 11, "{seen} scenarios");
    }
}
