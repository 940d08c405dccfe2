//! The client stub's state: what this stub knows (modules on the network, modules it owns,
//! apps and their calls in flight), changed only by events, which the tasks that hear them
//! apply (see [`common::actor`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::actor::Actor;
use common::chunk::{split, Reassembler};
use common::console::Names;
use common::error::{ErrorKind, RemoteError};
use common::log::printable;
use common::module::ModuleDescriptor;
use common::outbox::Outbox;
use common::proto::{render_who, valid_stub_name, Chunk, Offer, Reply, ToClient, ToServer, ToStub};
use common::say;
use common::stats::Stats;
use common::store::{valid_module_name, Store};
use common::Result;

use crate::calls::{Answer, LocalCall, Pending, PingWaiter};
use crate::owned::{render, Owned, Watched};
use crate::repl::{self, Command};
use crate::runner::AppRunner;
use crate::Config;

/// The stub as its tasks share it.
pub type Shared = common::actor::Shared<Stub>;

/// What the stub's tasks tell it.
pub enum Event {
    /// A frame from the server.
    Server(ToClient),
    /// Joined (or re-joined) the server: frames for it go to `up`.
    Connected {
        up: Arc<Outbox>,
        name: String,
    },
    /// The server connection was lost; the link is being re-made.
    Disconnected(String),
    /// A shell line.
    Line(String),
    AppJoined {
        conn: u64,
        outbox: Arc<Outbox>,
    },
    App {
        conn: u64,
        msg: ToStub,
    },
    /// The app sent all it will send (it closed its writing half), and waits for its answers.
    AppDone {
        conn: u64,
    },
    AppLeft {
        conn: u64,
    },
    /// Time passed: time out overdue calls.
    Tick,
    /// Ctrl-C or the like.
    Stop(String),
}

/// A module on the network owned by another stub.
pub(crate) struct Known {
    pub(crate) owner: String,
    md5: String,
    /// What calls are checked against: the current copy once here; while a new version is
    /// fetched, the one before it (calls made meanwhile still go out); none before the first.
    desc: Option<ModuleDescriptor>,
}

/// The stub's state.
pub struct Stub {
    pub(crate) config: Config,
    /// Frames to the server, while connected.
    pub(crate) up: Option<Arc<Outbox>>,
    /// How many times the link to the server was made.
    pub(crate) links: u32,
    pub(crate) owned: BTreeMap<String, Owned>,
    /// This stub's withdraws the server has not answered yet, by module (see `gone`).
    pub(crate) withdrawing: HashMap<String, Withdrawing>,
    pub(crate) store: Store,
    pub(crate) incoming: Reassembler,
    pub(crate) known: BTreeMap<String, Known>,
    pub(crate) apps: HashMap<u64, Arc<Outbox>>,
    /// App connections that sent all they will send, closed once their calls are answered.
    pub(crate) closing: Vec<u64>,
    pub(crate) pending: HashMap<u64, Pending>,
    /// Calls apps made here on modules this stub owns, until answered or timed out.
    pub(crate) local_calls: Vec<Arc<LocalCall>>,
    pub(crate) next_id: u64,
    /// Module names for the shell's completion.
    pub(crate) names: Names,
    /// App connections that provide modules, by connection.
    pub(crate) providers: HashMap<u64, AppRunner>,
    /// `ping`s waiting for the server's echo, by id.
    pub(crate) pings: HashMap<u64, PingWaiter>,
    /// Calls this stub made for apps, through the network.
    pub(crate) made: Stats,
    /// Calls this stub ran as owner (recorded by the tasks that run them).
    pub(crate) served: Arc<Mutex<Stats>>,
    /// When owned module files were last checked for edits.
    pub(crate) last_watch: Instant,
    /// The profile, and the modules its `register` and `expose` lists named when last read.
    pub(crate) profile_watched: Watched,
    pub(crate) from_profile: (Vec<PathBuf>, Vec<String>),
}

