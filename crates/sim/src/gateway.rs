//! The simulated gateway: where a cluster's requests go. Each HTTPRoute
//! (gateway.networking.k8s.io/v1) gets the cluster's request rate, split
//! over its rules and then by backend weight to the Services named; a
//! Service sends its share to the Ready pods it selects. An app without a
//! route is served by the Service named after it, or failing that by all of
//! its Services. Traffic to a backend with no
//! Ready pod fails with 503.
//!
//! Reads of the store, or of a copy kept from its changes (`Routing`); the
//! metrics turn flows into counters.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::meta;
use super::store::{Change, ChangeType, Key, Store};
use cutover_core::labels::{APP, COLOUR, VERSION};

const ROUTES: (&str, &str) = ("gateway.networking.k8s.io", "httproutes");
const SERVICES: (&str, &str) = ("", "services");
const PODS: (&str, &str) = ("", "pods");

/// Requests per second that reach one app version (or fail on the way).
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub app: String,
    pub version: String,
    pub colour: String,
    pub rps: f64,
    /// False when no Ready pod could take the requests (answered 503).
    pub served: bool,
}

/// Objects by namespace, then name: looked up by borrowed names and walked
/// in the store's order.
type ByName<T> = BTreeMap<String, BTreeMap<String, T>>;

/// Stores `value` under `ns` and `name` (removes it when `None`); returns
/// what was there.
fn put<T>(map: &mut ByName<T>, ns: &str, name: &str, value: Option<T>) -> Option<T> {
    match value {
        Some(v) => match map.get_mut(ns) {
            Some(names) => names.insert(name.to_string(), v),
            None => {
                map.insert(ns.to_string(), BTreeMap::from([(name.to_string(), v)]));
                None
            }
        },
        None => {
            let names = map.get_mut(ns)?;
            let was = names.remove(name);
            if names.is_empty() {
                map.remove(ns);
            }
            was
        }
    }
}

fn values<T>(map: &ByName<T>) -> impl Iterator<Item = &T> {
    map.values().flat_map(BTreeMap::values)
}

/// The routes, Services and pods of a cluster, indexed for the gateway.
#[derive(Debug, Default)]
struct Snapshot {
    routes: ByName<Arc<Value>>,
    services: ByName<Arc<Value>>,
    pods: ByName<Arc<PodFacts>>,
    /// Pods by namespace, app label and name: a fleet of many apps is read
    /// without matching every Service against every pod.
    pods_of_app: BTreeMap<String, ByName<Arc<PodFacts>>>,
}

/// What the gateway reads of a pod.
#[derive(Debug, PartialEq)]
struct PodFacts {
    labels: BTreeMap<String, String>,
    ready: bool,
    terminating: bool,
}

