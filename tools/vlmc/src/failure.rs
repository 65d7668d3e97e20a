//! The one error vlmc reports: what it was about and why.

use std::fmt;

/// `vlmc: <subject>: <cause>` on stderr, exit code 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The volume, snapshot, file or segment concerned.
    pub subject: String,
    /// Why, on one line.
    pub cause: String,
}

impl Failure {
    /// A failure about `subject`.
    pub fn new(subject: impl Into<String>, cause: impl fmt::Display) -> Failure {
        let cause = cause.to_string().replace('\n', " ");
        Failure {
            subject: subject.into(),
            cause,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.cause)
    }
}

/// Attaches a subject to any error.
pub trait On<T> {
    /// The error as a [`Failure`] about `subject`.
    fn on(self, subject: &str) -> Result<T, Failure>;
}

impl<T, E: fmt::Display> On<T> for Result<T, E> {
    fn on(self, subject: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(subject, e))
    }
}
