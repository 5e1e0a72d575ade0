//! coinpulse: phone payments for coin-op arcade cabinets.
//! Stripe webhooks in, signed MQTT coin pulses out, game overs back.

pub mod accounts;
pub mod app;
pub mod cabinets;
pub mod checkout;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod mail;
pub mod metrics;
pub mod mqtt;
pub mod payment_links;
pub mod payments;
pub mod qr;
pub mod replicas;
pub mod store;
pub mod stripe;
#[cfg(test)]
mod test_support;
pub mod wallets;
pub mod web;
pub mod writer;
