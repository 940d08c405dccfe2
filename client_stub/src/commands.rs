//! Shell commands carried out (`repl.rs` parses them): each changes the stub or says what it
//! asked for.

use common::proto::ToServer;
use common::say;
use common::Result;

use crate::owned::{render, Asker};
use crate::repl::{self, Command};
use crate::stub::Stub;

impl Stub {
    pub(crate) fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Register(path) => self.register(std::path::Path::new(&path)),
            Command::Withdraw(module) => match self.owned.contains_key(&module) {
                true => self.send_withdraw(&module),
                false => say!("error: this stub does not own a module '{module}' (see mods)"),
            },
            Command::Parse(path) => match crate::owned::parse_file(std::path::Path::new(&path)) {
                Ok(p) => say!("{}", String::from_utf8_lossy(&p.bytes).trim_end()),
                Err(e) => say!("error: {e}"),
            },
            Command::Say(text) => {
                // Refused here, naming the limit, rather than sent for the server to refuse.
                let msg = ToServer::Say { text };
                let size = serde_json::to_vec(&msg).map_or(0, |frame| frame.len());
                let limit = self.config.limits.max_frame_bytes;
                match size > limit {
                    true => say!(
                        "error: message not sent: its frame would be {size} bytes, over this \
                         stub's max_frame_bytes ({limit}): shorten it, or raise the limit under \
                         [limits]"
                    ),
                    false => self.send_up(msg),
                }
            }
            Command::Who => {
                if self.up.is_some() {
                    self.whos += 1;
                }
                self.send_up(ToServer::Who);
            }
            Command::Modules(prefix) => say!("{}", self.list(&prefix).trim_end()),
            Command::Describe(module) => match self.descriptor(&module) {
                Some((desc, owner)) => say!("{}", render(desc, owner).trim_end()),
                None => say!("error: {}", self.not_here(&module).message),
            },
            Command::SaveConfig(name) => match self.save_profile(&name) {
                Ok(path) => {
                    say!("saved the running configuration to {}", path.display());
                    self.saved_own_profile(&path);
                }
                Err(e) => say!("error: {e}"),
            },
            Command::Help => say!("{}", repl::HELP.trim_end()),
            Command::Reload(module) => self.reload(&module, "asked at the shell", Asker::Output),
            Command::Ping => self.ping(None),
            Command::Stats => {
                let served = self.served.lock().map(|s| s.clone()).unwrap_or_default();
                say!("{}", self.made.render("calls made for apps").trim_end());
                say!("{}", served.render("calls served as owner").trim_end());
            }
            Command::Quit => {}
        }
    }

    fn list(&self, prefix: &str) -> String {
        let mut out = String::new();
        let owned = self
            .owned
            .iter()
            .map(|(m, o)| (m, "this stub", Some(&o.parsed.desc)));
        let known = self
            .known
            .iter()
            .map(|(m, k)| (m, k.owner.as_str(), k.desc.as_ref()));
        let mut rows: Vec<_> = owned
            .chain(known)
            .filter(|(m, _, _)| m.starts_with(prefix))
            .collect();
        rows.sort_by_key(|(m, _, _)| *m);
        for (module, owner, desc) in &rows {
            let functions = desc.map_or("fetching".to_owned(), |d| {
                format!("{} function(s)", d.functions.len())
            });
            out += &format!("  {module:<20} owner: {owner:<16} {functions}\n");
        }
        match rows.len() {
            0 if prefix.is_empty() => "no modules on the network\n".into(),
            0 => format!("no modules starting with '{prefix}'\n"),
            n => format!("{n} module(s):\n{out}"),
        }
    }

    fn save_profile(&self, name: &str) -> Result<std::path::PathBuf> {
        let mut profile = self.config.profile();
        // What runs now (the profile's lists may have changed since the start): module files in
        // `register`, installed modules in `expose`; an app provides its own.
        // Paths as they are: one that is not UTF-8, which a TOML profile cannot hold, fails the
        // save (TOML's writer refuses it) rather than being saved changed.
        let sources: Vec<&std::path::Path> = (self.owned.values())
            .filter(|o| o.pool.provider().is_none())
            .map(|o| o.parsed.path.as_path())
            .collect();
        // With those still being described, which will be.
        profile.expose = (sources.iter())
            .filter_map(|p| installed(p))
            .chain(self.exposing.iter().map(String::as_str))
            .map(str::to_owned)
            .collect();
        // With the listed files still to be registered (missing, or failing), which will be
        // once they change; not one of a name another file took meanwhile.
        let waiting = (self.unregistered.keys()).filter(|p| {
            !(p.file_stem().and_then(|s| s.to_str())).is_some_and(|m| self.owned.contains_key(m))
        });
        profile.register = (sources.iter())
            .filter(|p| installed(p).is_none())
            .map(|p| p.to_path_buf())
            .chain(waiting.cloned())
            .collect();
        common::config::save(name, &profile)
    }
}

/// The name of the installed module a worker's `import:NAME` path stands for.
fn installed(path: &std::path::Path) -> Option<&str> {
    path.to_str()?.strip_prefix("import:")
}
