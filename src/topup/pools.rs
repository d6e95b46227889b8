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
    let (hop, depth) = tokio::join!(
        v3_hop(chain, pool, token_in, window_secs),
        chain.balance_of(usdc, pool),
    );
    let hop = hop?;
    let quoted = chain
        .read(
            quoter,
            IQuoterV2::quoteExactInputSingleCall {
                params: IQuoterV2::QuoteExactInputSingleParams {
                    tokenIn: token_in,
                    tokenOut: usdc,
                    amountIn: amount_in,
                    fee: U24::from(hop.fee),
                    sqrtPriceLimitX96: U160::ZERO,
                },
            },
        )
        .await?
        .amountOut;
    Ok(Readings {
        quoted,
        spot_mid: hop.spot_out(amount_in).ok_or(Refusal::Overflow)?,
        twap_mid: hop.twap_out(amount_in).ok_or(Refusal::Overflow)?,
        liquidity: depth?,
    })
}

sol! {
    interface IUniswapV2Factory {
        function getPair(address tokenA, address tokenB) external view returns (address pair);
    }

    interface IUniswapV3Factory {
        function getPool(address tokenA, address tokenB, uint24 fee) external view returns (address pool);
    }

    interface IUniswapV2Cumulative {
        function price0CumulativeLast() external view returns (uint256);
        function price1CumulativeLast() external view returns (uint256);
    }

    interface IQuoterV2Path {
        function quoteExactInput(bytes path, uint256 amountIn) external returns (uint256 amountOut, uint160[] sqrtPriceX96AfterList, uint32[] initializedTicksCrossedList, uint256 gasEstimate);
    }

    interface IERC20Decimals {
        function decimals() external view returns (uint8);
    }
}

/// The v2 pair of two tokens, if the factory has one.
pub async fn v2_pair(
    chain: &Chain,
    factory: Address,
    a: Address,
    b: Address,
) -> Result<Option<Address>, PaymentError> {
    let pair = chain
        .read(
            factory,
            IUniswapV2Factory::getPairCall {
                tokenA: a,
                tokenB: b,
            },
        )
        .await?;
    Ok((pair != Address::ZERO).then_some(pair))
}

/// The v3 pool of two tokens at a fee tier, if the factory has one.
pub async fn v3_pool(
    chain: &Chain,
    factory: Address,
    a: Address,
    b: Address,
    fee: u32,
) -> Result<Option<Address>, PaymentError> {
    let pool = chain
        .read(
            factory,
            IUniswapV3Factory::getPoolCall {
                tokenA: a,
                tokenB: b,
                fee: U24::from(fee),
            },
        )
        .await?;
    Ok((pool != Address::ZERO).then_some(pool))
}

pub async fn decimals(chain: &Chain, token: Address) -> Result<u8, ReadError> {
    // An address without code answers every call with nothing: not an outage, not a token.
    if !chain.has_code(token).await? {
        return Err(Refusal::NoPool.into());
    }
    match chain
        .try_read(token, IERC20Decimals::decimalsCall {})
        .await?
    {
        Ok(d) if d <= 36 => Ok(d),
        // Not a token (or one without decimals): nothing can price it.
        _ => Err(Refusal::NoPool.into()),
    }
}

/// One v3 pool as a hop of a route: its spot and time-weighted prices, in the direction of the
/// hop.
#[derive(Clone, Copy, Debug)]
pub struct V3Hop {
    pub pool: Address,
    pub fee: u32,
    zero_for_one: bool,
    spot: U160,
    twap: U160,
}

impl V3Hop {
    pub fn spot_out(&self, amount: U256) -> Option<U256> {
        v3::mid_out(amount, self.spot, self.zero_for_one)
    }
    pub fn twap_out(&self, amount: U256) -> Option<U256> {
        v3::mid_out(amount, self.twap, self.zero_for_one)
    }
}

