//! Small helpers over Kubernetes objects held as JSON: metadata fields,
//! timestamps in the API's formats, UIDs, and status conditions.
//!
//! Pure functions; shared by the store and the simulated controllers.

use jiff::Timestamp;
use serde_json::{Map, Value, json};

/// `metav1.Time`: RFC 3339 with whole seconds.
pub fn time(ts: Timestamp) -> String {
    Timestamp::from_second(ts.as_second())
        .unwrap_or(ts)
        .to_string()
}

/// `metav1.MicroTime`: RFC 3339 with microseconds.
pub fn micro_time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses either time format back.
pub fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

/// A random version-4 UUID.
pub fn new_uid() -> String {
    let a: u128 = rand::random();
    let hex = format!("{a:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// `n` random lowercase letters and digits that Kubernetes uses in generated names.
pub fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..n)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

pub fn namespace(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or_default()
}

pub fn uid(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or_default()
}

pub fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["labels"][key].as_str()
}

pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    obj["metadata"]["labels"].as_object()
}

pub fn is_terminating(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null()
}

pub fn resource_version(obj: &Value) -> Option<u64> {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
}

/// The condition of `type` in `status.conditions`.
pub fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Whether `status.conditions[type]` is `"True"`.
pub fn condition_true(obj: &Value, kind: &str) -> bool {
    condition(obj, kind).is_some_and(|c| c["status"] == "True")
}

/// Sets a condition in `status.conditions`, keeping `lastTransitionTime` unless the
/// status changed. Extra fields (`lastProbeTime`, `lastUpdateTime`…) are set when given.
pub fn set_condition(
    obj: &mut Value,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
    extra_times: &[&str],
) {
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    if !obj["status"]["conditions"].is_array() {
        obj["status"]["conditions"] = json!([]);
    }
    let Some(conds) = obj["status"]["conditions"].as_array_mut() else {
        return;
    };
    let existing = conds.iter_mut().find(|c| c["type"] == kind);
    let changed = existing.as_ref().is_none_or(|c| c["status"] != status);
    let mut cond = json!({"type": kind, "status": status});
    if !reason.is_empty() {
        cond["reason"] = json!(reason);
    }
    if !message.is_empty() {
        cond["message"] = json!(message);
    }
    let transition = match (&existing, changed) {
        (Some(c), false) => c["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    cond["lastTransitionTime"] = transition;
    for field in extra_times {
        let keep = existing
            .as_ref()
            .filter(|_| !changed)
            .map(|c| c[*field].clone())
            .filter(|v| !v.is_null());
        let same_reason = existing
            .as_ref()
            .is_some_and(|c| c["reason"] == cond["reason"] && c["message"] == cond["message"]);
        cond[*field] = match keep {
            Some(v) if same_reason => v,
            _ => json!(now),
        };
    }
    match existing {
        Some(c) => *c = cond,
        None => conds.push(cond),
    }
}

/// Canonical JSON text (keys sorted at every level), for hashing.
pub fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// A short stable hash of a JSON value, spelled like Kubernetes' `pod-template-hash`.
pub fn short_hash(v: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    // FNV-1a, 64 bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical(v).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut out = String::new();
    for _ in 0..10 {
        out.push(ALPHABET[(h % ALPHABET.len() as u64) as usize] as char);
        h /= ALPHABET.len() as u64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_use_the_api_formats() {
        let ts: Timestamp = "2026-01-01T10:00:00.123456789Z".parse().unwrap();
        assert_eq!(time(ts), "2026-01-01T10:00:00Z");
        assert_eq!(micro_time(ts), "2026-01-01T10:00:00.123456Z");
        assert_eq!(
            parse_time("2026-01-01T10:00:00Z").unwrap().as_second(),
            ts.as_second()
        );
    }

    #[test]
    fn uids_look_like_uuids() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
        assert_ne!(u, new_uid());
    }

    #[test]
    fn hash_ignores_key_order_but_not_values() {
        let a = json!({"a": 1, "b": {"c": [1, 2], "d": "x"}});
        let b: Value = serde_json::from_str(r#"{"b": {"d": "x", "c": [1, 2]}, "a": 1}"#).unwrap();
        assert_eq!(short_hash(&a), short_hash(&b));
        assert_ne!(short_hash(&a), short_hash(&json!({"a": 2})));
        assert_eq!(short_hash(&a).len(), 10);
    }

    #[test]
    fn conditions_keep_transition_time_until_status_changes() {
        let mut o = json!({});
        set_condition(&mut o, "Ready", "True", "KubeletReady", "", "t1", &[]);
        set_condition(&mut o, "Ready", "True", "KubeletReady", "", "t2", &[]);
        assert_eq!(condition(&o, "Ready").unwrap()["lastTransitionTime"], "t1");
        set_condition(&mut o, "Ready", "False", "NodeNotReady", "down", "t3", &[]);
        let c = condition(&o, "Ready").unwrap();
        assert_eq!(
            (c["status"].as_str(), c["lastTransitionTime"].as_str()),
            (Some("False"), Some("t3"))
        );
        assert!(!condition_true(&o, "Ready"));
        assert_eq!(o["status"]["conditions"].as_array().unwrap().len(), 1);
    }
}
