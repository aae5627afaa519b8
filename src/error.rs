//! The one error type of the library: every failure carries the variable,
//! path or URL it is about, and prints as one lower-case line.

use std::fmt;
use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A configuration variable is missing or has a bad value.
    Config { var: String, reason: String },
    /// A file could not be read, written or removed.
    Io { context: String, source: io::Error },
    /// No HTTP answer: connection refused, timeout, TLS failure, proxy error.
    Transport {
        context: String,
        source: Box<ureq::Error>,
    },
    /// An HTTP answer with an error status; `message` is the server's text.
    Api {
        context: String,
        status: u16,
        message: String,
        /// Seconds from a `Retry-After` header.
        retry_after: Option<u64>,
    },
    /// A response body that was not what the API documents.
    Decode { context: String, reason: String },
    /// A well-formed answer with a value that must not be used (an empty
    /// token, a lease of zero). Never retried: a login answer like that
    /// came with a token minted, and each retry would mint another.
    Invalid { context: String, reason: String },
    /// An answer larger than what a valid one can be; never retried, since
    /// the server would send it again.
    TooLarge {
        context: String,
        /// The per-call limit in bytes.
        limit: u64,
        /// The announced `Content-Length`, when there was one.
        size: Option<u64>,
    },
    /// SIGTERM or SIGINT arrived: the operation was abandoned.
    Interrupted,
    /// Anything else, with its context already in the text.
    Other(String),
}

impl Error {
    pub fn config(var: &str, reason: impl Into<String>) -> Self {
        Error::Config {
            var: var.to_string(),
            reason: reason.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// HTTP status of an API error, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying the same request again may succeed: connection
    /// problems, timeouts, 412 (a Vault replica not caught up), 429 and 5xx
    /// except 501 (not implemented will stay so). Same set as Vault's Go client.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { source, .. } => match &**source {
                ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::BadUri(_) => false,
                // A certificate problem surfaces as an I/O error wrapping
                // rustls' error; it will not fix itself by retrying.
                ureq::Error::Io(io) => !io
                    .get_ref()
                    .is_some_and(|inner| inner.is::<rustls::Error>()),
                _ => true,
            },
            Error::Api { status, .. } => {
                matches!(status, 412 | 429) || (*status >= 500 && *status != 501)
            }
            _ => false,
        }
    }

    /// Adds an outer context in front of the message (a signal stays a signal).
    pub fn context(self, outer: impl fmt::Display) -> Self {
        match self {
            Error::Interrupted => Error::Interrupted,
            other => Error::Other(format!("{outer}: {other}")),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { var, reason } => write!(f, "{var}: {reason}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Transport { context, source } => write!(f, "{context}: {source}"),
            Error::Api {
                context,
                status,
                message,
                ..
            } => {
                if message.is_empty() {
                    write!(f, "{context}: HTTP {status}")
                } else {
                    write!(f, "{context}: HTTP {status}: {message}")
                }
            }
            Error::Decode { context, reason } => write!(f, "{context}: {reason}"),
            Error::Invalid { context, reason } => {
                write!(f, "{context}: invalid answer: {reason}")
            }
            Error::TooLarge {
                context,
                limit,
                size: Some(size),
            } => write!(
                f,
                "{context}: answer of {size} bytes is over the limit of {limit} bytes, not retried"
            ),
            Error::TooLarge {
                context,
                limit,
                size: None,
            } => write!(
                f,
                "{context}: answer over the limit of {limit} bytes, not retried"
            ),
            Error::Interrupted => f.write_str("signal received - stop execution"),
            Error::Other(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Transport { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small() {
        // Results of this type are returned everywhere; keep them cheap to move.
        assert!(
            std::mem::size_of::<Error>() <= 80,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn transient_statuses_match_vault_client() {
        let api = |status| Error::Api {
            context: "x".into(),
            status,
            message: String::new(),
            retry_after: None,
        };
        for s in [412, 429, 500, 502, 503, 504] {
            assert!(api(s).is_transient(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 501] {
            assert!(!api(s).is_transient(), "{s}");
        }
    }
}
