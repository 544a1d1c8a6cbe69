//! The resource verbs of the simulated API server: get, list, watch,
//! create, update, patch (four formats), delete and deletecollection, on
//! main resources and their `status` and `scale` subresources, answering in
//! JSON (or as a Table when kubectl asks for one).
//!
//! Turns requests into store calls; transport, faults and counting belong to
//! the server.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use super::api_error::{ApiError, ApiResult};
use super::kinds::Kind;
use super::lists::{self, ListOptions, Read};
use super::meta;
use super::patch::{self, PatchKind};
use super::selectors::{FieldSelector, LabelSelector};
use super::server::{ApiContext, Params, Reply};
use super::store::{DeleteOptions, Target, WriteOptions};
use super::table::Printer;
use super::watch::{self, WatchRequest};

/// A request for a resource, parsed from its path.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub sub: Option<String>,
}

/// What the handler needs from the request besides the path.
pub struct Call<'a> {
    pub method: &'a http::Method,
    pub params: &'a Params,
    pub content_type: &'a str,
    pub table: bool,
    pub user_agent: &'a str,
    pub body: Bytes,
}

pub async fn handle(ctx: &ApiContext, rp: &ResourcePath, call: Call<'_>) -> ApiResult<Reply> {
    let kind = ctx
        .store
        .find_kind(&rp.group, &rp.version, &rp.plural)
        .ok_or_else(|| ApiError::no_such_resource(&format!("{}/{}", rp.group, rp.plural)))?;
    if !kind.namespaced && rp.namespace.is_some() {
        return Err(ApiError::no_such_resource(&rp.plural));
    }
    match rp.sub.as_deref() {
        None | Some("status") => {}
        Some("scale") if kind.scale => {}
        Some(other) => {
            return Err(ApiError::no_such_resource(&format!(
                "{}/{other}",
                rp.plural
            )));
        }
    }
    if rp.sub.as_deref() == Some("status") && !kind.status {
        return Err(ApiError::no_such_resource(&format!("{}/status", rp.plural)));
    }
    let ns = rp.namespace.clone().unwrap_or_default();
    let method = call.method.as_str();
    match (method, rp.name.as_deref()) {
        ("GET", Some(name)) => get(ctx, &kind, rp, &ns, name, &call),
        ("GET", None) if call.params.flag("watch") => {
            caught_up(ctx, call.params.get("resourceVersion")).await?;
            watch(ctx, &kind, rp, &call)
        }
        ("GET", None) => {
            let opts = ListOptions::parse(call.params)?;
            if let Read::NotOlderThan(rv) = opts.read {
                caught_up(ctx, Some(&rv.to_string())).await?;
            }
            list(ctx, &kind, rp, &call, &opts)
        }
        ("POST", None) => create(ctx, &kind, rp, &ns, &call),
        ("PUT", Some(name)) => update(ctx, &kind, rp, &ns, name, &call),
        ("PATCH", Some(name)) => patch(ctx, &kind, rp, &ns, name, &call),
        ("DELETE", Some(name)) => delete(ctx, &kind, rp, &ns, name, &call),
        ("DELETE", None) => delete_collection(ctx, &kind, rp, &call),
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

/// How long a watch from a resourceVersion the server has not reached waits
/// for it: the watch cache's `blockTimeout`.
const TOO_LARGE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// A watch from a resourceVersion ahead of the server's waits a little for
/// it, then is refused with a 504 (`Too large resource version`), as the
/// API server's watch cache does; a client then relists.
async fn caught_up(ctx: &ApiContext, rv: Option<&str>) -> ApiResult<()> {
    let Some(want) = rv.and_then(|v| v.parse::<u64>().ok()) else {
        return Ok(());
    };
    let mut changed = ctx.store.changed();
    let reached = tokio::time::timeout(TOO_LARGE_WAIT, async {
        while *changed.borrow_and_update() < want {
            if changed.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    let current = ctx.store.resource_version();
    if reached.is_err() || current < want {
        return Err(ApiError::too_large_resource_version(want, current));
    }
    Ok(())
}

/// The object as served at the requested version.
fn served(kind: &Kind, version: &str, obj: &Value) -> Value {
    let mut o = obj.clone();
    o["apiVersion"] = json!(kind.api_version(version));
    o
}

fn printer(ctx: &ApiContext, kind: &Arc<Kind>, call: &Call) -> Printer {
    let crd = kind.custom.then(|| {
        let crds = ctx
            .store
            .kind_of("apiextensions.k8s.io", "customresourcedefinitions");
        crds.and_then(|k| {
            ctx.store
                .get(&k, "", &format!("{}.{}", kind.plural, kind.group))
                .ok()
        })
    });
    let crd = crd.flatten();
    Printer::new(
        kind.clone(),
        crd.as_deref(),
        ctx.store.clock().now(),
        call.params.get("includeObject"),
    )
}

fn get(
    ctx: &ApiContext,
    kind: &Arc<Kind>,
    rp: &ResourcePath,
    ns: &str,
    name: &str,
    call: &Call,
) -> ApiResult<Reply> {
    let obj = ctx.store.get(kind, ns, name)?;
    if rp.sub.as_deref() == Some("scale") {
        return Ok(Reply::json(200, scale_of(&obj)));
    }
    if call.table && rp.sub.is_none() {
        let rv = meta::resource_version(&obj).unwrap_or(0);
        return Ok(Reply::json(
            200,
            printer(ctx, kind, call).table(&[obj], rv, true),
        ));
    }
    Ok(Reply::json(200, served(kind, &rp.version, &obj)))
}

fn selectors(params: &Params) -> ApiResult<(LabelSelector, FieldSelector)> {
    let labels = LabelSelector::parse(params.get("labelSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector: {e}")))?;
    let fields = FieldSelector::parse(params.get("fieldSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("unable to parse fieldSelector: {e}")))?;
    Ok((labels, fields))
}

fn list(
    ctx: &ApiContext,
    kind: &Arc<Kind>,
    rp: &ResourcePath,
    call: &Call,
    opts: &ListOptions,
) -> ApiResult<Reply> {
    let (labels, fields) = selectors(call.params)?;
    let ns = rp.namespace.as_deref();
    let filtered = !labels.is_empty() || !fields.is_empty();
    let across = kind.namespaced && ns.is_none();
    let (page, rv) = match opts.read {
        Read::Latest | Read::NotOlderThan(_) => {
            let (items, rv) = ctx.store.list(kind, ns, &labels, &fields);
            (lists::page(items, opts, rv, across, filtered), rv)
        }
        Read::Exact(at) => {
            let all = ctx
                .store
                .list_at(kind, ns, at)
                .map_err(|e| match (&opts.start, e.code) {
                    (Some(start), 410) if opts.continued => lists::continue_expired(start),
                    _ => e,
                })?;
            let keep = |o: &Value| labels.matches_object(o) && fields.matches(o);
            let page = if across {
                // Across namespaces the page's keys are `namespace/name`,
                // an order the store's does not follow.
                let items = all.iter().filter(|o| keep(o)).cloned().collect();
                lists::page(items, opts, at, across, filtered)
            } else {
                lists::page_in_order(&all, opts, at, keep, filtered)
            };
            (page, at)
        }
    };
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(token) = &page.continue_token {
        metadata["continue"] = json!(token);
    }
    if let Some(n) = page.remaining {
        metadata["remainingItemCount"] = json!(n);
    }
    if call.table {
        let mut table = printer(ctx, kind, call).table(&page.items, rv, true);
        table["metadata"] = metadata;
        return Ok(Reply::json(200, table));
    }
    // Written as it is sent, each item without a copy: a list of a
    // namespace's pods is thousands of objects, and a watch lists again
    // whenever its place in the history is gone.
    let api_version = kind.api_version(&rp.version);
    let head = json!({
        "apiVersion": api_version,
        "kind": format!("{}List", kind.kind),
        "metadata": metadata,
    })
    .to_string();
    let mut body = Vec::with_capacity(head.len() + 2048 * page.items.len());
    body.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    body.extend_from_slice(b",\"items\":[");
    for (i, o) in page.items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        crate::store::write_served(&mut body, o, &api_version);
    }
    body.extend_from_slice(b"]}");
    Ok(Reply::Encoded(200, bytes::Bytes::from(body)))
}

fn watch(ctx: &ApiContext, kind: &Arc<Kind>, rp: &ResourcePath, call: &Call) -> ApiResult<Reply> {
    let (labels, fields) = selectors(call.params)?;
    let timeout = call
        .params
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(std::time::Duration::from_secs);
    let req = WatchRequest {
        namespace: rp.namespace.clone(),
        version: rp.version.clone(),
        labels,
        fields,
        resource_version: call.params.get("resourceVersion").map(str::to_string),
        timeout,
        bookmarks: call.params.flag("allowWatchBookmarks"),
        bookmark_every: ctx.bookmark_every,
        initial_events: call.params.flag("sendInitialEvents"),
        table: call.table.then(|| printer(ctx, kind, call)),
    };
    let started = watch::start(ctx.store.clone(), kind.clone(), req, ctx.stop.clone())?;
    if started.expired {
        ctx.counter.record_expired(&rp.plural, call.user_agent);
    }
    Ok(Reply::Stream(started.events))
}

/// A request body: JSON, YAML for apply patches (and kubectl's occasional
/// YAML), or protobuf for the built-in kinds client-go's typed clients send
/// that way.
pub fn parse_body(body: &Bytes, content_type: &str) -> ApiResult<Value> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    if content_type.contains("application/vnd.kubernetes.protobuf") {
        return super::protobuf::decode(body);
    }
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type})"
        )));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        Err(json_err) if content_type.contains("yaml") => {
            let text = std::str::from_utf8(body)
                .map_err(|e| ApiError::bad_request(format!("the body is not UTF-8: {e}")))?;
            serde_saphyr::from_str::<Value>(text)
                .map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e} ({json_err})")))
        }
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON body: {e}"))),
    }
}

