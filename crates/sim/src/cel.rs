//! `x-kubernetes-validations`: the CEL rules of a CRD's schema, compiled when
//! the CRD is written and evaluated on every write of its objects, as
//! apiextensions-apiserver does (`pkg/apiserver/schema/cel/validation.go`).
//!
//! The rules run on kube-cel: the Kubernetes CEL library (the extension
//! functions kube-apiserver registers, escaped property names such as
//! `__namespace__`) on the cel-rust interpreter.
//!
//! - `self` is the value at the rule's node; a rule that reads `oldSelf` runs
//!   only on an update where the old object has that node too.
//! - A failure is a field error at the node (or at its `fieldPath`), with the
//!   rule's `message`, or `failed rule: <rule>` without one. The value shown is
//!   the node's type, and `reason` picks Forbidden, Required or Duplicate
//!   instead of Invalid (`fieldErrorForReason`).
//! - Rules run only when the object passed its schema, as a type error blocks
//!   CEL in kube-apiserver.
//!
//! - Validation ratcheting (KEP-4008, `CRDValidationRatcheting`, on by
//!   default since v1.30 and GA in v1.33): a rule's failure on a value the
//!   update left as it was is not an error. Here at the grain of the
//!   schema's top-level fields: an update that leaves every field holding a
//!   rule as it was (a status write under a spec's rules) runs no rule.
//!
//! Not modelled: the cost budget, and ratcheting below a top-level field (an
//! unchanged value inside a changed field that fails a rule added later is
//! still refused here).

use std::sync::Arc;

use kube_cel::{CompiledSchema, ErrorKind, ValidationError};
use serde_json::{Map, Value};

/// The rules of one CRD version's schema, compiled once.
#[derive(Clone)]
pub struct Rules {
    /// The schema with only the branches that hold a rule (whole below a rule,
    /// so values convert with their formats): a write walks no further.
    schema: Arc<Value>,
    compiled: Arc<CompiledSchema>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("schema", &self.schema)
            .finish()
    }
}

impl PartialEq for Rules {
    fn eq(&self, other: &Self) -> bool {
        self.schema == other.schema
    }
}

impl Rules {
    /// The rules of `schema`, or `None` when it has none.
    pub fn of(schema: &Value) -> Option<Rules> {
        let schema = with_rules_only(schema)?;
        let compiled = kube_cel::compile_schema(&schema);
        Some(Rules {
            schema: Arc::new(schema),
            compiled: Arc::new(compiled),
        })
    }

    /// Field errors, in kube-apiserver's words, for each rule `obj` fails.
    pub fn check(&self, obj: &Value, old: Option<&Value>) -> Vec<String> {
        if old.is_some_and(|old| self.unchanged(obj, old)) {
            return Vec::new();
        }
        VALIDATOR.with(|v| match v.validate_compiled(&self.compiled, obj, old) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|e| self.field_error(e)).collect(),
        })
    }

    /// Whether every top-level field that holds a rule is as it was
    /// (the whole object, when the root holds one).
    fn unchanged(&self, obj: &Value, old: &Value) -> bool {
        let root = self.schema.as_ref();
        let whole = root.get("x-kubernetes-validations").is_some()
            || root.get("items").is_some()
            || root
                .get("additionalProperties")
                .is_some_and(Value::is_object);
        if whole {
            return obj == old;
        }
        root["properties"]
            .as_object()
            .is_some_and(|f| f.keys().all(|k| obj.get(k) == old.get(k)))
    }

    fn field_error(&self, e: &ValidationError) -> String {
        let path = e.field_path.trim_start_matches('.');
        let path = if path.is_empty() { "<nil>" } else { path };
        let message = match e.kind {
            ErrorKind::ValidationFailure => e.message.clone(),
            // kube-apiserver: an evaluation error is an Invalid with this detail.
            _ => format!("Internal error: {}", e.message),
        };
        match e.reason.as_deref() {
            Some("FieldValueForbidden") => format!("{path}: Forbidden: {message}"),
            Some("FieldValueRequired") => format!("{path}: Required value: {message}"),
            Some("FieldValueDuplicate") => {
                format!("{path}: Duplicate value: {:?}", self.node_type(e))
            }
            _ => format!("{path}: Invalid value: {:?}: {message}", self.node_type(e)),
        }
    }

    /// The `type` of the schema node a failed rule is declared on.
    fn node_type(&self, e: &ValidationError) -> String {
        let rule = self.rule_of(e);
        let mut path = e.field_path.as_str();
        if let Some(fp) = rule.and_then(|r| r["fieldPath"].as_str()) {
            path = path.strip_suffix(fp).unwrap_or(path);
        }
        let mut node = self.schema.as_ref();
        for seg in segments(path) {
            node = match seg {
                Segment::Field(f) => node["properties"]
                    .get(f)
                    .or_else(|| node.get("additionalProperties"))
                    .unwrap_or(&Value::Null),
                Segment::Index => &node["items"],
            };
        }
        node["type"].as_str().unwrap_or("object").to_string()
    }

    fn rule_of(&self, e: &ValidationError) -> Option<&Value> {
        fn find<'a>(node: &'a Value, rule: &str) -> Option<&'a Value> {
            if let Some(r) = node["x-kubernetes-validations"]
                .as_array()
                .and_then(|rs| rs.iter().find(|r| r["rule"] == rule))
            {
                return Some(r);
            }
            let children = node["properties"]
                .as_object()
                .into_iter()
                .flat_map(Map::values)
                .chain(node.get("items"))
                .chain(node.get("additionalProperties"));
            children.into_iter().find_map(|c| find(c, rule))
        }
        find(&self.schema, &e.rule)
    }
}

