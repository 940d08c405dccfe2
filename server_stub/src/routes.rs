//! Calls in flight through the server, free of I/O.
//!
//! Each forwarded call gets a fresh route id, mapped back to (caller, caller's id), so ids from
//! different callers never collide. A route ends exactly once: answered, expired, or failed
//! because its owner went away.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::registry::PeerId;

/// One call in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub caller: PeerId,
    /// The id the caller gave the call.
    pub caller_id: u64,
    pub owner: PeerId,
    pub module: String,
    pub function: String,
    /// When the call was routed, for the statistics.
    pub started: Instant,
    /// When the caller stops waiting.
    pub deadline: Instant,
    /// Whether its owner was told to drop it ([`Routes::overdue`]).
    pub told_owner: bool,
}

/// Every call in flight.
#[derive(Debug, Default)]
pub struct Routes {
    next: u64,
    map: HashMap<u64, Route>,
    /// Routes open per caller, for the per-connection limit.
    per_caller: HashMap<PeerId, usize>,
}

impl Routes {
    /// Opens a route and returns the id to forward the call under.
    pub fn open(&mut self, route: Route) -> u64 {
        self.next += 1;
        *self.per_caller.entry(route.caller).or_default() += 1;
        self.map.insert(self.next, route);
        self.next
    }

    /// Calls in flight from `caller`.
    pub fn in_flight(&self, caller: PeerId) -> usize {
        self.per_caller.get(&caller).copied().unwrap_or(0)
    }

    fn remove(&mut self, id: u64) -> Option<Route> {
        let route = self.map.remove(&id)?;
        if let Some(n) = self.per_caller.get_mut(&route.caller) {
            *n -= 1;
            if *n == 0 {
                self.per_caller.remove(&route.caller);
            }
        }
        Some(route)
    }

    /// Ends the route `id` answered by `owner`; `None` if it is unknown, already ended, or
    /// belongs to another owner (a late or forged answer is dropped, never misrouted).
    pub fn close(&mut self, id: u64, owner: PeerId) -> Option<Route> {
        match self.map.get(&id) {
            Some(r) if r.owner == owner => self.remove(id),
            _ => None,
        }
    }

    /// Ends every route matching `pred` and returns them.
    pub fn take(&mut self, pred: impl Fn(&Route) -> bool) -> Vec<Route> {
        let taken = self.take_with_ids(pred);
        taken.into_iter().map(|(_, route)| route).collect()
    }

    /// Ends every route matching `pred` and returns them with their ids.
    fn take_with_ids(&mut self, pred: impl Fn(&Route) -> bool) -> Vec<(u64, Route)> {
        let ids: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, r)| pred(r))
            .map(|(id, _)| *id)
            .collect();
        (ids.into_iter())
            .filter_map(|id| Some((id, self.remove(id)?)))
            .collect()
    }

    /// Ends the routes of the calls `caller` made under `ids` (nobody waits for them any more)
    /// and returns them with their ids, for their owners to drop.
    pub fn cancel(&mut self, caller: PeerId, ids: &HashSet<u64>) -> Vec<(u64, Route)> {
        self.take_with_ids(|r| r.caller == caller && ids.contains(&r.caller_id))
    }

    /// Ends the routes to `owner` (it left).
    pub fn fail_owner(&mut self, owner: PeerId) -> Vec<Route> {
        self.take(|r| r.owner == owner)
    }

    /// Ends the routes to `module` (withdrawn).
    pub fn fail_module(&mut self, module: &str) -> Vec<Route> {
        self.take(|r| r.module == module)
    }

    /// Ends the routes from `caller` (it left; the owner's late answers will be dropped) and
    /// returns them with their ids, for their owners to drop.
    pub fn forget_caller(&mut self, caller: PeerId) -> Vec<(u64, Route)> {
        self.take_with_ids(|r| r.caller == caller)
    }

    /// The routes whose caller stopped waiting before `now` and whose owner has not been told:
    /// their ids, and their owners, which are told now (once).
    pub fn overdue(&mut self, now: Instant) -> Vec<(u64, PeerId)> {
        let late = self
            .map
            .iter_mut()
            .filter(|(_, r)| !r.told_owner && r.deadline < now);
        late.map(|(id, r)| {
            r.told_owner = true;
            (*id, r.owner)
        })
        .collect()
    }

    /// Ends the routes whose caller stopped waiting before `now` (plus `grace`).
    pub fn expire(&mut self, now: Instant, grace: Duration) -> Vec<Route> {
        self.take(|r| r.deadline + grace < now)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(caller: PeerId, owner: PeerId, module: &str, deadline: Instant) -> Route {
        Route {
            caller,
            caller_id: 7,
            owner,
            module: module.into(),
            function: "f".into(),
            started: deadline,
            deadline,
            told_owner: false,
        }
    }

    #[test]
    fn answers_close_once_and_only_from_the_owner() {
        let mut r = Routes::default();
        let now = Instant::now();
        let id = r.open(route(1, 2, "z", now));
        assert_eq!(r.in_flight(1), 1);
        assert_eq!(r.close(id, 3), None);
        assert_eq!(r.close(id, 2).unwrap().caller_id, 7);
        assert_eq!(r.close(id, 2), None);
        assert_eq!(r.in_flight(1), 0);
    }

    #[test]
    fn owner_gone_module_gone_caller_gone_and_expiry() {
        let mut r = Routes::default();
        let now = Instant::now();
        r.open(route(1, 2, "z", now));
        r.open(route(1, 3, "y", now));
        r.open(route(4, 3, "w", now + Duration::from_secs(60)));
        assert_eq!(r.fail_owner(2).len(), 1);
        assert_eq!(r.fail_module("y").len(), 1);
        assert_eq!(
            r.expire(now + Duration::from_secs(2), Duration::from_secs(1))
                .len(),
            0
        );
        assert_eq!(r.in_flight(4), 1);
        assert_eq!(r.forget_caller(4).len(), 1);
        assert!(r.is_empty());
        assert_eq!(r.in_flight(4), 0);
        r.open(route(1, 2, "z", now));
        assert_eq!(
            r.expire(now + Duration::from_secs(2), Duration::from_secs(1))
                .len(),
            1
        );
    }

    #[test]
    fn a_cancel_ends_only_its_callers_routes_of_those_ids() {
        let mut r = Routes::default();
        let now = Instant::now();
        let mut open = |caller, caller_id| {
            r.open(Route {
                caller_id,
                ..route(caller, 9, "z", now)
            })
        };
        let (a1, _a2, _b1) = (open(1, 1), open(1, 2), open(2, 1));
        let cancelled = r.cancel(1, &HashSet::from([1, 3]));
        assert_eq!(cancelled.len(), 1);
        assert_eq!((cancelled[0].0, cancelled[0].1.owner), (a1, 9));
        assert_eq!((r.in_flight(1), r.in_flight(2)), (1, 1));
        assert_eq!(r.close(a1, 9), None, "its answer is dropped");
    }
}