impl PodFacts {
    fn of(pod: &Value) -> PodFacts {
        PodFacts {
            labels: meta::labels(pod)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect(),
            ready: is_ready(pod),
            terminating: meta::is_terminating(pod),
        }
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

impl Snapshot {
    fn read(store: &Store) -> Snapshot {
        let mut snap = Snapshot::default();
        for (resource, objects) in [ROUTES, SERVICES, PODS].map(|r| (r, store.all(r.0, r.1))) {
            for obj in objects {
                snap.put(resource, &obj, false);
            }
        }
        snap
    }

    /// Takes in one object of `resource` as written (or deleted); what the
    /// snapshot held of it before, for a pod.
    fn put(&mut self, resource: (&str, &str), obj: &Arc<Value>, deleted: bool) -> Put {
        let (ns, name) = (meta::namespace(obj), meta::name(obj));
        let now = (!deleted).then(|| obj.clone());
        match resource {
            ROUTES => {
                put(&mut self.routes, ns, name, now);
                Put::Route
            }
            SERVICES => {
                put(&mut self.services, ns, name, now);
                Put::Service
            }
            PODS => {
                let facts = now.map(|p| Arc::new(PodFacts::of(&p)));
                let held = self.pods.get(ns).and_then(|m| m.get(name));
                if held.map(|f| &**f) == facts.as_deref() {
                    return Put::Nothing;
                }
                let was = put(&mut self.pods, ns, name, facts.clone());
                if let Some(app) = was.as_ref().and_then(|p| p.label(APP))
                    && let Some(of_app) = self.pods_of_app.get_mut(ns)
                {
                    put(of_app, app, name, None);
                    if of_app.is_empty() {
                        self.pods_of_app.remove(ns);
                    }
                }
                if let Some(f) = &facts
                    && let Some(app) = f.label(APP)
                {
                    let of_app = match self.pods_of_app.get_mut(ns) {
                        Some(m) => m,
                        None => self.pods_of_app.entry(ns.to_string()).or_default(),
                    };
                    put(of_app, app, name, Some(f.clone()));
                }
                Put::Pod {
                    apps: [was, facts]
                        .iter()
                        .flatten()
                        .filter_map(|p| p.label(APP).map(str::to_string))
                        .collect(),
                }
            }
            _ => Put::Nothing,
        }
    }

    /// `(namespace, name)` of every route.
    fn route_keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.routes
            .iter()
            .flat_map(|(ns, m)| m.keys().map(|n| (ns.clone(), n.clone())))
    }

    fn service(&self, ns: &str, name: &str) -> Option<&Value> {
        self.services.get(ns)?.get(name).map(|s| &**s)
    }

    /// Pods a Service selects (an empty selector selects none, as for endpoints).
    fn selected<'a>(&'a self, svc: &'a Value) -> impl Iterator<Item = &'a PodFacts> + 'a {
        let sel = svc["spec"]["selector"]
            .as_object()
            .filter(|m| !m.is_empty());
        let ns = meta::namespace(svc);
        let candidates = sel.and_then(|s| match s.get(APP).and_then(Value::as_str) {
            Some(app) => self.pods_of_app.get(ns)?.get(app),
            None => self.pods.get(ns),
        });
        candidates
            .into_iter()
            .flat_map(BTreeMap::values)
            .map(|p| &**p)
            .filter(move |p| {
                let Some(sel) = sel else { return false };
                !p.terminating
                    && sel
                        .iter()
                        .all(|(k, v)| v.as_str().is_some_and(|v| p.label(k) == Some(v)))
            })
    }
}

/// What taking in one object changed.
enum Put {
    Nothing,
    Route,
    Service,
    /// A pod's facts changed; the app labels it had and has.
    Pod {
        apps: Vec<String>,
    },
}

/// Whether a pod takes traffic: Running, Ready, not terminating.
pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && meta::condition_true(pod, "Ready")
        && !meta::is_terminating(pod)
}

/// The flows of one Service receiving `rps`: one per version and colour of
/// the Ready pods it selects, each carrying its pods' shares.
fn service_flows(snap: &Snapshot, svc: &Value, app_hint: &str, rps: f64, out: &mut Vec<Flow>) {
    let selected: Vec<&PodFacts> = snap.selected(svc).collect();
    let ready: Vec<&PodFacts> = selected.iter().copied().filter(|p| p.ready).collect();
    if ready.is_empty() {
        let sel = &svc["spec"]["selector"];
        let any = selected.first();
        let pick = |key: &str, fallback: &str| -> String {
            sel[key]
                .as_str()
                .or_else(|| any.and_then(|p| p.label(key)))
                .unwrap_or(fallback)
                .to_string()
        };
        let colour_guess = guess_colour(meta::name(svc));
        out.push(Flow {
            app: pick(APP, app_hint),
            version: pick(VERSION, "unknown"),
            colour: pick(COLOUR, colour_guess),
            rps,
            served: false,
        });
        return;
    }
    let each = rps / ready.len() as f64;
    let mut pods: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
    for p in ready {
        let key = (
            p.label(APP).unwrap_or(app_hint),
            p.label(VERSION).unwrap_or("unknown"),
            p.label(COLOUR).unwrap_or("unknown"),
        );
        *pods.entry(key).or_default() += 1;
    }
    for ((app, version, colour), n) in pods {
        out.push(Flow {
            app: app.to_string(),
            version: version.to_string(),
            colour: colour.to_string(),
            rps: each * n as f64,
            served: true,
        });
    }
}

fn guess_colour(name: &str) -> &'static str {
    if name.ends_with("-green") {
        "green"
    } else if name.ends_with("-blue") {
        "blue"
    } else {
        "unknown"
    }
}

