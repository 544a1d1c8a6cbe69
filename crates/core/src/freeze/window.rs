//! Scheduled freeze windows (`policies/freezes.yaml`): a required IANA time
//! zone and a recurrence — daily times, a weekly span, or a one-off range —
//! start inclusive, end exclusive. A window is judged on the local clock
//! reading of the instant in its zone, so it follows the wall clock across
//! daylight-saving changes: a local time that is skipped never happens, and a
//! local hour that repeats is frozen both times. A bad zone or schedule
//! refuses every release with a clear error; it is never ignored.

use jiff::Timestamp;
use jiff::civil::{DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::spec::{InputError, InputErrors, Source};

/// `policies/freezes.yaml`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WindowsFile {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub windows: Vec<WindowSpec>,
}

/// One window as written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WindowSpec {
    pub name: String,
    pub reason: String,
    /// IANA time zone, e.g. `Europe/Berlin` or `UTC`. Required.
    pub time_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<Daily>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<Weekly>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub once: Option<Once>,
    /// Which releases it freezes; empty: all.
    #[serde(default)]
    pub scope: super::Scope,
}

/// Every day from `from` to `to` (local times `HH:MM`; `to` may be past midnight).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Daily {
    pub from: String,
    pub to: String,
}

/// Every week from a day and time to a day and time (`Sat 12:00` to `Mon 07:00`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Weekly {
    pub from: String,
    pub to: String,
}

/// Once, between two local date-times (`2026-12-24T00:00` to `2026-12-27T00:00`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Once {
    pub start: String,
    pub end: String,
}

/// A window ready to evaluate.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub name: String,
    pub reason: String,
    pub zone: TimeZone,
    pub zone_name: String,
    pub recurrence: Recurrence,
    pub scope: super::Scope,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Recurrence {
    Daily {
        from: Time,
        to: Time,
    },
    /// Minutes into the week, Monday 00:00 = 0.
    Weekly {
        from: u32,
        to: u32,
    },
    Once {
        start: DateTime,
        end: DateTime,
    },
}

fn minute_of_week(day: Weekday, t: Time) -> u32 {
    (day.to_monday_zero_offset() as u32) * 24 * 60 + t.hour() as u32 * 60 + t.minute() as u32
}

fn parse_time(s: &str) -> Result<Time, String> {
    if s.trim() == "24:00" {
        return Ok(Time::MAX);
    }
    Time::strptime("%H:%M", s.trim())
        .map_err(|_| format!("expected a local time such as \"06:00\", got {s:?}"))
}

fn parse_day(s: &str) -> Result<Weekday, String> {
    let d = match s.trim().to_ascii_lowercase().get(..3).unwrap_or_default() {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return Err(format!("expected a weekday such as \"Sat\", got {s:?}")),
    };
    Ok(d)
}

fn parse_day_time(s: &str) -> Result<u32, String> {
    let (day, time) = s
        .trim()
        .split_once(' ')
        .ok_or_else(|| format!("expected a day and time such as \"Sat 12:00\", got {s:?}"))?;
    let t = parse_time(time)?;
    let m = minute_of_week(parse_day(day)?, t);
    Ok(if t == Time::MAX { m + 1 } else { m })
}

