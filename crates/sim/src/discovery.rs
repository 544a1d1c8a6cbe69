//! Discovery and OpenAPI, the non-resource endpoints clients read before
//! anything else: `/version`, `/api`, `/apis`, the resource list of every
//! group version, and just enough OpenAPI for `kubectl apply`.
//!
//! kubectl 1.32 validates with server-side field validation when the
//! OpenAPI v3 document of a group version shows a PATCH operation for the
//! kind that takes a `fieldValidation` query parameter; otherwise it falls
//! back to client-side validation against OpenAPI v2. So `/openapi/v3`
//! serves an index and, per group version, paths with that parameter, and
//! the schemas of custom resources for `kubectl explain` (kubectl computes
//! patches from its built-in types, or as JSON merge patches for custom
//! resources, as the PATCH operations offer no strategic merge). `/openapi/v2`
//! answers with an empty document, a valid message in both JSON and protobuf.

use serde_json::{Value, json};

use super::kinds::{Kind, Registry};

pub const SERVER_VERSION: &str = "v1.33.0-sim";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": SERVER_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions(address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    })
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let gv = |v: &String| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    json!({
        "name": group,
        "versions": versions.iter().map(gv).collect::<Vec<_>>(),
        "preferredVersion": versions.first().map(gv).unwrap_or(Value::Null),
    })
}