/// `(namespace, name, weight)` of every Service backend of one rule.
fn backends<'a>(
    route: &'a Value,
    rule: &'a Value,
) -> impl Iterator<Item = (&'a str, &'a str, f64)> + 'a {
    rule["backendRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(move |b| {
            let kind_ok = b["kind"].as_str().is_none_or(|k| k == "Service")
                && b["group"].as_str().is_none_or(str::is_empty);
            let name = b["name"].as_str()?;
            let ns = b["namespace"].as_str().unwrap_or(meta::namespace(route));
            let weight = b["weight"].as_f64().unwrap_or(1.0).max(0.0);
            kind_ok.then_some((ns, name, weight))
        })
}

fn route_app(snap: &Snapshot, route: &Value) -> String {
    if let Some(app) = meta::label(route, APP) {
        return app.to_string();
    }
    for rule in route["spec"]["rules"].as_array().into_iter().flatten() {
        for (ns, name, _) in backends(route, rule) {
            if let Some(svc) = snap.service(ns, name) {
                if let Some(app) = svc["spec"]["selector"][APP].as_str() {
                    return app.to_string();
                }
                if let Some(app) = snap.selected(svc).find_map(|p| p.label(APP)) {
                    return app.to_string();
                }
            }
        }
    }
    meta::name(route).to_string()
}

/// What one route sends where, and what working it out read.
#[derive(Debug)]
struct Reading {
    app: String,
    flows: Vec<Flow>,
    /// `flows` added up by version, colour and whether served: what the
    /// counters add each step.
    counted: Vec<Flow>,
    /// `(namespace, name)` of each Service its rules name, present or not.
    backends: Vec<Key>,
    /// What a change must touch for the reading to be worked out again.
    reads: Vec<Read>,
}

/// Something a route's reading depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Read {
    /// A Service, by namespace and name, whether or not it exists.
    Service(String, String),
    /// The pods of a namespace with one app label.
    PodsOfApp(String, String),
    /// Every pod of a namespace (a Service selecting no app).
    PodsIn(String),
}

/// Where `route` sends `rps` requests per second.
fn read_route(snap: &Snapshot, route: &Value, rps: f64) -> Reading {
    let app = route_app(snap, route);
    let rules: Vec<&Value> = route["spec"]["rules"]
        .as_array()
        .map(|r| r.iter().collect())
        .unwrap_or_default();
    let mut flows = Vec::new();
    let mut named = Vec::new();
    for rule in &rules {
        let refs: Vec<_> = backends(route, rule).collect();
        let total: f64 = refs.iter().map(|(_, _, w)| w).sum();
        for (ns, name, w) in &refs {
            named.push((ns.to_string(), name.to_string()));
            if total <= 0.0 || *w <= 0.0 {
                continue;
            }
            let share = rps / rules.len() as f64 * w / total;
            match snap.service(ns, name) {
                Some(svc) => service_flows(snap, svc, &app, share, &mut flows),
                None => flows.push(Flow {
                    app: app.clone(),
                    version: "unknown".into(),
                    colour: guess_colour(name).into(),
                    rps: share,
                    served: false,
                }),
            }
        }
    }
    let mut reads = Vec::new();
    for (ns, name) in &named {
        reads.push(Read::Service(ns.clone(), name.clone()));
        if let Some(svc) = snap.service(ns, name) {
            let ns = meta::namespace(svc).to_string();
            reads.push(match svc["spec"]["selector"][APP].as_str() {
                Some(app) => Read::PodsOfApp(ns, app.to_string()),
                None => Read::PodsIn(ns),
            });
        }
    }
    reads.sort();
    reads.dedup();
    Reading {
        app,
        counted: counted(&flows),
        flows,
        backends: named,
        reads,
    }
}

/// One flow per app, version, colour and whether it was served: the
/// counters of a version add up its pods' shares, so a step adds each once
/// rather than once per pod (the same sums, a tenth of the work in a fleet
/// of many pods).
pub fn counted(flows: &[Flow]) -> Vec<Flow> {
    let mut out: Vec<Flow> = Vec::new();
    for f in flows {
        match out.iter_mut().find(|o| {
            o.served == f.served && o.app == f.app && o.version == f.version && o.colour == f.colour
        }) {
            Some(o) => o.rps += f.rps,
            None => out.push(f.clone()),
        }
    }
    out
}

