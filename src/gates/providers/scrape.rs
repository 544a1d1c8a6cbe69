//! The scrape provider: reads a Prometheus text exposition endpoint with
//! `prometheus-parse`, and computes rates, error ratios and quantiles from two
//! reads (counter resets handled). `prometheus-parse` drops lines it cannot
//! read without a word, so sample lines are counted and any loss makes the
//! measurement an error, never a silent pass.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use jiff::Timestamp;
use prometheus_parse::{Scrape, Value};

use crate::gates::verdict::{RawResult, Sample};
use crate::spec::gates::{ScrapeMeasure, ScrapeQuery};

/// One read of an endpoint: counters and histogram buckets of the selected
/// series. A run keeps its last read until the next, a thousand releases'
/// worth at once, so a read is two sorted lists of plain numbers.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Reading {
    pub at: Option<Timestamp>,
    /// Each selected counter series by a hash of its label pairs (in name
    /// order), in hash order: two series of one endpoint colliding in 64
    /// bits is no concern, and a hash takes a fraction of the bytes of the
    /// labels themselves.
    counters: Vec<(u64, Series)>,
    /// Cumulative bucket counts per upper bound (`f64::to_bits` of it), summed
    /// over the selected series, in bound order.
    buckets: Vec<(u64, f64)>,
}

impl Reading {
    fn counter(&self, key: u64) -> Option<&Series> {
        find(&self.counters, key)
    }

    fn bucket(&self, bound: u64) -> Option<f64> {
        find(&self.buckets, bound).copied()
    }
}

/// The value under `key` of a list sorted by key.
fn find<T>(list: &[(u64, T)], key: u64) -> Option<&T> {
    let at = list.binary_search_by_key(&key, |(k, _)| *k).ok()?;
    Some(&list[at].1)
}

/// A counter series of one read.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Series {
    /// Its labels say it counts errors (the query's `errorLabel` starts with
    /// its `errorPrefix`), decided when it was read.
    pub error: bool,
    pub value: f64,
}

/// Sample lines `prometheus-parse` would drop or mangle: names with `:`,
/// label values with `,`, `=`, `}` or escapes.
pub fn unreadable_lines(text: &str) -> Vec<&str> {
    let mut bad = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or(line.len());
        if line[..name_end].contains(':') {
            bad.push(line);
            continue;
        }
        let Some(rest) = line[name_end..].strip_prefix('{') else {
            continue;
        };
        let mut in_value = false;
        let mut value = String::new();
        let mut mangled = false;
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match (in_value, c) {
                (false, '"') => {
                    in_value = true;
                    value.clear();
                }
                (false, '}') => break,
                (true, '\\') => {
                    mangled = true;
                    chars.next();
                }
                (true, '"') => {
                    in_value = false;
                    mangled |= value.contains([',', '=', '}']);
                }
                (true, c) => value.push(c),
                _ => {}
            }
        }
        if mangled {
            bad.push(line);
        }
    }
    bad
}

/// Parses an exposition, refusing it if the parser would drop or mangle any sample line.
pub fn parse(text: &str, at: Timestamp) -> Result<Scrape, String> {
    let unreadable = unreadable_lines(text);
    if let Some(first) = unreadable.first() {
        return Err(format!(
            "{} sample lines cannot be read faithfully (names with ':', label values with ',', '=', '}}' or escapes), e.g. {first:?}; refusing to judge on partial data",
            unreadable.len()
        ));
    }
    let lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .count();
    let scrape = Scrape::parse_at(text.lines().map(|l| Ok(l.to_string())), at_chrono(at))
        .map_err(|e| format!("reading the exposition: {e}"))?;
    let parsed: usize = scrape
        .samples
        .iter()
        .map(|s| match &s.value {
            Value::Histogram(b) => b.len(),
            Value::Summary(q) => q.len(),
            _ => 1,
        })
        .sum();
    if parsed != lines {
        return Err(format!(
            "the exposition has {lines} sample lines but only {parsed} could be read (label values with ',', '=' or '}}', names with ':' or escaped quotes are not supported); refusing to judge on partial data"
        ));
    }
    Ok(scrape)
}