impl Stub {
    pub fn new(config: Config, store: Store, names: Names) -> Self {
        let profile_watched = config
            .profile
            .as_deref()
            .map_or_else(Watched::default, Watched::read_now);
        let from_profile = crate::owned::profile_lists(config.profile.as_deref());
        Stub {
            incoming: Reassembler::new(config.limits.max_module_bytes),
            config,
            up: None,
            links: 0,
            owned: BTreeMap::new(),
            store,
            known: BTreeMap::new(),
            apps: HashMap::new(),
            closing: Vec::new(),
            withdrawing: HashMap::new(),
            pending: HashMap::new(),
            local_calls: Vec::new(),
            next_id: 0,
            names,
            pings: HashMap::new(),
            providers: HashMap::new(),
            made: Stats::default(),
            served: Arc::default(),
            last_watch: Instant::now(),
            profile_watched,
            from_profile,
        }
    }
}

impl Actor for Stub {
    type Event = Event;
    /// Why it ended cleanly (quit, server shutdown); an error when the server was lost.
    type End = Result<String>;

    fn handle(&mut self, event: Event) -> Option<Result<String>> {
        match event {
            Event::Server(ToClient::Shutdown { reason }) => return Some(Ok(reason)),
            Event::Server(msg) => self.server(msg),
            Event::Connected { up, name } => self.connected(up, name),
            Event::Disconnected(why) => self.disconnected(&why),
            Event::Line(line) => match repl::parse(&line) {
                Ok(Some(Command::Quit)) => return Some(Ok("quit".into())),
                Ok(Some(cmd)) => self.command(cmd),
                Ok(None) => {}
                Err(e) => say!("error: {e}"),
            },
            Event::AppJoined { conn, outbox } => {
                self.apps.insert(conn, outbox);
            }
            Event::App { conn, msg } => self.app(conn, msg),
            Event::AppDone { conn } => self.app_done(conn),
            Event::AppLeft { conn } => self.app_left(conn),
            Event::Tick => {
                self.expire();
                if !self.closing.is_empty() {
                    self.close_answered_apps();
                }
                for owned in self.owned.values() {
                    owned.pool.check_overdue();
                }
                if self.last_watch.elapsed() >= Duration::from_millis(500) {
                    self.last_watch = Instant::now();
                    self.watch_files();
                    self.watch_profile();
                }
            }
            Event::Stop(reason) => return Some(Ok(reason)),
        }
        None
    }
}

impl Stub {
    /// Frames go to `up` from now on: every owned module is uploaded again, and the server's
    /// offers that follow re-sync the rest by md5.
    fn connected(&mut self, up: Arc<Outbox>, name: String) {
        self.links += 1;
        self.config.name = name;
        self.up = Some(up);
        self.known.clear();
        self.withdrawing.clear(); // Answers to withdraws sent on the old link never come.
        let uploads: Vec<(String, Vec<u8>)> = self
            .owned
            .iter_mut()
            .map(|(m, o)| {
                o.confirmed = false;
                (m.clone(), o.parsed.bytes.clone())
            })
            .collect();
        if self.links > 1 && !uploads.is_empty() {
            say!("registering {} module(s) again", uploads.len());
        }
        for (module, bytes) in uploads {
            self.upload(&module, &bytes);
        }
        self.refresh_names();
    }

    /// The server is gone for now: calls waiting on it fail at once, new ones too until the
    /// link is back.
    fn disconnected(&mut self, why: &str) {
        say!("lost the server: {}; reconnecting", printable(why));
        self.up = None;
        self.incoming = Reassembler::new(self.config.limits.max_module_bytes);
        for (_, p) in std::mem::take(&mut self.pending) {
            let err = RemoteError::new(ErrorKind::NotConnected, format!("lost the server: {why}"));
            self.settle(p, Err(err));
        }
        for (_, waiter) in std::mem::take(&mut self.pings) {
            if let Some((conn, id)) = waiter.app {
                let err = RemoteError::new(ErrorKind::NotConnected, "lost the server");
                self.answer_app(conn, id, Err(err));
            }
        }
    }

