//! The broker: the server's tables and every peer's outbound queue, behind one lock.
//!
//! Connection tasks turn frames into [`Event`]s and apply them themselves ([`Shared`]): the
//! broker updates the [`Registry`] and [`Routes`] and queues frames in peers' [`Outbox`]es,
//! which the applying task then writes. So a call is read, routed and written on by one task,
//! with no hop between tasks. The broker never waits on a socket: what a socket does not take at
//! once waits in its outbox for the peer's writer task, and a peer that falls too far behind is
//! dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::actor::Actor;
use common::chunk::{split, Reassembler};
use common::error::{ErrorKind, RemoteError};
use common::log::printable;
use common::module::ModuleDescriptor;
use common::outbox::Outbox;
use common::proto::{
    Call, Chunk, Hello, Json, Reply, ToClient, ToServer, CANCEL_IDS, PROTOCOL_VERSION,
};
use common::say;
use common::stats::Stats;
use common::store::{check_module_name, md5_hex, Store};
use smol::net::{Shutdown, TcpStream};

use crate::registry::{PeerId, Refusal, Registry};
use crate::routes::{Route, Routes};
use crate::shell::Command;
use crate::Limits;

/// What connection tasks and the console tell the broker.
pub enum Event {
    /// A connection said hello.
    Join {
        id: PeerId,
        hello: Hello,
        link: Link,
    },
    /// A frame from a peer.
    Frame { id: PeerId, msg: ToServer },
    /// A frame from a peer that could not be read; the connection goes on. `request` is the
    /// call or reply it was, when that can be told (see [`common::proto::salvage`]).
    Malformed {
        id: PeerId,
        error: common::Error,
        request: Option<(String, u64)>,
    },
    /// A connection failed (an i/o error, silence past the heartbeat); `Leave` follows.
    Lost { id: PeerId, why: String },
    /// A connection ended.
    Leave { id: PeerId },
    /// A server shell command.
    Console(Command),
    /// The process was asked to stop (a signal): the session ends for this reason.
    Stop(String),
    /// Time passed: expire overdue calls.
    Tick,
}

/// A new connection, as its task hands it to the broker.
pub struct Link {
    /// The peer's address, as this side sees it.
    pub address: String,
    /// The connection's outbound frames.
    pub outbox: Arc<Outbox>,
    /// The socket, to cut a peer that stops reading.
    pub stream: TcpStream,
}

/// A joined peer's outbound side.
struct Peer {
    outbox: Arc<Outbox>,
    stream: TcpStream,
    /// Descriptor uploads in progress from this peer.
    uploads: Reassembler,
}

impl Drop for Peer {
    /// A peer removed from the table gets nothing more: its writer writes what is queued (a
    /// `Shutdown`, say), then closes the socket.
    fn drop(&mut self) {
        self.outbox.close();
    }
}

/// The broker as its connection tasks share it.
pub type Shared = common::actor::Shared<Broker>;

/// The broker's state.
pub struct Broker {
    registry: Registry,
    routes: Routes,
    peers: HashMap<PeerId, Peer>,
    store: Store,
    limits: Limits,
    token: Option<String>,
    /// When every peer was last sent a heartbeat.
    last_ping: Instant,
    /// The calls routed, per module and function.
    stats: Stats,
}

impl Broker {
    pub fn new(store: Store, limits: Limits, token: Option<String>) -> Self {
        Broker {
            registry: Registry::default(),
            routes: Routes::default(),
            peers: HashMap::new(),
            store,
            limits,
            token,
            last_ping: Instant::now(),
            stats: Stats::default(),
        }
    }
}

impl Actor for Broker {
    type Event = Event;
    /// Why the session ended.
    type End = String;

