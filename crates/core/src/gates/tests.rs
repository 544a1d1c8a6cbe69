//! Table tests of the verdict logic.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::verdict::{
    Class, Measurement, MetricVerdict, RawResult, Sample, Tally, measure, metric_verdict,
};
use super::{KEPT_MEASUREMENTS, MetricReport, gate_verdict};
use crate::engine::GateVerdict;
use crate::spec::Source;
use crate::spec::gates::MetricGate;

fn mk_gate(extra: &str) -> MetricGate {
    let text =
        format!("name: error-ratio\nprovider:\n  prometheus:\n    query: q\nmax: 0.05\n{extra}");
    Source::new("gate.yaml", &text).decode().unwrap()
}

fn t(i: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + i).unwrap()
}

fn series(values: &[f64]) -> RawResult {
    let series = values
        .iter()
        .enumerate()
        .map(|(i, v)| Sample {
            labels: BTreeMap::from([("pod".to_string(), format!("p{i}"))]),
            value: *v,
        })
        .collect();
    RawResult {
        series,
        ..Default::default()
    }
}

fn class(gate: &MetricGate, r: Result<RawResult, String>) -> Class {
    measure(gate, t(0), r, None).class
}

#[test]
fn measurement_classes() {
    let g = mk_gate("");
    let cases: Vec<(&str, MetricGate, Result<RawResult, String>, Class)> = vec![
        ("under the max", g.clone(), Ok(series(&[0.01])), Class::Pass),
        ("over the max", g.clone(), Ok(series(&[0.2])), Class::Fail),
        (
            "empty vector",
            g.clone(),
            Ok(series(&[])),
            Class::Inconclusive,
        ),
        (
            "empty set to fail",
            mk_gate("on:\n  empty: fail\n"),
            Ok(series(&[])),
            Class::Fail,
        ),
        (
            "NaN",
            g.clone(),
            Ok(series(&[f64::NAN])),
            Class::Inconclusive,
        ),
        (
            "+Inf from a quantile",
            g.clone(),
            Ok(series(&[f64::INFINITY])),
            Class::Fail,
        ),
        (
            "-Inf",
            g.clone(),
            Ok(series(&[f64::NEG_INFINITY])),
            Class::Fail,
        ),
        (
            "a 400 bad_data",
            g.clone(),
            Err("bad_data (400): parse error".into()),
            Class::Error,
        ),
        (
            "warnings downgrade a pass",
            g.clone(),
            Ok(RawResult {
                warnings: vec!["partial".into()],
                ..series(&[0.01])
            }),
            Class::Inconclusive,
        ),
        (
            "warnings never hide a failure",
            g.clone(),
            Ok(RawResult {
                warnings: vec!["partial".into()],
                ..series(&[0.5])
            }),
            Class::Fail,
        ),
        (
            "traffic below the guard",
            mk_gate("minRequestRate: 1\n"),
            Ok(RawResult {
                request_rate: Some(0.2),
                ..series(&[0.9])
            }),
            Class::NoData,
        ),
        (
            "a guard with no measured rate judges nothing",
            mk_gate("minRequestRate: 1\n"),
            Ok(series(&[0.0])),
            Class::Error,
        ),
        (
            "a NaN rate is below any guard",
            mk_gate("minRequestRate: 1\n"),
            Ok(RawResult {
                request_rate: Some(f64::NAN),
                ..series(&[0.0])
            }),
            Class::NoData,
        ),
        (
            "traffic above the guard",
            mk_gate("minRequestRate: 1\n"),
            Ok(RawResult {
                request_rate: Some(5.0),
                ..series(&[0.01])
            }),
            Class::Pass,
        ),
        (
            "unexpected series count",
            mk_gate("expectedSeries: 1\n"),
            Ok(series(&[0.01, 0.02])),
            Class::Error,
        ),
        (
            "any passes with one good series",
            mk_gate("reduce: any\n"),
            Ok(series(&[0.5, 0.01])),
            Class::Pass,
        ),
        (
            "max judges the worst",
            mk_gate("reduce: max\n"),
            Ok(series(&[0.01, 0.07])),
            Class::Fail,
        ),
        (
            "avg judges the mean",
            mk_gate("reduce: avg\n"),
            Ok(series(&[0.01, 0.07])),
            Class::Pass,
        ),
        (
            "min with a threshold below",
            mk_gate("reduce: min\nmin: 0.001\n"),
            Ok(series(&[0.0, 0.01])),
            Class::Fail,
        ),
        (
            "NaN in an average",
            mk_gate("reduce: avg\n"),
            Ok(series(&[0.01, f64::NAN])),
            Class::Inconclusive,
        ),
    ];
    for (what, gate, result, want) in cases {
        assert_eq!(class(&gate, result), want, "{what}");
    }
}

