//! LATENCY
//!
//! How long a backend takes to answer, kept two ways: a histogram of every
//! forward latency and heartbeat round trip ([`Latency`]: powers of two
//! from 32 us to 524,288 us, for the stats socket and the metrics), and a
//! smoothed estimate of the recent latency ([`SmoothedLatency`]: what the
//! hedge delay is made of, [`crate::core::hedge`]).  Both cost O(1) per
//! answer and store nothing per sample.

/// Number of buckets in [`Latency`].
pub const LATENCY_BUCKETS: usize = 16;

/// A histogram of durations: a backend's forward latency (query in to
/// answer out) or heartbeat round trip.  Bucket `i` counts durations
/// shorter than `2^(i+5)` microseconds (the last bucket takes the rest),
/// so 32 us .. 524,288 us are resolved to a factor of two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    /// Durations recorded.
    pub count: u64,
    /// Their sum, in microseconds (saturating).
    pub sum_us: u64,
    /// The longest, in microseconds.
    pub max_us: u64,
    /// How many fell in each bucket.
    pub buckets: [u64; LATENCY_BUCKETS],
}

impl Latency {
    /// Count one duration.
    pub fn record(&mut self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
        let bucket = (64 - (us >> 5).leading_zeros()) as usize;
        self.buckets[bucket.min(LATENCY_BUCKETS - 1)] += 1;
    }

    /// The upper bound in microseconds of bucket `i` (`None`: unbounded).
    pub fn bucket_bound_us(i: usize) -> Option<u64> {
        (i + 1 < LATENCY_BUCKETS).then(|| 1u64 << (i + 5))
    }
}

/// A backend's recent forward latency, smoothed as TCP smooths its round
/// trip time (RFC 6298 section 2): a moving average of the latency and of
/// its deviation, each sample weighing 1/8 and 1/4.  It answers one
/// question, how long a query to this backend may go unanswered before it
/// is late (the hedge delay, [`crate::core::hedge`]): the average plus four
/// deviations, TCP's retransmission timeout.  Integer microseconds: O(1)
/// per answer, nothing stored per sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmoothedLatency {
    /// No sample yet.
    pub empty: bool,
    /// The smoothed latency (RFC 6298's SRTT), in microseconds.
    pub average_us: u64,
    /// The smoothed deviation from it (RTTVAR), in microseconds.
    pub deviation_us: u64,
}

impl SmoothedLatency {
    /// No sample yet: no hedge delay of its own.
    pub const fn new() -> Self {
        SmoothedLatency {
            empty: true,
            average_us: 0,
            deviation_us: 0,
        }
    }

    /// Take one answer's latency into the average and the deviation.
    pub fn record(&mut self, d: std::time::Duration) {
        let r = u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 8);
        let r = r.min(u64::MAX / 8);
        if self.empty {
            *self = SmoothedLatency {
                empty: false,
                average_us: r,
                deviation_us: r / 2,
            };
            return;
        }
        self.deviation_us = (3 * self.deviation_us + self.average_us.abs_diff(r)) / 4;
        self.average_us = (7 * self.average_us + r) / 8;
    }

    /// The average plus four deviations (`None` before any sample).
    pub fn late_after(&self) -> Option<std::time::Duration> {
        (!self.empty).then(|| {
            std::time::Duration::from_micros(
                self.average_us
                    .saturating_add(self.deviation_us.saturating_mul(4)),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_powers_of_two() {
        let mut l = Latency::default();
        for us in [0, 31, 32, 63, 64, 1000, 5_000_000] {
            l.record(std::time::Duration::from_micros(us));
        }
        assert_eq!(l.count, 7);
        assert_eq!(l.max_us, 5_000_000);
        assert_eq!(&l.buckets[..3], &[2, 2, 1], "<32, <64, <128");
        assert_eq!(l.buckets[5], 1, "1000 us is under 1024");
        assert_eq!(l.buckets[LATENCY_BUCKETS - 1], 1, "the rest");
        assert_eq!(Latency::bucket_bound_us(0), Some(32));
        assert_eq!(Latency::bucket_bound_us(LATENCY_BUCKETS - 1), None);
    }

    #[test]
    fn smoothed_latency_follows_rfc_6298() {
        let ms = std::time::Duration::from_millis;
        let mut s = SmoothedLatency::new();
        assert_eq!(s.late_after(), None);
        // First sample: average r, deviation r/2.
        s.record(ms(8));
        assert_eq!((s.average_us, s.deviation_us), (8000, 4000));
        assert_eq!(s.late_after(), Some(ms(24)));
        // Then 7/8 of the average and 3/4 of the deviation are kept.
        s.record(ms(16));
        assert_eq!((s.average_us, s.deviation_us), (9000, 5000));
        for _ in 0..100 {
            s.record(ms(1));
        }
        assert!(s.late_after().is_some_and(|d| d < ms(2)), "{s:?}");
    }
}