    fn handle(&mut self, event: Event) -> Option<String> {
        match event {
            Event::Join { id, hello, link } => self.join(id, hello, link),
            Event::Frame { id, msg } => {
                if self.peers.contains_key(&id) {
                    self.frame(id, msg);
                }
            }
            Event::Malformed { id, error, request } => {
                let name = self.registry.name(id).unwrap_or("?").to_owned();
                say!("bad frame from {name}: {}", printable(&error.to_string()));
                match request {
                    // Answered at once, not left to time out.
                    Some((cmd, call)) if cmd == "call" => {
                        let result = Err(RemoteError::refused_frame(&error, ""));
                        self.send(id, ToClient::Reply(Reply { id: call, result }));
                    }
                    // The owner's answer: its caller hears why it cannot have it.
                    Some((cmd, route)) if cmd == "reply" && self.peers.contains_key(&id) => {
                        let why = "the owner's answer cannot be read: ";
                        let result = Err(RemoteError::refused_frame(&error, why));
                        self.frame(id, ToServer::Reply(Reply { id: route, result }));
                    }
                    _ => self.send(
                        id,
                        ToClient::Error {
                            message: error.to_string(),
                        },
                    ),
                }
            }
            Event::Lost { id, why } => {
                let name = self.registry.name(id).unwrap_or("a stub that never joined");
                say!("lost {name}: {}", printable(&why));
            }
            Event::Leave { id } => self.leave(id),
            Event::Console(cmd) => return self.console(cmd),
            Event::Stop(reason) => return Some(reason),
            Event::Tick => {
                self.expire();
                if self.last_ping.elapsed() >= Duration::from_millis(self.limits.heartbeat_ms) {
                    self.last_ping = Instant::now();
                    self.broadcast(&ToClient::Ping, None);
                }
            }
        }
        None
    }

    /// Every peer is told why; its connection closes once told.
    fn end(&mut self, reason: &String) {
        for peer in self.peers.values() {
            peer.outbox.push(&ToClient::Shutdown {
                reason: reason.clone(),
            });
        }
        self.peers.clear();
    }
}

impl Broker {
    /// [`Broker::queue`] for a message made for this one peer.
    fn send(&mut self, id: PeerId, msg: ToClient) {
        self.queue(id, &msg);
    }

