//! A token bucket: at most `per_minute` events a minute, with bursts up to the same number.
//! Used to bound anonymous account creation: each account is a durable row, so an unbounded
//! `POST /accounts` would let anyone grow the database at will.

use std::sync::Mutex;
use std::time::Duration;

use crate::time::{Clock, UnixMillis};

pub struct TokenBucket {
    per_minute: u32,
    clock: Clock,
    /// (credit, last refill). Credit is counted in 1/60000 of a token so that refilling
    /// `per_minute` tokens a minute adds exactly `per_minute` units a millisecond: integers only.
    state: Mutex<(u64, UnixMillis)>,
}

const UNITS_PER_TOKEN: u64 = 60_000;

impl TokenBucket {
    pub fn per_minute(per_minute: u32, clock: Clock) -> Self {
        let now = clock.now();
        TokenBucket {
            per_minute,
            clock,
            state: Mutex::new((u64::from(per_minute) * UNITS_PER_TOKEN, now)),
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&self) -> Result<(), Duration> {
        let rate = u64::from(self.per_minute);
        if rate == 0 {
            return Err(Duration::from_secs(60));
        }
        let now = self.clock.now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (credit, last) = *state;
        let refill = now.0.saturating_sub(last.0).saturating_mul(rate);
        let credit = credit.saturating_add(refill).min(rate * UNITS_PER_TOKEN);
        if credit >= UNITS_PER_TOKEN {
            *state = (credit - UNITS_PER_TOKEN, now);
            Ok(())
        } else {
            *state = (credit, now);
            Err(Duration::from_millis(
                (UNITS_PER_TOKEN - credit).div_ceil(rate),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_up_to_the_rate_then_refills_over_time() {
        let clock = Clock::manual(UnixMillis(1_000_000));
        let b = TokenBucket::per_minute(3, clock.clone());
        assert!(b.take().is_ok() && b.take().is_ok() && b.take().is_ok());
        let wait = b.take().unwrap_err();
        assert_eq!(
            wait,
            Duration::from_secs(20),
            "one token every 20 s at 3/min"
        );
        clock.advance_ms(20_000);
        assert!(b.take().is_ok());
        assert!(b.take().is_err());
        assert!(
            TokenBucket::per_minute(0, clock).take().is_err(),
            "0 disables"
        );
    }
}
