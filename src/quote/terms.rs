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

/// The x402 scheme an offer is paid with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OfferScheme {
    /// Exactly the quoted amount.
    #[default]
    Exact,
    /// At most the quoted amount (the ceiling); the price computed from the upstream's answer
    /// is what settles. EVM `upto` is Permit2 only.
    Upto,
}

impl OfferScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            OfferScheme::Exact => "exact",
            OfferScheme::Upto => "upto",
        }
    }

    pub fn is_default(&self) -> bool {
        *self == OfferScheme::Exact
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
    /// Who may settle an `upto` payment on this network (the witness binds it): our relayer in
    /// local mode, the facilitator's signer from its `/supported` in facilitator mode. `None`:
    /// no `upto` is offered here. Filled in once the settlers are built, not from the config.
    pub upto_facilitator: Option<String>,
}
