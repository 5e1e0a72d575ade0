//! Everything that speaks Stripe: webhook signature checks and event parsing.

pub mod webhook;
