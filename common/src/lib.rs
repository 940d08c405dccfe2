//! stubnet's shared library. The protocol and everything both stubs and apps agree on live here:
//!
//! - [`proto`]: every message, one enum per direction; [`conn`]: newline-JSON framing, accepting.
//! - [`module`]: descriptors; [`pyparse`]: Python source → descriptor.
//! - [`chunk`]: descriptor files in md5-checked pieces; [`store`]: descriptor files on disk.
//! - [`config`]: TOML profiles; [`error`]: local and wire errors.
//! - [`readiness`]: socket and pipe reads without the one bound to fail; [`outbox`]: frames
//!   written by the task that queued them; [`actor`]: state changed by events, applied by the
//!   tasks that read them.

pub mod actor;
pub mod app;
pub mod chunk;
pub mod codegen;
pub mod config;
pub mod conn;
#[cfg(feature = "console")]
pub mod console;
pub mod error;
pub mod log;
pub mod module;
pub mod outbox;
pub mod proto;
pub mod provider;
pub mod pyparse;
pub mod readiness;
pub mod stats;
pub mod store;
#[cfg(feature = "tls")]
pub mod tls;

pub use error::{Error, ErrorKind, RemoteError, Result};

/// Prints one line of a stub's output to stdout, and to the log file if one is set (see
/// [`log`]). Unlike `println!`, it never panics nor waits for stdout: a stub whose stdout is gone
/// (a closed pipe, a vanished terminal) or not read keeps serving.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::log::line(&::std::format!($($arg)*))
    };
}
