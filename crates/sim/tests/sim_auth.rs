//! Authentication and RBAC on the simulated fleet, through the real kube
//! client and the system kubectl (both send credentials only over TLS) and
//! plain HTTP: who each kubeconfig is, 401 without credentials,
//! ServiceAccount tokens from the TokenRequest API, and the RBAC
//! authorizer's semantics (resourceNames, aggregation, subresources,
//! impersonation, access reviews), with the API server's 403 wording.

mod support;

use cutover_sim::{Scenario, SimFleet};
use serde_json::json;
use support::{Kubectl, kubectl_binary};

async fn start() -> (SimFleet, tempfile::TempDir) {
    support::start_sim(Scenario::default_fleet(), 60.0).await
}

fn kubectl(fleet: &SimFleet, dir: &tempfile::TempDir, who: &str, cluster: &str) -> Kubectl {
    Kubectl {
        bin: kubectl_binary().unwrap(),
        kubeconfig: match who {
            "admin" => fleet.kubeconfig_path().to_path_buf(),
            other => fleet.kubeconfig_as(other),
        },
        cache: dir.path().join("cache"),
        context: cutover_sim::context_name(cluster),
    }
}

/// A kube client from one identity's kubeconfig, optionally impersonating.
async fn client_as(
    fleet: &SimFleet,
    who: &str,
    cluster: &str,
    as_user: Option<&str>,
) -> kube::Client {
    let path = match who {
        "admin" => fleet.kubeconfig_path().to_path_buf(),
        other => fleet.kubeconfig_as(other),
    };
    let kc = kube::config::Kubeconfig::read_from(path).unwrap();
    let opts = kube::config::KubeConfigOptions {
        context: Some(cutover_sim::context_name(cluster)),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .unwrap();
    config.auth_info.impersonate = as_user.map(str::to_string);
    kube::Client::try_from(config).unwrap()
}

/// The user a SelfSubjectReview names (what `kubectl auth whoami` asks).
async fn whoami(client: kube::Client) -> (String, Vec<String>) {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: kube::Api<SelfSubjectReview> = kube::Api::all(client);
    let review = api
        .create(&Default::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = review.status.unwrap().user_info.unwrap();
    (
        user.username.unwrap_or_default(),
        user.groups.unwrap_or_default(),
    )
}

/// Whether the client's user may do something (`kubectl auth can-i`).
async fn can(client: &kube::Client, verb: &str, resource: &str, sub: &str, name: &str) -> bool {
    use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
    let api: kube::Api<SelfSubjectAccessReview> = kube::Api::all(client.clone());
    let group = if resource == "deployments" {
        "apps"
    } else {
        ""
    };
    let review = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                 "subresource": sub, "name": name, "namespace": "default"}}
    }))
    .unwrap();
    api.create(&Default::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap()
        .allowed
}

/// Applies a JSON document with kubectl (client-side apply sends JSON).
async fn apply(k: &Kubectl, dir: &tempfile::TempDir, name: &str, doc: serde_json::Value) {
    let path = dir.path().join(name);
    std::fs::write(&path, doc.to_string()).unwrap();
    k.run(&["apply", "-f", path.to_str().unwrap()]).await;
}

