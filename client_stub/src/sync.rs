//! Module sync with the server: its offers answered from the cached copy or fetched, fetched
//! copies checked and stored, gone modules removed (this stub's own once the server answers its
//! withdraw; on joining, those that left while it was away); the generated client stubs kept
//! beside the copies.

use std::collections::{HashMap, VecDeque};

use common::codegen::stub_stem;
use common::log::printable;
use common::module::ModuleDescriptor;
use common::proto::{valid_stub_name, Chunk, Offer, ToServer};
use common::say;
use common::store::{valid_module_name, Store};

use crate::stub::Stub;

/// A module on the network owned by another stub.
pub(crate) struct Known {
    pub(crate) owner: String,
    md5: String,
    /// What calls are checked against: the current copy once here; while a new version is
    /// fetched, the one before it (calls made meanwhile still go out); none before the first.
    pub(crate) desc: Option<ModuleDescriptor>,
    /// The current copy's file, received and checked but not yet stored: the receiving
    /// directory refused it (a full disk). `desc` is that copy meanwhile, and writing it is
    /// tried again (see [`Stub::store_unstored`]).
    unstored: Option<Vec<u8>>,
}

impl Stub {
    /// The server offers a module: keep the cached copy if its md5 matches, else ask for it.
    pub(crate) fn offered(&mut self, offer: Offer) {
        let Offer {
            module,
            owner,
            md5,
            size,
        } = offer;
        // Names a server would never send: they are printed, and name files.
        if !valid_module_name(&module) || !valid_stub_name(&owner) {
            let (module, owner) = (printable(&module), printable(&owner));
            return say!("error: the server offered a module '{module}' of a stub '{owner}': not valid names, ignored");
        }
        let before = self.known.remove(&module);
        let cached = self.store.read(&module).ok().flatten();
        let cached = cached
            .filter(|bytes| common::store::md5_hex(bytes) == md5)
            .and_then(|bytes| serde_json::from_slice::<ModuleDescriptor>(&bytes).ok());
        // A copy received and checked that could not be stored yet is as current (offered
        // again when its owners change).
        let (current, unstored, before) = match before {
            Some(Known {
                md5: had,
                desc: Some(desc),
                unstored: Some(bytes),
                ..
            }) if cached.is_none() && had == md5 => (Some(desc), Some(bytes), None),
            before => (cached, None, before.and_then(|k| k.desc)),
        };
        let msg = match &current {
            Some(desc) => {
                // (An unstored copy's stubs are written once it is stored.)
                let (skipped, copy) = match unstored {
                    None => (self.write_stubs(desc, &md5), "cached copy"),
                    Some(_) => (Ok(()), "copy held in memory (not stored yet)"),
                };
                say!("{module} from {owner}: {copy} is current (md5 {md5}), nothing to fetch");
                if let Err(why) = skipped {
                    say!("{why}");
                }
                ToServer::Have {
                    module: module.clone(),
                    md5: md5.clone(),
                }
            }
            None => {
                say!("{module} from {owner}: fetching {size} bytes (md5 {md5})");
                ToServer::Want {
                    module: module.clone(),
                    md5: md5.clone(),
                }
            }
        };
        self.send_up(msg);
        self.made.back(&module);
        self.known.insert(
            module,
            Known {
                owner,
                md5,
                desc: current.or(before),
                unstored,
            },
        );
        self.refresh_names();
    }

