//! Top-ups in any DEX-liquid token (issue 9, in progress): valuing an amount of a token in USDC
//! on Uniswap pools, with the guards against price manipulation (anchors D5: never from the
//! spot alone; the lower of spot and TWAP; minimum liquidity; maximum price impact; maximum
//! spot/TWAP deviation; a haircut; round down). This first part is the arithmetic, pure and
//! exact (U256, no floats): the pool reads and the HTTP endpoints build on it.

pub mod pools;
pub mod v2;
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
        }
    }
}