/// The flows of apps without a route: their Services share the app's traffic.
fn direct_flows<'a>(
    snap: &Snapshot,
    routed: impl Iterator<Item = &'a Reading>,
    rps: f64,
    out: &mut Vec<Flow>,
) {
    let mut routed_apps = HashSet::new();
    let mut referenced = HashSet::new();
    for r in routed {
        routed_apps.insert(r.app.as_str());
        referenced.extend(r.backends.iter().map(|(ns, n)| (ns.as_str(), n.as_str())));
    }
    let mut direct: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for (ns, services) in &snap.services {
        for (name, svc) in services {
            if referenced.contains(&(ns.as_str(), name.as_str())) {
                continue;
            }
            let app = svc["spec"]["selector"][APP]
                .as_str()
                .or_else(|| snap.selected(svc).find_map(|p| p.label(APP)));
            if let Some(app) = app.filter(|a| !routed_apps.contains(a)) {
                direct.entry(app).or_default().push(svc);
            }
        }
    }
    for (app, mut svcs) in direct {
        // The Service named after the app is its front door (a replica-ratio
        // setup: one Service over both colours); the slot Services are not.
        if svcs.iter().any(|s| meta::name(s) == app) {
            svcs.retain(|s| meta::name(s) == app);
        }
        let share = rps / svcs.len() as f64;
        for svc in svcs {
            service_flows(snap, svc, app, share, out);
        }
    }
}

/// A cluster's routing kept from its stream of changes: each route's flows
/// are worked out again only when the route, a Service it names or a pod
/// those Services select changed, so a fleet of thousands of apps is not
/// read whole after every pod's change. The apps served without a route
/// are read each time (a few Services, mostly none).
#[derive(Debug, Default)]
pub struct Routing {
    snap: Snapshot,
    rps: f64,
    readings: ByName<Reading>,
    /// The routes whose readings depend on each thing read.
    readers: HashMap<Read, BTreeSet<Key>>,
    /// Routes to work out again.
    stale: BTreeSet<Key>,
    /// Whether anything that can change where requests go came in since
    /// the apps served without a route were last read.
    moved: bool,
    /// The flows of the apps served without a route, and their counted sums.
    direct: Vec<Flow>,
    direct_counted: Vec<Flow>,
}

impl Routing {
    /// The resources a routing follows, to subscribe to.
    pub const RESOURCES: [(&str, &str); 3] = [ROUTES, SERVICES, PODS];

    /// A cluster's routing as of now.
    pub fn read(store: &Store) -> Routing {
        Routing::of(Snapshot::read(store))
    }

    /// The routing of these objects (of `RESOURCES`; a subscription's first read).
    pub fn of_objects(objects: impl IntoIterator<Item = (Key, Arc<Value>)>) -> Routing {
        let mut snap = Snapshot::default();
        for ((group, resource), obj) in objects {
            snap.put((group.as_str(), resource.as_str()), &obj, false);
        }
        Routing::of(snap)
    }

    fn of(snap: Snapshot) -> Routing {
        let stale = snap.route_keys().collect();
        Routing {
            snap,
            stale,
            moved: true,
            ..Routing::default()
        }
    }

    /// Takes in one change of the store; whether it can change where
    /// requests go.
    pub fn apply(&mut self, c: &Change) -> bool {
        let resource = (c.group.as_str(), c.resource.as_str());
        let taken = self
            .snap
            .put(resource, &c.object, c.change == ChangeType::Deleted);
        let ns = meta::namespace(&c.object);
        let name = meta::name(&c.object);
        match taken {
            Put::Nothing => return false,
            Put::Route => {
                self.stale.insert((ns.to_string(), name.to_string()));
            }
            Put::Service => self.touch(&Read::Service(ns.to_string(), name.to_string())),
            Put::Pod { apps } => {
                for app in apps {
                    self.touch(&Read::PodsOfApp(ns.to_string(), app));
                }
                self.touch(&Read::PodsIn(ns.to_string()));
            }
        }
        self.moved = true;
        true
    }

    fn touch(&mut self, read: &Read) {
        if let Some(routes) = self.readers.get(read) {
            self.stale.extend(routes.iter().cloned());
        }
    }

