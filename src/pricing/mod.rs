//! Pricing: operator rules (CEL expressions in `pricing-rules/*.toml`), compiled and checked at
//! load, evaluated per request, reloaded on change.

pub mod backtest;
pub mod discovery;
pub mod edit;
pub mod expr;
pub mod external;
pub mod reload;
pub mod route_path;
pub mod rules;
pub mod shadow;

pub use reload::RulesHandle;
pub use rules::{
    DEFAULT_STORED_ANSWER_BYTES, Decision, Generation, LoadOptions, PaymentIdPolicy, PricingError,
    Route, RuleError, RuleErrors, RuleSet, SettleTiming,
};
