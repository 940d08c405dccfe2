//! The server's tables, free of I/O: who is in, which modules exist and who owns them.
//! The broker owns one [`Registry`] and is the only code that touches it.

use std::collections::{btree_map::Entry, BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use common::proto::{valid_stub_name, Offer, PeerInfo, MAX_STUB_NAME_BYTES};

/// A connection's id: unique for the server's lifetime, so a name re-taken by a new connection
/// is never confused with the old one.
pub type PeerId = u64;

/// A module on the network.
#[derive(Debug, Clone)]
pub struct ModuleEntry {
    /// Who provides it: one owner, or several when every one declared it shared.
    pub owners: Vec<PeerId>,
    /// Declared shareable by its owners: more stubs with the same headers may provide it.
    pub shared: bool,
    /// Which owner the next call goes to.
    turn: usize,
    pub md5: String,
    /// The descriptor file, shared by every transfer of it.
    pub bytes: Arc<[u8]>,
}

#[derive(Debug)]
struct PeerEntry {
    name: String,
    address: String,
    /// The stub's lifetime id from its hello, if it sent one.
    session: Option<String>,
    modules: BTreeSet<String>,
}

/// Why a name could not be claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The name is not acceptable.
    BadName(String),
    /// Another connection holds the name. `same_session`: it is this stub's own ghost.
    Taken { holder: PeerId, same_session: bool },
}

/// Names, peers and modules.
#[derive(Debug, Default)]
pub struct Registry {
    names: BTreeMap<String, PeerId>,
    peers: BTreeMap<PeerId, PeerEntry>,
    modules: BTreeMap<String, ModuleEntry>,
    /// The modules that left the network since the server started, and are not back: a stub
    /// that was away when one left is told on joining (see [`Registry::left`]). The newest
    /// [`LEFT_KEPT`].
    left: VecDeque<String>,
}

/// How many modules that left [`Registry::left`] keeps: a welcome names them all.
const LEFT_KEPT: usize = 100;

impl Registry {
    /// Claims `name` for peer `id`.
    ///
    /// # Errors
    /// The name is not acceptable, or another connection holds it.
    pub fn join(
        &mut self,
        id: PeerId,
        name: &str,
        address: &str,
        session: Option<&str>,
    ) -> Result<(), Refusal> {
        if !valid_stub_name(name) {
            // A name far too long is not echoed: its size says what is wrong.
            let name = match name.len() <= MAX_STUB_NAME_BYTES {
                true => format!("name '{name}'"),
                false => format!("a name of {} bytes", name.len()),
            };
            return Err(Refusal::BadName(format!(
                "{name} is not acceptable: use 1 to {MAX_STUB_NAME_BYTES} bytes, no ':', \
                 control characters or spaces at either end"
            )));
        }
        match self.names.entry(name.to_owned()) {
            Entry::Occupied(slot) => {
                let holder = *slot.get();
                let theirs = self.peers.get(&holder).and_then(|p| p.session.as_deref());
                let same_session = session.is_some() && theirs == session;
                Err(Refusal::Taken {
                    holder,
                    same_session,
                })
            }
            Entry::Vacant(slot) => {
                slot.insert(id);
                self.peers.insert(
                    id,
                    PeerEntry {
                        name: name.to_owned(),
                        address: address.to_owned(),
                        session: session.map(str::to_owned),
                        modules: BTreeSet::new(),
                    },
                );
                Ok(())
            }
        }
    }

    /// The peer other than `id` that joined on `session`: a stub on the same receiving
    /// directory, under another name.
    pub fn on_session(&self, session: Option<&str>, id: PeerId) -> Option<PeerId> {
        let session = session?;
        let mut peers = self.peers.iter();
        peers
            .find(|(other, p)| **other != id && p.session.as_deref() == Some(session))
            .map(|(other, _)| *other)
    }

    /// Moves the name and modules of `old` (a stub's ghost) to `new`, the same stub reconnected:
    /// its modules stay on the network, so nobody re-fetches anything.
    pub fn reclaim(&mut self, old: PeerId, new: PeerId, address: &str) {
        let Some(mut peer) = self.peers.remove(&old) else {
            return;
        };
        peer.address = address.to_owned();
        self.names.insert(peer.name.clone(), new);
        for module in &peer.modules {
            if let Some(m) = self.modules.get_mut(module) {
                m.owners
                    .iter_mut()
                    .filter(|o| **o == old)
                    .for_each(|o| *o = new);
            }
        }
        self.peers.insert(new, peer);
    }

    /// How many peers are in.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Removes peer `id`; its modules go with it unless other owners share them.
    ///
    /// # Returns
    /// Its name and the modules that left the network with it; `None` if it never joined.
    pub fn leave(&mut self, id: PeerId) -> Option<(String, Vec<String>)> {
        let peer = self.peers.remove(&id)?;
        if self.names.get(&peer.name) == Some(&id) {
            self.names.remove(&peer.name);
        }
        let gone = peer
            .modules
            .into_iter()
            .filter(|m| self.drop_owner(id, m))
            .collect();
        Some((peer.name, gone))
    }

