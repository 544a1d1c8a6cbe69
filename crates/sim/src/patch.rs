//! The four ways a client can patch: JSON merge patch, JSON patch, strategic
//! merge patch (lists of named objects merge by key; `$patch` directives),
//! and server-side apply (merge the applied configuration, record the field
//! manager's fields in `managedFields`, drop fields it stopped applying).
//!
//! Pure functions on JSON; the store applies the result under its lock.

use serde_json::{Map, Value, json};

/// The patch formats, by request `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Option<PatchKind> {
        let ct = ct.split(';').next().unwrap_or_default().trim();
        match ct {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchKind::Apply)
            }
            _ => None,
        }
    }
}

/// Applies a JSON patch (RFC 6902).
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops: json_patch::Patch =
        serde_json::from_value(ops.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(target, &ops).map_err(|e| e.to_string())
}

/// Applies a JSON merge patch (RFC 7386).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Keys by which Kubernetes merges lists of objects, tried in order.
const MERGE_KEYS: [&str; 8] = [
    "name",
    "containerPort",
    "mountPath",
    "devicePath",
    "topologyKey",
    "type",
    "uid",
    "port",
];

/// The merge key shared by every object in both lists, if the lists hold only objects.
fn merge_key(a: &[Value], b: &[Value]) -> Option<&'static str> {
    let items: Vec<&Map<String, Value>> = a
        .iter()
        .chain(b)
        .map(|v| v.as_object())
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .filter(|m| !(m.len() == 1 && m.contains_key("$patch")))
        .collect();
    if items.is_empty() {
        return None;
    }
    MERGE_KEYS.into_iter().find(|k| {
        items
            .iter()
            .all(|m| m.get(*k).is_some_and(|v| !v.is_null()))
    })
}

