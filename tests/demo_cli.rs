//! `cutover demo` as a user runs it: a bad canary on the simulated fleet is
//! rolled back automatically and the demo exits 3.

use std::process::Command;

#[test]
fn demo_of_a_bad_canary_rolls_back_and_exits_3() {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["demo", "--scenario", "bad-canary", "--time-scale", "900"])
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("AbortStarted: gate failed during canary prod-a 4%"),
        "{stdout}"
    );
    assert!(
        stdout.contains("TrafficRestored") && stdout.contains("rolled back to 2.13.0"),
        "{stdout}"
    );
    assert!(stdout.contains("summary (fleet time)"), "{stdout}");
}
