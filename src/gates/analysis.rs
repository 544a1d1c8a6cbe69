//! The analysis of one step: every metric, in every cluster where green takes
//! traffic, measured on its interval from the step's start (or from the end of
//! a freeze or outage: each run is keyed by step and epoch), rolled up into
//! the gate's verdict for the engine.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::providers::health;
use super::providers::prometheus::Prometheus;
use super::providers::scrape::{self, Reading, Scraper};
use super::providers::template;
use super::verdict::{Class, Measurement, RawResult, measure, metric_verdict};
use super::{KEPT_MEASUREMENTS, MetricReport, gate_verdict};
use crate::engine::GateReport;
use crate::fleet::cache::FleetCache;
use crate::fleet::workload::Slots;
use crate::spec::gates::MetricGate;
use crate::spec::{Fleet, ResolvedRelease};

/// Measurements kept per metric and cluster while a step runs.
const HISTORY: usize = 100;

#[derive(Default)]
struct Run {
    measurements: Vec<Measurement>,
    reading: Option<Reading>,
    next_at: Option<Timestamp>,
    baseline_restarts: Option<u32>,
    query: String,
}

/// What the analysis needs to know of the world on one pass.
pub struct Context<'a> {
    pub rel: &'a ResolvedRelease,
    pub fleet: &'a Fleet,
    pub cache: &'a FleetCache,
    pub slots: &'a BTreeMap<String, Slots>,
    /// Clusters where green takes (or is about to take) traffic.
    pub clusters: Vec<String>,
}

pub struct Analysis {
    /// The run's step, epoch and version: a change of any starts a new run.
    key: Option<(u32, u32, String)>,
    started: Timestamp,
    runs: BTreeMap<(usize, String), Run>,
    prometheus: BTreeMap<String, Prometheus>,
    scraper: Scraper,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            key: None,
            started: Timestamp::UNIX_EPOCH,
            runs: BTreeMap::new(),
            prometheus: BTreeMap::new(),
            scraper: Scraper::default(),
        }
    }
}

fn threshold(g: &MetricGate) -> String {
    match (g.min, g.max, &g.provider.cluster_health) {
        (_, _, Some(h)) => format!(
            "restarts ≤ {}, unschedulable ≤ {}, nodes not ready ≤ {}",
            h.max_restarts, h.max_unschedulable_pods, h.max_not_ready_nodes
        ),
        (Some(lo), Some(hi), _) => format!("between {lo} and {hi}"),
        (None, Some(hi), _) => format!("≤ {hi}"),
        (Some(lo), None, _) => format!("≥ {lo}"),
        (None, None, _) => "-".into(),
    }
}

impl Analysis {
    /// Measures what is due and returns the gate's verdict for `step`/`epoch`.
    pub async fn tick(
        &mut self,
        ctx: &Context<'_>,
        step: u32,
        epoch: u32,
        now: Timestamp,
    ) -> (GateReport, Vec<MetricReport>) {
        let key = (step, epoch, ctx.rel.version.clone());
        if self.key.as_ref() != Some(&key) {
            self.key = Some(key);
            self.started = now;
            self.runs.clear();
        }
        for (i, g) in ctx.rel.gates.iter().enumerate() {
            for cluster in &ctx.clusters {
                let first = self
                    .started
                    .checked_add(g.initial_delay.unwrap_or_default().signed())
                    .unwrap_or(self.started);
                let run = self.runs.entry((i, cluster.clone())).or_default();
                if now < run.next_at.unwrap_or(first) {
                    continue;
                }
                run.next_at = now.checked_add(g.interval.signed()).ok();
                let m = measure_one(
                    g,
                    ctx,
                    cluster,
                    run,
                    &mut self.prometheus,
                    &self.scraper,
                    now,
                )
                .await;
                if let Some(m) = m {
                    run.measurements.push(m);
                    if run.measurements.len() > HISTORY {
                        run.measurements.remove(0);
                    }
                }
            }
        }
        let reports: Vec<MetricReport> = self
            .runs
            .iter()
            .filter(|((_, c), _)| ctx.clusters.contains(c))
            .map(|((i, c), run)| {
                let g = &ctx.rel.gates[*i];
                let keep = run.measurements.len().saturating_sub(KEPT_MEASUREMENTS);
                MetricReport {
                    name: g.name.clone(),
                    cluster: c.clone(),
                    query: run.query.clone(),
                    threshold: threshold(g),
                    dry_run: g.dry_run,
                    verdict: metric_verdict(g, &run.measurements),
                    measurements: run.measurements[keep..].to_vec(),
                }
            })
            .collect();
        let (verdict, message) = gate_verdict(&reports);
        (
            GateReport {
                step,
                epoch,
                since: Some(self.started),
                verdict,
                message,
            },
            reports,
        )
    }

    /// When the next measurement is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.runs.values().filter_map(|r| r.next_at).min()
    }
}