#[test]
fn series_order_never_matters() {
    let values = [0.01, 0.2, 0.03, f64::NAN, 0.04];
    for reduce in ["all", "any", "max", "min", "avg"] {
        let gate = mk_gate(&format!("reduce: {reduce}\n"));
        let mut seen = Vec::new();
        let mut v = values.to_vec();
        for rotation in 0..v.len() {
            v.rotate_left(1);
            let m = measure(&gate, t(0), Ok(series(&v)), None);
            seen.push((m.class, m.value.map(f64::to_bits)));
            let _ = rotation;
        }
        v.reverse();
        let m = measure(&gate, t(0), Ok(series(&v)), None);
        seen.push((m.class, m.value.map(f64::to_bits)));
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{reduce}: {seen:?}");
    }
}

#[test]
fn per_label_groups_are_judged_on_their_own() {
    let gate = mk_gate("groupBy: route\nreduce: avg\n");
    let series = |pairs: &[(&str, f64)]| RawResult {
        series: pairs
            .iter()
            .map(|(route, v)| Sample {
                labels: BTreeMap::from([("route".to_string(), route.to_string())]),
                value: *v,
            })
            .collect(),
        ..Default::default()
    };
    // Averaged together the two would pass; per route, /pay fails.
    let m = measure(
        &gate,
        t(0),
        Ok(series(&[
            ("/browse", 0.0),
            ("/browse", 0.0),
            ("/pay", 0.09),
        ])),
        None,
    );
    assert_eq!(m.class, Class::Fail);
    assert!(m.detail.contains("route=/pay"), "{}", m.detail);
    let m = measure(
        &gate,
        t(0),
        Ok(series(&[("/browse", 0.01), ("/pay", 0.02)])),
        None,
    );
    assert_eq!(m.class, Class::Pass);
    let two = mk_gate("groupBy: route\nexpectedSeries: 3\n");
    assert_eq!(
        measure(&two, t(0), Ok(series(&[("/a", 0.0), ("/b", 0.0)])), None).class,
        Class::Error
    );
}

#[test]
fn comparison_with_blue() {
    let gate = mk_gate("compareToBlue:\n  relative: 0.5\n  absolute: 0.001\n");
    let blue = |v| Some(Ok(series(&[v])));
    assert_eq!(
        measure(&gate, t(0), Ok(series(&[0.012])), blue(0.01)).class,
        Class::Pass
    );
    let worse = measure(&gate, t(0), Ok(series(&[0.03])), blue(0.01));
    assert_eq!(worse.class, Class::Fail);
    assert!(worse.detail.contains("blue 0.01"), "{}", worse.detail);
    // A blue that could not be measured never lets green pass.
    let unmeasured = measure(
        &gate,
        t(0),
        Ok(series(&[0.001])),
        Some(Err("timeout".into())),
    );
    assert_eq!(unmeasured.class, Class::Error, "{}", unmeasured.detail);
    // No blue at all (a first install) or no blue series: green is judged
    // alone, and the detail says so.
    let alone = measure(&gate, t(0), Ok(series(&[0.001])), None);
    assert_eq!(alone.class, Class::Pass);
    assert!(alone.detail.contains("no blue serves"), "{}", alone.detail);
    let empty = measure(&gate, t(0), Ok(series(&[0.001])), Some(Ok(series(&[]))));
    assert!(
        empty.detail.contains("blue returned no series"),
        "{}",
        empty.detail
    );
}