/// Applies a strategic merge patch. With `keyed` false (custom resources) lists are replaced.
pub fn strategic_merge(target: &mut Value, patch: &Value, keyed: bool) {
    let Value::Object(pm) = patch else {
        *target = patch.clone();
        return;
    };
    match pm.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = strip_directives(patch);
            return;
        }
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = json!({});
    }
    let Some(tm) = target.as_object_mut() else {
        return;
    };
    if let Some(keep) = pm.get("$retainKeys").and_then(Value::as_array) {
        tm.retain(|k, _| keep.iter().any(|x| x == k.as_str()) || pm.contains_key(k));
    }
    for (k, v) in pm {
        if k.starts_with('$') {
            if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/")
                && let (Some(Value::Array(list)), Some(gone)) = (tm.get_mut(field), v.as_array())
            {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        match v {
            Value::Null => {
                tm.remove(k);
            }
            Value::Object(o) if o.get("$patch").and_then(Value::as_str) == Some("delete") => {
                tm.remove(k);
            }
            Value::Object(_) => {
                let slot = tm.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(slot, v, keyed);
            }
            Value::Array(items) if keyed => {
                let slot = tm.entry(k.clone()).or_insert_with(|| json!([]));
                merge_list(slot, items, keyed);
            }
            other => {
                tm.insert(k.clone(), strip_directives(other));
            }
        }
    }
}

fn merge_list(target: &mut Value, patch: &[Value], keyed: bool) {
    let current: Vec<Value> = target.as_array().cloned().unwrap_or_default();
    if patch.iter().any(|p| {
        p.get("$patch").and_then(Value::as_str) == Some("replace")
            && p.as_object().is_some_and(|m| m.len() == 1)
    }) {
        *target = Value::Array(
            patch
                .iter()
                .filter(|p| p.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        );
        return;
    }
    let Some(key) = merge_key(&current, patch) else {
        *target = Value::Array(patch.iter().map(strip_directives).collect());
        return;
    };
    let mut out = current;
    for item in patch {
        let id = &item[key];
        let pos = out.iter().position(|x| &x[key] == id);
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            out.retain(|x| &x[key] != id);
            continue;
        }
        match pos {
            Some(i) => strategic_merge(&mut out[i], item, keyed),
            None => out.push(strip_directives(item)),
        }
    }
    *target = Value::Array(out);
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Metadata fields the server owns; never part of a manager's fields.
const SERVER_FIELDS: [&str; 8] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "deletionTimestamp",
];

/// The `fieldsV1` tree of the fields an object sets (`f:<field>`, `k:{…}` for keyed list items).
pub fn fields_of(obj: &Value, keyed: bool) -> Value {
    fn walk(m: &Map<String, Value>, keyed: bool, top: bool, in_meta: bool) -> Map<String, Value> {
        let mut out = Map::new();
        for (k, v) in m {
            if (top && (k == "apiVersion" || k == "kind"))
                || (in_meta && SERVER_FIELDS.contains(&k.as_str()))
            {
                continue;
            }
            let sub = match v {
                Value::Object(o) if !o.is_empty() => {
                    Value::Object(walk(o, keyed, false, top && k == "metadata"))
                }
                Value::Array(items) if keyed && merge_key(items, &[]).is_some() => {
                    let key = merge_key(items, &[]).unwrap_or("name");
                    let mut entries = Map::new();
                    for item in items {
                        let mut fields = item
                            .as_object()
                            .map(|o| walk(o, keyed, false, false))
                            .unwrap_or_default();
                        fields.insert(".".to_string(), json!({}));
                        entries.insert(
                            format!("k:{}", json!({ key: item[key] })),
                            Value::Object(fields),
                        );
                    }
                    Value::Object(entries)
                }
                _ => json!({}),
            };
            out.insert(format!("f:{k}"), sub);
        }
        out
    }
    obj.as_object()
        .map(|m| Value::Object(walk(m, keyed, true, false)))
        .unwrap_or_else(|| json!({}))
}

/// Removes from `obj` the fields `before` owned that `after` no longer does, unless `others` own them.
fn drop_released(obj: &mut Value, before: &Value, after: &Value, others: &[&Value]) {
    let Some(bm) = before.as_object() else { return };
    for (field, sub) in bm {
        if field == "." {
            continue;
        }
        let next_others: Vec<&Value> = others.iter().filter_map(|o| o.get(field)).collect();
        match after.get(field) {
            Some(a) => {
                if let Some(child) = child_mut(obj, field) {
                    drop_released(child, sub, a, &next_others);
                }
            }
            None if next_others.is_empty() => remove_child(obj, field),
            None => {}
        }
    }
}

fn child_mut<'a>(obj: &'a mut Value, field: &str) -> Option<&'a mut Value> {
    if let Some(name) = field.strip_prefix("f:") {
        return obj.as_object_mut()?.get_mut(name);
    }
    let key: Map<String, Value> = serde_json::from_str(field.strip_prefix("k:")?).ok()?;
    obj.as_array_mut()?
        .iter_mut()
        .find(|item| key.iter().all(|(k, v)| &item[k] == v))
}

fn remove_child(obj: &mut Value, field: &str) {
    if let Some(name) = field.strip_prefix("f:") {
        if let Some(m) = obj.as_object_mut() {
            m.remove(name);
        }
    } else if let Some(key) = field
        .strip_prefix("k:")
        .and_then(|k| serde_json::from_str::<Map<String, Value>>(k).ok())
        && let Some(items) = obj.as_array_mut()
    {
        items.retain(|item| !key.iter().all(|(k, v)| &item[k] == v));
    }
}

/// A field another manager owns and an apply would change: who, and the
/// field's path as structured-merge-diff prints it (`.spec.replicas`,
/// `.spec.template.spec.containers[name="web"].image`).
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// As kube-apiserver's `printManager`: `"kubectl"`, or
    /// `"kubectl" using apps/v1 at <time>` for an Update.
    pub manager: String,
    pub path: String,
}

