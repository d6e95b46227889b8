//! A time-weighted price for Uniswap v2 pairs. A v2 pair keeps only running price accumulators
//! (`price{0,1}CumulativeLast`, UQ112x112 × seconds); a TWAP needs two of them taken a window
//! apart, so Tariff keeps its own snapshots of each pair it values and prices a v2 route only
//! once it has watched the pair for the whole window (until then: `topup_twap_window_too_long`).
//! The snapshots live in this process: a fresh instance watches again before it trusts a v2
//! pair.

use std::collections::HashMap;
use std::sync::Mutex;

use alloy::primitives::{Address, U256};
use uniswap_v3_sdk::prelude::mul_div;

/// A pair's reserves and accumulators as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairState {
    pub reserve0: U256,
    pub reserve1: U256,
    /// `blockTimestampLast` (the pair's last update).
    pub last_update: u64,
    pub cum0_last: U256,
    pub cum1_last: U256,
}

/// The accumulators at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snap {
    pub at: u64,
    pub cum0: U256,
    pub cum1: U256,
}

const Q112: U256 = U256::from_limbs([0, 1 << 48, 0, 0]);

impl PairState {
    /// The accumulators at `now`, as `UniswapV2Pair._update` would write them: the current
    /// price (UQ112x112) times the seconds since the last update, added with wrap-around.
    pub fn at(&self, now: u64) -> Option<Snap> {
        if self.reserve0.is_zero() || self.reserve1.is_zero() {
            return None;
        }
        let dt = U256::from(now.saturating_sub(self.last_update) as u32);
        let price0: U256 = (self.reserve1 << 112usize) / self.reserve0;
        let price1: U256 = (self.reserve0 << 112usize) / self.reserve1;
        Some(Snap {
            at: now,
            cum0: self.cum0_last.wrapping_add(price0.wrapping_mul(dt)),
            cum1: self.cum1_last.wrapping_add(price1.wrapping_mul(dt)),
        })
    }
}

/// What `amount_in` is worth at the mean price between two snapshots (token0 sold when
/// `zero_for_one`), rounded down. `None` if no time passed or on overflow.
pub fn twap_out(amount_in: U256, then: Snap, now: Snap, zero_for_one: bool) -> Option<U256> {
    let dt = now.at.checked_sub(then.at).filter(|d| *d > 0)?;
    let delta = if zero_for_one {
        now.cum0.wrapping_sub(then.cum0)
    } else {
        now.cum1.wrapping_sub(then.cum1)
    };
    let mean = delta / U256::from(dt);
    mul_div(amount_in, mean, Q112).ok()
}

/// Snapshots kept per pair, at most.
const MAX_SNAPS: usize = 64;
/// Snapshots closer together than this are not kept (a burst of quotes adds one).
const MIN_SPACING_SECS: u64 = 10;

#[derive(Debug, Default)]
pub struct V2Oracle {
    snaps: Mutex<HashMap<Address, Vec<Snap>>>,
}

impl V2Oracle {
    /// Records `now` for `pair` and returns the newest snapshot at least `window` old; without
    /// one, `Err` with how many seconds the snapshots do cover.
    pub fn observe(&self, pair: Address, now: Snap, window: u32) -> Result<Snap, u64> {
        let mut all = self.snaps.lock().expect("not poisoned");
        let snaps = all.entry(pair).or_default();
        if snaps
            .last()
            .is_none_or(|last| now.at >= last.at + MIN_SPACING_SECS)
        {
            snaps.push(now);
        }
        let window = u64::from(window);
        let usable = snaps
            .iter()
            .rposition(|s| now.at.saturating_sub(s.at) >= window);
        match usable {
            Some(i) => {
                // Older ones are never needed again.
                snaps.drain(..i);
                if snaps.len() > MAX_SNAPS {
                    let excess = snaps.len() - MAX_SNAPS;
                    snaps.drain(1..=excess);
                }
                Ok(snaps[0])
            }
            None => {
                let covered = snaps.first().map_or(0, |s| now.at.saturating_sub(s.at));
                if snaps.len() > MAX_SNAPS {
                    // Keep the oldest (it is what will first reach the window).
                    let excess = snaps.len() - MAX_SNAPS;
                    snaps.drain(1..=excess);
                }
                Err(covered)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(r0: u64, r1: u64, last: u64) -> PairState {
        PairState {
            reserve0: U256::from(r0),
            reserve1: U256::from(r1),
            last_update: last,
            cum0_last: U256::ZERO,
            cum1_last: U256::ZERO,
        }
    }

    #[test]
    fn a_steady_price_averages_to_itself() {
        // 1 token0 = 2 token1 for 600 s.
        let p = pair(1_000_000, 2_000_000, 100);
        let (then, now) = (p.at(100).unwrap(), p.at(700).unwrap());
        assert_eq!(
            twap_out(U256::from(1_000u64), then, now, true),
            Some(U256::from(2_000u64))
        );
        assert_eq!(
            twap_out(U256::from(1_000u64), then, now, false),
            Some(U256::from(500u64))
        );
        assert_eq!(twap_out(U256::from(1u8), now, now, true), None);
    }

    #[test]
    fn accumulators_wrap_like_the_pair() {
        let mut p = pair(1, 3, 0);
        p.cum0_last = U256::MAX - U256::from(5u8);
        let then = p.at(0).unwrap();
        let now = p.at(10).unwrap();
        assert!(now.cum0 < then.cum0, "wrapped");
        assert_eq!(
            twap_out(U256::from(10u8), then, now, true),
            Some(U256::from(30u8))
        );
    }

    #[test]
    fn the_oracle_answers_only_once_it_has_watched_the_window() {
        let o = V2Oracle::default();
        let a = Address::repeat_byte(1);
        let s = |at| Snap {
            at,
            cum0: U256::from(at),
            cum1: U256::ZERO,
        };
        assert_eq!(o.observe(a, s(1_000), 600), Err(0));
        assert_eq!(o.observe(a, s(1_300), 600), Err(300));
        assert_eq!(o.observe(a, s(1_600), 600), Ok(s(1_000)));
        assert_eq!(
            o.observe(a, s(1_950), 600),
            Ok(s(1_300)),
            "the newest old enough"
        );
        assert_eq!(
            o.observe(Address::repeat_byte(2), s(5_000), 600),
            Err(0),
            "per pair"
        );
    }
}
