//! What one API request carries past the handlers into admission: its
//! `fieldValidation` directive, whether its user may create what a
//! server-side apply would create, and the warnings the answer brings back in
//! `Warning` headers (as kube-apiserver sends them, e.g. for pruned fields).
//!
//! A task-local scope set by the server around each request; writes made
//! outside a request (the simulated controllers) have none.

use std::cell::RefCell;
use std::future::Future;

/// How unknown fields are treated (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Dropped silently.
    Ignore,
    /// Dropped, with a warning for each (the server's default).
    #[default]
    Warn,
    /// Refused (400).
    Strict,
}

impl FieldValidation {
    /// The query parameter's value; anything else is a bad request.
    pub fn parse(v: Option<&str>) -> Result<FieldValidation, String> {
        match v {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            )),
        }
    }
}

struct Scope {
    validation: FieldValidation,
    creating: Option<crate::api_error::ApiError>,
    warnings: RefCell<Vec<String>>,
}

/// What a request brings to its handlers.
#[derive(Debug, Default)]
pub struct RequestScope {
    pub validation: FieldValidation,
    /// The 403 a write that turns out to create would get: a patch is
    /// authorized as `patch`, and a server-side apply of a missing object
    /// also as `create` (apiserver/pkg/endpoints/handlers/patch.go,
    /// `withAuthorization` around the create validation).
    pub creating: Option<crate::api_error::ApiError>,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Runs `f` as one request; returns its output and the warnings it raised.
pub async fn scoped<F: Future>(request: RequestScope, f: F) -> (F::Output, Vec<String>) {
    let scope = Scope {
        validation: request.validation,
        creating: request.creating,
        warnings: RefCell::new(Vec::new()),
    };
    SCOPE
        .scope(scope, async {
            let out = f.await;
            let warnings = SCOPE.with(|s| s.warnings.take());
            (out, warnings)
        })
        .await
}

/// The current request's field validation (the default outside a request).
pub fn field_validation() -> FieldValidation {
    SCOPE
        .try_with(|s| s.validation)
        .unwrap_or(FieldValidation::Ignore)
}

/// Adds a warning to the current request's answer.
pub fn warn(text: String) {
    let _ = SCOPE.try_with(|s| s.warnings.borrow_mut().push(text));
}

/// Why the current request may not create (`None`: it may, or it is not a request).
pub fn may_not_create() -> Option<crate::api_error::ApiError> {
    SCOPE.try_with(|s| s.creating.clone()).ok().flatten()
}