    /// Queues a frame for the server; says so when there is no server to send it to.
    pub(crate) fn send_up(&self, msg: ToServer) {
        match &self.up {
            Some(up) => {
                up.push(&msg);
            }
            None => say!("error: not connected to the server (reconnecting)"),
        }
    }

    pub(crate) fn upload(&mut self, module: &str, bytes: &[u8]) {
        if let Some(up) = &self.up {
            let shared = self.config.shared.iter().any(|m| m == module);
            for mut chunk in split(module, bytes) {
                chunk.shared = shared;
                up.push(&ToServer::Chunk(chunk));
            }
            // The server takes frames in order: withdraws sent so far are answered before this.
            if let Some(w) = self.withdrawing.get_mut(module) {
                w.overtaken = w.sent;
            }
        }
    }

    fn server(&mut self, msg: ToClient) {
        match msg {
            ToClient::Offer(offer) => self.offered(offer),
            ToClient::Chunk(chunk) => self.received(chunk),
            ToClient::Gone { module, reason } => self.gone(&module, &reason),
            ToClient::Registered { module, md5 } => {
                if let Some(o) = self.owned.get_mut(&module) {
                    o.confirmed = true;
                }
                say!("registered {module} (md5 {md5})");
            }
            ToClient::RegisterFailed { module, reason } => {
                say!("error: module {module}: {}", printable(&reason));
                if self.owned.get(&module).is_some_and(|o| !o.confirmed) {
                    self.owned.remove(&module);
                    self.refresh_names();
                }
            }
            ToClient::Message { from, text } => say!("message from {from}: {}", printable(&text)),
            ToClient::Who { peers } => say!("{}", render_who(&peers).trim_end()),
            ToClient::Call(call) => {
                // Only what this stub registered can be called, whatever a peer sends.
                let Some(up) = self.up.clone() else { return };
                let answer = Answer::Server(up);
                match self.check(&call) {
                    Ok(()) => self.run_owned(call, answer),
                    Err(e) => answer.send(Reply {
                        id: call.id,
                        result: Err(e),
                    }),
                }
            }
            ToClient::Reply(reply) => self.replied(reply),
            ToClient::Echo { id, address } => self.echoed(id, address),
            ToClient::Error { message } => {
                say!("error from the server: {}", printable(&message))
            }
            ToClient::Welcome { .. }
            | ToClient::Refused { .. }
            | ToClient::Shutdown { .. }
            | ToClient::Ping => {}
        }
    }