    /// Queues `msg` for peer `id`; a peer that cannot keep up is dropped.
    fn queue(&mut self, id: PeerId, msg: &ToClient) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        if peer.outbox.over(&self.limits.link) {
            let name = self.registry.name(id).unwrap_or("?");
            say!("dropping {name}: it does not read what it is sent");
            // Cutting the socket unblocks its writer and ends its reader, which reports Leave.
            let _ = peer.stream.shutdown(Shutdown::Both);
            self.peers.remove(&id);
            return;
        }
        peer.outbox.push(msg);
    }

    fn broadcast(&mut self, msg: &ToClient, except: Option<PeerId>) {
        let ids: Vec<PeerId> = self
            .peers
            .keys()
            .copied()
            .filter(|&i| Some(i) != except)
            .collect();
        for id in ids {
            self.queue(id, msg);
        }
    }

    fn join(&mut self, id: PeerId, hello: Hello, link: Link) {
        let Link {
            address,
            outbox,
            stream,
        } = link;
        let refuse = |reason: String, name_taken: bool| {
            say!("refused {address}: {}", printable(&reason));
            outbox.push(&ToClient::Refused { reason, name_taken });
            outbox.close();
        };
        if hello.version != PROTOCOL_VERSION {
            return refuse(
                format!(
                    "protocol version {} is not supported (this server speaks {PROTOCOL_VERSION})",
                    hello.version
                ),
                false,
            );
        }
        if let Some(token) = &self.token {
            let given = hello.token.as_deref().unwrap_or_default();
            // Constant time, so the answer's timing says nothing about the token.
            if !constant_time_eq::constant_time_eq(given.as_bytes(), token.as_bytes()) {
                return refuse("missing or wrong network token".into(), false);
            }
        }
        let session = hello.session.as_deref();
        // A stub back on its session replaces its old connection (see below): one peer still.
        let replaces = self.registry.on_session(session, id).is_some();
        if !replaces && self.registry.len() >= self.limits.max_peers {
            let limit = self.limits.max_peers;
            return refuse(
                format!("the network is full ({limit} stubs, the limit)"),
                false,
            );
        }
        match self.registry.join(id, &hello.name, &address, session) {
            Ok(()) => {
                say!("joined: {} from {address}", hello.name);
                // The same stub's directory under another name: the one there is replaced.
                if let Some(old) = self.registry.on_session(session, id) {
                    self.tell_replaced(old, &address);
                    self.leave(old);
                }
            }
            Err(Refusal::BadName(reason)) => return refuse(reason, false),
            Err(Refusal::Taken {
                holder,
                same_session: true,
            }) => {
                self.reclaim(holder, id, &address);
                say!(
                    "rejoined: {} from {address} (replacing its old connection)",
                    hello.name
                );
            }
            Err(Refusal::Taken { .. }) => {
                let reason = format!("name '{}' is already in use on this network", hello.name);
                return refuse(reason, true);
            }
        }
        let uploads = Reassembler::new(self.limits.link.max_module_bytes);
        self.peers.insert(
            id,
            Peer {
                outbox,
                stream,
                uploads,
            },
        );
        self.send(
            id,
            ToClient::Welcome {
                name: hello.name,
                version: PROTOCOL_VERSION,
                heartbeat_ms: self.limits.heartbeat_ms,
                left: self.registry.left(),
            },
        );
        for offer in self.registry.offers_for(id) {
            self.send(id, ToClient::Offer(offer));
        }
    }

    /// A stub reconnected before its old connection was seen to die: the old one is closed, its
    /// calls in flight fail, and its name and modules pass to the new connection.
    fn reclaim(&mut self, old: PeerId, new: PeerId, address: &str) {
        self.tell_replaced(old, address);
        self.peers.remove(&old);
        for route in self.routes.fail_owner(old) {
            let msg = "the owner reconnected; the call it was running is lost".to_owned();
            self.fail(route, ErrorKind::OwnerGone, msg);
        }
        let gone = self.routes.forget_caller(old);
        self.tell_owners_cancelled(gone);
        self.registry.reclaim(old, new, address);
    }

    /// Tells the connection `old` that a newer one of its stub, from `address`, replaces it,
    /// and closes it. Usually nobody reads this: the old connection is dead. But a live stub
    /// there (two started on one receiving directory share its session) must stop, not
    /// reconnect and take its name back: the two would replace each other forever.
    fn tell_replaced(&mut self, old: PeerId, address: &str) {
        if let Some(peer) = self.peers.get(&old) {
            peer.outbox.push(&ToClient::Shutdown {
                reason: format!(
                    "replaced by a newer connection of this stub, from {address} (another \
                     stub started on the same receiving directory?)"
                ),
            });
            peer.outbox.close();
        }
    }

    fn leave(&mut self, id: PeerId) {
        self.peers.remove(&id);
        let provided = self.registry.modules_of(id);
        let Some((name, modules)) = self.registry.leave(id) else {
            return;
        };
        say!("left: {name}");
        for module in provided.iter().filter(|m| !modules.contains(m)) {
            self.offer_again(module);
        }
        for module in modules {
            self.module_gone(&module, format!("its owner '{name}' left"));
        }
        for route in self.routes.fail_owner(id) {
            self.fail(route, ErrorKind::OwnerGone, format!("owner '{name}' left"));
        }
        // Their answers would go nowhere: calls still queued are not run.
        let gone = self.routes.forget_caller(id);
        self.tell_owners_cancelled(gone);
    }

    /// Tells everyone a module is gone and fails the calls waiting on it.
    fn module_gone(&mut self, module: &str, reason: String) {
        say!("module {module} is gone: {reason}");
        self.stats.gone(module);
        if let Err(e) = self.store.remove(module) {
            say!("cannot remove the file of {module}: {e}");
        }
        for route in self.routes.fail_module(module) {
            self.fail(
                route,
                ErrorKind::OwnerGone,
                format!("module '{module}' is gone: {reason}"),
            );
        }
        let msg = ToClient::Gone {
            module: module.to_owned(),
            reason,
        };
        self.broadcast(&msg, None);
    }

    fn frame(&mut self, id: PeerId, msg: ToServer) {
        match msg {
            ToServer::Hello(_) => self.send(
                id,
                ToClient::Error {
                    message: "hello was already said on this connection".into(),
                },
            ),
            ToServer::Chunk(chunk) => self.upload(id, chunk),
            ToServer::Withdraw { module } => self.withdraw(id, module),
            ToServer::Owns { modules } => {
                for module in self.registry.modules_of(id) {
                    if !modules.contains(&module) {
                        self.withdraw(id, module);
                    }
                }
            }
            ToServer::Have { .. } | ToServer::Ping => {}
            ToServer::Echo { id: echo } => {
                let address = self.registry.address(id).unwrap_or("?").to_owned();
                self.send(id, ToClient::Echo { id: echo, address });
            }
            ToServer::Want { module, md5 } => self.send_module(id, &module, &md5),
            ToServer::Say { text } => {
                let from = self.registry.name(id).unwrap_or("?");
                say!("message from {from}: {}", printable(&text));
            }
            ToServer::Who => {
                let peers = self.registry.who();
                self.send(id, ToClient::Who { peers });
            }
            ToServer::Call(call) => self.route(id, call),
            // An answer to a route that ended (cancelled, timed out, its caller gone) is
            // dropped.
            ToServer::Reply(reply) => {
                if let Some(route) = self.routes.close(reply.id, id) {
                    self.settle(route, reply.result);
                }
            }
            ToServer::Cancel { ids } => {
                let ids: HashSet<u64> = ids.into_iter().collect();
                let cancelled = self.routes.cancel(id, &ids);
                self.tell_owners_cancelled(cancelled);
            }
        }
    }

    /// `id` stops providing `module`: the module leaves the network with its last owner.
    fn withdraw(&mut self, id: PeerId, module: String) {
        let name = self.registry.name(id).unwrap_or("?").to_owned();
        match self.registry.withdraw(id, &module) {
            Ok(true) => self.module_gone(&module, format!("withdrawn by '{name}'")),
            Ok(false) => {
                say!("{name} no longer provides {module}; its other owners do");
                let reason = format!("withdrawn by '{name}'");
                let calls = self.routes.take(|r| r.owner == id && r.module == module);
                for route in calls {
                    self.fail(route, ErrorKind::OwnerGone, reason.clone());
                }
                // It becomes a user of the module like any other stub.
                self.send(
                    id,
                    ToClient::Gone {
                        module: module.clone(),
                        reason,
                    },
                );
                self.offer_again(&module);
            }
            Err(reason) => self.send(id, ToClient::RegisterFailed { module, reason }),
        }
    }

    /// Takes one piece of an upload; a complete, verified descriptor is stored and offered.
    fn upload(&mut self, id: PeerId, chunk: Chunk) {
        let (module, shared) = (chunk.module.clone(), chunk.shared);
        let check = match chunk.seq {
            0 => check_module_name(&module)
                .map_err(|e| e.to_string())
                .and_then(|()| self.registry.may_register(id, &module, &chunk.md5, shared)),
            _ => Ok(()),
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        // Refused once: the stub counts on one answer per upload.
        let pushed = match check {
            Ok(()) => peer.uploads.push(chunk).map_err(|e| e.to_string()),
            Err(reason) => {
                peer.uploads.refuse(&chunk);
                Err(reason)
            }
        };
        let bytes = match pushed {
            Ok(None) => return,
            Ok(Some(bytes)) => bytes,
            Err(reason) => return self.refuse(id, module, reason),
        };
        if let Err(reason) = self.accept_descriptor(id, &module, bytes, shared) {
            self.refuse(id, module, reason);
        }
    }

    /// Tells the owner, and the server's console, why its upload of `module` was refused.
    fn refuse(&mut self, id: PeerId, module: String, reason: String) {
        let owner = self.registry.name(id).unwrap_or("?");
        say!(
            "refused module {} from {owner}: {}",
            printable(&module),
            printable(&reason)
        );
        self.send(id, ToClient::RegisterFailed { module, reason });
    }

    fn accept_descriptor(
        &mut self,
        id: PeerId,
        module: &str,
        bytes: Vec<u8>,
        shared: bool,
    ) -> Result<(), String> {
        let desc: ModuleDescriptor =
            serde_json::from_slice(&bytes).map_err(|e| format!("not a module descriptor: {e}"))?;
        if desc.module != module {
            return Err(format!(
                "descriptor names module '{}', not '{module}'",
                desc.module
            ));
        }
        // Ownership may have changed while the pieces arrived.
        let md5 = md5_hex(&bytes);
        self.registry.may_register(id, module, &md5, shared)?;
        let owners_before = self.registry.module(module).map(|m| m.owners.len());
        self.store
            .write(module, &bytes)
            .map_err(|e| format!("the server cannot store it: {e}"))?;
        let changed = self
            .registry
            .register(id, module, md5.clone(), Arc::from(bytes), shared);
        self.stats.back(module);
        let owner = self.registry.name(id).unwrap_or("?");
        say!("registered {module} by {owner} (md5 {md5})");
        self.send(
            id,
            ToClient::Registered {
                module: module.to_owned(),
                md5,
            },
        );
        if changed {
            if let Some(offer) = self.registry.offer(module) {
                self.broadcast(&ToClient::Offer(offer), Some(id));
            }
        } else if self.registry.module(module).map(|m| m.owners.len()) != owners_before {
            self.offer_again(module);
        }
        Ok(())
    }

    /// Offers `module` again to every stub that does not provide it, once its owners changed
    /// and it stayed: from their cached copy (nothing is sent again) they learn who provides
    /// it now.
    fn offer_again(&mut self, module: &str) {
        let Some(entry) = self.registry.module(module) else {
            return;
        };
        let owners = entry.owners.clone();
        let Some(offer) = self.registry.offer(module) else {
            return;
        };
        let msg = ToClient::Offer(offer);
        let users: Vec<PeerId> = (self.peers.keys().copied())
            .filter(|id| !owners.contains(id))
            .collect();
        for id in users {
            self.queue(id, &msg);
        }
    }

    /// Sends the pieces of `module` if its md5 is still `md5` (else a newer offer is on its way).
    fn send_module(&mut self, id: PeerId, module: &str, md5: &str) {
        let Some(entry) = self.registry.module(module) else {
            return;
        };
        if entry.md5 != md5 {
            return;
        }
        let chunks = split(module, &entry.bytes);
        let to = self.registry.name(id).unwrap_or("?");
        say!(
            "sent {module} to {to}: {} bytes in {} chunk(s)",
            entry.bytes.len(),
            chunks.len()
        );
        for chunk in chunks {
            self.send(id, ToClient::Chunk(chunk));
        }
    }

    /// Forwards a call to its module's owner under a fresh route id.
    fn route(&mut self, caller: PeerId, call: Call) {
        let Some(owner) = self.registry.pick_owner(&call.module) else {
            let err = RemoteError::new(
                ErrorKind::UnknownModule,
                format!("no module '{}' on the network", call.module),
            );
            return self.send(caller, reply_err(call.id, err));
        };
        let (in_flight, limit) = (
            self.routes.in_flight(caller),
            self.limits.max_calls_in_flight,
        );
        if in_flight >= limit {
            let msg = format!("{in_flight} calls in flight from this stub, the limit is {limit}");
            return self.send(
                caller,
                reply_err(call.id, RemoteError::new(ErrorKind::TooLarge, msg)),
            );
        }
        let timeout = Duration::from_millis(call.timeout_ms);
        let now = Instant::now();
        let route = self.routes.open(Route {
            caller,
            caller_id: call.id,
            owner,
            module: call.module.clone(),
            function: call.function.clone(),
            started: now,
            deadline: now + timeout,
            told_owner: false,
        });
        // Who made it, whatever the stub said: the owner lets its callers take turns.
        let caller = Some(caller);
        self.send(
            owner,
            ToClient::Call(Call {
                id: route,
                caller,
                ..call
            }),
        );
    }

    /// Tells the owners of `routes`, which ended with nobody waiting for them, to drop those
    /// of their calls not yet running.
    fn tell_owners_cancelled(&mut self, routes: Vec<(u64, Route)>) {
        self.tell_owners(routes.into_iter().map(|(id, route)| (id, route.owner)));
    }

    /// Tells owners to drop the calls (route id, owner) not yet running.
    fn tell_owners(&mut self, calls: impl IntoIterator<Item = (u64, PeerId)>) {
        let mut by_owner: HashMap<PeerId, Vec<u64>> = HashMap::new();
        for (id, owner) in calls {
            by_owner.entry(owner).or_default().push(id);
        }
        for (owner, ids) in by_owner {
            for ids in ids.chunks(CANCEL_IDS) {
                let ids = ids.to_vec();
                self.send(owner, ToClient::Cancel { ids });
            }
        }
    }

    fn fail(&mut self, route: Route, kind: ErrorKind, message: String) {
        self.settle(route, Err(RemoteError::new(kind, message)));
    }

    /// Ends a routed call: counts it and answers its caller.
    fn settle(&mut self, route: Route, result: Result<Json, RemoteError>) {
        let error = result.as_ref().err().map(ToString::to_string);
        let took = route.started.elapsed();
        self.stats
            .record(&route.module, &route.function, took, error.as_deref());
        let reply = Reply {
            id: route.caller_id,
            result,
        };
        self.send(route.caller, ToClient::Reply(reply));
    }

    fn expire(&mut self) {
        let now = Instant::now();
        // A call past its timeout is of no use to its caller: one its owner has not started
        // (queued there, or still on its way, behind a stall) is dropped, not run late.
        let overdue = self.routes.overdue(now);
        self.tell_owners(overdue);
        // Callers time out on their own; the grace keeps this a clean-up, not a race with them.
        for route in self.routes.expire(now, Duration::from_secs(1)) {
            let msg = format!("no answer from the owner of '{}' in time", route.module);
            self.fail(route, ErrorKind::Timeout, msg);
        }
    }

    fn console(&mut self, cmd: Command) -> Option<String> {
        match cmd {
            Command::Who => say!(
                "{}",
                common::proto::render_who(&self.registry.who()).trim_end()
            ),
            Command::Announce(text) => {
                let msg = ToClient::Message {
                    from: "server".into(),
                    text,
                };
                // Refused here, naming the limit, rather than sent for every stub to refuse.
                let size = serde_json::to_vec(&msg).map_or(0, |frame| frame.len());
                let limit = self.limits.link.max_frame_bytes;
                match size > limit {
                    true => say!(
                        "error: message not sent: its frame would be {size} bytes, over the \
                         server's max_frame_bytes ({limit}): shorten it, or raise the limit \
                         under [limits]"
                    ),
                    false => self.broadcast(&msg, None),
                }
            }
            Command::Kick(name) => match self.registry.peer_by_name(&name) {
                Some(id) => {
                    say!("kicking {name}");
                    let reason = "kicked by the server".to_owned();
                    self.send(id, ToClient::Shutdown { reason });
                    self.peers.remove(&id);
                }
                None => say!("error: no stub named '{name}' (see wii)"),
            },
            Command::Stats => say!("{}", self.stats.render("calls routed").trim_end()),
            Command::End => return Some("the server ended the session".into()),
        }
        None
    }
}

fn reply_err(id: u64, err: RemoteError) -> ToClient {
    ToClient::Reply(Reply {
        id,
        result: Err(err),
    })
}
