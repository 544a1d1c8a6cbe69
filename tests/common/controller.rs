//! Controller processes on the simulated fleet: started with a short lease,
//! logging to `<identity>.log` in the test's directory.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio::process::{Child, Command};

use super::World;

pub const SYSTEM_NS: &str = "cutover-system";

pub struct Controller {
    pub child: Child,
    pub identity: String,
    pub port: u16,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn system_namespace(w: &World) {
    let path = w.dir.path().join("namespace.yaml");
    std::fs::write(
        &path,
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {SYSTEM_NS}\n"),
    )
    .unwrap();
    w.kubectl_as("admin", &w.fleet.home)
        .run(&["apply", "-f", path.to_str().unwrap()])
        .await;
}

pub fn start_controller(w: &World, identity: &str) -> Controller {
    start_controller_with(w, identity, w.sim.fleet_path(), "text")
}

/// A controller process on `fleet`, logging to `<identity>.log` in the test's directory.
pub fn start_controller_with(
    w: &World,
    identity: &str,
    fleet: &std::path::Path,
    log_format: &str,
) -> Controller {
    start_controller_args(w, identity, fleet, log_format, &[])
}

/// As `start_controller_with`, with `extra` arguments.
pub fn start_controller_args(
    w: &World,
    identity: &str,
    fleet: &std::path::Path,
    log_format: &str,
    extra: &[&str],
) -> Controller {
    let port = free_port();
    let log = std::fs::File::create(w.dir.path().join(format!("{identity}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["controller", "--fleet"])
        .arg(fleet)
        // The controller's ServiceAccount at home, the member one elsewhere.
        .arg("--kubeconfig")
        .arg(w.sim.kubeconfig_as("cutover"))
        .args(["--namespace", SYSTEM_NS, "--lease-duration", "2s"])
        .args(["--identity", identity, "--log-format", log_format])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start cutover controller");
    Controller {
        child,
        identity: identity.to_string(),
        port,
    }
}

/// A plain HTTP GET on loopback: `(status, body)`.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

pub async fn leader(w: &World) -> Option<String> {
    Api::<Lease>::namespaced(w.readers[&w.fleet.home].clone(), SYSTEM_NS)
        .get_opt("cutover-controller")
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
}
