//! What one API request carries past the handlers into admission: its
//! `fieldValidation` directive, and the warnings the answer brings back in
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
    warnings: RefCell<Vec<String>>,
}

tokio::task_local! {
    static SCOPE: Scope;
}

/// Runs `f` as one request; returns its output and the warnings it raised.
pub async fn scoped<F: Future>(validation: FieldValidation, f: F) -> (F::Output, Vec<String>) {
    let scope = Scope {
        validation,
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
