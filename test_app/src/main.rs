//! `test_app`: an app that links `common` and calls shared modules through its local stub.
//! With no command it does what the original test app did; `demo` runs the whole network.

mod demo;

use std::borrow::Cow;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use common::app::{CallError, Client};
use common::log::{printable, printable_json, printable_lines};
use serde_json::{Map, Value};

/// Calls shared modules through the local client stub.
#[derive(Parser, Debug)]
#[command(version)]
struct Flags {
    /// The local stub's app port [default: the profile's app_port, else 8765]
    #[arg(short = 'q', long, global = true)]
    app_port: Option<u16>,
    /// A client profile whose stub to use (a path, or NAME for conf/NAME.toml)
    #[arg(short = 'c', long = "config", value_name = "PROFILE", global = true)]
    config: Option<String>,
    /// Timeout of each call, in milliseconds, at least 1 [default: the profile's
    /// call_timeout_ms, else 30000]
    #[arg(long, global = true, value_parser = timeout_ms)]
    timeout_ms: Option<u64>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Call MODULE.FUNCTION with arguments: JSON literals (a bare word is a string),
    /// KEY=VALUE for keyword arguments. Prints the result as JSON.
    Call {
        /// MODULE.FUNCTION, for example z.add_prams
        target: String,
        /// The arguments: JSON literals (1, -2.5, "text", [1,2], null), a bare word as a
        /// string (one starting with {, [ or " must be JSON), NAME=VALUE for a keyword
        /// argument
        #[arg(allow_negative_numbers = true)]
        args: Vec<String>,
    },
    /// List the modules on the network (those starting with PREFIX)
    List { prefix: Option<String> },
    /// Show a module's functions
    Describe { module: String },
    /// Start a server and three stubs from the shipped profiles, register z.py, call it, stop
    ///
    /// It takes no options: the global ones name a stub, and it starts its own network.
    #[command(
        override_usage = "test_app demo",
        help_template = "{about}\n\n{usage-heading} {usage}\n"
    )]
    Demo,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    if let Some(Cmd::Demo) = flags.command {
        // Its network is its own, on free ports: a flag meant for another would be ignored.
        if flags.app_port.is_some() || flags.config.is_some() || flags.timeout_ms.is_some() {
            eprintln!(
                "error: demo starts its own network: -q, -c and --timeout-ms do not apply to it"
            );
            return ExitCode::from(2);
        }
        return demo::run();
    }
    let client = match connect(&flags) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let result = match flags.command {
        None => classic(&client),
        Some(Cmd::Call { target, args }) => call(&client, &target, &args),
        Some(Cmd::List { prefix }) => {
            let prefix = prefix.unwrap_or_default();
            client.modules(&prefix).map(|names| {
                // Said on stderr, as the shell's `mods` says it: stdout stays one name a line.
                match (names.is_empty(), prefix.is_empty()) {
                    (true, true) => eprintln!("no modules on the network"),
                    (true, false) => eprintln!("no modules starting with '{}'", printable(&prefix)),
                    _ => {}
                }
                for n in names {
                    out(printable(&n));
                }
            })
        }
        // Names, headers, docs and errors are the network's text, escaped before printing.
        Some(Cmd::Describe { module }) => client.describe(&module).map(|d| {
            for f in &d.functions {
                out(printable(&f.signature()));
                if let Some(doc) = &f.doc {
                    out(format_args!("    {}", printable(doc)));
                }
            }
            if let Some(values) = d.values_line() {
                out(values);
            }
        }),
        Some(Cmd::Demo) => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// `--timeout-ms`: a number of milliseconds that is not 0, as for the profile's key.
fn timeout_ms(arg: &str) -> Result<u64, String> {
    common::config::call_timeout_ms(arg.parse().map_err(|e| format!("{e}"))?)
}

/// Prints one line of the answer. A reader that has gone away (`test_app describe m | head -1`)
/// ends the program quietly, as it ends `ls` or `cat`, rather than with a panic; any other
/// failure to write is an error.
fn out(line: impl std::fmt::Display) {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write the answer: {e}");
            std::process::exit(1);
        }
    }
}

fn fail(e: &CallError) -> ExitCode {
    eprintln!("error: {}", printable_lines(&e.to_string()));
    ExitCode::FAILURE
}

fn connect(flags: &Flags) -> Result<Client, CallError> {
    let mut client = match &flags.config {
        Some(profile) => Client::connect_profile_on(profile, flags.app_port)?,
        None => Client::connect(&format!("127.0.0.1:{}", flags.app_port.unwrap_or(8765)))?,
    };
    if let Some(ms) = flags.timeout_ms {
        client = client.with_timeout(Duration::from_millis(ms));
    }
    Ok(client)
}

