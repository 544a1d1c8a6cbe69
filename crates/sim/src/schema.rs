//! Custom resources against their CRD's OpenAPI v3 schema, as
//! apiextensions-apiserver treats them on every write: fields the schema does
//! not declare are pruned (a warning names each; under
//! `fieldValidation=Strict` they are refused), defaults are applied, then the
//! object is validated: types, `nullable`, `enum`, `required`, `minimum` and
//! `maximum`, `minLength` and `maxLength`, `minItems` and `maxItems`,
//! `minProperties` and `maxProperties`, int-or-string, `anyOf`, `pattern`
//! (RE2 syntax, as Go's regexp reads it) and the string formats below. Errors
//! are field paths in kube-apiserver's words (`k8s.io/apimachinery` field
//! errors, `k8s.io/kube-openapi` validation messages). CEL rules are
//! `cel.rs`'s, run after this.
//!
//! Formats: `date-time`, `date`, `byte`, `uuid`, `ipv4`, `ipv6`, `cidr` and
//! `hostname` are checked, as apiextensions' format registry checks them.
//! Other formats (`int32`, `double`, `uint32`, ...) are not validated, as a
//! real server ignores formats it does not know.

use serde_json::{Map, Value};

/// What a write meets: warnings for pruned fields, or the errors that refuse it.
#[derive(Debug, Default, PartialEq)]
pub struct Checked {
    /// `unknown field "spec.foo"`, one per pruned field.
    pub unknown: Vec<String>,
    pub errors: Vec<String>,
}

/// Prunes, defaults and validates `obj` (a whole custom resource) against `schema`.
pub fn check(schema: &Value, obj: &mut Value) -> Checked {
    let mut out = Checked::default();
    if let Some(map) = obj.as_object_mut() {
        // apiVersion, kind and metadata belong to the API machinery at the root.
        for (field, sub) in map.iter_mut() {
            if matches!(field.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match schema["properties"].get(field) {
                Some(s) => walk(s, sub, field, &mut out),
                None if preserves(schema) => {}
                None => out.unknown.push(format!("unknown field {field:?}")),
            }
        }
        if !preserves(schema) {
            let declared = |f: &str| {
                matches!(f, "apiVersion" | "kind" | "metadata")
                    || schema["properties"].get(f).is_some()
            };
            map.retain(|f, _| declared(f));
        }
        defaults(schema, map);
        required(schema, map, "", &mut out);
    }
    out
}

fn preserves(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true)
}

