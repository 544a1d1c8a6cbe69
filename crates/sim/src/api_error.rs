//! Errors the simulated API server answers with, rendered as Kubernetes
//! `Status` objects with the reason and code a real API server would use.
//!
//! Owns the wording and codes of failures; knows nothing of HTTP transport.

use serde_json::{Value, json};

/// A cause's reason, by how its message starts (`FieldValueInvalid` otherwise).
const CAUSE_REASONS: [(&str, &str); 7] = [
    ("Required value", "FieldValueRequired"),
    ("Unsupported value", "FieldValueNotSupported"),
    ("Too long", "FieldValueTooLong"),
    ("Too many", "FieldValueTooMany"),
    ("Forbidden", "FieldValueForbidden"),
    ("conflict with", "FieldManagerConflict"),
    ("Too large resource version", "ResourceVersionTooLarge"),
];

/// A failed API call, as the client will see it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `(name, group, resource)` the error is about, when it is about one object.
    pub details: Option<Box<(String, String, String)>>,
    /// Seconds a client should wait before retrying (429 and some 5xx).
    pub retry_after: Option<u64>,
    /// `(field, message)` of each problem of a 422, as `details.causes`
    /// (kubectl prints them).
    pub causes: Vec<(String, String)>,
    /// A 410 for an expired continue token carries a token to go on with.
    pub continue_token: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// `deployments.apps`, or `pods` for the core group: how Kubernetes names a resource in errors.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
            causes: Vec::new(),
            continue_token: None,
        }
    }

    fn about(mut self, name: &str, group: &str, resource: &str) -> ApiError {
        self.details = Some(Box::new((
            name.to_string(),
            group.to_string(),
            resource.to_string(),
        )));
        self
    }

    pub fn not_found(group: &str, resource: &str, name: &str) -> ApiError {
        let q = qualified(group, resource);
        ApiError::new(404, "NotFound", format!("{q} {name:?} not found"))
            .about(name, group, resource)
    }

    pub fn no_such_resource(path: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn already_exists(group: &str, resource: &str, name: &str) -> ApiError {
        let q = qualified(group, resource);
        ApiError::new(409, "AlreadyExists", format!("{q} {name:?} already exists"))
            .about(name, group, resource)
    }

    /// A write based on a stale `resourceVersion`.
    pub fn conflict(group: &str, resource: &str, name: &str) -> ApiError {
        let q = qualified(group, resource);
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {q} {name:?}: the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        )
        .about(name, group, resource)
    }

    pub fn invalid(
        group: &str,
        resource: &str,
        name: &str,
        problem: impl Into<String>,
    ) -> ApiError {
        let q = qualified(group, resource);
        let problem = problem.into();
        ApiError::new(
            422,
            "Invalid",
            format!("{q} {name:?} is invalid: {problem}"),
        )
        .about(name, group, resource)
    }

    /// A 422 with one cause per problem, each written `field: message`.
    pub fn invalid_fields(
        group: &str,
        resource: &str,
        name: &str,
        problems: &[String],
    ) -> ApiError {
        let joined = match problems {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let mut e = ApiError::invalid(group, resource, name, joined);
        e.causes = problems
            .iter()
            .map(|p| match p.split_once(": ") {
                Some((field, message)) => (field.to_string(), message.to_string()),
                None => (String::new(), p.clone()),
            })
            .collect();
        e
    }

    /// 401, as kube-apiserver answers a request no authenticator accepts.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 for a denied request, worded as kube-apiserver's
    /// `responsewriters.Forbidden` (`apierrors.NewForbidden` around
    /// `forbiddenMessage`): `deployments.apps "web" is forbidden: User ...`.
    pub fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
        let q = qualified(group, resource);
        let message = match (resource.is_empty(), name.is_empty()) {
            (true, _) => format!("forbidden: {why}"),
            (false, true) => format!("{q} is forbidden: {why}"),
            (false, false) => format!("{q} {name:?} is forbidden: {why}"),
        };
        ApiError::new(403, "Forbidden", message).about(name, group, resource)
    }

    /// 409 for a server-side apply that would change fields other managers
    /// own, worded as kube-apiserver's `NewConflictError`
    /// (apimachinery's managedfields/internal/conflict.go), one cause each.
    pub fn apply_conflict(found: &[crate::patch::Conflict]) -> ApiError {
        let message = match found {
            [one] => format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                one.manager, one.path
            ),
            many => {
                let mut managers: Vec<&str> = many.iter().map(|c| c.manager.as_str()).collect();
                managers.sort_unstable();
                managers.dedup();
                let mut lines = Vec::new();
                for m in managers {
                    lines.push(format!("conflicts with {m}:"));
                    for c in many.iter().filter(|c| c.manager == m) {
                        lines.push(format!("- {}", c.path));
                    }
                }
                format!(
                    "Apply failed with {} conflicts: {}",
                    many.len(),
                    lines.join("\n")
                )
            }
        };
        let mut e = ApiError::new(409, "Conflict", message);
        e.causes = found
            .iter()
            .map(|c| (c.path.clone(), format!("conflict with {}", c.manager)))
            .collect();
        e
    }

    /// 504 for a read from a resourceVersion the server has not reached
    /// (apiserver storage's `NewTooLargeResourceVersionError`: a Timeout
    /// with a `ResourceVersionTooLarge` cause, retry after 1 s).
    pub fn too_large_resource_version(wanted: u64, current: u64) -> ApiError {
        let mut e = ApiError::new(
            504,
            "Timeout",
            format!("Too large resource version: {wanted}, current: {current}"),
        );
        e.causes = vec![(String::new(), "Too large resource version".to_string())];
        e.retry_after = Some(1);
        e
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    /// A watch or list asked for history the server no longer keeps.
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    pub fn service_unavailable(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(503, "ServiceUnavailable", message);
        e.retry_after = Some(1);
        e
    }

    pub fn too_many_requests(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(429, "TooManyRequests", message);
        e.retry_after = Some(1);
        e
    }

    /// An injected failure with an arbitrary code.
    pub fn injected(code: u16) -> ApiError {
        match code {
            429 => ApiError::too_many_requests("the simulated API server is throttling requests"),
            503 => ApiError::service_unavailable("the simulated API server is unavailable"),
            504 => ApiError::new(504, "Timeout", "the simulated API server timed out"),
            _ => ApiError::internal("the simulated API server failed"),
        }
    }

    /// The `Status` object a client decodes.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((name, group, kind)) = self.details.as_deref() {
            s["details"] = json!({ "name": name, "group": group, "kind": kind });
        }
        if !self.causes.is_empty() {
            s["details"]["causes"] = self
                .causes
                .iter()
                .map(|(field, message)| {
                    let reason = CAUSE_REASONS
                        .iter()
                        .find(|(prefix, _)| message.starts_with(prefix))
                        .map_or("FieldValueInvalid", |(_, reason)| reason);
                    json!({"reason": reason, "message": message, "field": field})
                })
                .collect();
        }
        if let Some(token) = &self.continue_token {
            s["metadata"]["continue"] = json!(token);
        }
        if let Some(secs) = self.retry_after {
            // Indexing a missing key of an object inserts it.
            s["details"]["retryAfterSeconds"] = json!(secs);
        }
        s
    }
}

/// The `Status` a successful delete answers with for kinds that return one.
pub fn success_status(group: &str, resource: &str, name: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": { "name": name, "group": group, "kind": resource },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_reads_like_the_real_thing() {
        let e = ApiError::not_found("apps", "deployments", "web");
        let s = e.status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["details"]["kind"], "deployments");
        let core = ApiError::not_found("", "pods", "p");
        assert_eq!(core.status()["message"], "pods \"p\" not found");
    }

    #[test]
    fn throttling_says_when_to_retry() {
        let s = ApiError::injected(429).status();
        assert_eq!(s["code"], 429);
        assert_eq!(s["reason"], "TooManyRequests");
        assert_eq!(s["details"]["retryAfterSeconds"], 1);
    }
}