/// What the original test app did.
fn classic(client: &Client) -> Result<(), CallError> {
    let sum: f64 = client.call_as("z", "add_prams", (1, 2))?;
    out(format_args!("z.add_prams(1, 2) = {sum}"));
    let quotient: f64 = client.call_as("z", "div_prams", (1, 2))?;
    out(format_args!("z.div_prams(1, 2) = {quotient}"));
    match client.call("z", "div_prams", (1, 0)) {
        Err(CallError::Exception {
            exc_type, message, ..
        }) => {
            let raised = format!("{exc_type}: {message}");
            out(format_args!(
                "z.div_prams(1, 0) raised {}",
                printable_lines(&raised)
            ));
            Ok(())
        }
        other => Err(CallError::BadResult(format!(
            "expected a ZeroDivisionError, got {other:?}"
        ))),
    }
}

fn call(client: &Client, target: &str, raw: &[String]) -> Result<(), CallError> {
    let (module, function) = module_function(target).map_err(CallError::BadArguments)?;
    let (args, kwargs) = parse_args(raw).map_err(CallError::BadArguments)?;
    let value = client.call_with(module, function, args, kwargs, None)?;
    out(printable_json(&value.to_string()));
    Ok(())
}

/// `MODULE.FUNCTION` split at its last dot (an installed module's name may have dots:
/// `os.path.join`).
fn module_function(target: &str) -> Result<(&str, &str), String> {
    let example = "give MODULE.FUNCTION, for example z.add_prams";
    match target.rsplit_once('.') {
        Some(("", _)) => Err(format!(
            "'{target}' has no module name before the dot: {example}"
        )),
        Some((_, "")) => Err(format!(
            "'{target}' has no function name after the dot: {example}"
        )),
        Some(parts) => Ok(parts),
        None => Err(format!("'{target}' is not MODULE.FUNCTION: {example}")),
    }
}

/// Splits command-line arguments into positional values and `key=value` keyword values; a key
/// given twice, or a positional value after a keyword, is refused, as Python refuses
/// `f(a=1, a=2)` and `f(a=1, 2)`.
fn parse_args(raw: &[String]) -> Result<(Vec<Value>, Map<String, Value>), String> {
    let mut args = Vec::new();
    let mut kwargs = Map::new();
    for a in raw {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                let value = literal(v).map_err(|e| format!("{k}={e}"))?;
                if kwargs.insert(k.to_owned(), value).is_some() {
                    return Err(format!("keyword argument '{k}' given twice"));
                }
            }
            _ if !kwargs.is_empty() => {
                return Err(format!(
                    "positional argument '{}' follows a keyword argument: give it before them",
                    printable(a)
                ))
            }
            _ => args.push(literal(a)?),
        }
    }
    Ok((args, kwargs))
}

/// The JSON value `text` writes, or the string `text` for a bare word: text that is not JSON
/// and does not start like a JSON object, array or string.
///
/// # Errors
/// It starts like JSON but is not JSON (`{"a": 1`, `[1, 2`: a value mistyped, not text),
/// or it holds a number a value here would not hold as written (see [`exact_numbers`]).
fn literal(text: &str) -> Result<Value, String> {
    if let Err(e) = serde_json::from_str::<&serde_json::value::RawValue>(text) {
        if text.trim_start().starts_with(['{', '[', '"']) {
            return Err(format!(
                "{text}: not JSON ({e}); to send it as text, give it as a JSON string"
            ));
        }
        return Ok(Value::String(text.to_owned()));
    }
    let exact = exact_numbers(text).map_err(|why| format!("{text}: {why}"))?;
    serde_json::from_str(&exact).map_err(|e| format!("{text}: {e}"))
}

