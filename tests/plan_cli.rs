//! `cutover plan` end to end through the binary: the example's timeline, and
//! errors for every class of bad input naming file, line, column and field.

use std::path::{Path, PathBuf};
use std::process::Command;

const RELEASE: &str = include_str!("../examples/checkout/release.yaml");
const FLEET: &str = include_str!("../examples/checkout/fleet.yaml");

fn cutover(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(args)
        .output()
        .expect("run cutover");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a release (and the example fleet) into a fresh directory.
fn write_release(dir: &Path, release: &str) -> PathBuf {
    std::fs::write(dir.join("fleet.yaml"), FLEET).unwrap();
    let path = dir.join("release.yaml");
    std::fs::write(&path, release).unwrap();
    path
}

#[test]
fn plan_of_the_example_shows_the_canary_ramp_soak_cutover_bake_and_total() {
    let (code, out, err) = cutover(&["plan", "-f", "examples/checkout/release.yaml", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entries = plan["entries"].as_array().unwrap();
    let find = |name: &str| {
        entries
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no step {name}"))
    };
    // 2% of total traffic on prod-a, which carries half: 4% of prod-a's traffic.
    let canary = find("canary prod-a 4%");
    assert_eq!(canary["weights"]["prod-a"], "4%");
    assert_eq!(canary["weights"]["prod-b"], "0%");
    assert_eq!(canary["startsAfter"], "10m");
    // Steps of 5% of prod-a every 5 minutes to 100%.
    let ramps: Vec<_> = entries.iter().filter(|e| e["kind"] == "ramp").collect();
    let weights: Vec<_> = ramps
        .iter()
        .map(|e| e["weight"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<_> = (5..=100).step_by(5).map(|w| format!("{w}%")).collect();
    assert_eq!(weights, want);
    assert_eq!(ramps[0]["startsAfter"], "20m");
    assert_eq!(ramps[1]["startsAfter"], "25m");
    assert_eq!(find("soak prod-a 30m")["startsAfter"], "1h 55m");
    let cut = find("cut over prod-b");
    assert_eq!(cut["startsAfter"], "2h 25m");
    assert_eq!(cut["weights"]["prod-b"], "100%");
    assert_eq!(find("bake 2h")["startsAfter"], "2h 25m");
    assert_eq!(find("clean up blue on prod-b")["startsAfter"], "4h 25m");
    // Total = staging verify 10m + canary 10m + 19 ramp holds of 5m + soak 30m + bake 2h.
    assert_eq!(plan["total"], "4h 25m");

    let (code, text, _) = cutover(&["plan", "-f", "examples/checkout/release.yaml"]);
    assert_eq!(code, 0);
    assert!(text.contains("canary prod-a 4%"), "{text}");
    assert!(text.contains("at least 4h 25m"), "{text}");
}

/// Each class of bad input: (what to change in the example, the exit code,
/// and what the message must contain: file:line:col and the field).
#[test]
fn bad_input_names_file_line_column_and_field() {
    let cases: &[(&str, &str, &str, i32, &[&str])] = &[
        (
            "unknown field",
            "  replicas: 6\n",
            "  replicas: 6\n  replica: 6\n",
            1,
            &["release.yaml:15:3", "replica"],
        ),
        (
            "wrong type",
            "  replicas: 6\n",
            "  replicas: six\n",
            1,
            &["release.yaml:14:13", "field `spec.replicas`"],
        ),
        (
            "bad duration",
            "    soak: 30m\n",
            "    soak: 30 minutes-ish\n",
            1,
            &["release.yaml:", "field `spec.plan.soak`", "duration"],
        ),
        (
            // A Service name is a DNS-1035 label (kube-apiserver: ValidateServiceName).
            "app starting with a digit",
            "  app: checkout\n",
            "  app: 2checkout\n",
            1,
            &[
                "field `spec.app`",
                "2checkout-green",
                "DNS-1035",
                "start the app with a letter",
            ],
        ),
        (
            "app too long for its slot Services",
            "  app: checkout\n",
            "  app: checkout-service-of-the-shop-that-sells-things-to-people-x\n",
            1,
            &["field `spec.app`", "57 characters at most"],
        ),
        (
            "bare number duration",
            "    bake: 2h\n",
            "    bake: 7200\n",
            1,
            &["field `spec.plan.bake`", "write the unit"],
        ),
        (
            "weight above 100",
            "      step: 5%\n",
            "      step: 150%\n",
            1,
            &[
                "release.yaml:93:",
                "field `spec.plan.ramp.step`",
                "at most 100%",
            ],
        ),
        (
            "weight not a number",
            "      weight: 2%\n",
            "      weight: lots\n",
            1,
            &["field `spec.plan.canary.weight`", "percentage"],
        ),
        (
            "tier-1 canary above 5%",
            "      weight: 2%\n",
            "      weight: 8%\n",
            5,
            &[
                "release.yaml:90:",
                "field `spec.plan.canary.weight`",
                "maximum of 5%",
            ],
        ),
        (
            "tier-1 soak below 30m",
            "    soak: 30m\n",
            "    soak: 30s\n",
            5,
            &[
                "release.yaml:95:",
                "field `spec.plan.soak`",
                "minimum of 30m",
            ],
        ),
        (
            "cluster not in fleet",
            "    - name: prod-b\n",
            "    - name: prod-c\n",
            1,
            &[
                "release.yaml:54:",
                "field `spec.clusters[2].name`",
                "prod-c",
                "staging, prod-a, prod-b",
            ],
        ),
        (
            "unknown tier",
            "  tier: tier-1\n",
            "  tier: tier-7\n",
            1,
            &["release.yaml:12:", "field `spec.tier`", "tier-1, tier-2"],
        ),
    ];
    for (what, from, to, exit, needles) in cases {
        assert!(
            RELEASE.contains(from),
            "{what}: fixture text {from:?} not in the example"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = write_release(dir.path(), &RELEASE.replacen(from, to, 1));
        let (code, _, err) = cutover(&["plan", "-f", path.to_str().unwrap()]);
        assert_eq!(code, *exit, "{what}: {err}");
        for n in *needles {
            assert!(err.contains(n), "{what}: {n:?} not in: {err}");
        }
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}

#[test]
fn a_canary_larger_than_the_first_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = FLEET
        .replacen("trafficShare: 50%", "trafficShare: 1%", 1)
        .replacen("trafficShare: 50%", "trafficShare: 99%", 1);
    std::fs::write(dir.path().join("fleet.yaml"), fleet).unwrap();
    std::fs::write(dir.path().join("release.yaml"), RELEASE).unwrap();
    let (code, _, err) = cutover(&[
        "plan",
        "-f",
        dir.path().join("release.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("field `spec.plan.canary.weight`"), "{err}");
    assert!(err.contains("more than prod-a carries (1%)"), "{err}");
}

#[test]
fn a_bad_fleet_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("fleet.yaml"),
        FLEET.replace("trafficShare: 0%", "trafficShare: 10%"),
    )
    .unwrap();
    std::fs::write(dir.path().join("release.yaml"), RELEASE).unwrap();
    let (code, _, err) = cutover(&[
        "plan",
        "-f",
        dir.path().join("release.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("fleet.yaml:"), "{err}");
    assert!(err.contains("add up to 110%"), "{err}");
}

#[test]
fn missing_files_and_bad_flags() {
    let (code, _, err) = cutover(&["plan", "-f", "no/such/release.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("fleet"), "{err}");
    let (code, _, _) = cutover(&["plan", "--bogus"]);
    assert_eq!(code, 2, "usage errors exit 2");
}
