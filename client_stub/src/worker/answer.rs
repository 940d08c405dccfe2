//! The worker's answer lines (see `worker.py`): a result, an exception, or a line that is
//! not the protocol, described for the message that says so.

use serde::Deserialize;
use serde_json::Value;

use common::error::{ErrorKind, RemoteError};
use common::proto::Json;

use super::Answer;
use crate::calls::result_too_large;

/// A worker's answer line, its value kept as text.
#[derive(Deserialize)]
struct WorkerAnswer {
    id: Option<u64>,
    /// Present, even as `null`, for a result.
    #[serde(default, deserialize_with = "present")]
    ok: Option<Json>,
    error: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Json>, D::Error> {
    Json::deserialize(d).map(Some)
}

/// Parses the answer to request `id`: `Err` describes a line that is not one.
pub(super) fn parse_answer(line: &str, id: u64) -> Result<Answer, String> {
    let answer: WorkerAnswer = serde_json::from_str(line).map_err(|e| invalid(e, line))?;
    if answer.id != Some(id) {
        return Err(format!(
            "expected the answer to call {id}: {}",
            excerpt(line)
        ));
    }
    if let Some(ok) = answer.ok {
        return Ok(Ok(ok));
    }
    let error = answer.error.as_ref();
    // A function a reload took away after the call was checked: as the stub's own check says.
    let said = |key| error.and_then(|e| e.get(key)).and_then(Value::as_str);
    if let (Some("unknown_function"), Some(message)) = (said("kind"), said("message")) {
        return Ok(Err(RemoteError::new(ErrorKind::UnknownFunction, message)));
    }
    // Interrupted at its deadline (or not started past it): a timeout to the caller, as when
    // its own stub times it out first; which of the two ticks first is chance.
    let kind = match error.and_then(|e| e.get("type")) {
        Some(t) if t == "CallTimedOut" => ErrorKind::Timeout,
        _ => ErrorKind::Exception,
    };
    match error.and_then(|e| exception(kind, e, "")) {
        Some(error) => Ok(Err(error)),
        None => Err(format!(
            "neither a result nor an exception: {}",
            excerpt(line)
        )),
    }
}

/// The error for answer `id`, a line of `size` bytes over the frame limit (`max_frame`) of which
/// only `head` was kept: a result is sized as the owner sizes one it read whole.
pub(super) fn too_large(head: &[u8], id: u64, size: usize, max_frame: usize) -> RemoteError {
    // `worker.py` writes a result as `{"id":N,"ok":VALUE}`.
    let ok = format!(r#"{{"id":{id},"ok":"#);
    match head.starts_with(ok.as_bytes()) {
        true => result_too_large(size - ok.len() - 1, max_frame),
        false => RemoteError::new(
            ErrorKind::TooLarge,
            format!("the exception is {size} bytes, over the frame limit of {max_frame} bytes"),
        ),
    }
}

/// The error for an exception as `worker.py` describes it, its message after `context`.
pub(super) fn exception(kind: ErrorKind, error: &Value, context: &str) -> Option<RemoteError> {
    let text = |key| error.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(RemoteError {
        kind,
        message: format!("{context}{}", text("message")?),
        exc_type: Some(text("type")?),
        traceback: text("traceback"),
    })
}

pub(super) fn invalid(error: serde_json::Error, line: &str) -> String {
    format!("{error}: {}", excerpt(line))
}

/// The start of a line, for messages.
pub(super) fn excerpt(line: &str) -> String {
    let line = line.trim_end();
    match line.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line.to_owned(),
    }
}
