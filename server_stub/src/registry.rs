//! The server's tables, free of I/O: who is in, which modules exist and who owns them.
//! The broker owns one [`Registry`] and is the only code that touches it.

use std::collections::{btree_map::Entry, BTreeMap, BTreeSet};
use std::sync::Arc;

use common::proto::{Offer, PeerInfo};

/// A connection's id: unique for the server's lifetime, so a name re-taken by a new connection
/// is never confused with the old one.
pub type PeerId = u64;

/// A module on the network.
#[derive(Debug, Clone)]
pub struct ModuleEntry {
    pub owner: PeerId,
    pub md5: String,
    /// The descriptor file, shared by every transfer of it.
    pub bytes: Arc<[u8]>,
}

#[derive(Debug)]
struct PeerEntry {
    name: String,
    address: String,
    modules: BTreeSet<String>,
}

/// Names, peers and modules.
#[derive(Debug, Default)]
pub struct Registry {
    names: BTreeMap<String, PeerId>,
    peers: BTreeMap<PeerId, PeerEntry>,
    modules: BTreeMap<String, ModuleEntry>,
}

impl Registry {
    /// Claims `name` for peer `id`.
    ///
    /// # Errors
    /// The reason, when the name is in use or not acceptable.
    pub fn join(&mut self, id: PeerId, name: &str, address: &str) -> Result<(), String> {
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c == ':') {
            return Err(format!(
                "name '{name}' is not acceptable: use 1 to 64 characters, no ':' or control characters"
            ));
        }
        match self.names.entry(name.to_owned()) {
            Entry::Occupied(_) => Err(format!("name '{name}' is already in use on this network")),
            Entry::Vacant(slot) => {
                slot.insert(id);
                self.peers.insert(
                    id,
                    PeerEntry {
                        name: name.to_owned(),
                        address: address.to_owned(),
                        modules: BTreeSet::new(),
                    },
                );
                Ok(())
            }
        }
    }

    /// Removes peer `id` and every module it owned.
    ///
    /// # Returns
    /// Its name and the modules that left with it; `None` if it never joined.
    pub fn leave(&mut self, id: PeerId) -> Option<(String, Vec<String>)> {
        let peer = self.peers.remove(&id)?;
        if self.names.get(&peer.name) == Some(&id) {
            self.names.remove(&peer.name);
        }
        for module in &peer.modules {
            self.modules.remove(module);
        }
        Some((peer.name, peer.modules.into_iter().collect()))
    }

    pub fn name(&self, id: PeerId) -> Option<&str> {
        self.peers.get(&id).map(|p| p.name.as_str())
    }

    pub fn peer_by_name(&self, name: &str) -> Option<PeerId> {
        self.names.get(name).copied()
    }

    /// Every peer's id.
    pub fn peer_ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// Whether `id` may upload `module`: nobody else owns it.
    ///
    /// # Errors
    /// The reason, naming the owner.
    pub fn may_register(&self, id: PeerId, module: &str) -> Result<(), String> {
        match self.modules.get(module) {
            Some(m) if m.owner != id => Err(format!(
                "module '{module}' is owned by '{}'",
                self.name(m.owner).unwrap_or("?")
            )),
            _ => Ok(()),
        }
    }

    /// Records `module` as owned by `id` with this descriptor.
    ///
    /// # Returns
    /// Whether the descriptor changed (a new module or new bytes).
    pub fn register(&mut self, id: PeerId, module: &str, md5: String, bytes: Arc<[u8]>) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        peer.modules.insert(module.to_owned());
        let changed = self.modules.get(module).is_none_or(|m| m.md5 != md5);
        self.modules.insert(
            module.to_owned(),
            ModuleEntry {
                owner: id,
                md5,
                bytes,
            },
        );
        changed
    }

    /// Removes `module` if `id` owns it.
    ///
    /// # Errors
    /// The reason when it does not exist or belongs to someone else.
    pub fn withdraw(&mut self, id: PeerId, module: &str) -> Result<(), String> {
        self.may_register(id, module)?;
        if self.modules.remove(module).is_none() {
            return Err(format!("module '{module}' is not registered"));
        }
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.modules.remove(module);
        }
        Ok(())
    }

    pub fn module(&self, module: &str) -> Option<&ModuleEntry> {
        self.modules.get(module)
    }

    /// The offer of one module.
    pub fn offer(&self, module: &str) -> Option<Offer> {
        let m = self.modules.get(module)?;
        Some(Offer {
            module: module.to_owned(),
            owner: self.name(m.owner).unwrap_or("?").to_owned(),
            md5: m.md5.clone(),
            size: m.bytes.len() as u64,
        })
    }

    /// Offers of every module not owned by `id`: what a joining stub should hold.
    pub fn offers_for(&self, id: PeerId) -> Vec<Offer> {
        self.modules
            .iter()
            .filter(|(_, m)| m.owner != id)
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
        r.join(1, "a", "x").unwrap();
        let err = r.join(2, "a", "y").unwrap_err();
        assert!(err.contains("already in use"), "{err}");
        assert!(r.join(3, "", "y").is_err());
        assert_eq!(r.leave(1).unwrap().0, "a");
        r.join(2, "a", "y").unwrap();
        assert_eq!(r.peer_by_name("a"), Some(2));
        assert!(r.leave(1).is_none());
    }

    #[test]
    fn modules_have_one_owner_and_leave_with_it() {
        let mut r = Registry::default();
        r.join(1, "a", "x").unwrap();
        r.join(2, "b", "y").unwrap();
        assert!(r.register(1, "z", "m1".into(), bytes("1")));
        assert!(!r.register(1, "z", "m1".into(), bytes("1")));
        assert!(r.register(1, "z", "m2".into(), bytes("2")));
        assert!(r.may_register(2, "z").unwrap_err().contains("owned by 'a'"));
        assert!(r.withdraw(2, "z").is_err());
        assert_eq!(r.offers_for(2).len(), 1);
        assert!(r.offers_for(1).is_empty());
        assert_eq!(r.who()[0].modules, vec!["z".to_string()]);
        let (_, gone) = r.leave(1).unwrap();
        assert_eq!(gone, vec!["z".to_string()]);
        assert!(r.module("z").is_none());
    }

    #[test]
    fn withdraw_frees_the_name() {
        let mut r = Registry::default();
        r.join(1, "a", "x").unwrap();
        r.register(1, "z", "m".into(), bytes("1"));
        r.withdraw(1, "z").unwrap();
        assert!(r.withdraw(1, "z").unwrap_err().contains("not registered"));
        assert!(r.who()[0].modules.is_empty());
    }
}