/// `/apis`: every named group.
pub fn group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_entry(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`.
pub fn group(reg: &Registry, name: &str) -> Option<Value> {
    let (g, vs) = reg
        .groups()
        .into_iter()
        .find(|(g, _)| g == name && !g.is_empty())?;
    let mut v = group_entry(&g, &vs);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/api/v1` or `/apis/<group>/<version>`.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let kinds = reg.in_group_version(group, version);
    if kinds.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for k in &kinds {
        let mut r = json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": VERBS,
        });
        if !k.short_names.is_empty() {
            r["shortNames"] = json!(k.short_names);
        }
        if !k.categories.is_empty() {
            r["categories"] = json!(k.categories);
        }
        resources.push(r);
        if k.status {
            resources.push(json!({"name": format!("{}/status", k.plural), "singularName": "", "namespaced": k.namespaced,
                                  "kind": k.kind, "verbs": ["get", "patch", "update"]}));
        }
        if k.scale {
            resources.push(json!({"name": format!("{}/scale", k.plural), "singularName": "", "namespaced": k.namespaced,
                                  "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The path of a group version in the OpenAPI v3 index: `api/v1`, `apis/apps/v1`.
fn v3_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per group version. The hash changes when the kinds do, so
/// clients that cache documents by URL see new CRDs.
pub fn openapi_v3_index(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, vs) in reg.groups() {
        for v in vs {
            // The hash covers the schemas too, so clients that cache
            // documents by URL see a changed CRD.
            let kinds: Vec<Value> = reg
                .in_group_version(&g, &v)
                .iter()
                .map(|k| json!([k.plural, k.schema.as_deref()]))
                .collect();
            let hash = super::meta::short_hash(&json!(kinds));
            let p = v3_path(&g, &v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
            );
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<api/v1 | apis/g/v>`: the operations of each kind, and the
/// schemas of custom resources as kube-apiserver publishes them (what
/// `kubectl explain` reads); built-in kinds have no schema here.
pub fn openapi_v3_document(reg: &Registry, path: &str) -> Option<Value> {
    let (group, version) = match path.split('/').collect::<Vec<_>>()[..] {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    let kinds = reg.in_group_version(&group, &version);
    if kinds.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for k in &kinds {
        if let Some(schema) = &k.schema {
            schemas.extend(custom_resource_schemas(k, &version, schema));
        }
        let base = format!("/{}", v3_path(&group, &version));
        let item = if k.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", k.plural)
        } else {
            format!("{base}/{}/{{name}}", k.plural)
        };
        paths.insert(item.clone(), operations(k, &version, true));
        let collection = item.trim_end_matches("/{name}").to_string();
        paths.insert(collection, operations(k, &version, false));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// `cutover.dev` → `dev.cutover`: how kube-openapi names definitions.
fn definition_prefix(group: &str, version: &str) -> String {
    let mut parts: Vec<&str> = group.split('.').collect();
    parts.reverse();
    format!("{}.{version}", parts.join("."))
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// A custom resource's definitions as apiextensions' OpenAPI builder
/// (`pkg/controller/openapi/builder`) publishes them: the kind's schema with
/// `apiVersion`, `kind` and `metadata` added and its group-version-kind as a
/// list, the list kind's schema, and the metadata definitions they refer to.
fn custom_resource_schemas(
    k: &Kind,
    version: &str,
    schema: &Value,
) -> serde_json::Map<String, Value> {
    let prefix = definition_prefix(&k.group, version);
    let gvk = |kind: &str| json!([{"group": k.group, "version": version, "kind": kind}]);
    let type_meta = |props: &mut serde_json::Map<String, Value>, meta: &str, meta_doc: &str| {
        props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
        props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
        props.insert("metadata".into(), json!({"allOf": [{"$ref": format!("#/components/schemas/{meta}")}], "description": meta_doc}));
    };
    let mut kind_schema = schema.clone();
    let mut props = kind_schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    type_meta(
        &mut props,
        OBJECT_META,
        "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
    );
    kind_schema["properties"] = Value::Object(props);
    kind_schema["x-kubernetes-group-version-kind"] = gvk(&k.kind);
    let mut list_props = serde_json::Map::new();
    type_meta(
        &mut list_props,
        LIST_META,
        "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
    );
    list_props.insert("items".into(), json!({"type": "array", "description": format!("List of {}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md", k.plural),
        "items": {"$ref": format!("#/components/schemas/{prefix}.{}", k.kind)}}));
    let list = json!({"type": "object", "description": format!("{}List is a list of {}", k.kind, k.kind),
        "required": ["items"], "properties": list_props, "x-kubernetes-group-version-kind": gvk(&format!("{}List", k.kind))});
    let field = |description: &str| json!({"type": "string", "description": description});
    let object_meta = json!({
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "properties": {
            "name": field("Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated."),
            "namespace": field("Namespace defines the space within which each name must be unique. An empty namespace is equivalent to the \"default\" namespace, but \"default\" is the canonical representation. Not all objects are required to be scoped to a namespace - the value of this field for those objects will be empty."),
            "generateName": field("GenerateName is an optional prefix, used by the server, to generate a unique name ONLY IF the Name field has not been provided."),
            "uid": field("UID is the unique in time and space value for this object. It is typically generated by the server on successful creation of a resource and is not allowed to change on PUT operations."),
            "resourceVersion": field("An opaque value that represents the internal version of this object that can be used by clients to determine when objects have changed."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state. Populated by the system. Read-only."},
            "creationTimestamp": field("CreationTimestamp is a timestamp representing the server time when this object was created."),
            "deletionTimestamp": field("DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted."),
            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Map of string keys and values that can be used to organize and categorize (scope and select) objects."},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Annotations is an unstructured key value map stored with a resource that may be set by external tools to store and retrieve arbitrary metadata."},
            "finalizers": {"type": "array", "items": {"type": "string"}, "description": "Must be empty before the object is deleted from the registry."},
        },
    });
    let list_meta = json!({
        "type": "object",
        "description": "ListMeta describes metadata that synthetic resources must have, including lists and various status objects.",
        "properties": {
            "resourceVersion": field("String that identifies the server's internal version of this object that can be used by clients to determine when objects have changed."),
            "continue": field("continue may be set if the user set a limit on the number of items returned, and indicates that the server has more data available."),
            "remainingItemCount": {"type": "integer", "format": "int64", "description": "remainingItemCount is the number of subsequent items in the list which are not included in this list response."},
        },
    });
    let mut out = serde_json::Map::new();
    out.insert(format!("{prefix}.{}", k.kind), kind_schema);
    out.insert(format!("{prefix}.{}List", k.kind), list);
    out.insert(OBJECT_META.into(), object_meta);
    out.insert(LIST_META.into(), list_meta);
    out
}

fn operations(k: &Kind, version: &str, item: bool) -> Value {
    let gvk = json!({"group": k.group, "version": version, "kind": k.kind});
    let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    let ok = json!({"200": {"description": "OK"}});
    let op = |action: &str, params: Vec<Value>| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": ok});
    let writes = || {
        vec![
            query("dryRun"),
            query("fieldManager"),
            query("fieldValidation"),
        ]
    };
    if item {
        let mut patch = op("patch", {
            let mut p = writes();
            p.push(query("force"));
            p
        });
        let mut content = serde_json::Map::new();
        for ct in [
            "application/apply-patch+yaml",
            "application/json-patch+json",
            "application/merge-patch+json",
        ] {
            content.insert(ct.to_string(), json!({"schema": {"type": "object"}}));
        }
        patch["requestBody"] = json!({"content": content});
        json!({"get": op("get", vec![]), "put": op("put", writes()), "patch": patch, "delete": op("delete", vec![query("dryRun")])})
    } else {
        json!({"get": op("list", vec![query("labelSelector"), query("fieldSelector"), query("watch")]), "post": op("post", writes())})
    }
}

/// `/openapi/v2` as JSON: a valid document with no paths.
pub fn openapi_v2_json() -> Value {
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": SERVER_VERSION}, "paths": {}, "definitions": {}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_show_subresources() {
        let reg = Registry::with_builtins();
        let apps = resource_list(&reg, "apps", "v1").unwrap();
        let names: Vec<&str> = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "deployments",
                "deployments/status",
                "deployments/scale",
                "replicasets",
                "replicasets/status"
            ]
        );
        assert_eq!(apps["resources"][0]["shortNames"], json!(["deploy"]));
        assert!(resource_list(&reg, "apps", "v2").is_none());
        let core = resource_list(&reg, "", "v1").unwrap();
        assert_eq!(core["groupVersion"], "v1");
    }

    #[test]
    fn openapi_v3_declares_field_validation_for_every_kind() {
        let reg = Registry::with_builtins();
        let index = openapi_v3_index(&reg);
        let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
        let doc = openapi_v3_document(&reg, "apis/apps/v1").unwrap();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(openapi_v3_document(&reg, "apis/nope/v1").is_none());
    }
}