fn at_chrono(at: Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(at.as_second(), at.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

fn matches(labels: &prometheus_parse::Labels, selector: &BTreeMap<String, String>) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v.as_str()))
}

/// The selected series of `q.metric` in one scrape.
pub fn read(
    scrape: &Scrape,
    q: &ScrapeQuery,
    selector: &BTreeMap<String, String>,
    at: Timestamp,
) -> Reading {
    let mut counters: BTreeMap<u64, Series> = BTreeMap::new();
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    for s in scrape
        .samples
        .iter()
        .filter(|s| matches(&s.labels, selector))
    {
        match (&s.value, q.measure) {
            (
                Value::Counter(v) | Value::Untyped(v),
                ScrapeMeasure::ErrorRatio | ScrapeMeasure::Rate,
            ) if s.metric == q.metric || s.metric == format!("{}_total", q.metric) => {
                let mut labels: Vec<_> = s.labels.iter().collect();
                labels.sort();
                let mut h = DefaultHasher::new();
                for (k, v) in labels {
                    (k, v).hash(&mut h);
                }
                let series = counters.entry(h.finish()).or_default();
                series.error = s
                    .labels
                    .get(&q.error_label)
                    .is_some_and(|v| v.starts_with(&q.error_prefix));
                series.value += v;
            }
            (Value::Histogram(bs), ScrapeMeasure::Quantile) if s.metric == q.metric => {
                for b in bs {
                    *buckets.entry(b.less_than.to_bits()).or_default() += b.count;
                }
            }
            _ => {}
        }
    }
    // Collected from the maps: sorted, and no spare room.
    Reading {
        at: Some(at),
        counters: counters.into_iter().collect(),
        buckets: buckets.into_iter().collect(),
    }
}

/// Growth of a counter between reads; a decrease is a restart (the counter began again at zero).
fn delta(before: f64, after: f64) -> f64 {
    if after < before {
        after
    } else {
        after - before
    }
}

/// The value between two readings, with the request rate behind it.
pub fn compute(q: &ScrapeQuery, before: &Reading, after: &Reading) -> Result<RawResult, String> {
    let secs = match (before.at, after.at) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    if secs <= 0.0 {
        return Err("two readings at distinct times are needed".into());
    }
    let sum_delta = |errors_only: bool| -> f64 {
        after
            .counters
            .iter()
            .filter(|(_, s)| s.error || !errors_only)
            .map(|(k, s)| delta(before.counter(*k).map_or(0.0, |b| b.value), s.value))
            .sum()
    };
    let total = sum_delta(false);
    let rate = total / secs;
    let value = match q.measure {
        ScrapeMeasure::Rate => Some(rate),
        ScrapeMeasure::ErrorRatio => {
            let errors = sum_delta(true);
            (total > 0.0).then(|| errors / total)
        }
        ScrapeMeasure::Quantile => {
            let phi = q.quantile.unwrap_or(0.99);
            let mut buckets: Vec<(f64, f64)> = after
                .buckets
                .iter()
                .map(|(k, c)| {
                    (
                        f64::from_bits(*k),
                        delta(before.bucket(*k).unwrap_or(0.0), *c),
                    )
                })
                .collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let count = buckets.last().map(|b| b.1).unwrap_or(0.0);
            let r = (count / secs).max(0.0);
            return Ok(RawResult {
                series: if count > 0.0 {
                    vec![Sample {
                        labels: BTreeMap::new(),
                        value: quantile(phi, &buckets),
                    }]
                } else {
                    vec![]
                },
                warnings: vec![],
                request_rate: Some(r),
            });
        }
    };
    Ok(RawResult {
        series: value
            .map(|v| {
                vec![Sample {
                    labels: BTreeMap::new(),
                    value: v,
                }]
            })
            .unwrap_or_default(),
        warnings: vec![],
        request_rate: Some(rate),
    })
}