fn child(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn defaults(schema: &Value, map: &mut Map<String, Value>) {
    for (field, s) in schema["properties"].as_object().into_iter().flatten() {
        if !map.contains_key(field)
            && let Some(d) = s.get("default")
        {
            map.insert(field.clone(), d.clone());
        }
    }
}

fn required(schema: &Value, map: &Map<String, Value>, path: &str, out: &mut Checked) {
    for r in schema["required"].as_array().into_iter().flatten() {
        if let Some(r) = r.as_str()
            && !map.contains_key(r)
        {
            out.errors
                .push(format!("{}: Required value", child(path, r)));
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_fits(expected: &str, v: &Value) -> bool {
    let actual = type_name(v);
    actual == expected || (expected == "number" && actual == "integer")
}

/// Prunes, defaults and validates one value at `path`.
fn walk(schema: &Value, v: &mut Value, path: &str, out: &mut Checked) {
    if v.is_null() {
        if schema["nullable"] != Value::Bool(true) {
            // A null where the schema does not allow it is pruned as absent by
            // apiextensions when it has a default, else refused.
            if let Some(d) = schema.get("default") {
                *v = d.clone();
            } else if schema.get("type").is_some() {
                let t = schema["type"].as_str().unwrap_or_default();
                out.errors.push(format!(
                    "{path}: Invalid value: \"null\": {path} in body must be of type {t}: \"null\""
                ));
            }
        }
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == Value::Bool(true);
    if int_or_string {
        if !matches!(type_name(v), "integer" | "string") {
            out.errors.push(format!(
                "{path}: Invalid value: {v}: {path} in body must be of type integer or string: \"{}\"",
                type_name(v)
            ));
        }
    } else if let Some(t) = schema["type"].as_str()
        && !type_fits(t, v)
    {
        out.errors.push(format!(
            "{path}: Invalid value: \"{}\": {path} in body must be of type {t}: \"{}\"",
            type_name(v),
            type_name(v)
        ));
        return;
    }
    bounds(schema, v, path, out);
    if let Some(options) = schema["anyOf"].as_array()
        && !int_or_string
        && !options.iter().any(|o| {
            let mut probe = v.clone();
            let mut c = Checked::default();
            walk(o, &mut probe, path, &mut c);
            c.errors.is_empty()
        })
    {
        out.errors.push(format!(
            "{path}: Invalid value: {v}: {path} in body must match at least one schema in anyOf"
        ));
    }
    match v {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            let extra = schema.get("additionalProperties").filter(|a| a.is_object());
            let keep_unknown = preserves(schema)
                || schema["x-kubernetes-embedded-resource"] == Value::Bool(true)
                || extra.is_some()
                || schema.get("additionalProperties") == Some(&Value::Bool(true));
            let mut unknown = Vec::new();
            for (field, sub) in map.iter_mut() {
                let here = child(path, field);
                match (props.and_then(|p| p.get(field)), extra) {
                    (Some(s), _) | (None, Some(s)) => walk(s, sub, &here, out),
                    (None, None) if keep_unknown => {}
                    (None, None) => unknown.push(field.clone()),
                }
            }
            for field in unknown {
                out.unknown
                    .push(format!("unknown field {:?}", child(path, &field)));
                map.remove(&field);
            }
            defaults(schema, map);
            required(schema, map, path, out);
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(s, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// `pattern` and `format`, for strings.
fn string_rules(schema: &Value, s: &str, path: &str, out: &mut Checked) {
    if let Some(pattern) = schema["pattern"].as_str() {
        let matched = PATTERNS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let re = cache
                .entry(pattern.to_string())
                .or_insert_with(|| regex::Regex::new(pattern).ok());
            re.as_ref().is_none_or(|re| re.is_match(s))
        });
        if !matched {
            out.errors.push(format!(
                "{path}: Invalid value: {s:?}: {path} in body should match '{pattern}'"
            ));
        }
    }
    if let Some(format) = schema["format"].as_str()
        && !format_fits(format, s)
    {
        out.errors.push(format!(
            "{path}: Invalid value: {s:?}: {path} in body must be of type {format}: {s:?}"
        ));
    }
}

thread_local! {
    /// Compiled `pattern`s: a schema's are few and met on every write.
    static PATTERNS: std::cell::RefCell<std::collections::HashMap<String, Option<regex::Regex>>> =
        Default::default();
}

/// Whether `s` is a `format` the server checks; unknown formats always fit.
fn format_fits(format: &str, s: &str) -> bool {
    use std::net::{Ipv4Addr, Ipv6Addr};
    match format {
        "date-time" | "datetime" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.len() == 10 && s.parse::<jiff::civil::Date>().is_ok(),
        "byte" => is_base64(s),
        "uuid" => is_uuid(s),
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            let max = if ip.parse::<Ipv4Addr>().is_ok() {
                32
            } else if ip.parse::<Ipv6Addr>().is_ok() {
                128
            } else {
                return false;
            };
            bits.parse::<u8>().is_ok_and(|b| b <= max)
        }),
        "hostname" => {
            s.len() <= 255
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        }
        _ => true,
    }
}

fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len().is_multiple_of(4)
        && s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn bounds(schema: &Value, v: &Value, path: &str, out: &mut Checked) {
    if let Value::String(s) = v {
        string_rules(schema, s, path, out);
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(v)
    {
        let supported: Vec<String> = options.iter().map(Value::to_string).collect();
        out.errors.push(format!(
            "{path}: Unsupported value: {v}: supported values: {}",
            supported.join(", ")
        ));
    }
    let number = |k: &str| schema[k].as_f64();
    if let Some(x) = v.as_f64() {
        let exclusive = |k: &str| schema[k] == Value::Bool(true);
        if let Some(max) = number("maximum")
            && (x > max || (exclusive("exclusiveMaximum") && x >= max))
        {
            let op = if exclusive("exclusiveMaximum") {
                "less than"
            } else {
                "less than or equal to"
            };
            out.errors.push(format!(
                "{path}: Invalid value: {v}: {path} in body should be {op} {max}"
            ));
        }
        if let Some(min) = number("minimum")
            && (x < min || (exclusive("exclusiveMinimum") && x <= min))
        {
            let op = if exclusive("exclusiveMinimum") {
                "greater than"
            } else {
                "greater than or equal to"
            };
            out.errors.push(format!(
                "{path}: Invalid value: {v}: {path} in body should be {op} {min}"
            ));
        }
    }
    let count = |k: &str| schema[k].as_u64().map(|n| n as usize);
    let sized = match v {
        Value::String(s) => Some(("characters", s.chars().count(), "Length")),
        Value::Array(a) => Some(("items", a.len(), "Items")),
        Value::Object(m) => Some(("properties", m.len(), "Properties")),
        _ => None,
    };
    if let Some((what, n, suffix)) = sized {
        if let Some(max) = count(&format!("max{suffix}"))
            && n > max
        {
            out.errors.push(match what {
                "characters" => format!("{path}: Too long: may not be more than {max} bytes"),
                _ => format!("{path}: Too many: {n}: must have at most {max} {what}"),
            });
        }
        if let Some(min) = count(&format!("min{suffix}"))
            && n < min
        {
            out.errors.push(format!(
                "{path}: Invalid value: {n}: {path} in body should have at least {min} {what}"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["app"], "properties": {
                "app": {"type": "string", "maxLength": 8},
                "replicas": {"type": "integer", "minimum": 1, "default": 3},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "port": {"x-kubernetes-int-or-string": true},
                "refs": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {
                    "weight": {"type": "integer", "minimum": 0, "maximum": 1000000, "default": 1}}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "share": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]{1,2})?%?$"},
                "at": {"type": "string", "format": "date-time"},
                "id": {"type": "string", "format": "uuid"},
                "count": {"type": "integer", "format": "uint32"},
            }},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        }})
    }

    #[test]
    fn unknown_fields_are_pruned_with_a_warning_and_defaults_applied() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a", "whatever": 1},
            "spec": {"app": "web", "extra": 1, "refs": [{"weight": 5, "colour": "blue"}, {}],
                     "free": {"anything": [1]}, "labels": {"k": "v"}}, "other": true});
        let mut c = check(&schema(), &mut obj);
        assert_eq!(c.errors, Vec::<String>::new());
        c.unknown.sort();
        assert_eq!(
            c.unknown,
            [
                "unknown field \"other\"",
                "unknown field \"spec.extra\"",
                "unknown field \"spec.refs[0].colour\""
            ]
        );
        assert_eq!(obj["spec"]["replicas"], 3);
        assert_eq!(obj["spec"]["refs"][1]["weight"], 1);
        assert!(obj["spec"].get("extra").is_none() && obj.get("other").is_none());
        assert_eq!(obj["spec"]["free"]["anything"], json!([1]));
        assert_eq!(
            obj["metadata"]["whatever"], 1,
            "metadata is not the schema's"
        );
    }

    #[test]
    fn each_rule_class_is_refused_with_its_path() {
        let cases = [
            (
                json!({"app": "web", "replicas": "six"}),
                "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
            ),
            (json!({}), "spec.app: Required value"),
            (
                json!({"app": "a-very-long-app"}),
                "spec.app: Too long: may not be more than 8 bytes",
            ),
            (
                json!({"app": "web", "replicas": 0}),
                "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
            ),
            (
                json!({"app": "web", "mode": "c"}),
                "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
            ),
            (
                json!({"app": "web", "port": true}),
                "spec.port: Invalid value: true: spec.port in body must be of type integer or string: \"boolean\"",
            ),
            (
                json!({"app": "web", "refs": [{}, {}, {}]}),
                "spec.refs: Too many: 3: must have at most 2 items",
            ),
            (
                json!({"app": "web", "refs": [{"weight": 1000001}]}),
                "spec.refs[0].weight: Invalid value: 1000001: spec.refs[0].weight in body should be less than or equal to 1000000",
            ),
            (
                json!({"app": "web", "share": "12.345%"}),
                "spec.share: Invalid value: \"12.345%\": spec.share in body should match '^[0-9]+(\\.[0-9]{1,2})?%?$'",
            ),
            (
                json!({"app": "web", "at": "yesterday"}),
                "spec.at: Invalid value: \"yesterday\": spec.at in body must be of type date-time: \"yesterday\"",
            ),
            (
                json!({"app": "web", "id": "not-a-uuid"}),
                "spec.id: Invalid value: \"not-a-uuid\": spec.id in body must be of type uuid: \"not-a-uuid\"",
            ),
            (
                json!({"app": "web", "labels": {"k": 1}}),
                "spec.labels.k: Invalid value: \"integer\": spec.labels.k in body must be of type string: \"integer\"",
            ),
        ];
        let mut fine = json!({"spec": {"app": "web", "share": "2.5%", "at": "2026-12-03T10:00:00Z",
                                       "id": "123e4567-e89b-12d3-a456-426614174000", "count": 7}});
        assert_eq!(check(&schema(), &mut fine).errors, Vec::<String>::new());
        for (spec, expected) in cases {
            let mut obj = json!({"spec": spec});
            let c = check(&schema(), &mut obj);
            assert_eq!(c.errors, [expected], "{obj}");
        }
    }
}