async fn measure_one(
    g: &MetricGate,
    ctx: &Context<'_>,
    cluster: &str,
    run: &mut Run,
    proms: &mut BTreeMap<String, Prometheus>,
    scraper: &Scraper,
    now: Timestamp,
) -> Option<Measurement> {
    let rel = ctx.rel;
    let slots = ctx.slots.get(cluster);
    let green = slots.map(|s| s.green.as_str()).unwrap_or("green");
    let blue_version = slots
        .and_then(|s| s.blue_workload.as_ref())
        .map(|w| w.version.clone())
        .unwrap_or_default();
    let blue_colour = slots.map(|s| s.green.other().as_str()).unwrap_or("blue");
    let fc = ctx.fleet.cluster(cluster);
    let vars = |version: &str, colour: &str| -> Vec<(String, String)> {
        vec![
            ("app".into(), rel.app.clone()),
            ("version".into(), version.to_string()),
            ("colour".into(), colour.to_string()),
            ("cluster".into(), cluster.to_string()),
            ("namespace".into(), rel.namespace.clone()),
        ]
    };
    let fill = |text: &str, version: &str, colour: &str| {
        let v = vars(version, colour);
        let pairs: Vec<(&str, &str)> = v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        template(text, &pairs)
    };
    if let Some(q) = &g.provider.prometheus {
        let Some(address) = q
            .address
            .clone()
            .or_else(|| fc.and_then(|c| c.prometheus.clone()))
        else {
            return Some(error(
                now,
                format!(
                    "no Prometheus for {cluster}: set `prometheus` for it in the fleet file or `address` on the gate"
                ),
            ));
        };
        let prom = proms
            .entry(address.clone())
            .or_insert_with(|| Prometheus::new(&address));
        let query = fill(&q.query, &rel.version, green);
        run.query = query.clone();
        // Prometheus keeps samples on the wall clock, whatever clock the fleet runs on.
        let at = Timestamp::now();
        let timeout = q.timeout.as_duration().max(Duration::from_secs(1));
        let mut result = prom
            .query(&query, at, timeout)
            .await
            .map_err(|e| format!("{address}: {e}"));
        if let (Some(rq), Ok(r)) = (&q.request_rate_query, result.as_mut()) {
            match prom
                .query(&fill(rq, &rel.version, green), at, timeout)
                .await
            {
                Ok(rate) => {
                    r.request_rate = Some(
                        rate.series
                            .iter()
                            .map(|s| s.value)
                            .filter(|v| v.is_finite())
                            .sum(),
                    )
                }
                Err(e) => result = Err(format!("{address}: request rate: {e}")),
            }
        }
        let blue = match (&g.compare_to_blue, blue_version.is_empty()) {
            (Some(_), false) => Some(
                prom.query(&fill(&q.query, &blue_version, blue_colour), at, timeout)
                    .await
                    .map_err(|e| format!("{address}: {e}")),
            ),
            _ => None,
        };
        return Some(measure(g, now, result, blue));
    }
    if let Some(q) = &g.provider.scrape {
        let Some(url) = q
            .url
            .clone()
            .or_else(|| fc.and_then(|c| c.metrics_url.clone()))
        else {
            return Some(error(
                now,
                format!(
                    "no metrics endpoint for {cluster}: set `metricsUrl` for it in the fleet file or `url` on the gate"
                ),
            ));
        };
        // An endpoint per app (or a federation query) names the app in its address.
        let url = fill(&url, &rel.version, green);
        let selector: BTreeMap<String, String> = q
            .selector
            .clone()
            .unwrap_or_else(|| {
                BTreeMap::from([
                    ("app".into(), "{{app}}".into()),
                    ("version".into(), "{{version}}".into()),
                ])
            })
            .into_iter()
            .map(|(k, v)| (k, fill(&v, &rel.version, green)))
            .collect();
        run.query = format!("{:?} of {} {selector:?} at {url}", q.measure, q.metric);
        let text = match scraper.fetch(&url).await {
            Ok(t) => t,
            Err(e) => return Some(error(now, e)),
        };
        let parsed = match scrape::parse(&text, now) {
            Ok(s) => s,
            Err(e) => return Some(error(now, e)),
        };
        let reading = scrape::read(&parsed, q, &selector, now);
        let previous = run.reading.replace(reading.clone());
        let before = previous?;
        let result: Result<RawResult, String> = scrape::compute(q, &before, &reading);
        return Some(measure(g, now, result, None));
    }
    if let Some(q) = &g.provider.cluster_health {
        let cc = ctx.cache.clusters.get(cluster)?;
        let h = health::assess(&cc.pods(), &cc.nodes(), green, &rel.version);
        let baseline = *run.baseline_restarts.get_or_insert(h.restarts);
        run.query = "cluster health".into();
        return Some(health::measure(q, &h, baseline, now));
    }
    None
}

fn error(at: Timestamp, detail: String) -> Measurement {
    Measurement {
        at,
        class: Class::Error,
        value: None,
        detail,
    }
}