    /// Works out again what the changes taken in since touched.
    fn refresh(&mut self, rps: f64) {
        if rps != self.rps {
            self.rps = rps;
            self.stale.extend(self.snap.route_keys());
            self.moved = true;
        }
        for key in std::mem::take(&mut self.stale) {
            let (ns, name) = (key.0.as_str(), key.1.as_str());
            let fresh = self
                .snap
                .routes
                .get(ns)
                .and_then(|m| m.get(name))
                .map(|r| read_route(&self.snap, r, rps));
            if let Some(r) = &fresh {
                for read in &r.reads {
                    self.readers
                        .entry(read.clone())
                        .or_default()
                        .insert(key.clone());
                }
            }
            let fresh_reads: Vec<&Read> = fresh.iter().flat_map(|r| &r.reads).collect();
            let gone: Vec<Read> = match put(&mut self.readings, ns, name, None) {
                Some(old) => old
                    .reads
                    .into_iter()
                    .filter(|r| !fresh_reads.contains(&r))
                    .collect(),
                None => Vec::new(),
            };
            for read in gone {
                if let Some(routes) = self.readers.get_mut(&read) {
                    routes.remove(&key);
                    if routes.is_empty() {
                        self.readers.remove(&read);
                    }
                }
            }
            if let Some(r) = fresh {
                put(&mut self.readings, ns, name, Some(r));
            }
        }
        if std::mem::take(&mut self.moved) {
            self.direct.clear();
            direct_flows(&self.snap, values(&self.readings), rps, &mut self.direct);
            self.direct_counted = counted(&self.direct);
        }
    }

    /// Where `rps` requests per second go, per app: the routes' flows in
    /// the store's order, then the apps served without one.
    pub fn flows(&mut self, rps: f64) -> Vec<Flow> {
        self.refresh(rps);
        values(&self.readings)
            .flat_map(|r| r.flows.iter())
            .chain(&self.direct)
            .cloned()
            .collect()
    }

    /// The same requests, added up per app, version, colour and whether
    /// served (see [`counted`]), read in place: what the counters add.
    pub fn counted(&mut self, rps: f64) -> impl Iterator<Item = &Flow> {
        self.refresh(rps);
        values(&self.readings)
            .flat_map(|r| r.counted.iter())
            .chain(&self.direct_counted)
    }
}

/// Where `rps` requests per second go in this cluster, per app.
pub fn flows(store: &Store, rps: f64) -> Vec<Flow> {
    Routing::read(store).flows(rps)
}

/// Green's share (percent) of the routes in this cluster, the highest over routes
/// (of one app when given). A backend is green when its Service selects
/// `cutover.dev/colour: green` or its pods carry it, or its name ends in `-green`.
pub fn green_weight(store: &Store, app: Option<&str>) -> Option<f64> {
    let snap = Snapshot::read(store);
    let mut best: Option<f64> = None;
    for route in values(&snap.routes) {
        if app.is_some_and(|a| route_app(&snap, route) != a) {
            continue;
        }
        let rules: Vec<&Value> = route["spec"]["rules"]
            .as_array()
            .map(|r| r.iter().collect())
            .unwrap_or_default();
        let mut share = 0.0;
        for rule in &rules {
            let refs: Vec<_> = backends(route, rule).collect();
            let total: f64 = refs.iter().map(|(_, _, w)| w).sum();
            if total <= 0.0 {
                continue;
            }
            let green: f64 = refs
                .iter()
                .filter(|(ns, name, _)| is_green(&snap, ns, name))
                .map(|(_, _, w)| w)
                .sum();
            share += green / total / rules.len() as f64;
        }
        if !rules.is_empty() {
            best = Some(best.map_or(share * 100.0, |b: f64| b.max(share * 100.0)));
        }
    }
    best
}