const RBAC: &str = "rbac.authorization.k8s.io/v1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kubeconfig_is_someone_and_no_credentials_get_401() {
    let (fleet, _dir) = start().await;
    let (admin, groups) = whoami(client_as(&fleet, "admin", "prod-a", None).await).await;
    assert_eq!(
        admin, "kubernetes-admin",
        "a client certificate, as kubeadm's admin.conf"
    );
    assert!(groups.contains(&"system:masters".to_string()), "{groups:?}");
    let (oncall, _) = whoami(client_as(&fleet, "oncall", "prod-a", None).await).await;
    assert_eq!(oncall, "oncall@example.com");
    let (home, _) = whoami(client_as(&fleet, "cutover", "prod-a", None).await).await;
    assert_eq!(
        home,
        "system:serviceaccount:cutover-system:cutover-controller"
    );
    let (member, groups) = whoami(client_as(&fleet, "cutover", "prod-b", None).await).await;
    assert_eq!(
        member,
        "system:serviceaccount:cutover-system:cutover-member"
    );
    assert!(groups.contains(&"system:serviceaccounts:cutover-system".to_string()));

    let url = format!("{}/api/v1/namespaces", fleet.url("prod-a").unwrap());
    for token in [None, Some("not-a-token")] {
        let r = support::http_as(token, http::Method::GET, &url, None, String::new()).await;
        assert_eq!(r.code, 401, "{}", r.body);
        assert!(r.body.contains(r#""reason":"Unauthorized""#), "{}", r.body);
    }
    // The app metrics are not the API: Prometheus scrapes them without credentials.
    let metrics = format!("{}/metrics", fleet.url("prod-a").unwrap());
    let scraped = support::http(http::Method::GET, &metrics, None, String::new()).await;
    assert_eq!(scraped.code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_are_authorized_by_their_bindings_until_the_account_goes() {
    let (fleet, dir) = start().await;
    let admin = kubectl(&fleet, &dir, "admin", "prod-a");
    apply(
        &admin,
        &dir,
        "robot.json",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot", "namespace": "default"}}),
    )
    .await;
    // TokenRequest, as `kubectl create token` asks it.
    let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(client_as(&fleet, "admin", "prod-a", None).await, "default");
    let token = accounts
        .create_token_request("robot", &Default::default(), &Default::default())
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let base = fleet.url("prod-a").unwrap();
    let get = |path: &str| {
        let url = format!("{base}{path}");
        let token = token.clone();
        async move { support::http_as(Some(&token), http::Method::GET, &url, None, String::new()).await }
    };
    let denied = get("/api/v1/namespaces/default/pods").await;
    assert_eq!(denied.code, 403, "{}", denied.body);
    assert!(
        denied.body.contains(
            r#"pods is forbidden: User \"system:serviceaccount:default:robot\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""#
        ),
        "{}",
        denied.body
    );
    apply(
        &admin,
        &dir,
        "pod-reader.json",
        json!({"apiVersion": RBAC, "kind": "Role", "metadata": {"name": "pod-reader", "namespace": "default"},
               "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}),
    )
    .await;
    // A ServiceAccount subject without a namespace is in the RoleBinding's.
    apply(
        &admin,
        &dir,
        "robot-reads-pods.json",
        json!({"apiVersion": RBAC, "kind": "RoleBinding", "metadata": {"name": "robot-reads-pods", "namespace": "default"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
               "subjects": [{"kind": "ServiceAccount", "name": "robot"}]}),
    )
    .await;
    assert_eq!(get("/api/v1/namespaces/default/pods").await.code, 200);
    // A RoleBinding grants in its own namespace only.
    assert_eq!(get("/api/v1/namespaces/kube-system/pods").await.code, 403);
    // A bound token stops working with its ServiceAccount.
    admin
        .run(&["delete", "serviceaccount", "robot", "-n", "default"])
        .await;
    assert_eq!(get("/api/v1/namespaces/default/pods").await.code, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_names_aggregates_subresources_impersonation_and_reviews() {
    let (fleet, dir) = start().await;
    let admin = kubectl(&fleet, &dir, "admin", "prod-a");
    apply(
        &admin,
        &dir,
        "secret-a.json",
        json!({"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": "secret-a"},
               "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"], "verbs": ["get", "list"]}]}),
    )
    .await;
    apply(
        &admin,
        &dir,
        "piece.json",
        json!({"apiVersion": RBAC, "kind": "ClusterRole",
               "metadata": {"name": "piece", "labels": {"example.com/aggregate-to-ops": "true"}},
               "rules": [{"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["update"]}]}),
    )
    .await;
    apply(
        &admin,
        &dir,
        "ops.json",
        json!({"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": "ops"},
               "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"example.com/aggregate-to-ops": "true"}}]},
               "rules": []}),
    )
    .await;
    for role in ["secret-a", "ops"] {
        apply(
            &admin,
            &dir,
            "binding.json",
            json!({"apiVersion": RBAC, "kind": "ClusterRoleBinding", "metadata": {"name": format!("alice-{role}")},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]}),
        )
        .await;
    }
    // What `kubectl auth can-i --as alice` asks: a SelfSubjectAccessReview,
    // sent by the administrator impersonating alice.
    let alice = client_as(&fleet, "admin", "prod-a", Some("alice")).await;
    assert!(can(&alice, "get", "secrets", "", "a").await);
    assert!(!can(&alice, "get", "secrets", "", "b").await);
    assert!(
        can(&alice, "update", "deployments", "scale", "web").await,
        "granted through the aggregated role"
    );
    assert!(!can(&alice, "update", "deployments", "", "web").await);
    // A list of one named object is authorized by its name.
    let (ok, _, err) = as_alice(
        &admin,
        vec!["get", "secrets", "--field-selector", "metadata.name=a"],
    )
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = as_alice(&admin, vec!["get", "secrets"]).await;
    assert!(!ok && err.contains("secrets is forbidden"), "{err}");

    // Impersonating needs its own verb.
    let oncall = kubectl(&fleet, &dir, "oncall", "prod-a");
    let (ok, _, err) = oncall.try_run(&["get", "secrets", "--as", "alice"]).await;
    assert!(!ok, "{err}");
    assert!(
        err.contains(
            r#"users "alice" is forbidden: User "oncall@example.com" cannot impersonate resource "users" in API group "" at the cluster scope"#
        ),
        "{err}"
    );

    // A SubjectAccessReview answers for someone else, from the same rules.
    let reviews: kube::Api<k8s_openapi::api::authorization::v1::SubjectAccessReview> =
        kube::Api::all(client_as(&fleet, "admin", "prod-a", None).await);
    let review = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "alice", "resourceAttributes": {"verb": "get", "resource": "secrets", "name": "a", "namespace": "default"}}
    }))
    .unwrap();
    let answer = reviews.create(&Default::default(), &review).await.unwrap();
    assert!(answer.status.unwrap().allowed);
}

/// kubectl as `alice` (impersonated) in namespace default.
async fn as_alice(k: &Kubectl, mut args: Vec<&str>) -> (bool, String, String) {
    args.extend_from_slice(&["--as", "alice", "-n", "default"]);
    k.try_run(&args).await
}
