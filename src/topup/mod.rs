//! Top-ups in any DEX-liquid token: valuing an amount of a token in USDC on Uniswap pools, with
//! the guards against price manipulation (anchors D5: never from the spot alone; the lower of
//! spot and TWAP; minimum liquidity; maximum price impact; maximum spot/TWAP deviation; a
//! haircut; round down), and crediting what arrived once.
//!
//! - [`valuation`], [`v2`], [`v3`], [`v2_oracle`]: the arithmetic, pure and exact (U256);
//! - [`pools`]: reading pools over RPC; [`route`]: finding the route and valuing on it;
//! - [`config`]: the operator's per-network settings; [`record`]: the top-up records and their
//!   ledger transfers; [`transfer`]: plain ERC-20 transfers read from a receipt.

pub mod config;
pub mod pools;
pub mod record;
pub mod route;
pub mod transfer;
pub mod v2;
pub mod v2_oracle;
pub mod v3;
pub mod valuation;

/// Why a top-up is refused; [`Refusal::code`] is the machine-readable reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no pool prices this token against USDC (directly or through WETH)")]
    NoPool,
    #[error("the pool holds {have} USDC base units of liquidity; at least {need} are required")]
    ThinLiquidity { have: String, need: String },
    #[error(
        "this amount would move the price by {impact_bps} bp; at most {max_bps} bp are accepted"
    )]
    PriceImpact { impact_bps: u64, max_bps: u64 },
    #[error(
        "the spot price is {deviation_bps} bp away from the time-weighted price; at most {max_bps} bp are accepted"
    )]
    SpotDeviation { deviation_bps: u64, max_bps: u64 },
    #[error(
        "the pool's observations cover {have_secs} s; the time-weighted price needs {need_secs} s"
    )]
    ShortHistory { have_secs: u64, need_secs: u64 },
    #[error("the amount is too large to value")]
    Overflow,
    #[error("this amount is worth nothing after the haircut")]
    Worthless,
    #[error("this token is not accepted for top-ups here")]
    Denied,
    #[error("top-ups are not configured on this network")]
    NoNetwork,
    #[error("a top-up is worth at most {max}; this one is worth {have}")]
    AboveCap { have: String, max: String },
    #[error("a top-up must be worth at least {min}; this one is worth {have}")]
    BelowMinimum { have: String, min: String },
    #[error("this account may top up {left} more today (at most {max} per 24 hours)")]
    DailyCap { left: String, max: String },
    #[error("the transaction has {have} of {need} confirmations; ask again later")]
    NotConfirmed { have: u64, need: u64 },
    #[error("no successful transaction with this hash on this network")]
    UnknownTransaction,
    #[error("the transaction moves no token to the treasury")]
    NoTransferToTreasury,
    #[error("the tokens were sent from {from}, which is not a wallet linked to this account")]
    WalletNotLinked { from: String },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NoPool => "topup_no_pool",
            Refusal::ThinLiquidity { .. } => "topup_liquidity_too_low",
            Refusal::PriceImpact { .. } => "topup_price_impact_too_high",
            Refusal::SpotDeviation { .. } => "topup_spot_deviates_from_twap",
            Refusal::ShortHistory { .. } => "topup_twap_window_too_long",
            Refusal::Overflow => "topup_amount_too_large",
            Refusal::Worthless => "topup_amount_too_small",
            Refusal::Denied => "topup_token_denied",
            Refusal::NoNetwork => "topup_network_unsupported",
            Refusal::AboveCap { .. } => "topup_above_cap",
            Refusal::BelowMinimum { .. } => "topup_below_minimum",
            Refusal::DailyCap { .. } => "topup_daily_cap_reached",
            Refusal::NotConfirmed { .. } => "topup_not_confirmed",
            Refusal::UnknownTransaction => "topup_transaction_not_found",
            Refusal::NoTransferToTreasury => "topup_no_transfer_to_treasury",
            Refusal::WalletNotLinked { .. } => "topup_wallet_not_linked",
        }
    }
}
