//! Helpers shared by the simulated fleet's tests and the product's end-to-end
//! tests (which include this file): start a fleet, reach it with kube's own
//! client or the system kubectl, read kubectl's tables and API errors.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use cutover_sim::{Scenario, SimFleet, SimOptions};

/// A simulated fleet in a fresh directory of its own.
pub async fn start_sim(scenario: Scenario, scale: f64) -> (SimFleet, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SimFleet::start(SimOptions {
        scenario,
        time_scale: scale,
        dir: dir.path().to_path_buf(),
    })
    .await
    .unwrap();
    (fleet, dir)
}

/// kube's own configuration for one simulated cluster (kube's defaults, not cutover's layers).
pub async fn sim_config(fleet: &SimFleet, cluster: &str) -> kube::Config {
    let kc = kube::config::Kubeconfig::read_from(fleet.kubeconfig_path()).unwrap();
    let opts = kube::config::KubeConfigOptions {
        context: Some(cutover_sim::context_name(cluster)),
        ..Default::default()
    };
    kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .unwrap()
}

/// A plain kube client for one simulated cluster.
pub async fn sim_client(fleet: &SimFleet, cluster: &str) -> kube::Client {
    kube::Client::try_from(sim_config(fleet, cluster).await).unwrap()
}

/// A fleet of one cluster, `one`, keeping exactly `history` watch events
/// (no time window).
pub fn one_cluster_with_history(history: usize) -> Scenario {
    one_cluster_keeping(history, "0s")
}

/// A fleet of one cluster, `one`, keeping at least `history` watch events and
/// every event younger than `window`.
pub fn one_cluster_keeping(history: usize, window: &str) -> Scenario {
    let text = format!(
        "home: one\nclusters:\n  - name: one\n    region: r\n    zones: [r-a, r-b, r-c]\n    trafficShare: 100%\napiServer:\n  watchHistory: {history}\n  watchHistoryWindow: {window}\n"
    );
    Scenario::parse("test.yaml", &text).unwrap()
}

/// The code, reason and message of an API error; anything else fails the test.
pub fn api_error(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

pub fn kubectl_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file());
    // ./scripts/test installs kubectl when it is missing: its absence is a failure, not a skip.
    assert!(
        found.is_some(),
        "kubectl is not on PATH; run the tests with ./scripts/test"
    );
    found
}

/// The system kubectl, pointed at one context of a kubeconfig.
pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    pub cache: PathBuf,
    pub context: String,
}

impl Kubectl {
    /// Runs kubectl; panics with its output when it fails.
    pub async fn run(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.try_run(args).await;
        assert!(ok, "kubectl {} failed:\n{out}\n{err}", args.join(" "));
        out
    }

    pub async fn try_run(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.cache.parent().unwrap())
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg("--context")
            .arg(&self.context)
            .args(args);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Rows of a kubectl table, as maps from header to cell. Columns start where
/// the header's names do (names may hold single spaces: `NOMINATED NODE`).
pub fn table(out: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let mut starts = Vec::new();
    let bytes = header.as_bytes();
    for i in 0..bytes.len() {
        let begins = bytes[i] != b' '
            && (i == 0 || (i >= 2 && bytes[i - 1] == b' ' && bytes[i - 2] == b' '));
        if begins {
            starts.push(i);
        }
    }
    let cell = |line: &str, i: usize| {
        let end = starts
            .get(i + 1)
            .copied()
            .unwrap_or(line.len())
            .min(line.len());
        line.get(starts[i].min(line.len())..end)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    lines
        .map(|l| {
            (0..starts.len())
                .map(|i| (cell(header, i), cell(l, i)))
                .collect()
        })
        .collect()
}

/// What a plain HTTP request got back: what kube's client would not show.
#[derive(Debug)]
pub struct HttpReply {
    pub code: u16,
    pub content_type: String,
    /// Every `Warning` header, as sent.
    pub warnings: Vec<String>,
    pub body: String,
}

/// One HTTP/1.1 request on loopback with hyper (bounded at 30 s wall),
/// without credentials (the metrics and request-count endpoints need none).
pub async fn http(
    method: http::Method,
    url: &str,
    content_type: Option<&str>,
    body: String,
) -> HttpReply {
    http_as(None, method, url, content_type, body).await
}

/// A GET of `path` (with its query) on one cluster as its admin: the
/// status code and the JSON body.
pub async fn get_as_admin(fleet: &SimFleet, cluster: &str, path: &str) -> (u16, serde_json::Value) {
    let url = format!("{}{path}", fleet.url(cluster).unwrap());
    let token = fleet.admin_token(cluster);
    let reply = http_as(
        token.as_deref(),
        http::Method::GET,
        &url,
        None,
        String::new(),
    )
    .await;
    (reply.code, serde_json::from_str(&reply.body).unwrap())
}

/// `http` with a bearer token.
pub async fn http_as(
    token: Option<&str>,
    method: http::Method,
    url: &str,
    content_type: Option<&str>,
    body: String,
) -> HttpReply {
    use http_body_util::{BodyExt, Full};
    let uri: http::Uri = url.parse().unwrap();
    let stream = tokio::net::TcpStream::connect((uri.host().unwrap(), uri.port_u16().unwrap()))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().unwrap().as_str())
        .header("host", "localhost");
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(Full::new(bytes::Bytes::from(body))).unwrap();
    let exchange = async {
        let resp = sender.send_request(req).await.unwrap();
        let header = |name: &str| {
            resp.headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let (content_type, warnings) = (header("content-type").join(", "), header("warning"));
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        HttpReply {
            code,
            content_type,
            warnings,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), exchange)
        .await
        .expect("an answer within 30 s")
}

/// A plain GET's body.
pub async fn http_get(url: &str) -> String {
    http(http::Method::GET, url, None, String::new()).await.body
}