    /// A piece of a module we asked for; a complete, verified file replaces the cached copy.
    pub(crate) fn received(&mut self, chunk: Chunk) {
        let (module, pieces) = (chunk.module.clone(), chunk.total);
        let bytes = match self.incoming.push(chunk) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(e) => return say!("error: receiving {module}: {e}; the cached copy is kept"),
        };
        let Some(known) = self.known.get(&module) else {
            return; // Gone meanwhile.
        };
        if common::store::md5_hex(&bytes) != known.md5 {
            return; // A newer version was offered meanwhile and is on its way.
        }
        let desc = match serde_json::from_slice::<ModuleDescriptor>(&bytes) {
            Ok(d) if d.module == module => d,
            _ => return say!("error: {module} is not a valid descriptor; the cached copy is kept"),
        };
        // A copy that cannot be stored (a full disk) is used all the same: dropped, it would
        // never be asked for again. Storing it is tried again until it works.
        let stored = self.store.write(&module, &bytes);
        // The stubs are there by the time the line says the module is (once it is stored).
        let skipped = match &stored {
            Ok(()) => self.write_stubs(&desc, &known.md5),
            Err(_) => Ok(()),
        };
        say!(
            "received {module} from {}: {} bytes in {pieces} chunk(s), {} function(s)",
            known.owner,
            bytes.len(),
            desc.functions.len()
        );
        if let Err(why) = skipped {
            say!("{why}");
        }
        let unstored = match stored {
            Ok(()) => None,
            Err(e) => {
                say!(
                    "error: cannot store {module}: {e}; it is used from memory, and stored (with \
                     its generated stubs) once the receiving directory takes it"
                );
                Some(bytes)
            }
        };
        if let Some(known) = self.known.get_mut(&module) {
            known.desc = Some(desc);
            known.unstored = unstored;
        }
    }

    /// Stores the copies received that could not be stored (see [`Known::unstored`]), with
    /// their generated stubs, if the receiving directory takes them now; those it still
    /// refuses are tried again at the next look (every 0.5 s), without a word (their error
    /// was said).
    pub(crate) fn store_unstored(&mut self) {
        let mut stored = Vec::new();
        for (module, known) in &self.known {
            let (Some(bytes), Some(desc)) = (&known.unstored, &known.desc) else {
                continue;
            };
            if self.store.write(module, bytes).is_err() {
                continue;
            }
            // Said once its generated stubs are written too: "stored" means all of it is there.
            let stubs = self.write_stubs(desc, &known.md5);
            say!(
                "stored {module} (md5 {}): the receiving directory took it",
                known.md5
            );
            if let Err(why) = stubs {
                say!("{why}");
            }
            stored.push(module.clone());
        }
        for module in stored {
            if let Some(known) = self.known.get_mut(&module) {
                known.unstored = None;
            }
        }
    }

    pub(crate) fn gone(&mut self, module: &str, reason: &str) {
        let ours = self.asked.answer(module, Some(Ask::Withdraw)).is_some();
        // Not asked, but an owned module gone from the network all the same is no longer ours
        // there, unless an upload on its way makes it so again.
        if ours || (self.owned.contains_key(module) && !self.asked.waits_on(module, Ask::Upload)) {
            self.withdrawn(module);
        }
        if !ours && self.forget_known(module) {
            say!("module {module} is gone: {}", printable(reason));
        }
        self.refresh_names();
    }

    /// The server answered a withdraw of ours: the module is no longer this stub's on the
    /// network, unless an upload sent since makes it so again.
    pub(crate) fn withdrawn(&mut self, module: &str) {
        let upload_due = self.asked.waits_on(module, Ask::Upload);
        if let Some(o) = self.owned.get_mut(module) {
            say!("withdrew {module}");
            match upload_due {
                true => o.confirmed = false, // the upload's answer follows
                false => self.disown(module, "was withdrawn"),
            }
        }
    }

    /// Drops another stub's module: its entry, its cached copy and its generated stubs.
    ///
    /// # Returns
    /// Whether it was known.
    pub(crate) fn forget_known(&mut self, module: &str) -> bool {
        if self.known.remove(module).is_none() {
            return false;
        }
        self.made.gone(module);
        self.incoming.forget(module);
        if let Err(e) = self.store.remove(module) {
            say!("error: cannot remove the cached copy of {module}: {e}");
        }
        self.remove_stubs(module);
        true
    }

    /// Removes the cached copy (and generated stubs) of each module in `left`, not this
    /// stub's own: it left the network while this stub was away, so no `gone` came.
    pub(crate) fn forget_cached(&mut self, left: Vec<String>) {
        for module in left {
            let cached = matches!(self.store.read(&module), Ok(Some(_)));
            if !cached || self.owned.contains_key(&module) {
                continue;
            }
            self.made.gone(&module);
            if let Err(e) = self.store.remove(&module) {
                say!("error: cannot remove the cached copy of {module}: {e}");
            }
            self.remove_stubs(&module);
            say!("module {module} left the network while this stub was away: its cached copy is removed");
        }
    }

    /// The other known module whose generated stubs have the file names `module`'s would
    /// have, if any: `os.path` and `os_path` both make `os_path.py`. The first in name order
    /// has them, on every stub alike, whichever arrived first.
    fn stubs_taken_by(&self, module: &str) -> Option<&str> {
        let stem = stub_stem(module);
        let first = (self.known.keys()).find(|m| *m != module && stub_stem(m) == stem)?;
        (first.as_str() < module).then_some(first.as_str())
    }

    /// Writes the generated stubs of `desc`, unless another module's have their names.
    ///
    /// # Errors
    /// What to say when they are not written: whose names they are.
    fn write_stubs(&self, desc: &ModuleDescriptor, md5: &str) -> Result<(), String> {
        let module = &desc.module;
        match self.stubs_taken_by(module) {
            Some(other) => Err(format!(
                "{module}: no generated stubs: their file names ({}.py, .rs) are \
                 {other}'s; call it by name (_stubnet.call(\"{module}\", ...), Client::call)",
                stub_stem(module)
            )),
            None => {
                write_stubs(&self.store, desc, md5);
                Ok(())
            }
        }
    }

    /// Removes a gone module's generated stubs if they were its own, and writes those of the
    /// module with the same stub names that comes next, if any.
    fn remove_stubs(&self, module: &str) {
        if self.stubs_taken_by(module).is_some() {
            return;
        }
        remove_stubs(&self.store, module);
        let stem = stub_stem(module);
        let next = (self.known.iter()).find(|(m, _)| *m != module && stub_stem(m) == stem);
        if let Some(Known {
            desc: Some(desc),
            md5,
            ..
        }) = next.map(|(_, k)| k)
        {
            write_stubs(&self.store, desc, md5);
        }
    }
}