/// Checks a body names the kind the URL does.
fn check_kind(kind: &Kind, obj: &Value) -> ApiResult<()> {
    let (av, k) = (
        obj["apiVersion"].as_str().unwrap_or_default(),
        obj["kind"].as_str().unwrap_or_default(),
    );
    let group = av.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    if (!k.is_empty() && k != kind.kind) || (!av.is_empty() && group != kind.group) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            kind.api_version(kind.storage_version())
        )));
    }
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(())
}

fn write_options(params: &Params) -> WriteOptions {
    WriteOptions {
        dry_run: params.get("dryRun").is_some_and(|v| v == "All"),
    }
}

fn manager<'a>(call: &'a Call) -> &'a str {
    call.params
        .get("fieldManager")
        .unwrap_or_else(|| call.user_agent.split('/').next().unwrap_or("unknown"))
}

fn now_stamp(ctx: &ApiContext) -> String {
    meta::time(ctx.store.clock().now())
}

fn create(
    ctx: &ApiContext,
    kind: &Arc<Kind>,
    rp: &ResourcePath,
    ns: &str,
    call: &Call,
) -> ApiResult<Reply> {
    if rp.sub.is_some() {
        return Err(ApiError::method_not_allowed(
            "subresources cannot be created",
        ));
    }
    let mut obj = parse_body(&call.body, call.content_type)?;
    check_kind(kind, &obj)?;
    let fields = obj.clone();
    patch::record_update(
        &mut obj,
        manager(call),
        &fields,
        !kind.custom,
        &kind.api_version(&rp.version),
        &now_stamp(ctx),
    );
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    let created = ctx
        .store
        .create(kind, ns, obj, Target::Main, &write_options(call.params))?;
    Ok(Reply::json(201, served(kind, &rp.version, &created)))
}