/// `histogram_quantile` over cumulative buckets (sorted by bound, the last +Inf):
/// linear interpolation inside the bucket, +Inf when it falls in the +Inf bucket.
pub fn quantile(phi: f64, buckets: &[(f64, f64)]) -> f64 {
    if !(0.0..=1.0).contains(&phi) || buckets.is_empty() {
        return f64::NAN;
    }
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = phi * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let in_bucket = count - prev.1;
            if in_bucket <= 0.0 {
                return le;
            }
            return prev.0 + (le - prev.0) * (rank - prev.1) / in_bucket;
        }
        prev = (le, count);
    }
    f64::INFINITY
}

/// Reads an endpoint over HTTP.
#[derive(Clone, Debug)]
pub struct Scraper {
    client: &'static super::MetricsClient,
}

impl Default for Scraper {
    /// Through the process's one metrics client.
    fn default() -> Self {
        Scraper {
            client: super::metrics_client(),
        }
    }
}

impl Scraper {
    /// Reads a metrics page: one deadline over the whole exchange (connect,
    /// headers and body, so an endpoint that trickles its body cannot hold
    /// the driver) and a bounded size.
    pub async fn fetch(&self, url: &str) -> Result<String, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("bad scrape url {url:?}: {e}"))?;
        // The wait for a turn is outside the exchange's deadline, within
        // the measurement's.
        let _turn = super::host_turn(&uri).await;
        let exchange = async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let status = resp.status();
            let body = super::read_body(resp.into_body())
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            Ok::<_, String>((status, body))
        };
        let (status, body) = tokio::time::timeout(SCRAPE_DEADLINE, exchange)
            .await
            .map_err(|_| format!("{url}: no complete answer within {SCRAPE_DEADLINE:?}"))??;
        if !status.is_success() {
            return Err(format!("{url}: HTTP {status}"));
        }
        String::from_utf8(body.to_vec()).map_err(|_| format!("{url}: not UTF-8"))
    }
}

