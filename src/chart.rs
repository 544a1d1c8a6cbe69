//! The timeline picture of one release, as a self-contained SVG: green's share
//! of traffic per cluster over fleet time, each gate metric's values against
//! its threshold, and the release's events (steps, holds, freezes, rollback,
//! the end) as marked lines. Drawn from the Release's status alone, so
//! `status --report` and `demo --report` draw the same thing.

use std::collections::BTreeMap;

use jiff::Timestamp;
use svg::Document;
use svg::node::element::path::Data;
use svg::node::element::{Group, Line, Path, Rectangle, Text, Title};

use crate::spec::ReleaseStatus;
use crate::spec::Span;
use crate::spec::status::{HoldReason, TransitionEvent};

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 170.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 84.0;
const TRAFFIC_HEIGHT: f64 = 170.0;
const GATE_HEIGHT: f64 = 90.0;
const GAP: f64 = 34.0;
const BOTTOM: f64 = 64.0;

const CLUSTER_COLOURS: [&str; 6] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f",
];

/// The x position of fleet time `t`.
struct Axis {
    start: i64,
    end: i64,
}

impl Axis {
    fn x(&self, t: i64) -> f64 {
        let span = (self.end - self.start).max(1) as f64;
        LEFT + (t - self.start).clamp(0, self.end - self.start) as f64 / span
            * (WIDTH - LEFT - RIGHT)
    }
}

fn text(x: f64, y: f64, size: f64, anchor: &str, content: impl Into<String>) -> Text {
    Text::new(content)
        .set("x", x)
        .set("y", y)
        .set("font-size", size)
        .set("font-family", "sans-serif")
        .set("text-anchor", anchor)
}

fn polyline(points: &[(f64, f64)], colour: &str, width: f64) -> Path {
    let mut d = Data::new();
    for (i, p) in points.iter().enumerate() {
        d = if i == 0 { d.move_to(*p) } else { d.line_to(*p) };
    }
    Path::new()
        .set("d", d)
        .set("fill", "none")
        .set("stroke", colour)
        .set("stroke-width", width)
}

/// Numbers a threshold states (`≤ 0.02`, `between 1 and 2`); none for a
/// cluster-health gate, whose limits are counts of different things.
fn threshold_values(threshold: &str) -> Vec<f64> {
    if threshold.contains(',') {
        return Vec::new();
    }
    threshold
        .split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok())
        .collect()
}

fn since(secs: i64) -> Span {
    Span::from_secs(secs.max(0) as u64)
}

/// A short label for a value axis.
fn show(v: f64) -> String {
    crate::gates::verdict::show(v)
}

/// The SVG of release `name`'s timeline.
pub fn timeline_svg(name: &str, s: &ReleaseStatus) -> String {
    let mut times: Vec<i64> = s.history.iter().map(|t| t.at.as_second()).collect();
    times.extend(s.traffic.iter().map(|w| w.at.as_second()));
    times.extend(
        s.gate_series
            .iter()
            .flat_map(|g| g.points.iter().map(|p| p.at)),
    );
    let start = s
        .started_at
        .map(|t| t.as_second())
        .or(times.iter().min().copied())
        .unwrap_or(0);
    let end = s
        .finished_at
        .map(|t| t.as_second())
        .or(times.iter().max().copied())
        .unwrap_or(start)
        .max(start + 60);
    let axis = Axis { start, end };
    let panels = s.gate_series.len() as f64;
    let height = TOP + TRAFFIC_HEIGHT + panels * (GATE_HEIGHT + GAP) + BOTTOM + 20.0;
    let plot_bottom = TOP + TRAFFIC_HEIGHT + panels * (GATE_HEIGHT + GAP);

    let mut doc = Document::new()
        .set("xmlns", "http://www.w3.org/2000/svg")
        .set("width", WIDTH)
        .set("height", height)
        .set("viewBox", (0, 0, WIDTH, height))
        .add(
            Rectangle::new()
                .set("width", "100%")
                .set("height", "100%")
                .set("fill", "white"),
        );
    let version = s.version.clone().unwrap_or_default();
    let outcome = format!("{:?}", s.phase);
    doc = doc.add(text(
        LEFT,
        24.0,
        17.0,
        "start",
        format!("release {name} {version}: {outcome}"),
    ));
    if let Some(m) = &s.message {
        let mut line: String = m.chars().take(150).collect();
        if line.len() < m.len() {
            line.push('…');
        }
        doc = doc.add(
            text(LEFT, 44.0, 11.0, "start", line)
                .set("fill", "#444")
                .add(Title::new(m.clone())),
        );
    }

    for (i, (fill, what)) in [("#3498db", "frozen"), ("#f39c12", "holding")]
        .into_iter()
        .enumerate()
    {
        let y = TOP + 90.0 + i as f64 * 15.0;
        doc = doc
            .add(
                Rectangle::new()
                    .set("x", 20.0)
                    .set("y", y - 9.0)
                    .set("width", 18.0)
                    .set("height", 10.0)
                    .set("fill", fill)
                    .set("fill-opacity", 0.25),
            )
            .add(text(44.0, y, 11.0, "start", what));
    }
    doc = doc.add(holds(s, &axis, plot_bottom));
    doc = doc.add(traffic(s, &axis));
    for (i, g) in s.gate_series.iter().enumerate() {
        let top = TOP + TRAFFIC_HEIGHT + GAP + i as f64 * (GATE_HEIGHT + GAP);
        doc = doc.add(gate_panel(g, &axis, top));
    }
    doc = doc.add(markers(s, &axis, plot_bottom));
    doc = doc.add(time_axis(&axis, plot_bottom));
    doc.to_string()
}

