//! Quantities users type in specs: traffic shares (`2%`) and durations (`5m`).
//!
//! Owns parsing, display and schema of these values; knows nothing of releases.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A share of traffic, kept in hundredths of a percent (basis points):
/// `Percent::HUNDRED` is 10 000. Written as `2%`, `2.5%` or a bare number of percent.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Percent(u32);

impl Percent {
    pub const ZERO: Percent = Percent(0);
    pub const HUNDRED: Percent = Percent(10_000);

    pub const fn from_basis_points(bp: u32) -> Percent {
        Percent(bp)
    }

    pub const fn from_whole(percent: u32) -> Percent {
        Percent(percent * 100)
    }

    pub const fn basis_points(self) -> u32 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 100.0
    }

    /// Parses `2%`, `2.5%`, `2` (percent). At most two decimals; never negative.
    pub fn parse(text: &str) -> Result<Percent, String> {
        let body = text.trim();
        let body = body.strip_suffix('%').unwrap_or(body).trim();
        let expected = || format!("expected a percentage such as \"2%\" or \"2.5%\", got {text:?}");
        if body.is_empty() || body.starts_with('-') || body.starts_with('+') {
            return Err(expected());
        }
        let (whole, frac) = match body.split_once('.') {
            Some((w, f)) => (w, f),
            None => (body, ""),
        };
        if whole.is_empty() && frac.is_empty()
            || !whole.chars().all(|c| c.is_ascii_digit())
            || !frac.chars().all(|c| c.is_ascii_digit())
        {
            return Err(expected());
        }
        if frac.len() > 2 {
            return Err(format!(
                "{text:?} has more than two decimals; traffic shares are kept to 0.01%"
            ));
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| expected())?
        };
        let frac_bp: u64 = format!("{frac:0<2}").parse().unwrap_or(0);
        let bp = whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(frac_bp))
            .filter(|bp| *bp <= u64::from(u32::MAX))
            .ok_or_else(expected)?;
        Ok(Percent(bp as u32))
    }

    fn from_f64(value: f64) -> Result<Percent, String> {
        if !value.is_finite() || value < 0.0 {
            return Err(format!(
                "expected a percentage between 0 and 100, got {value}"
            ));
        }
        let bp = (value * 100.0).round();
        if (bp - value * 100.0).abs() > 1e-6 {
            return Err(format!(
                "{value} has more than two decimals; traffic shares are kept to 0.01%"
            ));
        }
        if bp > f64::from(u32::MAX) {
            return Err(format!("{value}% is out of range"));
        }
        Ok(Percent(bp as u32))
    }

    /// What is left of the whole: blue's share when green has `self`.
    pub fn rest(self) -> Percent {
        Percent(Percent::HUNDRED.0.saturating_sub(self.0))
    }

    /// `self` of `total`, e.g. 10% of a cluster that carries 50% is 5% of all traffic.
    pub fn of(self, total: Percent) -> Percent {
        Percent(((u64::from(self.0) * u64::from(total.0) + 5_000) / 10_000) as u32)
    }

    /// The share of a part within a whole, rounded to the nearest basis point:
    /// 2% of all traffic on a cluster that carries 50% is 4% of that cluster's traffic.
    /// `None` when the whole is zero.
    pub fn within(self, whole: Percent) -> Option<Percent> {
        if whole.0 == 0 {
            return None;
        }
        let bp = (u64::from(self.0) * 10_000 + u64::from(whole.0) / 2) / u64::from(whole.0);
        Some(Percent(bp.min(u64::from(u32::MAX)) as u32))
    }
}

/// Replica-ratio arithmetic: traffic moves by whole pods.
/// Green pods for a share of `to` against `blue` blue pods: the most whose
/// share does not exceed `to`, at least one, at most `max`.
pub fn green_count(to: Percent, blue: u32, max: u32) -> u32 {
    let to = u64::from(to.basis_points().min(10_000));
    if to == 0 {
        return 0;
    }
    if to == 10_000 || blue == 0 {
        return max;
    }
    let g = to * u64::from(blue) / (10_000 - to);
    (g.max(1) as u32).min(max.max(1))
}

/// The share `green` pods get beside `blue` pods.
pub fn share(green: u32, blue: u32) -> Percent {
    let total = u64::from(green) + u64::from(blue);
    if total == 0 {
        return Percent::ZERO;
    }
    Percent::from_basis_points(((u64::from(green) * 10_000 + total / 2) / total) as u32)
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{whole}%"),
            f2 if f2 % 10 == 0 => write!(f, "{whole}.{}%", f2 / 10),
            f2 => write!(f, "{whole}.{f2:02}%"),
        }
    }
}

