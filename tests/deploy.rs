//! `deploy/`: the checked-in CRDs are the generated ones, and
//! `kubectl apply -k` creates the controller's objects in the home cluster and
//! cutover's role in a member cluster of the simulated fleet.

mod common;

use common::{Kubectl, kubectl_binary};
use cutover_sim::{Scenario, SimFleet, SimOptions, context_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use kube::api::Api;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

/// The default simulated fleet, in `dir`.
async fn start_fleet(dir: &tempfile::TempDir) -> SimFleet {
    SimFleet::start(SimOptions {
        scenario: Scenario::default_fleet(),
        time_scale: 60.0,
        dir: dir.path().join("fleet"),
    })
    .await
    .unwrap()
}

/// kubectl as the fleet's administrator, on one cluster.
fn admin_kubectl(fleet: &SimFleet, dir: &tempfile::TempDir, cluster: &str) -> Kubectl {
    Kubectl {
        bin: kubectl_binary().unwrap(),
        kubeconfig: fleet.kubeconfig_path().to_path_buf(),
        cache: dir.path().join("cache"),
        context: context_name(cluster),
    }
}

#[test]
fn checked_in_crds_are_the_generated_ones() {
    let path = format!("{DEPLOY}/common/crds.yaml");
    let checked_in = std::fs::read_to_string(&path).unwrap();
    let generated = cutover::cli::crds_yaml().unwrap();
    assert!(
        checked_in == generated,
        "{path} differs from what the code generates; run `cargo run -- crd > deploy/common/crds.yaml`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_k_deploys_the_controller_and_the_member_role() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = start_fleet(&dir).await;
    let kubectl = |cluster: &str| admin_kubectl(&fleet, &dir, cluster);
    let home = kubectl("prod-a");
    let out = home.run(&["apply", "-k", DEPLOY]).await;
    for created in [
        "namespace/cutover-system",
        "customresourcedefinition.apiextensions.k8s.io/releases.cutover.dev",
        "clusterrole.rbac.authorization.k8s.io/cutover-controller",
        "clusterrole.rbac.authorization.k8s.io/cutover-member",
        "role.rbac.authorization.k8s.io/cutover-controller-credentials",
        "serviceaccount/cutover-controller",
        "deployment.apps/cutover-controller",
        "poddisruptionbudget.policy/cutover-controller",
        "flowschema.flowcontrol.apiserver.k8s.io/cutover-leases",
    ] {
        // The simulated fleet boots with deploy/'s namespace, roles and
        // identities already in place (as if applied server-side): kubectl's
        // client-side apply then configures them.
        assert!(
            out.contains(&format!("{created} created"))
                || out.contains(&format!("{created} configured")),
            "{created} in\n{out}"
        );
    }
    for created in [
        "customresourcedefinition.apiextensions.k8s.io/releases.cutover.dev",
        "deployment.apps/cutover-controller",
    ] {
        assert!(out.contains(&format!("{created} created")), "{out}");
    }
    // Applying again changes nothing.
    let again = home.run(&["apply", "-k", DEPLOY]).await;
    assert!(!again.contains(" created"), "{again}");
    // The CRD serves: Releases can be listed.
    home.run(&["get", "releases", "-A"]).await;

    let client = common::sim_client(&fleet, "prod-a").await;
    let d = Api::<Deployment>::namespaced(client.clone(), "cutover-system")
        .get("cutover-controller")
        .await
        .unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    let spread = pod.topology_spread_constraints.unwrap();
    assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
    assert!(c.resources.as_ref().unwrap().requests.is_some());
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), "cutover-system")
        .get("cutover-controller")
        .await
        .unwrap();
    assert!(pdb.spec.unwrap().min_available.is_some());
    // No cluster-wide Secret read: Secrets only by name, in cutover's namespace.
    for role in Api::<ClusterRole>::all(client.clone())
        .list(&Default::default())
        .await
        .unwrap()
    {
        for rule in role.rules.unwrap_or_default() {
            assert!(
                !rule
                    .resources
                    .unwrap_or_default()
                    .iter()
                    .any(|r| r == "secrets"),
                "{:?} grants Secrets cluster-wide",
                role.metadata.name
            );
        }
    }
    let creds = Api::<Role>::namespaced(client, "cutover-system")
        .get("cutover-controller-credentials")
        .await
        .unwrap();
    assert!(
        creds.rules.unwrap()[0].resource_names.is_some(),
        "Secrets are named"
    );

    let member = kubectl("prod-b")
        .run(&["apply", "-k", &format!("{DEPLOY}/member")])
        .await;
    for created in [
        "clusterrole.rbac.authorization.k8s.io/cutover-member",
        "clusterrolebinding.rbac.authorization.k8s.io/cutover-member",
        "serviceaccount/cutover-member",
        "customresourcedefinition.apiextensions.k8s.io/deployfreezes.cutover.dev",
    ] {
        assert!(
            member.contains(&format!("{created} created"))
                || member.contains(&format!("{created} configured")),
            "{created} in\n{member}"
        );
    }
    assert!(!member.contains("deployment.apps"), "{member}");
}

