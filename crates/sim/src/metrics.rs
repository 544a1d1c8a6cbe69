//! Application metrics of a simulated cluster, as Prometheus text (format
//! 0.0.4): `http_requests_total{app,version,colour,code}` and the histogram
//! `http_request_duration_seconds{app,version,colour}`, advanced with fleet
//! time from the gateway's flows and each version's behaviour.
//!
//! Counters only grow: each step adds `rate × elapsed fleet seconds`, split
//! by the behaviour in force during that step. Owns the accumulators and the
//! text format; traffic routing belongs to the gateway.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use tokio::sync::broadcast::error::TryRecvError;

use super::faults::{Behaviour, Behaviours, Workload};
use super::gateway::{Flow, Routing};
use super::store::{Changes, Store};
use cutover_core::clock::SharedClock;

/// Upper bounds of the latency histogram, in seconds.
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Spread of the log-normal latency distribution (p99 ≈ 3.2 × the median).
const SIGMA: f64 = 0.5;

#[derive(Debug, Default, Clone)]
struct Series {
    codes: BTreeMap<&'static str, f64>,
    buckets: [f64; BUCKETS.len()],
    count: f64,
    sum: f64,
}

/// An app's series by version and colour (a few each).
type AppSeries = Vec<((String, String), Series)>;

#[derive(Debug, Default)]
struct State {
    last: Option<Timestamp>,
    /// By app: a step finds each flow's series by the names it borrows,
    /// and a scrape of one app reads only its own.
    series: BTreeMap<String, AppSeries>,
}

/// The counters of one cluster.
#[derive(Debug, Default)]
pub struct AppMetrics {
    state: Mutex<State>,
}

impl AppMetrics {
    /// Whether the last step was less than `secs` of fleet time before `now`.
    pub fn stepped_within(&self, now: Timestamp, secs: f64) -> bool {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.last
            .is_some_and(|last| (0.0..secs).contains(&now.duration_since(last).as_secs_f64()))
    }

    /// Adds the requests of `flows` from the last step until `now`.
    pub fn advance<'a>(
        &self,
        now: Timestamp,
        flows: impl IntoIterator<Item = &'a Flow>,
        behaviour: impl Fn(&Flow) -> Behaviour,
    ) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let dt = match st.last {
            Some(last) => now.duration_since(last).as_secs_f64(),
            None => 0.0,
        };
        if dt < 0.0 {
            return;
        }
        st.last = Some(now);
        // Each bucket's share of a latency distribution, worked out once per
        // median rather than for every flow: a step counts every app of the
        // cluster four times a second, and most share a latency.
        let mut shapes: Vec<(f64, [f64; BUCKETS.len()])> = Vec::new();
        for f in flows {
            if !st.series.contains_key(&f.app) {
                st.series.insert(f.app.clone(), Vec::new());
            }
            let Some(app) = st.series.get_mut(&f.app) else {
                continue;
            };
            let at = match app
                .iter()
                .position(|((v, c), _)| *v == f.version && *c == f.colour)
            {
                Some(at) => at,
                None => {
                    let at = app.partition_point(|((v, c), _)| {
                        (v.as_str(), c.as_str()) < (f.version.as_str(), f.colour.as_str())
                    });
                    let key = (f.version.clone(), f.colour.clone());
                    app.insert(at, (key, Series::default()));
                    at
                }
            };
            let s = &mut app[at].1;
            let n = f.rps * dt;
            if !f.served {
                *s.codes.entry("503").or_default() += n;
                continue;
            }
            let b = behaviour(f);
            let errors = n * b.error_ratio.clamp(0.0, 1.0);
            *s.codes.entry("200").or_default() += n - errors;
            *s.codes.entry("500").or_default() += errors;
            let median = b.latency.as_secs_f64().max(1e-6);
            let shape = match shapes.iter().position(|(m, _)| *m == median) {
                Some(i) => &shapes[i].1,
                None => {
                    shapes.push((median, BUCKETS.map(|le| lognormal_cdf(le, median))));
                    &shapes[shapes.len() - 1].1
                }
            };
            for (slot, share) in s.buckets.iter_mut().zip(shape) {
                *slot += n * share;
            }
            s.count += n;
            s.sum += n * median * (SIGMA * SIGMA / 2.0).exp();
        }
    }

    /// The exposition text: every app's series, or only `app`'s (as an
    /// app's own endpoint, or a federation query, would serve them).
    pub fn render(&self, app: Option<&str>) -> String {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let labels = |app: &str, (version, colour): &(String, String)| {
            format!(
                "app=\"{}\",version=\"{}\",colour=\"{}\"",
                escape(app),
                escape(version),
                escape(colour)
            )
        };
        out.push_str(
            "# HELP http_requests_total Requests received, by app version and HTTP status code.\n",
        );
        out.push_str("# TYPE http_requests_total counter\n");
        let of_app = || {
            let apps: Box<dyn Iterator<Item = (&String, &AppSeries)>> = match app {
                Some(a) => Box::new(st.series.get_key_value(a).into_iter()),
                None => Box::new(st.series.iter()),
            };
            apps.flat_map(|(app, series)| series.iter().map(move |(key, s)| (app, key, s)))
        };
        for (app, key, s) in of_app() {
            for (code, v) in &s.codes {
                let _ = writeln!(
                    out,
                    "http_requests_total{{{},code=\"{code}\"}} {}",
                    labels(app, key),
                    v.floor()
                );
            }
        }
        out.push_str(
            "# HELP http_request_duration_seconds Latency of requests served by app version.\n",
        );
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        for (app, key, s) in of_app().filter(|(_, _, s)| s.codes.contains_key("200")) {
            let l = labels(app, key);
            for (le, v) in BUCKETS.iter().zip(s.buckets) {
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {}",
                    v.floor()
                );
            }
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}",
                s.count.floor()
            );
            let _ = writeln!(out, "http_request_duration_seconds_sum{{{l}}} {:.3}", s.sum);
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{{l}}} {}",
                s.count.floor()
            );
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// P(latency ≤ x) for a log-normal latency with this median.
fn lognormal_cdf(x: f64, median: f64) -> f64 {
    let z = (x.ln() - median.ln()) / SIGMA;
    0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2))
}

