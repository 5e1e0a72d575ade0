//! coinpulse: phone payments for coin-op arcade cabinets.
//! Stripe webhooks in, signed MQTT coin pulses out, game overs back.

pub mod app;
pub mod cabinets;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod mqtt;
pub mod payments;
pub mod qr;
pub mod store;
pub mod stripe;
pub mod web;
pub mod writer;
