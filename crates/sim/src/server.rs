//! The HTTP side of one simulated API server: plain HTTP/1.1 on loopback
//! (hyper), routing of Kubernetes paths, request counting, injected faults
//! (errors, throttling, latency, unreachable), and the non-resource
//! endpoints (`/version`, discovery, OpenAPI, `/metrics`, `/sim/requests`).
//!
//! Resource verbs live in `handlers`; what the answers contain lives in the
//! store, discovery and metrics modules.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::api_error::ApiError;
use super::auth::rbac::{self, Attributes, Decision};
use super::auth::{self, Authenticator, UserInfo, reviews};
use super::counters::RequestCounter;
use super::discovery;
use super::faults::ApiFaults;
use super::handlers::{self, Call, ResourcePath};
use super::metrics::Traffic;
use super::request::{self, FieldValidation, RequestScope};
use super::scenario::UnreachableMode;
use super::store::Store;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body accepted.
const MAX_BODY: usize = 16 << 20;

/// Everything one API server serves from.
pub struct ApiContext {
    pub cluster: String,
    pub store: Arc<Store>,
    pub faults: Arc<ApiFaults>,
    pub counter: Arc<RequestCounter>,
    pub traffic: Arc<Traffic>,
    pub stop: watch::Receiver<bool>,
    /// `127.0.0.1:<port>`.
    pub address: String,
    /// Runs after every write this server accepted, before it answers.
    pub after_write: OnceLock<AfterWrite>,
    /// The bearer tokens this server accepts.
    pub auth: Arc<Authenticator>,
    /// Its serving certificate and the client certificates it knows.
    pub tls: Arc<super::tls::FleetTls>,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_every: std::time::Duration,
    /// API Priority and Fairness: the seat each request waits for.
    pub flow: super::flowcontrol::FlowControl,
}

/// What runs after each accepted write (the scenario's timeline looking at
/// its triggers).
pub type AfterWrite = Arc<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for ApiContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiContext")
            .field("cluster", &self.cluster)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// An answer: a JSON document, plain text, or a stream of watch events.
pub enum Reply {
    Json(u16, Value),
    /// JSON already encoded.
    Encoded(u16, Bytes),
    Text(u16, &'static str, String),
    Stream(mpsc::Receiver<Bytes>),
    /// Plain text sent as it comes.
    TextStream(mpsc::Receiver<Bytes>),
}

impl Reply {
    pub fn json(code: u16, v: Value) -> Reply {
        Reply::Json(code, v)
    }