fn is_green(snap: &Snapshot, ns: &str, name: &str) -> bool {
    match snap.service(ns, name) {
        Some(svc) => match svc["spec"]["selector"][COLOUR].as_str() {
            Some(c) => c == "green",
            None => {
                snap.selected(svc).any(|p| p.label(COLOUR) == Some("green"))
                    || name.ends_with("-green")
            }
        },
        None => name.ends_with("-green"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::{Target, WriteOptions};
    use cutover_core::clock::{ScaledClock, SharedClock};

    fn put(s: &Store, group: &str, plural: &str, obj: Value) {
        let kind = s.kind_of(group, plural).unwrap();
        let ns = if kind.namespaced { "default" } else { "" };
        s.create(&kind, ns, obj, Target::All, &WriteOptions::default())
            .unwrap();
    }

    fn pod(name: &str, colour: &str, version: &str, ready: bool) -> Value {
        json!({"metadata": {"name": name, "labels": {APP: "web", COLOUR: colour, VERSION: version}},
               "spec": {"containers": []},
               "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn cluster(green_weight: u32, green_ready: bool) -> Store {
        let clock: SharedClock = Arc::new(ScaledClock::new(jiff::Timestamp::now(), 1.0));
        let s = Store::new(clock, 100);
        put(
            &s,
            "",
            "namespaces",
            json!({"metadata": {"name": "default"}}),
        );
        put(&s, "", "pods", pod("b1", "blue", "v1", true));
        put(&s, "", "pods", pod("b2", "blue", "v1", true));
        put(&s, "", "pods", pod("g1", "green", "v2", green_ready));
        for colour in ["blue", "green"] {
            put(
                &s,
                "",
                "services",
                json!({"metadata": {"name": format!("web-{colour}")},
                "spec": {"selector": {APP: "web", COLOUR: colour}}}),
            );
        }
        let crds = s
            .kind_of("apiextensions.k8s.io", "customresourcedefinitions")
            .unwrap();
        let crd = json!({"metadata": {"name": "httproutes.gateway.networking.k8s.io"}, "spec": {
            "group": "gateway.networking.k8s.io", "scope": "Namespaced",
            "names": {"plural": "httproutes", "kind": "HTTPRoute"},
            "versions": [{"name": "v1", "served": true, "storage": true}]}});
        s.create(&crds, "", crd, Target::All, &WriteOptions::default())
            .unwrap();
        put(
            &s,
            "gateway.networking.k8s.io",
            "httproutes",
            json!({"metadata": {"name": "web"}, "spec": {"rules": [{"backendRefs": [
            {"name": "web-blue", "weight": 100 - green_weight}, {"name": "web-green", "weight": green_weight}]}]}}),
        );
        s
    }

    /// The requests per second of one colour of the app `web`.
    fn rate(flows: &[Flow], colour: &str, served: bool) -> f64 {
        flows
            .iter()
            .filter(|f| f.app == "web" && f.colour == colour && f.served == served)
            .map(|f| f.rps)
            .sum()
    }

    #[test]
    fn routes_split_by_weight_then_over_ready_pods() {
        let s = cluster(10, true);
        let flows = flows(&s, 100.0);
        assert!((rate(&flows, "blue", true) - 90.0).abs() < 1e-9);
        assert!((rate(&flows, "green", true) - 10.0).abs() < 1e-9);
        assert_eq!(
            flows.iter().filter(|f| f.colour == "blue").count(),
            1,
            "one flow per version of the ready pods"
        );
        assert!(flows.iter().all(|f| f.app == "web"));
        assert_eq!(green_weight(&s, Some("web")), Some(10.0));
        assert_eq!(green_weight(&s, Some("other")), None);
    }

    /// A routing following `s`'s changes from now, and its subscription.
    fn follow(s: &Store) -> (Routing, crate::store::Changes) {
        let (initial, live) = s.subscribe_to(&Routing::RESOURCES);
        (Routing::of_objects(initial), live)
    }

    /// Takes in every change committed since the last call; how many could
    /// move requests.
    fn catch_up(r: &mut Routing, live: &mut crate::store::Changes) -> usize {
        let mut moved = 0;
        while let Ok(c) = live.try_recv() {
            moved += usize::from(r.apply(&c));
        }
        moved
    }

    fn stale(r: &Routing) -> Vec<&str> {
        r.stale.iter().map(|(_, n)| n.as_str()).collect()
    }

    #[test]
    fn a_routing_works_out_again_only_the_routes_a_change_touches() {
        let s = cluster(25, false);
        // A second app with its own route, Service and pod.
        put(
            &s,
            "",
            "pods",
            json!({"metadata": {"name": "api-1", "labels": {APP: "api", COLOUR: "blue", VERSION: "v9"}},
            "spec": {"containers": []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        put(
            &s,
            "",
            "services",
            json!({"metadata": {"name": "api-blue"}, "spec": {"selector": {APP: "api", COLOUR: "blue"}}}),
        );
        put(
            &s,
            "gateway.networking.k8s.io",
            "httproutes",
            json!({"metadata": {"name": "api"}, "spec": {"rules": [{"backendRefs": [{"name": "api-blue"}]}]}}),
        );
        let pods = s.kind_of("", "pods").unwrap();
        let (mut r, mut live) = follow(&s);
        assert_eq!(r.flows(100.0), flows(&s, 100.0));
        assert!(stale(&r).is_empty());

        let write = |name: &str, f: &dyn Fn(&mut Value)| {
            s.modify(
                &pods,
                "default",
                name,
                Target::All,
                false,
                &WriteOptions::default(),
                |cur| {
                    let mut p = cur.cloned().unwrap();
                    f(&mut p);
                    Ok(p)
                },
            )
            .unwrap();
        };
        write("g1", &|p| {
            p["status"]["conditions"][0]["status"] = json!("True")
        });
        assert_eq!(catch_up(&mut r, &mut live), 1);
        assert_eq!(
            stale(&r),
            ["web"],
            "only the route whose Service selects g1"
        );
        let second = r.flows(100.0);
        assert!(
            (rate(&second, "green", true) - 25.0).abs() < 1e-9,
            "{second:?}"
        );
        assert_eq!(second, flows(&s, 100.0));

        write("api-1", &|p| {
            p["metadata"]["annotations"] = json!({"note": "unrelated"})
        });
        assert_eq!(
            catch_up(&mut r, &mut live),
            0,
            "nothing the gateway reads changed"
        );
        assert!(stale(&r).is_empty());

        s.delete(&pods, "default", "b2", &Default::default())
            .unwrap();
        assert_eq!(catch_up(&mut r, &mut live), 1);
        assert_eq!(stale(&r), ["web"]);
        let third = r.flows(100.0);
        assert!(
            (rate(&third, "blue", true) - 75.0).abs() < 1e-9,
            "b1 takes blue's share alone"
        );
        assert_eq!(
            third,
            flows(&s, 100.0),
            "the same flows as a reading from scratch"
        );
    }

    #[test]
    fn a_backend_without_ready_pods_fails_its_share() {
        let s = cluster(25, false);
        let flows = flows(&s, 100.0);
        assert!((rate(&flows, "green", false) - 25.0).abs() < 1e-9);
        let failed = flows.iter().find(|f| !f.served).unwrap();
        assert_eq!(
            failed.version, "v2",
            "the version comes from the selected pods"
        );
        assert_eq!(green_weight(&s, None), Some(25.0));
    }

    /// One write of a fleet of two namespaces, three apps and a few names
    /// of each kind: enough for routes to name Services of another app or
    /// namespace, Services to select no app, and names to be reused.
    #[derive(Debug, Clone)]
    enum Op {
        Pod {
            ns: u8,
            name: u8,
            app: Option<u8>,
            colour: u8,
            version: u8,
            ready: bool,
        },
        Service {
            ns: u8,
            name: u8,
            app: Option<u8>,
            colour: Option<u8>,
        },
        Route {
            ns: u8,
            name: u8,
            app: Option<u8>,
            rules: Vec<Vec<(Option<u8>, u8, u8)>>,
        },
        Delete {
            resource: u8,
            ns: u8,
            name: u8,
        },
    }

    const NAMESPACES: [&str; 2] = ["a", "b"];
    const APPS: [&str; 3] = ["web", "api", "db"];
    const COLOURS: [&str; 2] = ["blue", "green"];
    /// Service names: slot-like, front-door-like and plain.
    const SERVICE_NAMES: [&str; 4] = ["web-blue", "web-green", "web", "api"];

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let app = proptest::option::of(0..3u8);
        prop_oneof![
            4 => (0..2u8, 0..6u8, app.clone(), 0..2u8, 0..2u8, any::<bool>()).prop_map(
                |(ns, name, app, colour, version, ready)| Op::Pod { ns, name, app, colour, version, ready }),
            2 => (0..2u8, 0..4u8, app.clone(), proptest::option::of(0..2u8))
                .prop_map(|(ns, name, app, colour)| Op::Service { ns, name, app, colour }),
            2 => (0..2u8, 0..3u8, app, proptest::collection::vec(
                    proptest::collection::vec((proptest::option::of(0..2u8), 0..4u8, 0..3u8), 0..3), 0..3))
                .prop_map(|(ns, name, app, rules)| Op::Route { ns, name, app, rules }),
            2 => (0..3u8, 0..2u8, 0..6u8).prop_map(|(resource, ns, name)| Op::Delete { resource, ns, name }),
        ]
    }

    fn write(s: &Store, op: &Op) {
        let labels = |app: &Option<u8>| match app {
            Some(a) => json!({APP: APPS[*a as usize]}),
            None => json!({}),
        };
        let (resource, ns, name, obj) = match op {
            Op::Pod {
                ns,
                name,
                app,
                colour,
                version,
                ready,
            } => {
                let mut l = labels(app);
                l[COLOUR] = json!(COLOURS[*colour as usize]);
                l[VERSION] = json!(format!("v{version}"));
                let status = if *ready { "True" } else { "False" };
                (
                    PODS,
                    ns,
                    format!("pod-{name}"),
                    json!({"metadata": {"labels": l}, "spec": {"containers": []},
                    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": status}]}}),
                )
            }
            Op::Service {
                ns,
                name,
                app,
                colour,
            } => {
                let mut sel = labels(app);
                if let Some(c) = colour {
                    sel[COLOUR] = json!(COLOURS[*c as usize]);
                }
                (
                    SERVICES,
                    ns,
                    SERVICE_NAMES[*name as usize].to_string(),
                    json!({"spec": {"selector": sel}}),
                )
            }
            Op::Route {
                ns,
                name,
                app,
                rules,
            } => {
                let rules: Vec<Value> = rules.iter().map(|refs| {
                    let refs: Vec<Value> = refs.iter().map(|(other, svc, weight)| {
                        let mut b = json!({"name": SERVICE_NAMES[*svc as usize], "weight": weight * 50});
                        if let Some(o) = other {
                            b["namespace"] = json!(NAMESPACES[*o as usize]);
                        }
                        b
                    }).collect();
                    json!({"backendRefs": refs})
                }).collect();
                (
                    ROUTES,
                    ns,
                    format!("route-{name}"),
                    json!({"metadata": {"labels": labels(app)}, "spec": {"rules": rules}}),
                )
            }
            Op::Delete { resource, ns, name } => {
                let (resource, name) = match resource {
                    0 => (PODS, format!("pod-{name}")),
                    1 => (SERVICES, SERVICE_NAMES[*name as usize % 4].to_string()),
                    _ => (ROUTES, format!("route-{}", name % 3)),
                };
                let kind = s.kind_of(resource.0, resource.1).unwrap();
                let _ = s.delete(&kind, NAMESPACES[*ns as usize], &name, &Default::default());
                return;
            }
        };
        let kind = s.kind_of(resource.0, resource.1).unwrap();
        let ns = NAMESPACES[*ns as usize];
        let mut obj = obj;
        obj["metadata"]["name"] = json!(name);
        obj["metadata"]["namespace"] = json!(ns);
        s.modify(
            &kind,
            ns,
            &name,
            Target::All,
            true,
            &WriteOptions::default(),
            |_| Ok(obj),
        )
        .unwrap();
    }

    proptest::proptest! {
        /// After every write of a random sequence, a routing kept from the
        /// changes sends requests exactly where a reading of the whole
        /// cluster does: no route it left alone depended on what changed.
        #[test]
        fn a_routing_kept_from_changes_matches_a_reading_from_scratch(
            ops in proptest::collection::vec(op(), 1..40)
        ) {
            let s = cluster(0, true);
            for ns in NAMESPACES {
                put(&s, "", "namespaces", json!({"metadata": {"name": ns}}));
            }
            let (mut r, mut live) = follow(&s);
            for op in &ops {
                write(&s, op);
                catch_up(&mut r, &mut live);
                let scratch = flows(&s, 100.0);
                // What the counters add, read in place, sums to the same
                // requests per app, version, colour and whether served.
                let sums = |flows: &mut dyn Iterator<Item = &Flow>| {
                    let mut by: BTreeMap<(String, String, String, bool), f64> = BTreeMap::new();
                    for f in flows {
                        *by.entry((f.app.clone(), f.version.clone(), f.colour.clone(), f.served))
                            .or_default() += f.rps;
                    }
                    by
                };
                let kept = sums(&mut r.counted(100.0));
                let fresh = sums(&mut scratch.iter());
                proptest::prop_assert_eq!(kept.keys().collect::<Vec<_>>(), fresh.keys().collect::<Vec<_>>());
                for (k, v) in &kept {
                    proptest::prop_assert!((v - fresh[k]).abs() < 1e-9, "{:?}: {} against {}", k, v, fresh[k]);
                }
                proptest::prop_assert_eq!(r.flows(100.0), scratch, "after {:?}", op);
            }
        }
    }
}