/// The JSON text `json` with each integer `-0` written `0`, or what is wrong with its first
/// number that a value would not hold as written. serde_json reads `-0` as the float `-0.0`
/// where Python reads the integer 0; it makes an integer beyond 64 bits an approximate float,
/// and fails on a float beyond f64's range (`1e400`).
fn exact_numbers(json: &str) -> Result<Cow<'_, str>, String> {
    let (mut in_string, mut escaped) = (false, false);
    let mut text = Cow::Borrowed(json);
    let mut at = 0;
    while let Some(c) = json[at..].chars().next() {
        if in_string {
            (in_string, escaped) = (escaped || c != '"', !escaped && c == '\\');
        } else if c == '"' {
            in_string = true;
        } else if c == '-' || c.is_ascii_digit() {
            let len = json[at..]
                .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
                .unwrap_or(json.len() - at);
            let number = &json[at..at + len];
            if number.contains(['.', 'e', 'E']) {
                if !number.parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(format!(
                        "the number {number} is beyond the range of a float (f64)"
                    ));
                }
            } else if number == "-0" {
                let removed = json.len() - text.len();
                text.to_mut().remove(at - removed);
            } else if number.parse::<i64>().is_err() && number.parse::<u64>().is_err() {
                return Err(format!(
                    "the number {number} is an integer beyond 64 bits: JSON between stubs \
                     carries integers of up to 64 bits exactly; give it as a string or a float"
                ));
            }
            at += len;
            continue;
        }
        at += c.len_utf8();
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_json_literals_or_keywords() {
        let raw: Vec<String> = ["1", "[1,2]", "bob", "\"a=b\"", "x=2.5", "name=\"al\""]
            .map(String::from)
            .to_vec();
        let (args, kwargs) = parse_args(&raw).unwrap();
        assert_eq!(
            args,
            vec![
                Value::from(1),
                serde_json::json!([1, 2]),
                Value::from("bob"),
                Value::from("a=b")
            ]
        );
        assert_eq!(kwargs["x"], Value::from(2.5));
        assert_eq!(kwargs["name"], Value::from("al"));
    }

    #[test]
    fn numbers_arrive_as_written_or_are_refused() {
        let raw: Vec<String> = [
            "-1",
            "18446744073709551615",
            "-9223372036854775808",
            "1e308",
        ]
        .map(String::from)
        .to_vec();
        let (args, _) = parse_args(&raw).unwrap();
        let exact = serde_json::json!([-1, u64::MAX, i64::MIN, 1e308]);
        assert_eq!(Value::Array(args), exact);
        // In a string, or a bare word, digits are text.
        let raw = [r#"["18446744073709551616\"", "1e400"]"#, "12abc"].map(String::from);
        let (args, _) = parse_args(&raw).unwrap();
        assert_eq!(args[0][1], "1e400");
        assert_eq!(args[1], "12abc");
        let beyond_64_bits = "is an integer beyond 64 bits";
        let beyond_f64 = "is beyond the range of a float";
        for (bad, said) in [
            ("18446744073709551616", beyond_64_bits),
            ("-9223372036854775809", beyond_64_bits),
            ("1e400", beyond_f64),
            (r#"{"k": ["a", -1.5e999]}"#, beyond_f64),
            ("x=[1, 2e400]", beyond_f64),
        ] {
            let e = parse_args(&[bad.to_owned()]).unwrap_err();
            assert!(e.contains(said), "{bad}: {e}");
        }
        let e = parse_args(&["[1, 2e400]".into()]).unwrap_err();
        assert!(e.starts_with("[1, 2e400]: the number 2e400 is"), "{e}");
    }

    #[test]
    fn an_integer_minus_0_arrives_as_the_integer_0_as_python_reads_it() {
        let raw = ["-0", r#"[-0, "-0", -0.0, {"k": -0}]"#, "x=-0"].map(String::from);
        let (args, kwargs) = parse_args(&raw).unwrap();
        assert_eq!(args[0], Value::from(0));
        assert_eq!(args[1].to_string(), r#"[0,"-0",-0.0,{"k":0}]"#);
        assert_eq!(kwargs["x"], Value::from(0));
    }

    #[test]
    fn an_argument_that_starts_like_json_but_is_not_is_refused_naming_it() {
        for bad in [r#"{"a": 1"#, "[1, 2", r#""abc"#, "[1]x", r#"k={"a": 1"#] {
            let e = parse_args(&[bad.to_owned()]).unwrap_err();
            assert!(
                e.starts_with(&format!("{bad}: not JSON")) && e.contains("as a JSON string"),
                "{bad}: {e}"
            );
        }
        // Bare words stay strings, whatever they hold.
        let raw = ["a{b", "x]", "it's", "1.2.3"].map(String::from);
        let (args, _) = parse_args(&raw).unwrap();
        assert_eq!(
            Value::Array(args),
            serde_json::json!(["a{b", "x]", "it's", "1.2.3"])
        );
    }

    #[test]
    fn a_target_without_a_module_or_a_function_says_which() {
        assert_eq!(module_function("os.path.join"), Ok(("os.path", "join")));
        for (bad, said) in [
            (".add", "no module name before the dot"),
            ("z.", "no function name after the dot"),
            ("add", "is not MODULE.FUNCTION"),
        ] {
            let e = module_function(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("'{bad}' ")) && e.contains(said),
                "{e}"
            );
        }
    }

    #[test]
    fn a_keyword_given_twice_is_refused() {
        let raw: Vec<String> = ["1", "b=2", "b=3"].map(String::from).to_vec();
        let e = parse_args(&raw).unwrap_err();
        assert!(e.contains("'b' given twice"), "{e}");
    }

    #[test]
    fn a_positional_argument_after_a_keyword_is_refused() {
        let raw: Vec<String> = ["1", "c=1", "2"].map(String::from).to_vec();
        let e = parse_args(&raw).unwrap_err();
        assert!(
            e.contains("positional argument '2' follows a keyword"),
            "{e}"
        );
        let raw: Vec<String> = ["1", "2", "c=1"].map(String::from).to_vec();
        assert!(parse_args(&raw).is_ok());
    }
}
