//! One simulated cluster: its store, booted with namespaces, nodes and the
//! Gateway API HTTPRoute CRD; its API server on a free loopback port; its
//! controllers; and the ticker that advances its application metrics.
//!
//! Owns assembly and boot; the parts own their behaviour.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::SimError;
use super::auth::Authenticator;
use super::auth::bootstrap::{self, BootTokens};
use super::controllers::{self, Ctx, nodes};
use super::counters::RequestCounter;
use super::faults::{ApiFaults, Behaviours};
use super::metrics::{AppMetrics, Traffic};
use super::scenario::{ClusterSpec, Scenario};
use super::server::{self, ApiContext};
use super::store::{HistoryBounds, Store, Target, WriteOptions};
use cutover_core::clock::SharedClock;

/// How often the metrics ticker counts requests (wall clock).
const METRICS_TICK: Duration = Duration::from_millis(250);

/// A running simulated cluster.
#[derive(Debug)]
pub struct SimCluster {
    pub name: String,
    pub port: u16,
    pub store: Arc<Store>,
    pub faults: Arc<ApiFaults>,
    pub counter: Arc<RequestCounter>,
    pub traffic: Arc<Traffic>,
    pub ctx: Arc<Ctx>,
    /// What its API server answers with.
    pub api: Arc<ApiContext>,
    /// The tokens of its administrator, of cutover's identity here and of
    /// the simulated people.
    pub tokens: BootTokens,
}

/// What every cluster of a fleet shares.
pub struct Shared<'a> {
    pub tls: Arc<super::tls::FleetTls>,
    pub scenario: &'a Scenario,
    pub clock: SharedClock,
    pub behaviours: Arc<Behaviours>,
    pub stop: watch::Receiver<bool>,
}

