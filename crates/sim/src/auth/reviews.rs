//! The API's own questions about identity and access, answered from the same
//! authenticator and RBAC evaluation every request meets, and never stored:
//! SelfSubjectAccessReview and SubjectAccessReview
//! (`authorization.k8s.io/v1`), SelfSubjectReview
//! (`authentication.k8s.io/v1`, what `kubectl auth whoami` asks), and the
//! TokenRequest subresource of ServiceAccounts (`kubectl create token`).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::rbac::{Attributes, Decision};
use super::{Authenticator, UserInfo};
use crate::api_error::{ApiError, ApiResult};
use crate::store::Store;

/// The reviews this module answers, by group and resource.
pub const REVIEWS: [(&str, &str); 3] = [
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "subjectaccessreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
];

/// Whether a create at `group/plural` is a review this module answers.
pub fn is_review(group: &str, plural: &str) -> bool {
    REVIEWS.contains(&(group, plural))
}

/// The answer to a review created by `user`.
pub fn answer(
    store: &Store,
    log: &Authenticator,
    user: &UserInfo,
    group: &str,
    plural: &str,
    version: &str,
    mut body: Value,
) -> ApiResult<Value> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    body["apiVersion"] = json!(format!("{group}/{version}"));
    match plural {
        "selfsubjectreviews" => {
            body["kind"] = json!("SelfSubjectReview");
            body["status"] = json!({"userInfo": user.to_json()});
        }
        "selfsubjectaccessreviews" => {
            body["kind"] = json!("SelfSubjectAccessReview");
            body["status"] = access(store, log, user, &body["spec"], plural)?;
        }
        _ => {
            body["kind"] = json!("SubjectAccessReview");
            let spec = &body["spec"];
            let subject = UserInfo {
                name: spec["user"].as_str().unwrap_or_default().to_string(),
                uid: spec["uid"].as_str().unwrap_or_default().to_string(),
                groups: spec["groups"]
                    .as_array()
                    .map(|g| {
                        g.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            if subject.name.is_empty() && subject.groups.is_empty() {
                return Err(ApiError::invalid(
                    "authorization.k8s.io",
                    plural,
                    "",
                    "spec.user: Invalid value: \"\": at least one of user or group must be specified",
                ));
            }
            body["status"] = access(store, log, &subject, spec, plural)?;
        }
    }
    Ok(body)
}

/// `status` of an access review: the RBAC decision for its attributes,
/// noted with the decisions made on requests.
fn access(
    store: &Store,
    log: &Authenticator,
    user: &UserInfo,
    spec: &Value,
    plural: &str,
) -> ApiResult<Value> {
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_string();
    let attrs = match (
        spec["resourceAttributes"].as_object(),
        spec["nonResourceAttributes"].as_object(),
    ) {
        (Some(_), None) => {
            let r = &spec["resourceAttributes"];
            Attributes {
                verb: text(r, "verb"),
                group: text(r, "group"),
                resource: text(r, "resource"),
                subresource: text(r, "subresource"),
                namespace: text(r, "namespace"),
                name: text(r, "name"),
                path: None,
            }
        }
        (None, Some(_)) => {
            let n = &spec["nonResourceAttributes"];
            Attributes {
                verb: text(n, "verb"),
                path: Some(text(n, "path")),
                ..Default::default()
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "authorization.k8s.io",
                plural,
                "",
                "spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
    };
    Ok(match log.decide(store, user, &attrs) {
        Decision::Allow => json!({"allowed": true}),
        Decision::Deny(reason) => json!({"allowed": false, "reason": reason}),
    })
}

/// `POST .../serviceaccounts/NAME/token`: a token bound to that
/// ServiceAccount, valid while it exists.
pub fn token_request(
    store: &Store,
    tokens: &Authenticator,
    ns: &str,
    name: &str,
    mut body: Value,
    now: Timestamp,
) -> ApiResult<Value> {
    let kind = store
        .kind_of("", "serviceaccounts")
        .ok_or_else(|| ApiError::no_such_resource("serviceaccounts"))?;
    let sa = store.get(&kind, ns, name)?;
    let seconds = body["spec"]["expirationSeconds"].as_i64().unwrap_or(3600);
    if seconds < 600 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "tokenrequests",
            name,
            "spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes",
        ));
    }
    let token = tokens.issue_service_account(ns, name, crate::meta::uid(&sa));
    let expires = now
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .unwrap_or(now);
    if !body.is_object() {
        body = json!({});
    }
    body["apiVersion"] = json!("authentication.k8s.io/v1");
    body["kind"] = json!("TokenRequest");
    body["metadata"]["name"] = json!(name);
    body["metadata"]["namespace"] = json!(ns);
    body["metadata"]["creationTimestamp"] = json!(crate::meta::time(now));
    body["spec"]["expirationSeconds"] = json!(seconds);
    if body["spec"]["audiences"].is_null() {
        body["spec"]["audiences"] = json!(["https://kubernetes.default.svc"]);
    }
    body["status"] = json!({"token": token, "expirationTimestamp": crate::meta::time(expires)});
    Ok(body)
}
