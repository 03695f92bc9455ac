//! Why a `doppel twin` command failed, as one line, and the exit code that says so.

use std::error::Error;
use std::fmt;

use tonic::{Code, Status};

/// Exit code when the node (or the way to it) failed: a gRPC error, a refused or
/// broken connection, a timeout.
pub const EXIT_FAILED: u8 = 1;
/// Exit code when the command line is wrong and nothing was sent.
pub const EXIT_USAGE: u8 = 2;

/// A failed `doppel twin` command. Its text is one line, `<what failed>: <why>`; the
/// binary prints it after `doppel: `.
#[derive(Debug)]
pub struct Failure {
    /// The one-line message.
    message: String,
    /// The process exit code.
    exit_code: u8,
    /// Whether stdout was closed by its reader (`doppel twin watch | head`): not worth
    /// a message, and not a failure.
    output_closed: bool,
}

impl Failure {
    /// A command line the CLI refuses before sending anything (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            message: one_line(&message.into()),
            exit_code: EXIT_USAGE,
            output_closed: false,
        }
    }

    /// A call the node answered with an error status (exit 1): `<what>: <code in
    /// words>: <the status message>`.
    pub fn rpc(what: impl fmt::Display, status: &Status) -> Self {
        Self {
            message: one_line(&format!("{what}: {}", status_text(status))),
            exit_code: EXIT_FAILED,
            output_closed: false,
        }
    }

    /// Anything else that went wrong (exit 1): `<what>: <the error and its causes>`.
    pub fn other(what: impl fmt::Display, error: &(dyn Error + 'static)) -> Self {
        Self::failed(format!("{what}: {}", error_chain(error)))
    }

    /// Something went wrong that the message says in full (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            message: one_line(&message.into()),
            exit_code: EXIT_FAILED,
            output_closed: false,
        }
    }

    /// Stdout was closed by its reader.
    pub fn output_closed() -> Self {
        Self {
            message: "stdout closed".to_string(),
            exit_code: 0,
            output_closed: true,
        }
    }

    /// The process exit code this failure calls for.
    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }

    /// Whether this is stdout closed by its reader rather than a failure.
    pub fn is_output_closed(&self) -> bool {
        self.output_closed
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for Failure {}

/// A gRPC status code in words, as a person would say it.
pub fn code_words(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "not implemented by this node",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// A status as `<code in words>: <message>`, with the transport error behind it when
/// there is one (a refused connection, a reset stream).
fn status_text(status: &Status) -> String {
    let mut text = code_words(status.code()).to_string();
    let message = status.message().trim();
    if !message.is_empty() {
        text.push_str(": ");
        text.push_str(message);
    }
    if let Some(source) = status.source() {
        let causes = error_chain(source);
        if !text.contains(&causes) {
            text.push_str(": ");
            text.push_str(&causes);
        }
    }
    text
}

/// An error and its causes, `outer: inner: innermost`, skipping a cause whose text the
/// previous one already includes.
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let line = error.to_string();
        if !line.is_empty() && !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = error.source();
    }
    text
}

/// `text` on one line: line breaks and other control characters become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_failures_read_as_one_line_with_the_code_in_words() {
        let failure = Failure::rpc(
            "get acme/plant-a/line-9/press-1",
            &Status::not_found("unknown asset `acme/plant-a/line-9/press-1`"),
        );
        assert_eq!(
            failure.to_string(),
            "get acme/plant-a/line-9/press-1: not found: unknown asset `acme/plant-a/line-9/press-1`"
        );
        assert_eq!(failure.exit_code(), EXIT_FAILED);

        let failure = Failure::rpc("list twins", &Status::unauthenticated("bad\ntoken"));
        assert_eq!(
            failure.to_string(),
            "list twins: unauthenticated: bad token"
        );
        let failure = Failure::rpc("audit", &Status::permission_denied(""));
        assert_eq!(failure.to_string(), "audit: permission denied");
    }

    #[test]
    fn usage_failures_exit_2() {
        let failure = Failure::usage("bad parameter `rpm`: expected NAME=VALUE");
        assert_eq!(failure.exit_code(), EXIT_USAGE);
        assert!(!failure.is_output_closed());
        assert!(Failure::output_closed().is_output_closed());
    }

    #[test]
    fn error_chains_skip_repeated_causes() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("transport error")
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let error = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(error_chain(&error), "transport error: connection refused");
    }
}