fn update(
    ctx: &ApiContext,
    kind: &Arc<Kind>,
    rp: &ResourcePath,
    ns: &str,
    name: &str,
    call: &Call,
) -> ApiResult<Reply> {
    let mut obj = parse_body(&call.body, call.content_type)?;
    let opts = write_options(call.params);
    if rp.sub.as_deref() == Some("scale") {
        let replicas = obj["spec"]["replicas"].clone();
        let want_rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let updated = ctx
            .store
            .modify(kind, ns, name, Target::Main, false, &opts, |cur| {
                let mut next = cur.cloned().unwrap_or_default();
                if !want_rv.is_empty() {
                    next["metadata"]["resourceVersion"] = json!(want_rv);
                }
                next["spec"]["replicas"] = replicas;
                Ok(next)
            })?;
        return Ok(Reply::json(200, scale_of(&updated)));
    }
    check_kind(kind, &obj)?;
    if meta::name(&obj) != name && !meta::name(&obj).is_empty() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta::name(&obj)
        )));
    }
    let target = if rp.sub.as_deref() == Some("status") {
        Target::Status
    } else {
        Target::Main
    };
    if target == Target::Main {
        let fields = obj.clone();
        patch::record_update(
            &mut obj,
            manager(call),
            &fields,
            !kind.custom,
            &kind.api_version(&rp.version),
            &now_stamp(ctx),
        );
    }
    let updated = ctx.store.update(kind, ns, name, obj, target, &opts)?;
    Ok(Reply::json(200, served(kind, &rp.version, &updated)))
}

