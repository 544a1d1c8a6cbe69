//! The simulated gateway: where a cluster's requests go. Each HTTPRoute
//! (gateway.networking.k8s.io/v1) gets the cluster's request rate, split
//! over its rules and then by backend weight to the Services named; a
//! Service sends its share to the Ready pods it selects. An app without a
//! route is served by the Service named after it, or failing that by all of
//! its Services. Traffic to a backend with no
//! Ready pod fails with 503.
//!
//! Pure reads of the store; the metrics turn flows into counters.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::meta;
use super::store::Store;
use cutover_core::labels::{APP, COLOUR, VERSION};

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

struct Snapshot {
    routes: Vec<Arc<Value>>,
    services: Vec<Arc<Value>>,
    pods: Vec<Arc<PodFacts>>,
    /// Services by namespace and name.
    service_at: HashMap<(String, String), usize>,
    /// Pods by namespace and app label, and by namespace alone: a fleet of
    /// many apps is read without matching every Service against every pod.
    pods_of_app: HashMap<(String, String), Vec<usize>>,
    pods_in: HashMap<String, Vec<usize>>,
}

/// What the gateway reads of a pod.
#[derive(Debug)]
struct PodFacts {
    namespace: String,
    labels: BTreeMap<String, String>,
    ready: bool,
    terminating: bool,
}

impl PodFacts {
    fn of(pod: &Value) -> PodFacts {
        PodFacts {
            namespace: meta::namespace(pod).to_string(),
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

/// What the gateway read of each pod, kept from one reading to the next: a
/// stored object is never changed in place (a write stores a new one), so
/// a pod still stored as it was is not read again. With thousands of pods
/// in a cluster and a few of them changing between two readings, a reading
/// is mostly lookups.
#[derive(Debug, Default)]
pub struct Memo {
    /// By the stored object's address; the entry holds the object, so the
    /// address is not reused while it is here.
    pods: HashMap<usize, (Arc<Value>, Arc<PodFacts>)>,
}

impl Memo {
    /// The facts of each pod, read only for pods not seen as they are; pods
    /// no longer stored are forgotten.
    fn pods(&mut self, pods: Vec<Arc<Value>>) -> Vec<Arc<PodFacts>> {
        let mut seen = HashMap::with_capacity(pods.len());
        let facts = pods
            .into_iter()
            .map(|p| {
                let at = Arc::as_ptr(&p) as usize;
                let facts = match self.pods.remove(&at) {
                    Some((_, f)) => f,
                    None => Arc::new(PodFacts::of(&p)),
                };
                seen.insert(at, (p, facts.clone()));
                facts
            })
            .collect();
        self.pods = seen;
        facts
    }
}

impl Snapshot {
    fn read(store: &Store, memo: &mut Memo) -> Snapshot {
        Snapshot::of(
            store.all("gateway.networking.k8s.io", "httproutes"),
            store.all("", "services"),
            memo.pods(store.all("", "pods")),
        )
    }

    fn of(
        routes: Vec<Arc<Value>>,
        services: Vec<Arc<Value>>,
        pods: Vec<Arc<PodFacts>>,
    ) -> Snapshot {
        let service_at = services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    (meta::namespace(s).to_string(), meta::name(s).to_string()),
                    i,
                )
            })
            .collect();
        let mut pods_of_app: HashMap<(String, String), Vec<usize>> = HashMap::new();
        let mut pods_in: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in pods.iter().enumerate() {
            if let Some(app) = p.label(APP) {
                pods_of_app
                    .entry((p.namespace.clone(), app.to_string()))
                    .or_default()
                    .push(i);
            }
            match pods_in.get_mut(&p.namespace) {
                Some(list) => list.push(i),
                None => {
                    pods_in.insert(p.namespace.clone(), vec![i]);
                }
            }
        }
        Snapshot {
            routes,
            services,
            pods,
            service_at,
            pods_of_app,
            pods_in,
        }
    }

    fn service(&self, ns: &str, name: &str) -> Option<&Value> {
        self.service_at
            .get(&(ns.to_string(), name.to_string()))
            .map(|i| &*self.services[*i])
    }

    /// Pods a Service selects (an empty selector selects none, as for endpoints).
    fn selected<'a>(&'a self, svc: &'a Value) -> impl Iterator<Item = &'a PodFacts> + 'a {
        let sel = svc["spec"]["selector"]
            .as_object()
            .filter(|m| !m.is_empty());
        let ns = meta::namespace(svc).to_string();
        let candidates: &[usize] = match sel.and_then(|s| s.get(APP)).and_then(Value::as_str) {
            _ if sel.is_none() => &[],
            Some(app) => self
                .pods_of_app
                .get(&(ns, app.to_string()))
                .map_or(&[], Vec::as_slice),
            None => self.pods_in.get(&ns).map_or(&[], Vec::as_slice),
        };
        candidates.iter().map(|i| &*self.pods[*i]).filter(move |p| {
            let Some(sel) = sel else { return false };
            !p.terminating
                && sel
                    .iter()
                    .all(|(k, v)| v.as_str().is_some_and(|v| p.label(k) == Some(v)))
        })
    }
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

