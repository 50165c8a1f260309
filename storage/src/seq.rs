//! `_seq`: a Snowflake-style id. The high 41 bits are milliseconds since
//! [`SEQ_EPOCH_MS`], the low 22 bits a counter. The allocator never hands out a value
//! at or below one it handed out before, even across restarts (the high-water mark is
//! persisted with every write) and when the wall clock steps back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// 2024-01-01T00:00:00Z in Unix milliseconds.
pub const SEQ_EPOCH_MS: u64 = 1_704_067_200_000;
const COUNTER_BITS: u32 = 22;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    /// Unix milliseconds at which this seq was allocated.
    pub fn unix_millis(self) -> u64 {
        (self.0 >> COUNTER_BITS) + SEQ_EPOCH_MS
    }

    /// The smallest seq that can be allocated at `unix_ms`.
    pub fn floor_at_millis(unix_ms: u64) -> Seq {
        Seq(unix_ms.saturating_sub(SEQ_EPOCH_MS) << COUNTER_BITS)
    }

    pub fn as_i64(self) -> i64 {
        self.0 as i64
    }

    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

pub fn now_millis() -> u64 {
    now_micros() / 1000
}

pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Hands out strictly increasing [`Seq`]s.
#[derive(Debug)]
pub struct SeqAllocator {
    last: AtomicU64,
}

impl SeqAllocator {
    /// `high_water` is the largest seq ever persisted.
    pub fn new(high_water: Seq) -> Self {
        Self {
            last: AtomicU64::new(high_water.0),
        }
    }

    pub fn next(&self) -> Seq {
        let floor = Seq::floor_at_millis(now_millis()).0;
        let mut cur = self.last.load(Ordering::Relaxed);
        loop {
            let next = floor.max(cur + 1);
            match self
                .last
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Seq(next),
                Err(actual) => cur = actual,
            }
        }
    }

    pub fn last(&self) -> Seq {
        Seq(self.last.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_and_time_ordered() {
        let a = SeqAllocator::new(Seq::ZERO);
        let mut prev = a.next();
        for _ in 0..100_000 {
            let s = a.next();
            assert!(s > prev);
            prev = s;
        }
        let ms = prev.unix_millis();
        assert!(ms.abs_diff(now_millis()) < 5_000);
    }

    #[test]
    fn never_goes_back_below_high_water_mark() {
        // a high-water mark from "the future" (the clock stepped back since)
        let future = Seq::floor_at_millis(now_millis() + 3_600_000);
        let a = SeqAllocator::new(future);
        assert!(a.next() > future);
    }
}
