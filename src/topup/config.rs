//! What the operator configures per network for top-ups (`[[topup]]` in the config file), with
//! defaults for Base and Base Sepolia: Uniswap's published deployments, USDC and WETH, and
//! conservative limits.

use alloy::primitives::{Address, U256};
use serde::Deserialize;

use super::valuation::Policy;
use crate::money::UsdMicros;
use crate::pricing::expr::parse_usd;
use crate::x402::Network;
use crate::x402::assets::usdc_for;

/// One network's top-up settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopupNetwork {
    pub network: Network,
    pub chain_id: u64,
    /// Where top-ups are paid (x402) or sent (plain transfers).
    pub treasury: Address,
    pub usdc: Address,
    pub weth: Address,
    pub v2_factory: Option<Address>,
    pub v3_factory: Option<Address>,
    /// Uniswap's QuoterV2: required with a v3 factory (it prices a swap exactly as the pool
    /// would execute it, across ticks).
    pub quoter: Option<Address>,
    pub fee_tiers: Vec<u32>,
    pub policy: Policy,
    pub twap_window_secs: u32,
    pub confirmations: u64,
    pub max_per_topup: UsdMicros,
    pub min_per_topup: UsdMicros,
    pub max_per_account_day: UsdMicros,
    pub tokens: TokenList,
    /// Tokens the 402 of `POST /top-up` offers besides USDC (an allowlist offers its tokens).
    pub offer: Vec<Address>,
    /// How long a top-up quote (its token amounts) holds.
    pub quote_ttl_secs: u64,
    /// Valuations this instance runs per minute (each is a dozen RPC reads): quotes, 402s
    /// and transfers beyond it get 429.
    pub valuations_per_minute: u32,
}

/// Which tokens may top up (USDC always may).
///
/// A token's own contract says what its `Transfer` events and balances are: a hostile token
/// with a pool the attacker funded (and keeps) could report arrivals that never happened. So
/// the default accepts only the tokens the operator listed (`allow`, and those it `offer`s);
/// `accept = "any"` opens top-ups to every token whose pools pass the guards, minus `deny`,
/// bounded by the caps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenList {
    /// Only these.
    Allow(Vec<Address>),
    /// Any token with a pool that passes the guards, except these.
    Deny(Vec<Address>),
}

impl TopupNetwork {
    /// Whether `token` may top up on this network at all.
    pub fn permits(&self, token: Address) -> bool {
        if token == self.usdc {
            return true;
        }
        match &self.tokens {
            TokenList::Allow(list) => list.contains(&token),
            TokenList::Deny(list) => !list.contains(&token),
        }
    }
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawTopup {
    network: String,
    treasury: Option<String>,
    usdc: Option<String>,
    weth: Option<String>,
    v2_factory: Option<String>,
    v3_factory: Option<String>,
    quoter: Option<String>,
    fee_tiers: Option<Vec<u32>>,
    /// USD, e.g. "$50000": the least USDC a route's thinnest pool must hold.
    min_liquidity: Option<String>,
    max_price_impact_bps: Option<u64>,
    max_twap_deviation_bps: Option<u64>,
    twap_window_seconds: Option<u32>,
    haircut_bps: Option<u64>,
    confirmations: Option<u64>,
    max_per_topup: Option<String>,
    min_per_topup: Option<String>,
    max_per_account_day: Option<String>,
    /// `listed` (the default: `allow` and `offer`) or `any` (every liquid token but `deny`).
    accept: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    offer: Vec<String>,
    quote_ttl_seconds: Option<u64>,
    valuations_per_minute: Option<u32>,
}

/// Uniswap's deployments on a network Tariff knows.
struct KnownDex {
    chain_id: u64,
    weth: &'static str,
    /// Uniswap lists no v2 deployment on Base Sepolia.
    v2_factory: Option<&'static str>,
    v3_factory: &'static str,
    quoter: &'static str,
}

/// From Uniswap's deployment docs (v3 on Base and Base Sepolia, v2 on Base); WETH is the
/// OP-stack predeploy.
const KNOWN_DEX: &[KnownDex] = &[
    KnownDex {
        chain_id: 8453,
        weth: "0x4200000000000000000000000000000000000006",
        v2_factory: Some("0x8909Dc15e40173Ff4699343b6eB8132c65e18eC6"),
        v3_factory: "0x33128a8fC17869897dcE68Ed026d694621f6FDfD",
        quoter: "0x3d4e44Eb1374240CE5F1B871ab261CD16335B76a",
    },
    KnownDex {
        chain_id: 84532,
        weth: "0x4200000000000000000000000000000000000006",
        v2_factory: None,
        v3_factory: "0x4752ba5DBc23f44D87826276BF6Fd6b1C372aD24",
        quoter: "0xC5290058841028F1614F3A6F0F5816cAd0df5E27",
    },
];

/// A setting and what is wrong with it.
pub type Invalid = (String, String);

fn addr(at: &str, v: &str) -> Result<Address, Invalid> {
    let a: Address = v
        .parse()
        .map_err(|_| (at.to_string(), format!("`{v}` is not an EVM address")))?;
    if a == Address::ZERO {
        return Err((at.to_string(), "the zero address is not allowed".into()));
    }
    Ok(a)
}

fn usd(at: &str, v: &str) -> Result<UsdMicros, Invalid> {
    parse_usd(v)
        .map(UsdMicros)
        .map_err(|e| (at.to_string(), e.to_string()))
}

fn bps(at: &str, v: Option<u64>, default: u64) -> Result<u64, Invalid> {
    let v = v.unwrap_or(default);
    if v > 10_000 {
        return Err((at.to_string(), "basis points: at most 10000".into()));
    }
    Ok(v)
}

impl RawTopup {
    pub fn network(&self) -> &str {
        &self.network
    }

