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
        (
            "a tab in indentation, reported on its own line",
            "  replicas: 6\n",
            "  replicas: 6\n\timages: {}\n",
            1,
            &["release.yaml:15:1", "tab"],
        ),
        (
            "an annotation larger than the API server takes",
            "  namespace: shop\n",
            "  namespace: shop\n  annotations:\n    note: BIG\n",
            1,
            &["field `metadata.annotations`", "262144 bytes"],
        ),
        (
            "a label the API server refuses, in the pod template",
            "          app: checkout\n",
            "          app: checkout\n          \"bad key!\": x\n",
            1,
            &[
                "spec.workload.template.metadata.labels",
                "name part must consist",
            ],
        ),
        (
            "a NaN threshold: a gate that could never fail",
            "      max: 0.02\n",
            "      max: .nan\n",
            1,
            &["field `spec.gates[0].max`", "finite"],
        ),
        (
            "an infinite traffic guard",
            "      minRequestRate: 1\n",
            "      minRequestRate: .inf\n",
            1,
            &["field `spec.gates[0].minRequestRate`", "finite"],
        ),
        (
            "a traffic guard a prometheus gate cannot measure",
            "        scrape:\n          measure: errorRatio\n          metric: http_requests_total\n",
            "        prometheus:\n          query: sum(rate(errors[1m])) / sum(rate(requests[1m])) or vector(0)\n",
            1,
            &["field `spec.gates[0].minRequestRate`", "requestRateQuery"],
        ),
        (
            "compareToBlue on a scrape gate",
            "      minRequestRate: 1\n",
            "      minRequestRate: 1\n      compareToBlue:\n        relative: 0.5\n",
            1,
            &["field `spec.gates[0].compareToBlue`", "prometheus gate"],
        ),
        (
            "a window whose failures reach its size",
            "      minRequestRate: 1\n",
            "      minRequestRate: 1\n      window:\n        failures: 3\n        of: 3\n",
            1,
            &[
                "field `spec.gates[0].window`",
                "more than `failures`",
                "must be below `of`",
            ],
        ),
    ];
    for (what, from, to, exit, needles) in cases {
        assert!(
            RELEASE.contains(from),
            "{what}: fixture text {from:?} not in the example"
        );
        let dir = tempfile::tempdir().unwrap();
        let text = RELEASE
            .replacen(from, to, 1)
            .replace("BIG", &"x".repeat(300 * 1024));
        let path = write_release(dir.path(), &text);
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
    // The release file is named first, not the fleet file looked up beside it.
    let (code, _, err) = cutover(&["plan", "-f", "no/such/release.yaml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("the release file no/such/release.yaml does not exist")
            && !err.contains("fleet"),
        "{err}"
    );
    // Bytes that are not UTF-8 are placed by line and column.
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = RELEASE.as_bytes().to_vec();
    let at = RELEASE.find("  app: checkout").unwrap() + "  app: check".len();
    bytes[at] = 0xff;
    let path = dir.path().join("release.yaml");
    std::fs::write(&path, bytes).unwrap();
    std::fs::write(dir.path().join("fleet.yaml"), FLEET).unwrap();
    let (code, _, err) = cutover(&["plan", "-f", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let line = RELEASE[..at].matches('\n').count() + 1;
    assert!(
        err.contains(&format!("release.yaml:{line}:13")) && err.contains("0xff"),
        "{err}"
    );
    // A freeze that ends as it starts is a usage error, before any file is read.
    let (code, _, err) = cutover(&[
        "freeze",
        "--reason",
        "x",
        "--for",
        "0s",
        "--fleet",
        "nowhere.yaml",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--for must be longer than 0s"), "{err}");
    let (code, _, _) = cutover(&["plan", "--bogus"]);
    assert_eq!(code, 2, "usage errors exit 2");
}

/// `check --at TIME` answers whether a scheduled freeze window would hold the
/// release then (a warning: a window holds a release, it breaks no tier rule).
#[test]
fn check_at_a_time_says_which_freeze_windows_would_hold_the_release() {
    let check = |at: &str| {
        cutover(&[
            "check",
            "-f",
            "examples/checkout/release.yaml",
            "--policies",
            "policies",
            "--at",
            at,
        ])
    };
    // A Saturday noon in Berlin: the tier-1 weekend window.
    let (code, out, err) = check("2026-12-05T11:00:00Z");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("WARN  freeze-windows")
            && out.contains("window/weekend applies at 2026-12-05T11:00:00Z"),
        "{out}"
    );
    assert!(out.contains("--override-freeze window/weekend"), "{out}");
    // A Wednesday afternoon: nothing applies.
    let (code, out, _) = check("2026-12-02T14:00:00Z");
    assert_eq!(code, 0);
    assert!(
        out.contains("pass  freeze-windows") && out.contains("no scheduled freeze window applies"),
        "{out}"
    );
    let (code, _, err) = check("next tuesday");
    assert_eq!(
        code, 2,
        "a time that is not RFC 3339 is a usage error: {err}"
    );
}
