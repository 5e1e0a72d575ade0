//! Everything that speaks Stripe: webhook signature checks and event parsing.

pub mod api;
pub mod webhook;
