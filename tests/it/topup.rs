//! Top-up valuation against REAL Uniswap v2 and v3 contracts (deployed on anvil from their npm
//! artifacts by tests/interop/uniswap.mjs, pools seeded and oracles warmed up): our v2 formula
//! equals the router's, a healthy v3 pool is valued within the haircut of what the quoter says
//! a swap returns, and a spot pushed away from its TWAP, or an amount too large for the pool,
//! is refused.

use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::sol;
use serde_json::Value;
use tariff::payment::chain::Chain;
use tariff::topup::pools::{ReadError, v2_out, v3_readings};
use tariff::topup::valuation::{Policy, value};

use crate::payments::node_script;
use crate::support::AnvilNode;

sol! {
    interface IRouter02 {
        function getAmountsOut(uint256 amountIn, address[] path) external view returns (uint256[] amounts);
    }
}

pub(crate) struct Rig {
    pub(crate) node: AnvilNode,
    pub(crate) chain: Chain,
    pub(crate) rig: Value,
}

impl Rig {
    pub(crate) async fn start() -> Rig {
        let node = AnvilNode::spawn(84532).await;
        let rig = node_script(&[
            "tests/interop/uniswap.mjs",
            "setup",
            "--rpc",
            &node.rpc_url(),
        ]);
        let chain = Chain::connect(&node.rpc_url(), 84532, Duration::from_secs(10)).unwrap();
        Rig { node, chain, rig }
    }

    /// One large swap on pool `name` (`amount` whole tokens of its first token sold), as a
    /// manipulator would make.
    pub(crate) fn push(&self, name: &str, amount: &str) {
        let pushed = node_script(&[
            "tests/interop/uniswap.mjs",
            "push",
            "--rpc",
            &self.node.rpc_url(),
            "--pool",
            name,
            "--amount",
            amount,
        ]);
        assert!(pushed.get("after").is_some(), "{pushed}");
    }

    pub(crate) fn addr(&self, pointer: &str) -> Address {
        self.rig
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{pointer} in {}", self.rig))
            .parse()
            .unwrap()
    }

    async fn readings(
        &self,
        amount: U256,
    ) -> Result<tariff::topup::valuation::Readings, ReadError> {
        v3_readings(
            &self.chain,
            self.addr("/pools/v3-TKN-USDC/address"),
            self.addr("/v3/quoterV2"),
            self.addr("/tokens/TKN"),
            self.addr("/tokens/USDC"),
            amount,
            1800,
        )
        .await
    }
}

fn policy() -> Policy {
    Policy {
        min_liquidity: U256::from(10_000u64) * U256::from(1_000_000u64), // $10,000
        max_impact_bps: 300,
        max_deviation_bps: 500,
        haircut_bps: 100,
    }
}

fn tkn(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18u8))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_valuation_agrees_with_real_uniswap_and_refuses_manipulated_or_oversized_amounts() {
    let rig = Rig::start().await;

    // v2: our formula on the pair's reserves equals the real router's answer, to the unit.
    let (tkn_addr, usdc) = (rig.addr("/tokens/TKN"), rig.addr("/tokens/USDC"));
    for amount in [tkn(1), tkn(1_000), tkn(25_000)] {
        let (ours, _) = v2_out(
            &rig.chain,
            rig.addr("/pools/v2-TKN-USDC/address"),
            tkn_addr,
            amount,
        )
        .await
        .unwrap();
        let router = rig
            .chain
            .read(
                rig.addr("/v2/router"),
                IRouter02::getAmountsOutCall {
                    amountIn: amount,
                    path: vec![tkn_addr, usdc],
                },
            )
            .await
            .unwrap();
        assert_eq!(ours, router[1], "{amount}");
    }

    // v3, healthy: 1,000 TKN at about 2 USDC. The credit is at most what the quoter says a swap
    // returns, and within the haircut (plus rounding) of it.
    let r = rig.readings(tkn(1_000)).await.unwrap();
    let v = value(&policy(), &r).unwrap();
    assert!(v.credit <= r.quoted, "{v:?} {r:?}");
    assert!(
        v.credit >= r.quoted * U256::from(9_890u64) / U256::from(10_000u64),
        "{v:?} {r:?}"
    );
    let two_thousand = U256::from(2_000_000_000u64);
    assert!(
        r.quoted < two_thousand && r.quoted > two_thousand * U256::from(99u8) / U256::from(100u8),
        "{r:?}"
    );
    assert!(
        v.deviation_bps < 10,
        "the oracle agrees with the spot: {v:?}"
    );

    // Too large for the pool: refused for price impact.
    let big = rig.readings(tkn(100_000)).await.unwrap();
    assert_eq!(
        value(&policy(), &big).unwrap_err().code(),
        "topup_price_impact_too_high"
    );

    // The spot pushed far from the TWAP within the window (a large sell): refused, whatever the
    // amount offered.
    rig.push("v3-TKN-USDC", "200000");
    let r = rig.readings(tkn(10)).await.unwrap();
    assert_eq!(
        value(&policy(), &r).unwrap_err().code(),
        "topup_spot_deviates_from_twap",
        "{r:?}"
    );

    // A window the pool's oracle does not cover: refused.
    let too_long = v3_readings(
        &rig.chain,
        rig.addr("/pools/v3-TKN-USDC/address"),
        rig.addr("/v3/quoterV2"),
        tkn_addr,
        usdc,
        tkn(1),
        30 * 24 * 3600,
    )
    .await;
    assert!(
        matches!(too_long, Err(ReadError::Refused(ref e)) if e.code() == "topup_twap_window_too_long"),
        "{too_long:?}"
    );

    // A node that does not answer is an outage, not a verdict on the pool.
    let dead = Chain::connect("http://127.0.0.1:9", 84532, Duration::from_secs(2)).unwrap();
    let down = v3_readings(
        &dead,
        rig.addr("/pools/v3-TKN-USDC/address"),
        rig.addr("/v3/quoterV2"),
        tkn_addr,
        usdc,
        tkn(1),
        1800,
    )
    .await;
    assert!(matches!(down, Err(ReadError::Chain(_))), "{down:?}");
}