/// Reads a v3 pool as a hop selling `token_in`: slot0, token0, fee and the mean tick over
/// `window_secs` (refused when the oracle does not reach that far back).
pub async fn v3_hop(
    chain: &Chain,
    pool: Address,
    token_in: Address,
    window_secs: u32,
) -> Result<V3Hop, ReadError> {
    let (slot0, token0, fee, observed) = tokio::join!(
        chain.read(pool, IUniswapV3Pool::slot0Call {}),
        chain.read(pool, IUniswapV3Pool::token0Call {}),
        chain.read(pool, IUniswapV3Pool::feeCall {}),
        chain.try_read(
            pool,
            IUniswapV3Pool::observeCall {
                secondsAgos: vec![window_secs, 0],
            }
        ),
    );
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
    Ok(V3Hop {
        pool,
        fee: fee?.to::<u32>(),
        zero_for_one: token0? == token_in,
        spot: slot0?.sqrtPriceX96,
        twap: v3::sqrt_price_at_tick(tick).ok_or(Refusal::Overflow)?,
    })
}

/// Uniswap's packed path: token, fee (3 bytes), token, fee, token.
fn encode_path(tokens: &[Address], fees: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 * tokens.len() + 3 * fees.len());
    for (i, t) in tokens.iter().enumerate() {
        out.extend_from_slice(t.as_slice());
        if let Some(f) = fees.get(i) {
            out.extend_from_slice(&f.to_be_bytes()[1..]);
        }
    }
    out
}

/// Readings for `amount_in` of `token_in` sold to USDC through WETH on two v3 pools: the mid
/// prices compose hop by hop, the quoter swaps along the path, and the liquidity is the thinner
/// of the two pools (the first one's WETH valued at the second one's spot).
#[allow(clippy::too_many_arguments)]
pub async fn v3_two_hop_readings(
    chain: &Chain,
    quoter: Address,
    first: Address,
    second: Address,
    token_in: Address,
    weth: Address,
    usdc: Address,
    amount_in: U256,
    window_secs: u32,
) -> Result<(Readings, V3Hop, V3Hop), ReadError> {
    let (h1, h2) = tokio::join!(
        v3_hop(chain, first, token_in, window_secs),
        v3_hop(chain, second, weth, window_secs),
    );
    let (h1, h2) = (h1?, h2?);
    let path = encode_path(&[token_in, weth, usdc], &[h1.fee, h2.fee]);
    let (quoted, weth_depth, usdc_depth) = tokio::join!(
        chain.read(
            quoter,
            IQuoterV2Path::quoteExactInputCall {
                path: path.into(),
                amountIn: amount_in,
            },
        ),
        chain.balance_of(weth, first),
        chain.balance_of(usdc, second),
    );
    let over = || ReadError::Refused(Refusal::Overflow);
    let spot_mid = h1
        .spot_out(amount_in)
        .and_then(|w| h2.spot_out(w))
        .ok_or_else(over)?;
    let twap_mid = h1
        .twap_out(amount_in)
        .and_then(|w| h2.twap_out(w))
        .ok_or_else(over)?;
    let first_depth = h2.spot_out(weth_depth?).ok_or_else(over)?;
    Ok((
        Readings {
            quoted: quoted?.amountOut,
            spot_mid,
            twap_mid,
            liquidity: first_depth.min(usdc_depth?),
        },
        h1,
        h2,
    ))
}

/// A v2 pair's reserves and price accumulators, brought forward to `now` (the latest block's
/// time) as the pair itself would on its next update.
pub async fn v2_state(
    chain: &Chain,
    pair: Address,
) -> Result<(super::v2_oracle::PairState, Address), ReadError> {
    let (reserves, token0, c0, c1) = tokio::join!(
        chain.read(pair, IUniswapV2Pair::getReservesCall {}),
        chain.read(pair, IUniswapV2Pair::token0Call {}),
        chain.read(pair, IUniswapV2Cumulative::price0CumulativeLastCall {}),
        chain.read(pair, IUniswapV2Cumulative::price1CumulativeLastCall {}),
    );
    let r = reserves?;
    Ok((
        super::v2_oracle::PairState {
            reserve0: U256::from(r.reserve0),
            reserve1: U256::from(r.reserve1),
            last_update: u64::from(r.blockTimestampLast),
            cum0_last: c0?,
            cum1_last: c1?,
        },
        token0?,
    ))
}
