//! The stubs' output: each line goes to stdout and, when a profile's `[log]` table sets `file`,
//! to a log file that rotates by size (`max_bytes`; `keep` files kept as `FILE.1`, `FILE.2`, ...).
//!
//! Each output is written by a thread of its own (see [`queue`]): a stdout that nobody reads, or
//! a log file on a disk that stalls or fills, loses lines, and says how many, but never stops the
//! stub.
//! The file may keep far more lines waiting than stdout: a disk catches up, where a pipe nobody
//! reads may never. Call [`flush`] before the process ends.
//!
//! Text a peer chose (a message, a reason, a descriptor's doc line, a remote exception) is
//! printed through [`printable`] or [`printable_lines`], so it can neither drive the terminal
//! (escape sequences) nor pass for a line of the stub's own.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod file;
mod queue;

/// The lines on their way to the log file, once [`to_file`] named one.
static FILE: Mutex<Option<Arc<queue::Queue>>> = Mutex::new(None);

/// The lines on their way to stdout; started by the first line.
static STDOUT: OnceLock<queue::Queue> = OnceLock::new();

const TO_STDOUT: queue::Output = queue::Output {
    thread: "stdout",
    lagged: "stdout was not being read",
    failed: "stdout was not taking them",
};

const TO_FILE: queue::Output = queue::Output {
    thread: "log file",
    lagged: "the log file was not taking them (a slow or stalled disk)",
    failed: "the log file was not taking them",
};

/// How many bytes of lines may wait for a stdout that lags before lines are dropped: a thousand
/// of the longest lines of peer text, a moment's burst at a slow terminal.
const STDOUT_BUDGET: usize = 1 << 20;

/// How many bytes of lines may wait for the log file: a disk that stalls for a while (a network
/// file system) loses none of a busy stub's lines.
const FILE_BUDGET: usize = 16 << 20;

/// How long [`flush`] waits for stdout: a stdout that nobody reads must not keep a stub from
/// ending.
const FLUSH_WAIT: Duration = Duration::from_secs(3);

/// Sends every later line to `path` too, rotating it past `max_bytes` and keeping `keep` old
/// files. Once it fails to take lines (a full disk), stdout says so, and again when it takes
/// them again; the file gets the count of lines it lost.
///
/// # Errors
/// `path` names no file (`""`, `/`) or a directory (`logs/`, one that exists), or a file that
/// cannot be opened for appending (not writable) or refuses a write (`/dev/full`, a file of
/// `/proc`): told now, not by every line lost.
pub fn to_file(path: &Path, max_bytes: usize, keep: usize) -> std::io::Result<()> {
    let refuse = |what: String| Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, what));
    if path.as_os_str().is_empty() || path.file_name().is_none() {
        return refuse("it names no file: give [log] file a file name, like stub.log".into());
    }
    // `logs/` would otherwise be opened as a file named `logs`, and fail as "Is a directory".
    let ends_in_separator = (path.as_os_str().as_encoded_bytes().last())
        .is_some_and(|&b| std::path::is_separator(b.into()));
    if ends_in_separator || path.is_dir() {
        let inside = path.join("stub.log");
        return refuse(format!(
            "it names a directory: give [log] file a file in it, like {:?}",
            inside.display().to_string()
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = file::LogFile::open(path, max_bytes, keep)?;
    let name = format!("{:?}", path.display().to_string());
    let tell = move |what: &str| to_stdout(format!("log file {name}: {what}\n"));
    let queue = queue::Queue::spawn(file, TO_FILE, FILE_BUDGET, tell);
    *FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(queue));
    Ok(())
}

/// The most of a peer's text [`printable`] prints: a longer one is shortened to its first
/// `PRINTABLE_BYTES` and its size, so that one message cannot flood the console and the log.
/// Also the longest line a shell keeps in its history.
pub const PRINTABLE_BYTES: usize = 1000;

/// Text from a peer made safe to print within one line: every control character but tab (ESC,
/// CR, LF, BEL, DEL, the C1 range) is escaped as Rust writes it (`\u{1b}`, `\r`, `\n`), so it
/// cannot drive the terminal nor start a line of its own; past [`PRINTABLE_BYTES`] it is
/// shortened (`HEAD… (N bytes)`). Clean, short text is borrowed, not copied.
pub fn printable(text: &str) -> Cow<'_, str> {
    printable_head(text, text.len())
}