fn run(gate: &MetricGate, classes: &str) -> MetricVerdict {
    let ms: Vec<Measurement> = classes
        .chars()
        .enumerate()
        .map(|(i, c)| Measurement {
            at: t(i as i64),
            class: match c {
                'P' => Class::Pass,
                'F' => Class::Fail,
                'I' => Class::Inconclusive,
                'N' => Class::NoData,
                _ => Class::Error,
            },
            value: None,
            detail: format!("m{i}"),
        })
        .collect();
    metric_verdict(gate, &ms)
}

fn kind(v: &MetricVerdict) -> &'static str {
    match v {
        MetricVerdict::Pass => "pass",
        MetricVerdict::Fail(_) => "fail",
        MetricVerdict::Inconclusive(_) => "inconclusive",
        MetricVerdict::Pending => "pending",
    }
}

#[test]
fn flapping_sequences_against_each_limit() {
    let cases = [
        ("", "", "pending"),
        ("", "P", "pass"),
        ("", "PF", "fail"), // failureLimit 0
        ("failureLimit: 2\n", "PFPFP", "pass"),
        ("failureLimit: 2\n", "PFPFPF", "fail"),
        (
            "failureLimit: 9\nconsecutiveFailureLimit: 1\n",
            "FPFPFP",
            "pass",
        ),
        (
            "failureLimit: 9\nconsecutiveFailureLimit: 1\n",
            "FPFFP",
            "fail",
        ),
        (
            "failureLimit: 9\nwindow:\n  failures: 3\n  of: 5\n",
            "FPFPPPFP",
            "pass",
        ),
        (
            "failureLimit: 9\nwindow:\n  failures: 3\n  of: 5\n",
            "PPFPFPF",
            "pending", // 3 of the last 5: not more than 3, so not failed
        ),
        (
            "failureLimit: 9\nwindow:\n  failures: 3\n  of: 5\n",
            "PFFPFF",
            "fail", // 4 of the last 5
        ),
        (
            "failureLimit: 9\nwindow:\n  failures: 1\n  of: 3\n",
            "PFP",
            "pass",
        ),
        (
            "failureLimit: 9\nwindow:\n  failures: 1\n  of: 3\n",
            "PFF",
            "fail",
        ),
        (
            "failureLimit: 9\nwindow:\n  failures: 1\n  of: 3\n",
            "FPPF",
            "pending",
        ),
        (
            "failureLimit: 9\nwindow:\n  failures: 0\n  of: 3\n",
            "PPF",
            "fail",
        ),
        ("failureLimit: 9\ncritical: true\n", "PPF", "fail"),
        ("", "EEEE", "pending"), // 4 errors: at the default limit
        ("", "EEEEE", "fail"),   // 5: provider unreachable
        ("", "EEEEP", "pass"),   // recovered
        ("", "I", "inconclusive"),
        ("inconclusiveLimit: 2\n", "IIP", "pass"),
        ("inconclusiveLimit: 2\n", "IIIP", "inconclusive"),
        ("minMeasurements: 3\n", "PPN", "pending"), // NoData never counts
        ("minMeasurements: 3\n", "PNPNP", "pass"),
        ("failureLimit: 1\n", "PPF", "pending"), // last measurement failed
    ];
    for (extra, seq, want) in cases {
        let v = run(&mk_gate(extra), seq);
        assert_eq!(kind(&v), want, "{extra:?} {seq}: {v:?}");
    }
    let MetricVerdict::Fail(why) = run(&mk_gate(""), "EEEEE") else {
        panic!()
    };
    assert!(why.starts_with("provider unreachable"), "{why}");
}

