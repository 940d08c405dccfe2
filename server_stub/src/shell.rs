//! The server's shell commands: parsing (pure, tested here) and the `wii` table.

/// A server shell command that the broker carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `wii`: who is in.
    Who,
    /// `sta:TEXT`: a message to every stub.
    Announce(String),
    /// `kick:NAME`: disconnect a stub.
    Kick(String),
    /// `stats`: calls routed per module and function.
    Stats,
    /// `_end_`: end the session; every stub is told and exits.
    End,
}

/// What a typed line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Empty,
    Help,
    Run(Command),
}

/// Every command word, for completion.
pub const COMMANDS: &[&str] = &["wii", "sta:", "kick:", "stats", "help", "_end_", "quit"];

/// The `help` text.
pub const HELP: &str = "\
commands:
  wii          who is in: every stub, its address and its modules
  sta:TEXT     send TEXT to every stub
  kick:NAME    disconnect the stub NAME
  stats        calls routed per module and function: calls, errors, last error, mean and p99 ms
  help         this list
  _end_, quit  end the session: every stub is told and exits
";

/// Parses one shell line.
///
/// # Errors
/// A one-line reason with a hint, for anything that is not a command.
pub fn parse(line: &str) -> Result<Line, String> {
    let line = line.trim();
    let (word, arg) = match line.split_once(':') {
        Some((w, a)) => (w.trim(), Some(a.trim())),
        None => (line, None),
    };
    let need = |a: Option<&str>, what: &str| match a {
        Some(a) if !a.is_empty() => Ok(a.to_owned()),
        _ => Err(format!("'{word}:' needs {what}, as in {word}:{what}")),
    };
    Ok(match (word, arg) {
        ("", None) => Line::Empty,
        ("help", None) => Line::Help,
        ("wii", None) => Line::Run(Command::Who),
        ("stats", None) => Line::Run(Command::Stats),
        ("_end_" | "quit", None) => Line::Run(Command::End),
        ("sta", a) => Line::Run(Command::Announce(need(a, "TEXT")?)),
        ("kick", a) => Line::Run(Command::Kick(need(a, "NAME")?)),
        // A paste gone wrong is told by its head, not echoed whole into the log.
        _ => {
            let line = common::log::printable(line);
            return Err(format!("unknown command '{line}' (type help for the list)"));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_explains_mistakes() {
        assert_eq!(parse("  wii "), Ok(Line::Run(Command::Who)));
        assert_eq!(
            parse("sta:hello all"),
            Ok(Line::Run(Command::Announce("hello all".into())))
        );
        assert_eq!(parse("kick:b"), Ok(Line::Run(Command::Kick("b".into()))));
        assert_eq!(parse("_end_"), Ok(Line::Run(Command::End)));
        assert_eq!(parse(""), Ok(Line::Empty));
        assert!(parse("kick:").unwrap_err().contains("kick:NAME"));
        assert!(parse("wiii").unwrap_err().contains("help"));
        assert!(parse("wii:x").is_err());
        let pasted = parse(&"y".repeat(3_000_000)).unwrap_err();
        assert!(pasted.len() < 1100, "{} bytes", pasted.len());
        assert!(pasted.contains("… (3000000 bytes)' (type help"), "{pasted}");
    }
}
