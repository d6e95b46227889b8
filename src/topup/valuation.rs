//! From pool readings to credits: the guards every top-up passes, and the value it is credited
//! at. Pure and exact.
//!
//! The readings are amounts of USDC (base units) for the amount offered:
//! - `quoted`: what a swap of that amount would really return now (fees and price impact
//!   included), from the pools' current state;
//! - `spot_mid`: the same at the current mid price (no fee, no impact);
//! - `twap_mid`: the same at the time-weighted mean price over the policy's window.
//!
//! The credit is the lower of the spot and the TWAP valuations (the TWAP one carrying the same
//! impact as the swap would), less the haircut, rounded down; refused when the pool is thinner
//! than the minimum, the impact too high, or the spot too far from the TWAP (a price pushed
//! within the window: the manipulation the TWAP exists to catch).

use alloy::primitives::U256;

use super::Refusal;

/// The operator's limits for one network (basis points: 1/10,000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// USDC base units the pool route must hold, at least.
    pub min_liquidity: U256,
    pub max_impact_bps: u64,
    pub max_deviation_bps: u64,
    pub haircut_bps: u64,
}

/// What the pools say about the amount offered (USDC base units).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readings {
    pub quoted: U256,
    pub spot_mid: U256,
    pub twap_mid: U256,
    /// The USDC side of the thinnest pool on the route.
    pub liquidity: U256,
}

/// The valuation of an accepted top-up, with what it was derived from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Valued {
    /// USDC base units credited.
    pub credit: U256,
    pub impact_bps: u64,
    pub deviation_bps: u64,
}

const BPS: u64 = 10_000;

/// `|a - b| / reference` in basis points, rounded up (a limit is never passed by rounding).
fn bps_apart(a: U256, b: U256, reference: U256) -> Option<u64> {
    if reference.is_zero() {
        return None;
    }
    let diff = if a > b { a - b } else { b - a };
    let scaled = diff.checked_mul(U256::from(BPS))?;
    let q = scaled.div_ceil(reference);
    Some(q.try_into().unwrap_or(u64::MAX))
}

/// Applies the guards and values the amount. Never returns more than `quoted` or than the TWAP
/// valuation.
pub fn value(p: &Policy, r: &Readings) -> Result<Valued, Refusal> {
    if r.liquidity < p.min_liquidity {
        return Err(Refusal::ThinLiquidity {
            have: r.liquidity.to_string(),
            need: p.min_liquidity.to_string(),
        });
    }
    if r.spot_mid.is_zero() || r.twap_mid.is_zero() {
        return Err(Refusal::Worthless);
    }
    let impact_bps = if r.quoted >= r.spot_mid {
        0
    } else {
        bps_apart(r.spot_mid, r.quoted, r.spot_mid).ok_or(Refusal::Overflow)?
    };
    if impact_bps > p.max_impact_bps {
        return Err(Refusal::PriceImpact {
            impact_bps,
            max_bps: p.max_impact_bps,
        });
    }
    let deviation_bps = bps_apart(r.spot_mid, r.twap_mid, r.twap_mid).ok_or(Refusal::Overflow)?;
    if deviation_bps > p.max_deviation_bps {
        return Err(Refusal::SpotDeviation {
            deviation_bps,
            max_bps: p.max_deviation_bps,
        });
    }
    // The TWAP valuation with the same fee and impact the swap would have.
    let twap_quoted = r.twap_mid.checked_mul(r.quoted).ok_or(Refusal::Overflow)? / r.spot_mid;
    let lower = r.quoted.min(twap_quoted);
    let credit = lower
        .checked_mul(U256::from(BPS - p.haircut_bps.min(BPS)))
        .ok_or(Refusal::Overflow)?
        / U256::from(BPS);
    if credit.is_zero() {
        return Err(Refusal::Worthless);
    }
    Ok(Valued {
        credit,
        impact_bps,
        deviation_bps,
    })
}

