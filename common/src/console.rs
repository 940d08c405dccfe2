//! The interactive shell's line editor: rustyline on its own thread (it blocks), feeding lines
//! into a channel, with history kept in a file and tab completion of commands and module names.
//! What the lines mean is each stub's business.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{CompletionType, Config, Context, Editor, Helper, Highlighter, Hinter, Validator};

use crate::log::PRINTABLE_BYTES;

/// Names the shell completes after a `cmd:` prefix (module names), kept current by the stub.
pub type Names = Arc<Mutex<Vec<String>>>;

/// A console's settings.
pub struct Console {
    pub prompt: String,
    /// Every command word, `cmd:` forms with their colon.
    pub commands: Vec<&'static str>,
    /// Commands whose argument is a module name.
    pub module_commands: Vec<&'static str>,
    pub names: Names,
    pub history: Option<PathBuf>,
    /// The line sent on Ctrl-D or Ctrl-C at a terminal.
    pub on_end: &'static str,
}

#[derive(Helper, Highlighter, Hinter, Validator)]
struct Completion {
    commands: Vec<&'static str>,
    module_commands: Vec<&'static str>,
    names: Names,
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let typed = &line[..pos];
        let pair = |s: String| Pair {
            display: s.clone(),
            replacement: s,
        };
        if let Some((cmd, arg)) = typed.split_once(':') {
            if !self
                .module_commands
                .iter()
                .any(|c| c.trim_end_matches(':') == cmd)
            {
                return Ok((pos, Vec::new()));
            }
            let names = self.names.lock().map(|n| n.clone()).unwrap_or_default();
            let found = names.into_iter().filter(|n| n.starts_with(arg)).map(pair);
            return Ok((cmd.len() + 1, found.collect()));
        }
        let found = self.commands.iter().filter(|c| c.starts_with(typed));
        Ok((0, found.map(|c| pair(c.to_string())).collect()))
    }
}

impl Console {
    /// Starts the editor thread.
    ///
    /// # Returns
    /// The lines typed, in order; the channel ends after `on_end` was sent.
    pub fn spawn(self) -> smol::channel::Receiver<String> {
        let (tx, rx) = smol::channel::unbounded();
        std::thread::spawn(move || {
            // List mode: each Tab completes afresh, so `des<Tab><Tab>` gives `desc:` then `desc:z`.
            let config = Config::builder()
                .completion_type(CompletionType::List)
                .build();
            let mut editor = match Editor::<Completion, DefaultHistory>::with_config(config) {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("error: no line editor: {e}");
                    let _ = tx.send_blocking(self.on_end.to_owned());
                    return;
                }
            };
            editor.set_helper(Some(Completion {
                commands: self.commands,
                module_commands: self.module_commands,
                names: self.names,
            }));
            if let Some(h) = &self.history {
                let _ = editor.load_history(h);
            }
            let mut unreadable = 0;
            loop {
                let read = editor.readline(&self.prompt);
                unreadable = if read.is_ok() { 0 } else { unreadable + 1 };
                match read {
                    // Lines pasted together (a terminal's bracketed paste keeps their newlines
                    // in the one line read) are commands each, as if typed one by one.
                    Ok(pasted) => {
                        for line in pasted.split('\n').map(|l| l.trim_end_matches('\r')) {
                            // A paste gone wrong is not kept: it would be saved and loaded, in
                            // full, by every session after (it is told by its head, see
                            // `printable`).
                            if !line.trim().is_empty() && line.len() <= PRINTABLE_BYTES {
                                let _ = editor.add_history_entry(line);
                                if let Some(h) = &self.history {
                                    let _ = editor.append_history(h);
                                }
                            }
                            if tx.send_blocking(line.to_owned()).is_err() {
                                return;
                            }
                        }
                    }
                    // Piped input that ends stops the shell, not the stub: a stub started
                    // with `-l` from a script keeps serving. At a terminal, Ctrl-D quits.
                    Err(ReadlineError::Eof) if !std::io::stdin().is_terminal() => return,
                    Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
                    // A line that is not text (invalid UTF-8) is skipped: the shell never dies
                    // on input. Only an input that fails without end stops it, not the process.
                    Err(ReadlineError::Io(e))
                        if e.kind() == std::io::ErrorKind::InvalidData && unreadable < 100 =>
                    {
                        eprintln!("error: console: {e}; line ignored");
                    }
                    Err(e) => {
                        eprintln!("error: console: {e}; the shell stops, serving goes on");
                        return;
                    }
                }
            }
            let _ = tx.send_blocking(self.on_end.to_owned());
        });
        rx
    }
}
