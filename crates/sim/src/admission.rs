//! What the API server does to an object on the way in, per kind: defaults
//! (a Service's cluster IP, a Deployment's strategy, a new Pod's `Pending`
//! status), validation a real server would refuse with 422, and CRDs
//! registering their kinds.
//!
//! Called by the store under its lock; pure apart from the registry it is given.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::api_error::{ApiError, ApiResult};
use super::kinds::{Kind, Registry};
use super::meta;
use super::request::FieldValidation;
use super::selectors::LabelSelector;

/// Defaults and checks before a write is committed.
pub fn admit(
    kind: &Kind,
    old: Option<&Value>,
    obj: &mut Value,
    registry: &Registry,
    now: Timestamp,
) -> ApiResult<()> {
    time_precision(kind, obj)?;
    match (kind.group.as_str(), kind.plural.as_str()) {
        ("", "namespaces") => {
            let name = meta::name(obj).to_string();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            if obj["status"]["phase"].is_null() {
                obj["status"]["phase"] = json!("Active");
            }
        }
        ("", "pods") => pod_defaults(obj, old.is_none()),
        ("", "services") => service_defaults(obj, old),
        ("", "secrets") => secret_string_data(obj),
        ("apps", "deployments") => deployment_defaults(kind, old, obj)?,
        ("batch", "jobs") => job_defaults(kind, old, obj)?,
        ("batch", "cronjobs") => cron_job_checks(kind, obj)?,
        ("apiextensions.k8s.io", "customresourcedefinitions") => crd_status(obj, registry)?,
        ("events.k8s.io", "events") => event_limits(kind, obj)?,
        ("coordination.k8s.io", "leases") => lease_spec(obj)?,
        ("", "events") => {
            event_limits(kind, obj)?;
            if obj["firstTimestamp"].is_null() && obj["eventTime"].is_null() {
                obj["firstTimestamp"] = json!(meta::time(now));
            }
            if obj["lastTimestamp"].is_null() && !obj["firstTimestamp"].is_null() {
                obj["lastTimestamp"] = obj["firstTimestamp"].clone();
            }
            if obj["count"].is_null() {
                obj["count"] = json!(1);
            }
        }
        _ => {}
    }
    if let Some(schema) = &kind.schema {
        custom_resource(kind, schema, old, obj)?;
    }
    Ok(())
}

/// Built-in time fields as the API server stores them: `metav1.MicroTime`
/// with microseconds, `metav1.Time` with whole seconds (both truncated, as
/// their JSON marshalling does), and a 400 for a value that is no RFC 3339
/// time. A client that compares a time it wrote with the one it reads back
/// meets the same precision here as on a real cluster.
fn time_precision(kind: &Kind, obj: &mut Value) -> ApiResult<()> {
    const MICRO: bool = true;
    const SECONDS: bool = false;
    let fields: &[(&[&str], bool)] = match (kind.group.as_str(), kind.plural.as_str()) {
        ("coordination.k8s.io", "leases") => &[
            (&["spec", "acquireTime"], MICRO),
            (&["spec", "renewTime"], MICRO),
        ],
        ("events.k8s.io", "events") => &[
            (&["eventTime"], MICRO),
            (&["series", "lastObservedTime"], MICRO),
            (&["deprecatedFirstTimestamp"], SECONDS),
            (&["deprecatedLastTimestamp"], SECONDS),
        ],
        ("", "events") => &[
            (&["eventTime"], MICRO),
            (&["series", "lastObservedTime"], MICRO),
            (&["firstTimestamp"], SECONDS),
            (&["lastTimestamp"], SECONDS),
        ],
        _ => &[],
    };
    for (path, micro) in fields {
        let Some(at) = obj.pointer_mut(&format!("/{}", path.join("/"))) else {
            continue;
        };
        let Some(text) = at.as_str() else { continue };
        let ts = meta::parse_time(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: parsing time {text:?} as RFC 3339: {}: cannot parse",
                kind.kind,
                kind.storage_version(),
                kind.kind,
                path.join(".")
            ))
        })?;
        *at = json!(if *micro {
            meta::micro_time(ts)
        } else {
            meta::time(ts)
        });
    }
    Ok(())
}

