//! Finding the route a token is valued on and valuing it: Uniswap v3 pools against USDC at each
//! configured fee tier, the v2 pair against USDC, and (when no direct pool passes) two v3 hops
//! through WETH. Each candidate is read and run through the guards; the best accepted one is
//! the valuation. When none passes, the refusal reported is the deepest pool's (the one a
//! buyer would expect to be used).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use serde_json::{Value, json};

use super::config::TopupNetwork;
use super::pools::{self, ReadError};
use super::v2_oracle::{V2Oracle, twap_out};
use super::valuation::{Readings, value};
use super::{Refusal, v2};
use crate::money::UsdMicros;
use crate::payment::chain::Chain;

/// One pool of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub version: u8,
    pub pool: Address,
    /// Hundredths of a bip (v2: 3000).
    pub fee: u32,
    pub token_in: Address,
    pub token_out: Address,
}

/// An accepted valuation: what `amount` of `token` is credited, and everything it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Valuation {
    pub token: Address,
    pub decimals: u8,
    pub amount: U256,
    pub credit: UsdMicros,
    pub hops: Vec<Hop>,
    pub readings: Readings,
    pub impact_bps: u64,
    pub deviation_bps: u64,
    pub block: u64,
    pub block_time: u64,
}

impl Valuation {
    /// Micro-dollars credited per whole token, rounded down.
    pub fn rate(&self) -> U256 {
        if self.amount.is_zero() {
            return U256::ZERO;
        }
        U256::from(self.credit.get()) * U256::from(10u8).pow(U256::from(self.decimals))
            / self.amount
    }

    /// The valuation as the API and the ledger record it.
    pub fn to_json(&self, net: &TopupNetwork) -> Value {
        let r = &self.readings;
        let rate = self.rate();
        let rate_usd = match u64::try_from(rate) {
            Ok(m) => UsdMicros(m).to_string(),
            Err(_) => format!("{rate} micro-USD"),
        };
        json!({
            "network": net.network.as_str(),
            "token": format!("{:#x}", self.token),
            "decimals": self.decimals,
            "amount": self.amount.to_string(),
            "credits": self.credit.to_string(),
            "credits_micros": self.credit.get(),
            "rate": { "usd_per_token": rate_usd },
            "route": {
                "kind": if self.hops.len() > 1 { "via_weth" } else if self.hops.is_empty() { "usdc" } else { "direct" },
                "pools": self.hops.iter().map(|h| json!({
                    "version": h.version,
                    "address": format!("{:#x}", h.pool),
                    "fee": h.fee,
                    "token_in": format!("{:#x}", h.token_in),
                    "token_out": format!("{:#x}", h.token_out),
                })).collect::<Vec<_>>(),
            },
            "usdc": {
                "swap": r.quoted.to_string(),
                "spot": r.spot_mid.to_string(),
                "twap": r.twap_mid.to_string(),
                "liquidity": r.liquidity.to_string(),
            },
            "price_impact_bps": self.impact_bps,
            "twap_deviation_bps": self.deviation_bps,
            "haircut_bps": net.policy.haircut_bps,
            "twap_window_seconds": net.twap_window_secs,
            "block": self.block,
            "block_time": self.block_time,
        })
    }
}

/// Prices tokens on one network's pools.
#[derive(Debug)]
pub struct Valuer {
    pub net: TopupNetwork,
    chain: Chain,
    v2_oracle: V2Oracle,
    decimals: Mutex<HashMap<Address, u8>>,
    /// Factory answers: a pool's address never changes; "no pool" is asked again after
    /// [`NO_POOL_TTL`] (someone may create one).
    pools: Mutex<HashMap<PoolKey, (Option<Address>, Instant)>>,
}

/// (token a, token b, fee; 0 for a v2 pair).
type PoolKey = (Address, Address, u32);

const NO_POOL_TTL: Duration = Duration::from_secs(600);

/// One way to the USDC: the pools, and how to read them.
#[derive(Clone, Copy, Debug)]
enum Path {
    V3(Address, u32),
    V2(Address),
    ViaWeth(Address, Address),
}

/// How many times `cost` refines an amount before giving up (each is one full reading).
const COST_ROUNDS: usize = 5;

impl Valuer {
    pub fn new(net: TopupNetwork, chain: Chain) -> Self {
        Valuer {
            net,
            chain,
            v2_oracle: V2Oracle::default(),
            decimals: Mutex::default(),
            pools: Mutex::default(),
        }
    }

