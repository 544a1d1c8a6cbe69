//! A local HTTP receiver for notification and hook tests: it records every
//! body by path (JSON, or `null` for none), with the query it came with.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// What the receiver got, by path, in order of arrival.
#[derive(Clone, Default)]
pub struct Received {
    pub bodies: Arc<Mutex<BTreeMap<String, Vec<serde_json::Value>>>>,
    /// Requests answered 500 so far, by path.
    pub refused: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Received {
    pub fn at(&self, path: &str) -> Vec<serde_json::Value> {
        self.bodies
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }
}

/// A local webhook receiver. A path starting `/flaky` answers 500 to its
/// first two requests, as a receiver having a bad moment would; one starting
/// `/fail` always answers 503, as a broken dependency would. A request
/// without a body is recorded as `{"query": …}`.
pub async fn receiver() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let got = Received::default();
    let state = got.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let query = req.uri().query().unwrap_or_default().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut refused = state.refused.lock().unwrap();
                        let n = refused.entry(path.clone()).or_default();
                        let status = if path.starts_with("/flaky") && *n < 2 {
                            *n += 1;
                            500
                        } else if path.starts_with("/fail") {
                            *n += 1;
                            503
                        } else {
                            let v: serde_json::Value = if body.is_empty() {
                                serde_json::json!({ "query": query })
                            } else {
                                serde_json::from_slice(&body).unwrap()
                            };
                            state
                                .bodies
                                .lock()
                                .unwrap()
                                .entry(path)
                                .or_default()
                                .push(v);
                            200
                        };
                        let text: &'static [u8] = if status == 503 {
                            b"database unreachable"
                        } else {
                            b"ok"
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(text)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (base, got)
}
