//! One `kube::Client` per cluster, built from a kubeconfig context, with the
//! tower layers every request goes through: a bound on the requests awaiting
//! an answer and a request timeout (watches excepted), retries with capped,
//! jittered backoff for 5xx, 429 and connection errors (never for other
//! 4xx, nor for watches, which their watchers retry), and a per-cluster rate
//! limit.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::{Body, ClientBuilder, ConfigExt, DynBody};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use rand::Rng;
use tokio::sync::Semaphore;
use tower::buffer::BufferLayer;
use tower::limit::RateLimitLayer;
use tower::retry::{Policy, RetryLayer};
use tower::util::{BoxService, MapRequestLayer};
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};

use super::{Error, Result};

/// How cutover names itself to API servers (audit logs, request counts).
pub const USER_AGENT: &str = concat!("cutover/", env!("CARGO_PKG_VERSION"));

/// Limits of the client stack. The defaults suit a controller driving many releases.
#[derive(Clone, Copy, Debug)]
pub struct ClientLimits {
    /// Longest a non-watch request may take, retries excluded.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Requests per second to one cluster.
    pub qps: u64,
    /// Requests to one cluster awaiting their answer at once, watches
    /// excepted: over HTTP/1.1 each is a connection (a TLS session, its
    /// buffers) of its own, kept in the pool afterwards, so a thousand
    /// drivers waking together would otherwise open a thousand.
    pub in_flight: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            request_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            max_retries: 4,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(5),
            qps: 50,
            in_flight: 32,
        }
    }
}

/// Told of every request a client sends: `(cluster, verb)`, with the verb as
/// Kubernetes names it (`get`, `list`, `watch`, `create`, `update`, `patch`,
/// `delete`). The controller counts them for `/metrics`.
pub type RequestObserver = Arc<dyn Fn(&str, &'static str) + Send + Sync>;

static OBSERVER: OnceLock<RequestObserver> = OnceLock::new();

/// Sets the process's request observer (once; later calls are ignored).
pub fn observe_requests(observer: RequestObserver) {
    let _ = OBSERVER.set(observer);
}

/// The Kubernetes verb of a request.
pub fn verb_of(req: &Request<Body>) -> &'static str {
    let query = req.uri().query().unwrap_or_default();
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    match *req.method() {
        http::Method::GET if watch => "watch",
        http::Method::GET => {
            // `/api/v1[/namespaces/NS]/PLURAL[/NAME]` and
            // `/apis/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME]`: the path's
            // length says whether it names one object.
            let path = req.uri().path();
            let segments = path.trim_matches('/').split('/').count();
            let named = match path.split('/').nth(1) {
                Some("api") => segments.is_multiple_of(2),
                Some("apis") => !segments.is_multiple_of(2),
                _ => true,
            };
            if named { "get" } else { "list" }
        }
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// The config of `context` in the kubeconfig at `path` (or the default kubeconfig).
pub async fn config(
    kubeconfig: Option<&Path>,
    context: &str,
    namespace: &str,
    limits: ClientLimits,
) -> Result<Config> {
    let kc = match kubeconfig {
        Some(p) => Kubeconfig::read_from(p),
        None => Kubeconfig::read(),
    }
    .map_err(|e| Error::Kubeconfig(format!("{e}")))?;
    let opts = KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let mut config = Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| Error::Kubeconfig(format!("context {context:?}: {e}")))?;
    config.connect_timeout = Some(limits.connect_timeout);
    // Our own retry layer (`TransientRetry`) is the only one: kube's default
    // one below it would retry each of our tries again, so that a failing
    // API server looked merely slow for many times the retry budget.
    config.default_retry = false;
    config.default_namespace = namespace.to_string();
    Ok(config)
}

/// The largest read (and write) buffer of a connection. hyper grows a
/// connection's read buffer while reads fill it, up to its default of about
/// 400 KB, and keeps it as long as the connection lives: every watch's
/// connection held one after its first list. A body streams through in
/// reads of at most this size; a response head must fit in it.
const CONNECTION_BUFFER: usize = 64 * 1024;

/// Idle connections kept per API server. More than this many requests
/// awaiting an answer at once (`ClientLimits::in_flight`) open connections
/// that are closed once done, instead of each staying in the pool with its
/// TLS session and buffers.
const IDLE_CONNECTIONS: usize = 8;

/// What `ClientBuilder::try_from` builds: kube's `GenericService`.
type HttpStack = BoxService<Request<Body>, Response<Box<DynBody>>, BoxError>;

/// The HTTP stack under cutover's layers: kube's own (`ClientBuilder`'s
/// `TryFrom<Config>`: base URI, TLS with the kubeconfig's roots and client
/// identity, authentication and its refresh, impersonation headers), on a
/// hyper client whose connections keep small buffers and few idle ones.
/// A kubeconfig naming a proxy gets kube's stack as it is, which knows how
/// to reach one.
fn http_stack(config: Config) -> Result<ClientBuilder<HttpStack>> {
    let kube_err = |e: kube::Error| Error::Kubeconfig(e.to_string());
    if config.proxy_url.is_some() {
        return ClientBuilder::try_from(config).map_err(kube_err);
    }
    let mut connector = HttpConnector::new();
    connector.enforce_http(false);
    connector.set_connect_timeout(config.connect_timeout);
    let connector = config
        .rustls_https_connector_with_connector(connector)
        .map_err(kube_err)?;
    let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IDLE_CONNECTIONS)
        .http1_max_buf_size(CONNECTION_BUFFER)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().map_err(kube_err)?)
        .layer(config.extra_headers_layer().map_err(kube_err)?)
        .map_err(BoxError::from)
        .service(hyper)
        .map_response(|response: Response<hyper::body::Incoming>| {
            response.map(|body| {
                Box::new(http_body_util::BodyExt::map_err(body, BoxError::from)) as Box<DynBody>
            })
        });
    Ok(ClientBuilder::new(
        BoxService::new(service),
        config.default_namespace,
    ))
}

