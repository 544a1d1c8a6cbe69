//! The timeline picture of one release, as a self-contained SVG: green's share
//! of traffic per cluster over fleet time, each gate metric's values against
//! its threshold (a failing measurement marked, the one that decided named),
//! the spans the release held (with why) or nothing was measured, and the
//! release's events as marked lines. Drawn from the Release's status alone,
//! so `status --report` and `demo --report` draw the same thing.
//!
//! Every label is placed where it overlaps no other: fixed text first, then
//! each movable label at the first of its candidate places that is free, by
//! a conservative estimate of its width; labels at one instant are joined
//! into one, and one that finds no place keeps its line and its tooltip.

use std::collections::BTreeMap;

use jiff::Timestamp;
use svg::Document;
use svg::node::element::path::Data;
use svg::node::element::{Circle, Group, Line, Path, Rectangle, Text, Title};

use crate::spec::ReleaseStatus;
use crate::spec::Span;
use crate::spec::status::{GateSeries, HoldReason, TransitionEvent};

/// Wide enough to read at 1,200 px.
pub const WIDTH: f64 = 1200.0;
const LEFT: f64 = 170.0;
const RIGHT: f64 = 30.0;
/// Rows of event labels above the plot.
const LANES: usize = 4;
const LANE: f64 = 12.0;
const TOP: f64 = 64.0 + LANES as f64 * LANE;
const TRAFFIC_HEIGHT: f64 = 170.0;
const GATE_HEIGHT: f64 = 90.0;
const GAP: f64 = 34.0;
const BOTTOM: f64 = 64.0;
/// The font every label uses; its widths are estimated below.
const FONT: &str = "DejaVu Sans, Verdana, sans-serif";

const CLUSTER_COLOURS: [&str; 6] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f",
];
const FREEZE: &str = "#3498db";
const HOLD: &str = "#f39c12";
const UNMEASURED: &str = "#7f8c8d";
const FAIL: &str = "#c0392b";

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

/// A text's box, `[x0, y0, x1, y1]`.
type Rect = [f64; 4];

/// Width of a character as a share of the font size, on the wide side of
/// DejaVu Sans (the face the picture asks for, and the fallback of most
/// systems) so that an estimate is never narrower than the drawn text.
fn char_width(c: char) -> f64 {
    match c {
        'i' | 'l' | 'j' | '\'' | '.' | ',' | ':' | ';' | '|' | '!' | ' ' | 'f' | 't' | 'r'
        | '(' | ')' | '[' | ']' => 0.42,
        'm' | 'w' | 'M' | 'W' | '@' | '%' | '…' => 1.0,
        c if c.is_ascii_uppercase() => 0.78,
        c if c.is_ascii() => 0.64,
        _ => 1.0,
    }
}

fn text_width(content: &str, size: f64) -> f64 {
    content.chars().map(char_width).sum::<f64>() * size
}

fn text_box(x: f64, y: f64, size: f64, anchor: &str, content: &str) -> Rect {
    let w = text_width(content, size);
    let x0 = match anchor {
        "end" => x - w,
        "middle" => x - w / 2.0,
        _ => x,
    };
    [x0, y - size, x0 + w, y + size * 0.3]
}

fn overlaps(a: &Rect, b: &Rect) -> bool {
    a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]
}

/// The boxes of the text placed so far.
#[derive(Default)]
struct Labels {
    taken: Vec<Rect>,
}

impl Labels {
    /// Text at a fixed place (titles, axes, legends).
    fn fixed(
        &mut self,
        x: f64,
        y: f64,
        size: f64,
        anchor: &str,
        content: impl Into<String>,
    ) -> Text {
        let content = content.into();
        self.taken.push(text_box(x, y, size, anchor, &content));
        text(x, y, size, anchor, content)
    }

    /// Text at the first of `places` (x, y, anchor) where it overlaps
    /// nothing placed and stays inside `within`, if any.
    fn place(
        &mut self,
        places: &[(f64, f64, &str)],
        within: Rect,
        size: f64,
        content: &str,
    ) -> Option<Text> {
        places.iter().find_map(|(x, y, anchor)| {
            let b = text_box(*x, *y, size, anchor, content);
            let inside =
                b[0] >= within[0] && b[1] >= within[1] && b[2] <= within[2] && b[3] <= within[3];
            if !inside || self.taken.iter().any(|t| overlaps(t, &b)) {
                return None;
            }
            self.taken.push(b);
            Some(text(*x, *y, size, anchor, content))
        })
    }
}