/// [`printable`] for a text of `size` bytes of which only `head` was kept (at least its first
/// [`PRINTABLE_BYTES`]): a line read piece by piece, so as not to hold it whole.
pub fn printable_head(head: &str, size: usize) -> Cow<'_, str> {
    if size <= PRINTABLE_BYTES {
        return escape(head, false);
    }
    let head = &head[..head.floor_char_boundary(PRINTABLE_BYTES)];
    Cow::Owned(format!("{}… ({size} bytes)", escape(head, false)))
}

/// Peer text that is multi-line by nature (a remote traceback or exception message): each line
/// is [`printable`], and the lines after the first are indented, so that none can pass for a
/// line of the stub's own.
pub fn printable_lines(text: &str) -> Cow<'_, str> {
    let text = text.trim_end_matches(['\n', '\r']);
    if !text.contains('\n') {
        return printable(text);
    }
    let lines: Vec<Cow<str>> = text.lines().map(printable).collect();
    Cow::Owned(lines.join("\n    "))
}

/// JSON text from a peer (a call's result) made safe to print whole: JSON escapes control
/// characters already, and the bidirectional overrides and isolates are escaped here as JSON
/// does (`\u202e`), so the text is still the same JSON value.
pub fn printable_json(json: &str) -> Cow<'_, str> {
    if !json.contains(bidi) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match bidi(c) {
            true => out.push_str(&format!("\\u{:04x}", c as u32)),
            false => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The bidirectional overrides, isolates and marks, which can make a line read as another.
fn bidi(c: char) -> bool {
    matches!(
        c,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
    )
}

/// Escapes the control characters of `text` except tab, and except newline if `keep_newlines`;
/// and the bidirectional overrides and isolates.
fn escape(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let unsafe_char =
        |c: char| (c.is_control() && c != '\t' && !(keep_newlines && c == '\n')) || bidi(c);
    let Some(at) = text.find(unsafe_char) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..at]);
    for c in text[at..].chars() {
        match unsafe_char(c) {
            true if bidi(c) => out.extend(c.escape_unicode()),
            true => out.extend(c.escape_debug()),
            false => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Writes one line, without waiting for stdout. Errors are ignored: output must never stop a
/// stub. Control characters but newline and tab are escaped here whatever the caller did: no
/// line of a stub's output can drive the terminal (it is [`printable`] that keeps a peer's text
/// within its line).
pub fn line(text: &str) {
    let escaped = escape(text, true);
    let mut text = String::with_capacity(escaped.len() + 1);
    text.push_str(&escaped);
    text.push('\n');
    // The line goes whole, with its newline, in one item: the file rotates only at the start of
    // a line, so one handed over in two could end in one file and leave its newline in the next.
    if let Some(file) = FILE.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        file.push(text.clone());
    }
    to_stdout(text);
}

/// Hands `line` (with its newline) to stdout only.
fn to_stdout(line: String) {
    let stdout = STDOUT.get_or_init(|| {
        // Where else could stdout's own trouble be told.
        let tell = |what: &str| {
            let _ = writeln!(std::io::stderr(), "stdout: {what}");
        };
        queue::Queue::spawn(std::io::stdout(), TO_STDOUT, STDOUT_BUDGET, tell)
    });
    stdout.push(line);
}

/// Waits until stdout and the log file have the lines said so far (a stub's last lines,
/// `stopped: ...`), but at most a few seconds in all: for the end of a process, not for async
/// code.
pub fn flush() {
    flush_within(FLUSH_WAIT);
}

/// How long a panic waits for the lines before it: the process is failing, and may abort.
const PANIC_FLUSH_WAIT: Duration = Duration::from_secs(1);

/// Has a panic, on any thread, said as a line of the output and the log file too (after
/// stderr, where Rust prints it), and waits a moment for the lines said before it: the lines
/// just before a crash are the ones most wanted in the log.
pub fn keep_panics() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        line(&format!("panic: {info}"));
        flush_within(PANIC_FLUSH_WAIT);
    }));
}

