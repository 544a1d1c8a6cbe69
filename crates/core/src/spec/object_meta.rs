//! Object metadata as kube-apiserver validates it on every write
//! (`ValidateObjectMeta` in `k8s.io/apimachinery`): label keys and values,
//! annotation keys and their total size, and the DNS names used for them.
//! Messages are kube-apiserver's. `check` holds a release's manifests to them
//! before anything is written; the simulated API server refuses with them.

use serde_json::Value;

/// The most bytes all of an object's annotations may take together.
pub const ANNOTATIONS_LIMIT: usize = 256 * 1024;

const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, \
     '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or \
     'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

const QUALIFIED_NAME: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and \
     must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', \
     regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// Every problem of `metadata`'s labels and annotations, as `field: message`.
pub fn check(metadata: &Value) -> Vec<String> {
    problems(metadata)
        .into_iter()
        .map(|(field, message)| format!("metadata.{field}: {message}"))
        .collect()
}

/// Every problem of `metadata`'s labels and annotations, as the field under
/// `metadata` (`labels`, `annotations`) and the message.
pub fn problems(metadata: &Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (key, value) in metadata["labels"].as_object().into_iter().flatten() {
        if let Err(e) = qualified_name(key) {
            out.push(("labels", format!("Invalid value: {key:?}: {e}")));
        }
        let v = value.as_str().unwrap_or_default();
        if v.len() > 63 {
            out.push((
                "labels",
                format!("Invalid value: {v:?}: must be no more than 63 characters"),
            ));
        } else if !v.is_empty() && !name_chars(v) {
            out.push(("labels", format!("Invalid value: {v:?}: {LABEL_VALUE}")));
        }
    }
    let mut total = 0;
    for (key, value) in metadata["annotations"].as_object().into_iter().flatten() {
        if let Err(e) = qualified_name(&key.to_lowercase()) {
            out.push(("annotations", format!("Invalid value: {key:?}: {e}")));
        }
        total += key.len() + value.as_str().map_or(0, str::len);
    }
    if total > ANNOTATIONS_LIMIT {
        out.push((
            "annotations",
            format!("Too long: must have at most {ANNOTATIONS_LIMIT} bytes"),
        ));
    }
    out
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`
fn name_chars(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of 1 to 63 characters.
fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err("prefix part must be non-empty".into());
        }
        dns1123_subdomain(p).map_err(|e| format!("prefix part {e}"))?;
    }
    if name.is_empty() {
        return Err("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 characters".into());
    }
    if !name_chars(name) {
        return Err(QUALIFIED_NAME.into());
    }
    Ok(())
}

fn dns1123_subdomain(s: &str) -> Result<(), String> {
    let ok = s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
                && part.ends_with(|c: char| c.is_ascii_alphanumeric())
        });
    if ok {
        return Ok(());
    }
    Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
         and must start and end with an alphanumeric character (e.g. 'example.com', regex used for \
         validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        .into())
}

/// A Namespace's name (and other DNS-1123 labels).
pub fn dns1123_label(s: &str) -> Result<(), String> {
    let ok = s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        return Ok(());
    }
    Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and \
         must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used \
         for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        .into())
}

/// A Service's name: a DNS-1035 label.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    let ok = s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        return Ok(());
    }
    Err("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an \
         alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', \
         regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
        .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_and_annotations_are_held_to_the_server_s_rules() {
        assert!(
            check(&json!({"labels": {"app.kubernetes.io/name": "web", "tier": ""}})).is_empty()
        );
        let bad = check(&json!({"labels": {
            "bad key!": "v", "example.com/": "v", "ok": "not ok!", "long": "x".repeat(64),
            "UPPER.example.com/x": "v",
        }}));
        assert_eq!(bad.len(), 5, "{bad:#?}");
        assert!(
            bad.iter()
                .all(|p| p.starts_with("metadata.labels: Invalid value: "))
        );
        let big = check(&json!({"annotations": {"note": "x".repeat(ANNOTATIONS_LIMIT)}}));
        assert_eq!(
            big,
            ["metadata.annotations: Too long: must have at most 262144 bytes"]
        );
    }

    #[test]
    fn service_and_namespace_names() {
        assert!(dns1035_label("checkout-green").is_ok());
        assert!(dns1035_label("2checkout-green").is_err());
        assert!(dns1035_label(&"a".repeat(64)).is_err());
        assert!(dns1123_label("2shop").is_ok());
        assert!(dns1123_label("shop.eu").is_err());
    }
}
