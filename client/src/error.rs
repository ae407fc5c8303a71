//! [`Error`]: the one error type of this crate.

use std::fmt;
use std::time::Duration;

use compendium_messages::{ParseError, PayloadError};

use crate::TlsProblem;

/// Everything that can go wrong talking to a relay. Each variant says what to do about it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a `ws://` or `wss://` URL with a host. Fix the URL.
    InvalidUrl(String),
    /// The CA certificate file could not be used. Check the PEM file.
    Tls(String),
    /// TCP, TLS or the WebSocket handshake failed (refused, unreachable, certificate not
    /// trusted, HTTP 503 from a relay at its connection limit, ...). Retry later or fix
    /// the address; [`ConnectError`] says at which stage and why.
    Connect(ConnectError),
    /// An operation did not complete in time; `what` names it. The connection may be dead.
    Timeout {
        /// What timed out: "connect", "handshake", "INIT", "close", "reconnect (the idle
        /// timeout)".
        what: &'static str,
        /// The limit that was exceeded.
        after: Duration,
    },
    /// The relay answered with ERR. [`Error::server_code`] gives the code: 400 invalid
    /// message, 404 address not found, 429 rate limited, 503 target busy (docs/protocol.md
    /// rule 2.6).
    Server {
        /// The ERR's `errCode`.
        code: u16,
        /// The ERR's `errMsg`.
        message: String,
    },
    /// The relay sent something the protocol does not allow (not valid per the schema, a
    /// client-only type, an unsolicited INITRESP, a binary frame). The relay is broken or
    /// is not a Compendium relay.
    InvalidFrame(String),
    /// A `msg` to route is not a JSON object (rule 2.1); nothing was sent.
    InvalidPayload(PayloadError),
    /// A delivered `msg` did not decode into the requested type.
    Decode(serde_json::Error),
    /// The connection is closed; nothing more can be sent or received.
    Closed {
        /// The close code the relay sent, if any.
        code: Option<u16>,
        /// The close reason, or what ended the connection.
        reason: String,
    },
}

impl Error {
    /// The relay's `errCode`, if this is an ERR from the relay.
    #[must_use]
    pub fn server_code(&self) -> Option<u16> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn invalid_frame(err: &ParseError) -> Self {
        Self::InvalidFrame(format!("the relay sent an invalid message: {err}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(message) => write!(f, "invalid URL: {message}"),
            Self::Tls(message) => write!(f, "TLS: {message}"),
            Self::Connect(err) => write!(f, "cannot connect: {err}"),
            Self::Timeout { what, after } => write!(f, "{what} timed out after {after:?}"),
            Self::Server { code, message } => write!(f, "relay error {code}: {message}"),
            Self::InvalidFrame(message) => f.write_str(message),
            Self::InvalidPayload(err) => write!(f, "cannot route: {err}"),
            Self::Decode(err) => write!(f, "delivered msg does not decode: {err}"),
            Self::Closed {
                code: Some(code),
                reason,
            } => write!(f, "connection closed ({code}): {reason}"),
            Self::Closed { code: None, reason } => write!(f, "connection closed: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidPayload(err) => Some(err),
            Self::Decode(err) => Some(err),
            Self::Connect(err) => Some(err),
            _ => None,
        }
    }
}

/// Why a connection could not be opened ([`Error::Connect`]): the stage that failed and
/// the cause, to match on, with a message that names the host.
#[derive(Debug)]
pub struct ConnectError {
    stage: ConnectStage,
    cause: Cause,
    message: String,
}

/// Where opening a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectStage {
    /// The TCP connection (refused, unreachable, name not resolved).
    Tcp,
    /// The TLS handshake of a `wss://` URL.
    Tls,
    /// The WebSocket opening handshake (an HTTP error status, a server that is not a
    /// WebSocket server).
    WebSocket,
    /// Before any network I/O: the blocking client's thread or runtime did not start.
    Startup,
}

#[derive(Debug)]
enum Cause {
    Io(std::io::Error),
    /// A TLS mistake a person can fix, and the I/O error it came as (if any).
    Tls(TlsProblem, Option<std::io::Error>),
    Http(u16),
    /// The relay selected none of the subprotocols offered (it speaks version 1 only).
    NoSubprotocol,
    Other,
}

impl ConnectError {
    pub(crate) fn io(stage: ConnectStage, message: String, err: std::io::Error) -> Self {
        Self {
            stage,
            cause: Cause::Io(err),
            message,
        }
    }

    pub(crate) fn tls(
        stage: ConnectStage,
        message: String,
        problem: TlsProblem,
        err: Option<std::io::Error>,
    ) -> Self {
        Self {
            stage,
            cause: Cause::Tls(problem, err),
            message,
        }
    }

    pub(crate) fn http(status: u16, message: String) -> Self {
        Self {
            stage: ConnectStage::WebSocket,
            cause: Cause::Http(status),
            message,
        }
    }

    pub(crate) fn no_subprotocol(message: String) -> Self {
        Self {
            stage: ConnectStage::WebSocket,
            cause: Cause::NoSubprotocol,
            message,
        }
    }

    /// Whether the relay refused the protocol version offered: it selected none of the
    /// subprotocols (resumable mode against a relay that speaks only version 1).
    #[must_use]
    pub fn is_version_refused(&self) -> bool {
        matches!(self.cause, Cause::NoSubprotocol)
    }

    pub(crate) fn other(stage: ConnectStage, message: String) -> Self {
        Self {
            stage,
            cause: Cause::Other,
            message,
        }
    }

    /// Which stage failed.
    #[must_use]
    pub fn stage(&self) -> ConnectStage {
        self.stage
    }

    /// The operating system's error kind, when an I/O error was the cause (e.g.
    /// `ConnectionRefused`: nothing listens there).
    #[must_use]
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match &self.cause {
            Cause::Io(err) | Cause::Tls(_, Some(err)) => Some(err.kind()),
            _ => None,
        }
    }

    /// The TLS mistake behind it, when it is one a person can fix (a CA certificate served
    /// as the server's own, an untrusted issuer, a name the certificate does not cover,
    /// its dates, a `ws://`/`wss://` scheme that does not match the server). The message
    /// says what to do.
    #[must_use]
    pub fn tls_problem(&self) -> Option<&TlsProblem> {
        match &self.cause {
            Cause::Tls(problem, _) => Some(problem),
            _ => None,
        }
    }

    /// The HTTP status the server answered the WebSocket handshake with, if it refused it
    /// (503: a relay at its connection limit; 404, 426: not a WebSocket endpoint).
    #[must_use]
    pub fn http_status(&self) -> Option<u16> {
        match self.cause {
            Cause::Http(status) => Some(status),
            _ => None,
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Io(err) | Cause::Tls(_, Some(err)) => Some(err),
            _ => None,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