    /// Validates the `i`-th `[[topup]]`; `pay_to` is the network's payee (the treasury's
    /// default).
    pub fn build(self, i: usize, pay_to: Option<&str>) -> Result<TopupNetwork, Invalid> {
        let at = |f: &str| format!("topup[{i}].{f}");
        let network =
            Network::parse_any(&self.network).map_err(|e| (at("network"), e.to_string()))?;
        let chain_id = network
            .chain_id()
            .ok_or_else(|| (at("network"), "only EVM (eip155) networks top up".into()))?;
        let known = KNOWN_DEX.iter().find(|k| k.chain_id == chain_id);
        let pick = |v: Option<String>,
                    field: &str,
                    default: Option<&str>|
         -> Result<Option<Address>, Invalid> {
            match v.as_deref().or(default) {
                Some(s) => addr(&at(field), s).map(Some),
                None => Ok(None),
            }
        };
        let required = |v: Option<Address>, field: &str| {
            v.ok_or_else(|| {
                (
                    at(field),
                    format!("required: Tariff knows no default on {network}"),
                )
            })
        };
        let treasury = required(pick(self.treasury, "treasury", pay_to)?, "treasury")?;
        let usdc = required(
            pick(self.usdc, "usdc", usdc_for(&network).map(|u| u.address))?,
            "usdc",
        )?;
        let weth = required(pick(self.weth, "weth", known.map(|k| k.weth))?, "weth")?;
        let v2_factory = pick(
            self.v2_factory,
            "v2_factory",
            known.and_then(|k| k.v2_factory),
        )?;
        let v3_factory = pick(self.v3_factory, "v3_factory", known.map(|k| k.v3_factory))?;
        let quoter = pick(self.quoter, "quoter", known.map(|k| k.quoter))?;
        if v3_factory.is_some() && quoter.is_none() {
            return Err((at("quoter"), "required with a v3 factory".into()));
        }
        let fee_tiers = self
            .fee_tiers
            .unwrap_or_else(|| vec![100, 500, 3000, 10_000]);
        if fee_tiers.is_empty() || fee_tiers.iter().any(|f| *f == 0 || *f >= 1_000_000) {
            return Err((
                at("fee_tiers"),
                "one or more fees in hundredths of a bip, below 1000000".into(),
            ));
        }
        let min_liquidity = usd(
            &at("min_liquidity"),
            self.min_liquidity.as_deref().unwrap_or("$50000"),
        )?;
        let policy = Policy {
            min_liquidity: U256::from(min_liquidity.get()),
            max_impact_bps: bps(&at("max_price_impact_bps"), self.max_price_impact_bps, 100)?,
            max_deviation_bps: bps(
                &at("max_twap_deviation_bps"),
                self.max_twap_deviation_bps,
                200,
            )?,
            haircut_bps: bps(&at("haircut_bps"), self.haircut_bps, 50)?,
        };
        let twap_window_secs = self.twap_window_seconds.unwrap_or(1800);
        if !(60..=7 * 24 * 3600).contains(&twap_window_secs) {
            return Err((at("twap_window_seconds"), "between 60 s and 7 days".into()));
        }
        let max_per_topup = usd(
            &at("max_per_topup"),
            self.max_per_topup.as_deref().unwrap_or("$1000"),
        )?;
        let min_per_topup = usd(
            &at("min_per_topup"),
            self.min_per_topup.as_deref().unwrap_or("$0.10"),
        )?;
        let max_per_account_day = usd(
            &at("max_per_account_day"),
            self.max_per_account_day.as_deref().unwrap_or("$5000"),
        )?;
        if min_per_topup > max_per_topup || max_per_topup > max_per_account_day {
            return Err((
                at("max_per_topup"),
                "min_per_topup ≤ max_per_topup ≤ max_per_account_day".into(),
            ));
        }
        let list = |v: Vec<String>, field: &str| -> Result<Vec<Address>, Invalid> {
            v.iter().map(|a| addr(&at(field), a)).collect()
        };
        let mut offer = list(self.offer, "offer")?;
        offer.retain(|t| *t != usdc);
        let tokens = match self.accept.as_deref() {
            None | Some("listed") => {
                if !self.deny.is_empty() {
                    return Err((at("deny"), "a denylist needs accept = \"any\"".into()));
                }
                let mut allow = list(self.allow, "allow")?;
                if offer.is_empty() {
                    offer = allow.iter().copied().filter(|t| *t != usdc).collect();
                }
                allow.extend(offer.iter().copied());
                TokenList::Allow(allow)
            }
            Some("any") => {
                if !self.allow.is_empty() {
                    return Err((
                        at("allow"),
                        "accept = \"any\" takes a denylist, not an allowlist".into(),
                    ));
                }
                let deny = list(self.deny, "deny")?;
                if let Some(t) = offer.iter().find(|t| deny.contains(t)) {
                    return Err((at("offer"), format!("{t:#x} is also denied")));
                }
                TokenList::Deny(deny)
            }
            Some(other) => {
                return Err((at("accept"), format!("`{other}` is not `listed` or `any`")));
            }
        };
        let quote_ttl_secs = self.quote_ttl_seconds.unwrap_or(120);
        if !(10..=3600).contains(&quote_ttl_secs) {
            return Err((at("quote_ttl_seconds"), "between 10 s and 1 hour".into()));
        }
        Ok(TopupNetwork {
            network,
            chain_id,
            treasury,
            usdc,
            weth,
            v2_factory,
            v3_factory,
            quoter,
            fee_tiers,
            policy,
            twap_window_secs,
            confirmations: self.confirmations.unwrap_or(3),
            max_per_topup,
            min_per_topup,
            max_per_account_day,
            tokens,
            offer,
            quote_ttl_secs,
            valuations_per_minute: self.valuations_per_minute.unwrap_or(600).max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(network: &str) -> RawTopup {
        RawTopup {
            network: network.into(),
            ..RawTopup::default()
        }
    }

    #[test]
    fn base_and_base_sepolia_have_defaults_and_others_must_say() {
        let pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
        for (net, factory) in [
            ("base", "0x33128a8fC17869897dcE68Ed026d694621f6FDfD"),
            ("eip155:84532", "0x4752ba5DBc23f44D87826276BF6Fd6b1C372aD24"),
        ] {
            let t = raw(net).build(0, Some(pay_to)).unwrap();
            assert_eq!(t.v3_factory, Some(factory.parse().unwrap()));
            assert_eq!(t.treasury, pay_to.parse::<Address>().unwrap());
            assert_eq!(t.policy.haircut_bps, 50);
            // Only USDC until the operator lists tokens or opens top-ups to any token.
            assert!(t.permits(t.usdc) && !t.permits(Address::repeat_byte(7)));
            let open = RawTopup {
                accept: Some("any".into()),
                ..raw(net)
            }
            .build(0, Some(pay_to))
            .unwrap();
            assert!(open.permits(Address::repeat_byte(7)));
        }
        let e = raw("eip155:1").build(0, Some(pay_to)).unwrap_err();
        assert_eq!(e.0, "topup[0].weth", "{e:?}");
        let e = raw("base").build(0, None).unwrap_err();
        assert_eq!(e.0, "topup[0].treasury", "{e:?}");
    }

    #[test]
    fn lists_limits_and_addresses_are_checked() {
        let t = RawTopup {
            allow: vec!["0x0000000000000000000000000000000000000007".into()],
            ..raw("base")
        }
        .build(0, Some("0x209693Bc6afc0C5328bA36FaF03C514EF312287C"))
        .unwrap();
        assert!(t.permits(Address::with_last_byte(7)));
        assert!(!t.permits(Address::repeat_byte(8)));
        assert_eq!(t.offer.len(), 1, "an allowlist is offered");
        for (bad, field) in [
            (
                RawTopup {
                    haircut_bps: Some(10_001),
                    ..raw("base")
                },
                "haircut_bps",
            ),
            (
                RawTopup {
                    weth: Some("0x12".into()),
                    ..raw("base")
                },
                "weth",
            ),
            (
                RawTopup {
                    max_per_topup: Some("$10000".into()),
                    ..raw("base")
                },
                "max_per_topup",
            ),
            (
                RawTopup {
                    deny: vec!["0x0000000000000000000000000000000000000008".into()],
                    ..raw("base")
                },
                "deny",
            ),
            (
                RawTopup {
                    accept: Some("any".into()),
                    allow: vec!["0x0000000000000000000000000000000000000007".into()],
                    ..raw("base")
                },
                "allow",
            ),
            (
                RawTopup {
                    accept: Some("some".into()),
                    ..raw("base")
                },
                "accept",
            ),
            (
                RawTopup {
                    twap_window_seconds: Some(5),
                    ..raw("base")
                },
                "twap_window_seconds",
            ),
        ] {
            let e = bad
                .build(3, Some("0x209693Bc6afc0C5328bA36FaF03C514EF312287C"))
                .unwrap_err();
            assert_eq!(e.0, format!("topup[3].{field}"), "{e:?}");
        }
    }
}
