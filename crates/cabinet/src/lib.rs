//! The coinpulse cabinet agent: a verified coin pulse in, credits out (coin-signal pulses
//! on a GPIO line, key presses, a command), each exactly once across restarts; game over
//! back. `coinpulse cabinet-sim` is this agent with the print output.

pub mod agent;
pub mod client;
pub mod config;
pub mod control;
pub mod gameover;
pub mod journal;
pub mod output;
mod run;

pub use agent::{Agent, AgentError, AgentOptions, Connect, Event};
pub use journal::Journal;
pub use run::{run, RunOptions};
