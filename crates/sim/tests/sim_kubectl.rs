//! The system `kubectl` against the simulated fleet's kubeconfig, the way a
//! person rehearsing a rollout would use it: list nodes with their zones,
//! `kubectl apply -f` a Deployment (plain client-side apply and
//! `--server-side`), see its pods spread over three zones, install the
//! Release CRD and list releases.

use std::collections::BTreeMap;
use std::path::Path;

mod support;

use cutover_sim::{Scenario, SimFleet, SimOptions};
use kube::CustomResourceExt;
use support::{Kubectl, kubectl_binary, table};

async fn start() -> Option<(SimFleet, Kubectl, tempfile::TempDir)> {
    let bin = kubectl_binary()?;
    let dir = tempfile::tempdir().unwrap();
    let fleet = SimFleet::start(SimOptions {
        scenario: Scenario::default_fleet(),
        time_scale: 600.0,
        dir: dir.path().join("fleet"),
    })
    .await
    .unwrap();
    let k = Kubectl {
        bin,
        kubeconfig: fleet.kubeconfig_path().to_path_buf(),
        cache: dir.path().join("cache"),
        context: "sim-prod-a".into(),
    };
    Some((fleet, k, dir))
}

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app.kubernetes.io/name: web}
spec:
  replicas: 6
  selector:
    matchLabels: {app.kubernetes.io/name: web, cutover.dev/colour: blue}
  template:
    metadata:
      labels: {app.kubernetes.io/name: web, cutover.dev/colour: blue, cutover.dev/version: v1}
    spec:
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: DoNotSchedule
          labelSelector:
            matchLabels: {app.kubernetes.io/name: web}
          matchLabelKeys: [pod-template-hash]
      containers:
        - name: web
          image: registry.example/web:1.0
          ports: [{containerPort: 8080}]
";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sees_nodes_applies_a_deployment_and_lists_releases() {
    let Some((fleet, k, dir)) = start().await else {
        return;
    };

    let nodes = table(
        &k.run(&["get", "nodes", "-L", "topology.kubernetes.io/zone"])
            .await,
    );
    assert_eq!(nodes.len(), 6);
    assert!(nodes.iter().all(|n| n["STATUS"] == "Ready"));
    let zone_of: BTreeMap<String, String> = nodes
        .iter()
        .map(|n| (n["NAME"].clone(), n["ZONE"].clone()))
        .collect();
    let zones: std::collections::BTreeSet<&String> = zone_of.values().collect();
    assert_eq!(
        zones.into_iter().cloned().collect::<Vec<_>>(),
        ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
    );

    let file = write(dir.path(), "deploy.yaml", DEPLOYMENT);
    assert!(
        k.run(&["apply", "-f", &file])
            .await
            .contains("deployment.apps/web created")
    );
    assert!(
        k.run(&["apply", "-f", &file])
            .await
            .contains("deployment.apps/web unchanged")
    );
    let out = k
        .run(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");

    let pods = table(&k.run(&["get", "pods", "-o", "wide"]).await);
    assert_eq!(pods.len(), 6);
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pods {
        assert_eq!(
            (p["READY"].as_str(), p["STATUS"].as_str()),
            ("1/1", "Running")
        );
        *per_zone.entry(zone_of[&p["NODE"]].clone()).or_default() += 1;
    }
    assert_eq!(
        per_zone.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{per_zone:?}"
    );

    // A changed manifest is patched (strategic merge from kubectl's own types).
    let changed = write(
        dir.path(),
        "deploy2.yaml",
        &DEPLOYMENT.replace("web:1.0", "web:1.1"),
    );
    assert!(
        k.run(&["apply", "-f", &changed])
            .await
            .contains("deployment.apps/web configured")
    );
    let image = k
        .run(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .await;
    assert_eq!(image, "registry.example/web:1.1");
    let out = k
        .run(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");

    // The Release CRD, then releases.
    let crd = serde_saphyr::to_string(&cutover_core::spec::Release::crd()).unwrap();
    let crd_file = write(dir.path(), "crd.yaml", &crd);
    assert!(
        k.run(&["apply", "-f", &crd_file])
            .await
            .contains("releases.cutover.dev created")
    );
    let (ok, out, err) = k.try_run(&["get", "releases"]).await;
    assert!(
        ok && out.is_empty() && err.contains("No resources found"),
        "{out} {err}"
    );
    let release = "apiVersion: cutover.dev/v1alpha1\nkind: Release\nmetadata: {name: web-v2}\nspec:\n  app: web\n  tier: tier-1\n  version: v2\n  replicas: 6\n  workload: {template: {spec: {containers: [{name: web, image: web:2}]}}}\n  clusters: [{name: prod-a, role: production}]\n";
    let rel_file = write(dir.path(), "release.yaml", release);
    assert!(
        k.run(&["apply", "-f", &rel_file])
            .await
            .contains("release.cutover.dev/web-v2 created")
    );
    let rows = table(&k.run(&["get", "releases"]).await);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0]["NAME"].as_str(),
            rows[0]["APP"].as_str(),
            rows[0]["VERSION"].as_str()
        ),
        ("web-v2", "web", "v2")
    );

    // Server-side apply and a merge patch work too; kubectl's requests are counted as kubectl's.
    let cm = write(
        dir.path(),
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: '1'}\n",
    );
    assert!(
        k.run(&["apply", "--server-side", "-f", &cm])
            .await
            .contains("serverside-applied")
    );
    k.run(&[
        "patch",
        "configmap",
        "settings",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ])
    .await;
    assert_eq!(
        k.run(&["get", "configmap", "settings", "-o", "jsonpath={.data.b}"])
            .await,
        "2"
    );
    let counts = fleet.requests().cluster("prod-a").user_agent("kubectl");
    assert!(
        counts.verb("patch").total() >= 2 && counts.verb("create").total() >= 3,
        "{:?}",
        counts.by_verb()
    );

    k.run(&["delete", "deployment", "web"]).await;
    let (_, out, err) = k.try_run(&["get", "pods"]).await;
    assert!(
        out.is_empty() && err.contains("No resources found"),
        "{out} {err}"
    );
    fleet.shutdown().await;
}

