//! RATE LIMITS FOR LOG LINES
//!
//! A warning that can repeat under load ("no backends available", "stuck
//! backend write queue") is written at most once per interval, as the
//! original limits "no backends available" to once per 5 s: a flood must
//! not turn into a flood of log.  One type for every such line; the time is
//! passed in.

use std::time::Duration;

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
}
