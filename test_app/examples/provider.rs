//! A Rust program providing a module in-process: `rustcalc`, callable by everyone on the
//! network exactly like a Python module.
//!
//! `cargo run -p test_app --example provider -- 127.0.0.1:8765` (its local stub's app port),
//! then from any app: `test_app call rustcalc.add 2 3`. It outlives a restart of its stub
//! (saying so on stderr), and exits 1 with the error if the stub refuses the module.

use std::process::ExitCode;

use common::app::CallError;
use common::provider::Provider;

fn main() -> ExitCode {
    let stub = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8765".into());
    let calc = Provider::new("rustcalc")
        .function(
            "add",
            &["a", "b"],
            "Adds two integers.",
            |(a, b): (i64, i64)| Ok(a + b),
        )
        .function("greet", &["name"], "Says hello.", |(name,): (String,)| {
            Ok(format!("hello, {name}, from Rust"))
        })
        .function(
            "mean",
            &["values"],
            "The mean of a list of numbers.",
            |(v,): (Vec<f64>,)| {
                if v.is_empty() {
                    return Err("mean of an empty list".to_owned());
                }
                Ok(v.iter().sum::<f64>() / v.len() as f64)
            },
        );
    match provide(calc, &stub) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Provides `calc` through `stub`, saying so once the stub has accepted it.
fn provide(calc: Provider, stub: &str) -> Result<(), CallError> {
    let providing = calc.provide_blocking(stub)?;
    println!("providing rustcalc through the stub at {stub}");
    providing.serve_blocking()
}