impl SimCluster {
    /// Boots the cluster and starts its tasks (pushed onto `tasks`).
    pub async fn start(
        index: usize,
        spec: &ClusterSpec,
        shared: &Shared<'_>,
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> Result<SimCluster, SimError> {
        let api_server = &shared.scenario.api_server;
        let store = Arc::new(Store::with_history(
            shared.clock.clone(),
            HistoryBounds {
                min: api_server.watch_history,
                window: api_server.watch_history_window.as_duration(),
                compaction: Some(api_server.etcd_compaction_interval.as_duration()),
            },
        ));
        let ctx = Arc::new(Ctx {
            cluster: spec.name.clone(),
            index,
            store: store.clone(),
            clock: shared.clock.clone(),
            behaviours: shared.behaviours.clone(),
            readiness_delay: shared.scenario.pods.readiness_delay.as_duration(),
            evict_after: shared.scenario.pods.evict_after.as_duration(),
            deployments: Default::default(),
        });
        let auth = Arc::new(Authenticator::default());
        let boot_error = |e: super::api_error::ApiError| SimError::Boot {
            cluster: spec.name.clone(),
            problem: e.to_string(),
        };
        boot(&ctx, index, spec).map_err(boot_error)?;
        let tokens = bootstrap::install(&store, &auth, shared.scenario.home == spec.name)
            .map_err(boot_error)?;
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(SimError::Bind)?;
        let port = listener.local_addr().map_err(SimError::Bind)?.port();
        let traffic = Arc::new(Traffic {
            cluster: spec.name.clone(),
            rps: shared.scenario.rate_of(spec),
            store: store.clone(),
            behaviours: shared.behaviours.clone(),
            clock: shared.clock.clone(),
            metrics: AppMetrics::default(),
            routing: Default::default(),
        });
        let faults = Arc::new(ApiFaults::default());
        let counter = Arc::new(RequestCounter::new(&spec.name));
        let api = Arc::new(ApiContext {
            cluster: spec.name.clone(),
            store: store.clone(),
            faults: faults.clone(),
            counter: counter.clone(),
            traffic: traffic.clone(),
            stop: shared.stop.clone(),
            address: format!("127.0.0.1:{port}"),
            after_write: Default::default(),
            auth,
            tls: shared.tls.clone(),
            bookmark_every: api_server.bookmark_every.as_duration(),
            flow: crate::flowcontrol::FlowControl::new(api_server.max_requests_in_flight),
        });
        tasks.push(tokio::spawn(server::serve(api.clone(), listener, port)));
        tasks.push(tokio::spawn(controllers::run(
            ctx.clone(),
            shared.stop.clone(),
        )));
        tasks.push(tokio::spawn(tick_metrics(
            traffic.clone(),
            shared.stop.clone(),
        )));
        Ok(SimCluster {
            name: spec.name.clone(),
            port,
            store,
            faults,
            counter,
            traffic,
            ctx,
            api,
            tokens,
        })
    }

    /// `http://127.0.0.1:<port>`: its metrics and, with a token, its API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `https://127.0.0.1:<port>`: its API server as kubeconfigs name it.
    pub fn api_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

async fn tick_metrics(traffic: Arc<Traffic>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(METRICS_TICK);
    loop {
        tokio::select! {
            // At a slow clock a tick is a fraction of a fleet second, and
            // a step that recent already counts the traffic.
            _ = tick.tick() => traffic.step_unless_within(super::metrics::STEP_SHARED_WITHIN),
            _ = stop.changed() => return,
        }
    }
}

fn create(
    ctx: &Ctx,
    group: &str,
    plural: &str,
    ns: &str,
    obj: Value,
) -> Result<(), super::api_error::ApiError> {
    let kind = ctx.kind(group, plural);
    ctx.store
        .create(&kind, ns, obj, Target::All, &WriteOptions::default())
        .map(|_| ())
}

/// Namespaces, nodes, the `kubernetes` Service and the HTTPRoute CRD.
fn boot(ctx: &Ctx, index: usize, spec: &ClusterSpec) -> Result<(), super::api_error::ApiError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        create(ctx, "", "namespaces", "", json!({"metadata": {"name": ns}}))?;
    }
    let now = ctx.now();
    for (zone_index, zone) in spec.zones.iter().enumerate() {
        for number in 1..=spec.nodes_per_zone as usize {
            let place = nodes::NodePlace {
                cluster_index: index,
                region: &spec.region,
                zone,
                zone_index,
                number,
                pods: spec.pods_per_node,
            };
            let node = nodes::make_node(&spec.name, place, now);
            let lease = json!({"metadata": {"name": nodes::node_name(&spec.name, zone, number)},
                               "spec": {"holderIdentity": nodes::node_name(&spec.name, zone, number), "leaseDurationSeconds": 40,
                                        "renewTime": super::meta::micro_time(now)}});
            create(ctx, "", "nodes", "", node)?;
            create(
                ctx,
                "coordination.k8s.io",
                "leases",
                "kube-node-lease",
                lease,
            )?;
        }
    }
    create(
        ctx,
        "",
        "services",
        "default",
        json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
               "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}}),
    )?;
    create(
        ctx,
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "",
        httproute_crd(),
    )
}