/// Green's share per cluster: a step line each, 0–100 %.
fn traffic(s: &ReleaseStatus, axis: &Axis) -> Group {
    let y = |pct: f64| TOP + TRAFFIC_HEIGHT - pct / 100.0 * TRAFFIC_HEIGHT;
    let mut g = Group::new().set("class", "traffic");
    g = g.add(text(
        LEFT - 10.0,
        TOP + 12.0,
        12.0,
        "end",
        "traffic to green",
    ));
    for pct in [0.0, 50.0, 100.0] {
        g = g
            .add(
                Line::new()
                    .set("x1", LEFT)
                    .set("x2", WIDTH - RIGHT)
                    .set("y1", y(pct))
                    .set("y2", y(pct))
                    .set("stroke", "#ddd"),
            )
            .add(text(
                LEFT - 6.0,
                y(pct) + 4.0,
                10.0,
                "end",
                format!("{pct}%"),
            ));
    }
    let mut by_cluster: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
    for w in &s.traffic {
        by_cluster
            .entry(w.cluster.as_str())
            .or_default()
            .push((w.at.as_second(), w.green.as_f64()));
    }
    for (i, (cluster, changes)) in by_cluster.iter().enumerate() {
        let colour = CLUSTER_COLOURS[i % CLUSTER_COLOURS.len()];
        let mut pts = Vec::new();
        let mut last = 0.0;
        for (t, pct) in changes {
            pts.push((axis.x(*t), y(last)));
            pts.push((axis.x(*t), y(*pct)));
            last = *pct;
        }
        pts.push((axis.x(axis.end), y(last)));
        g = g.add(polyline(&pts, colour, 2.0).add(Title::new(format!("{cluster}: green {last}%"))));
        let ly = TOP + 30.0 + i as f64 * 15.0;
        g = g
            .add(
                Line::new()
                    .set("x1", 20.0)
                    .set("x2", 38.0)
                    .set("y1", ly - 4.0)
                    .set("y2", ly - 4.0)
                    .set("stroke", colour)
                    .set("stroke-width", 3),
            )
            .add(text(44.0, ly, 11.0, "start", *cluster));
    }
    g
}

