//! The analysis of one step: every metric, in every cluster where green takes
//! traffic, measured on its interval from the step's start (or from the end of
//! a freeze or outage: each run is keyed by step and epoch), rolled up into
//! the gate's verdict for the engine.
//!
//! Measurements that ask a provider over the network run beside the driver's
//! loop, each under one deadline: a pass never waits for one, and a slow or
//! hanging endpoint delays only its own metric. Their results land between
//! passes and wake the loop (`landed`). Metrics due at the same look that
//! read the same page (the same address) share one fetch of it, as Prometheus
//! scrapes a target once for all the rules that read it: an app's endpoint
//! is read once an interval however many of its metrics the gates judge
//! (the error ratio and the latency of the default gates are one page).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use jiff::Timestamp;
use tokio::task::JoinSet;

use super::providers::health;
use super::providers::prometheus::Prometheus;
use super::providers::scrape::{self, Reading, Scraper};
use super::providers::template;
use super::verdict::{Class, Measurement, RawResult, Tally, measure};
use super::{MetricReport, gate_verdict};
use crate::engine::GateReport;
use crate::fleet::cache::FleetCache;
use crate::fleet::workload::Slots;
use crate::spec::gates::{MetricGate, ScrapeQuery};
use crate::spec::{Fleet, ResolvedRelease};

/// Intervals without a pass after which a run of the gates starts over.
const BLIND_INTERVALS: u32 = 3;

/// The longest a measurement may run beside the loop, whatever its provider's
/// own deadlines (a Prometheus query is retried within this too).
const MEASUREMENT_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Run {
    /// What the run measured, as its verdict and people need it.
    tally: Tally,
    reading: Option<Reading>,
    next_at: Option<Timestamp>,
    baseline_restarts: Option<u32>,
    /// A measurement of this run is under way: the next waits for it.
    in_flight: bool,
}

/// A metric of one cluster: the gate's index and the cluster.
type RunKey = (usize, String);

/// What a measurement beside the loop brings back.
enum Fetched {
    Measured(Measurement),
    /// The selected series of a metrics page, read against the run's
    /// previous reading when it lands. The page itself is read where it was
    /// fetched and not carried back: it can be far larger than what the
    /// gate selects, and it would wait in memory until the driver's next
    /// pass.
    Scraped(Result<Reading, String>),
}

struct Landed {
    run: RunKey,
    generation: u64,
    at: Timestamp,
    fetched: Fetched,
}

type Request = Pin<Box<dyn Future<Output = Fetched> + Send>>;

/// How one measurement is taken.
enum Probe {
    /// Measured on the spot from what the driver already holds (or nothing to measure).
    Now(Option<Measurement>),
    /// A request to a provider, run beside the loop.
    Later(Request),
    /// A metrics page to read, fetched beside the loop once for every run
    /// due at this look that reads it.
    Scrape(String, PageReader),
}

/// What one run selects from a metrics page.
struct PageReader {
    query: ScrapeQuery,
    selector: BTreeMap<String, String>,
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
    /// Boxed: a map's node has room for eleven entries, and a run is some
    /// 300 bytes; a release has a few runs (a gate per cluster).
    runs: BTreeMap<RunKey, Box<Run>>,
    prometheus: BTreeMap<String, Prometheus>,
    scraper: Scraper,
    /// Bumped with the key: what lands from an earlier run is dropped.
    generation: u64,
    /// When the driver last looked.
    last_tick: Option<Timestamp>,
    requests: JoinSet<()>,
    /// A channel that takes room per message, not a block of them from its
    /// start (as tokio's): every release's analysis has one, mostly empty.
    landed_tx: mpsc::UnboundedSender<Box<Landed>>,
    landed_rx: mpsc::UnboundedReceiver<Box<Landed>>,
    inbox: Vec<Landed>,
}

