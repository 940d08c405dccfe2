//! The client stub's actor: one task that owns what this stub knows (modules on the network,
//! modules it owns, apps and their calls in flight) and applies every event to it.

use common::say;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::chunk::{split, Reassembler};
use common::conn::json_size;
use common::console::Names;
use common::error::{ErrorKind, RemoteError};
use common::module::ModuleDescriptor;
use common::proto::{render_who, Call, Chunk, Offer, Reply, ToApp, ToClient, ToServer, ToStub};
use common::store::Store;
use common::Result;
use serde_json::Value;
use smol::channel::{Receiver, Sender};

use crate::owned::{render, Owned};
use crate::repl::{self, Command};
use crate::worker::Pool;
use crate::Config;

/// What the stub's tasks tell the actor.
pub enum Event {
    /// A frame from the server.
    Server(ToClient),
    /// Joined (or re-joined) the server: frames for it go to `up`.
    Connected {
        up: Sender<ToServer>,
        name: String,
    },
    /// The server connection was lost; the link is being re-made.
    Disconnected(String),
    /// A shell line.
    Line(String),
    AppJoined {
        conn: u64,
        tx: Sender<ToApp>,
    },
    App {
        conn: u64,
        msg: ToStub,
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
struct Known {
    owner: String,
    md5: String,
    /// Present once the cached copy is current.
    desc: Option<ModuleDescriptor>,
}

/// A call from an app waiting for the network.
struct Pending {
    conn: u64,
    app_id: u64,
    deadline: Instant,
}

/// The actor's state.
pub struct Stub {
    pub(crate) config: Config,
    /// Frames to the server, while connected.
    up: Option<Sender<ToServer>>,
    /// How many times the link to the server was made.
    links: u32,
    pub(crate) owned: BTreeMap<String, Owned>,
    store: Store,
    incoming: Reassembler,
    known: BTreeMap<String, Known>,
    apps: HashMap<u64, Sender<ToApp>>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    /// Module names for the shell's completion.
    names: Names,
}

impl Stub {
    pub fn new(config: Config, store: Store, names: Names) -> Self {
        Stub {
            incoming: Reassembler::new(config.limits.max_module_bytes),
            config,
            up: None,
            links: 0,
            owned: BTreeMap::new(),
            store,
            known: BTreeMap::new(),
            apps: HashMap::new(),
            pending: HashMap::new(),
            next_id: 0,
            names,
        }
    }

    /// Applies events until the session ends.
    ///
    /// # Returns
    /// Why it ended cleanly (quit, server shutdown); an error when the server was lost.
    pub async fn run(mut self, events: Receiver<Event>) -> Result<String> {
        while let Ok(event) = events.recv().await {
            if let Some(end) = self.handle(event) {
                return end;
            }
        }
        Ok("stopped".into())
    }

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
            Event::AppJoined { conn, tx } => {
                self.apps.insert(conn, tx);
            }
            Event::App { conn, msg } => self.app(conn, msg),
            Event::AppLeft { conn } => {
                self.apps.remove(&conn);
                // Their answers, if any still come, are dropped.
                self.pending.retain(|_, p| p.conn != conn);
            }
            Event::Tick => self.expire(),
            Event::Stop(reason) => return Some(Ok(reason)),
        }
        None
    }

    /// Frames go to `up` from now on: every owned module is uploaded again, and the server's
    /// offers that follow re-sync the rest by md5.
    fn connected(&mut self, up: Sender<ToServer>, name: String) {
        self.links += 1;
        self.config.name = name;
        self.up = Some(up);
        self.known.clear();
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
        say!("lost the server: {why}; reconnecting");
        self.up = None;
        self.incoming = Reassembler::new(self.config.limits.max_module_bytes);
        for (_, p) in std::mem::take(&mut self.pending) {
            let err = RemoteError::new(ErrorKind::NotConnected, format!("lost the server: {why}"));
            self.answer_app(p.conn, p.app_id, Err(err));
        }
    }

    /// Queues a frame for the server; says so when there is no server to send it to.
    fn send_up(&self, msg: ToServer) {
        match &self.up {
            Some(up) => {
                let _ = up.try_send(msg);
            }
            None => say!("error: not connected to the server (reconnecting)"),
        }
    }