/// The arithmetic mean tick over a window, from two `observe` cumulatives, rounded toward
/// negative infinity as Uniswap's `OracleLibrary.consult` does.
pub fn mean_tick(
    tick_cumulative_then: i64,
    tick_cumulative_now: i64,
    window_secs: u32,
) -> Option<i32> {
    if window_secs == 0 {
        return None;
    }
    let delta = tick_cumulative_now.checked_sub(tick_cumulative_then)?;
    let w = i64::from(window_secs);
    let mut mean = delta / w;
    if delta < 0 && delta % w != 0 {
        mean -= 1;
    }
    i32::try_from(mean).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> Policy {
        Policy {
            min_liquidity: U256::from(10_000_000_000u64), // $10,000
            max_impact_bps: 200,
            max_deviation_bps: 300,
            haircut_bps: 100,
        }
    }

    fn u(x: u64) -> U256 {
        U256::from(x)
    }

    #[test]
    fn each_guard_refuses_with_its_reason() {
        let ok = Readings {
            quoted: u(1_990_000),
            spot_mid: u(2_000_000),
            twap_mid: u(2_010_000),
            liquidity: u(2_000_000_000_000),
        };
        let v = value(&policy(), &ok).unwrap();
        // min(1.99, 2.01 × 1.99/2.00) = 1.99 USDC, less 1%: 1.9701 USDC, rounded down.
        assert_eq!(v.credit, u(1_970_100));
        assert_eq!((v.impact_bps, v.deviation_bps), (50, 50));
        // Spot above the TWAP: the TWAP value (with the same impact) is the lower one.
        let pushed = Readings {
            quoted: u(2_090_000),
            spot_mid: u(2_100_000),
            twap_mid: u(2_050_000),
            ..ok
        };
        let v = value(&policy(), &pushed).unwrap();
        assert_eq!(v.credit, u(2_050_000 * 2_090_000 / 2_100_000 * 99 / 100));
        let code = |r: Readings| value(&policy(), &r).unwrap_err().code();
        assert_eq!(
            code(Readings {
                liquidity: u(9_999_999_999),
                ..ok
            }),
            "topup_liquidity_too_low"
        );
        assert_eq!(
            code(Readings {
                quoted: u(1_959_999),
                ..ok
            }),
            "topup_price_impact_too_high"
        );
        assert_eq!(
            code(Readings {
                twap_mid: u(1_900_000),
                ..ok
            }),
            "topup_spot_deviates_from_twap"
        );
        assert_eq!(
            code(Readings {
                quoted: u(1),
                spot_mid: u(1),
                twap_mid: u(1),
                ..ok
            }),
            "topup_amount_too_small"
        );
        // Exactly at a limit passes; one base unit beyond does not.
        assert!(
            value(
                &policy(),
                &Readings {
                    quoted: u(1_960_000),
                    ..ok
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn mean_ticks_round_toward_negative_infinity() {
        assert_eq!(mean_tick(0, 1800 * 100, 1800), Some(100));
        assert_eq!(mean_tick(0, -1800 * 100, 1800), Some(-100));
        assert_eq!(mean_tick(0, -1801, 1800), Some(-2));
        assert_eq!(mean_tick(0, 1801, 1800), Some(1));
        assert_eq!(mean_tick(0, 1, 0), None);
    }

    proptest! {
        /// Whatever the readings, an accepted credit never exceeds the swap's output nor the TWAP
        /// valuation, and it never panics.
        #[test]
        fn the_credit_is_never_above_either_valuation(q in 0u64..u64::MAX, s in 0u64..u64::MAX, t in 0u64..u64::MAX, l in 0u64..u64::MAX, haircut in 0u64..20_000) {
            let p = Policy { min_liquidity: U256::ZERO, max_impact_bps: u64::MAX, max_deviation_bps: u64::MAX, haircut_bps: haircut };
            let r = Readings { quoted: u(q), spot_mid: u(s), twap_mid: u(t), liquidity: u(l) };
            if let Ok(v) = value(&p, &r) {
                prop_assert!(v.credit <= u(q));
                prop_assert!(v.credit <= u(t) * u(q) / u(s));
            }
        }
    }
}