/// The schema of `gateway.networking.k8s.io/v1` HTTPRoute for the fields
/// cutover reads and writes, as the Gateway API v1.2 standard-channel CRD
/// states them: at most 16 rules and 16 backendRefs a rule, weights 0 to
/// 1,000,000 defaulting to 1, ports 1 to 65535, a backend's group defaulting
/// to "" and kind to "Service", the names' patterns, and the CEL rules on
/// those fields: a Service backend needs a port, two references to one parent
/// need distinct section names, rule names are unique, and a redirect is not
/// combined with backends. Matches, filters, timeouts and the status are kept
/// as sent.
fn httproute_schema() -> Value {
    let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let open_list = |max: u32| json!({"type": "array", "maxItems": max, "items": open.clone()});
    let name = json!({"type": "string", "minLength": 1, "maxLength": 253});
    let port = json!({"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535});
    let dns_subdomain = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
    let group = |default: &str| json!({"type": "string", "maxLength": 253, "default": default, "pattern": format!("^$|{dns_subdomain}")});
    let kind = |default: &str| {
        json!({"type": "string", "minLength": 1, "maxLength": 63, "default": default,
                                      "pattern": "^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"})
    };
    let namespace = json!({"type": "string", "minLength": 1, "maxLength": 63, "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"});
    let backend = json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "group": group(""),
            "kind": kind("Service"),
            "name": name,
            "namespace": namespace,
            "port": port,
            "weight": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 1_000_000, "default": 1},
            "filters": open_list(16),
        },
        "x-kubernetes-validations": [
            {"message": "Must have port for Service reference",
             "rule": "(size(self.group) == 0 && self.kind == 'Service') ? has(self.port) : true"},
        ],
    });
    let parent = json!({
        "type": "object",
        "required": ["name"],
        "properties": {
            "group": group("gateway.networking.k8s.io"),
            "kind": kind("Gateway"),
            "namespace": namespace,
            "name": name,
            "sectionName": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": dns_subdomain},
            "port": port,
        },
    });
    // Two references to one parent: the same group, kind, name and namespace
    // (an unset namespace counts as the route's own).
    let same_parent = "p1.group == p2.group && p1.kind == p2.kind && p1.name == p2.name && \
        (((!has(p1.__namespace__) || p1.__namespace__ == '') && (!has(p2.__namespace__) || p2.__namespace__ == '')) || \
        (has(p1.__namespace__) && has(p2.__namespace__) && p1.__namespace__ == p2.__namespace__))";
    let parent_rules = json!([
        {"message": "sectionName must be specified when parentRefs includes 2 or more references to the same parent",
         "rule": format!("self.all(p1, self.all(p2, {same_parent} ? ((!has(p1.sectionName) || p1.sectionName == '') == (!has(p2.sectionName) || p2.sectionName == '')) : true))")},
        {"message": "sectionName must be unique when parentRefs includes 2 or more references to the same parent",
         "rule": format!("self.all(p1, self.exists_one(p2, {same_parent} && (((!has(p1.sectionName) || p1.sectionName == '') && (!has(p2.sectionName) || p2.sectionName == '')) || (has(p1.sectionName) && has(p2.sectionName) && p1.sectionName == p2.sectionName))))")},
    ]);
    let path_prefix = json!([{"path": {"type": "PathPrefix", "value": "/"}}]);
    json!({
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "properties": {
                    "parentRefs": {"type": "array", "maxItems": 32, "items": parent, "x-kubernetes-validations": parent_rules},
                    "hostnames": {"type": "array", "maxItems": 16, "items": {"type": "string", "minLength": 1, "maxLength": 253,
                                  "pattern": "^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}},
                    "rules": {
                        "type": "array",
                        "maxItems": 16,
                        "default": [{"matches": path_prefix}],
                        "x-kubernetes-validations": [
                            {"message": "Rule name must be unique within the route",
                             "rule": "self.all(l1, !has(l1.name) || self.exists_one(l2, has(l2.name) && l1.name == l2.name))"},
                        ],
                        "items": {
                            "type": "object",
                            "x-kubernetes-validations": [
                                {"message": "RequestRedirect filter must not be used together with backendRefs",
                                 "rule": "(has(self.backendRefs) && size(self.backendRefs) > 0) ? (!has(self.filters) || self.filters.all(f, !has(f.requestRedirect))) : true"},
                            ],
                            "properties": {
                                "name": {"type": "string", "minLength": 1, "maxLength": 253},
                                "matches": {"type": "array", "maxItems": 64, "default": path_prefix, "items": open.clone()},
                                "filters": open_list(16),
                                "backendRefs": {"type": "array", "maxItems": 16, "items": backend},
                                "timeouts": open.clone(),
                                "sessionPersistence": open.clone(),
                                "retry": open.clone(),
                            },
                        },
                    },
                },
            },
            "status": open,
        },
    })
}

/// The Gateway API HTTPRoute CRD.
fn httproute_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "httproutes.gateway.networking.k8s.io",
                     "annotations": {"gateway.networking.k8s.io/bundle-version": "v1.2.0"}},
        "spec": {
            "group": "gateway.networking.k8s.io",
            "names": {"plural": "httproutes", "singular": "httproute", "kind": "HTTPRoute", "listKind": "HTTPRouteList",
                      "categories": ["gateway-api"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": httproute_schema()},
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Hostnames", "type": "string", "jsonPath": ".spec.hostnames"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }],
        },
    })
}