fn report(name: &str, verdict: MetricVerdict, dry_run: bool) -> MetricReport {
    MetricReport {
        name: name.into(),
        cluster: "prod-a".into(),
        query: "sum(rate(x[1m]))".into(),
        threshold: "at most 0.05".into(),
        dry_run,
        verdict,
        measurements: vec![],
    }
}

#[test]
fn gate_roll_up_and_dry_run() {
    let fail = MetricVerdict::Fail("2 failed".into());
    let (v, msg) = gate_verdict(&[
        report("latency", MetricVerdict::Pass, false),
        report("errors", fail.clone(), true),
    ]);
    assert_eq!(
        v,
        GateVerdict::Pass,
        "a dry-run metric that fails never decides"
    );
    assert!(msg.contains("latency"));
    let (v, msg) = gate_verdict(&[
        report("latency", MetricVerdict::Pending, false),
        report("errors", fail, false),
    ]);
    assert_eq!(v, GateVerdict::Fail);
    assert!(
        msg.contains("errors on prod-a")
            && msg.contains("at most 0.05")
            && msg.contains("sum(rate"),
        "{msg}"
    );
    let (v, _) = gate_verdict(&[
        report("a", MetricVerdict::Inconclusive("x".into()), false),
        report("b", MetricVerdict::Pending, false),
    ]);
    assert_eq!(v, GateVerdict::Inconclusive);
    assert_eq!(gate_verdict(&[]).0, GateVerdict::Pass);
}

/// Every measurement of a run counts toward its limits, however long the
/// step (a two-hour bake measured every minute is 120 measurements), and a
/// run keeps only the latest few whole.
#[test]
fn a_failure_counts_however_many_measurements_follow_it() {
    let gate = mk_gate("failureLimit: 1\n");
    let mut tally = Tally::default();
    let m = |i: i64, class| Measurement {
        at: t(i),
        class,
        value: Some(i as f64),
        detail: format!("m{i}"),
    };
    tally.record(&gate, m(0, Class::Fail));
    for i in 1..300 {
        tally.record(&gate, m(i, Class::Pass));
    }
    assert_eq!(
        tally.verdict(&gate),
        MetricVerdict::Pass,
        "one failure, limit 1"
    );
    tally.record(&gate, m(300, Class::Fail));
    tally.record(&gate, m(301, Class::Pass));
    let MetricVerdict::Fail(why) = tally.verdict(&gate) else {
        panic!("the failure 300 measurements back still counts")
    };
    assert_eq!(why, "2 failed measurements (limit 1): m300");
    let recent: Vec<i64> = tally.recent().map(|m| m.value.unwrap() as i64).collect();
    assert_eq!(
        recent,
        (292..302).collect::<Vec<_>>(),
        "the latest ten, oldest first"
    );
}

