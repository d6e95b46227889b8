//! Plain ERC-20 transfers to the treasury, read from a receipt: for wallets that cannot sign
//! an x402 payment. Only the `Transfer` logs count (what the token says arrived, so a
//! fee-on-transfer token is credited on the amount the treasury received, not the amount sent).

use alloy::primitives::{Address, U256};
use alloy::rpc::types::Log;
use alloy::sol_types::SolEvent;

use crate::payment::chain::Erc20Transfer;

/// One token transfer into the treasury.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub token: Address,
    pub from: Address,
    pub amount: U256,
    /// The log's index in its block: with the network and transaction, the top-up's identity.
    pub log_index: u64,
}

/// Every `Transfer` to `treasury` in `logs` (a token emitting a malformed event is skipped).
pub fn arrivals(logs: &[Log], treasury: Address) -> Vec<Arrival> {
    logs.iter()
        .filter_map(|log| {
            let t = Erc20Transfer::decode_log(&log.inner).ok()?;
            let log_index = log.log_index?;
            (t.to == treasury && !t.value.is_zero()).then(|| Arrival {
                token: log.address(),
                from: t.from,
                amount: t.value,
                log_index,
            })
        })
        .collect()
}

/// What arrived at `treasury` in `token` in `logs`, from anyone (an x402 top-up's settlement).
pub fn arrived(logs: &[Log], token: Address, treasury: Address) -> U256 {
    arrivals(logs, treasury)
        .iter()
        .filter(|a| a.token == token)
        .fold(U256::ZERO, |sum, a| sum.saturating_add(a.amount))
}