impl Window {
    fn from_spec(w: &WindowSpec) -> Result<Window, (String, String)> {
        let zone = TimeZone::get(&w.time_zone).map_err(|_| {
            (
                "timeZone".to_string(),
                format!(
                    "unknown time zone {:?}; use an IANA name such as \"Europe/Berlin\" or \"UTC\"",
                    w.time_zone
                ),
            )
        })?;
        let set = [w.daily.is_some(), w.weekly.is_some(), w.once.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if set != 1 {
            return Err((
                String::new(),
                "set exactly one of `daily`, `weekly` or `once`".into(),
            ));
        }
        let recurrence = if let Some(d) = &w.daily {
            let from = parse_time(&d.from).map_err(|e| ("daily.from".to_string(), e))?;
            let to = parse_time(&d.to).map_err(|e| ("daily.to".to_string(), e))?;
            if from == to {
                return Err((
                    "daily.to".into(),
                    "the window is empty: `from` equals `to`".into(),
                ));
            }
            Recurrence::Daily { from, to }
        } else if let Some(wk) = &w.weekly {
            let from = parse_day_time(&wk.from).map_err(|e| ("weekly.from".to_string(), e))?;
            let to = parse_day_time(&wk.to).map_err(|e| ("weekly.to".to_string(), e))?;
            if from == to {
                return Err((
                    "weekly.to".into(),
                    "the window is empty: `from` equals `to`".into(),
                ));
            }
            Recurrence::Weekly { from, to }
        } else {
            let o = w.once.as_ref().expect("one recurrence is set");
            let parse = |s: &str, f: &str| {
                s.trim().parse::<DateTime>().map_err(|_| {
                    (
                        f.to_string(),
                        format!(
                            "expected a local date-time such as \"2026-12-24T00:00\", got {s:?}"
                        ),
                    )
                })
            };
            let (start, end) = (parse(&o.start, "once.start")?, parse(&o.end, "once.end")?);
            if end <= start {
                return Err(("once.end".into(), "`end` must be after `start`".into()));
            }
            Recurrence::Once { start, end }
        };
        Ok(Window {
            name: w.name.clone(),
            reason: w.reason.clone(),
            zone,
            zone_name: w.time_zone.clone(),
            recurrence,
            scope: w.scope.clone(),
        })
    }

    /// Whether the window freezes at instant `at` (judged on the local clock reading).
    pub fn contains(&self, at: Timestamp) -> bool {
        let local = at.to_zoned(self.zone.clone()).datetime();
        match &self.recurrence {
            Recurrence::Daily { from, to } => {
                let t = local.time();
                if from < to {
                    *from <= t && t < *to
                } else {
                    t >= *from || t < *to
                }
            }
            Recurrence::Weekly { from, to } => {
                let m = minute_of_week(local.weekday(), local.time());
                if from < to {
                    *from <= m && m < *to
                } else {
                    m >= *from || m < *to
                }
            }
            Recurrence::Once { start, end } => *start <= local && local < *end,
        }
    }

    pub fn describe(&self) -> String {
        let when = match &self.recurrence {
            Recurrence::Daily { from, to } => {
                format!("daily {}–{}", from.strftime("%H:%M"), to.strftime("%H:%M"))
            }
            Recurrence::Weekly { .. } => "weekly".to_string(),
            Recurrence::Once { start, end } => format!("{start} to {end}"),
        };
        format!(
            "window {} ({when} {}): {}",
            self.name, self.zone_name, self.reason
        )
    }
}

/// Parses the windows file; every problem is reported with its place.
pub fn parse(file: &str, text: &str) -> Result<Vec<Window>, InputErrors> {
    let src = Source::new(file, text);
    let f: WindowsFile = src.decode().map_err(|e| InputErrors(vec![e]))?;
    let mut errors: Vec<InputError> = Vec::new();
    if f.kind != "FreezeWindows" {
        errors.push(src.error_at(
            "kind",
            format!("expected \"FreezeWindows\", got {:?}", f.kind),
        ));
    }
    let mut out = Vec::new();
    for (i, w) in f.windows.iter().enumerate() {
        match Window::from_spec(w) {
            Ok(win) => out.push(win),
            Err((field, problem)) => {
                let path = if field.is_empty() {
                    format!("windows[{i}]")
                } else {
                    format!("windows[{i}].{field}")
                };
                errors.push(src.error_at(&path, problem));
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(InputErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(body: &str) -> Result<Vec<Window>, InputErrors> {
        parse(
            "freezes.yaml",
            &format!("apiVersion: cutover.dev/v1alpha1\nkind: FreezeWindows\nwindows:\n{body}"),
        )
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_weekend_window_in_berlin() {
        let w = &windows("  - name: weekend\n    reason: no weekend deploys\n    timeZone: Europe/Berlin\n    weekly:\n      from: Sat 12:00\n      to: Mon 07:00\n").unwrap()[0];
        // January: Berlin is UTC+1.
        assert!(w.contains(at("2026-01-10T11:00:00Z")), "Saturday noon");
        assert!(!w.contains(at("2026-01-10T10:59:00Z")), "Saturday 11:59");
        assert!(w.contains(at("2026-01-12T05:59:00Z")), "Monday 06:59");
        assert!(!w.contains(at("2026-01-12T06:00:00Z")), "Monday 07:00 open");
        // July: UTC+2, the same local readings.
        assert!(
            w.contains(at("2026-07-13T04:59:00Z")),
            "Monday 06:59 in summer"
        );
        assert!(
            !w.contains(at("2026-07-13T05:00:00Z")),
            "Monday 07:00 in summer"
        );
    }

    #[test]
    fn a_daily_window_on_the_days_clocks_change() {
        let w = &windows("  - name: maintenance\n    reason: OS upgrades\n    timeZone: Europe/Berlin\n    daily:\n      from: \"06:00\"\n      to: \"07:00\"\n").unwrap()[0];
        // 2026-03-29: clocks go forward at 02:00 (UTC+1 → UTC+2).
        assert!(
            w.contains(at("2026-03-29T04:00:00Z")),
            "06:00 local after the change"
        );
        assert!(!w.contains(at("2026-03-29T05:00:00Z")), "07:00 local");
        assert!(
            !w.contains(at("2026-03-28T04:00:00Z")),
            "05:00 local the day before"
        );
        assert!(
            w.contains(at("2026-03-28T05:30:00Z")),
            "06:30 local the day before"
        );
        // 2026-10-25: clocks go back at 03:00 (UTC+2 → UTC+1).
        assert!(
            w.contains(at("2026-10-25T05:00:00Z")),
            "06:00 local after the change"
        );
        assert!(!w.contains(at("2026-10-25T04:59:00Z")), "05:59 local");
        // A window over the skipped hour never happens; over the repeated hour, it holds twice.
        let skipped = &windows("  - name: x\n    reason: r\n    timeZone: Europe/Berlin\n    daily:\n      from: \"02:00\"\n      to: \"03:00\"\n").unwrap()[0];
        assert!(
            !skipped.contains(at("2026-03-29T01:30:00Z")),
            "02:30 does not exist that day"
        );
        assert!(
            skipped.contains(at("2026-10-25T00:30:00Z")),
            "02:30, first time"
        );
        assert!(
            skipped.contains(at("2026-10-25T01:30:00Z")),
            "02:30, second time"
        );
    }

    #[test]
    fn overnight_and_one_off_windows() {
        let w = &windows("  - name: night\n    reason: r\n    timeZone: UTC\n    daily:\n      from: \"22:00\"\n      to: \"06:00\"\n").unwrap()[0];
        assert!(w.contains(at("2026-01-01T23:00:00Z")) && w.contains(at("2026-01-02T05:59:00Z")));
        assert!(!w.contains(at("2026-01-02T06:00:00Z")) && !w.contains(at("2026-01-01T21:59:00Z")));
        let o = &windows("  - name: holidays\n    reason: r\n    timeZone: America/New_York\n    once:\n      start: 2026-12-24T00:00\n      end: 2026-12-27T00:00\n").unwrap()[0];
        assert!(
            o.contains(at("2026-12-24T05:00:00Z")),
            "midnight in New York"
        );
        assert!(!o.contains(at("2026-12-24T04:59:00Z")));
        assert!(!o.contains(at("2026-12-27T05:00:00Z")), "end exclusive");
    }

    #[test]
    fn the_shipped_windows_parse() {
        let w = parse(
            "policies/freezes.yaml",
            include_str!("../../../../policies/freezes.yaml"),
        )
        .unwrap();
        assert_eq!(w.len(), 3);
        assert!(
            w[0].contains(at("2026-06-01T06:30:00Z")) && !w[0].contains(at("2026-06-01T07:00:00Z"))
        );
    }

    #[test]
    fn bad_zones_and_schedules_are_refused_with_their_place() {
        let e = windows("  - name: x\n    reason: r\n    timeZone: Mars/Olympus\n    daily:\n      from: \"06:00\"\n      to: \"07:00\"\n").unwrap_err().to_string();
        assert!(
            e.contains("freezes.yaml:6:5: field `windows[0].timeZone`")
                && e.contains("unknown time zone"),
            "{e}"
        );
        let e = windows("  - name: x\n    reason: r\n    timeZone: UTC\n    daily:\n      from: \"6 o'clock\"\n      to: \"07:00\"\n").unwrap_err().to_string();
        assert!(e.contains("windows[0].daily.from"), "{e}");
        let e = windows("  - name: x\n    reason: r\n    timeZone: UTC\n    weekly:\n      from: Caturday 10:00\n      to: Mon 07:00\n").unwrap_err().to_string();
        assert!(e.contains("weekday"), "{e}");
        let e = windows("  - name: x\n    reason: r\n    timeZone: UTC\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one"), "{e}");
        let e = windows("  - name: x\n    reason: r\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("timeZone"), "a missing zone is refused: {e}");
    }
}