thread_local! {
    /// The Kubernetes CEL environment: registering its functions once per thread.
    static VALIDATOR: kube_cel::Validator = kube_cel::Validator::new();
}

enum Segment<'a> {
    Field(&'a str),
    Index,
}

/// `spec.rules[0].backendRefs[1]` → spec, rules, [], backendRefs, [].
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (field, rest) = part.split_once('[').unwrap_or((part, ""));
        if !field.is_empty() {
            out.push(Segment::Field(field));
        }
        out.extend(
            rest.split('[')
                .filter(|r| !r.is_empty())
                .map(|_| Segment::Index),
        );
    }
    out
}

/// `schema` cut down to the branches that lead to a rule, or `None` without rules.
fn with_rules_only(schema: &Value) -> Option<Value> {
    if schema.get("x-kubernetes-validations").is_some() {
        return Some(schema.clone());
    }
    let obj = schema.as_object()?;
    let mut kept = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "properties" => {
                let props: Map<String, Value> = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(name, s)| with_rules_only(s).map(|s| (name.clone(), s)))
                    .collect();
                if !props.is_empty() {
                    kept.insert(k.clone(), Value::Object(props));
                }
            }
            "items" | "additionalProperties" => {
                if let Some(s) = with_rules_only(v) {
                    kept.insert(k.clone(), s);
                }
            }
            "allOf" | "anyOf" | "oneOf" | "not" => {}
            _ => {
                kept.insert(k.clone(), v.clone());
            }
        }
    }
    let leads = kept.contains_key("properties")
        || kept.contains_key("items")
        || kept
            .get("additionalProperties")
            .is_some_and(Value::is_object);
    leads.then_some(Value::Object(kept))
}