/// Abramowitz and Stegun 7.1.26 (error below 1.5e-7).
fn erf(x: f64) -> f64 {
    let sign = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    sign * (1.0 - poly * (-x * x).exp())
}

/// Fleet time within which a scrape, or the regular tick, reads the last
/// step rather than stepping again: a step counts every app of the cluster.
pub const STEP_SHARED_WITHIN: f64 = 1.0;

/// A cluster's traffic: its rate, routes and behaviours, feeding its metrics.
#[derive(Debug)]
pub struct Traffic {
    pub cluster: String,
    pub rps: f64,
    pub store: Arc<Store>,
    pub behaviours: Arc<Behaviours>,
    pub clock: SharedClock,
    pub metrics: AppMetrics,
    /// Where requests go, kept from the store's changes.
    pub routing: Mutex<Followed>,
}

/// A routing and the changes it follows.
#[derive(Debug, Default)]
pub struct Followed {
    live: Option<(Changes, Routing)>,
}

impl Traffic {
    /// Steps unless the last step was less than `secs` of fleet time ago,
    /// judged once the routing is this caller's: when many scrapes arrive
    /// together (a thousand apps' gates), one steps and the rest read it.
    pub fn step_unless_within(&self, secs: f64) {
        let mut followed = self.routing.lock().unwrap_or_else(|p| p.into_inner());
        if !self.metrics.stepped_within(self.clock.now(), secs) {
            self.step_with(&mut followed);
        }
    }

