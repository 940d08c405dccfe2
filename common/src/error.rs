//! Errors: [`Error`] for what goes wrong locally, [`RemoteError`] for what crosses the wire.

use serde::{Deserialize, Serialize};

/// What can go wrong in a stub or an app, typed by who must act.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Json(#[from] serde_json::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("frame of {size} bytes is over the limit of {limit} bytes")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("digest mismatch for module '{module}'")]
    DigestMismatch { module: String },
    #[error("bad module name '{0}': a module name is an identifier, never a path")]
    BadModuleName(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// An error that travels in a frame: its kind tells the receiver what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}", self.render())]
pub struct RemoteError {
    #[serde(deserialize_with = "kind_name")]
    pub kind: ErrorKind,
    /// Human-readable detail.
    pub message: String,
    /// For [`ErrorKind::Exception`]: the Python exception type name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exc_type: Option<String>,
    /// For [`ErrorKind::Exception`]: the remote traceback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

/// Reads `kind`, refusing a value that is not a string saying so (see [`crate::proto::named`]).
fn kind_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ErrorKind, D::Error> {
    crate::proto::named(
        d,
        r#"`kind` to be a string naming the error, like "timeout""#,
    )
}

/// What kind of failure a [`RemoteError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The remote code raised an exception.
    Exception,
    UnknownModule,
    UnknownFunction,
    BadArguments,
    Timeout,
    /// The module's owner left or withdrew it while the call was waiting.
    OwnerGone,
    NotConnected,
    /// The worker running the module died or could not start.
    WorkerFailed,
    /// A frame that could not be understood.
    Protocol,
    /// A request refused by policy (name taken, module owned by someone else, ...).
    Refused,
    /// A value over a configured limit.
    TooLarge,
}

impl RemoteError {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RemoteError {
            kind,
            message: message.into(),
            exc_type: None,
            traceback: None,
        }
    }

    /// The answer to a request whose frame was refused with `e` (malformed, or over the limit),
    /// its message after `context`.
    pub fn refused_frame(e: &Error, context: &str) -> Self {
        let kind = match e {
            Error::FrameTooLarge { .. } => ErrorKind::TooLarge,
            _ => ErrorKind::Protocol,
        };
        RemoteError::new(kind, format!("{context}{e}"))
    }

    fn render(&self) -> String {
        match &self.exc_type {
            Some(t) => format!("{t}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
