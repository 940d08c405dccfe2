//! The client stub's state: what this stub knows (modules on the network, modules it owns,
//! apps and their calls in flight), changed only by events, which the tasks that hear them
//! apply (see [`common::actor`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
use common::proto::{render_who, Reply, ToClient, ToServer, ToStub};
use common::say;
use common::stats::Stats;
use common::store::Store;
use common::Result;

use crate::calls::{Answer, LocalCall, Pending, PingWaiter};
use crate::owned::{Describe, FromProfile, Owned, Parsed, Watched};
use crate::repl::{self, Command};
use crate::runner::{AppRunner, Runner};
use crate::sync::{Ask, Asked, Known};
use crate::worker::Caller;
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
        /// The modules that left the network (see [`ToClient::Welcome`]).
        left: Vec<String>,
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
    /// An installed module described (see [`crate::owned::describe_queued`]).
    Described(Describe, std::result::Result<Parsed, String>),
}

/// The stub's state.
pub struct Stub {
    pub(crate) config: Config,
    /// Frames to the server, while connected.
    pub(crate) up: Option<Arc<Outbox>>,
    /// How many times the link to the server was made.
    pub(crate) links: u32,
    pub(crate) owned: BTreeMap<String, Owned>,
    /// This stub's uploads and withdraws the server has not answered yet.
    pub(crate) asked: Asked,
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
    /// The shell's `wii`s the server has not answered yet (it answers each, in order).
    pub(crate) whos: usize,
    /// `_end_` came while the shell's `wii`s or `ping`s were unanswered: the stub stops once
    /// they are answered, or at this instant (see [`Stub::quit`]).
    pub(crate) quitting: Option<Instant>,
    /// Calls this stub made for apps, through the network.
    pub(crate) made: Stats,
    /// Calls this stub ran as owner (recorded by the tasks that run them).
    pub(crate) served: Arc<Mutex<Stats>>,
    /// When owned module files were last checked for edits.
    pub(crate) last_watch: Instant,
    /// The profile, and the modules its `register` and `expose` lists named when last read.
    pub(crate) profile_watched: Watched,
    pub(crate) from_profile: FromProfile,
    /// Files the command line or the profile lists that could not be registered (missing, a
    /// syntax error...): each is tried again once it changes.
    pub(crate) unregistered: BTreeMap<PathBuf, Watched>,
    /// Installed modules to expose once described, and where to send them to be.
    pub(crate) exposing: BTreeSet<String>,
    /// The app connections waiting for a reload of an installed module, one entry per reload
    /// being described: such a connection is not closed before it is answered.
    pub(crate) app_reloads: Vec<u64>,
    pub(crate) describing: smol::channel::Sender<Describe>,
}

impl Stub {
    pub fn new(
        config: Config,
        store: Store,
        names: Names,
        describing: smol::channel::Sender<Describe>,
    ) -> Self {
        let profile_watched = config
            .profile
            .as_deref()
            .map_or_else(Watched::default, Watched::read_now);
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
            asked: Asked::default(),
            pending: HashMap::new(),
            local_calls: Vec::new(),
            next_id: 0,
            names,
            pings: HashMap::new(),
            whos: 0,
            quitting: None,
            providers: HashMap::new(),
            made: Stats::default(),
            served: Arc::default(),
            last_watch: Instant::now(),
            profile_watched,
            from_profile: FromProfile::default(),
            unregistered: BTreeMap::new(),
            exposing: BTreeSet::new(),
            app_reloads: Vec::new(),
            describing,
        }
    }
}

impl Actor for Stub {
    type Event = Event;
    /// Why it ended cleanly (quit, server shutdown); an error when the server was lost.
    type End = Result<String>;