fn print_manager(entry: &Value) -> String {
    let name = format!("{:?}", entry["manager"].as_str().unwrap_or_default());
    if entry["operation"] == "Update" {
        let version = entry["apiVersion"].as_str().unwrap_or_default();
        return match entry["time"].as_str() {
            Some(t) => format!("{name} using {version} at {t}"),
            None => format!("{name} using {version}"),
        };
    }
    name
}

fn print_element(element: &str) -> String {
    if let Some(name) = element.strip_prefix("f:") {
        return format!(".{name}");
    }
    let key: Map<String, Value> = element
        .strip_prefix("k:")
        .and_then(|k| serde_json::from_str(k).ok())
        .unwrap_or_default();
    let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("[{}]", parts.join(","))
}

/// The value at a `fieldsV1` path of an object.
fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut at = obj;
    for element in path {
        at = if let Some(name) = element.strip_prefix("f:") {
            at.get(name)?
        } else {
            let key: Map<String, Value> = serde_json::from_str(element.strip_prefix("k:")?).ok()?;
            at.as_array()?
                .iter()
                .find(|item| key.iter().all(|(k, v)| &item[k] == v))?
        };
    }
    Some(at)
}

/// The leaf paths of a `fieldsV1` tree.
fn leaves(tree: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let children: Vec<(&String, &Value)> = tree
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| k.as_str() != ".").collect())
        .unwrap_or_default();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.push(prefix.clone());
        }
        return;
    }
    for (k, sub) in children {
        prefix.push(k.clone());
        leaves(sub, prefix, out);
        prefix.pop();
    }
}

fn owns(tree: &Value, path: &[String]) -> bool {
    let mut at = tree;
    for element in path {
        match at.get(element) {
            Some(next) => at = next,
            None => return false,
        }
    }
    true
}

/// Removes a path from a `fieldsV1` tree, and the parents it leaves empty.
fn disown(tree: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(m) = tree.as_object_mut() else {
        return;
    };
    if rest.is_empty() {
        m.remove(first);
        return;
    }
    if let Some(child) = m.get_mut(first) {
        disown(child, rest);
        if child
            .as_object()
            .is_some_and(|c| c.keys().all(|k| k == "."))
        {
            m.remove(first);
        }
    }
}

/// The fields `manager`'s apply of `applied` would change that other
/// managers own (structured-merge-diff's conflict rule: a field set to a
/// value other than the live one, owned by someone else). With `force`,
/// the caller takes them over instead.
pub fn conflicts(current: &Value, applied: &Value, manager: &str, keyed: bool) -> Vec<Conflict> {
    let mut paths = Vec::new();
    leaves(&fields_of(applied, keyed), &mut Vec::new(), &mut paths);
    let entries = current["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for path in paths {
        let wanted = value_at(applied, &path);
        // A map with nothing owned inside (metadata with only a name) is a
        // structure, not a value: only values conflict.
        let structure = wanted.is_some_and(|w| w.as_object().is_some_and(|m| !m.is_empty()));
        if wanted.is_none() || structure || value_at(current, &path) == wanted {
            continue;
        }
        for e in &entries {
            let mine = e["manager"] == manager && e["operation"] == "Apply";
            if !mine && owns(&e["fieldsV1"], &path) {
                out.push(Conflict {
                    manager: print_manager(e),
                    path: path.iter().map(|p| print_element(p)).collect(),
                });
            }
        }
    }
    out
}

/// Takes `paths` (as `conflicts` found them) away from every other manager
/// of `obj`; an entry left owning nothing goes.
fn take_over(obj: &mut Value, applied: &Value, manager: &str, keyed: bool) {
    let mut paths = Vec::new();
    leaves(&fields_of(applied, keyed), &mut Vec::new(), &mut paths);
    let Some(entries) = obj["metadata"]["managedFields"].as_array_mut() else {
        return;
    };
    for e in entries.iter_mut() {
        if e["manager"] == manager && e["operation"] == "Apply" {
            continue;
        }
        for path in &paths {
            disown(&mut e["fieldsV1"], path);
        }
    }
    entries.retain(|e| {
        e["fieldsV1"]
            .as_object()
            .is_some_and(|m| m.keys().any(|k| k != "."))
    });
}