    /// Counts the requests since the last step, routed as the cluster is
    /// now: the routing takes in the changes since the last step, works
    /// out again only what they touched, and the counters read its flows
    /// in place.
    fn step_with(&self, followed: &mut Followed) {
        let live = &mut followed.live;
        let mut behind = false;
        if let Some((changes, routing)) = live.as_mut() {
            loop {
                match changes.try_recv() {
                    Ok(c) => {
                        routing.apply(&c);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                    Err(TryRecvError::Lagged(_)) => {
                        behind = true;
                        break;
                    }
                }
            }
        }
        if behind {
            // Fell behind the changes: read the cluster again.
            *live = None;
        }
        let (_, routing) = live.get_or_insert_with(|| {
            let (initial, changes) = self.store.subscribe_to(&Routing::RESOURCES);
            (changes, Routing::of_objects(initial))
        });
        let now = self.clock.now();
        self.metrics.advance(now, routing.counted(self.rps), |f| {
            self.behaviours.of(Workload {
                cluster: &self.cluster,
                app: &f.app,
                version: &f.version,
                colour: &f.colour,
            })
        });
    }

    /// Steps to now and renders every app's series, or only `app`'s. A step
    /// reads the whole cluster, so scrapes less than a fleet second after the
    /// last step (many apps' gates at once) share it.
    pub fn scrape(&self, app: Option<&str>) -> String {
        self.step_unless_within(STEP_SHARED_WITHIN);
        self.metrics.render(app)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn flow(version: &str, colour: &str, rps: f64, served: bool) -> Flow {
        Flow {
            app: "web".into(),
            version: version.into(),
            colour: colour.into(),
            rps,
            served,
        }
    }

    #[test]
    fn counters_follow_rates_errors_and_time() {
        let m = AppMetrics::default();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let behave = |f: &Flow| Behaviour {
            error_ratio: if f.colour == "green" { 0.2 } else { 0.0 },
            latency: Duration::from_millis(40),
            crash_loop: false,
        };
        let flows = [
            flow("v1", "blue", 90.0, true),
            flow("v2", "green", 10.0, true),
            flow("v3", "red", 5.0, false),
        ];
        m.advance(t0, &flows, behave);
        m.advance(t0 + Duration::from_secs(100), &flows, behave);
        let text = m.render(None);
        assert_eq!(m.render(Some("web")), text, "every series is web's");
        assert!(!m.render(Some("api")).contains("http_requests_total{"));
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        let value = |version: &str, code: &str| {
            scrape
                .samples
                .iter()
                .find(|s| {
                    s.metric == "http_requests_total"
                        && s.labels.get("version") == Some(version)
                        && s.labels.get("code") == Some(code)
                })
                .map(|s| match s.value {
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                    _ => f64::NAN,
                })
        };
        assert_eq!(value("v1", "200"), Some(9000.0));
        assert_eq!(value("v1", "500"), Some(0.0));
        assert_eq!(value("v2", "500"), Some(200.0));
        assert_eq!(value("v2", "200"), Some(800.0));
        assert_eq!(value("v3", "503"), Some(500.0));
        assert!(text.contains("http_request_duration_seconds_bucket{app=\"web\",version=\"v1\",colour=\"blue\",le=\"+Inf\"} 9000"), "{text}");
        assert!(
            !text.contains("version=\"v3\",colour=\"red\",le="),
            "{text}"
        );
    }

    #[test]
    fn a_versions_pods_are_counted_as_one_flow_and_one_apps_scrape_reads_only_its_own() {
        let mut web2 = flow("v1", "blue", 5.0, true);
        web2.app = "web2".into();
        let pods = vec![
            flow("v1", "blue", 30.0, true),
            web2,
            flow("v2", "green", 10.0, true),
            flow("v1", "blue", 30.0, true),
            flow("v2", "green", 3.0, false),
        ];
        let m = crate::gateway::counted(&pods);
        assert_eq!(m.len(), 4, "{m:?}");
        let blue = m
            .iter()
            .find(|f| f.app == "web" && f.version == "v1")
            .unwrap();
        assert_eq!(blue.rps, 60.0);
        let metrics = AppMetrics::default();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let fine = |_: &Flow| Behaviour {
            error_ratio: 0.0,
            latency: Duration::from_millis(40),
            crash_loop: false,
        };
        metrics.advance(t0, &m, fine);
        metrics.advance(t0 + Duration::from_secs(10), &m, fine);
        let web = metrics.render(Some("web"));
        assert!(
            web.contains("app=\"web\",version=\"v1\",colour=\"blue\",code=\"200\"} 600"),
            "{web}"
        );
        assert!(!web.contains("web2"), "{web}");
        assert!(metrics.render(Some("web2")).contains("web2"));
        assert!(metrics.render(None).contains("web2") && metrics.render(None).contains("\"v2\""));
    }

    #[test]
    fn scrapes_within_a_fleet_second_of_a_step_read_it_and_a_later_one_steps() {
        /// A clock that moves only when told.
        #[derive(Debug)]
        struct Set(Mutex<Timestamp>);
        impl cutover_core::clock::Clock for Set {
            fn now(&self) -> Timestamp {
                *self.0.lock().unwrap()
            }
        }
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = Arc::new(Set(Mutex::new(t0)));
        let shared: SharedClock = clock.clone();
        let spec: crate::scenario::BehaviourSpec =
            serde_json::from_value(serde_json::json!({})).unwrap();
        let traffic = Traffic {
            cluster: "prod-a".into(),
            rps: 100.0,
            store: Arc::new(Store::new(shared.clone(), 100)),
            behaviours: Arc::new(Behaviours::new(&spec)),
            clock: shared,
            metrics: AppMetrics::default(),
            routing: Mutex::default(),
        };
        let last = || traffic.metrics.state.lock().unwrap().last;
        traffic.scrape(None);
        let stepped = last().expect("the first scrape steps");
        for _ in 0..10 {
            traffic.scrape(Some("web"));
        }
        assert_eq!(last(), Some(stepped), "read the step, not stepped again");
        *clock.0.lock().unwrap() = t0 + Duration::from_millis(900);
        traffic.scrape(None);
        assert_eq!(last(), Some(stepped), "still within a fleet second");
        *clock.0.lock().unwrap() = t0 + Duration::from_secs(2);
        traffic.scrape(None);
        assert!(
            last().unwrap() > stepped,
            "a step over a second old is stepped again"
        );
    }

    #[test]
    fn latency_buckets_are_cumulative_around_the_median() {
        let m = AppMetrics::default();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let slow = |_: &Flow| Behaviour {
            error_ratio: 0.0,
            latency: Duration::from_millis(400),
            crash_loop: false,
        };
        let flows = [flow("v1", "blue", 100.0, true)];
        m.advance(t0, &flows, slow);
        m.advance(t0 + Duration::from_secs(10), &flows, slow);
        let st = m.state.lock().unwrap();
        let s = &st.series.values().next().unwrap()[0].1;
        assert!(s.buckets.windows(2).all(|w| w[0] <= w[1]));
        let at = |le: f64| s.buckets[BUCKETS.iter().position(|b| *b == le).unwrap()] / s.count;
        assert!(at(0.25) < 0.5 && at(0.5) > 0.5, "{} {}", at(0.25), at(0.5));
        assert!(at(10.0) > 0.999);
        assert!((lognormal_cdf(0.4, 0.4) - 0.5).abs() < 1e-6);
    }
}
