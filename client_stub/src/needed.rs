//! Settings a stub cannot start without, asked for at a terminal.

use common::Error;

/// A setting the stub cannot start without: asked for at a terminal, else an error saying
/// where to set it.
pub struct Needed {
    /// What the prompt and the error call it.
    what: &'static str,
    /// The flag that sets it, with its value.
    flag: &'static str,
    /// The profile key that sets it.
    key: &'static str,
}

pub const NAME: Needed = Needed {
    what: "name of this stub",
    flag: "-n NAME",
    key: "name",
};

pub const ADDRESS: Needed = Needed {
    what: "server address",
    flag: "-a ADDRESS",
    key: "address",
};

impl Needed {
    /// `given`, or else the answer typed at the terminal (if there is one).
    pub fn given_or_asked(&self, given: Option<String>, terminal: bool) -> common::Result<String> {
        match given {
            Some(v) => Ok(v),
            None if terminal => self.ask(),
            None => Err(self.missing()),
        }
    }

    pub fn ask(&self) -> common::Result<String> {
        use std::io::Write;
        // Lines said before (why it is asked again) go through the output's own thread: they
        // come first, or the prompt would be printed above them.
        common::log::flush();
        print!("{}: ", self.what);
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        match line.trim() {
            "" => Err(self.missing()),
            v => Ok(v.to_owned()),
        }
    }

    fn missing(&self) -> Error {
        let Needed { what, flag, key } = self;
        Error::Config(format!(
            "no {what} given: {flag} sets it, or '{key}' in the profile (-c PROFILE)"
        ))
    }
}