/// Server-side apply: the object after `manager` applies `applied` over
/// `current`. Other managers' fields it changes are conflicts (the 409's
/// list), unless `force` takes them over.
pub fn apply_checked(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    keyed: bool,
    api_version: &str,
    now: &str,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let Some(live) = current else {
        return Ok(apply(None, applied, manager, keyed, api_version, now));
    };
    let found = conflicts(live, applied, manager, keyed);
    if !found.is_empty() && !force {
        return Err(found);
    }
    let mut live = live.clone();
    if force {
        take_over(&mut live, applied, manager, keyed);
    }
    Ok(apply(
        Some(&live),
        applied,
        manager,
        keyed,
        api_version,
        now,
    ))
}

/// Server-side apply: the object after `manager` applies `applied` over `current`.
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    keyed: bool,
    api_version: &str,
    now: &str,
) -> Value {
    let mine = fields_of(applied, keyed);
    let mut obj = current.cloned().unwrap_or_else(|| json!({"metadata": {}}));
    let mut entries: Vec<Value> = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let is_mine = |e: &Value| e["manager"] == manager && e["operation"] == "Apply";
    if let Some(before) = entries
        .iter()
        .find(|e| is_mine(e))
        .map(|e| e["fieldsV1"].clone())
    {
        let others: Vec<&Value> = entries
            .iter()
            .filter(|e| !is_mine(e))
            .map(|e| &e["fieldsV1"])
            .collect();
        drop_released(&mut obj, &before, &mine, &others);
    }
    let mut body = applied.clone();
    if let Some(m) = body["metadata"].as_object_mut() {
        for f in SERVER_FIELDS {
            m.remove(f);
        }
    }
    strategic_merge(&mut obj, &without_nulls(&body), keyed);
    entries.retain(|e| !is_mine(e));
    entries.push(json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": mine,
    }));
    obj["metadata"]["managedFields"] = Value::Array(entries);
    obj
}

