//! The seller's payment terms on one network: what every quote's offer on that network is made
//! of (the amount comes from the price).

use serde::{Deserialize, Serialize};

use crate::x402::Network;

/// How a token is moved by an `exact` payment (`extra.assetTransferMethod` in x402).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferMethod {
    /// The token's own `transferWithAuthorization` (USDC and other EIP-3009 tokens).
    #[default]
    Eip3009,
    /// Any ERC-20 the payer approved to Permit2, through the x402 Permit2 proxy.
    Permit2,
}

impl TransferMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferMethod::Eip3009 => "eip3009",
            TransferMethod::Permit2 => "permit2",
        }
    }

    pub fn is_default(&self) -> bool {
        *self == TransferMethod::Eip3009
    }
}

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
    pub transfer_method: TransferMethod,
}