/// What this stub asked the server about its own modules and has not heard back on, oldest
/// first. The server answers each upload and each withdraw once, in the order asked, so an
/// answer is for the oldest question of its module.
#[derive(Debug, Default)]
pub(crate) struct Asked(HashMap<String, VecDeque<Ask>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    Upload,
    Withdraw,
}

impl Asked {
    pub(crate) fn push(&mut self, module: &str, ask: Ask) {
        self.0.entry(module.to_owned()).or_default().push_back(ask);
    }

    /// Takes the oldest question about `module`, answered now; `only` if it is that one.
    pub(crate) fn answer(&mut self, module: &str, only: Option<Ask>) -> Option<Ask> {
        let asks = self.0.get_mut(module)?;
        let ask = *asks.front()?;
        if only.is_some_and(|only| only != ask) {
            return None;
        }
        asks.pop_front();
        if asks.is_empty() {
            self.0.remove(module);
        }
        Some(ask)
    }

    /// Whether `ask` about `module` is among the questions not answered yet.
    pub(crate) fn waits_on(&self, module: &str, ask: Ask) -> bool {
        self.0.get(module).is_some_and(|asks| asks.contains(&ask))
    }

    /// The latest question about `module` not answered yet.
    pub(crate) fn last(&self, module: &str) -> Option<Ask> {
        self.0.get(module).and_then(|asks| asks.back().copied())
    }

    /// Forgets every question: answers to those asked on a link that is gone never come.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

/// Writes the generated client stubs beside a module's descriptor; a failure is said, never fatal.
fn write_stubs(store: &Store, desc: &ModuleDescriptor, md5: &str) {
    for (name, text) in common::codegen::stub_files(desc, md5) {
        if let Err(e) = store.write_file(&name, text.as_bytes()) {
            say!("error: cannot write the generated stub {name}: {e}");
        }
    }
}

/// Removes a gone module's generated stubs (the shared Python helper stays).
fn remove_stubs(store: &Store, module: &str) {
    for name in common::codegen::stub_file_names(module) {
        if let Err(e) = store.remove_file(&name) {
            say!("error: cannot remove the generated stub {name}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_for_the_oldest_question_of_its_module() {
        let mut asked = Asked::default();
        asked.push("z", Ask::Withdraw);
        asked.push("z", Ask::Upload);
        asked.push("y", Ask::Upload);
        assert_eq!(
            asked.answer("z", Some(Ask::Upload)),
            None,
            "the withdraw is first"
        );
        assert_eq!(asked.answer("z", None), Some(Ask::Withdraw));
        assert_eq!(asked.last("z"), Some(Ask::Upload));
        assert_eq!(asked.answer("z", Some(Ask::Upload)), Some(Ask::Upload));
        assert!(!asked.waits_on("z", Ask::Upload) && asked.last("z").is_none());
        assert!(asked.waits_on("y", Ask::Upload));
        asked.clear();
        assert!(!asked.waits_on("y", Ask::Upload));
    }
}
