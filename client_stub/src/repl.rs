//! The client shell's commands: `cmd:data` lines parsed by a pure function (tested here).

/// A client shell command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `rm:PATH`: register a module file.
    Register(String),
    /// `um:MODULE`: withdraw a module this stub owns.
    Withdraw(String),
    /// `pm:PATH`: parse a module file and print its descriptor; nothing is registered.
    Parse(String),
    /// `s:TEXT`: a message to the server.
    Say(String),
    /// `wii`: who is in.
    Who,
    /// `mods` / `mods:PREFIX`: list modules.
    Modules(String),
    /// `desc:MODULE`: a module's functions.
    Describe(String),
    /// `sc:PROFILE`: save the running configuration.
    SaveConfig(String),
    /// `reload:MODULE`: reload an owned module from its file now.
    Reload(String),
    /// `ping`: this stub's address as the server sees it, and the round trip.
    Ping,
    /// `stats`: calls made and served, per function.
    Stats,
    Help,
    /// `_end_` / `quit`.
    Quit,
}

/// Every command word, for completion.
pub const COMMANDS: &[&str] = &[
    "rm:", "um:", "pm:", "s:", "wii", "mods", "mods:", "desc:", "sc:", "reload:", "ping", "stats",
    "help", "help:", "_end_", "quit",
];

/// Commands whose argument is a module name, for completion.
pub const MODULE_COMMANDS: &[&str] = &["um:", "desc:", "mods:", "reload:", "help:"];

/// The `help` text.
pub const HELP: &str = "\
commands:
  rm:PATH       register the Python module at PATH (its functions become callable by everyone)
  um:MODULE     withdraw a module this stub registered
  pm:PATH       parse PATH and print its descriptor, without registering it
  s:TEXT        send TEXT to the server's console
  wii           who is in: every stub and its modules
  mods          list modules (mods:PREFIX lists those starting with PREFIX)
  desc:MODULE   a module's functions with their parameters
  sc:PROFILE    save the running configuration (registered modules included) as a profile
  reload:MODULE reload a module this stub registered from its file now (edits to the file
                are picked up by themselves)
  ping          this stub's address as the server sees it, and the round trip time
  stats         calls made and served: calls, errors, last error, mean and p99 ms
  help          this list (help:MODULE: like desc:MODULE)
  _end_, quit   leave the network and exit
";

/// The longest path Linux takes (`PATH_MAX`).
const PATH_MAX: usize = 4096;

/// Parses one shell line; `Ok(None)` for a blank line.
///
/// # Errors
/// A one-line reason with a hint.
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let (word, arg) = match line.split_once(':') {
        Some((w, a)) => (w.trim(), Some(a.trim())),
        None => (line, None),
    };
    let need = |what: &str| match arg {
        Some(a) if !a.is_empty() => Ok(a.to_owned()),
        _ => Err(format!("'{word}:' needs {what}, as in {word}:{what}")),
    };
    // Checked here, so that no later message echoes a pasted megabyte.
    let path = |what: &str| {
        need(what).and_then(|p| match p.len() > PATH_MAX {
            true => Err(format!(
                "'{word}:' takes a path of at most {PATH_MAX} bytes, not '{}'",
                common::log::printable(&p)
            )),
            false => Ok(p),
        })
    };
    let module = || need("MODULE").and_then(|m| common::config::module_name(&m));
    let cmd = match (word, arg) {
        ("rm", _) => Command::Register(path("PATH")?),
        ("um", _) => Command::Withdraw(module()?),
        ("pm", _) => Command::Parse(path("PATH")?),
        ("s", _) => Command::Say(need("TEXT")?),
        ("desc", _) => Command::Describe(module()?),
        ("sc", _) => Command::SaveConfig(path("PROFILE")?),
        ("reload", _) => Command::Reload(module()?),
        ("help", Some(_)) => Command::Describe(module()?),
        ("ping", None) => Command::Ping,
        ("stats", None) => Command::Stats,
        ("mods", a) => Command::Modules(a.unwrap_or("").to_owned()),
        ("wii", None) => Command::Who,
        ("help", None) => Command::Help,
        ("_end_" | "quit", None) => Command::Quit,
        // A paste gone wrong is told by its head, not echoed whole into the log.
        _ => {
            let line = common::log::printable(line);
            return Err(format!("unknown command '{line}' (type help for the list)"));
        }
    };
    Ok(Some(cmd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        let ok = |l: &str| parse(l).unwrap().unwrap();
        assert_eq!(ok("rm:../z.py"), Command::Register("../z.py".into()));
        assert_eq!(ok("um: z "), Command::Withdraw("z".into()));
        assert_eq!(ok("pm:z.py"), Command::Parse("z.py".into()));
        assert_eq!(ok("s:hi there"), Command::Say("hi there".into()));
        assert_eq!(ok("wii"), Command::Who);
        assert_eq!(ok("mods"), Command::Modules("".into()));
        assert_eq!(ok("mods:z"), Command::Modules("z".into()));
        assert_eq!(ok("desc:z"), Command::Describe("z".into()));
        assert_eq!(ok("sc:conf2"), Command::SaveConfig("conf2".into()));
        assert_eq!(ok("quit"), Command::Quit);
        assert_eq!(ok("reload:z"), Command::Reload("z".into()));
        assert_eq!(ok("help:z"), Command::Describe("z".into()));
        assert_eq!(ok("ping"), Command::Ping);
        assert_eq!(ok("stats"), Command::Stats);
        assert_eq!(ok("_end_"), Command::Quit);
        assert_eq!(parse("   ").unwrap(), None);
    }

    #[test]
    fn mistakes_get_a_reason_and_a_hint() {
        assert!(parse("rm:").unwrap_err().contains("rm:PATH"));
        assert!(parse("rmz.py").unwrap_err().contains("type help"));
        assert!(parse("wii:x").unwrap_err().contains("unknown command"));
        assert!(parse("\u{1b}[A").is_err());
        let pasted = parse(&"y".repeat(3_000_000)).unwrap_err();
        assert!(pasted.len() < 1100, "{} bytes", pasted.len());
        assert!(pasted.contains("… (3000000 bytes)' (type help"), "{pasted}");
    }

    #[test]
    fn a_long_argument_is_refused_by_its_head() {
        for word in ["rm", "pm", "sc", "um", "desc", "reload", "help"] {
            let err = parse(&format!("{word}:{}", "y".repeat(5000))).unwrap_err();
            assert!(err.len() < 1300, "{word}: {} bytes", err.len());
            assert!(err.contains("… (5000 bytes)'"), "{word}: {err}");
        }
        assert!(parse(&format!("rm:{}", "y".repeat(4096))).is_ok());
        let err = parse("um:../x").unwrap_err();
        assert!(err.contains("'../x' is not a module name"), "{err}");
    }
}