/// The verdict read off the whole sequence of measurements, as the limits
/// are stated (the tally's counters must agree with it after every one).
fn verdict_of_all(gate: &MetricGate, ms: &[Measurement]) -> MetricVerdict {
    let judged: Vec<&Measurement> = ms.iter().filter(|m| m.class != Class::NoData).collect();
    let of = |c: Class| judged.iter().filter(|m| m.class == c).count() as u32;
    let last = |c: Class| {
        judged
            .iter()
            .rev()
            .find(|m| m.class == c)
            .map_or(String::new(), |m| m.detail.clone())
    };
    let runs_of_fails = judged
        .split(|m| m.class != Class::Fail)
        .map(|r| r.len() as u32)
        .max()
        .unwrap_or(0);
    let fails = of(Class::Fail);
    if gate.critical && fails > 0 {
        return MetricVerdict::Fail(format!("critical metric failed: {}", last(Class::Fail)));
    }
    if fails > gate.failure_limit {
        let why = format!(
            "{fails} failed measurements (limit {}): ",
            gate.failure_limit
        );
        return MetricVerdict::Fail(why + &last(Class::Fail));
    }
    if let Some(limit) = gate.consecutive_failure_limit
        && runs_of_fails > limit
    {
        let why = format!("{runs_of_fails} failures in a row (limit {limit}): ");
        return MetricVerdict::Fail(why + &last(Class::Fail));
    }
    if let Some(w) = gate.window {
        let start = judged.len().saturating_sub(w.of as usize);
        let failed = judged[start..]
            .iter()
            .filter(|m| m.class == Class::Fail)
            .count();
        if failed as u32 > w.failures {
            let why = format!("{failed} of the last {} measurements failed: ", w.of);
            return MetricVerdict::Fail(why + &last(Class::Fail));
        }
    }
    let erring = judged
        .iter()
        .rev()
        .take_while(|m| m.class == Class::Error)
        .count() as u32;
    if erring > gate.consecutive_error_limit {
        let why = format!(
            "provider unreachable or failing: {erring} errors in a row (limit {}): ",
            gate.consecutive_error_limit
        );
        return MetricVerdict::Fail(why + &last(Class::Error));
    }
    let inconclusive = of(Class::Inconclusive);
    if inconclusive > gate.inconclusive_limit {
        let why = format!("{inconclusive} inconclusive measurements: ");
        return MetricVerdict::Inconclusive(why + &last(Class::Inconclusive));
    }
    let passed_last = judged.last().is_some_and(|m| m.class == Class::Pass);
    if of(Class::Pass) >= gate.min_measurements.max(1) && passed_last {
        MetricVerdict::Pass
    } else {
        MetricVerdict::Pending
    }
}

/// Seeded random sequences of measurements against gates with each limit:
/// after every measurement, the tally's verdict (and reason) is the one
/// read off the whole sequence, and it keeps the latest ten whole (their
/// compact form gives back each one as it was measured).
#[test]
fn the_tally_decides_as_the_whole_sequence_would() {
    let gates = [
        "",
        "failureLimit: 3\n",
        "failureLimit: 20\nconsecutiveFailureLimit: 2\n",
        "failureLimit: 20\nwindow:\n  failures: 2\n  of: 7\n",
        "failureLimit: 20\nwindow:\n  failures: 0\n  of: 1\n",
        "failureLimit: 9\ncritical: true\n",
        "consecutiveErrorLimit: 2\nfailureLimit: 50\n",
        "inconclusiveLimit: 4\nfailureLimit: 50\n",
        "minMeasurements: 5\nfailureLimit: 50\n",
    ];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for extra in gates {
        let gate = mk_gate(extra);
        for _ in 0..200 {
            let (mut tally, mut ms) = (Tally::default(), Vec::new());
            let len = next() % 120;
            for i in 0..len {
                let class = match next() % 10 {
                    0..=4 => Class::Pass,
                    5 | 6 => Class::Fail,
                    7 => Class::Inconclusive,
                    8 => Class::NoData,
                    _ => Class::Error,
                };
                // Texts that repeat (kept once, shared) and ones that do not;
                // instants to the nanosecond; values and none.
                let m = Measurement {
                    at: t(i as i64)
                        .checked_add(jiff::SignedDuration::from_nanos((next() % 1000) as i64))
                        .unwrap(),
                    class,
                    value: (next() % 3 > 0).then_some(i as f64 / 3.0),
                    detail: match next() % 3 {
                        0 => format!("m{i}"),
                        n => format!("steady {n}"),
                    },
                };
                tally.record(&gate, m.clone());
                ms.push(m);
                assert_eq!(
                    tally.verdict(&gate),
                    verdict_of_all(&gate, &ms),
                    "{extra:?} {ms:?}"
                );
                let kept: Vec<Measurement> = tally.recent().collect();
                let start = ms.len().saturating_sub(KEPT_MEASUREMENTS);
                assert_eq!(kept, ms[start..]);
                assert_eq!(
                    tally.room_for_recent(),
                    ms.len().min(KEPT_MEASUREMENTS),
                    "no spare room kept"
                );
            }
        }
    }
}