    /// The v3 pool (`fee` > 0) or v2 pair (`fee` 0) of two tokens, through the cache.
    async fn pool(&self, a: Address, b: Address, fee: u32) -> Result<Option<Address>, ReadError> {
        let key = (a.min(b), a.max(b), fee);
        if let Some((found, at)) = self.pools.lock().expect("not poisoned").get(&key)
            && (found.is_some() || at.elapsed() < NO_POOL_TTL)
        {
            return Ok(*found);
        }
        let n = &self.net;
        let found = match (fee, n.v2_factory, n.v3_factory) {
            (0, Some(f), _) => pools::v2_pair(&self.chain, f, a, b).await?,
            (fee, _, Some(f)) if fee > 0 => pools::v3_pool(&self.chain, f, a, b, fee).await?,
            _ => None,
        };
        self.pools
            .lock()
            .expect("not poisoned")
            .insert(key, (found, Instant::now()));
        Ok(found)
    }

    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    async fn decimals(&self, token: Address) -> Result<u8, ReadError> {
        if let Some(d) = self.decimals.lock().expect("not poisoned").get(&token) {
            return Ok(*d);
        }
        let d = pools::decimals(&self.chain, token).await?;
        self.decimals.lock().expect("not poisoned").insert(token, d);
        Ok(d)
    }

