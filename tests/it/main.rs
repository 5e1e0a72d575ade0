//! Integration tests: the real server, a real broker, real MQTT cabinets, real databases.
#![recursion_limit = "256"]

mod support;

mod admin;
mod agent;
mod api;
mod broker;
mod browser;
mod delivery;
mod gameover;
mod ops;
mod pay;
mod replicas;
mod restart;
mod wallet;
mod webhooks;