/// The longest a scrape may take, from connecting to the last byte.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint that sends its headers and then one byte every half
    /// second never finishes: the scrape gives up at its deadline.
    #[tokio::test]
    async fn a_trickling_endpoint_cannot_hold_a_scrape_past_its_deadline() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut sock, &mut buf).await;
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\n";
            sock.write_all(head.as_bytes()).await.unwrap();
            for _ in 0..100 {
                if sock.write_all(b"#").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let started = std::time::Instant::now();
        let err = Scraper::default().fetch(&url).await.unwrap_err();
        assert!(err.contains("no complete answer within 10s"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
    }
    /// Sixty scrapes of one endpoint at once (a thousand releases' gates
    /// falling due together, in small): the endpoint sees at most
    /// `PER_HOST` of them at a time, and every one is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_of_one_endpoint_take_turns() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n, m) = (now.clone(), most.clone());
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let (now, most) = (n.clone(), m.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    // One request a read: each is a small GET.
                    while sock.read(&mut buf).await.is_ok_and(|r| r > 0) {
                        let under_way = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(under_way, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        let body = "up 1\n";
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if sock.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let scraper = Scraper::default();
        let all = futures::future::join_all((0..60).map(|_| scraper.fetch(&url))).await;
        assert!(all.iter().all(|r| r.as_deref() == Ok("up 1\n")), "{all:?}");
        let most = most.load(Ordering::SeqCst);
        assert!(most <= super::super::PER_HOST, "{most} at once");
    }

    use crate::spec::Source;

    fn q(measure: &str) -> ScrapeQuery {
        Source::new(
            "q",
            &format!("measure: {measure}\nmetric: http_requests_total\nquantile: 0.99\n"),
        )
        .decode()
        .unwrap()
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    const A: &str = "# TYPE http_requests_total counter
http_requests_total{app=\"shop\",version=\"2\",code=\"200\"} 100
http_requests_total{app=\"shop\",version=\"2\",code=\"500\"} 0
http_requests_total{app=\"shop\",version=\"1\",code=\"500\"} 50
";
    const B: &str = "# TYPE http_requests_total counter
http_requests_total{app=\"shop\",version=\"2\",code=\"200\"} 190
http_requests_total{app=\"shop\",version=\"2\",code=\"500\"} 10
http_requests_total{app=\"shop\",version=\"1\",code=\"500\"} 60
";

    fn sel() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app".into(), "shop".into()),
            ("version".into(), "2".into()),
        ])
    }

    #[test]
    fn error_ratio_and_rate_from_two_reads() {
        let (a, b) = (parse(A, t(0)).unwrap(), parse(B, t(10)).unwrap());
        let qq = q("errorRatio");
        let r = compute(
            &qq,
            &read(&a, &qq, &sel(), t(0)),
            &read(&b, &qq, &sel(), t(10)),
        )
        .unwrap();
        assert_eq!(r.series[0].value, 0.1);
        assert_eq!(r.request_rate, Some(10.0));
        let qr = q("rate");
        let r = compute(
            &qr,
            &read(&a, &qr, &sel(), t(0)),
            &read(&b, &qr, &sel(), t(10)),
        )
        .unwrap();
        assert_eq!(r.series[0].value, 10.0);
    }

    #[test]
    fn a_counter_reset_is_not_a_negative_rate() {
        let reset = B.replace("190", "5").replace("} 10\n", "} 1\n");
        let (a, b) = (parse(A, t(0)).unwrap(), parse(&reset, t(10)).unwrap());
        let qq = q("errorRatio");
        let r = compute(
            &qq,
            &read(&a, &qq, &sel(), t(0)),
            &read(&b, &qq, &sel(), t(10)),
        )
        .unwrap();
        assert_eq!(r.request_rate, Some(0.6));
        assert!((r.series[0].value - 1.0 / 6.0).abs() < 1e-9);
    }

    #[test]
    fn lines_the_parser_drops_make_an_error() {
        for bad in [
            "http_requests_total{path=\"/a,b\"} 1\n",
            "http_requests_total{q=\"a=b\"} 1\n",
            "job:requests:rate5m 3\n",
            "http_requests_total{msg=\"say \\\"hi\\\"\"} 1\n",
        ] {
            let text = format!("{A}{bad}");
            match parse(&text, t(0)) {
                Err(e) => assert!(
                    e.contains("cannot be read") || e.contains("could be read"),
                    "{e}"
                ),
                Ok(s) => panic!("{bad:?} was read as {:?}", s.samples.last()),
            }
        }
    }

    #[test]
    fn quantiles_from_buckets() {
        let b = [
            (0.1, 50.0),
            (0.5, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(0.5, &b) - 0.1).abs() < 1e-9);
        assert!((quantile(0.9, &b) - 0.5).abs() < 1e-9);
        assert!((quantile(0.95, &b) - 0.75).abs() < 1e-9);
        let tail = [(0.1, 10.0), (f64::INFINITY, 100.0)];
        assert_eq!(
            quantile(0.99, &tail),
            0.1,
            "in the +Inf bucket: the highest finite bound"
        );
        assert!(quantile(0.5, &[]).is_nan());
        let text = "# TYPE d histogram\nd_bucket{app=\"shop\",version=\"2\",le=\"0.1\"} 50\nd_bucket{app=\"shop\",version=\"2\",le=\"0.5\"} 90\nd_bucket{app=\"shop\",version=\"2\",le=\"+Inf\"} 100\nd_sum{app=\"shop\",version=\"2\"} 20\nd_count{app=\"shop\",version=\"2\"} 100\n";
        let s = parse(text, t(10)).unwrap();
        let mut qq = q("quantile");
        qq.metric = "d".into();
        let r = compute(
            &qq,
            &Reading {
                at: Some(t(0)),
                ..Default::default()
            },
            &read(&s, &qq, &sel(), t(10)),
        )
        .unwrap();
        assert!((r.series[0].value - 0.5).abs() < 1e-9, "{r:?}");
    }
}
