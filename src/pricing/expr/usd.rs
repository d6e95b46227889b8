//! Exact decimal USD strings to integer micro-units (1e-6 USD).
//!
//! Prices are written by humans as `"$0.05"` but must be handled as integers:
//! a float would turn `0.1 + 0.2` into `0.30000000000000004`, and on a payment
//! path that is money. So the decimal string is split into its whole and
//! fractional digits and combined with checked integer arithmetic only.

/// Micro-units per dollar: prices are integers of 1e-6 USD (the precision of
/// USDC, the asset x402 settles in).
pub const MICROS_PER_USD: u64 = 1_000_000;

/// Decimal places a USD amount may have: one more would be a fraction of a
/// micro-unit, which cannot be charged, and rounding it silently would change
/// the operator's price.
const MAX_DECIMALS: usize = 6;

/// Why a USD amount string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsdError {
    #[error("empty amount: expected a decimal number of dollars such as `0.05` or `$1.25`")]
    Empty,
    #[error("amount must not have a sign: prices are never negative, write `{0}` without it")]
    Sign(char),
    #[error("exponent notation is not allowed in an amount: write the digits out, e.g. `0.00001`")]
    Exponent,
    #[error("too many decimal places: {0} (max 6, the precision of a micro-dollar)")]
    TooManyDecimals(usize),
    #[error(
        "invalid character `{0}` in amount: expected digits, one `.` and an optional leading `$`"
    )]
    InvalidChar(char),
    #[error(
        "malformed amount `{0}`: expected digits on both sides of the decimal point, e.g. `0.5`"
    )]
    Malformed(String),
    #[error("amount too large: `{0}` does not fit in 64 bits of micro-dollars")]
    Overflow(String),
}

/// Parses `"$0.05"`, `"0.05"`, `"1"` or `"$1.000001"` into micro-units,
/// exactly: `"$0.05"` is `50_000`.
///
/// At most 6 decimals; signs, exponents, whitespace, thousands separators, a
/// bare or dangling `.` and values beyond `u64` are errors rather than being
/// rounded or clamped, because a silently altered price is worse than a rule
/// file that fails to load.
pub fn parse_usd(s: &str) -> Result<u64, UsdError> {
    let digits = s.strip_prefix('$').unwrap_or(s);
    if digits.is_empty() {
        return Err(UsdError::Empty);
    }
    // Classify the first offending character for a precise message.
    if let Some(c) = digits.chars().find(|c| !c.is_ascii_digit() && *c != '.') {
        return Err(match c {
            '-' | '+' => UsdError::Sign(c),
            'e' | 'E' => UsdError::Exponent,
            c => UsdError::InvalidChar(c),
        });
    }
    let (whole, frac) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    let malformed = || UsdError::Malformed(s.to_owned());
    if whole.is_empty() {
        return Err(malformed());
    }
    let frac = match frac {
        None => "",
        // "1." or "1.2.3": ambiguous enough to refuse.
        Some(f) if f.is_empty() || f.contains('.') => return Err(malformed()),
        Some(f) => f,
    };
    if frac.len() > MAX_DECIMALS {
        return Err(UsdError::TooManyDecimals(frac.len()));
    }
    let overflow = || UsdError::Overflow(s.to_owned());
    // Digits were checked above, so the only parse failure left is overflow.
    let whole: u64 = whole.parse().map_err(|_| overflow())?;
    let mut frac_micros: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| overflow())?
    };
    // "0.05" has 2 decimals: 5 * 10^(6-2) micro-units.
    for _ in frac.len()..MAX_DECIMALS {
        frac_micros *= 10;
    }
    whole
        .checked_mul(MICROS_PER_USD)
        .and_then(|w| w.checked_add(frac_micros))
        .ok_or_else(overflow)
}

/// Formats micro-units back as a `$` amount with 6 decimals, for messages.
pub fn format_usd(micros: u64) -> String {
    format!(
        "${}.{:06}",
        micros / MICROS_PER_USD,
        micros % MICROS_PER_USD
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        let cases = [
            ("$0.05", 50_000),
            ("0.05", 50_000),
            ("1", 1_000_000),
            ("$1.000001", 1_000_001),
            ("0", 0),
            ("$0", 0),
            ("0.000001", 1),
            ("007.5", 7_500_000),
            ("0.1", 100_000),
            ("123.456789", 123_456_789),
            // u64::MAX micro-units is 18446744073709.551615 USD.
            ("18446744073709.551615", u64::MAX),
        ];
        for (s, want) in cases {
            assert_eq!(parse_usd(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn rejects_what_it_would_otherwise_have_to_round_or_guess() {
        assert_eq!(parse_usd(""), Err(UsdError::Empty));
        assert_eq!(parse_usd("$"), Err(UsdError::Empty));
        assert_eq!(parse_usd("0.0000001"), Err(UsdError::TooManyDecimals(7)));
        assert_eq!(parse_usd("-1"), Err(UsdError::Sign('-')));
        assert_eq!(parse_usd("$-0.05"), Err(UsdError::Sign('-')));
        assert_eq!(parse_usd("+1"), Err(UsdError::Sign('+')));
        assert_eq!(parse_usd("1e3"), Err(UsdError::Exponent));
        assert_eq!(parse_usd("1E-3"), Err(UsdError::Exponent));
        assert_eq!(parse_usd(" 1"), Err(UsdError::InvalidChar(' ')));
        assert_eq!(parse_usd("1,000"), Err(UsdError::InvalidChar(',')));
        assert_eq!(parse_usd("$$1"), Err(UsdError::InvalidChar('$')));
        assert_eq!(parse_usd("1_000"), Err(UsdError::InvalidChar('_')));
        assert_eq!(parse_usd("١"), Err(UsdError::InvalidChar('١')));
        for s in [".", ".5", "1.", "1.2.3", "$.05"] {
            assert!(matches!(parse_usd(s), Err(UsdError::Malformed(_))), "{s}");
        }
        for s in [
            "18446744073709.551616",
            "18446744073710",
            "99999999999999999999999",
        ] {
            assert!(matches!(parse_usd(s), Err(UsdError::Overflow(_))), "{s}");
        }
    }

    #[test]
    fn messages_name_the_problem() {
        assert_eq!(
            parse_usd("0.1234567").unwrap_err().to_string(),
            "too many decimal places: 7 (max 6, the precision of a micro-dollar)"
        );
        assert!(parse_usd("-1").unwrap_err().to_string().contains("sign"));
    }

    #[test]
    fn formats_back() {
        assert_eq!(format_usd(50_000), "$0.050000");
        assert_eq!(format_usd(1_000_001), "$1.000001");
        assert_eq!(parse_usd(&format_usd(123_456_789)), Ok(123_456_789));
    }
}