/// A client over an already-built config, with cutover's layers.
pub fn build(cluster: &str, config: Config, limits: ClientLimits) -> Result<Client> {
    let cluster = cluster.to_string();
    let builder = http_stack(config)?;
    let client = builder
        .with_layer(&BufferLayer::new(1024))
        .with_layer(&RequestBoundsLayer {
            timeout: limits.request_timeout,
            slots: Arc::new(Semaphore::new(limits.in_flight.max(1))),
        })
        .with_layer(&RetryLayer::new(TransientRetry::new(limits)))
        .with_layer(&RateLimitLayer::new(limits.qps, Duration::from_secs(1)))
        .with_layer(&MapRequestLayer::new(move |mut req: Request<Body>| {
            req.headers_mut().insert(
                http::header::USER_AGENT,
                http::HeaderValue::from_static(USER_AGENT),
            );
            if let Some(observe) = OBSERVER.get() {
                observe(&cluster, verb_of(&req));
            }
            req
        }))
        .build();
    Ok(client)
}

/// Retries what may succeed on a second try: 5xx, 429 and connection failures.
#[derive(Clone, Debug)]
pub struct TransientRetry {
    limits: ClientLimits,
    attempt: u32,
}

impl TransientRetry {
    pub fn new(limits: ClientLimits) -> Self {
        TransientRetry { limits, attempt: 0 }
    }

    /// Full jitter: a random delay up to the capped exponential bound.
    fn delay(&self) -> Duration {
        let exp = self
            .limits
            .backoff_base
            .saturating_mul(1u32 << self.attempt.min(16));
        let bound = exp.min(self.limits.backoff_cap);
        let millis = bound.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(millis / 4..=millis))
    }

    pub fn is_retryable_status(status: http::StatusCode) -> bool {
        status == http::StatusCode::TOO_MANY_REQUESTS
            || (status.is_server_error() && status != http::StatusCode::NOT_IMPLEMENTED)
    }
}

impl<Res> Policy<Request<Body>, Response<Res>, BoxError> for TransientRetry {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut Request<Body>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
        // A watch that fails says so at once: its watcher retries it with a
        // backoff of its own, and while a watch is retried here no one knows
        // it is not running (its cache looks current while the changes it
        // would bring wait; a restarted API server refuses watches for as
        // long as its caches fill).
        if is_watch(req.uri()) {
            return None;
        }
        let transient = match result {
            Ok(resp) => Self::is_retryable_status(resp.status()),
            Err(_) => true,
        };
        if !transient || self.attempt >= self.limits.max_retries {
            return None;
        }
        // A server that says when to come back (API Priority and Fairness's
        // 429, a 503) is waited for, up to the backoff's cap.
        let asked = result
            .as_ref()
            .ok()
            .and_then(|r| r.headers().get(http::header::RETRY_AFTER))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(self.limits.backoff_cap));
        let delay = self.delay().max(asked.unwrap_or_default());
        self.attempt += 1;
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        let body = req.body().try_clone()?;
        let mut clone = Request::builder()
            .method(req.method().clone())
            .uri(req.uri().clone())
            .version(req.version());
        if let Some(h) = clone.headers_mut() {
            h.extend(req.headers().clone());
        }
        let mut clone = clone.body(body).ok()?;
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}

/// Bounds every request but watches, whose streams are meant to stay open:
/// it waits for one of the cluster's slots (`ClientLimits::in_flight`), and
/// waiting and answer together take at most `timeout`. The slot is given
/// back once the answer's head arrives, its body read at once by the caller.
#[derive(Clone, Debug)]
pub struct RequestBoundsLayer {
    pub timeout: Duration,
    pub slots: Arc<Semaphore>,
}

