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
        write!(f, "{:#}", self.error)
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
