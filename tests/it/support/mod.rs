//! Test support, one module per concern: the app and its database, the fake Stripe, an
//! MQTT test cabinet, and signed webhooks. Tests `use crate::support::*`.

mod agent;
mod app;
mod cabinet;
mod dashboard;
mod mosquitto;
mod phone;
mod server;
mod smtp;
pub mod stripe;
mod webhooks;

pub use agent::*;
pub use app::*;
pub use cabinet::*;
pub use dashboard::*;
pub use mosquitto::*;
pub use phone::*;
pub use server::*;
pub use smtp::*;
pub use webhooks::*;