impl fmt::Debug for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PercentVisitor;
        impl Visitor<'_> for PercentVisitor {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a percentage such as \"2%\" or \"2.5%\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Percent, E> {
                Percent::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Percent, E> {
                Percent::from_f64(v as f64).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Percent, E> {
                Percent::from_f64(v as f64).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Percent, E> {
                Percent::from_f64(v).map_err(E::custom)
            }
        }
        d.deserialize_any(PercentVisitor)
    }
}

impl JsonSchema for Percent {
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(\\.[0-9]{1,2})?%?$",
            "description": "A share of traffic such as \"2%\" or \"2.5%\"."
        })
    }
    fn inline_schema() -> bool {
        true
    }
}

/// What a duration's text must match for the API server to store it: one
/// or more numbers (a fraction allowed), each with one of the units
/// `humantime` reads, spaces allowed between and around them. With it in the
/// CRD a Release whose duration cutover could not read (`interval: soon`) is
/// refused when it is written, with the field named, rather than stored for
/// cutover to refuse later: a schema's `pattern` is enforced by
/// kube-apiserver on every create and update (apiextensions-apiserver,
/// `JSONSchemaProps.Pattern`; its formats other than the listed string ones
/// are not). Stricter than `humantime` only where it reads a number split by
/// spaces (`1 0s`, `1. 5h`) as one; looser only for a fraction that does not
/// come to whole nanoseconds (`0.001h`: from hours up, whole seconds), which
/// cutover still refuses when it reads the Release, naming the field.
pub const SPAN_PATTERN: &str = concat!(
    r"^\s*([0-9]+(\.[0-9]+)?\s*(",
    "nanos|nsec|ns|usec|us|µs|millis|msec|ms|",
    "seconds|second|secs|sec|s|minutes|minute|mins|min|m|",
    "hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|",
    "months|month|M|years|year|yrs|yr|y",
    r")\s*)+$"
);

/// A duration written the way people say it: `30s`, `5m`, `2h`, `1h 30m`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(pub Duration);

impl Span {
    pub const ZERO: Span = Span(Duration::ZERO);

    pub const fn from_secs(secs: u64) -> Span {
        Span(Duration::from_secs(secs))
    }

    pub const fn from_mins(mins: u64) -> Span {
        Span(Duration::from_secs(mins * 60))
    }

    pub fn parse(text: &str) -> Result<Span, String> {
        humantime::parse_duration(text.trim())
            .map(Span)
            .map_err(|e| {
                format!("expected a duration such as \"30s\", \"5m\" or \"2h\", got {text:?} ({e})")
            })
    }

    pub fn as_duration(self) -> Duration {
        self.0
    }