impl<S> Layer<S> for RequestBoundsLayer {
    type Service = RequestBounds<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestBounds {
            inner,
            bounds: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RequestBounds<S> {
    inner: S,
    bounds: RequestBoundsLayer,
}

fn is_watch(uri: &http::Uri) -> bool {
    uri.query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
}

impl<S, B> Service<Request<B>> for RequestBounds<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The service made ready is the one called; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if is_watch(req.uri()) {
            return Box::pin(async move { inner.call(req).await.map_err(Into::into) });
        }
        let RequestBoundsLayer { timeout, slots } = self.bounds.clone();
        Box::pin(async move {
            let answer = async {
                let _slot = slots.acquire_owned().await?;
                inner.call(req).await.map_err(Into::into)
            };
            match tokio::time::timeout(timeout, answer).await {
                Ok(r) => r,
                Err(_) => Err(format!("request timed out after {timeout:?}").into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_awaiting_answers_are_bounded_and_watches_are_not_counted() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        use tower::ServiceExt;
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n, m) = (now.clone(), most.clone());
        let inner = tower::service_fn(move |req: Request<()>| {
            let (n, m) = (n.clone(), m.clone());
            async move {
                if is_watch(req.uri()) {
                    // A watch stays open.
                    std::future::pending::<()>().await;
                }
                m.fetch_max(n.fetch_add(1, SeqCst) + 1, SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
                n.fetch_sub(1, SeqCst);
                Ok::<_, BoxError>(Response::new(()))
            }
        });
        let svc = RequestBoundsLayer {
            timeout: Duration::from_secs(3600),
            slots: Arc::new(Semaphore::new(3)),
        }
        .layer(inner);
        let get = |uri: &str| Request::get(uri).body(()).unwrap();
        let watches: Vec<_> = (0..5)
            .map(|_| tokio::spawn(svc.clone().oneshot(get("/api/v1/pods?watch=true"))))
            .collect();
        let gets = (0..12).map(|_| svc.clone().oneshot(get("/api/v1/pods")));
        for r in futures::future::join_all(gets).await {
            r.unwrap();
        }
        // Five watches open took no slot; twelve requests went three at a time.
        assert_eq!(most.load(SeqCst), 3);
        assert!(watches.iter().all(|w| !w.is_finished()));
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        use http::StatusCode as S;
        for s in [
            S::TOO_MANY_REQUESTS,
            S::INTERNAL_SERVER_ERROR,
            S::BAD_GATEWAY,
            S::SERVICE_UNAVAILABLE,
            S::GATEWAY_TIMEOUT,
        ] {
            assert!(TransientRetry::is_retryable_status(s), "{s}");
        }
        for s in [
            S::OK,
            S::BAD_REQUEST,
            S::NOT_FOUND,
            S::CONFLICT,
            S::UNPROCESSABLE_ENTITY,
            S::FORBIDDEN,
            S::NOT_IMPLEMENTED,
        ] {
            assert!(!TransientRetry::is_retryable_status(s), "{s}");
        }
    }

    #[tokio::test]
    async fn a_failing_watch_is_not_retried_and_other_requests_are() {
        use tower::retry::Policy as _;
        let limits = ClientLimits::default();
        let unavailable = || {
            let mut r = Response::new(());
            *r.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
            Ok::<_, BoxError>(r)
        };
        for (uri, retried) in [
            ("http://x/api/v1/pods?watch=true&resourceVersion=1", false),
            ("http://x/api/v1/pods?resourceVersion=0", true),
            ("http://x/api/v1/namespaces/a/pods/b", true),
        ] {
            let mut req = Request::get(uri).body(Body::empty()).unwrap();
            let mut policy = TransientRetry::new(limits);
            let mut answer = unavailable();
            assert_eq!(
                policy.retry(&mut req, &mut answer).is_some(),
                retried,
                "{uri}"
            );
            let mut refused: Result<Response<()>, BoxError> = Err("connection refused".into());
            let mut policy = TransientRetry::new(limits);
            assert_eq!(
                policy.retry(&mut req, &mut refused).is_some(),
                retried,
                "{uri}"
            );
        }
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let limits = ClientLimits::default();
        let mut r = TransientRetry::new(limits);
        for attempt in 0..10 {
            r.attempt = attempt;
            let d = r.delay();
            assert!(d <= limits.backoff_cap, "attempt {attempt}: {d:?}");
            assert!(d >= Duration::from_millis(1));
        }
    }

    #[test]
    fn watches_are_told_apart() {
        assert!(is_watch(
            &"http://x/api/v1/pods?watch=true&resourceVersion=1"
                .parse()
                .unwrap()
        ));
        assert!(!is_watch(
            &"http://x/api/v1/pods?labelSelector=watch%3Dtrue"
                .parse()
                .unwrap()
        ));
    }
}