    fn upload(&self, module: &str, bytes: &[u8]) {
        if let Some(up) = &self.up {
            for chunk in split(module, bytes) {
                let _ = up.try_send(ToServer::Chunk(chunk));
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
                say!("error: module {module}: {reason}");
                if self.owned.get(&module).is_some_and(|o| !o.confirmed) {
                    self.owned.remove(&module);
                    self.refresh_names();
                }
            }
            ToClient::Message { from, text } => say!("message from {from}: {text}"),
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
            ToClient::Reply(reply) => {
                if let Some(p) = self.pending.remove(&reply.id) {
                    self.answer_app(p.conn, p.app_id, reply.result);
                }
            }
            ToClient::Error { message } => say!("error from the server: {message}"),
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
        let cached = self.store.read(&module).ok().flatten();
        let current = cached
            .filter(|bytes| common::store::md5_hex(bytes) == md5)
            .and_then(|bytes| serde_json::from_slice::<ModuleDescriptor>(&bytes).ok());
        let msg = match current {
            Some(_) => {
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
        self.known.insert(
            module,
            Known {
                owner,
                md5,
                desc: current,
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
        say!(
            "received {module} from {}: {} bytes in {pieces} chunk(s), {} function(s)",
            known.owner,
            bytes.len(),
            desc.functions.len()
        );
        known.desc = Some(desc);
    }

    fn gone(&mut self, module: &str, reason: &str) {
        if self.owned.remove(module).is_some() {
            say!("withdrew {module}");
        } else if self.known.remove(module).is_some() {
            self.incoming.forget(module);
            if let Err(e) = self.store.remove(module) {
                say!("error: cannot remove the cached copy of {module}: {e}");
            }
            say!("module {module} is gone: {reason}");
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
    fn descriptor(&self, module: &str) -> Option<(&ModuleDescriptor, &str)> {
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
                true => {
                    self.send_up(ToServer::Withdraw { module });
                }
                false => say!("error: this stub does not own a module '{module}' (see mods)"),
            },
            Command::Parse(path) => match crate::owned::parse_file(std::path::Path::new(&path)) {
                Ok(p) => say!("{}", String::from_utf8_lossy(&p.bytes).trim_end()),
                Err(e) => say!("error: {e}"),
            },
            Command::Say(text) => {
                self.send_up(ToServer::Say { text });
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

    /// Registers (or re-registers) the module file at `path`: parse, start workers, upload.
    pub(crate) fn register(&mut self, path: &std::path::Path) {
        let parsed = match crate::owned::parse_file(path) {
            Ok(p) => p,
            Err(e) => return say!("error: {e}"),
        };
        let module = parsed.desc.module.clone();
        if let Some(k) = self.known.get(&module) {
            return say!("error: module '{module}' is owned by '{}'", k.owner);
        }
        say!(
            "registering {module} from {}: {} function(s)",
            parsed.path.display(),
            parsed.desc.functions.len()
        );
        self.upload(&module, &parsed.bytes);
        match self.owned.get_mut(&module) {
            Some(o) => {
                o.parsed = parsed;
                o.pool.restart();
            }
            None => {
                let pool =
                    crate::worker::Pool::start(self.config.worker_spec(&module, &parsed.path));
                let owned = Owned {
                    parsed,
                    confirmed: false,
                    pool,
                };
                self.owned.insert(module, owned);
            }
        }
        self.refresh_names();
    }

    fn save_profile(&self, name: &str) -> Result<std::path::PathBuf> {
        let path = common::config::profile_path(name);
        let mut profile = self.config.profile();
        profile.register = self.owned.values().map(|o| o.parsed.path.clone()).collect();
        common::config::save(&path, &profile)?;
        Ok(path)
    }

    fn app(&mut self, conn: u64, msg: ToStub) {
        match msg {
            ToStub::Call(call) => self.app_call(conn, call),
            ToStub::Modules { id, prefix } => {
                let names = self.owned.keys().chain(self.known.keys());
                let list: Vec<Value> = names
                    .filter(|m| m.starts_with(&prefix))
                    .map(|m| Value::from(m.as_str()))
                    .collect();
                self.answer_app(conn, id, Ok(Value::Array(list)));
            }
            ToStub::Describe { id, module } => {
                let result = match self.descriptor(&module) {
                    Some((desc, _)) => {
                        Ok(serde_json::to_value(desc).expect("descriptors serialize"))
                    }
                    None => Err(unknown_module(&module)),
                };
                self.answer_app(conn, id, result);
            }
        }
    }

    /// An app's call: checked against the descriptor here, then run here or sent to the owner.
    fn app_call(&mut self, conn: u64, call: Call) {
        if let Err(e) = self.check(&call) {
            return self.answer_app(conn, call.id, Err(e));
        }
        if self.owned.contains_key(&call.module) {
            let Some(tx) = self.apps.get(&conn) else {
                return;
            };
            return self.run_owned(call, Answer::App(tx.clone()));
        }
        if self.up.is_none() {
            let msg = "not connected to the server (reconnecting)";
            let err = RemoteError::new(ErrorKind::NotConnected, msg);
            return self.answer_app(conn, call.id, Err(err));
        }
        self.next_id += 1;
        let deadline = Instant::now() + Duration::from_millis(call.timeout_ms);
        self.pending.insert(
            self.next_id,
            Pending {
                conn,
                app_id: call.id,
                deadline,
            },
        );
        self.send_up(ToServer::Call(Call {
            id: self.next_id,
            ..call
        }));
    }

    fn check(&self, call: &Call) -> std::result::Result<(), RemoteError> {
        let Some((desc, _)) = self.descriptor(&call.module) else {
            return Err(unknown_module(&call.module));
        };
        let Some(f) = desc.function(&call.function) else {
            let msg = format!(
                "module '{}' has no function '{}'",
                call.module, call.function
            );
            return Err(RemoteError::new(ErrorKind::UnknownFunction, msg));
        };
        let keywords: Vec<&str> = call.kwargs.keys().map(String::as_str).collect();
        f.check_args(call.args.len(), &keywords)
            .map_err(|m| RemoteError::new(ErrorKind::BadArguments, m))
    }

    /// Runs a call on a module this stub owns, answering where `answer` says, within its timeout.
    fn run_owned(&self, call: Call, answer: Answer) {
        let Some(owned) = self.owned.get(&call.module) else {
            let err = RemoteError::new(
                ErrorKind::UnknownModule,
                format!("this stub does not own '{}'", call.module),
            );
            return answer.send(Reply {
                id: call.id,
                result: Err(err),
            });
        };
        let (pool, limit) = (owned.pool.clone(), self.config.limits.max_frame_bytes);
        smol::spawn(async move {
            let id = call.id;
            let result = run_call(&pool, call, limit).await;
            answer.send(Reply { id, result });
        })
        .detach();
    }

    fn answer_app(&self, conn: u64, id: u64, result: std::result::Result<Value, RemoteError>) {
        if let Some(tx) = self.apps.get(&conn) {
            let _ = tx.try_send(ToApp::Reply(Reply { id, result }));
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(p) = self.pending.remove(&id) {
                let err =
                    RemoteError::new(ErrorKind::Timeout, "no answer within the call's timeout");
                self.answer_app(p.conn, p.app_id, Err(err));
            }
        }
    }
}

/// Where the answer to a call run here goes.
enum Answer {
    Server(Sender<ToServer>),
    App(Sender<ToApp>),
}

impl Answer {
    fn send(&self, reply: Reply) {
        let _ = match self {
            Answer::Server(tx) => tx.try_send(ToServer::Reply(reply)).is_ok(),
            Answer::App(tx) => tx.try_send(ToApp::Reply(reply)).is_ok(),
        };
    }
}

/// Runs one call on a module's workers within its timeout; a result too large for one frame
/// becomes an error naming its size, so it is never sent only to be refused.
async fn run_call(pool: &Pool, call: Call, max_frame: usize) -> Result<Value, RemoteError> {
    let timeout = Duration::from_millis(call.timeout_ms);
    let run = pool.call(&call.function, call.args, call.kwargs);
    let result = smol::future::or(run, async {
        smol::Timer::after(timeout).await;
        let (module, function) = (&call.module, &call.function);
        let msg = format!("'{module}.{function}' did not finish within {timeout:?}");
        Err(RemoteError::new(ErrorKind::Timeout, msg))
    })
    .await?;
    // Room for the reply's envelope around the value.
    let limit = max_frame.saturating_sub(1024);
    match json_size(&result) {
        size if size > limit => Err(RemoteError::new(
            ErrorKind::TooLarge,
            format!("the result is {size} bytes, over the frame limit of {limit} bytes"),
        )),
        _ => Ok(result),
    }
}

fn unknown_module(module: &str) -> RemoteError {
    RemoteError::new(
        ErrorKind::UnknownModule,
        format!("no module '{module}' on the network (see mods)"),
    )
}