    pub fn signed(self) -> jiff::SignedDuration {
        jiff::SignedDuration::try_from(self.0).unwrap_or(jiff::SignedDuration::MAX)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        let whole = Duration::from_secs(self.0.as_secs());
        write!(f, "{}", humantime::format_duration(whole))
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SpanVisitor;
        impl Visitor<'_> for SpanVisitor {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"5m\" or \"2h\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Span, E> {
                Span::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Span, E> {
                Err(E::custom(format!(
                    "a bare number ({v}) is ambiguous; write the unit, e.g. \"{v}s\" or \"{v}m\""
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Span, E> {
                self.visit_u64(v.unsigned_abs())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Span, E> {
                Err(E::custom(format!(
                    "a bare number ({v}) is ambiguous; write the unit, e.g. \"90s\" or \"5m\""
                )))
            }
        }
        d.deserialize_any(SpanVisitor)
    }
}

impl JsonSchema for Span {
    fn schema_name() -> Cow<'static, str> {
        "Span".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": SPAN_PATTERN,
            "description": "A duration such as \"30s\", \"5m\", \"2h\" or \"1h 30m\"."
        })
    }
    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn green_count_never_exceeds_the_target_share_but_is_at_least_one() {
        let cases = [
            (Percent::from_whole(4), 3, 3, 1), // 1 in 4: 25 %, the least there is
            (Percent::from_whole(4), 48, 48, 2), // 2 in 50: 4 %
            (Percent::from_whole(25), 3, 3, 1),
            (Percent::from_whole(50), 3, 3, 3),
            (Percent::from_whole(80), 3, 3, 3), // capped at full size: 50 % until the switch
            (Percent::from_whole(100), 3, 3, 3),
            (Percent::ZERO, 3, 3, 0),
            (Percent::from_whole(30), 0, 3, 3), // no blue: any green pod carries everything
        ];
        for (to, blue, max, want) in cases {
            assert_eq!(green_count(to, blue, max), want, "{to} over {blue} blue");
        }
        assert_eq!(share(1, 3), Percent::from_whole(25));
        assert_eq!(share(0, 0), Percent::ZERO);
    }

    #[test]
    fn percent_parses_and_prints() {
        let cases = [
            ("2%", 200, "2%"),
            ("2.5%", 250, "2.5%"),
            ("3.33%", 333, "3.33%"),
            ("100", 10_000, "100%"),
            (" 0.05 % ", 5, "0.05%"),
            (".5%", 50, "0.5%"),
        ];
        for (text, bp, shown) in cases {
            let p = Percent::parse(text).unwrap();
            assert_eq!(p.basis_points(), bp, "{text}");
            assert_eq!(p.to_string(), shown, "{text}");
        }
        for bad in ["", "%", "-1%", "1.234%", "two", "1e3", "1..2"] {
            assert!(Percent::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn percent_share_math() {
        let two = Percent::from_whole(2);
        let half = Percent::from_whole(50);
        assert_eq!(two.within(half), Some(Percent::from_whole(4)));
        assert_eq!(
            Percent::from_whole(1)
                .within(Percent::from_whole(30))
                .unwrap()
                .basis_points(),
            333
        );
        assert_eq!(Percent::from_whole(10).of(half), Percent::from_whole(5));
        assert_eq!(two.within(Percent::ZERO), None);
        assert_eq!(two.rest(), Percent::from_whole(98));
        assert_eq!(Percent::HUNDRED.rest(), Percent::ZERO);
    }

    #[test]
    fn span_parses_and_prints() {
        assert_eq!(Span::parse("5m").unwrap(), Span::from_mins(5));
        assert_eq!(Span::parse("2h").unwrap().to_string(), "2h");
        assert_eq!(Span::parse("90s").unwrap().to_string(), "1m 30s");
        assert!(Span::parse("5 minutes please").is_err());
        assert!(Span::parse("").is_err());
    }

    /// The CRD's pattern for a duration refuses what `Span` cannot read and
    /// stores what it writes, so the API server, not cutover, turns a bad
    /// duration away.
    mod pattern {
        use super::*;
        use proptest::prelude::*;

        fn matches(text: &str) -> bool {
            regex::Regex::new(SPAN_PATTERN).unwrap().is_match(text)
        }

        #[test]
        fn people_s_durations_are_stored_and_others_refused() {
            for ok in [
                "30s",
                "5m",
                "2h",
                "1h 30m",
                "1h30m",
                " 90 seconds ",
                "1.5h",
                "2days",
                "1µs",
            ] {
                assert!(matches(ok), "{ok:?} is refused");
                assert!(Span::parse(ok).is_ok(), "{ok:?} does not read");
            }
            for bad in [
                "soon",
                "",
                "5",
                "5 minutes please",
                "1hm",
                "-5m",
                "5m!",
                "1.h",
            ] {
                assert!(!matches(bad), "{bad:?} is stored");
                assert!(Span::parse(bad).is_err(), "{bad:?} reads");
            }
        }

        fn unit() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "ns", "us", "µs", "ms", "msec", "s", "sec", "secs", "second", "seconds", "m",
                "min", "mins", "minute", "minutes", "h", "hr", "hrs", "hour", "hours", "d", "day",
                "days", "w", "wk", "week", "weeks", "M", "month", "months", "y", "yr", "years",
                "x", "sek", "hm",
            ])
        }

        proptest! {
            #[test]
            fn what_the_pattern_stores_reads_and_what_reads_is_stored(
                parts in prop::collection::vec(
                    ("[0-9]{1,4}(\\.[0-9]{1,3})?", " {0,2}", unit(), " {0,2}"), 1..4),
                lead in " {0,2}",
            ) {
                let fraction = parts.iter().any(|(n, ..)| n.contains('.'));
                let text: String = std::iter::once(lead)
                    .chain(parts.into_iter().map(|(n, a, u, b)| format!("{n}{a}{u}{b}")))
                    .collect();
                let (stored, reads) = (matches(&text), Span::parse(&text).is_ok());
                if fraction {
                    // A fraction reads only where it comes to whole
                    // nanoseconds (whole seconds from hours up), which no
                    // pattern can tell: `0.001h` is stored and refused by
                    // cutover, naming the field. What reads is stored.
                    prop_assert!(stored || !reads, "{:?} reads but is refused", text);
                } else {
                    prop_assert_eq!(stored, reads, "{:?}", text);
                }
            }

            #[test]
            fn what_a_span_writes_is_stored(secs in 0u64..10_000_000_000) {
                let written = Span::from_secs(secs).to_string();
                prop_assert!(matches(&written), "{:?}", written);
            }
        }
    }
}