    /// Removes `id` from the owners of `module`; `true` when nobody provides it any more.
    fn drop_owner(&mut self, id: PeerId, module: &str) -> bool {
        let Some(m) = self.modules.get_mut(module) else {
            return false;
        };
        m.owners.retain(|o| *o != id);
        if !m.owners.is_empty() {
            return false;
        }
        self.modules.remove(module);
        self.left.retain(|m| m != module);
        if self.left.len() == LEFT_KEPT {
            self.left.pop_front();
        }
        self.left.push_back(module.to_owned());
        true
    }

    /// The modules that left the network since the server started and are not back, newest
    /// last.
    pub fn left(&self) -> Vec<String> {
        self.left.iter().cloned().collect()
    }

    pub fn name(&self, id: PeerId) -> Option<&str> {
        self.peers.get(&id).map(|p| p.name.as_str())
    }

    /// The address peer `id` connected from.
    pub fn address(&self, id: PeerId) -> Option<&str> {
        self.peers.get(&id).map(|p| p.address.as_str())
    }

    pub fn peer_by_name(&self, name: &str) -> Option<PeerId> {
        self.names.get(name).copied()
    }

    /// Whether `id` may upload `module` with descriptor `md5`: nobody else owns it, or every
    /// owner (this one too) declares it shared and the headers are the same.
    ///
    /// # Errors
    /// The reason, naming the owners.
    pub fn may_register(
        &self,
        id: PeerId,
        module: &str,
        md5: &str,
        shared: bool,
    ) -> Result<(), String> {
        let Some(m) = self.modules.get(module) else {
            return Ok(());
        };
        let others: Vec<&str> = m
            .owners
            .iter()
            .filter(|o| **o != id)
            .map(|o| self.name(*o).unwrap_or("?"))
            .collect();
        let others = others.join("', '");
        if others.is_empty() {
            return Ok(());
        }
        let mine = m.owners.contains(&id);
        match (mine, shared && m.shared, md5 == m.md5) {
            (_, true, true) => Ok(()),
            (true, _, false) => Err(format!(
                "module '{module}' is shared with '{others}': its headers cannot change while they provide it"
            )),
            (false, true, false) => Err(format!(
                "module '{module}' is shared by '{others}' with different headers (md5 {})",
                m.md5
            )),
            _ => Err(format!(
                "module '{module}' is owned by '{others}' (several owners need it declared shared by all)"
            )),
        }
    }

