//! coinpulse's MQTT wire format, shared by the server and the cabinet agent: the topics,
//! the signed coin pulse, the game-over, ack and status payloads. It depends on nothing
//! but serialisation and the two signature schemes, so it builds anywhere a cabinet runs.

mod messages;
mod pulse;
mod topics;

pub use messages::{parse_status, wire_time, AckMessage, GameOverMessage, OFFLINE, ONLINE};
pub use pulse::{
    parse_public_key, sign_pulse, verify_pulse, verify_pulse_ed25519, PublicKeyError, PulseMessage,
    PulseSource, PulseVerifyError, UnknownSource,
};
pub use topics::{Inbound, Topics, DEFAULT_TOPIC_PREFIX};
