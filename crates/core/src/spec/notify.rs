//! Notifications: who hears about releases and freezes (the fleet file's
//! `notifications` section), which events there are, and what each message
//! says. Delivery lives with the drivers; this is only the what.
//!
//! Webhook addresses are secrets (a Slack incoming-webhook URL is a
//! credential), so the fleet file names where to read one, a Secret or a
//! file, and never holds it; a Release cannot name a receiver at all.

use std::collections::BTreeSet;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::source::{InputError, Source};
use super::status::{AbortReason, Phase, ReleaseStatus, Transition, TransitionEvent};

/// One place release events are sent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Receiver {
    /// Names the receiver in `status`, metrics and errors.
    pub name: String,
    /// `webhook` (cutover's JSON, the default) or `slack` (an incoming webhook).
    #[serde(default)]
    pub format: Format,
    /// Where the receiver's URL is read from.
    pub url: UrlSource,
    /// The events sent; all of them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    /// Only releases of these apps; every app when empty. Freeze events
    /// belong to no app and pass this filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    #[default]
    Webhook,
    Slack,
}

/// Exactly one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UrlSource {
    /// A key of a Secret in the home cluster, in the controller's namespace
    /// (`cutover-system` for the CLI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKey>,
    /// A file whose content (trimmed) is the URL, e.g. a mounted Secret or a
    /// pipeline's secret file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKey {
    pub name: String,
    pub key: String,
}

/// What a receiver can hear about.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    Started,
    StepStarted,
    StepCompleted,
    Promoted,
    /// A hold began or changed its reason.
    Held,
    HoldCleared,
    /// A gate failed and the release rolls back; the message carries its values.
    GateFailed,
    /// A rollback began for another reason (asked for, a deadline, superseded).
    RollingBack,
    RolledBack,
    Superseded,
    Completed,
    Failed,
    FreezeSet,
    FreezeLifted,
    FreezeOverridden,
}

impl Event {
    pub const ALL: [Event; 15] = [
        Event::Started,
        Event::StepStarted,
        Event::StepCompleted,
        Event::Promoted,
        Event::Held,
        Event::HoldCleared,
        Event::GateFailed,
        Event::RollingBack,
        Event::RolledBack,
        Event::Superseded,
        Event::Completed,
        Event::Failed,
        Event::FreezeSet,
        Event::FreezeLifted,
        Event::FreezeOverridden,
    ];

    /// The event a release transition is, if any: `status` is the state the
    /// transition was recorded in (it says why a rollback began).
    pub fn of(t: &Transition, status: &ReleaseStatus) -> Option<Event> {
        Some(match t.event {
            TransitionEvent::Started => Event::Started,
            TransitionEvent::StepStarted => Event::StepStarted,
            TransitionEvent::StepReady | TransitionEvent::HookPassed => return None,
            TransitionEvent::StepCompleted => Event::StepCompleted,
            TransitionEvent::Promoted => Event::Promoted,
            TransitionEvent::HoldStarted | TransitionEvent::HoldChanged => Event::Held,
            TransitionEvent::HoldCleared => Event::HoldCleared,
            TransitionEvent::FreezeOverridden => Event::FreezeOverridden,
            TransitionEvent::AbortStarted => match status.abort.as_ref().map(|a| a.reason) {
                Some(AbortReason::GateFailed | AbortReason::HookFailed) => Event::GateFailed,
                _ => Event::RollingBack,
            },
            // Traffic back on blue is part of rolling back; the end is `Aborted`.
            TransitionEvent::TrafficRestored => return None,
            TransitionEvent::Aborted => Event::RolledBack,
            TransitionEvent::Superseded => Event::Superseded,
            TransitionEvent::Completed => Event::Completed,
            TransitionEvent::Failed => Event::Failed,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::StepStarted => "stepStarted",
            Event::StepCompleted => "stepCompleted",
            Event::Promoted => "promoted",
            Event::Held => "held",
            Event::HoldCleared => "holdCleared",
            Event::GateFailed => "gateFailed",
            Event::RollingBack => "rollingBack",
            Event::RolledBack => "rolledBack",
            Event::Superseded => "superseded",
            Event::Completed => "completed",
            Event::Failed => "failed",
            Event::FreezeSet => "freezeSet",
            Event::FreezeLifted => "freezeLifted",
            Event::FreezeOverridden => "freezeOverridden",
        }
    }

    /// How the event reads at the start of a chat line.
    fn headline(self) -> &'static str {
        match self {
            Event::Started => ":arrow_forward: started",
            Event::StepStarted => ":arrow_right: step started",
            Event::StepCompleted => ":white_check_mark: step completed",
            Event::Promoted => ":fast_forward: promoted",
            Event::Held => ":pause_button: held",
            Event::HoldCleared => ":arrow_forward: hold cleared",
            Event::GateFailed => ":rotating_light: gate failed, rolling back",
            Event::RollingBack => ":leftwards_arrow_with_hook: rolling back",
            Event::RolledBack => ":leftwards_arrow_with_hook: rolled back",
            Event::Superseded => ":twisted_rightwards_arrows: superseded",
            Event::Completed => ":tada: completed",
            Event::Failed => ":x: failed",
            Event::FreezeSet => ":snowflake: freeze set",
            Event::FreezeLifted => ":sunny: freeze lifted",
            Event::FreezeOverridden => ":warning: freeze overridden",
        }
    }
}

