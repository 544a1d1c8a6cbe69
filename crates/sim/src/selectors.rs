//! Label and field selectors: the `labelSelector` and `fieldSelector` query
//! strings of list and watch, and `LabelSelector` objects (matchLabels and
//! matchExpressions) found in Deployments, spread constraints and PDBs.
//!
//! Pure matching on JSON objects; no store access.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A conjunction of label requirements; empty matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        for term in split_top_level(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            reqs.push(
                parse_requirement(term)
                    .ok_or_else(|| format!("unable to parse requirement: {term:?}"))?,
            );
        }
        Ok(LabelSelector(reqs))
    }

    /// A `metav1.LabelSelector` object. `None` (absent) selects nothing, as Kubernetes does
    /// for a missing selector; an empty object selects everything.
    pub fn from_object(v: &Value) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        if let Some(m) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in m {
                reqs.push(Requirement::Eq(
                    k.clone(),
                    val.as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        if let Some(exprs) = v.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e["key"]
                    .as_str()
                    .ok_or("matchExpressions[].key is required")?
                    .to_string();
                let values: Vec<String> = e["values"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                reqs.push(match e["operator"].as_str() {
                    Some("In") => Requirement::In(key, values),
                    Some("NotIn") => Requirement::NotIn(key, values),
                    Some("Exists") => Requirement::Exists(key),
                    Some("DoesNotExist") => Requirement::NotExists(key),
                    other => {
                        return Err(format!("{other:?} is not a valid label selector operator"));
                    }
                });
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Adds `key=value` (used for `matchLabelKeys`).
    pub fn and_equals(mut self, key: &str, value: &str) -> LabelSelector {
        self.0
            .push(Requirement::Eq(key.to_string(), value.to_string()));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A label the selector requires to equal a value (the first such), by
    /// which candidates can be looked up rather than all matched.
    pub fn an_equality(&self) -> Option<(&str, &str)> {
        self.0.iter().find_map(|r| match r {
            Requirement::Eq(k, v) => Some((k.as_str(), v.as_str())),
            _ => None,
        })
    }

    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }

    /// Matches an object's `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(obj["metadata"]["labels"].as_object())
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

fn parse_requirement(term: &str) -> Option<Requirement> {
    if let Some(open) = term.find('(') {
        let close = term.rfind(')')?;
        let values: Vec<String> = term[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        let left = term[..open].trim_end();
        let word_key = |op: &str| -> Option<String> {
            let key = left.strip_suffix(op)?;
            key.ends_with(char::is_whitespace)
                .then(|| key.trim().to_string())
                .filter(|k| valid_key(k))
        };
        if let Some(k) = word_key("notin") {
            return Some(Requirement::NotIn(k, values));
        }
        return word_key("in").map(|k| Requirement::In(k, values));
    }
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        return valid_key(key).then(|| Requirement::NotExists(key.to_string()));
    }
    for (op, not) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = term.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            if !valid_key(k) {
                return None;
            }
            return Some(if not {
                Requirement::NotEq(k.to_string(), v.to_string())
            } else {
                Requirement::Eq(k.to_string(), v.to_string())
            });
        }
    }
    valid_key(term).then(|| Requirement::Exists(term.to_string()))
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

/// `metadata.name=x,status.phase!=Running`: equality on dotted field paths.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector(Vec<(Vec<String>, bool, String)>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, negate, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, false, v)
            } else {
                return Err(format!(
                    "invalid field selector: {term:?}: expected field=value or field!=value"
                ));
            };
            let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(format!("invalid field selector: {term:?}"));
            }
            terms.push((path, negate, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, negate, want)| {
            let got = path.iter().try_fold(obj, |v, seg| v.get(seg.as_str()));
            let got = match got {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (got == *want) != *negate
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p1", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selector_table() {
        let p = pod(json!({"app": "web", "colour": "green", "tier": "1"}));
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=api", false),
            ("app!=api", true),
            ("missing!=x", true),
            ("colour in (blue, green)", true),
            ("colour in (blue)", false),
            ("colour notin (blue)", true),
            ("colour notin (green,blue)", false),
            ("missing notin (x)", true),
            ("tier", true),
            ("missing", false),
            ("!missing", true),
            ("!tier", false),
            ("app=web,colour in (green),!canary", true),
            ("app=web,colour=blue", false),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap();
            assert_eq!(s.matches_object(&p), want, "{sel}");
        }
        for bad in ["a in b", "=x", "a b c", "x in(y"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selector_objects_match_like_their_strings() {
        let p = pod(json!({"app": "web", "colour": "green"}));
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "colour", "operator": "In", "values": ["green"]},
            {"key": "canary", "operator": "DoesNotExist"}
        ]});
        assert!(LabelSelector::from_object(&sel).unwrap().matches_object(&p));
        let other = json!({"matchExpressions": [{"key": "colour", "operator": "NotIn", "values": ["green"]}]});
        assert!(
            !LabelSelector::from_object(&other)
                .unwrap()
                .matches_object(&p)
        );
        assert!(
            LabelSelector::from_object(
                &json!({"matchExpressions": [{"key": "a", "operator": "Near"}]})
            )
            .is_err()
        );
    }

    #[test]
    fn field_selector_table() {
        let p = pod(json!({}));
        let cases = [
            ("metadata.name=p1", true),
            ("metadata.name==p2", false),
            ("metadata.namespace!=ns", false),
            ("spec.nodeName=n1,status.phase=Running", true),
            ("spec.nodeName=", false),
            ("status.podIP=", true),
        ];
        for (sel, want) in cases {
            assert_eq!(
                FieldSelector::parse(sel).unwrap().matches(&p),
                want,
                "{sel}"
            );
        }
        assert!(FieldSelector::parse("metadata.name").is_err());
    }
}
