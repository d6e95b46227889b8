//! Tariff: a seller-side x402 gateway that quotes each request, takes payment and keeps credits.
//!
//! Dependencies point one way: `http` → domain (`quote`, `pricing`, …) → `x402` (wire types).

pub mod accounts;
pub mod cli;
pub mod config;
pub mod db;
pub mod http;
pub mod ledger;
pub mod money;
pub mod payment;
pub mod pricing;
pub mod quote;
pub mod server;
pub mod time;
pub mod topup;
pub mod wallet;
pub mod x402;
