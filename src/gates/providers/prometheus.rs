//! A small client of the Prometheus HTTP API: instant queries with an explicit
//! evaluation time, POSTed form-encoded, with a server timeout below the
//! client's; every result type and error type handled, warnings surfaced.
//! Retries 5xx and timeouts a few times; never 4xx or 422.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use crate::gates::verdict::{RawResult, Sample};

/// Why a query gave no result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The server refused the query (`bad_data`, `execution`, `not_found`, …): retrying will not help.
    #[error("{error_type} ({status}): {message}")]
    Rejected {
        status: u16,
        error_type: String,
        message: String,
    },
    /// The server or the network failed (`timeout`, `unavailable`, `internal`, 5xx, refused connection).
    #[error("{0}")]
    Unavailable(String),
    /// The answer could not be read.
    #[error("unreadable response: {0}")]
    Garbage(String),
}

impl QueryError {
    pub fn retryable(&self) -> bool {
        matches!(self, QueryError::Unavailable(_))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    infos: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Value,
}

/// Parses a sample value string (`"1.5"`, `"NaN"`, `"+Inf"`, `"-Inf"`).
fn parse_value(v: &Value) -> Result<f64, QueryError> {
    let s = v
        .as_str()
        .ok_or_else(|| QueryError::Garbage(format!("value {v} is not a string")))?;
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse()
            .map_err(|_| QueryError::Garbage(format!("value {s:?} is not a number"))),
    }
}

/// `[ts, "v"]` → v.
fn pair_value(pair: &Value) -> Result<f64, QueryError> {
    match pair.as_array().map(|a| a.as_slice()) {
        Some([_, v]) => parse_value(v),
        _ => Err(QueryError::Garbage(format!(
            "expected [time, value], got {pair}"
        ))),
    }
}

fn labels_of(series: &Value) -> BTreeMap<String, String> {
    series
        .get("metric")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Decodes a `/api/v1/query` response body, whatever its HTTP status said.
pub fn decode(status: u16, body: &[u8]) -> Result<RawResult, QueryError> {
    let env: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(_) if status >= 500 || status == 429 => {
            let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
            return Err(QueryError::Unavailable(format!("HTTP {status}: {text}")));
        }
        Err(e) => return Err(QueryError::Garbage(format!("HTTP {status}: {e}"))),
    };
    if env.status != "success" {
        let error_type = env.error_type.unwrap_or_else(|| "unknown".into());
        let message = env.error.unwrap_or_default();
        return Err(match error_type.as_str() {
            "timeout" | "unavailable" | "internal" | "canceled" => {
                QueryError::Unavailable(format!("{error_type} ({status}): {message}"))
            }
            _ if status >= 500 => {
                QueryError::Unavailable(format!("{error_type} ({status}): {message}"))
            }
            _ => QueryError::Rejected {
                status,
                error_type,
                message,
            },
        });
    }
    let data = env
        .data
        .ok_or_else(|| QueryError::Garbage("success without data".into()))?;
    let mut series = Vec::new();
    match data.result_type.as_str() {
        "vector" => {
            for s in data
                .result
                .as_array()
                .ok_or_else(|| QueryError::Garbage("vector result is not a list".into()))?
            {
                let value = match (s.get("value"), s.get("histogram")) {
                    (Some(v), _) => pair_value(v)?,
                    // A native histogram: judged on its observation count is meaningless; refuse clearly.
                    (None, Some(_)) => {
                        return Err(QueryError::Rejected {
                            status,
                            error_type: "native_histogram".into(),
                            message: "the query returns native histograms; wrap it in histogram_quantile() or histogram_count()".into(),
                        });
                    }
                    _ => return Err(QueryError::Garbage(format!("series without value: {s}"))),
                };
                series.push(Sample {
                    labels: labels_of(s),
                    value,
                });
            }
        }
        "scalar" | "string" => series.push(Sample {
            labels: BTreeMap::new(),
            value: pair_value(&data.result)?,
        }),
        "matrix" => {
            // An instant query for a range selector: judge the newest point of each series.
            for s in data
                .result
                .as_array()
                .ok_or_else(|| QueryError::Garbage("matrix result is not a list".into()))?
            {
                let last = s
                    .get("values")
                    .and_then(Value::as_array)
                    .and_then(|v| v.last());
                if let Some(last) = last {
                    series.push(Sample {
                        labels: labels_of(s),
                        value: pair_value(last)?,
                    });
                }
            }
        }
        other => return Err(QueryError::Garbage(format!("unknown resultType {other:?}"))),
    }
    let mut warnings = env.warnings;
    warnings.extend(env.infos.into_iter().map(|i| format!("info: {i}")));
    Ok(RawResult {
        series,
        warnings,
        request_rate: None,
    })
}