    fn handle(&mut self, event: Event) -> Option<Result<String>> {
        match event {
            // Quitting: what the shell sent after `_end_` is not carried out.
            Event::Line(_) if self.quitting.is_some() => {}
            Event::Server(ToClient::Shutdown { reason }) => return Some(Ok(reason)),
            Event::Server(msg) => self.server(msg),
            Event::Connected { up, name, left } => self.connected(up, name, left),
            Event::Disconnected(why) => self.disconnected(&why),
            Event::Line(line) => match repl::parse(&line) {
                Ok(Some(Command::Quit)) => return self.quit(),
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
                    self.store_unstored();
                }
            }
            Event::Stop(reason) => return Some(Ok(reason)),
            Event::Described(job, described) => self.described(job, described),
        }
        self.quit_if_answered()
    }

    /// Its workers are told to stop before the process ends, so that none is restarted while
    /// `worker::end_all` kills what is left.
    fn end(&mut self, _end: &Result<String>) {
        for owned in self.owned.values() {
            owned.pool.stop("was stopped with its stub");
        }
    }
}

/// How long `_end_` waits for the answers to the shell's `wii`s and `ping`s already sent.
const QUIT_WAIT: Duration = Duration::from_secs(3);

impl Stub {
    /// `_end_`: the stub stops once the server has answered the shell's `wii`s and `ping`s
    /// sent before it, so that a script piping `wii` then `_end_` gets its list; at most
    /// [`QUIT_WAIT`] later, or as soon as the server is lost.
    fn quit(&mut self) -> Option<Result<String>> {
        self.quitting = Some(Instant::now() + QUIT_WAIT);
        self.quit_if_answered()
    }

    /// Stops the stub (see [`Stub::quit`]) if it is quitting and waits for nothing more.
    fn quit_if_answered(&self) -> Option<Result<String>> {
        let deadline = self.quitting?;
        let shell_pings = self.pings.values().any(|p| p.app.is_none());
        let waiting = self.up.is_some() && (self.whos > 0 || shell_pings);
        (!waiting || Instant::now() >= deadline).then(|| Ok("quit".into()))
    }

    /// Frames go to `up` from now on: every owned module is uploaded again, the server hears
    /// that these are all this stub owns, and its offers that follow re-sync the rest by md5.
    fn connected(&mut self, up: Arc<Outbox>, name: String, left: Vec<String>) {
        self.links += 1;
        self.config.name = name;
        self.up = Some(up);
        self.known.clear();
        self.asked.clear();
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
        let modules = self.owned.keys().cloned().collect();
        self.send_up(ToServer::Owns { modules });
        self.forget_cached(left);
        self.refresh_names();
    }

