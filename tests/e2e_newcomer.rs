//! A newcomer's first minutes: `cutover sim serve` brings up a fleet that is
//! ready to use (CRDs, the example's namespace, serving version and route),
//! prints the `run` command that works next, and that command completes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sim_serve_then_the_printed_run_command_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["sim", "serve", "--time-scale", "1000", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = serve.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut printed = Vec::new();
    let run_line = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("sim serve prints its usage");
        printed.push(line.clone());
        if line.trim_start().starts_with("cutover run ") {
            break line;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "{printed:#?}");
    };
    assert!(
        printed.iter().any(|l| l.contains("The CRDs are installed")),
        "{printed:#?}"
    );
    let args: Vec<&str> = run_line.split_whitespace().skip(1).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(&args)
        .output()
        .unwrap();
    let _ = serve.kill();
    let _ = serve.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the printed command completes the release:\n{text}\n{err}"
    );
    assert!(!err.contains("Status {") && !err.contains("Some("), "{err}");
}

/// `check --live` fails, with the fix, where `run` would hold for a missing
/// CRD: a fleet as it boots, before `kubectl apply -k deploy/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_live_names_missing_crds_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = cutover_sim::SimFleet::start(cutover_sim::SimOptions {
        scenario: cutover_sim::Scenario::default_fleet(),
        time_scale: 60.0,
        dir: dir.path().join("fleet"),
    })
    .await
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args([
            "check",
            "-f",
            "examples/checkout/release.yaml",
            "--live",
            "--fleet",
        ])
        .arg(fleet.fleet_path())
        .arg("--kubeconfig")
        .arg(fleet.kubeconfig_path())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(
        text.contains("FAIL  live-crds")
            && text.contains("prod-a: the DeployFreeze CRD is not installed"),
        "{text}"
    );
    assert!(text.contains("kubectl apply -k deploy/"), "{text}");
    fleet.shutdown().await;
}
