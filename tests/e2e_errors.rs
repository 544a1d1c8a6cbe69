//! Every failing path the suites know, through the binary against the
//! simulated fleet: each error is said once, in words (what failed, where,
//! the API server's message and reason, the fix), never as a Rust Debug
//! structure; `-o json` gives the same error as one JSON object on stdout
//! as well.

mod common;

use std::collections::BTreeMap;

use common::{World, finish, tier2_release};
use cutover_sim::faults::ApiFault;
use cutover_sim::scenario::UnreachableMode;

/// What a failing command printed, and how it exited.
struct Failure {
    what: String,
    code: i32,
    out: String,
    err: String,
}

/// Fails when the output shows a Debug structure or says a line twice.
fn assert_said_once_in_words(f: &Failure) {
    let all = format!("{}\n{}", f.out, f.err);
    for debug in [
        "Status {",
        "Some(",
        "None,",
        "Error {",
        "ErrorResponse",
        "Api(",
        "kind: ",
    ] {
        assert!(
            !all.contains(debug),
            "{}: Debug output {debug:?} in:\n{all}",
            f.what
        );
    }
    let mut seen = BTreeMap::new();
    for line in f.err.lines().map(str::trim).filter(|l| !l.is_empty()) {
        *seen.entry(line).or_insert(0) += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "{}: said twice: {repeated:?}", f.what);
    assert!(f.code != 0, "{}: a failure exits non-zero", f.what);
}

/// The JSON form: the last line of stdout is `{"error": {...}}` with the
/// message and the exit status; stderr has the same message once, for the log.
fn assert_json_error(f: &Failure) -> serde_json::Value {
    let last = f
        .out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "{}: the last line is JSON ({e}): {}\n{}",
            f.what, f.out, f.err
        )
    });
    let error = &v["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}: {v}",
        f.what
    );
    assert_eq!(error["exit"], f.code, "{}: {v}", f.what);
    assert_eq!(
        f.err.lines().filter(|l| l.starts_with("error: ")).count(),
        1,
        "{}: one line for the log: {}",
        f.what,
        f.err
    );
    assert!(
        f.err.contains(error["message"].as_str().unwrap()),
        "{}: {}",
        f.what,
        f.err
    );
    v
}

/// Who runs it, the arguments, the exit expected, words the error must say,
/// and whether the command takes `-o json`.
type Case<'a> = (Option<&'a str>, Vec<&'a str>, i32, &'a str, bool);

async fn fail(w: &World, who: Option<&str>, args: &[&str]) -> Failure {
    let cmd = match who {
        Some(who) => w.cutover_as(who, args),
        None => w.cutover(args),
    };
    let mut cmd = cmd;
    let (code, out, err) = finish(cmd.spawn().unwrap()).await;
    Failure {
        what: args.join(" "),
        code,
        out,
        err,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failing_path_says_its_error_once_in_words_and_as_json() {
    let w = World::start(None, 300.0, &tier2_release()).await;
    let release = w.release_path.to_str().unwrap().to_string();
    let dir = w.dir.path().to_path_buf();
    let bad_cluster = dir.join("bad-cluster.yaml");
    std::fs::write(
        &bad_cluster,
        tier2_release().replace("- name: prod-b", "- name: prod-z"),
    )
    .unwrap();
    let bad_cluster = bad_cluster.to_str().unwrap().to_string();

    // (who, args, expected exit, words the error must say); each command with
    // `-o` runs again with `-o json`.
    let cases: Vec<Case> = vec![
        (
            None,
            vec!["status", "nosuch", "-n", "shop"],
            1,
            "nosuch",
            true,
        ),
        (
            None,
            vec!["history", "nosuch", "-n", "shop"],
            1,
            "nosuch",
            true,
        ),
        (
            None,
            vec!["undo", "nosuch", "-n", "shop"],
            1,
            "nosuch",
            true,
        ),
        (
            None,
            vec!["abort", "nosuch", "-n", "shop", "--reason", "x"],
            1,
            "nosuch",
            false,
        ),
        (
            None,
            vec!["pause", "nosuch", "-n", "shop"],
            1,
            "nosuch",
            false,
        ),
        (
            None,
            vec!["promote", "nosuch", "-n", "shop"],
            1,
            "nosuch",
            false,
        ),
        (
            None,
            vec!["unfreeze", "freeze-nope", "--reason", "x"],
            1,
            "no freeze freeze-nope exists",
            false,
        ),
        (
            Some("viewer"),
            vec!["freeze", "--reason", "x"],
            1,
            "forbidden",
            false,
        ),
        (
            None,
            vec!["run", "-f", &bad_cluster],
            1,
            "spec.clusters[2].name",
            true,
        ),
        (
            None,
            vec!["check", "-f", "no/such/release.yaml"],
            1,
            "does not exist",
            true,
        ),
        (
            Some("viewer"),
            vec!["run", "-f", &release],
            1,
            "forbidden",
            true,
        ),
    ];
    for (who, args, exit, words, json) in &cases {
        let f = fail(&w, *who, args).await;
        assert_eq!(f.code, *exit, "{}: {}\n{}", f.what, f.out, f.err);
        assert!(
            f.err.contains(words),
            "{}: {words:?} not in {}",
            f.what,
            f.err
        );
        assert_said_once_in_words(&f);
        if *json {
            let mut with_json = args.clone();
            with_json.extend(["-o", "json"]);
            let f = fail(&w, *who, &with_json).await;
            assert_eq!(f.code, *exit, "{}: {}\n{}", f.what, f.out, f.err);
            assert_said_once_in_words(&f);
            let v = assert_json_error(&f);
            assert!(
                v["error"]["message"].as_str().unwrap().contains(words),
                "{v}"
            );
        }
    }
    // A bad file's problems are each placed in the JSON.
    let f = fail(&w, None, &["run", "-f", &bad_cluster, "-o", "json"]).await;
    let v = assert_json_error(&f);
    let problem = &v["error"]["problems"][0];
    assert_eq!(problem["field"], "spec.clusters[2].name", "{v}");
    assert!(problem["line"].as_u64().is_some(), "{v}");

    // The home cluster down: the API server cannot be reached, said once.
    let home = &w.sim.cluster(&w.fleet.home).unwrap().faults;
    home.activate(9_000, ApiFault::Unreachable(UnreachableMode::Refuse));
    for args in [
        vec!["status", "checkout", "-n", "shop"],
        vec!["status", "checkout", "-n", "shop", "-o", "json"],
        vec!["run", "-f", release.as_str()],
    ] {
        let f = fail(&w, None, &args).await;
        // An unreachable cluster is exit 1, as the exit codes say.
        assert_eq!(f.code, 1, "{}: {}\n{}", f.what, f.out, f.err);
        assert_said_once_in_words(&f);
        assert!(
            format!("{}{}", f.out, f.err).contains("cannot reach"),
            "{}: {}\n{}",
            f.what,
            f.out,
            f.err
        );
        if args.contains(&"json") {
            assert_json_error(&f);
        }
    }
    home.clear(9_000);

    // A frozen fleet refuses a new release with exit 4, in words and JSON.
    let (code, out, err) = finish(
        w.cutover(&["freeze", "--reason", "incident"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let f = fail(&w, None, &["run", "-f", &release, "-o", "json"]).await;
    assert_eq!(f.code, 4, "{}\n{}", f.out, f.err);
    assert_said_once_in_words(&f);
    assert_json_error(&f);
}
