//! The seller's payment terms on one network: what every quote's offer on that network is made
//! of (the amount comes from the price).

use crate::x402::Network;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentTerms {
    pub network: Network,
    pub asset: String,
    pub decimals: u8,
    /// EIP-712 domain name and version of the token (USDC on Base: "USD Coin", "2").
    pub eip712_name: String,
    pub eip712_version: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
}