    /// The server offers a module: keep the cached copy if its md5 matches, else ask for it.
    fn offered(&mut self, offer: Offer) {
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
        let cached = self.store.read(&module).ok().flatten();
        let current = cached
            .filter(|bytes| common::store::md5_hex(bytes) == md5)
            .and_then(|bytes| serde_json::from_slice::<ModuleDescriptor>(&bytes).ok());
        let msg = match &current {
            Some(desc) => {
                write_stubs(&self.store, desc, &md5);
                say!("{module} from {owner}: cached copy is current (md5 {md5}), nothing to fetch");
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
        let before = self.known.remove(&module).and_then(|k| k.desc);
        self.known.insert(
            module,
            Known {
                owner,
                md5,
                desc: current.or(before),
            },
        );
        self.refresh_names();
    }

    /// A piece of a module we asked for; a complete, verified file replaces the cached copy.
    fn received(&mut self, chunk: Chunk) {
        let (module, pieces) = (chunk.module.clone(), chunk.total);
        let bytes = match self.incoming.push(chunk) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(e) => return say!("error: receiving {module}: {e}; the cached copy is kept"),
        };
        let Some(known) = self.known.get_mut(&module) else {
            return; // Gone meanwhile.
        };
        if common::store::md5_hex(&bytes) != known.md5 {
            return; // A newer version was offered meanwhile and is on its way.
        }
        let desc = match serde_json::from_slice::<ModuleDescriptor>(&bytes) {
            Ok(d) if d.module == module => d,
            _ => return say!("error: {module} is not a valid descriptor; the cached copy is kept"),
        };
        if let Err(e) = self.store.write(&module, &bytes) {
            return say!("error: cannot store {module}: {e}");
        }
        write_stubs(&self.store, &desc, &known.md5);
        say!(
            "received {module} from {}: {} bytes in {pieces} chunk(s), {} function(s)",
            known.owner,
            bytes.len(),
            desc.functions.len()
        );
        known.desc = Some(desc);
    }

    fn gone(&mut self, module: &str, reason: &str) {
        // The answer to a withdraw of ours; when an upload overtook it, the module stays.
        let (ours, overtaken) = match self.withdrawing.get_mut(module) {
            Some(w) => {
                let overtaken = w.overtaken > 0;
                w.overtaken = w.overtaken.saturating_sub(1);
                w.sent -= 1;
                if w.sent == 0 {
                    self.withdrawing.remove(module);
                }
                (true, overtaken)
            }
            None => (false, false),
        };
        if let Some(o) = self.owned.get_mut(module) {
            say!("withdrew {module}");
            match overtaken {
                true => o.confirmed = false, // the upload's answer follows
                false => {
                    self.owned.remove(module);
                }
            }
        } else if !ours && self.known.remove(module).is_some() {
            self.incoming.forget(module);
            if let Err(e) = self.store.remove(module) {
                say!("error: cannot remove the cached copy of {module}: {e}");
            }
            remove_stubs(&self.store, module);
            say!("module {module} is gone: {}", printable(reason));
        }
        self.refresh_names();
    }

    /// Keeps the shell's completion list current.
    pub(crate) fn refresh_names(&self) {
        if let Ok(mut names) = self.names.lock() {
            *names = self
                .owned
                .keys()
                .chain(self.known.keys())
                .cloned()
                .collect();
        }
    }

    /// The descriptor and owner of a module this stub can call.
    pub(crate) fn descriptor(&self, module: &str) -> Option<(&ModuleDescriptor, &str)> {
        if let Some(o) = self.owned.get(module) {
            return Some((&o.parsed.desc, "this stub"));
        }
        let k = self.known.get(module)?;
        Some((k.desc.as_ref()?, k.owner.as_str()))
    }

    fn command(&mut self, cmd: Command) {
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
                self.send_up(ToServer::Who);
            }
            Command::Modules(prefix) => say!("{}", self.list(&prefix).trim_end()),
            Command::Describe(module) => match self.descriptor(&module) {
                Some((desc, owner)) => say!("{}", render(desc, owner).trim_end()),
                None => say!("error: no module '{module}' here (see mods)"),
            },
            Command::SaveConfig(name) => match self.save_profile(&name) {
                Ok(path) => say!("saved the running configuration to {}", path.display()),
                Err(e) => say!("error: {e}"),
            },
            Command::Help => say!("{}", repl::HELP.trim_end()),
            Command::Reload(module) => {
                if let Err(e) = self.reload(&module, "asked at the shell") {
                    say!("error: {e}");
                }
            }
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
        let path = common::config::profile_path(name);
        let mut profile = self.config.profile();
        // What runs now (the profile's lists may have changed since the start): module files in
        // `register`, installed modules in `expose`; an app provides its own.
        let sources: Vec<String> = (self.owned.values())
            .filter(|o| o.pool.provider().is_none())
            .map(|o| o.parsed.path.to_string_lossy().into_owned())
            .collect();
        profile.expose = (sources.iter())
            .filter_map(|p| p.strip_prefix("import:"))
            .map(str::to_owned)
            .collect();
        profile.register = (sources.iter())
            .filter(|p| !p.starts_with("import:"))
            .map(Into::into)
            .collect();
        common::config::save(&path, &profile)?;
        Ok(path)
    }
}

/// Withdraws of one module sent and not yet answered, and how many of them an upload sent
/// since has overtaken: their `gone` is for an older registration, which the server replaces
/// right after.
#[derive(Debug, Default)]
pub(crate) struct Withdrawing {
    pub(crate) sent: u32,
    pub(crate) overtaken: u32,
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