/// A Prometheus server.
#[derive(Clone, Debug)]
pub struct Prometheus {
    base: String,
    client: &'static super::MetricsClient,
}

impl Prometheus {
    /// A server at `address`, queried through the process's one metrics client.
    pub fn new(address: &str) -> Prometheus {
        Prometheus {
            base: address.trim_end_matches('/').to_string(),
            client: super::metrics_client(),
        }
    }

    /// One instant query evaluated at `at`, retried on 5xx and timeouts.
    pub async fn query(
        &self,
        promql: &str,
        at: Timestamp,
        timeout: Duration,
    ) -> Result<RawResult, QueryError> {
        let mut last = QueryError::Unavailable("not tried".into());
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            match self.query_once(promql, at, timeout).await {
                Err(e) if e.retryable() => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    async fn query_once(
        &self,
        promql: &str,
        at: Timestamp,
        timeout: Duration,
    ) -> Result<RawResult, QueryError> {
        let form = format!(
            "query={}&time={}&timeout={}s",
            encode(promql),
            at.as_millisecond() as f64 / 1000.0,
            timeout.as_secs().max(1)
        );
        let req = http::Request::post(format!("{}/api/v1/query", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("user-agent", concat!("cutover/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| QueryError::Garbage(e.to_string()))?;
        // The client waits a little longer than the server is told to, so the server's timeout wins.
        // One deadline over the whole exchange, body included, and a bounded body.
        let client_timeout = timeout + Duration::from_secs(2);
        // The wait for a turn is outside the exchange's deadline, within
        // the measurement's.
        let _turn = super::host_turn(req.uri()).await;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| QueryError::Unavailable(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = super::read_body(resp.into_body())
                .await
                .map_err(QueryError::Unavailable)?;
            Ok::<_, QueryError>((status, body))
        };
        let (status, body) = tokio::time::timeout(client_timeout, exchange)
            .await
            .map_err(|_| {
                QueryError::Unavailable(format!("no answer within {client_timeout:?}"))
            })??;
        decode(status, &body)
    }
}

/// Form-encodes a value (`application/x-www-form-urlencoded`).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> RawResult {
        decode(200, body.as_bytes()).unwrap()
    }

    #[test]
    fn every_result_type() {
        let v = ok(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"0.5"]},{"metric":{"a":"2"},"value":[1,"NaN"]}]}}"#,
        );
        assert_eq!(v.series.len(), 2);
        assert!(v.series[1].value.is_nan());
        let s = ok(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#);
        assert_eq!(s.series[0].value, f64::INFINITY);
        let st = ok(r#"{"status":"success","data":{"resultType":"string","result":[1,"3"]}}"#);
        assert_eq!(st.series[0].value, 3.0);
        let m = ok(
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"-Inf"]]}]}}"#,
        );
        assert_eq!(m.series[0].value, f64::NEG_INFINITY);
        let e = ok(
            r#"{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["w"],"infos":["i"]}"#,
        );
        assert!(e.series.is_empty());
        assert_eq!(e.warnings, vec!["w".to_string(), "info: i".to_string()]);
        let h = decode(200, br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"3"}]}]}}"#);
        assert!(matches!(h, Err(QueryError::Rejected { .. })));
    }

    #[test]
    fn every_error_type() {
        let cases = [
            (400, "bad_data", false),
            (422, "execution", false),
            (404, "not_found", false),
            (406, "not_acceptable", false),
            (503, "timeout", true),
            (499, "canceled", true),
            (500, "internal", true),
            (503, "unavailable", true),
        ];
        for (status, t, retry) in cases {
            let body = format!(r#"{{"status":"error","errorType":"{t}","error":"boom"}}"#);
            let e = decode(status, body.as_bytes()).unwrap_err();
            assert_eq!(e.retryable(), retry, "{t}");
            assert!(
                e.to_string().contains(t) && e.to_string().contains("boom"),
                "{e}"
            );
        }
        assert!(
            decode(502, b"<html>bad gateway</html>")
                .unwrap_err()
                .retryable()
        );
        assert!(matches!(
            decode(200, b"garbage"),
            Err(QueryError::Garbage(_))
        ));
        assert!(matches!(decode(200, br#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"x"]}]}}"#), Err(QueryError::Garbage(_))));
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            encode("sum(rate(x{a=\"b\"}[1m])) / 2"),
            "sum%28rate%28x%7Ba%3D%22b%22%7D%5B1m%5D%29%29+%2F+2"
        );
    }
}
