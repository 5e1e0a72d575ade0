//! Getting committed pulses to their cabinets: the writer's relay hands each new pulse to
//! the broker right after its commit; the dispatcher owns every pulse's delivery state
//! after that (handed marks, acks, redelivery on reconnect, the sweep).

pub mod dispatcher;
pub mod relay;

pub use dispatcher::{Dispatcher, Outlet, Signal, MAX_INFLIGHT};
pub use relay::Relay;
