//! Reading Uniswap pools over RPC into valuation [`Readings`]: a v3 pool's spot (`slot0`), its
//! time-weighted price (`observe`), what a swap of the amount would really return (the pool's
//! QuoterV2, which crosses ticks exactly as a swap does) and the USDC it holds.

use alloy::primitives::aliases::U24;
use alloy::primitives::{Address, U160, U256};
use alloy::sol;

use super::valuation::{Readings, mean_tick};
use super::{Refusal, v2, v3};
use crate::payment::PaymentError;
use crate::payment::chain::Chain;

sol! {
    interface IUniswapV2Pair {
        function getReserves() external view returns (uint112 reserve0, uint112 reserve1, uint32 blockTimestampLast);
        function token0() external view returns (address);
    }

    interface IUniswapV3Pool {
        function slot0() external view returns (uint160 sqrtPriceX96, int24 tick, uint16 observationIndex, uint16 observationCardinality, uint16 observationCardinalityNext, uint8 feeProtocol, bool unlocked);
        function observe(uint32[] secondsAgos) external view returns (int56[] tickCumulatives, uint160[] secondsPerLiquidityCumulativeX128s);
        function token0() external view returns (address);
        function fee() external view returns (uint24);
    }

    interface IQuoterV2 {
        struct QuoteExactInputSingleParams {
            address tokenIn;
            address tokenOut;
            uint256 amountIn;
            uint24 fee;
            uint160 sqrtPriceLimitX96;
        }
        function quoteExactInputSingle(QuoteExactInputSingleParams params) external returns (uint256 amountOut, uint160 sqrtPriceX96After, uint32 initializedTicksCrossed, uint256 gasEstimate);
    }
}

/// A read failed: the node is down, or the address is not such a pool.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Chain(#[from] PaymentError),
}

/// What `amount_in` of `token_in` buys from a v2 pair, by the router's formula on the pair's
/// current reserves, with the pair's mid price (for the price impact).
pub async fn v2_out(
    chain: &Chain,
    pair: Address,
    token_in: Address,
    amount_in: U256,
) -> Result<(U256, U256), ReadError> {
    let (reserves, token0) = tokio::join!(
        chain.read(pair, IUniswapV2Pair::getReservesCall {}),
        chain.read(pair, IUniswapV2Pair::token0Call {}),
    );
    let r = reserves?;
    let (r0, r1) = (U256::from(r.reserve0), U256::from(r.reserve1));
    let (rin, rout) = if token0? == token_in {
        (r0, r1)
    } else {
        (r1, r0)
    };
    let out = v2::amount_out(amount_in, rin, rout).ok_or(Refusal::NoPool)?;
    let mid = v2::mid_out(amount_in, rin, rout).ok_or(Refusal::NoPool)?;
    Ok((out, mid))
}

/// A v3 pool's readings for `amount_in` of `token_in` against USDC (the pool's other token):
/// spot and TWAP over `window_secs` at the mid price, the quoter's exact swap output, and the
/// USDC the pool holds. A pool whose observations do not reach back `window_secs` is refused.
pub async fn v3_readings(
    chain: &Chain,
    pool: Address,
    quoter: Address,
    token_in: Address,
    usdc: Address,
    amount_in: U256,
    window_secs: u32,
) -> Result<Readings, ReadError> {
    let (slot0, token0, fee, observed, depth) = tokio::join!(
        chain.read(pool, IUniswapV3Pool::slot0Call {}),
        chain.read(pool, IUniswapV3Pool::token0Call {}),
        chain.read(pool, IUniswapV3Pool::feeCall {}),
        chain.try_read(
            pool,
            IUniswapV3Pool::observeCall {
                secondsAgos: vec![window_secs, 0],
            }
        ),
        chain.balance_of(usdc, pool),
    );
    let zero_for_one = token0? == token_in;
    let spot_mid =
        v3::mid_out(amount_in, slot0?.sqrtPriceX96, zero_for_one).ok_or(Refusal::Overflow)?;
    // `observe` reverts ("OLD") when the oracle does not reach that far back; an outage is an
    // outage.
    let observed = observed?.map_err(|_| Refusal::ShortHistory {
        have_secs: 0,
        need_secs: u64::from(window_secs),
    })?;
    let cum = &observed.tickCumulatives;
    let (then, now) = (
        i64::try_from(cum[0]).map_err(|_| Refusal::Overflow)?,
        i64::try_from(cum[1]).map_err(|_| Refusal::Overflow)?,
    );
    let tick = mean_tick(then, now, window_secs).ok_or(Refusal::Overflow)?;
    let twap_sqrt = v3::sqrt_price_at_tick(tick).ok_or(Refusal::Overflow)?;
    let twap_mid = v3::mid_out(amount_in, twap_sqrt, zero_for_one).ok_or(Refusal::Overflow)?;
    let quoted = chain
        .read(
            quoter,
            IQuoterV2::quoteExactInputSingleCall {
                params: IQuoterV2::QuoteExactInputSingleParams {
                    tokenIn: token_in,
                    tokenOut: usdc,
                    amountIn: amount_in,
                    fee: U24::from(fee?),
                    sqrtPriceLimitX96: U160::ZERO,
                },
            },
        )
        .await?
        .amountOut;
    Ok(Readings {
        quoted,
        spot_mid,
        twap_mid,
        liquidity: depth?,
    })
}