impl Default for Analysis {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded();
        Analysis {
            key: None,
            started: Timestamp::UNIX_EPOCH,
            runs: BTreeMap::new(),
            prometheus: BTreeMap::new(),
            scraper: Scraper::default(),
            generation: 0,
            last_tick: None,
            requests: JoinSet::new(),
            landed_tx: tx,
            landed_rx: rx,
            inbox: Vec::new(),
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
    /// Takes in what landed, starts what is due, and returns the gate's
    /// verdict for `step`/`epoch`. Never waits for a provider.
    pub fn tick(
        &mut self,
        ctx: &Context<'_>,
        step: u32,
        epoch: u32,
        now: Timestamp,
    ) -> (GateReport, Vec<MetricReport>) {
        let key = (step, epoch, ctx.rel.version.clone());
        // A driver that could not look for several intervals (its home
        // cluster failing, say) measured nothing meanwhile: the run starts
        // over rather than judge a gap, or run out its deadline, unmeasured.
        let shortest = ctx
            .rel
            .gates
            .iter()
            .map(|g| g.interval.as_duration())
            .min()
            .unwrap_or(Duration::from_secs(60));
        let blind = self.last_tick.is_some_and(|t| {
            now.duration_since(t).unsigned_abs()
                > (shortest * BLIND_INTERVALS).max(Duration::from_secs(60))
        });
        self.last_tick = Some(now);
        if self.key.as_ref() != Some(&key) || blind {
            self.key = Some(key);
            self.started = now;
            self.runs.clear();
            self.generation += 1;
            self.requests.abort_all();
        }
        while self.requests.try_join_next().is_some() {}
        while let Ok(l) = self.landed_rx.try_recv() {
            self.inbox.push(*l);
        }
        for l in std::mem::take(&mut self.inbox) {
            if l.generation == self.generation
                && let Some(run) = self.runs.get_mut(&l.run)
            {
                run.in_flight = false;
                let g = &ctx.rel.gates[l.run.0];
                if let Some(m) = land(run, l.at, l.fetched, g) {
                    run.tally.record(g, m);
                }
            }
        }
        // The pages due at this look, by address, and the runs that read each.
        let mut pages: BTreeMap<String, Vec<(RunKey, PageReader)>> = BTreeMap::new();
        for (i, g) in ctx.rel.gates.iter().enumerate() {
            for cluster in &ctx.clusters {
                let first = self
                    .started
                    .checked_add(g.initial_delay.unwrap_or_default().signed())
                    .unwrap_or(self.started);
                let run = self.runs.entry((i, cluster.clone())).or_default();
                if run.in_flight || now < run.next_at.unwrap_or(first) {
                    continue;
                }
                run.next_at = now.checked_add(g.interval.signed()).ok();
                match probe(g, ctx, cluster, run, &mut self.prometheus, now) {
                    Probe::Now(Some(m)) => run.tally.record(g, m),
                    Probe::Now(None) => {}
                    Probe::Later(request) => {
                        run.in_flight = true;
                        let tx = self.landed_tx.clone();
                        let (run, generation) = ((i, cluster.clone()), self.generation);
                        self.requests.spawn(async move {
                            let fetched = tokio::time::timeout(MEASUREMENT_DEADLINE, request)
                                .await
                                .unwrap_or_else(|_| Fetched::Measured(error(now, unanswered())));
                            let _ = tx.unbounded_send(Box::new(Landed {
                                run,
                                generation,
                                at: now,
                                fetched,
                            }));
                        });
                    }
                    Probe::Scrape(url, reader) => {
                        run.in_flight = true;
                        pages
                            .entry(url)
                            .or_default()
                            .push(((i, cluster.clone()), reader));
                    }
                }
            }
        }
        for (url, readers) in pages {
            let (scraper, tx, generation) = (
                self.scraper.clone(),
                self.landed_tx.clone(),
                self.generation,
            );
            self.requests.spawn(async move {
                let page = tokio::time::timeout(MEASUREMENT_DEADLINE, scraper.fetch(&url))
                    .await
                    .unwrap_or_else(|_| Err(unanswered()))
                    .and_then(|text| scrape::parse(&text, now));
                // Read where it was fetched: only what each run selects
                // waits for the driver's next pass.
                for (run, r) in readers {
                    let reading = match &page {
                        Ok(parsed) => Ok(scrape::read(parsed, &r.query, &r.selector, now)),
                        Err(e) => Err(e.clone()),
                    };
                    let _ = tx.unbounded_send(Box::new(Landed {
                        run,
                        generation,
                        at: now,
                        fetched: Fetched::Scraped(reading),
                    }));
                }
            });
        }
        let reports: Vec<MetricReport> = self
            .runs
            .iter()
            .filter(|((_, c), _)| ctx.clusters.contains(c))
            .map(|((i, c), run)| {
                let g = &ctx.rel.gates[*i];
                MetricReport {
                    name: g.name.clone(),
                    cluster: c.clone(),
                    // Worked out for the report, not kept in the run: a
                    // release has nine runs, each its query's text.
                    query: Vars::of(ctx, c).query(g),
                    threshold: threshold(g),
                    dry_run: g.dry_run,
                    verdict: run.tally.verdict(g),
                    measurements: run.tally.recent().collect(),
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

    /// Resolves when a measurement lands (never while none is under way).
    /// Safe to drop unfinished: nothing that landed is lost.
    pub async fn landed(&mut self) {
        if let Some(l) = self.landed_rx.next().await {
            self.inbox.push(*l);
        }
    }
}

/// A measurement that landed, as the gate measures it.
fn land(run: &mut Run, at: Timestamp, fetched: Fetched, g: &MetricGate) -> Option<Measurement> {
    let reading = match fetched {
        Fetched::Measured(m) => return Some(m),
        Fetched::Scraped(Err(e)) => return Some(error(at, e)),
        Fetched::Scraped(Ok(reading)) => reading,
    };
    let q = g.provider.scrape.as_ref()?;
    let result: Option<Result<RawResult, String>> = run
        .reading
        .as_ref()
        .map(|before| scrape::compute(q, before, &reading));
    run.reading = Some(reading);
    Some(measure(g, at, result?, None))
}

/// How to take one measurement of `g` in `cluster` now.
fn probe(
    g: &MetricGate,
    ctx: &Context<'_>,
    cluster: &str,
    run: &mut Run,
    proms: &mut BTreeMap<String, Prometheus>,
    now: Timestamp,
) -> Probe {
    let rel = ctx.rel;
    let vars = Vars::of(ctx, cluster);
    let green = vars.green;
    let fc = ctx.fleet.cluster(cluster);
    if let Some(q) = &g.provider.prometheus {
        let Some(address) = q
            .address
            .clone()
            .or_else(|| fc.and_then(|c| c.prometheus.clone()))
        else {
            return Probe::Now(Some(error(
                now,
                format!(
                    "no Prometheus for {cluster}: set `prometheus` for it in the fleet file or `address` on the gate"
                ),
            )));
        };
        let prom = proms
            .entry(address.clone())
            .or_insert_with(|| Prometheus::new(&address))
            .clone();
        let query = vars.fill(&q.query, &rel.version, green);
        let rate_query = q
            .request_rate_query
            .as_ref()
            .map(|rq| vars.fill(rq, &rel.version, green));
        let blue_query = match (&g.compare_to_blue, vars.blue_version.is_empty()) {
            (Some(_), false) => Some(vars.fill(&q.query, vars.blue_version, vars.blue_colour)),
            _ => None,
        };
        let timeout = q.timeout.as_duration().max(Duration::from_secs(1));
        let g = g.clone();
        return Probe::Later(Box::pin(async move {
            // Prometheus keeps samples on the wall clock, whatever clock the fleet runs on.
            let at = Timestamp::now();
            let mut result = prom
                .query(&query, at, timeout)
                .await
                .map_err(|e| format!("{address}: {e}"));
            if let (Some(rq), Ok(r)) = (&rate_query, result.as_mut()) {
                match prom.query(rq, at, timeout).await {
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
            let blue = match &blue_query {
                Some(bq) => Some(
                    prom.query(bq, at, timeout)
                        .await
                        .map_err(|e| format!("{address}: {e}")),
                ),
                None => None,
            };
            Fetched::Measured(measure(&g, now, result, blue))
        }));
    }
    if let Some(q) = &g.provider.scrape {
        let Some((url, selector)) = vars.scrape_target(q) else {
            return Probe::Now(Some(error(
                now,
                format!(
                    "no metrics endpoint for {cluster}: set `metricsUrl` for it in the fleet file or `url` on the gate"
                ),
            )));
        };
        return Probe::Scrape(
            url,
            PageReader {
                query: q.clone(),
                selector,
            },
        );
    }
    if let Some(q) = &g.provider.cluster_health {
        let Some(cc) = ctx.cache.clusters.get(cluster) else {
            return Probe::Now(None);
        };
        let h = health::assess(&cc.pods(), &cc.nodes(), green, &rel.version);
        let baseline = *run.baseline_restarts.get_or_insert(h.restarts);
        return Probe::Now(Some(health::measure(q, &h, baseline, now)));
    }
    Probe::Now(None)
}

/// What a gate's texts are filled with in one cluster (`{{app}}`,
/// `{{version}}`, `{{colour}}`, `{{cluster}}`, `{{namespace}}`).
struct Vars<'a> {
    ctx: &'a Context<'a>,
    cluster: &'a str,
    green: &'a str,
    blue_version: &'a str,
    blue_colour: &'a str,
}

impl<'a> Vars<'a> {
    fn of(ctx: &'a Context<'a>, cluster: &'a str) -> Vars<'a> {
        let slots = ctx.slots.get(cluster);
        Vars {
            ctx,
            cluster,
            green: slots.map(|s| s.green.as_str()).unwrap_or("green"),
            blue_version: slots
                .and_then(|s| s.blue_workload.as_ref())
                .map_or("", |w| w.version.as_str()),
            blue_colour: slots.map(|s| s.green.other().as_str()).unwrap_or("blue"),
        }
    }

    fn fill(&self, text: &str, version: &str, colour: &str) -> String {
        let rel = self.ctx.rel;
        template(
            text,
            &[
                ("app", &rel.app),
                ("version", version),
                ("colour", colour),
                ("cluster", self.cluster),
                ("namespace", &rel.namespace),
            ],
        )
    }

    /// The endpoint a scrape reads in this cluster and the labels it
    /// selects; `None` when neither the gate nor the fleet names one.
    fn scrape_target(&self, q: &ScrapeQuery) -> Option<(String, BTreeMap<String, String>)> {
        let fc = self.ctx.fleet.cluster(self.cluster);
        let url = q
            .url
            .clone()
            .or_else(|| fc.and_then(|c| c.metrics_url.clone()))?;
        let version = &self.ctx.rel.version;
        // An endpoint per app (or a federation query) names the app in its address.
        let url = self.fill(&url, version, self.green);
        let selector = q
            .selector
            .clone()
            .unwrap_or_else(|| {
                BTreeMap::from([
                    ("app".into(), "{{app}}".into()),
                    ("version".into(), "{{version}}".into()),
                ])
            })
            .into_iter()
            .map(|(k, v)| (k, self.fill(&v, version, self.green)))
            .collect();
        Some((url, selector))
    }

    /// What `g` measures here, as its report shows it: the query, the
    /// series a scrape selects and where, or the cluster's health.
    fn query(&self, g: &MetricGate) -> String {
        if let Some(q) = &g.provider.prometheus {
            return self.fill(&q.query, &self.ctx.rel.version, self.green);
        }
        if let Some(q) = &g.provider.scrape {
            return match self.scrape_target(q) {
                Some((url, selector)) => {
                    format!("{:?} of {} {selector:?} at {url}", q.measure, q.metric)
                }
                None => String::new(),
            };
        }
        if g.provider.cluster_health.is_some() {
            return "cluster health".into();
        }
        String::new()
    }
}

/// Why a measurement that outlived its deadline has no value.
fn unanswered() -> String {
    format!("no answer within {MEASUREMENT_DEADLINE:?}")
}

fn error(at: Timestamp, detail: String) -> Measurement {
    Measurement {
        at,
        class: Class::Error,
        value: None,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::fleet::guard::tests::example_release;

    /// An app's metrics page, one request a connection, counting the
    /// requests it answers.
    async fn endpoint() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst) as u64;
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let (all, errors) = (100 * (n + 1), n);
                    let page = format!(
                        "# TYPE http_requests_total counter\n\
                         http_requests_total{{app=\"checkout\",version=\"2.14.0\",code=\"200\"}} {all}\n\
                         http_requests_total{{app=\"checkout\",version=\"2.14.0\",code=\"500\"}} {errors}\n\
                         # TYPE http_request_duration_seconds histogram\n\
                         http_request_duration_seconds_bucket{{app=\"checkout\",version=\"2.14.0\",le=\"0.1\"}} {all}\n\
                         http_request_duration_seconds_bucket{{app=\"checkout\",version=\"2.14.0\",le=\"+Inf\"}} {all}\n\
                         http_request_duration_seconds_count{{app=\"checkout\",version=\"2.14.0\"}} {all}\n"
                    );
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        page.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(page.as_bytes()).await;
                });
            }
        });
        (url, served)
    }

    /// The example release, its scrape gates reading `url` in every cluster.
    fn release_reading(url: &str) -> (ResolvedRelease, Fleet) {
        let fleet_text = include_str!("../../examples/checkout/fleet.yaml").replace(
            "    trafficShare:",
            &format!("    metricsUrl: \"{url}?cluster={{{{cluster}}}}\"\n    trafficShare:"),
        );
        let fleet = Fleet::parse("fleet.yaml", &fleet_text).unwrap();
        (example_release(&fleet), fleet)
    }

    /// Ticks until both scrape gates' runs have `n` measurements each.
    async fn measured(
        analysis: &mut Analysis,
        ctx: &Context<'_>,
        now: Timestamp,
        n: usize,
    ) -> Vec<MetricReport> {
        loop {
            let (_, reports) = analysis.tick(ctx, 1, 0, now);
            let scraped: Vec<_> = reports
                .into_iter()
                .filter(|r| r.name != "cluster-health")
                .collect();
            if scraped.len() == 2 && scraped.iter().all(|r| r.measurements.len() == n) {
                return scraped;
            }
            analysis.landed().await;
        }
    }

    /// The error ratio and the latency of the example's gates read one page
    /// of the app's endpoint in each cluster: each look fetches it once for
    /// both (twice, before, doubling the load on every app's endpoint).
    #[tokio::test]
    async fn metrics_due_together_that_read_one_page_share_one_fetch_of_it() {
        let (url, served) = endpoint().await;
        let (rel, fleet) = release_reading(&url);
        let scrapes = rel
            .gates
            .iter()
            .filter(|g| g.provider.scrape.is_some())
            .count();
        assert_eq!(scrapes, 2, "the example's gates");
        let cache = FleetCache::empty();
        let slots = BTreeMap::new();
        let ctx = Context {
            rel: &rel,
            fleet: &fleet,
            cache: &cache,
            slots: &slots,
            clusters: vec!["prod-a".into()],
        };
        let mut analysis = Analysis::default();
        let start = Timestamp::now();
        // The first look reads each run's first page; a rate needs two.
        measured(&mut analysis, &ctx, start, 0).await;
        while analysis.requests.join_next().await.is_some() {}
        assert_eq!(
            served.load(Ordering::SeqCst),
            1,
            "one fetch for both metrics"
        );
        let minute_on = start + jiff::SignedDuration::from_secs(60);
        let reports = measured(&mut analysis, &ctx, minute_on, 1).await;
        assert_eq!(served.load(Ordering::SeqCst), 2, "one a look");
        for r in &reports {
            assert_eq!(
                r.measurements[0].class,
                Class::Pass,
                "{}: {:?}",
                r.name,
                r.measurements
            );
        }
        // Two clusters: a page each (their addresses differ).
        let both = Context {
            clusters: vec!["prod-a".into(), "prod-b".into()],
            ..ctx
        };
        let later = minute_on + jiff::SignedDuration::from_secs(60);
        analysis.tick(&both, 1, 0, later);
        while analysis.requests.join_next().await.is_some() {}
        assert_eq!(served.load(Ordering::SeqCst), 4);
    }
}
