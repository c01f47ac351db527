//! RATE LIMITS
//!
//! A warning that can repeat under load ("no backends available", "stuck
//! backend write queue") is written at most once per interval, as the
//! original limits "no backends available" to once per 5 s: a flood must
//! not turn into a flood of log.  One type for every such line
//! ([`RateLimit`]); the time is passed in.
//!
//! Answers the balancer makes itself to clients it keeps no state for
//! (refused by the access list) are limited per address by a fixed table
//! of budgets ([`AddressBudgets`]): an address hashes to a slot, each slot
//! allows so many answers a second.  Addresses that share a slot share its
//! budget, which errs on the side of answering less; the table never grows,
//! whatever a spoofed flood sends.

use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::time::Duration;

use foldhash::fast::RandomState;
use tokio::time::Instant;

/// Allows one event per interval.
#[derive(Debug, Default, Clone, Copy)]
pub struct RateLimit {
    last: Option<Instant>,
}

impl RateLimit {
    /// True (and the interval restarts) if nothing was allowed during the
    /// `every` before `now`.
    pub fn allow(&mut self, now: Instant, every: Duration) -> bool {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < every => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

/// Per-client log records ("new remote peer", a change of backend,
/// "expiring remote entry") allowed a second: a flood of new addresses
/// must not buy ten times its size in log.
pub(super) const PER_CLIENT_LOGS_PER_SECOND: u32 = 100;

/// A budget of per-client log records a second; the rest are counted, and
/// [`LogBudget::take_suppressed`] hands the count to a summary record.
#[derive(Debug, Default)]
pub struct LogBudget {
    window: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    /// Whether one more per-client record may be written at `now`.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.window {
            Some(w) if now.saturating_duration_since(w) < Duration::from_secs(1) => {}
            _ => {
                self.window = Some(now);
                self.used = 0;
            }
        }
        if self.used < PER_CLIENT_LOGS_PER_SECOND {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Records suppressed since the last call, if any.
    pub fn take_suppressed(&mut self) -> Option<u64> {
        (self.suppressed > 0).then(|| std::mem::take(&mut self.suppressed))
    }
}

/// Slots in an [`AddressBudgets`] table: 64 KiB.
const BUDGET_SLOTS: usize = 8192;

/// Per-address answer budgets, in a table of fixed size (see the module
/// comment).
#[derive(Debug)]
pub struct AddressBudgets {
    /// Per slot: the second it counts, and the answers given in it.
    slots: Vec<(u32, u32)>,
    /// Randomly seeded: nobody can aim addresses at one slot.
    hasher: RandomState,
}

impl Default for AddressBudgets {
    fn default() -> Self {
        AddressBudgets {
            slots: vec![(u32::MAX, 0); BUDGET_SLOTS],
            hasher: RandomState::default(),
        }
    }
}

impl AddressBudgets {
    /// Whether `ip` may have one more answer in second `second`, at most
    /// `per_second` a second.
    pub fn allow(&mut self, ip: IpAddr, second: u32, per_second: u32) -> bool {
        let mut h = self.hasher.build_hasher();
        ip.hash(&mut h);
        // The hash's high bits pick the slot (a multiply, not a modulo of
        // its low bits, which a fast hasher mixes less well).
        let hash = u128::from(std::hash::Hasher::finish(&h));
        let i = ((hash * BUDGET_SLOTS as u128) >> 64) as usize;
        let Some(slot) = self.slots.get_mut(i) else {
            return false;
        };
        if slot.0 != second {
            *slot = (second, 0);
        }
        if slot.1 >= per_second {
            return false;
        }
        slot.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval() {
        let t0 = Instant::now();
        let every = Duration::from_secs(5);
        let mut r = RateLimit::default();
        assert!(r.allow(t0, every));
        assert!(!r.allow(t0 + Duration::from_millis(4999), every));
        assert!(r.allow(t0 + every, every));
        assert!(!r.allow(t0 + every, every));
    }

    #[test]
    fn budgets_per_address_and_second() {
        let mut b = AddressBudgets::default();
        let a = IpAddr::from([192, 0, 2, 1]);
        assert!(b.allow(a, 7, 2) && b.allow(a, 7, 2));
        assert!(!b.allow(a, 7, 2), "third in the second");
        assert!(b.allow(a, 8, 2), "a new second");
        let others = (0..100u8).filter(|n| b.allow(IpAddr::from([198, 51, 100, *n]), 7, 2));
        assert!(
            others.count() >= 95,
            "other addresses keep their own budget"
        );
    }
}