fn patch(
    ctx: &ApiContext,
    kind: &Arc<Kind>,
    rp: &ResourcePath,
    ns: &str,
    name: &str,
    call: &Call,
) -> ApiResult<Reply> {
    let pk = PatchKind::from_content_type(call.content_type).ok_or_else(|| {
        ApiError::unsupported_media_type(format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {:?})", call.content_type))
    })?;
    if pk == PatchKind::Strategic && kind.custom {
        return Err(ApiError::unsupported_media_type(
            "strategic merge patch is not supported for custom resources; use a JSON merge patch or server-side apply",
        ));
    }
    let body = parse_body(&call.body, call.content_type)?;
    let keyed = !kind.custom;
    let av = kind.api_version(&rp.version);
    let stamp = now_stamp(ctx);
    let opts = write_options(call.params);
    let scale = rp.sub.as_deref() == Some("scale");
    let target = if rp.sub.as_deref() == Some("status") {
        Target::Status
    } else {
        Target::Main
    };
    let apply_manager = match pk {
        PatchKind::Apply => {
            check_kind(kind, &body)?;
            let m = call
                .params
                .get("fieldManager")
                .filter(|m| !m.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "meta.k8s.io",
                        "patchoptions",
                        "",
                        "fieldManager: Required value: is required for apply patch",
                    )
                })?;
            if !meta::name(&body).is_empty() && meta::name(&body) != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    meta::name(&body)
                )));
            }
            Some(m.to_string())
        }
        _ => None,
    };
    let update_manager = manager(call).to_string();
    let create = apply_manager.is_some() && target == Target::Main && !scale;
    // An apply that creates answers 201, as kube-apiserver's does.
    let created = std::cell::Cell::new(false);
    let result = ctx
        .store
        .modify(kind, ns, name, target, create, &opts, |cur| {
            created.set(cur.is_none());
            if cur.is_none()
                && create
                && let Some(refused) = super::request::may_not_create()
            {
                return Err(refused);
            }
            let base = match (cur, scale) {
                (Some(c), true) => scale_of(c),
                (Some(c), false) => c.clone(),
                (None, _) => {
                    json!({"apiVersion": av, "kind": kind.kind, "metadata": {"name": name}})
                }
            };
            let mut next = base.clone();
            match pk {
                PatchKind::Merge => patch::merge_patch(&mut next, &body),
                PatchKind::Strategic => patch::strategic_merge(&mut next, &body, keyed),
                PatchKind::Json => patch::json_patch(&mut next, &body).map_err(|e| {
                    ApiError::invalid(
                        &kind.group,
                        &kind.plural,
                        name,
                        format!("the JSON patch could not be applied: {e}"),
                    )
                })?,
                PatchKind::Apply => {
                    let m = apply_manager.as_deref().unwrap_or_default();
                    next = patch::apply_checked(
                        cur.map(|c| if scale { scale_of(c) } else { c.clone() })
                            .as_ref(),
                        &body,
                        m,
                        keyed,
                        &av,
                        &stamp,
                        call.params.flag("force"),
                    )
                    .map_err(|found| ApiError::apply_conflict(&found))?;
                }
            }
            if scale {
                let mut obj = cur.cloned().unwrap_or_default();
                obj["spec"]["replicas"] = next["spec"]["replicas"].clone();
                return Ok(obj);
            }
            if pk != PatchKind::Apply && target == Target::Main && next != base {
                let fields = if pk == PatchKind::Json {
                    next.clone()
                } else {
                    body.clone()
                };
                patch::record_update(&mut next, &update_manager, &fields, keyed, &av, &stamp);
            }
            Ok(next)
        })?;
    if scale {
        return Ok(Reply::json(200, scale_of(&result)));
    }
    let code = if created.get() { 201 } else { 200 };
    Ok(Reply::json(code, served(kind, &rp.version, &result)))
}

