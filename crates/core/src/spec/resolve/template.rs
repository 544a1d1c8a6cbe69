//! The workload template: images pinned, labels valid, the pod template whole.

use super::*;

pub(super) fn check_label_value(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{v:?} cannot be a label value: use 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

pub(super) fn resolve_template(
    spec: &ReleaseSpec,
    out: &mut Vec<Finding>,
) -> Option<PodTemplateSpec> {
    let w = &spec.workload;
    let (mut template, at) = match (&w.template, &w.deployment) {
        (Some(t), None) => (t.clone(), "spec.workload.template"),
        (None, Some(d)) => match d.spec.as_ref().map(|s| s.template.clone()) {
            Some(t) => (t, "spec.workload.deployment.spec.template"),
            None => {
                out.push(Finding::input(
                    "spec.workload.deployment",
                    "the Deployment has no `spec.template`",
                ));
                return None;
            }
        },
        (Some(_), Some(_)) => {
            out.push(Finding::input(
                "spec.workload",
                "set either `template` or `deployment`, not both",
            ));
            return None;
        }
        (None, None) => {
            out.push(Finding::input(
                "spec.workload",
                "say what to run: set `template` (a pod template) or `deployment` (a Deployment manifest)",
            ));
            return None;
        }
    };
    object_limits(&template.metadata, &format!("{at}.metadata"), out);
    let Some(pod) = template.spec.as_mut() else {
        out.push(Finding::input(at, "the pod template has no `spec`"));
        return None;
    };
    if pod.containers.is_empty() {
        out.push(Finding::input(
            format!("{at}.spec.containers"),
            "at least one container is required",
        ));
        return None;
    }
    let mut known = BTreeSet::new();
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        known.insert(c.name.clone());
    }
    for (name, image) in &spec.images {
        if !known.contains(name) {
            let list: Vec<_> = known.iter().map(String::as_str).collect();
            out.push(Finding::input(
                format!("spec.images.{name}"),
                format!(
                    "no container named {name:?} in the workload; containers are {}",
                    list.join(", ")
                ),
            ));
            continue;
        }
        if image.trim().is_empty() {
            out.push(Finding::input(
                format!("spec.images.{name}"),
                "the image must not be empty",
            ));
        }
        for c in pod
            .containers
            .iter_mut()
            .chain(pod.init_containers.iter_mut().flatten())
        {
            if &c.name == name {
                c.image = Some(image.clone());
            }
        }
    }
    for (i, c) in pod.containers.iter().enumerate() {
        if c.image.as_deref().is_none_or(|s| s.trim().is_empty()) {
            out.push(Finding::input(
                format!("{at}.spec.containers[{i}].image"),
                format!(
                    "container {:?} has no image; set it here or in `spec.images`",
                    c.name
                ),
            ));
        }
    }
    Some(template)
}

/// Labels and annotations of `meta` held to kube-apiserver's limits (label
/// syntax and 63 characters, annotation keys, 256 KiB of annotations in all),
/// each problem at `at`, before anything is written.
pub(super) fn object_limits(
    meta: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    at: &str,
    out: &mut Vec<Finding>,
) {
    let Some(meta) = meta else { return };
    let value = serde_json::to_value(meta).unwrap_or_default();
    for (field, message) in crate::spec::object_meta::problems(&value) {
        out.push(Finding::input(format!("{at}.{field}"), message));
    }
}