/// Every CRD cutover ships and the Gateway API HTTPRoute CRD pass the strict
/// server's CRD admission (structural schema, rules that compile), and the
/// shipped CRDs' schemas reach `kubectl explain`, and their CEL rules hold: a Release's app cannot change, and a
/// lifted freeze cannot be un-lifted or have its reason rewritten, whoever
/// edits them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_crds_and_the_httproute_crd_are_admitted_and_their_cel_rules_hold() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = start_fleet(&dir).await;
    let k = admin_kubectl(&fleet, &dir, "prod-a");
    let out = k
        .run(&["apply", "-f", &format!("{DEPLOY}/common/crds.yaml")])
        .await;
    assert!(
        out.contains("releases.cutover.dev created")
            && out.contains("deployfreezes.cutover.dev created"),
        "{out}"
    );
    // The HTTPRoute CRD the cluster booted with goes through admission again.
    let route_crd = dir.path().join("httproute-crd.json");
    let json = k
        .run(&[
            "get",
            "crd",
            "httproutes.gateway.networking.k8s.io",
            "-o",
            "json",
        ])
        .await;
    let mut crd: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        json.contains("Must have port for Service reference"),
        "the CRD carries its CEL rules"
    );
    crd["metadata"] = serde_json::json!({"name": crd["metadata"]["name"]});
    crd.as_object_mut().unwrap().remove("status");
    std::fs::write(&route_crd, crd.to_string()).unwrap();
    k.run(&["delete", "crd", "httproutes.gateway.networking.k8s.io"])
        .await;
    let out = k.run(&["create", "-f", route_crd.to_str().unwrap()]).await;
    assert!(out.contains("created"), "{out}");

    let manifests = dir.path().join("objects.yaml");
    std::fs::write(
        &manifests,
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n{}\n---\n{}",
            std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/checkout/release.yaml"
            ))
            .unwrap(),
            "apiVersion: cutover.dev/v1alpha1\nkind: DeployFreeze\nmetadata:\n  name: incident-42\n\
             spec:\n  reason: payments down\n  author: oncall@example.com\n  \
             lifted:\n    at: \"2026-12-03T10:00:00Z\"\n    by: oncall@example.com\n    reason: fixed\n"
        ),
    )
    .unwrap();
    k.run(&["create", "-f", manifests.to_str().unwrap()]).await;
    let refused = |args: &'static [&'static str]| {
        let k = &k;
        async move {
            let (ok, out, err) = k.try_run(args).await;
            assert!(!ok, "kubectl {args:?} was accepted: {out}");
            err
        }
    };
    let err = refused(&[
        "patch",
        "release",
        "checkout",
        "-n",
        "shop",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"app":"payments"}}"#,
    ])
    .await;
    assert!(
        err.contains("is invalid: spec.app: Invalid value: \"object\": app is immutable"),
        "{err}"
    );
    let err = refused(&[
        "patch",
        "deployfreeze",
        "incident-42",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/lifted"}]"#,
    ])
    .await;
    assert!(
        err.contains("spec.lifted: Forbidden: a lifted freeze stays lifted"),
        "{err}"
    );
    let err = refused(&[
        "patch",
        "deployfreeze",
        "incident-42",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"reason":"nothing happened"}}"#,
    ])
    .await;
    assert!(err.contains("reason and author are immutable"), "{err}");
    // kubectl explain reads the CRD's schema from the OpenAPI v3 document.
    let out = k.run(&["explain", "release.spec.plan"]).await;
    for line in [
        "GROUP:      cutover.dev",
        "KIND:       Release",
        "VERSION:    v1alpha1",
        "FIELD: plan <Object>",
        "Timings; anything unset comes from the tier policy.",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }
    let out = k
        .run(&["explain", "deployfreeze.spec", "--recursive"])
        .await;
    assert!(
        out.contains("lifted\t<Object>") && out.contains("reason\t<string> -required-"),
        "{out}"
    );
    // What the rules allow still goes through.
    k.run(&[
        "patch",
        "release",
        "checkout",
        "-n",
        "shop",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"version":"2.15.0"}}"#,
    ])
    .await;
}