fn delete_options(call: &Call) -> ApiResult<DeleteOptions> {
    let body = parse_body(&call.body, call.content_type).unwrap_or(Value::Null);
    let policy = call
        .params
        .get("propagationPolicy")
        .map(str::to_string)
        .or_else(|| body["propagationPolicy"].as_str().map(str::to_string));
    let orphan = policy.as_deref() == Some("Orphan") || body["orphanDependents"] == true;
    let dry = call.params.get("dryRun") == Some("All")
        || body["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "All"));
    Ok(DeleteOptions {
        dry_run: dry,
        orphan,
        precondition_uid: body["preconditions"]["uid"].as_str().map(str::to_string),
        precondition_rv: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
    })
}

fn delete(
    ctx: &ApiContext,
    kind: &Arc<Kind>,
    rp: &ResourcePath,
    ns: &str,
    name: &str,
    call: &Call,
) -> ApiResult<Reply> {
    if rp.sub.is_some() {
        return Err(ApiError::method_not_allowed(
            "subresources cannot be deleted",
        ));
    }
    let opts = delete_options(call)?;
    let gone = ctx.store.delete(kind, ns, name, &opts)?;
    let code = if meta::is_terminating(&gone) && !opts.dry_run {
        202
    } else {
        200
    };
    Ok(Reply::json(code, served(kind, &rp.version, &gone)))
}

fn delete_collection(
    ctx: &ApiContext,
    kind: &Arc<Kind>,
    rp: &ResourcePath,
    call: &Call,
) -> ApiResult<Reply> {
    let (labels, fields) = selectors(call.params)?;
    let opts = delete_options(call)?;
    let (items, _) = ctx
        .store
        .list(kind, rp.namespace.as_deref(), &labels, &fields);
    let mut gone = Vec::new();
    for o in items {
        if let Ok(g) = ctx
            .store
            .delete(kind, meta::namespace(&o), meta::name(&o), &opts)
        {
            gone.push(served(kind, &rp.version, &g));
        }
    }
    let rv = ctx.store.resource_version();
    Ok(Reply::json(
        200,
        json!({"apiVersion": kind.api_version(&rp.version), "kind": format!("{}List", kind.kind), "metadata": {"resourceVersion": rv.to_string()}, "items": gone}),
    ))
}

/// The `autoscaling/v1` Scale of a Deployment.
fn scale_of(obj: &Value) -> Value {
    let selector = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let md = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": md["name"], "namespace": md["namespace"], "uid": md["uid"],
                     "resourceVersion": md["resourceVersion"], "creationTimestamp": md["creationTimestamp"]},
        "spec": {"replicas": obj["spec"]["replicas"]},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}