    /// The server is gone for now: calls waiting on it fail at once, new ones too until the
    /// link is back. The calls queued here for other stubs are dropped: their callers hear
    /// that this owner is gone, and an answer could not reach them.
    fn disconnected(&mut self, why: &str) {
        say!("lost the server: {}; reconnecting", printable(why));
        self.up = None;
        self.whos = 0;
        // A withdraw the server will not answer holds all the same (unless an upload was
        // asked after it): the module is not registered again at the reconnect.
        let withdrawing: Vec<String> = (self.owned.keys())
            .filter(|m| self.asked.last(m) == Some(Ask::Withdraw))
            .cloned()
            .collect();
        self.asked.clear();
        for module in withdrawing {
            say!("withdrew {module} (the server was lost before it answered: it is not registered again when the stub reconnects)");
            self.disown(&module, "was withdrawn");
        }
        self.refresh_names();
        let remote = |caller, _| matches!(caller, Caller::Stub(_));
        self.cancel_owned(remote, "this stub lost the server");
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
            self.asked.push(module, Ask::Upload);
        }
    }

    fn server(&mut self, msg: ToClient) {
        match msg {
            ToClient::Offer(offer) => self.offered(offer),
            ToClient::Chunk(chunk) => self.received(chunk),
            ToClient::Gone { module, reason } => self.gone(&module, &reason),
            ToClient::Registered { module, md5 } => {
                self.asked.answer(&module, Some(Ask::Upload));
                if let Some(o) = self.owned.get_mut(&module) {
                    o.confirmed = true;
                    o.refused = false;
                    o.network = None;
                    // One of a shared module's owners now: it is no other stub's here.
                    self.forget_known(&module);
                }
                say!("registered {module} (md5 {md5})");
            }
            ToClient::RegisterFailed { module, reason } => self.register_failed(&module, &reason),
            ToClient::Message { from, text } => say!("message from {from}: {}", printable(&text)),
            ToClient::Who { peers } => {
                self.whos = self.whos.saturating_sub(1);
                say!("{}", render_who(&peers).trim_end());
            }
            ToClient::Call(call) => {
                // Only what this stub registered can be called, whatever a peer sends.
                let Some(up) = self.up.clone() else { return };
                let answer = Answer::Server(up);
                // A server that does not say who made it: its calls take one turn together.
                let caller = Caller::Stub(call.caller.unwrap_or(0));
                match self.check(&call) {
                    Ok(()) => self.run_owned(call, caller, answer),
                    Err(e) => answer.send(Reply {
                        id: call.id,
                        result: Err(e),
                    }),
                }
            }
            ToClient::Reply(reply) => self.replied(reply),
            ToClient::Cancel { ids } => {
                let ids: HashSet<u64> = ids.into_iter().collect();
                let cancelled = |caller, id| matches!(caller, Caller::Stub(_)) && ids.contains(&id);
                self.cancel_owned(cancelled, "their caller stopped waiting");
            }
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

    /// The server refused this stub's upload of `module`, or its withdraw, for `reason`.
    fn register_failed(&mut self, module: &str, reason: &str) {
        let printed = printable(reason);
        if self.asked.answer(module, None) == Some(Ask::Withdraw) {
            // Not registered by this stub (its upload was refused): nothing to take.
            say!("{module}: nothing to withdraw: {printed}");
            self.withdrawn(module);
            return self.refresh_names();
        }
        let refused = format!("the server refused module '{module}': {reason}");
        match self.owned.get_mut(module) {
            // (Unless another upload follows: its answer tells.)
            Some(_) if self.asked.waits_on(module, Ask::Upload) => {
                say!("error: module {module}: {printed}");
            }
            Some(o) if !o.confirmed => {
                say!("error: module {module}: {printed}");
                self.tell_provider(module, refused);
                self.disown(module, "was refused by the server");
                self.refresh_names();
            }
            // A new version refused: the network keeps the one before, and so does this stub
            // where it can, or half the calls of a shared module would fail here. (An installed
            // module's or an app's code is not its to give back.)
            Some(o) => {
                o.refused = true;
                let network = o.network.take().filter(|p| p.source.is_some());
                let before = match (&o.pool, network) {
                    (Runner::Python(pool), Some(network)) => {
                        pool.reload(self.config.worker_spec(&network));
                        o.parsed = network;
                        "the network keeps its version before, and this stub runs that version again"
                    }
                    _ => "the network keeps its version before",
                };
                match o.pool.provider() {
                    Some(_) => {
                        say!("error: module {module}: {printed}; {before}");
                        self.tell_provider(module, format!("{refused}; {before}"));
                    }
                    None => say!("error: module {module}: {printed}; {before} (reload:{module} uploads the file's again)"),
                }
                self.refresh_names();
            }
            None => say!("error: module {module}: {printed}"),
        }
    }

    /// Answers the `provide` of the app providing `module`, if an app does, with its refusal
    /// (`why`): the app hears that its module is not provided as it asked, whenever that is.
    fn tell_provider(&self, module: &str, why: String) {
        let Some(owned) = self.owned.get(module) else {
            return;
        };
        if let (Some(conn), Some(id)) = (owned.pool.provider(), owned.provide_id) {
            self.answer_app(conn, id, Err(RemoteError::new(ErrorKind::Refused, why)));
        }
    }

    /// Drops a module this stub owned: its workers stop, its calls still queued told `why`
    /// before they ran ("was withdrawn", see `worker::Pool::stop`; an app providing it answers
    /// what it was sent); the figures of the calls it served are kept as those of a module gone
    /// (see [`Stats::gone`]).
    pub(crate) fn disown(&mut self, module: &str, why: &str) {
        if let Some(owned) = self.owned.remove(module) {
            if let Runner::Python(pool) = &owned.pool {
                pool.stop(why);
            }
            if let Ok(mut served) = self.served.lock() {
                served.gone(module);
            }
        }
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
}