/// A custom resource through its CRD's schema: unknown fields pruned (or
/// refused under `fieldValidation=Strict`), defaults applied, then validated,
/// then its CEL rules (`oldSelf` is the object before an update).
fn custom_resource(
    kind: &Kind,
    schema: &Value,
    old: Option<&Value>,
    obj: &mut Value,
) -> ApiResult<()> {
    let mut checked = super::schema::check(schema, obj);
    if !checked.unknown.is_empty() {
        match super::request::field_validation() {
            FieldValidation::Strict => {
                let fields: Vec<String> = checked
                    .unknown
                    .iter()
                    .map(|u| u.trim_start_matches("unknown field ").to_string())
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "{} in version {:?} cannot be handled as a {}: strict decoding error: unknown field {}",
                    kind.kind,
                    kind.storage_version(),
                    kind.kind,
                    fields.join(", unknown field ")
                )));
            }
            FieldValidation::Warn => checked
                .unknown
                .iter()
                .for_each(|u| super::request::warn(u.clone())),
            FieldValidation::Ignore => {}
        }
    }
    if checked.errors.is_empty()
        && let Some(rules) = &kind.rules
    {
        checked.errors = rules.check(obj, old);
    }
    if checked.errors.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid_fields(
        &kind.group,
        &kind.plural,
        meta::name(obj),
        &checked.errors,
    ))
}

/// After a write: a CRD's kind becomes servable.
pub fn after_commit(kind: &Kind, obj: &Value, registry: &mut Registry) {
    if is_crd(kind)
        && let Ok(k) = Kind::from_crd(obj)
    {
        registry.install(k);
    }
}

/// After a delete: a CRD's kind stops being served; returns it so its objects go too.
pub fn after_delete(kind: &Kind, obj: &Value, registry: &mut Registry) -> Option<Kind> {
    if !is_crd(kind) {
        return None;
    }
    let k = Kind::from_crd(obj).ok()?;
    registry
        .remove(&k.group, &k.plural)
        .map(Arc::unwrap_or_clone)
}

fn is_crd(kind: &Kind) -> bool {
    kind.group == "apiextensions.k8s.io" && kind.plural == "customresourcedefinitions"
}

/// As the API server does: `stringData` is written into `data` (base64) and dropped.
fn secret_string_data(obj: &mut Value) {
    let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    for (k, v) in strings {
        let bytes = k8s_openapi::ByteString(v.as_str().unwrap_or_default().as_bytes().to_vec());
        obj["data"][k] = serde_json::to_value(bytes).unwrap_or_default();
    }
}

fn pod_defaults(obj: &mut Value, create: bool) {
    let spec = &mut obj["spec"];
    for (field, value) in [
        ("restartPolicy", json!("Always")),
        ("schedulerName", json!("default-scheduler")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("serviceAccountName", json!("default")),
    ] {
        if spec[field].is_null() {
            spec[field] = value;
        }
    }
    if create && obj["status"].is_null() {
        obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
    }
}

/// The rules of a structural schema that apiextensions checks when a CRD is
/// written (apiextensions-apiserver `validation.go` and `structural`):
/// `items` is one schema object, never a list of them; every node states its
/// `type` unless it preserves unknown fields or is int-or-string (nodes inside
/// `anyOf`, `allOf`, `oneOf` and `not` may leave it out).
fn structural(node: &Value, path: &str, in_junctor: bool, out: &mut Vec<String>) {
    let Some(map) = node.as_object() else {
        return;
    };
    let exempt = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
        || map.get("x-kubernetes-int-or-string") == Some(&json!(true));
    if !in_junctor && !exempt && !map.contains_key("type") {
        out.push(format!(
            "{path}.type: Required value: must not be empty for specified object fields"
        ));
    }
    match map.get("items") {
        Some(Value::Array(_)) => out.push(format!(
            "{path}.items: Forbidden: items must be a schema object and not an array"
        )),
        Some(items) => structural(items, &format!("{path}.items"), false, out),
        None => {}
    }
    for (name, prop) in map
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        structural(prop, &format!("{path}.properties[{name}]"), false, out);
    }
    if let Some(extra) = map.get("additionalProperties").filter(|v| v.is_object()) {
        structural(extra, &format!("{path}.additionalProperties"), false, out);
    }
    for junctor in ["anyOf", "allOf", "oneOf"] {
        for (i, n) in map
            .get(junctor)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            structural(n, &format!("{path}.{junctor}[{i}]"), true, out);
        }
    }
}