/// kubectl's typed commands send protobuf bodies, as client-go's typed
/// clients do for built-in kinds; the simulated API server reads them as
/// kube-apiserver does and answers JSON (which the client decodes by the
/// reply's Content-Type).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_kubectl_commands_that_send_protobuf_work() {
    let (fleet, k, _dir) = start().await.unwrap();
    let out = k.run(&["create", "namespace", "shop"]).await;
    assert_eq!(out.trim(), "namespace/shop created");
    k.run(&[
        "create",
        "configmap",
        "flags",
        "-n",
        "shop",
        "--from-literal=colour=green",
        "--from-literal=share=2%",
    ])
    .await;
    let data = k
        .run(&[
            "get",
            "configmap",
            "flags",
            "-n",
            "shop",
            "-o",
            "jsonpath={.data}",
        ])
        .await;
    assert_eq!(data, r#"{"colour":"green","share":"2%"}"#);
    k.run(&[
        "create",
        "secret",
        "generic",
        "token",
        "-n",
        "shop",
        "--from-literal=pw=hunter2",
    ])
    .await;
    let pw = k
        .run(&[
            "get",
            "secret",
            "token",
            "-n",
            "shop",
            "-o",
            "jsonpath={.data.pw}",
        ])
        .await;
    assert_eq!(pw, "aHVudGVyMg==", "base64 of hunter2");
    let who = k
        .run(&[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .await;
    assert_eq!(who, "kubernetes-admin");
    let can = k
        .run(&["auth", "can-i", "delete", "pods", "-n", "shop"])
        .await;
    assert_eq!(can.trim(), "yes");
    k.run(&["create", "serviceaccount", "-n", "shop", "robot"])
        .await;
    let token = k
        .run(&["create", "token", "robot", "-n", "shop", "--duration=10m"])
        .await;
    assert!(
        token.trim().starts_with("sim.") && token.trim().len() > 20,
        "a bound token: {token}"
    );
    k.run(&[
        "create",
        "role",
        "reader",
        "-n",
        "shop",
        "--verb=get,list",
        "--resource=configmaps",
    ])
    .await;
    k.run(&[
        "create",
        "rolebinding",
        "robot-reads",
        "-n",
        "shop",
        "--role=reader",
        "--serviceaccount=shop:robot",
    ])
    .await;
    let robot = |verb: &'static str| {
        let k = &k;
        async move {
            k.try_run(&[
                "auth",
                "can-i",
                verb,
                "configmaps",
                "-n",
                "shop",
                "--as=system:serviceaccount:shop:robot",
            ])
            .await
            .1
        }
    };
    assert_eq!(
        robot("list").await.trim(),
        "yes",
        "the binding made with protobuf grants"
    );
    assert_eq!(robot("delete").await.trim(), "no");
    fleet.shutdown().await;
}
