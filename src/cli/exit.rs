//! Exit codes, for pipelines.

use std::fmt;

/// What a pipeline learns from the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// Bad input, an unreachable cluster, a bug.
    Error = 1,
    /// Wrong flags or arguments.
    Usage = 2,
    /// Rolled back or aborted.
    RolledBack = 3,
    /// Blocked by a deploy freeze.
    Frozen = 4,
    /// Blocked by tier policy.
    Policy = 5,
    /// Paused, or waiting for a person.
    Waiting = 6,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// An error that ends the command with a given exit status.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub error: anyhow::Error,
}

impl CliError {
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> CliError {
        CliError {
            exit,
            error: error.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message())
    }
}

impl Exit {
    /// The exit status in a word, for JSON.
    pub fn name(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Error => "error",
            Exit::Usage => "usage",
            Exit::RolledBack => "rolledBack",
            Exit::Frozen => "frozen",
            Exit::Policy => "policy",
            Exit::Waiting => "waiting",
        }
    }
}

impl CliError {
    /// What failed, then each cause that says something the text before it
    /// does not: every error is said once, however many layers wrap it.
    pub fn message(&self) -> String {
        let mut text = String::new();
        for cause in self.error.chain() {
            let said = cause.to_string();
            let said = said.trim();
            if said.is_empty() || text.contains(said) {
                continue;
            }
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(said);
        }
        text
    }

    /// The structured form `-o json` prints: the message, the exit status,
    /// and each problem of a file with its place.
    pub fn to_json(&self) -> serde_json::Value {
        let problems: Vec<serde_json::Value> = self
            .error
            .chain()
            .find_map(|c| c.downcast_ref::<crate::spec::InputErrors>())
            .map(|errors| {
                errors
                    .0
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "file": e.file, "line": e.line, "column": e.column,
                            "field": e.field, "problem": e.problem,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut error = serde_json::json!({
            "message": self.message(),
            "exit": self.exit.code(),
            "reason": self.exit.name(),
        });
        if !problems.is_empty() {
            error["problems"] = serde_json::Value::Array(problems);
        }
        serde_json::json!({ "error": error })
    }

    /// Says the error once per reader: one line on stderr for the person or
    /// the job's log, and with `-o json` one JSON object on stdout too, for
    /// the pipeline that parses it.
    pub fn report(&self, output: super::Output) {
        use std::io::Write;
        if output == super::Output::Json {
            let _ = writeln!(std::io::stdout(), "{}", self.to_json());
        }
        let _ = writeln!(std::io::stderr(), "error: {}", self.message());
    }
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> CliError {
        CliError {
            exit: Exit::Error,
            error: e.into(),
        }
    }
}

pub type CliResult<T = Exit> = Result<T, CliError>;
