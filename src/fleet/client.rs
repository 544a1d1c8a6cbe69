//! One `kube::Client` per cluster, built from a kubeconfig context, with the
//! tower layers every request goes through: a request timeout (watches
//! excepted), retries with capped, jittered backoff for 5xx, 429 and
//! connection errors (never for other 4xx), and a per-cluster rate limit.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use kube::client::{Body, ClientBuilder};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use rand::Rng;
use tower::buffer::BufferLayer;
use tower::limit::RateLimitLayer;
use tower::retry::{Policy, RetryLayer};
use tower::util::MapRequestLayer;
use tower::{BoxError, Layer, Service};

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

/// A client over an already-built config, with cutover's layers.
pub fn build(cluster: &str, config: Config, limits: ClientLimits) -> Result<Client> {
    let cluster = cluster.to_string();
    let builder = ClientBuilder::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let client = builder
        .with_layer(&BufferLayer::new(1024))
        .with_layer(&RequestTimeoutLayer(limits.request_timeout))
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
        _req: &mut Request<Body>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
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

/// Bounds every request but watches, whose streams are meant to stay open.
#[derive(Clone, Copy, Debug)]
pub struct RequestTimeoutLayer(pub Duration);

impl<S> Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestTimeout {
            inner,
            timeout: self.0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RequestTimeout<S> {
    inner: S,
    timeout: Duration,
}

fn is_watch(uri: &http::Uri) -> bool {
    uri.query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
}

impl<S, B> Service<Request<B>> for RequestTimeout<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let watch = is_watch(req.uri());
        let timeout = self.timeout;
        let fut = self.inner.call(req);
        Box::pin(async move {
            if watch {
                return fut.await.map_err(Into::into);
            }
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(format!("request timed out after {timeout:?}").into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