    fn into_response(self) -> Response<Body> {
        let (code, content_type, body) = match self {
            Reply::Json(code, v) => (
                code,
                "application/json",
                Full::new(Bytes::from(v.to_string())).boxed_unsync(),
            ),
            Reply::Encoded(code, body) => {
                (code, "application/json", Full::new(body).boxed_unsync())
            }
            Reply::Text(code, ct, text) => (code, ct, Full::new(Bytes::from(text)).boxed_unsync()),
            Reply::Stream(rx) => (200, "application/json", stream_body(rx)),
            Reply::TextStream(rx) => (200, "text/plain; version=0.0.4", stream_body(rx)),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() =
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        resp
    }
}

/// A write's `dryRun` and `fieldValidation` parameters, validated as
/// kube-apiserver's handlers do (`ValidateCreateOptions` and its siblings:
/// `dryRun` may only be `All`): a 422 about the options kind otherwise.
fn write_options(method: &Method, params: &Params) -> Result<FieldValidation, ApiError> {
    let options = match *method {
        Method::POST => "CreateOptions",
        Method::PUT => "UpdateOptions",
        Method::PATCH => "PatchOptions",
        Method::DELETE => "DeleteOptions",
        _ => return Ok(FieldValidation::default()),
    };
    let mut problems = Vec::new();
    if let Some(dry) = params.get("dryRun")
        && dry != "All"
    {
        problems.push(format!(
            "dryRun: Unsupported value: []string{{{dry:?}}}: supported values: \"All\""
        ));
    }
    let validation = if *method == Method::DELETE {
        FieldValidation::default()
    } else {
        FieldValidation::parse(params.get("fieldValidation")).unwrap_or_else(|e| {
            problems.push(e);
            FieldValidation::default()
        })
    };
    if problems.is_empty() {
        return Ok(validation);
    }
    Err(ApiError::invalid_fields(
        "meta.k8s.io",
        options,
        "",
        &problems,
    ))
}

fn stream_body(rx: mpsc::Receiver<Bytes>) -> Body {
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    StreamBody::new(frames.boxed()).boxed_unsync()
}

/// While the metrics endpoint stalls: the headers at once, then a comment
/// line now and then, and the exposition only once the stall is over.
fn trickle(ctx: &Arc<ApiContext>, app: Option<&str>) -> Reply {
    let (tx, rx) = mpsc::channel(4);
    let ctx = ctx.clone();
    let app = app.map(str::to_string);
    tokio::spawn(async move {
        while ctx.faults.metrics_stalled() {
            if tx.send(Bytes::from_static(b"# stalled\n")).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = tx
            .send(Bytes::from(ctx.traffic.scrape(app.as_deref())))
            .await;
    });
    Reply::TextStream(rx)
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut resp = Reply::json(e.code, e.status()).into_response();
    if let Some(secs) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Query parameters, percent-decoded.
#[derive(Debug, Clone, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn parse(query: &str) -> Params {
        Params(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// `true`/`1` values.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a path leads.
#[derive(Debug, Clone, PartialEq)]
enum Route {
    Version,
    Health,
    CoreVersions,
    GroupList,
    Group(String),
    Resources(String, String),
    OpenApiV2,
    OpenApiV3Index,
    OpenApiV3(String),
    Resource(ResourcePath),
    Unknown,
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::GroupList,
        ["apis", g] => Route::Group(g.to_string()),
        ["api", v] => Route::Resources(String::new(), v.to_string()),
        ["apis", g, v] => Route::Resources(g.to_string(), v.to_string()),
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3Index,
        ["openapi", "v3", rest @ ..] => Route::OpenApiV3(rest.join("/")),
        ["api", v, rest @ ..] => resource_route("", v, rest),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest),
        _ => Route::Unknown,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Route {
    let rp = |ns: Option<&str>, plural: &str, name: Option<&str>, sub: Option<&str>| {
        Route::Resource(ResourcePath {
            group: group.to_string(),
            version: version.to_string(),
            namespace: ns.map(str::to_string),
            plural: plural.to_string(),
            name: name.map(str::to_string),
            sub: sub.map(str::to_string),
        })
    };
    match rest {
        ["namespaces", ns, sub @ ("status" | "finalize")] if group.is_empty() => {
            rp(None, "namespaces", Some(ns), Some(sub))
        }
        ["namespaces", ns, plural] => rp(Some(ns), plural, None, None),
        ["namespaces", ns, plural, name] => rp(Some(ns), plural, Some(name), None),
        ["namespaces", ns, plural, name, sub] => rp(Some(ns), plural, Some(name), Some(sub)),
        [plural] => rp(None, plural, None, None),
        [plural, name] => rp(None, plural, Some(name), None),
        [plural, name, sub] => rp(None, plural, Some(name), Some(sub)),
        _ => Route::Unknown,
    }
}

/// What the authorizer is asked about a request (the API server's
/// `RequestInfo`): for a resource, its verb, group, resource, subresource,
/// namespace and name (a namespace's own name is its namespace; a list or
/// watch of one `metadata.name` names it); otherwise the path and the
/// method as verb.
fn attributes(method: &Method, route: &Route, params: &Params, path: &str) -> Attributes {
    let Route::Resource(rp) = route else {
        return Attributes {
            verb: method.as_str().to_lowercase(),
            path: Some(path.to_string()),
            ..Default::default()
        };
    };
    let (verb, _) = count_as(method, route, params, path);
    let mut name = rp.name.clone().unwrap_or_default();
    if name.is_empty()
        && matches!(verb, "list" | "watch")
        && let Some(one) = params
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="))
            .filter(|n| !n.contains(','))
    {
        name = one.to_string();
    }
    let mut namespace = rp.namespace.clone().unwrap_or_default();
    if rp.group.is_empty() && rp.plural == "namespaces" {
        namespace = name.clone();
    }
    Attributes {
        verb: verb.to_string(),
        group: rp.group.clone(),
        resource: rp.plural.clone(),
        subresource: rp.sub.clone().unwrap_or_default(),
        namespace,
        name,
        path: None,
    }
}

/// The caller: the user its client certificate names, else its bearer
/// token's; then whoever it may impersonate.
fn caller(
    ctx: &ApiContext,
    peer: Option<&UserInfo>,
    headers: &http::HeaderMap,
) -> Result<UserInfo, ApiError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let real = match peer {
        Some(user) => user.clone(),
        None => ctx
            .auth
            .authenticate(text(header::AUTHORIZATION.as_str()), &ctx.store)?,
    };
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    auth::impersonate(real, text("impersonate-user"), &groups, &ctx.store)
}

/// The verb and resource a request is counted under.
fn count_as(method: &Method, route: &Route, params: &Params, path: &str) -> (&'static str, String) {
    match route {
        Route::Resource(rp) => {
            let verb = match (method.as_str(), rp.name.is_some()) {
                ("GET", true) => "get",
                ("GET", false) if params.flag("watch") => "watch",
                ("GET", false) => "list",
                ("POST", _) => "create",
                ("PUT", _) => "update",
                ("PATCH", _) => "patch",
                ("DELETE", true) => "delete",
                ("DELETE", false) => "deletecollection",
                _ => "other",
            };
            let resource = match &rp.sub {
                Some(sub) => format!("{}/{sub}", rp.plural),
                None => rp.plural.clone(),
            };
            (verb, resource)
        }
        Route::OpenApiV3(_) | Route::OpenApiV3Index => ("get", "/openapi/v3".into()),
        Route::Group(_) | Route::Resources(..) => ("get", "/apis".into()),
        _ => ("get", path.to_string()),
    }
}

async fn handle(
    ctx: Arc<ApiContext>,
    req: Request<Incoming>,
    peer: Option<Arc<UserInfo>>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let params = Params::parse(parts.uri.query().unwrap_or_default());
    let head = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (mut user_agent, accept, content_type) = (
        head(header::USER_AGENT),
        head(header::ACCEPT),
        head(header::CONTENT_TYPE),
    );
    if user_agent.is_empty() {
        user_agent = "unknown".to_string();
    }
    match path.as_str() {
        "/sim/requests" => {
            let counts = serde_json::to_value(ctx.counter.snapshot()).unwrap_or(Value::Null);
            return Reply::json(200, counts).into_response();
        }
        "/metrics" => {
            ctx.counter.record("get", "/metrics", &user_agent);
            if ctx.faults.metrics_stalled() {
                return trickle(&ctx, params.get("app")).into_response();
            }
            let text = ctx.traffic.scrape(params.get("app"));
            return Reply::Text(200, "text/plain; version=0.0.4", text).into_response();
        }
        _ => {}
    }
    let route = route(&path);
    let (verb, resource) = count_as(&parts.method, &route, &params, &path);
    ctx.counter.record(verb, &resource, &user_agent);
    let verdict = ctx.faults.verdict();
    if let Some(code) = verdict.fail {
        if !verdict.delay.is_zero() {
            tokio::time::sleep(verdict.delay).await;
        }
        return error_response(&ApiError::injected(code));
    }
    let user = match caller(&ctx, peer.as_deref(), &parts.headers) {
        Ok(u) => u,
        Err(e) => return error_response(&e),
    };
    let attrs = attributes(&parts.method, &route, &params, &path);
    // API Priority and Fairness, after authentication and impersonation and
    // before authorization, as in kube-apiserver's handler chain. The seat
    // is held while the request executes, a slow server's latency included.
    let seat = match ctx.flow.admit(&ctx.store, &user, &attrs).await {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    if !verdict.delay.is_zero() {
        tokio::time::sleep(verdict.delay).await;
    }
    let pf_headers = |mut resp: Response<Body>| {
        if let Some(s) = &seat {
            for (name, value) in [
                ("x-kubernetes-pf-flowschema-uid", &s.flow_schema_uid),
                ("x-kubernetes-pf-prioritylevel-uid", &s.priority_level_uid),
            ] {
                if let Ok(v) = HeaderValue::from_str(value) {
                    resp.headers_mut().insert(name, v);
                }
            }
        }
        resp
    };
    if let Decision::Deny(why) = ctx.auth.decide(&ctx.store, &user, &attrs) {
        tracing::debug!(cluster = %ctx.cluster, user = %user.name, ?attrs, "forbidden");
        return error_response(&attrs.forbidden(&user, &why));
    }
    // While its watch caches fill, the storage layer rejects what only a
    // cache answers: watches, and lists at any resourceVersion but the
    // consistent "" (kube-apiserver's cacher, KEP-4568).
    let from_cache = verb == "watch"
        || (verb == "list"
            && params
                .get("resourceVersion")
                .is_some_and(|rv| !rv.is_empty()));
    if from_cache && ctx.faults.cache_initializing() {
        return pf_headers(error_response(&ApiError::too_many_requests(
            "storage is (re)initializing",
        )));
    }
    // A server-side apply creates what is missing: that needs `create` too.
    let creating = (parts.method == Method::PATCH
        && content_type.starts_with("application/apply-patch")
        && attrs.subresource.is_empty()
        && attrs.path.is_none())
    .then(|| Attributes {
        verb: "create".to_string(),
        ..attrs.clone()
    });
    let refused_create =
        creating
            .as_ref()
            .and_then(|create| match rbac::authorize(&ctx.store, &user, create) {
                Decision::Allow => None,
                Decision::Deny(why) => Some(create.forbidden(&user, &why)),
            });
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error_response(&ApiError::bad_request(format!(
                "cannot read the request body: {e}"
            )));
        }
    };
    let reg = || ctx.store.registry();
    let found = |v: Option<Value>| {
        v.map(|v| Reply::json(200, v))
            .ok_or_else(|| ApiError::no_such_resource(&path))
    };
    let writes = !matches!(parts.method, Method::GET | Method::HEAD);
    let validation = match write_options(&parts.method, &params) {
        Ok(v) => v,
        Err(e) => return error_response(&e),
    };
    let mut warnings = Vec::new();
    let reply = match route {
        Route::Version => Ok(Reply::json(200, discovery::version())),
        Route::Health => Ok(Reply::Text(200, "text/plain", "ok".into())),
        Route::CoreVersions => Ok(Reply::json(200, discovery::core_versions(&ctx.address))),
        Route::GroupList => Ok(Reply::json(200, discovery::group_list(&reg()))),
        Route::Group(g) => found(discovery::group(&reg(), &g)),
        Route::Resources(g, v) => found(discovery::resource_list(&reg(), &g, &v)),
        Route::OpenApiV3Index => Ok(Reply::json(200, discovery::openapi_v3_index(&reg()))),
        Route::OpenApiV3(p) => found(discovery::openapi_v3_document(&reg(), &p)),
        Route::OpenApiV2 if accept.contains("protobuf") => {
            // An empty protobuf message is a valid, empty OpenAPI v2 document.
            Ok(Reply::Text(
                200,
                "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
                String::new(),
            ))
        }
        Route::OpenApiV2 => Ok(Reply::json(200, discovery::openapi_v2_json())),
        Route::Resource(rp)
            if parts.method == Method::POST && reviews::is_review(&rp.group, &rp.plural) =>
        {
            handlers::parse_body(&body, &content_type)
                .and_then(|b| {
                    reviews::answer(
                        &ctx.store,
                        &ctx.auth,
                        &user,
                        &rp.group,
                        &rp.plural,
                        &rp.version,
                        b,
                    )
                })
                .map(|v| Reply::json(201, v))
        }
        Route::Resource(rp)
            if parts.method == Method::POST
                && rp.group.is_empty()
                && rp.plural == "serviceaccounts"
                && rp.sub.as_deref() == Some("token") =>
        {
            let b = handlers::parse_body(&body, &content_type).unwrap_or(Value::Null);
            reviews::token_request(
                &ctx.store,
                &ctx.auth,
                rp.namespace.as_deref().unwrap_or_default(),
                rp.name.as_deref().unwrap_or_default(),
                b,
                ctx.store.clock().now(),
            )
            .map(|v| Reply::json(201, v))
        }
        Route::Resource(rp) => {
            let call = Call {
                method: &parts.method,
                params: &params,
                content_type: &content_type,
                table: accept.contains("as=Table"),
                user_agent: &user_agent,
                body,
            };
            let (reply, raised) = request::scoped(
                RequestScope {
                    validation,
                    creating: refused_create.clone(),
                },
                handlers::handle(&ctx, &rp, call),
            )
            .await;
            warnings = raised;
            reply
        }
        Route::Unknown => Err(ApiError::no_such_resource(&path)),
    };
    // An apply that created was authorized as a create as well; one refused
    // for that reason was denied one.
    if let Some(create) = &creating {
        match &reply {
            Ok(Reply::Json(201, _)) => ctx.auth.record(&user, create, true),
            Err(e) if refused_create.as_ref() == Some(e) => ctx.auth.record(&user, create, false),
            _ => {}
        }
    }
    if writes
        && reply.is_ok()
        && let Some(after) = ctx.after_write.get()
    {
        after();
    }
    if writes && reply.is_ok() && ctx.faults.crash_if_armed() {
        // Committed, and the server goes down before it answers: the
        // connection is cut (`serve_io`) with this request unanswered.
        std::future::pending::<()>().await;
    }
    let with_warnings = |mut resp: Response<Body>| {
        for w in &warnings {
            // RFC 7234 warn-code 299 with the agent "-", as kube-apiserver sends them.
            let text = format!("299 - {}", serde_json::Value::String(w.clone()));
            if let Ok(v) = HeaderValue::from_str(&text) {
                resp.headers_mut().append(header::WARNING, v);
            }
        }
        resp
    };
    let resp = match reply {
        Ok(r) => with_warnings(r.into_response()),
        Err(e) => {
            tracing::debug!(cluster = %ctx.cluster, %path, code = e.code, reason = e.reason, "request failed");
            error_response(&e)
        }
    };
    pf_headers(resp)
}

/// Serves until `stop`; when the faults say so, refuses connections (closes the
/// listener) or accepts and drops them, and cuts open connections.
pub async fn serve(ctx: Arc<ApiContext>, listener: TcpListener, port: u16) {
    let mut unreachable = ctx.faults.unreachable();
    let mut stop = ctx.stop.clone();
    let mut listener = Some(listener);
    loop {
        let mode = *unreachable.borrow_and_update();
        if mode == Some(UnreachableMode::Refuse) {
            listener = None;
        } else if listener.is_none() {
            listener = rebind(port, &mut stop).await;
            if listener.is_none() {
                return;
            }
        }
        let accept = async {
            match &listener {
                Some(l) => l.accept().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = accept => {
                if let Some((stream, _)) = accepted {
                    if mode == Some(UnreachableMode::Close) {
                        drop(stream);
                    } else {
                        tokio::spawn(connection(ctx.clone(), stream));
                    }
                }
            }
            changed = unreachable.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// Binds the same port again after an outage (retrying while someone else holds it).
async fn rebind(port: u16, stop: &mut watch::Receiver<bool>) -> Option<TcpListener> {
    loop {
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)).await {
            return Some(l);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stop.changed() => return None,
        }
    }
}

/// One connection: TLS when it starts with a handshake record (its client
/// certificate, if any, naming the user of every request on it), plain HTTP
/// otherwise.
async fn connection(ctx: Arc<ApiContext>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    let tls = matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 0x16);
    if !tls {
        return serve_io(ctx, stream, None).await;
    }
    let accepted =
        tokio::time::timeout(Duration::from_secs(10), ctx.tls.acceptor().accept(stream)).await;
    let Ok(Ok(stream)) = accepted else {
        return;
    };
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| ctx.tls.client_user(cert))
        .map(Arc::new);
    serve_io(ctx, stream, peer).await
}

async fn serve_io<I>(ctx: Arc<ApiContext>, io: I, peer: Option<Arc<UserInfo>>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut unreachable = ctx.faults.unreachable();
    let mut stop = ctx.stop.clone();
    let svc_ctx = ctx.clone();
    let svc = service_fn(move |req| {
        let ctx = svc_ctx.clone();
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(handle(ctx, req, peer).await) }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    loop {
        tokio::select! {
            _ = &mut conn => return,
            changed = unreachable.changed() => {
                if changed.is_err() || unreachable.borrow().is_some() {
                    return;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_like_the_api_server() {
        let r = |p: &str| route(p);
        assert_eq!(r("/api"), Route::CoreVersions);
        assert_eq!(
            r("/apis/apps/v1"),
            Route::Resources("apps".into(), "v1".into())
        );
        let Route::Resource(rp) = r("/apis/apps/v1/namespaces/shop/deployments/web/status") else {
            panic!()
        };
        assert_eq!(
            (
                rp.namespace.as_deref(),
                rp.plural.as_str(),
                rp.name.as_deref(),
                rp.sub.as_deref()
            ),
            (Some("shop"), "deployments", Some("web"), Some("status"))
        );
        let Route::Resource(rp) = r("/api/v1/namespaces/shop") else {
            panic!()
        };
        assert_eq!(
            (rp.namespace, rp.plural.as_str(), rp.name.as_deref()),
            (None, "namespaces", Some("shop"))
        );
        let Route::Resource(rp) = r("/api/v1/namespaces/shop/status") else {
            panic!()
        };
        assert_eq!(
            (rp.plural.as_str(), rp.sub.as_deref()),
            ("namespaces", Some("status"))
        );
        let Route::Resource(rp) = r("/api/v1/namespaces/shop/pods") else {
            panic!()
        };
        assert_eq!(
            (rp.namespace.as_deref(), rp.plural.as_str(), rp.name),
            (Some("shop"), "pods", None)
        );
        assert_eq!(
            r("/openapi/v3/apis/apps/v1"),
            Route::OpenApiV3("apis/apps/v1".into())
        );
    }

    #[test]
    fn query_values_are_decoded() {
        let p = Params::parse("labelSelector=app%3Dweb%2Ccolour+in+(a%2Cb)&watch=1&x=%zz");
        assert_eq!(p.get("labelSelector"), Some("app=web,colour in (a,b)"));
        assert!(p.flag("watch"));
        assert_eq!(p.get("x"), Some("%zz"));
    }
}