    /// What `amount` of `token` is credited now, or why it is refused.
    pub async fn value(&self, token: Address, amount: U256) -> Result<Valuation, ReadError> {
        if !self.net.permits(token) {
            return Err(Refusal::Denied.into());
        }
        if amount.is_zero() {
            return Err(Refusal::Worthless.into());
        }
        let (decimals, block) = tokio::join!(self.decimals(token), self.chain.latest_block());
        let (decimals, (block, block_time)) = (decimals?, block?);
        let done = |credit: U256, hops, readings, impact_bps, deviation_bps| {
            let credit = u64::try_from(credit).map_err(|_| Refusal::Overflow)?;
            Ok::<_, ReadError>(Valuation {
                token,
                decimals,
                amount,
                credit: UsdMicros(credit),
                hops,
                readings,
                impact_bps,
                deviation_bps,
                block,
                block_time,
            })
        };
        if token == self.net.usdc {
            let r = Readings {
                quoted: amount,
                spot_mid: amount,
                twap_mid: amount,
                liquidity: amount,
            };
            return done(amount, Vec::new(), r, 0, 0);
        }
        let mut best: Option<(U256, Vec<Hop>, Readings, u64, u64)> = None;
        // The refusal to report if nothing passes: the deepest candidate's.
        let mut refused: Option<(U256, Refusal)> = None;
        for two_hops in [false, true] {
            // The route through WETH is looked for only when no direct pool passes.
            let group = if two_hops {
                self.via_weth(token).await?
            } else {
                self.direct(token).await?
            };
            for path in group {
                let (hops, read) = match self.read(path, token, amount, block_time).await {
                    Ok(x) => x,
                    Err(ReadError::Refused(r)) => {
                        if refused.is_none() {
                            refused = Some((U256::ZERO, r));
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match value(&self.net.policy, &read) {
                    Ok(v) if best.as_ref().is_none_or(|b| v.credit > b.0) => {
                        best = Some((v.credit, hops, read, v.impact_bps, v.deviation_bps));
                    }
                    Ok(_) => {}
                    Err(r) => {
                        if refused
                            .as_ref()
                            .is_none_or(|(depth, _)| read.liquidity > *depth)
                        {
                            refused = Some((read.liquidity, r));
                        }
                    }
                }
            }
            if let Some((credit, hops, read, impact, deviation)) = best {
                return done(credit, hops, read, impact, deviation);
            }
        }
        Err(refused.map_or(Refusal::NoPool, |(_, r)| r).into())
    }

    /// The smallest amount of `token` found that is credited at least `credits` now, by
    /// refining an estimate on fresh readings (the valuation is monotonic in the amount).
    pub async fn cost(&self, token: Address, credits: UsdMicros) -> Result<Valuation, ReadError> {
        if credits.get() == 0 {
            return Err(Refusal::Worthless.into());
        }
        let want = U256::from(credits.get());
        let decimals = self.decimals(token).await?;
        if token == self.net.usdc {
            return self.value(token, want).await;
        }
        // A first reading at one whole token gives the rate; the estimate is corrected by
        // what the guards and the swap actually took off.
        let unit = U256::from(10u8).pow(U256::from(decimals));
        let probe = self.value(token, unit).await?;
        let mut amount = want
            .checked_mul(unit)
            .ok_or(Refusal::Overflow)?
            .div_ceil(U256::from(probe.credit.get().max(1)));
        for _ in 0..COST_ROUNDS {
            let v = self.value(token, amount).await?;
            if v.credit >= credits {
                return Ok(v);
            }
            let got = U256::from(v.credit.get().max(1));
            // Scale up by the shortfall, and a basis point more so rounding cannot stall.
            amount = amount
                .checked_mul(want)
                .ok_or(Refusal::Overflow)?
                .div_ceil(got)
                .checked_mul(U256::from(10_001u16))
                .ok_or(Refusal::Overflow)?
                / U256::from(10_000u16)
                + U256::from(1u8);
        }
        Err(Refusal::PriceImpact {
            impact_bps: 10_000,
            max_bps: self.net.policy.max_impact_bps,
        }
        .into())
    }

    /// The pools pricing `token` directly against USDC: v3 at each fee tier, the v2 pair.
    async fn direct(&self, token: Address) -> Result<Vec<Path>, ReadError> {
        let n = &self.net;
        let mut direct = Vec::new();
        if n.v3_factory.is_some() {
            for fee in &n.fee_tiers {
                if let Some(p) = self.pool(token, n.usdc, *fee).await? {
                    direct.push(Path::V3(p, *fee));
                }
            }
        }
        if let Some(pair) = self.pool(token, n.usdc, 0).await? {
            direct.push(Path::V2(pair));
        }
        Ok(direct)
    }

    /// The two-hop route through WETH: the deepest v3 pool of each hop.
    async fn via_weth(&self, token: Address) -> Result<Vec<Path>, ReadError> {
        let n = &self.net;
        if n.v3_factory.is_none() || token == n.weth {
            return Ok(Vec::new());
        }
        let first = self.deepest(token, n.weth, n.weth).await?;
        let second = self.deepest(n.weth, n.usdc, n.usdc).await?;
        Ok(match (first, second) {
            (Some(a), Some(b)) => vec![Path::ViaWeth(a, b)],
            _ => Vec::new(),
        })
    }

    /// The v3 pool of `a`/`b` holding the most of `measure`, over the configured fee tiers.
    async fn deepest(
        &self,
        a: Address,
        b: Address,
        measure: Address,
    ) -> Result<Option<Address>, ReadError> {
        let mut best: Option<(U256, Address)> = None;
        for fee in &self.net.fee_tiers {
            if let Some(p) = self.pool(a, b, *fee).await? {
                let depth = self.chain.balance_of(measure, p).await?;
                if best.is_none_or(|(d, _)| depth > d) {
                    best = Some((depth, p));
                }
            }
        }
        Ok(best.map(|(_, p)| p))
    }

    async fn read(
        &self,
        path: Path,
        token: Address,
        amount: U256,
        now: u64,
    ) -> Result<(Vec<Hop>, Readings), ReadError> {
        let n = &self.net;
        let window = n.twap_window_secs;
        let hop = |version, pool, fee, token_in, token_out| Hop {
            version,
            pool,
            fee,
            token_in,
            token_out,
        };
        match path {
            Path::V3(pool, fee) => {
                let quoter = n.quoter.ok_or(Refusal::NoPool)?;
                let r =
                    pools::v3_readings(&self.chain, pool, quoter, token, n.usdc, amount, window)
                        .await?;
                Ok((vec![hop(3, pool, fee, token, n.usdc)], r))
            }
            Path::ViaWeth(first, second) => {
                let quoter = n.quoter.ok_or(Refusal::NoPool)?;
                let (r, h1, h2) = pools::v3_two_hop_readings(
                    &self.chain,
                    quoter,
                    first,
                    second,
                    token,
                    n.weth,
                    n.usdc,
                    amount,
                    window,
                )
                .await?;
                Ok((
                    vec![
                        hop(3, first, h1.fee, token, n.weth),
                        hop(3, second, h2.fee, n.weth, n.usdc),
                    ],
                    r,
                ))
            }
            Path::V2(pair) => {
                let (state, token0) = pools::v2_state(&self.chain, pair).await?;
                let zero_for_one = token0 == token;
                let (rin, rout) = if zero_for_one {
                    (state.reserve0, state.reserve1)
                } else {
                    (state.reserve1, state.reserve0)
                };
                // The cheapest guard first: a pair too thin to matter is refused as such, not
                // for the TWAP it has no history for yet.
                if rout < n.policy.min_liquidity {
                    return Err(Refusal::ThinLiquidity {
                        have: rout.to_string(),
                        need: n.policy.min_liquidity.to_string(),
                    }
                    .into());
                }
                let snap = state.at(now).ok_or(Refusal::NoPool)?;
                let then = self.v2_oracle.observe(pair, snap, window).map_err(|have| {
                    Refusal::ShortHistory {
                        have_secs: have,
                        need_secs: u64::from(window),
                    }
                })?;
                let r = Readings {
                    quoted: v2::amount_out(amount, rin, rout).ok_or(Refusal::NoPool)?,
                    spot_mid: v2::mid_out(amount, rin, rout).ok_or(Refusal::Overflow)?,
                    twap_mid: twap_out(amount, then, snap, zero_for_one)
                        .ok_or(Refusal::Overflow)?,
                    liquidity: rout,
                };
                Ok((vec![hop(2, pair, 3000, token, n.usdc)], r))
            }
        }
    }

    /// Refuses a credit outside the per-top-up limits.
    pub fn check_size(&self, credit: UsdMicros) -> Result<(), Refusal> {
        let n = &self.net;
        if credit > n.max_per_topup {
            return Err(Refusal::AboveCap {
                have: credit.to_string(),
                max: n.max_per_topup.to_string(),
            });
        }
        if credit < n.min_per_topup {
            return Err(Refusal::BelowMinimum {
                have: credit.to_string(),
                min: n.min_per_topup.to_string(),
            });
        }
        Ok(())
    }
}
