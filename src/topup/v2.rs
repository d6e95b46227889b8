//! Uniswap v2's constant-product output, exactly as `UniswapV2Library.getAmountOut` computes it
//! (the 0.3% fee as 997/1000, integer division rounding down), over U256. `uniswap-v2-sdk` pins
//! an older sdk-core, so the formula is written here and cross-checked against the real router.

use alloy::primitives::U256;

/// What `amount_in` of the input token buys from a pair holding `reserve_in` / `reserve_out`
/// (after the 0.3% fee). `None`: an empty pool, a zero amount, or an overflow.
pub fn amount_out(amount_in: U256, reserve_in: U256, reserve_out: U256) -> Option<U256> {
    if amount_in.is_zero() || reserve_in.is_zero() || reserve_out.is_zero() {
        return None;
    }
    let with_fee = amount_in.checked_mul(U256::from(997u16))?;
    let numerator = with_fee.checked_mul(reserve_out)?;
    let denominator = reserve_in
        .checked_mul(U256::from(1000u16))?
        .checked_add(with_fee)?;
    Some(numerator / denominator)
}

/// The same amount at the pool's mid price, with neither fee nor impact (the reference a price
/// impact is measured against), rounded down.
pub fn mid_out(amount_in: U256, reserve_in: U256, reserve_out: U256) -> Option<U256> {
    if reserve_in.is_zero() {
        return None;
    }
    Some(amount_in.checked_mul(reserve_out)? / reserve_in)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_router_formula() {
        // 1 token (18 decimals) into a 1000 token / 2000 USDC pool: 1.992013 USDC after the fee.
        let out = amount_out(
            U256::from(10u64.pow(18)),
            U256::from(1000u64) * U256::from(10u64.pow(18)),
            U256::from(2000u64) * U256::from(10u64.pow(6)),
        )
        .unwrap();
        assert_eq!(out, U256::from(1_992_013u64));
        assert_eq!(
            amount_out(U256::ZERO, U256::from(1u8), U256::from(1u8)),
            None
        );
        assert_eq!(
            amount_out(U256::from(1u8), U256::ZERO, U256::from(1u8)),
            None
        );
        assert_eq!(
            amount_out(U256::MAX, U256::from(1u8), U256::from(2u8)),
            None,
            "overflow"
        );
    }

    fn u(x: u128) -> U256 {
        U256::from(x)
    }

    proptest! {
        /// Never more than the mid price gives, never the whole reserve, and more in never buys
        /// less out; over the whole range a v2 pair can hold (reserves are uint112).
        #[test]
        fn output_is_bounded_and_monotonic(a in 1u128..1 << 112, b in 1u128..1 << 112, rin in 1u128..1 << 112, rout in 1u128..1 << 112) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let out_lo = amount_out(u(lo), u(rin), u(rout)).unwrap();
            let out_hi = amount_out(u(hi), u(rin), u(rout)).unwrap();
            prop_assert!(out_lo <= out_hi);
            prop_assert!(out_hi < u(rout));
            prop_assert!(out_hi <= mid_out(u(hi), u(rin), u(rout)).unwrap());
        }
    }
}