fn text(x: f64, y: f64, size: f64, anchor: &str, content: impl Into<String>) -> Text {
    Text::new(content)
        .set("x", x)
        .set("y", y)
        .set("font-size", size)
        .set("font-family", FONT)
        .set("text-anchor", anchor)
}

/// `content` cut to fit `width` at `size`, with an ellipsis when cut.
fn fit(content: &str, size: f64, width: f64) -> String {
    if text_width(content, size) <= width {
        return content.to_string();
    }
    let mut out = String::new();
    for c in content.chars() {
        if text_width(&out, size) + (char_width(c) + 1.0) * size > width {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
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

/// Whether `v` breaks `threshold` (as gates state it), with the words for it.
fn breaks(threshold: &str, v: f64) -> Option<String> {
    let limits = threshold_values(threshold);
    let t = threshold.trim();
    let (lo, hi) = if t.starts_with('≤') {
        (None, limits.first().copied())
    } else if t.starts_with('≥') {
        (limits.first().copied(), None)
    } else if t.starts_with("between") && limits.len() == 2 {
        (Some(limits[0]), Some(limits[1]))
    } else {
        return None;
    };
    match (lo, hi) {
        (_, Some(h)) if v > h => Some(format!("{} > {}", show(v), show(h))),
        (Some(l), _) if v < l => Some(format!("{} < {}", show(v), show(l))),
        _ => None,
    }
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
    times.extend(s.gate_series.iter().flat_map(|g| g.points().map(|p| p.at)));
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
    let mut labels = Labels::default();

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
    let title = fit(
        &format!("release {name} {version}: {outcome}"),
        17.0,
        WIDTH - LEFT - RIGHT,
    );
    doc = doc.add(labels.fixed(LEFT, 24.0, 17.0, "start", title));
    if let Some(m) = &s.message {
        let line = fit(m, 11.0, WIDTH - LEFT - RIGHT);
        doc = doc.add(
            labels
                .fixed(LEFT, 44.0, 11.0, "start", line)
                .set("fill", "#444")
                .add(Title::new(m.clone())),
        );
    }

    let spans = held_spans(s, &axis);
    let unmeasured = unmeasured_spans(s, &spans);
    doc = doc.add(shading(&spans, &unmeasured, &axis, plot_bottom));
    let (traffic, legend_end) = traffic(s, &axis, &mut labels);
    doc = doc.add(traffic);
    doc = doc.add(legend(legend_end, &mut labels));
    for (i, g) in s.gate_series.iter().enumerate() {
        let top = TOP + TRAFFIC_HEIGHT + GAP + i as f64 * (GATE_HEIGHT + GAP);
        doc = doc.add(gate_panel(g, s, &axis, top, &mut labels));
    }
    doc = doc.add(time_axis(&axis, plot_bottom, &mut labels));
    doc = doc.add(shading_labels(&spans, &unmeasured, &axis, &mut labels));
    doc = doc.add(markers(s, &axis, plot_bottom, &mut labels));
    doc.to_string()
}

/// The legend of the shading, under the clusters'.
fn legend(top: f64, labels: &mut Labels) -> Group {
    let mut g = Group::new().set("class", "legend");
    for (i, (fill, what)) in [
        (FREEZE, "frozen"),
        (HOLD, "holding"),
        (UNMEASURED, "nothing measured"),
    ]
    .into_iter()
    .enumerate()
    {
        let y = top + i as f64 * 15.0;
        g = g
            .add(
                Rectangle::new()
                    .set("x", 20.0)
                    .set("y", y - 9.0)
                    .set("width", 18.0)
                    .set("height", 10.0)
                    .set("fill", fill)
                    .set("fill-opacity", 0.25),
            )
            .add(labels.fixed(44.0, y, 11.0, "start", what));
    }
    g
}

/// Green's share per cluster: a step line each, 0–100 %. Returns where the
/// legend below the clusters' may start.
fn traffic(s: &ReleaseStatus, axis: &Axis, labels: &mut Labels) -> (Group, f64) {
    let y = |pct: f64| TOP + TRAFFIC_HEIGHT - pct / 100.0 * TRAFFIC_HEIGHT;
    let mut g = Group::new().set("class", "traffic");
    g = g.add(labels.fixed(LEFT - 40.0, TOP + 24.0, 12.0, "end", "traffic to green"));
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
            .add(labels.fixed(LEFT - 6.0, y(pct) + 4.0, 10.0, "end", format!("{pct}%")));
    }
    let mut by_cluster: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
    for w in &s.traffic {
        by_cluster
            .entry(w.cluster.as_str())
            .or_default()
            .push((w.at.as_second(), w.green.as_f64()));
    }
    let mut ly = TOP + 48.0;
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
            .add(labels.fixed(44.0, ly, 11.0, "start", fit(cluster, 11.0, LEFT - 90.0)));
        ly += 15.0;
    }
    (g, ly + 10.0)
}

/// One gate metric: its values and its threshold; a measurement that broke
/// the threshold is marked, and the last of them named with its value.
fn gate_panel(
    series: &GateSeries,
    s: &ReleaseStatus,
    axis: &Axis,
    top: f64,
    labels: &mut Labels,
) -> Group {
    let limits = threshold_values(&series.threshold);
    let (min, max) = series
        .points()
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
        .add(labels.fixed(
            LEFT - 10.0,
            top + 12.0,
            12.0,
            "end",
            fit(&series.name, 12.0, LEFT - 20.0),
        ))
        .add(labels.fixed(
            LEFT - 10.0,
            top + 26.0,
            10.0,
            "end",
            fit(&format!("on {}", series.cluster), 10.0, LEFT - 20.0),
        ))
        .add(
            labels
                .fixed(LEFT + 4.0, top + GATE_HEIGHT - 3.0, 9.0, "start", show(min))
                .set("fill", "#888"),
        )
        .add(
            labels
                .fixed(LEFT + 4.0, top + 10.0, 9.0, "start", show(min + span))
                .set("fill", "#888"),
        );
    // A long threshold (cluster health) goes one limit per line, as many as fit.
    for (i, part) in series.threshold.split(", ").enumerate().take(4) {
        g = g.add(
            labels
                .fixed(
                    LEFT - 10.0,
                    top + 40.0 + i as f64 * 12.0,
                    10.0,
                    "end",
                    fit(part, 10.0, LEFT - 20.0),
                )
                .set("fill", FAIL),
        );
    }
    for l in &limits {
        g = g.add(
            Line::new()
                .set("x1", LEFT)
                .set("x2", WIDTH - RIGHT)
                .set("y1", y(*l))
                .set("y2", y(*l))
                .set("stroke", FAIL)
                .set("stroke-dasharray", "6 4"),
        );
    }
    let pts: Vec<(f64, f64)> = series
        .points()
        .map(|p| (axis.x(p.at), y(p.value)))
        .collect();
    if pts.len() == 1 {
        g = g.add(
            Circle::new()
                .set("cx", pts[0].0)
                .set("cy", pts[0].1)
                .set("r", 2.5)
                .set("fill", "#333"),
        );
    } else if !pts.is_empty() {
        g = g.add(polyline(&pts, "#333", 1.5));
    }
    // Each measurement past the threshold, ringed; the last one before the
    // rollback (or the last of all) named.
    let rollback = s
        .history
        .iter()
        .find(|t| t.event == TransitionEvent::AbortStarted)
        .map(|t| t.at.as_second());
    let mut named: Option<(f64, f64, String)> = None;
    for (p, (x, py)) in series.points().zip(&pts) {
        let Some(words) = breaks(&series.threshold, p.value) else {
            continue;
        };
        g = g.add(
            Circle::new()
                .set("cx", *x)
                .set("cy", *py)
                .set("r", 4.0)
                .set("fill", "none")
                .set("stroke", FAIL)
                .set("stroke-width", 2)
                .add(Title::new(format!(
                    "{} on {} at +{}: {words}",
                    series.name,
                    series.cluster,
                    since(p.at - axis.start)
                ))),
        );
        if rollback.is_none_or(|r| p.at <= r) {
            named = Some((*x, *py, format!("{words} at +{}", since(p.at - axis.start))));
        }
    }
    if let Some((x, py, words)) = named {
        let within = [LEFT, top, WIDTH - RIGHT, top + GATE_HEIGHT];
        let (up, down) = (
            (py - 6.0).max(top + 12.0),
            (py + 15.0).min(top + GATE_HEIGHT - 2.0),
        );
        let places = [
            (x - 7.0, up, "end"),
            (x + 7.0, up, "start"),
            (x - 7.0, down, "end"),
            (x + 7.0, down, "start"),
            (x - 7.0, top + GATE_HEIGHT / 2.0, "end"),
            (x + 7.0, top + GATE_HEIGHT / 2.0, "start"),
        ];
        if let Some(t) = labels.place(&places, within, 10.0, &words) {
            g = g.add(t.set("fill", FAIL).set("font-weight", "bold"));
        }
    }
    g
}

/// A span the release held: from, to, why, and whether a freeze held it.
struct Held {
    from: i64,
    to: i64,
    why: String,
    freeze: bool,
}

/// The spans the release held, from its history.
fn held_spans(s: &ReleaseStatus, axis: &Axis) -> Vec<Held> {
    let is_freeze = |m: &str| {
        let m = m.to_lowercase();
        m.contains("freeze") || m.contains("frozen")
    };
    let mut open: Option<(Timestamp, String)> = None;
    let mut spans = Vec::new();
    for t in &s.history {
        match t.event {
            TransitionEvent::HoldStarted => open = Some((t.at, t.message.clone())),
            TransitionEvent::HoldCleared => {
                if let Some((from, why)) = open.take() {
                    spans.push(Held {
                        from: from.as_second(),
                        to: t.at.as_second(),
                        freeze: is_freeze(&why),
                        why,
                    });
                }
            }
            _ => {}
        }
    }
    if let Some((from, why)) = open {
        let still = s.holds.iter().any(|h| h.reason == HoldReason::Freeze);
        spans.push(Held {
            from: from.as_second(),
            to: axis.end,
            freeze: still || is_freeze(&why),
            why,
        });
    }
    spans
}

/// Spans while green took traffic but no gate measured anything, outside
/// holds: no driver was running (it died, or lost its lease), or none
/// could measure. A gap is longer than four of the usual spacings and than
/// three minutes.
fn unmeasured_spans(s: &ReleaseStatus, held: &[Held]) -> Vec<(i64, i64)> {
    let mut at: Vec<i64> = s
        .gate_series
        .iter()
        .flat_map(|g| g.points().map(|p| p.at))
        .collect();
    at.sort_unstable();
    at.dedup();
    if at.len() < 3 {
        return Vec::new();
    }
    let mut spacing: Vec<i64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    spacing.sort_unstable();
    let usual = spacing[spacing.len() / 2].max(1);
    let longest = (usual * 4).max(180);
    at.windows(2)
        .map(|w| (w[0], w[1]))
        .filter(|(a, b)| b - a > longest)
        .filter(|(a, b)| !held.iter().any(|h| h.from < *b && *a < h.to))
        .collect()
}

/// The shaded spans: holds (blue for a freeze, orange otherwise) and
/// spans nothing was measured (grey).
fn shading(held: &[Held], unmeasured: &[(i64, i64)], axis: &Axis, bottom: f64) -> Group {
    let mut g = Group::new().set("class", "holds");
    let rect = |from: i64, to: i64, fill: &str, opacity: f64, why: String| {
        let (x1, x2) = (axis.x(from), axis.x(to));
        Rectangle::new()
            .set("x", x1)
            .set("y", TOP)
            .set("width", (x2 - x1).max(1.5))
            .set("height", bottom - TOP)
            .set("fill", fill)
            .set("fill-opacity", opacity)
            .add(Title::new(why))
    };
    for h in held {
        let fill = if h.freeze { FREEZE } else { HOLD };
        g = g.add(rect(h.from, h.to, fill, 0.18, h.why.clone()));
    }
    for (a, b) in unmeasured {
        let why = format!(
            "nothing was measured for {}: no driver ran, or none could measure",
            since(b - a)
        );
        g = g.add(rect(*a, *b, UNMEASURED, 0.22, why));
    }
    g
}

/// Each shaded span's reason, in words, at the top of the traffic panel
/// where it fits.
fn shading_labels(
    held: &[Held],
    unmeasured: &[(i64, i64)],
    axis: &Axis,
    labels: &mut Labels,
) -> Group {
    let mut g = Group::new().set("class", "reasons");
    let within = [LEFT, TOP, WIDTH - RIGHT, TOP + TRAFFIC_HEIGHT];
    let mut spans: Vec<(i64, i64, String, &str)> = held
        .iter()
        .map(|h| {
            // The first clause of the hold's own words: who froze and why,
            // or what the release waited for.
            let first = h.why.split([';', '(']).next().unwrap_or_default().trim();
            let why = if h.freeze {
                format!("frozen: {first}")
            } else {
                format!("held: {first}")
            };
            (h.from, h.to, why, if h.freeze { FREEZE } else { HOLD })
        })
        .collect();
    spans.extend(unmeasured.iter().map(|(a, b)| {
        (
            *a,
            *b,
            format!("nothing measured {}", since(b - a)),
            UNMEASURED,
        )
    }));
    for (from, to, why, colour) in spans {
        let (x1, x2) = (axis.x(from), axis.x(to));
        let width = (x2 - x1 - 6.0).max(320.0);
        let why = fit(&why, 10.0, width);
        let places: Vec<(f64, f64, &str)> = (0..4)
            .map(|k| (x1 + 3.0, TOP + 14.0 + k as f64 * 13.0, "start"))
            .chain((0..4).map(|k| (x2 - 3.0, TOP + 14.0 + k as f64 * 13.0, "end")))
            .collect();
        if let Some(t) = labels.place(&places, within, 10.0, &why) {
            g = g.add(t.set("fill", colour));
        }
    }
    g
}

/// Vertical lines at the release's events; their labels in rows above the
/// plot, those of one instant joined into one.
fn markers(s: &ReleaseStatus, axis: &Axis, bottom: f64, labels: &mut Labels) -> Group {
    let mut g = Group::new().set("class", "events");
    // (x, label, colour) of the events worth a label, in time order.
    let mut named: Vec<(f64, String, &str)> = Vec::new();
    for t in &s.history {
        let (colour, width, label) = match t.event {
            TransitionEvent::StepStarted => {
                let step = s.plan.get(t.step as usize);
                let label = step
                    .filter(|p| {
                        use crate::spec::status::StepKind::*;
                        matches!(p.kind, Canary | Soak | Cutover | Bake | Verify)
                    })
                    .map(|p| {
                        let kind = format!("{:?}", p.kind).to_lowercase();
                        match &p.cluster {
                            Some(c) => format!("{kind} {c}"),
                            None => kind,
                        }
                    });
                ("#bbb", 0.8, label)
            }
            TransitionEvent::HoldStarted => (HOLD, 1.2, Some("hold".to_string())),
            TransitionEvent::FreezeOverridden => ("#8e44ad", 1.5, Some("freeze overridden".into())),
            TransitionEvent::Promoted => ("#8e44ad", 1.2, Some("promoted".into())),
            TransitionEvent::AbortStarted => (FAIL, 2.0, Some("rollback".into())),
            TransitionEvent::TrafficRestored => (FAIL, 1.2, Some("all on blue".into())),
            TransitionEvent::Completed => ("#27ae60", 2.0, Some("completed".into())),
            TransitionEvent::Aborted | TransitionEvent::Failed => {
                (FAIL, 2.0, Some(format!("{:?}", t.event).to_lowercase()))
            }
            TransitionEvent::Superseded => ("#8e44ad", 1.5, Some("superseded".into())),
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
            match named.last_mut() {
                // Events of one instant (a rollback's start, traffic back on
                // blue, its end) make one label.
                Some((lx, text, c)) if (x - *lx).abs() < 4.0 => {
                    if !text.split(" · ").any(|p| p == label) {
                        text.push_str(" · ");
                        text.push_str(&label);
                    }
                    *c = colour;
                }
                _ => named.push((x, label, colour)),
            }
        }
    }
    let within = [0.0, 52.0, WIDTH, TOP];
    for (x, label, colour) in named {
        let lanes = (0..LANES).map(|lane| TOP - 3.0 - lane as f64 * LANE);
        let places: Vec<(f64, f64, &str)> = lanes
            .clone()
            .map(|y| (x + 2.0, y, "start"))
            .chain(lanes.map(|y| (x - 2.0, y, "end")))
            .collect();
        if let Some(t) = labels.place(&places, within, 9.0, &label) {
            g = g.add(t.set("fill", colour));
        }
    }
    g
}

/// Fleet time since the start along the bottom.
fn time_axis(axis: &Axis, bottom: f64, labels: &mut Labels) -> Group {
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
    let within = [0.0, bottom, WIDTH, bottom + 30.0];
    let mut t = 0;
    while t <= span {
        let x = axis.x(axis.start + t);
        g = g.add(
            Line::new()
                .set("x1", x)
                .set("x2", x)
                .set("y1", bottom)
                .set("y2", bottom + 5.0)
                .set("stroke", "#333"),
        );
        let tick = format!("+{}", since(t));
        if let Some(label) = labels.place(&[(x, bottom + 18.0, "middle")], within, 10.0, &tick) {
            g = g.add(label);
        }
        t += every;
    }
    g.add(labels.fixed(
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
            gate_series: vec![GateSeries::of(
                "error-ratio".into(),
                "prod-a".into(),
                "≤ 0.02".into(),
                [
                    crate::spec::status::Point {
                        at: at(11).as_second(),
                        value: 0.001,
                    },
                    crate::spec::status::Point {
                        at: at(20).as_second(),
                        value: 0.2,
                    },
                ],
            )],
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