/// Where `rps` requests per second go in this cluster, per app.
pub fn flows(store: &Store, rps: f64) -> Vec<Flow> {
    flows_with(store, rps, &mut Memo::default())
}

/// As `flows`, reading again only the pods `memo` has not seen as they are.
pub fn flows_with(store: &Store, rps: f64, memo: &mut Memo) -> Vec<Flow> {
    flows_in(&Snapshot::read(store, memo), rps)
}

/// Where `rps` requests per second go among these routes, Services and pods
/// (a copy of a cluster's, as of one change).
pub fn flows_of(
    routes: Vec<Arc<Value>>,
    services: Vec<Arc<Value>>,
    pods: Vec<Arc<Value>>,
    rps: f64,
    memo: &mut Memo,
) -> Vec<Flow> {
    flows_in(&Snapshot::of(routes, services, memo.pods(pods)), rps)
}

fn flows_in(snap: &Snapshot, rps: f64) -> Vec<Flow> {
    let mut out = Vec::new();
    let mut routed_apps = BTreeSet::new();
    let mut referenced = BTreeSet::new();
    for route in &snap.routes {
        let app = route_app(snap, route);
        routed_apps.insert(app.clone());
        let rules: Vec<&Value> = route["spec"]["rules"]
            .as_array()
            .map(|r| r.iter().collect())
            .unwrap_or_default();
        for rule in &rules {
            let refs: Vec<_> = backends(route, rule).collect();
            let total: f64 = refs.iter().map(|(_, _, w)| w).sum();
            for (ns, name, w) in &refs {
                referenced.insert((ns.to_string(), name.to_string()));
                if total <= 0.0 || *w <= 0.0 {
                    continue;
                }
                let share = rps / rules.len() as f64 * w / total;
                match snap.service(ns, name) {
                    Some(svc) => service_flows(snap, svc, &app, share, &mut out),
                    None => out.push(Flow {
                        app: app.clone(),
                        version: "unknown".into(),
                        colour: guess_colour(name).into(),
                        rps: share,
                        served: false,
                    }),
                }
            }
        }
    }
    // Apps without a route: their Services share the app's traffic.
    let mut direct: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for svc in &snap.services {
        let key = (
            meta::namespace(svc).to_string(),
            meta::name(svc).to_string(),
        );
        if referenced.contains(&key) {
            continue;
        }
        let app = svc["spec"]["selector"][APP]
            .as_str()
            .or_else(|| snap.selected(svc).find_map(|p| p.label(APP)));
        if let Some(app) = app.filter(|a| !routed_apps.contains(*a)) {
            direct.entry(app.to_string()).or_default().push(svc);
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
            service_flows(snap, svc, &app, share, &mut out);
        }
    }
    out
}

/// Green's share (percent) of the routes in this cluster, the highest over routes
/// (of one app when given). A backend is green when its Service selects
/// `cutover.dev/colour: green` or its pods carry it, or its name ends in `-green`.
pub fn green_weight(store: &Store, app: Option<&str>) -> Option<f64> {
    let snap = Snapshot::read(store, &mut Memo::default());
    let mut best: Option<f64> = None;
    for route in &snap.routes {
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

    fn rate(flows: &[Flow], colour: &str, served: bool) -> f64 {
        flows
            .iter()
            .filter(|f| f.colour == colour && f.served == served)
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

    #[test]
    fn a_reading_reads_again_only_the_pods_written_since_and_forgets_the_deleted() {
        let s = cluster(25, false);
        let pods = s.kind_of("", "pods").unwrap();
        let mut memo = Memo::default();
        let first = flows_with(&s, 100.0, &mut memo);
        assert!((rate(&first, "green", false) - 25.0).abs() < 1e-9);
        let facts =
            |m: &Memo| -> Vec<Arc<PodFacts>> { m.pods.values().map(|(_, f)| f.clone()).collect() };
        let before = facts(&memo);
        assert_eq!(before.len(), 3);
        s.modify(
            &pods,
            "default",
            "g1",
            Target::All,
            false,
            &WriteOptions::default(),
            |cur| {
                let mut p = cur.cloned().unwrap();
                p["status"]["conditions"][0]["status"] = json!("True");
                Ok(p)
            },
        )
        .unwrap();
        let second = flows_with(&s, 100.0, &mut memo);
        assert!(
            (rate(&second, "green", true) - 25.0).abs() < 1e-9,
            "the written pod is read again: {second:?}"
        );
        let after = facts(&memo);
        let kept = after
            .iter()
            .filter(|f| before.iter().any(|b| Arc::ptr_eq(b, f)))
            .count();
        assert_eq!(kept, 2, "the two blue pods were not read again");
        s.delete(&pods, "default", "b2", &Default::default())
            .unwrap();
        let third = flows_with(&s, 100.0, &mut memo);
        assert_eq!(memo.pods.len(), 2, "the deleted pod is forgotten");
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
}