/// Records an `Update` by `manager` that set `fields` (a patch body or the new object).
pub fn record_update(
    obj: &mut Value,
    manager: &str,
    fields: &Value,
    keyed: bool,
    api_version: &str,
    now: &str,
) {
    let mut entries: Vec<Value> = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    entries.retain(|e| !(e["manager"] == manager && e["operation"] == "Update"));
    entries.push(json!({
        "manager": manager,
        "operation": "Update",
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_of(fields, keyed),
    }));
    obj["metadata"]["managedFields"] = Value::Array(entries);
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"spec": {"containers": [
            {"name": "web", "image": "web:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "side:1"}
        ], "args": ["a", "b"]}})
    }

    #[test]
    fn strategic_merge_merges_named_lists_and_honours_directives() {
        let mut p = pod();
        strategic_merge(
            &mut p,
            &json!({"spec": {"containers": [{"name": "web", "image": "web:2", "env": [{"name": "B", "value": "2"}]}]}}),
            true,
        );
        let cs = p["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["image"], "web:2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(cs[1]["image"], "side:1");
        strategic_merge(
            &mut p,
            &json!({"spec": {"containers": [{"name": "side", "$patch": "delete"}], "args": ["c"]}}),
            true,
        );
        assert_eq!(p["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(p["spec"]["args"], json!(["c"]));
        strategic_merge(
            &mut p,
            &json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o"}]}}),
            true,
        );
        assert_eq!(
            p["spec"]["containers"],
            json!([{"name": "only", "image": "o"}])
        );
    }

    #[test]
    fn unkeyed_strategic_merge_replaces_lists() {
        let mut p = pod();
        strategic_merge(
            &mut p,
            &json!({"spec": {"containers": [{"name": "web", "image": "web:9"}]}}),
            false,
        );
        assert_eq!(
            p["spec"]["containers"],
            json!([{"name": "web", "image": "web:9"}])
        );
    }

    #[test]
    fn json_and_merge_patches() {
        let mut p = pod();
        json_patch(
            &mut p,
            &json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "x"}]),
        )
        .unwrap();
        assert_eq!(p["spec"]["containers"][0]["image"], "x");
        assert!(
            json_patch(
                &mut p,
                &json!([{"op": "test", "path": "/spec/args/0", "value": "zz"}])
            )
            .is_err()
        );
        merge_patch(&mut p, &json!({"spec": {"args": null, "extra": 1}}));
        assert!(p["spec"].get("args").is_none());
        assert_eq!(p["spec"]["extra"], 1);
    }

    #[test]
    fn apply_drops_fields_the_manager_stopped_applying() {
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1", "b": "2"}}, "data": {"x": "1", "y": "2"}});
        let obj = apply(None, &first, "cutover", true, "v1", "t1");
        assert_eq!(obj["data"], json!({"x": "1", "y": "2"}));
        assert_eq!(obj["metadata"]["managedFields"][0]["manager"], "cutover");
        assert!(
            obj["metadata"]["managedFields"][0]["fieldsV1"]["f:metadata"]["f:labels"]["f:a"]
                .is_object()
        );
        // Someone else adds a field; it survives our next apply.
        let mut obj2 = obj.clone();
        obj2["data"]["z"] = json!("3");
        record_update(
            &mut obj2,
            "kubectl-edit",
            &json!({"data": {"z": "3"}}),
            true,
            "v1",
            "t2",
        );
        let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "9"}});
        let obj3 = apply(Some(&obj2), &second, "cutover", true, "v1", "t3");
        assert_eq!(obj3["data"], json!({"x": "9", "z": "3"}));
        assert_eq!(obj3["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(
            obj3["metadata"]["managedFields"].as_array().unwrap().len(),
            2
        );
    }

    #[test]
    fn apply_removes_keyed_list_items_it_owned() {
        let v1 = json!({"spec": {"containers": [{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]}});
        let obj = apply(None, &v1, "m", true, "v1", "t");
        let v2 = json!({"spec": {"containers": [{"name": "a", "image": "a2"}]}});
        let obj = apply(Some(&obj), &v2, "m", true, "v1", "t");
        assert_eq!(
            obj["spec"]["containers"],
            json!([{"name": "a", "image": "a2"}])
        );
    }

    #[test]
    fn an_apply_conflicts_on_changed_fields_others_own_and_force_takes_them() {
        let first = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "web", "image": "a"}]}}}});
        let live = apply(None, &first, "cutover", true, "apps/v1", "t0");
        let mut second = first.clone();
        second["spec"]["replicas"] = json!(3);
        second["spec"]["template"]["spec"]["containers"][0]["image"] = json!("b");
        let found = conflicts(&live, &second, "kubectl", true);
        assert_eq!(
            found,
            [Conflict {
                manager: "\"cutover\"".into(),
                path: ".spec.template.spec.containers[name=\"web\"].image".into()
            }],
            "replicas keeps its value: shared, not a conflict"
        );
        assert!(
            apply_checked(
                Some(&live),
                &second,
                "kubectl",
                true,
                "apps/v1",
                "t1",
                false
            )
            .is_err()
        );
        let taken =
            apply_checked(Some(&live), &second, "kubectl", true, "apps/v1", "t1", true).unwrap();
        assert_eq!(
            taken["spec"]["template"]["spec"]["containers"][0]["image"],
            "b"
        );
        // cutover no longer owns the image: its own apply of another image
        // now conflicts with kubectl.
        let back = conflicts(&taken, &first, "cutover", true);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].manager, "\"kubectl\"");
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchKind::Merge)
        );
        assert_eq!(
            PatchKind::from_content_type("application/apply-patch+yaml"),
            Some(PatchKind::Apply)
        );
        assert_eq!(PatchKind::from_content_type("text/plain"), None);
    }
}