    /// Records `id` as an owner of `module` with this descriptor (after [`Self::may_register`]).
    ///
    /// # Returns
    /// Whether the descriptor changed (a new module or new bytes).
    pub fn register(
        &mut self,
        id: PeerId,
        module: &str,
        md5: String,
        bytes: Arc<[u8]>,
        shared: bool,
    ) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        peer.modules.insert(module.to_owned());
        match self.modules.get_mut(module) {
            Some(m) if m.md5 == md5 => {
                if !m.owners.contains(&id) {
                    m.owners.push(id);
                }
                false
            }
            _ => {
                self.left.retain(|m| m != module);
                let entry = ModuleEntry {
                    owners: vec![id],
                    shared,
                    turn: 0,
                    md5,
                    bytes,
                };
                self.modules.insert(module.to_owned(), entry);
                true
            }
        }
    }

    /// Stops `id` providing `module`.
    ///
    /// # Returns
    /// `true` when nobody provides it any more.
    ///
    /// # Errors
    /// The reason when it does not exist or `id` is not among its owners.
    pub fn withdraw(&mut self, id: PeerId, module: &str) -> Result<bool, String> {
        match self.modules.get(module) {
            None => return Err(format!("module '{module}' is not registered")),
            Some(m) if !m.owners.contains(&id) => {
                return Err(format!("module '{module}' is not provided by this stub"))
            }
            Some(_) => {}
        }
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.modules.remove(module);
        }
        Ok(self.drop_owner(id, module))
    }

    /// The modules peer `id` owns, by name.
    pub fn modules_of(&self, id: PeerId) -> Vec<String> {
        self.peers
            .get(&id)
            .map(|p| p.modules.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The owner the next call to `module` goes to: each in turn.
    pub fn pick_owner(&mut self, module: &str) -> Option<PeerId> {
        let m = self.modules.get_mut(module)?;
        m.turn = (m.turn + 1) % m.owners.len();
        m.owners.get(m.turn).copied()
    }

    pub fn module(&self, module: &str) -> Option<&ModuleEntry> {
        self.modules.get(module)
    }

    /// The offer of one module.
    pub fn offer(&self, module: &str) -> Option<Offer> {
        let m = self.modules.get(module)?;
        let owners: Vec<&str> = m
            .owners
            .iter()
            .map(|o| self.name(*o).unwrap_or("?"))
            .collect();
        Some(Offer {
            module: module.to_owned(),
            owner: owners.join(", "),
            md5: m.md5.clone(),
            size: m.bytes.len() as u64,
        })
    }

    /// Offers of every module not owned by `id`: what a joining stub should hold.
    pub fn offers_for(&self, id: PeerId) -> Vec<Offer> {
        self.modules
            .iter()
            .filter(|(_, m)| !m.owners.contains(&id))
            .filter_map(|(name, _)| self.offer(name))
            .collect()
    }

    /// Who is in, by name.
    pub fn who(&self) -> Vec<PeerInfo> {
        let mut peers: Vec<PeerInfo> = self
            .peers
            .values()
            .map(|p| PeerInfo {
                name: p.name.clone(),
                address: p.address.clone(),
                modules: p.modules.iter().cloned().collect(),
            })
            .collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Arc<[u8]> {
        Arc::from(s.as_bytes())
    }

    #[test]
    fn names_are_unique_and_freed_on_leave() {
        let mut r = Registry::default();
        r.join(1, "a", "x", None).unwrap();
        let err = r.join(2, "a", "y", None).unwrap_err();
        assert_eq!(
            err,
            Refusal::Taken {
                holder: 1,
                same_session: false
            }
        );
        assert!(matches!(r.join(3, "", "y", None), Err(Refusal::BadName(_))));
        assert_eq!(r.leave(1).unwrap().0, "a");
        r.join(2, "a", "y", None).unwrap();
        assert_eq!(r.peer_by_name("a"), Some(2));
        assert!(r.leave(1).is_none());
    }

    #[test]
    fn a_reconnecting_stub_reclaims_its_name_and_modules_from_its_ghost() {
        let mut r = Registry::default();
        r.join(1, "a", "x", Some("s1")).unwrap();
        r.register(1, "z", "m".into(), bytes("1"), false);
        let stranger = r.join(2, "a", "y", Some("s2")).unwrap_err();
        assert_eq!(
            stranger,
            Refusal::Taken {
                holder: 1,
                same_session: false
            }
        );
        let itself = r.join(3, "a", "y", Some("s1")).unwrap_err();
        assert_eq!(
            itself,
            Refusal::Taken {
                holder: 1,
                same_session: true
            }
        );
        r.reclaim(1, 3, "y");
        assert_eq!(r.peer_by_name("a"), Some(3));
        assert_eq!(r.module("z").unwrap().owners, vec![3]);
        assert!(
            r.leave(1).is_none(),
            "the ghost's late leave changes nothing"
        );
        assert_eq!(r.who()[0].address, "y");
    }

    #[test]
    fn modules_have_one_owner_and_leave_with_it() {
        let mut r = Registry::default();
        r.join(1, "a", "x", None).unwrap();
        r.join(2, "b", "y", None).unwrap();
        assert!(r.register(1, "z", "m1".into(), bytes("1"), false));
        assert!(!r.register(1, "z", "m1".into(), bytes("1"), false));
        assert!(r.register(1, "z", "m2".into(), bytes("2"), false));
        assert!(r
            .may_register(2, "z", "m2", true)
            .unwrap_err()
            .contains("owned by 'a'"));
        assert!(r.withdraw(2, "z").is_err());
        assert_eq!(r.offers_for(2).len(), 1);
        assert!(r.offers_for(1).is_empty());
        assert_eq!(r.who()[0].modules, vec!["z".to_string()]);
        let (_, gone) = r.leave(1).unwrap();
        assert_eq!(gone, vec!["z".to_string()]);
        assert!(r.module("z").is_none());
    }

    #[test]
    fn shared_modules_have_several_owners_in_turn_and_outlive_one() {
        let mut r = Registry::default();
        for (id, name) in [(1, "a"), (2, "b"), (3, "c")] {
            r.join(id, name, "x", None).unwrap();
        }
        r.register(1, "z", "m".into(), bytes("1"), true);
        assert!(r
            .may_register(2, "z", "other", true)
            .unwrap_err()
            .contains("different headers"));
        assert!(r
            .may_register(2, "z", "m", false)
            .unwrap_err()
            .contains("declared shared"));
        r.may_register(2, "z", "m", true).unwrap();
        assert!(!r.register(2, "z", "m".into(), bytes("1"), true));
        assert!(r
            .may_register(1, "z", "new", true)
            .unwrap_err()
            .contains("cannot change"));
        let turns: Vec<_> = (0..4).map(|_| r.pick_owner("z").unwrap()).collect();
        assert_eq!(turns, [2, 1, 2, 1]);
        assert_eq!(r.offer("z").unwrap().owner, "a, b");
        assert!(r.offers_for(3).len() == 1 && r.offers_for(2).is_empty());
        let (_, gone) = r.leave(1).unwrap();
        assert!(gone.is_empty(), "b still provides z");
        assert_eq!(r.pick_owner("z"), Some(2));
        assert!(r.withdraw(3, "z").is_err());
        assert!(r.withdraw(2, "z").unwrap(), "the last owner withdrew");
        assert!(r.module("z").is_none());
    }

    #[test]
    fn withdraw_frees_the_name() {
        let mut r = Registry::default();
        r.join(1, "a", "x", None).unwrap();
        r.register(1, "z", "m".into(), bytes("1"), false);
        assert!(r.withdraw(1, "z").unwrap());
        assert!(r.withdraw(1, "z").unwrap_err().contains("not registered"));
        assert!(r.who()[0].modules.is_empty());
    }
}