/// Event fields a real server limits (kube-apiserver
/// A Lease's spec as `pkg/apis/coordination/validation` checks it: a
/// duration above 0 and transitions not below 0 (the strategy and preferred
/// holder fields belong to a feature gate that is off).
fn lease_spec(obj: &Value) -> ApiResult<()> {
    let spec = &obj["spec"];
    let mut problems = Vec::new();
    if let Some(d) = spec["leaseDurationSeconds"].as_i64()
        && d <= 0
    {
        problems.push(format!(
            "spec.leaseDurationSeconds: Invalid value: {d}: must be greater than 0"
        ));
    }
    if let Some(t) = spec["leaseTransitions"].as_i64()
        && t < 0
    {
        problems.push(format!(
            "spec.leaseTransitions: Invalid value: {t}: must be greater than or equal to 0"
        ));
    }
    for gated in ["strategy", "preferredHolder"] {
        if !spec[gated].is_null() {
            problems.push(format!(
                "spec.{gated}: Forbidden: may only be specified if CoordinatedLeaderElection is enabled"
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid_fields(
        "coordination.k8s.io",
        "leases",
        meta::name(obj),
        &problems,
    ))
}

/// `pkg/apis/core/validation/events.go`: `ReportingInstanceLengthLimit`,
/// `ActionLengthLimit`, `ReasonLengthLimit` 128; `NoteLengthLimit` 1024 once
/// `eventTime` is set, as it always is for events.k8s.io/v1).
fn event_limits(kind: &Kind, obj: &Value) -> ApiResult<()> {
    let note = if kind.group == "events.k8s.io" {
        "note"
    } else {
        "message"
    };
    let new_style = kind.group == "events.k8s.io" || !obj["eventTime"].is_null();
    let mut limits = vec![("reportingInstance", 128), ("action", 128), ("reason", 128)];
    if kind.group == "events.k8s.io" {
        limits.push(("reportingController", 253));
    }
    if new_style {
        limits.push((note, 1024));
    }
    let problems: Vec<String> = limits
        .into_iter()
        .filter_map(|(field, limit)| {
            let len = obj[field].as_str().map_or(0, str::len);
            (len > limit).then(|| format!("{field}: Too long: may not be more than {limit} bytes"))
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid_fields(
        &kind.group,
        &kind.plural,
        meta::name(obj),
        &problems,
    ))
}

fn service_defaults(obj: &mut Value, old: Option<&Value>) {
    let spec = &mut obj["spec"];
    if spec["type"].is_null() {
        spec["type"] = json!("ClusterIP");
    }
    if spec["sessionAffinity"].is_null() {
        spec["sessionAffinity"] = json!("None");
    }
    if spec["clusterIP"].is_null() {
        let ip = match old.map(|o| o["spec"]["clusterIP"].clone()) {
            Some(Value::String(ip)) => ip,
            _ => {
                let h = meta::short_hash(&json!([
                    meta::namespace(obj),
                    meta::name(obj),
                    meta::uid(obj)
                ]));
                let n = h
                    .bytes()
                    .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
                format!("10.96.{}.{}", (n >> 8) % 256, n % 254 + 1)
            }
        };
        obj["spec"]["clusterIP"] = json!(ip);
        obj["spec"]["clusterIPs"] = json!([obj["spec"]["clusterIP"]]);
    }
    if let Some(ports) = obj["spec"]["ports"].as_array_mut() {
        for p in ports {
            if p["protocol"].is_null() {
                p["protocol"] = json!("TCP");
            }
            if p["targetPort"].is_null() {
                p["targetPort"] = p["port"].clone();
            }
        }
    }
    if obj["status"].is_null() {
        obj["status"] = json!({"loadBalancer": {}});
    }
}

fn deployment_defaults(kind: &Kind, old: Option<&Value>, obj: &mut Value) -> ApiResult<()> {
    let name = meta::name(obj).to_string();
    let invalid = |p: &str| ApiError::invalid(&kind.group, &kind.plural, &name, p.to_string());
    let spec = &mut obj["spec"];
    if spec["replicas"].is_null() {
        spec["replicas"] = json!(1);
    }
    if spec["strategy"].is_null() {
        spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
    }
    for (field, value) in [
        ("revisionHistoryLimit", 10),
        ("progressDeadlineSeconds", 600),
    ] {
        if spec[field].is_null() {
            spec[field] = json!(value);
        }
    }
    if !spec["selector"].is_object() {
        return Err(invalid("spec.selector: Required value"));
    }
    let selector = LabelSelector::from_object(&spec["selector"])
        .map_err(|e| invalid(&format!("spec.selector: {e}")))?;
    if selector.is_empty() {
        return Err(invalid(
            "spec.selector: Invalid value: empty selector is invalid for deployment",
        ));
    }
    if !selector.matches(spec["template"]["metadata"]["labels"].as_object()) {
        return Err(invalid(
            "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`",
        ));
    }
    if let Some(old) = old
        && old["spec"]["selector"] != obj["spec"]["selector"]
    {
        return Err(invalid("spec.selector: Invalid value: field is immutable"));
    }
    if obj["status"].is_null() {
        obj["status"] = json!({});
    }
    Ok(())
}

/// A Job as kube-apiserver admits it (pkg/registry/batch/job/strategy.go
/// `PrepareForCreate` generates the selector and the pod labels;
/// pkg/apis/batch/validation/validation.go `ValidateJob` checks them): the
/// generated labels carry the Job's name, so a name longer than a label value
/// (63 characters) is refused; the pod template must not restart for ever;
/// and the template is immutable once created.
fn job_defaults(kind: &Kind, old: Option<&Value>, obj: &mut Value) -> ApiResult<()> {
    let name = meta::name(obj).to_string();
    let invalid = |p: String| ApiError::invalid(&kind.group, &kind.plural, &name, p);
    if name.len() > 63 {
        return Err(invalid(format!(
            "metadata.labels[batch.kubernetes.io/job-name]: Invalid value: \"{name}\": must be no more than 63 characters"
        )));
    }
    restart_policy(&obj["spec"]["template"], "spec.template.spec.restartPolicy")
        .map_err(invalid)?;
    if let Some(old) = old {
        if old["spec"]["template"] != obj["spec"]["template"] {
            return Err(invalid(
                "spec.template: Invalid value: field is immutable".into(),
            ));
        }
        return Ok(());
    }
    let uid = obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let spec = &mut obj["spec"];
    for (field, value) in [("parallelism", 1), ("completions", 1), ("backoffLimit", 6)] {
        if spec[field].is_null() {
            spec[field] = json!(value);
        }
    }
    if spec["completionMode"].is_null() {
        spec["completionMode"] = json!("NonIndexed");
    }
    if spec["suspend"].is_null() {
        spec["suspend"] = json!(false);
    }
    if spec["manualSelector"] != json!(true) {
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        let labels = &mut spec["template"]["metadata"]["labels"];
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", uid.as_str()),
            ("controller-uid", uid.as_str()),
            ("batch.kubernetes.io/job-name", name.as_str()),
            ("job-name", name.as_str()),
        ] {
            labels[k] = json!(v);
        }
    }
    if obj["status"].is_null() {
        obj["status"] = json!({});
    }
    Ok(())
}

/// A CronJob's Job template must not restart for ever either
/// (`ValidateCronJobSpec` validates its Job template's spec).
fn cron_job_checks(kind: &Kind, obj: &Value) -> ApiResult<()> {
    let name = meta::name(obj).to_string();
    if obj["spec"]["schedule"].as_str().is_none_or(str::is_empty) {
        return Err(ApiError::invalid(
            &kind.group,
            &kind.plural,
            &name,
            "spec.schedule: Required value".to_string(),
        ));
    }
    restart_policy(
        &obj["spec"]["jobTemplate"]["spec"]["template"],
        "spec.jobTemplate.spec.template.spec.restartPolicy",
    )
    .map_err(|p| ApiError::invalid(&kind.group, &kind.plural, &name, p))
}

/// A Job's pods restart `OnFailure` or `Never`; an unset policy defaults to
/// `Always`, which a Job refuses.
fn restart_policy(template: &Value, field: &str) -> Result<(), String> {
    let policy = template["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or("Always");
    if matches!(policy, "OnFailure" | "Never") {
        return Ok(());
    }
    Err(format!(
        "{field}: Unsupported value: \"{policy}\": supported values: \"OnFailure\", \"Never\""
    ))
}

fn crd_status(obj: &mut Value, registry: &Registry) -> ApiResult<()> {
    let k = Kind::from_crd(obj)?;
    let mut problems = Vec::new();
    for (i, v) in obj["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("spec.versions[{i}].schema.openAPIV3Schema");
        structural(&v["schema"]["openAPIV3Schema"], &path, false, &mut problems);
        super::cel::compile_problems(&v["schema"]["openAPIV3Schema"], &path, &mut problems);
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid_fields(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            meta::name(obj),
            &problems,
        ));
    }
    if registry
        .by_resource(&k.group, &k.plural)
        .is_some_and(|existing| !existing.custom)
    {
        return Err(ApiError::invalid(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            meta::name(obj),
            format!(
                "spec.group: {} {} is served by the API server itself",
                k.group, k.plural
            ),
        ));
    }
    let mut names = obj["spec"]["names"].clone();
    names["singular"] = json!(k.singular);
    names["listKind"] = names
        .get("listKind")
        .cloned()
        .unwrap_or_else(|| json!(format!("{}List", k.kind)));
    obj["spec"]["names"]["listKind"] = names["listKind"].clone();
    let established = |kind: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": "True", "reason": reason, "message": message,
               "lastTransitionTime": obj["metadata"]["creationTimestamp"]})
    };
    obj["status"] = json!({
        "acceptedNames": names,
        "conditions": [
            established("NamesAccepted", "NoConflicts", "no conflicts found"),
            established("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": [k.storage_version()],
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployments() -> Kind {
        Registry::with_builtins()
            .by_resource("apps", "deployments")
            .map(Arc::unwrap_or_clone)
            .unwrap()
    }

    fn deploy(selector: Value, labels: Value) -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"selector": selector, "template": {"metadata": {"labels": labels}}}})
    }

    #[test]
    fn deployments_get_defaults_and_selector_checks() {
        let reg = Registry::with_builtins();
        let now = Timestamp::UNIX_EPOCH;
        let mut d = deploy(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
        );
        admit(&deployments(), None, &mut d, &reg, now).unwrap();
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        let mut bad = deploy(
            json!({"matchLabels": {"app": "api"}}),
            json!({"app": "web"}),
        );
        let err = admit(&deployments(), None, &mut bad, &reg, now).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(err.message.contains("does not match"), "{}", err.message);
        let mut moved = deploy(
            json!({"matchLabels": {"app": "web", "x": "y"}}),
            json!({"app": "web", "x": "y"}),
        );
        let err = admit(&deployments(), Some(&d), &mut moved, &reg, now).unwrap_err();
        assert!(err.message.contains("immutable"), "{}", err.message);
    }

    #[test]
    fn services_get_a_cluster_ip_they_keep() {
        let reg = Registry::with_builtins();
        let svc = reg.by_resource("", "services").unwrap();
        let mut s = json!({"metadata": {"name": "web", "namespace": "a", "uid": "u1"}, "spec": {"ports": [{"port": 80}]}});
        admit(&svc, None, &mut s, &reg, Timestamp::UNIX_EPOCH).unwrap();
        let ip = s["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert!(ip.starts_with("10.96."), "{ip}");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        let mut again =
            json!({"metadata": {"name": "web", "namespace": "a", "uid": "u1"}, "spec": {}});
        admit(&svc, Some(&s), &mut again, &reg, Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(again["spec"]["clusterIP"], ip.as_str());
    }
}
