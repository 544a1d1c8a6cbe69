//! SIGTERM and SIGINT: `run` stops between passes, gives the release's Lease
//! back and says how to resume, so the next `run` starts at once instead of
//! waiting the lease out; the controller stops its drivers and gives its
//! leader Lease back.

mod common;

use common::{World, finish, tier2_release};
use cutover::spec::Percent;
use cutover::spec::status::Phase;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

async fn release_lease_holder(w: &World) -> Option<String> {
    Api::<Lease>::namespaced(w.readers[&w.fleet.home].clone(), common::NS)
        .get_opt("cutover-release-checkout")
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_run_at_a_safe_point_and_gives_the_lease_back() {
    for sig in ["TERM", "INT"] {
        let w = World::start(None, 300.0, &tier2_release()).await;
        let child = w.spawn_run(&[]);
        let pid = child.id().unwrap();
        w.wait_for("the canary", |s| {
            s.phase == Phase::Progressing && s.weights.values().any(|p| *p > Percent::ZERO)
        })
        .await;
        assert!(release_lease_holder(&w).await.is_some());
        signal(pid, sig);
        let (code, out, err) = finish(child).await;
        assert_eq!(code, 6, "SIG{sig}: {out}\n{err}");
        let last = out.lines().last().unwrap_or_default();
        assert!(
            last.contains("\"stopped\"") && last.contains("run the same command again to resume"),
            "SIG{sig}: {out}"
        );
        assert_eq!(
            release_lease_holder(&w).await,
            None,
            "SIG{sig}: the lease is given back"
        );
        let s = w.status().await;
        assert!(
            !s.phase.is_terminal(),
            "SIG{sig}: the release is left in flight"
        );
        // The next run takes over at once: no waiting for a lease.
        let (code, out, err) = finish(w.spawn_run(&[])).await;
        assert_eq!(code, 0, "SIG{sig}: {out}\n{err}");
        assert!(!out.contains("waiting for its lease"), "SIG{sig}: {out}");
        assert_eq!(w.status().await.phase, Phase::Completed);
    }
}