/// One gate metric: its values and its threshold.
fn gate_panel(series: &crate::spec::status::GateSeries, axis: &Axis, top: f64) -> Group {
    let limits = threshold_values(&series.threshold);
    let (min, max) = series
        .points
        .iter()
        .map(|p| p.value)
        .chain(limits.iter().copied())
        .fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let span = if max - min > 0.0 {
        (max - min) * 1.15
    } else {
        1.0
    };
    let y = |v: f64| top + GATE_HEIGHT - (v - min) / span * GATE_HEIGHT;
    let mut g = Group::new().set("class", "gate");
    g = g
        .add(
            Rectangle::new()
                .set("x", LEFT)
                .set("y", top)
                .set("width", WIDTH - LEFT - RIGHT)
                .set("height", GATE_HEIGHT)
                .set("fill", "none")
                .set("stroke", "#ddd"),
        )
        .add(text(
            LEFT - 10.0,
            top + 12.0,
            12.0,
            "end",
            series.name.clone(),
        ))
        .add(text(
            LEFT - 10.0,
            top + 26.0,
            10.0,
            "end",
            format!("on {}", series.cluster),
        ))
        .add(text(LEFT + 4.0, top + GATE_HEIGHT - 3.0, 9.0, "start", show(min)).set("fill", "#888"))
        .add(text(LEFT + 4.0, top + 10.0, 9.0, "start", show(min + span)).set("fill", "#888"));
    // A long threshold (cluster health) goes one limit per line.
    for (i, part) in series.threshold.split(", ").enumerate() {
        g = g.add(
            text(
                LEFT - 10.0,
                top + 40.0 + i as f64 * 12.0,
                10.0,
                "end",
                part.to_string(),
            )
            .set("fill", "#c0392b"),
        );
    }
    for l in limits {
        g = g.add(
            Line::new()
                .set("x1", LEFT)
                .set("x2", WIDTH - RIGHT)
                .set("y1", y(l))
                .set("y2", y(l))
                .set("stroke", "#c0392b")
                .set("stroke-dasharray", "6 4"),
        );
    }
    let pts: Vec<(f64, f64)> = series
        .points
        .iter()
        .map(|p| (axis.x(p.at), y(p.value)))
        .collect();
    if pts.len() == 1 {
        g = g.add(
            svg::node::element::Circle::new()
                .set("cx", pts[0].0)
                .set("cy", pts[0].1)
                .set("r", 2.5)
                .set("fill", "#333"),
        );
    } else if !pts.is_empty() {
        g = g.add(polyline(&pts, "#333", 1.5));
    }
    g
}

/// Shaded spans while the release held, blue for a freeze, orange otherwise.
fn holds(s: &ReleaseStatus, axis: &Axis, bottom: f64) -> Group {
    let mut g = Group::new().set("class", "holds");
    let mut open: Option<(Timestamp, String, bool)> = None;
    let mut spans = Vec::new();
    for t in &s.history {
        match t.event {
            TransitionEvent::HoldStarted => {
                let freeze = t.message.to_lowercase().contains("freeze")
                    || t.message.to_lowercase().contains("frozen");
                open = Some((t.at, t.message.clone(), freeze));
            }
            TransitionEvent::HoldCleared => {
                if let Some((from, msg, freeze)) = open.take() {
                    spans.push((from.as_second(), t.at.as_second(), msg, freeze));
                }
            }
            _ => {}
        }
    }
    if let Some((from, msg, freeze)) = open {
        let still = s.holds.iter().any(|h| h.reason == HoldReason::Freeze);
        spans.push((from.as_second(), axis.end, msg, freeze || still));
    }
    for (from, to, msg, freeze) in spans {
        let (x1, x2) = (axis.x(from), axis.x(to));
        g = g.add(
            Rectangle::new()
                .set("x", x1)
                .set("y", TOP)
                .set("width", (x2 - x1).max(1.5))
                .set("height", bottom - TOP)
                .set("fill", if freeze { "#3498db" } else { "#f39c12" })
                .set("fill-opacity", 0.18)
                .add(Title::new(msg)),
        );
    }
    g
}

/// Vertical lines at the release's events, with a label for the ones that matter.
fn markers(s: &ReleaseStatus, axis: &Axis, bottom: f64) -> Group {
    let mut g = Group::new().set("class", "events");
    let mut labelled = 0;
    for t in &s.history {
        let (colour, width, label) = match t.event {
            TransitionEvent::StepStarted => {
                let kind = s
                    .plan
                    .get(t.step as usize)
                    .map(|p| format!("{:?}", p.kind))
                    .unwrap_or_default();
                let label = matches!(
                    kind.as_str(),
                    "Canary" | "Soak" | "Cutover" | "Bake" | "Verify"
                )
                .then(|| {
                    let cluster = s
                        .plan
                        .get(t.step as usize)
                        .and_then(|p| p.cluster.clone())
                        .unwrap_or_default();
                    format!("{} {cluster}", kind.to_lowercase())
                });
                ("#bbb", 0.8, label)
            }
            TransitionEvent::HoldStarted => ("#f39c12", 1.2, Some("hold".to_string())),
            TransitionEvent::FreezeOverridden => ("#8e44ad", 1.5, Some("freeze overridden".into())),
            TransitionEvent::Promoted => ("#8e44ad", 1.2, Some("promoted".into())),
            TransitionEvent::AbortStarted => ("#c0392b", 2.0, Some("rollback".into())),
            TransitionEvent::TrafficRestored => ("#c0392b", 1.2, Some("all on blue".into())),
            TransitionEvent::Completed => ("#27ae60", 2.0, Some("completed".into())),
            TransitionEvent::Aborted | TransitionEvent::Failed => (
                "#c0392b",
                2.0,
                Some(format!("{:?}", t.event).to_lowercase()),
            ),
            _ => continue,
        };
        let x = axis.x(t.at.as_second());
        g = g.add(
            Line::new()
                .set("x1", x)
                .set("x2", x)
                .set("y1", TOP)
                .set("y2", bottom)
                .set("stroke", colour)
                .set("stroke-width", width)
                .add(Title::new(format!(
                    "+{} {:?}: {}",
                    since((t.at.as_second() - axis.start).max(0)),
                    t.event,
                    t.message
                ))),
        );
        if let Some(label) = label {
            let y = TOP - 4.0 - (labelled % 2) as f64 * 10.0;
            labelled += 1;
            let near_end = x > WIDTH - RIGHT - 120.0;
            let (lx, anchor) = if near_end {
                (x - 2.0, "end")
            } else {
                (x + 2.0, "start")
            };
            g = g.add(text(lx, y, 9.0, anchor, label).set("fill", colour));
        }
    }
    g
}