/// [`flush`], waiting at most `wait` in all.
fn flush_within(wait: Duration) {
    let deadline = Instant::now() + wait;
    // Not waited for under the lock: a line said meanwhile must not wait too.
    let file = FILE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for queue in file.as_deref().into_iter().chain(STDOUT.get()) {
        queue.flush(deadline.saturating_duration_since(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_prints_as_the_same_json_with_bidi_overrides_escaped() {
        let value = serde_json::json!({"k\u{202e}": ["abc\u{202e}def\u{2066}", "\u{1b}"]});
        let json = value.to_string();
        let shown = printable_json(&json);
        assert_eq!(shown, r#"{"k\u202e":["abc\u202edef\u2066","\u001b"]}"#);
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, value);
        assert!(matches!(printable_json("[1,\"é\"]"), Cow::Borrowed(_)));
    }

    #[test]
    fn peer_text_is_escaped_and_clean_text_borrowed() {
        let hostile = "hi\x1b]0;pwned\x07\r\n[server] bob left\x1b[2J\u{9b}1m\x7f";
        assert_eq!(
            printable(hostile),
            r"hi\u{1b}]0;pwned\u{7}\r\n[server] bob left\u{1b}[2J\u{9b}1m\u{7f}"
        );
        for clean in ["", "plain ASCII, tab\there", "café 日本 ✓"] {
            assert!(matches!(printable(clean), Cow::Borrowed(s) if s == clean));
            assert!(matches!(printable_lines(clean), Cow::Borrowed(s) if s == clean));
        }
        assert!(matches!(escape("two\nlines", true), Cow::Borrowed(_)));
        assert_eq!(escape("a\x1b[31m\nb\r", true), "a\\u{1b}[31m\nb\\r");
        assert_eq!(
            escape("ok\u{202e}kcatta\u{2066}", true),
            "ok\\u{202e}kcatta\\u{2066}"
        );
        // The marks too (they reorder what is around them).
        assert_eq!(
            escape("a\u{200f}b\u{200e}c\u{61c}", true),
            "a\\u{200f}b\\u{200e}c\\u{61c}"
        );
    }

    #[test]
    fn long_peer_text_is_shortened_to_a_head_and_its_size() {
        let fits = "y".repeat(PRINTABLE_BYTES);
        assert!(matches!(printable(&fits), Cow::Borrowed(_)));
        let long = format!("{fits}\x1b and more");
        assert_eq!(printable(&long), format!("{fits}… (1010 bytes)"));
        // Cut at a character's start, escaped within the head.
        let wide = format!("\x1b{}", "日".repeat(400));
        let head = format!("\\u{{1b}}{}", "日".repeat(333));
        assert_eq!(printable(&wide), format!("{head}… (1201 bytes)"));
        let lines = format!("short\n{long}");
        assert_eq!(
            printable_lines(&lines),
            format!("short\n    {fits}… (1010 bytes)")
        );
    }

    #[test]
    fn multi_line_peer_text_keeps_its_lines_indented() {
        let traceback = "Traceback:\n  File \"z.py\"\nValueError: x\x1b[2J\n[server] bob left\n";
        assert_eq!(
            printable_lines(traceback),
            "Traceback:\n      File \"z.py\"\n    ValueError: x\\u{1b}[2J\n    [server] bob left"
        );
        assert_eq!(printable_lines("one line\r\n"), "one line");
    }

    #[test]
    fn the_log_rotates_and_keeps_a_few_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/stub.log");
        to_file(&path, 100, 2).unwrap();
        for i in 0..50 {
            line(&format!("line {i:02} of the log"));
        }
        flush();
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.contains("line 49"), "{current}");
        // A rotation never splits a line: each file holds whole lines only.
        for file in [
            path.clone(),
            path.with_extension("log.1"),
            path.with_extension("log.2"),
        ] {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                text.ends_with(" of the log\n") && text.starts_with("line "),
                "{}: {text:?}",
                file.display()
            );
        }
        assert!(path.with_extension("log.1").exists());
        assert!(path.with_extension("log.2").exists());
        assert!(
            !path.with_extension("log.3").exists(),
            "only two old files are kept"
        );
        *FILE.lock().unwrap() = None;
    }
}
