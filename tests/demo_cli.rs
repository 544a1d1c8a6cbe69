//! `cutover demo` as a user runs it: a bad canary on the simulated fleet is
//! rolled back automatically and the demo exits 3, drawing its timeline; the
//! scenario library is listed one line each.

use std::process::Command;

#[test]
fn demo_of_a_bad_canary_rolls_back_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("timeline.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["demo", "--scenario", "bad-canary", "--time-scale", "900"])
        .arg("--report")
        .arg(&svg)
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
    let picture = std::fs::read_to_string(&svg).expect("the timeline was drawn");
    assert!(picture.starts_with("<svg"), "{picture}");
    for needle in ["traffic to green", "error-ratio", "rollback", "prod-a"] {
        assert!(picture.contains(needle), "{needle} in the timeline");
    }
}

#[test]
fn demo_lists_every_scenario_with_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["demo", "--list"])
        .output()
        .expect("run demo --list");
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/scenarios");
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(stdout.lines().count(), names.len(), "{stdout}");
    for name in names {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} in {stdout}"));
        assert!(line.len() > name.len() + 20, "{line}");
    }
}
