//! Money newtypes. Every amount is an integer in base units with its unit named by the type;
//! nothing on a money path is a float.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Micro-dollars (1e-6 USD): the unit prices are computed in and credits are kept in. It has
/// the same scale as USDC base units, so on a 6-decimal stablecoin one micro-dollar is one
/// base unit.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct UsdMicros(pub u64);

impl UsdMicros {
    pub const ZERO: UsdMicros = UsdMicros(0);
    const SCALE_DECIMALS: u32 = 6;

    pub fn get(self) -> u64 {
        self.0
    }

    /// Converts to the base units of a token with `decimals` decimals, exactly when the token has
    /// at least 6 decimals. A token with fewer decimals cannot express every micro-dollar, so the
    /// amount is rounded *up*: the seller never receives less than the quoted price.
    pub fn to_asset_units(self, decimals: u8) -> Option<AssetAmount> {
        let decimals = u32::from(decimals);
        let micros = u128::from(self.0);
        if decimals >= Self::SCALE_DECIMALS {
            let factor = 10u128.checked_pow(decimals - Self::SCALE_DECIMALS)?;
            micros.checked_mul(factor).map(AssetAmount)
        } else {
            let divisor = 10u128.pow(Self::SCALE_DECIMALS - decimals);
            Some(AssetAmount(micros.div_ceil(divisor)))
        }
    }
}

impl fmt::Display for UsdMicros {
    /// `$0.050000`-style, exact: integer division only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// An amount in the smallest unit of a specific on-chain asset (for USDC, 1e-6 USDC). The asset
/// itself is named alongside wherever this travels (an offer names network and asset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AssetAmount(pub u128);

impl fmt::Display for AssetAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_display_is_exact() {
        assert_eq!(UsdMicros(50_000).to_string(), "$0.050000");
        assert_eq!(UsdMicros(1_234_567).to_string(), "$1.234567");
        assert_eq!(UsdMicros(0).to_string(), "$0.000000");
    }

    #[test]
    fn conversion_scales_up_exactly_and_rounds_down_decimals_up() {
        assert_eq!(
            UsdMicros(20_000).to_asset_units(6),
            Some(AssetAmount(20_000))
        );
        assert_eq!(
            UsdMicros(20_000).to_asset_units(18),
            Some(AssetAmount(20_000_000_000_000_000))
        );
        // 2 decimals (cents): 0.020001 USD must cost 3 cents, never 2.
        assert_eq!(UsdMicros(20_001).to_asset_units(2), Some(AssetAmount(3)));
        assert_eq!(UsdMicros(20_000).to_asset_units(2), Some(AssetAmount(2)));
        assert_eq!(UsdMicros(u64::MAX).to_asset_units(60), None);
    }
}
