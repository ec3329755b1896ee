//! Explicit time for the sans-IO core: callers pass `now`, nothing here reads a clock.
//!
//! `Instant` counts microseconds from an epoch the caller chooses (the simulator starts at zero, the
//! runtime at its start). It is `Copy` and totally ordered, so timer structures can key on it.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    micros: u64,
}

impl Instant {
    pub const ZERO: Instant = Instant { micros: 0 };

    pub const fn from_micros(micros: u64) -> Self {
        Instant { micros }
    }

    pub const fn from_millis(millis: u64) -> Self {
        Instant {
            micros: millis * 1000,
        }
    }

    pub const fn from_secs(secs: u64) -> Self {
        Instant {
            micros: secs * 1_000_000,
        }
    }

    pub const fn micros(self) -> u64 {
        self.micros
    }

    pub const fn millis(self) -> u64 {
        self.micros / 1000
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    fn add(self, d: Duration) -> Instant {
        Instant {
            micros: self
                .micros
                .saturating_add(d.as_micros().min(u128::from(u64::MAX)) as u64),
        }
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub for Instant {
    type Output = Duration;

    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}s",
            self.micros / 1_000_000,
            self.micros % 1_000_000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        let t = Instant::from_secs(2) + Duration::from_millis(5);
        assert_eq!(t.micros(), 2_005_000);
        assert_eq!(t - Instant::from_secs(1), Duration::from_micros(1_005_000));
        assert_eq!(Instant::ZERO - t, Duration::ZERO);
        assert_eq!(t.to_string(), "2.005000s");
    }
}
