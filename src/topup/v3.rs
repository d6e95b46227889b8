//! Uniswap v3 prices for valuation, with `uniswap-v3-sdk`'s exact tick math and full-precision
//! `mul_div`: the spot (from `slot0.sqrtPriceX96`) and the time-weighted price (the mean tick of
//! `observe`), each turned into what an amount is worth at that price. What a swap would really
//! return (crossing ticks) is the pool's own quoter's answer, not recomputed here.

use alloy::primitives::aliases::I24;
use alloy::primitives::{U160, U256};
use uniswap_v3_sdk::prelude::{get_sqrt_ratio_at_tick, mul_div};

const Q96: U256 = U256::from_limbs([0, 1 << 32, 0, 0]);

/// `amount_in` of one token of the pool at the price `sqrt_price_x96` (Q64.96 of
/// token1/token0), in the other token's base units, rounded down. `zero_for_one`: the amount is
/// token0's. `None` on overflow or a zero price.
pub fn mid_out(amount_in: U256, sqrt_price_x96: U160, zero_for_one: bool) -> Option<U256> {
    let p = U256::from(sqrt_price_x96);
    if p.is_zero() {
        return None;
    }
    // Two full-precision steps (amount · p² / 2^192 would overflow 256 bits in one).
    if zero_for_one {
        let x = mul_div(amount_in, p, Q96).ok()?;
        mul_div(x, p, Q96).ok()
    } else {
        let x = mul_div(amount_in, Q96, p).ok()?;
        mul_div(x, Q96, p).ok()
    }
}

/// The sqrt price at a (mean) tick.
pub fn sqrt_price_at_tick(tick: i32) -> Option<U160> {
    get_sqrt_ratio_at_tick(I24::try_from(tick).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_from_the_sqrt_price_and_from_ticks() {
        // Tick 0 is price 1: sqrt price 2^96.
        assert_eq!(sqrt_price_at_tick(0), Some(U160::from(1u128 << 96)));
        let one = U256::from(10u64).pow(U256::from(18u8));
        assert_eq!(
            mid_out(one, sqrt_price_at_tick(0).unwrap(), true),
            Some(one)
        );
        // WETH (token1, 18 dec) / USDC (token0, 6 dec) at 3000 USDC per WETH: price of token1
        // in token0 units is 3000e6/1e18, so token1/token0 = 1e18/3000e6 and
        // sqrtP = sqrt(1e12/3000) · 2^96.
        let sqrt_p: U160 = "1446501726624926496477173928747177".parse().unwrap(); // ≈ 18257.4 · 2^96
        let usdc = mid_out(one, sqrt_p, false).unwrap();
        let diff = usdc.abs_diff(U256::from(3_000_000_000u64));
        assert!(
            diff < U256::from(1_000u64),
            "1 WETH ≈ 3000 USDC, got {usdc}"
        );
        // And back: 3000 USDC buy about 1 WETH.
        let weth = mid_out(U256::from(3_000_000_000u64), sqrt_p, true).unwrap();
        assert!(
            weth.abs_diff(one) < U256::from(10u64).pow(U256::from(12u8)),
            "{weth}"
        );
        // A higher tick means more token1 per token0.
        let (lo, hi) = (
            sqrt_price_at_tick(-100).unwrap(),
            sqrt_price_at_tick(100).unwrap(),
        );
        assert!(mid_out(one, lo, true).unwrap() < mid_out(one, hi, true).unwrap());
        assert_eq!(sqrt_price_at_tick(887_273), None, "beyond the maximum tick");
        assert_eq!(mid_out(one, U160::ZERO, true), None);
    }
}