/// One message, as the `webhook` format sends it (JSON).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub event: Event,
    /// Fleet time of the event.
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseRef>,
    /// What happened, as the release's history says it.
    pub message: String,
    /// The gate values behind a `gateFailed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<FreezeRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRef {
    pub namespace: String,
    pub name: String,
    pub app: String,
    pub version: String,
    pub revision: u32,
    pub phase: Phase,
    /// 1-based, as `status` counts.
    pub step: u32,
    pub steps: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GateValue {
    pub name: String,
    pub cluster: String,
    pub threshold: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    pub verdict: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FreezeRef {
    pub id: String,
    pub clusters: Vec<String>,
    pub reason: String,
    pub by: String,
}

impl Notification {
    /// The message for a freeze set, lifted or overridden.
    pub fn of_freeze(
        event: Event,
        at: Timestamp,
        message: String,
        freeze: FreezeRef,
    ) -> Notification {
        Notification {
            event,
            at,
            release: None,
            message,
            gates: Vec::new(),
            freeze: Some(freeze),
        }
    }

    /// The message for a release transition. It names the status's version,
    /// or `version` (the spec's) while the status has none: a release held
    /// before it started.
    pub fn of_transition(
        event: Event,
        t: &Transition,
        namespace: &str,
        name: &str,
        app: &str,
        version: &str,
        status: &ReleaseStatus,
    ) -> Notification {
        let gates = if event == Event::GateFailed {
            status
                .gates
                .iter()
                .filter_map(|g| match &g.verdict {
                    crate::gates::MetricVerdict::Fail(why) => Some(GateValue {
                        name: g.name.clone(),
                        cluster: g.cluster.clone(),
                        threshold: g.threshold.clone(),
                        value: g.measurements.iter().rev().find_map(|m| m.value),
                        verdict: why.clone(),
                    }),
                    _ => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        Notification {
            event,
            at: t.at,
            release: Some(ReleaseRef {
                namespace: namespace.to_string(),
                name: name.to_string(),
                app: app.to_string(),
                version: status.version.as_deref().unwrap_or(version).to_string(),
                revision: status.revision,
                phase: status.phase,
                step: t.step + 1,
                steps: status.plan.len() as u32,
                step_name: status.plan.get(t.step as usize).map(|s| s.to_string()),
            }),
            message: t.message.clone(),
            gates,
            freeze: None,
        }
    }

    pub fn app(&self) -> Option<&str> {
        self.release.as_ref().map(|r| r.app.as_str())
    }

    /// The text of a Slack message: one headline, then the details.
    pub fn slack_text(&self) -> String {
        let mut text = match &self.release {
            Some(r) => format!(
                "*{}* {} {}: {}",
                r.app,
                r.version,
                self.event.headline(),
                self.message
            ),
            None => format!("{}: {}", self.event.headline(), self.message),
        };
        if let Some(r) = &self.release
            && r.steps > 0
            && !matches!(self.event, Event::Completed | Event::RolledBack)
        {
            text.push_str(&format!(
                "\nstep {} of {}{} · {}/{}",
                r.step,
                r.steps,
                r.step_name
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default(),
                r.namespace,
                r.name
            ));
        }
        for g in &self.gates {
            let value = g
                .value
                .map(|v| format!("{v}"))
                .unwrap_or_else(|| "no value".into());
            text.push_str(&format!(
                "\n• {} on {}: {value} (threshold {})",
                g.name, g.cluster, g.threshold
            ));
        }
        if let Some(f) = &self.freeze {
            text.push_str(&format!(
                "\nfreeze {} on {} by {}: {}",
                f.id,
                f.clusters.join(", "),
                f.by,
                f.reason
            ));
        }
        text
    }

    /// The JSON body `format` sends.
    pub fn body(&self, format: Format) -> serde_json::Value {
        match format {
            Format::Webhook => serde_json::to_value(self).unwrap_or_default(),
            Format::Slack => serde_json::json!({ "text": self.slack_text() }),
        }
    }
}

impl Receiver {
    /// Whether this receiver wants `n`.
    pub fn wants(&self, n: &Notification) -> bool {
        let event = self.events.is_empty() || self.events.contains(&n.event);
        let app = match n.app() {
            Some(app) => self.apps.is_empty() || self.apps.iter().any(|a| a == app),
            None => true,
        };
        event && app
    }
}

/// Checks the fleet file's `notifications`; each problem is placed.
pub fn check(src: &Source, receivers: &[Receiver]) -> Vec<InputError> {
    let mut errors = Vec::new();
    let mut names = BTreeSet::new();
    for (i, r) in receivers.iter().enumerate() {
        let at = format!("notifications[{i}]");
        if let Err(e) = super::check_dns_label(&r.name) {
            errors.push(src.error_at(&format!("{at}.name"), e));
        }
        if !names.insert(r.name.as_str()) {
            errors.push(src.error_at(
                &format!("{at}.name"),
                format!(
                    "receiver {:?} is listed twice; receiver names must be unique",
                    r.name
                ),
            ));
        }
        match (&r.url.secret_key_ref, &r.url.file) {
            (Some(_), Some(_)) | (None, None) => errors.push(src.error_at(
                &format!("{at}.url"),
                "set exactly one of `secretKeyRef` (a Secret in the home cluster) or `file` (a file holding the URL); the URL itself never goes in the fleet file",
            )),
            (None, Some(f)) if f.trim().is_empty() => {
                errors.push(src.error_at(&format!("{at}.url.file"), "name a file"));
            }
            _ => {}
        }
        let mut seen = BTreeSet::new();
        for (j, e) in r.events.iter().enumerate() {
            if !seen.insert(e) {
                errors.push(src.error_at(
                    &format!("{at}.events[{j}]"),
                    format!("event {:?} is listed twice", e.name()),
                ));
            }
        }
    }
    errors
}

/// How deliveries to one receiver went, as the release's status shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub receiver: String,
    #[serde(default)]
    pub delivered: u32,
    /// Messages given up on after every retry (or dropped while the queue was full).
    #[serde(default)]
    pub failed: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_failed_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::status::{AbortStage, AbortStatus};

    fn transition(event: TransitionEvent) -> Transition {
        Transition {
            at: "2026-01-01T00:00:00Z".parse().unwrap(),
            step: 2,
            event,
            message: "m".into(),
        }
    }

    #[test]
    fn a_rollback_that_a_gate_began_is_gate_failed_and_others_are_rolling_back() {
        let mut s = ReleaseStatus {
            abort: Some(AbortStatus {
                reason: AbortReason::GateFailed,
                message: "error-rate".into(),
                at: "2026-01-01T00:00:00Z".parse().unwrap(),
                stage: AbortStage::RestoringTraffic,
            }),
            ..Default::default()
        };
        let t = transition(TransitionEvent::AbortStarted);
        assert_eq!(Event::of(&t, &s), Some(Event::GateFailed));
        s.abort.as_mut().unwrap().reason = AbortReason::Requested;
        assert_eq!(Event::of(&t, &s), Some(Event::RollingBack));
        assert_eq!(Event::of(&transition(TransitionEvent::StepReady), &s), None);
    }

    #[test]
    fn filters_pass_what_a_receiver_lists_and_freezes_pass_app_filters() {
        let r = Receiver {
            name: "chat".into(),
            format: Format::Slack,
            url: UrlSource::default(),
            events: vec![Event::GateFailed, Event::FreezeSet],
            apps: vec!["checkout".into()],
        };
        let s = ReleaseStatus::default();
        let t = transition(TransitionEvent::Started);
        let mut n = Notification::of_transition(
            Event::GateFailed,
            &t,
            "shop",
            "c",
            "checkout",
            "2.14.0",
            &s,
        );
        assert_eq!(
            n.release.as_ref().unwrap().version,
            "2.14.0",
            "not started: the spec's"
        );
        assert!(r.wants(&n));
        n.release.as_mut().unwrap().app = "cart".into();
        assert!(!r.wants(&n), "another app");
        n.event = Event::Started;
        n.release.as_mut().unwrap().app = "checkout".into();
        assert!(!r.wants(&n), "an event not listed");
        n.event = Event::FreezeSet;
        n.release = None;
        assert!(r.wants(&n), "freezes belong to no app");
    }

    #[test]
    fn event_names_are_what_the_fleet_file_says() {
        for e in Event::ALL {
            let written = serde_json::to_value(e).unwrap();
            assert_eq!(written, serde_json::json!(e.name()));
        }
    }
}
