//! How `run` and `status --watch` report: one plain line per event (in a
//! terminal and in a pipeline alike), or JSON lines with `-o json`.

use std::io::Write;

use serde_json::json;

use super::Output;
use crate::clock::SharedClock;
use crate::driver::{Outcome, Progress, weights_line};
use crate::gates::MetricVerdict;
use crate::spec::{Release, ReleaseStatus};

pub struct Reporter {
    output: Output,
    tty: bool,
    clock: SharedClock,
    /// In a terminal: a live line under the event lines.
    live: Option<indicatif::ProgressBar>,
    last: Option<ReleaseStatus>,
}

impl Reporter {
    pub fn new(output: Output, tty: bool, clock: SharedClock) -> Reporter {
        let live = (tty && output == Output::Text).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {wide_msg}")
                    .expect("a valid template"),
            );
            bar
        });
        Reporter {
            output,
            tty,
            clock,
            live,
            last: None,
        }
    }

    fn line(&self, text: &str) {
        if let Some(bar) = &self.live {
            bar.println(text);
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    /// Refreshes the live line: stage, green per cluster, time left, last gate values.
    pub fn tick(&mut self) {
        let (Some(bar), Some(s)) = (&self.live, &self.last) else {
            return;
        };
        bar.set_message(live_line(s, self.clock.now()));
        bar.tick();
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.live.take() {
            bar.finish_and_clear();
        }
    }

    fn json(&self, v: serde_json::Value) {
        self.line(&v.to_string());
    }

    fn stamp(&self) -> String {
        self.clock.now().strftime("%H:%M:%S").to_string()
    }

    pub fn submitted(&mut self, r: &Release, by: &str) {
        let name = r.metadata.name.clone().unwrap_or_default();
        // A status that belongs to another version is the previous revision's:
        // this version has not started yet.
        let phase = r
            .status
            .as_ref()
            .filter(|s| s.version.as_deref().is_none_or(|v| v == r.spec.version))
            .map(|s| s.phase.to_string())
            .unwrap_or_else(|| "Pending".into());
        match self.output {
            Output::Json => self.json(json!({"event": "submitted", "release": name, "version": r.spec.version, "phase": phase, "by": by})),
            Output::Text => self.line(&format!("{} release {name}: {} {} ({phase})", self.stamp(), r.spec.app, r.spec.version)),
        }
    }

    pub fn progress(&mut self, p: &Progress) {
        match (self.output, p) {
            (Output::Json, Progress::Transition(t)) => {
                self.json(json!({"event": "transition", "transition": t}))
            }
            (Output::Json, Progress::Applied { action, error }) => {
                self.json(json!({"event": "action", "action": action, "error": error}))
            }
            (Output::Json, Progress::Status(s)) => self.json(json!({
                "event": "status", "phase": s.phase, "step": s.step, "stepName": s.step_name,
                "weights": s.weights, "holds": s.holds, "message": s.message
            })),
            (Output::Json, Progress::Note(n)) => self.json(json!({"event": "note", "message": n})),
            (Output::Text, Progress::Note(n)) => self.line(&format!("{} {n}", self.stamp())),
            (Output::Text, Progress::Transition(t)) => self.line(&format!(
                "{} [{:>2}] {:?}: {}",
                self.stamp(),
                t.step + 1,
                t.event,
                t.message
            )),
            (
                Output::Text,
                Progress::Applied {
                    action,
                    error: Some(e),
                },
            ) => self.line(&format!("{}      failed to {action}: {e}", self.stamp())),
            (Output::Text, Progress::Applied { .. }) => {}
            (Output::Text, Progress::Status(s)) => {
                self.last = Some((**s).clone());
                if self.live.is_some() {
                    self.tick();
                } else if self.tty && !s.weights.is_empty() {
                    self.line(&format!(
                        "{}      {} — green: {}",
                        self.stamp(),
                        s.phase,
                        weights_line(s)
                    ));
                }
            }
        }
    }

    pub fn outcome(&mut self, o: &Outcome) {
        self.finish();
        let (word, message) = match o {
            Outcome::Completed => ("completed", String::new()),
            Outcome::Aborted(m) => ("rolled back", m.clone()),
            Outcome::Failed(m) => ("failed", m.clone()),
            Outcome::Invalid { message, .. } => ("refused", message.clone()),
            Outcome::Paused => ("paused", "resume with `cutover resume`".to_string()),
            Outcome::Stopped => (
                "stopped",
                "stopped at a safe point and released the lease; run the same command again to resume"
                    .to_string(),
            ),
        };
        match self.output {
            Output::Json => {
                self.json(json!({"event": "outcome", "outcome": word, "message": message}))
            }
            Output::Text if message.is_empty() => self.line(&format!("{} {word}", self.stamp())),
            Output::Text => self.line(&format!("{} {word}: {message}", self.stamp())),
        }
    }

    /// A full account of a release and who drives it, for `status`.
    pub fn status(&mut self, r: &Release, driver: Option<&crate::fleet::lease::Holder>) {
        let s = r.status.clone().unwrap_or_default();
        if self.output == Output::Json {
            let driver = driver.map(|d| {
                json!({"identity": d.identity, "live": d.live,
                       "renewed": d.renewed.map(|t| t.to_string())})
            });
            self.json(
                json!({"release": r.metadata.name, "spec": r.spec, "status": s, "driver": driver}),
            );
            return;
        }
        self.line(&describe(r, &s));
        if !s.phase.is_terminal() {
            self.line(&driver_line(driver, jiff::Timestamp::now()));
        }
    }
}

/// Who drives a release in flight, from its Lease (wall-clock times).
pub fn driver_line(driver: Option<&crate::fleet::lease::Holder>, now: jiff::Timestamp) -> String {
    let ago = |t: Option<jiff::Timestamp>| {
        t.map(|t| {
            let secs = now.duration_since(t).as_secs().max(0) as u64;
            format!(
                ", renewed {} ago",
                crate::spec::Span(std::time::Duration::from_secs(secs))
            )
        })
        .unwrap_or_default()
    };
    match driver {
        Some(d) if d.live => format!("driven by {}{}", d.identity, ago(d.renewed)),
        Some(d) => format!(
            "NOT driven: the lease of its last driver, {}, has lapsed{}; start `cutover run` again or check the controller",
            d.identity,
            ago(d.renewed)
        ),
        None => "NOT driven yet: no driver has taken its lease; start `cutover run` or check the controller".to_string(),
    }
}

/// The live line: where the release stands right now.
pub fn live_line(s: &ReleaseStatus, now: jiff::Timestamp) -> String {
    let mut parts = vec![format!("{}", s.phase)];
    if let Some(step) = &s.step_name {
        parts.push(format!("{}/{} {step}", s.step + 1, s.plan.len()));
    }
    if !s.weights.is_empty() {
        parts.push(format!("green {}", weights_line(s)));
    }
    let wait = s
        .plan
        .get(s.step as usize)
        .map(|p| p.wait.signed())
        .unwrap_or_default();
    if let Some(ready) = s.step_ready_at
        && !wait.is_zero()
    {
        let left = ready
            .checked_add(wait)
            .map(|end| end.duration_since(now))
            .unwrap_or_default();
        if left.is_positive() {
            parts.push(format!("{} left", crate::engine::timeline::span_of(left)));
        }
    }
    for g in &s.gates {
        if let Some(m) = g.measurements.last() {
            parts.push(format!(
                "{}@{}: {:?} {}",
                g.name,
                g.cluster,
                m.class,
                m.value.map(crate::gates::verdict::show).unwrap_or_default()
            ));
        }
    }
    if let Some(h) = s.holds.first() {
        parts.push(format!("holding: {}", h.message));
    }
    parts.join(" | ")
}

/// What `cutover status` prints.
pub fn describe(r: &Release, s: &ReleaseStatus) -> String {
    let mut out = String::new();
    let name = r.metadata.name.clone().unwrap_or_default();
    out.push_str(&format!(
        "Release {name}: {} {} ({})\n",
        r.spec.app, r.spec.version, r.spec.tier
    ));
    out.push_str(&format!("Phase:   {}\n", s.phase));
    if let Some(step) = &s.step_name {
        out.push_str(&format!(
            "Step:    {} of {}: {step}\n",
            s.step + 1,
            s.plan.len()
        ));
    }
    if !s.weights.is_empty() {
        out.push_str(&format!("Green:   {}\n", weights_line(s)));
    }
    for h in &s.holds {
        out.push_str(&format!("Holding: {:?}: {}\n", h.reason, h.message));
    }
    // A finished release shows the gates it measured, never an unmeasured
    // one as if it were still to come.
    for g in s
        .gates
        .iter()
        .filter(|g| !(s.phase.is_terminal() && g.measurements.is_empty()))
    {
        let last = g
            .measurements
            .last()
            .map(|m| m.detail.as_str())
            .unwrap_or("not measured yet");
        let dry = if g.dry_run { " (dry run)" } else { "" };
        let verdict = match &g.verdict {
            MetricVerdict::Pass => "passing".to_string(),
            MetricVerdict::Pending => "pending".to_string(),
            MetricVerdict::Fail(why) => format!("FAILED ({why})"),
            MetricVerdict::Inconclusive(why) => format!("inconclusive ({why})"),
        };
        out.push_str(&format!(
            "Gate:    {} on {}{dry}: {verdict}; {last}; threshold {}; {}\n",
            g.name, g.cluster, g.threshold, g.query
        ));
    }
    // The hooks of the current step, and any that failed.
    for h in s
        .hooks
        .iter()
        .filter(|h| h.step == s.step || h.verdict != crate::spec::hooks::HookVerdict::Pass)
    {
        let verdict = match h.verdict {
            crate::spec::hooks::HookVerdict::Pass => "passed",
            crate::spec::hooks::HookVerdict::Fail => "FAILED",
            crate::spec::hooks::HookVerdict::Inconclusive => "inconclusive",
        };
        out.push_str(&format!(
            "Hook:    {} on {} in step {}: {verdict}; {}\n",
            h.name,
            h.cluster,
            h.step + 1,
            h.message
        ));
    }
    for d in &s.notifications {
        let mut line = format!("Notify:  {}: {} delivered", d.receiver, d.delivered);
        if d.failed > 0 {
            line.push_str(&format!(", {} NOT delivered", d.failed));
            if let Some(e) = &d.last_error {
                let at = d
                    .last_failed_at
                    .map(|t| format!(" at {}", t.strftime("%Y-%m-%d %H:%M:%S")))
                    .unwrap_or_default();
                line.push_str(&format!(" (last{at}: {e})"));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(a) = &s.abort {
        out.push_str(&format!("Abort:   {} ({:?})\n", a.message, a.stage));
    }
    if let Some(m) = &s.message {
        out.push_str(&format!("Message: {m}\n"));
    }
    if !s.history.is_empty() {
        out.push_str("History:\n");
        let skip = s.history.len().saturating_sub(12);
        // Steps are numbered from 1, as `Step:` above and `plan` number them.
        for t in s.history.iter().skip(skip) {
            out.push_str(&format!(
                "  {}  [{:>2}] {:?}: {}\n",
                t.at.strftime("%Y-%m-%d %H:%M:%S"),
                t.step + 1,
                t.event,
                t.message
            ));
        }
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::release::ReleaseDocument;
    use crate::spec::status::{Transition, TransitionEvent};

    #[test]
    fn status_and_its_history_number_steps_alike() {
        let doc: ReleaseDocument = crate::spec::Source::new(
            "release.yaml",
            include_str!("../../examples/checkout/release.yaml"),
        )
        .decode()
        .unwrap();
        let r = Release::new(&doc.metadata.name, doc.spec);
        let s = ReleaseStatus {
            step: 6,
            step_name: Some("ramp prod-a 10%".into()),
            history: vec![Transition {
                at: "2026-12-03T10:00:00Z".parse().unwrap(),
                step: 6,
                event: TransitionEvent::HoldCleared,
                message: "gates run again".into(),
            }],
            ..Default::default()
        };
        let text = describe(&r, &s);
        assert!(text.contains("Step:    7 of 0: ramp prod-a 10%"), "{text}");
        assert!(text.contains("[ 7] HoldCleared"), "{text}");
    }
}