/// What apiextensions refuses in a CRD's rules when the CRD is written: a
/// rule or messageExpression that does not compile, and a rule outside a
/// typed node. `path` is the schema's field path.
pub fn compile_problems(schema: &Value, path: &str, out: &mut Vec<String>) {
    for (i, rule) in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let here = format!("{path}.x-kubernetes-validations[{i}]");
        let text = rule["rule"].as_str().unwrap_or_default();
        if text.trim().is_empty() {
            out.push(format!("{here}.rule: Required value"));
            continue;
        }
        if let Err(e) = kube_cel::cel::Program::compile(text) {
            out.push(format!(
                "{here}.rule: Invalid value: {text:?}: compilation failed: ERROR: {}",
                first_line(&e.to_string())
            ));
        }
        if let Some(m) = rule["messageExpression"].as_str()
            && let Err(e) = kube_cel::cel::Program::compile(m)
        {
            out.push(format!(
                "{here}.messageExpression: Invalid value: {m:?}: messageExpression compilation failed: ERROR: {}",
                first_line(&e.to_string())
            ));
        }
        if let Some(reason) = rule["reason"].as_str()
            && !matches!(
                reason,
                "FieldValueInvalid"
                    | "FieldValueForbidden"
                    | "FieldValueRequired"
                    | "FieldValueDuplicate"
            )
        {
            out.push(format!(
                "{here}.reason: Unsupported value: {reason:?}: supported values: \"FieldValueDuplicate\", \"FieldValueForbidden\", \"FieldValueInvalid\", \"FieldValueRequired\""
            ));
        }
    }
    for (name, s) in schema["properties"].as_object().into_iter().flatten() {
        compile_problems(s, &format!("{path}.properties[{name}]"), out);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(s) = schema.get(key).filter(|s| s.is_object()) {
            compile_problems(s, &format!("{path}.{key}"), out);
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "x-kubernetes-validations": [
                        {"rule": "self.app == oldSelf.app", "message": "app is immutable", "fieldPath": ".app"},
                    ],
                    "properties": {
                        "app": {"type": "string"},
                        "refs": {"type": "array", "items": {
                            "type": "object",
                            "x-kubernetes-validations": [
                                {"rule": "(size(self.group) == 0 && self.kind == 'Service') ? has(self.port) : true",
                                 "message": "Must have port for Service reference"},
                                {"rule": "self.__namespace__ != 'kube-system'", "reason": "FieldValueForbidden",
                                 "message": "no backends in kube-system"},
                            ],
                            "properties": {"group": {"type": "string"}, "kind": {"type": "string"},
                                           "namespace": {"type": "string"}, "port": {"type": "integer"}}}},
                    },
                },
                "status": {"type": "object", "properties": {"points": {"type": "array", "items": {"type": "number"}}}},
            },
        })
    }

    #[test]
    fn only_the_branches_with_rules_are_kept() {
        let kept = with_rules_only(&schema()).unwrap();
        assert!(kept["properties"].get("status").is_none());
        assert!(
            kept["properties"]["spec"]["properties"]
                .get("app")
                .is_some()
        );
        assert!(
            with_rules_only(&json!({"type": "object", "properties": {"a": {"type": "string"}}}))
                .is_none()
        );
    }

    #[test]
    fn failed_rules_are_field_errors_at_their_node_with_its_type() {
        let rules = Rules::of(&schema()).unwrap();
        let ok = json!({"spec": {"app": "web", "refs": [{"group": "", "kind": "Service", "namespace": "prod", "port": 80}]}});
        assert_eq!(rules.check(&ok, None), Vec::<String>::new());
        let bad = json!({"spec": {"app": "api", "refs": [
            {"group": "", "kind": "Service", "namespace": "prod", "port": 80},
            {"group": "", "kind": "Service", "namespace": "kube-system"}]}});
        let mut errors = rules.check(&bad, Some(&ok));
        errors.sort();
        assert_eq!(
            errors,
            [
                "spec.app: Invalid value: \"object\": app is immutable",
                "spec.refs[1]: Forbidden: no backends in kube-system",
                "spec.refs[1]: Invalid value: \"object\": Must have port for Service reference",
            ]
        );
        // On create, the transition rule does not run.
        assert_eq!(rules.check(&bad, None).len(), 2);
    }

    /// KEP-4008 (CRD validation ratcheting, GA in v1.33): a failure on a
    /// value the update did not change is not an error, so an update that
    /// changes no field holding a rule (a status write) runs none.
    #[test]
    fn an_update_that_leaves_every_field_with_a_rule_as_it_was_is_not_refused_by_them() {
        let rules = Rules::of(&schema()).unwrap();
        // Stored before the kube-system rule existed.
        let stored = json!({"spec": {"app": "web", "refs": [{"group": "", "kind": "Service", "namespace": "kube-system", "port": 80}]},
                            "status": {"points": [1]}});
        let mut status_write = stored.clone();
        status_write["status"]["points"] = json!([1, 2]);
        assert_eq!(
            rules.check(&status_write, Some(&stored)),
            Vec::<String>::new()
        );
        let mut spec_write = stored.clone();
        spec_write["spec"]["app"] = json!("api");
        let errors = rules.check(&spec_write, Some(&stored));
        assert_eq!(errors.len(), 2, "a changed spec runs its rules: {errors:?}");
    }

    #[test]
    fn rules_that_do_not_compile_are_named_by_path() {
        let mut out = Vec::new();
        let s = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.a =="}, {"rule": "true", "reason": "Because"}]}}});
        compile_problems(&s, "spec.validation.openAPIV3Schema", &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].starts_with(
            "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: \"self.a ==\": compilation failed: ERROR:"
        ));
        assert!(
            out[1].contains("x-kubernetes-validations[1].reason: Unsupported value: \"Because\"")
        );
    }
}