/// Fleet time since the start along the bottom.
fn time_axis(axis: &Axis, bottom: f64) -> Group {
    let mut g = Group::new().set("class", "axis");
    g = g.add(
        Line::new()
            .set("x1", LEFT)
            .set("x2", WIDTH - RIGHT)
            .set("y1", bottom)
            .set("y2", bottom)
            .set("stroke", "#333"),
    );
    let span = (axis.end - axis.start).max(1);
    let steps = [60, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400];
    let every = steps
        .iter()
        .copied()
        .find(|s| span / s <= 10)
        .unwrap_or(86400);
    let mut t = 0;
    while t <= span {
        let x = axis.x(axis.start + t);
        g = g
            .add(
                Line::new()
                    .set("x1", x)
                    .set("x2", x)
                    .set("y1", bottom)
                    .set("y2", bottom + 5.0)
                    .set("stroke", "#333"),
            )
            .add(text(
                x,
                bottom + 18.0,
                10.0,
                "middle",
                format!("+{}", since(t)),
            ));
        t += every;
    }
    g.add(text(
        (LEFT + WIDTH - RIGHT) / 2.0,
        bottom + 38.0,
        11.0,
        "middle",
        "fleet time since the release started",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Percent;
    use crate::spec::status::{GateSeries, Phase, Transition, WeightChange};

    #[test]
    fn draws_traffic_gates_and_events() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |m: i64| t0.checked_add(jiff::SignedDuration::from_mins(m)).unwrap();
        let s = ReleaseStatus {
            phase: Phase::Aborted,
            version: Some("2.14.0".into()),
            started_at: Some(t0),
            finished_at: Some(at(30)),
            traffic: vec![
                WeightChange {
                    at: at(10),
                    cluster: "prod-a".into(),
                    green: Percent::from_whole(4),
                },
                WeightChange {
                    at: at(21),
                    cluster: "prod-a".into(),
                    green: Percent::ZERO,
                },
            ],
            gate_series: vec![GateSeries {
                name: "error-ratio".into(),
                cluster: "prod-a".into(),
                threshold: "≤ 0.02".into(),
                points: vec![
                    crate::spec::status::Point {
                        at: at(11).as_second(),
                        value: 0.001,
                    },
                    crate::spec::status::Point {
                        at: at(20).as_second(),
                        value: 0.2,
                    },
                ],
            }],
            history: vec![Transition {
                at: at(20),
                step: 4,
                event: TransitionEvent::AbortStarted,
                message: "error-ratio on prod-a: 0.2 > 0.02 <&>".into(),
            }],
            ..Default::default()
        };
        let svg = timeline_svg("checkout", &s);
        assert!(svg.starts_with("<svg"), "{svg}");
        for needle in [
            "release checkout 2.14.0: Aborted",
            "prod-a",
            "error-ratio",
            "≤ 0.02",
            "rollback",
            "stroke-dasharray",
            "&lt;&amp;&gt;",
        ] {
            assert!(svg.contains(needle), "{needle} in {svg}");
        }
        assert_eq!(threshold_values("between 1 and 2.5"), vec![1.0, 2.5]);
        assert!(threshold_values("restarts ≤ 3, unschedulable ≤ 0").is_empty());
    }
}
