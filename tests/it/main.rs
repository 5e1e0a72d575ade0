//! Integration tests: the real server, a real broker, real MQTT cabinets, real databases.

mod support;

mod api;
mod delivery;
mod gameover;
mod webhooks;
