//! MQTT: topics and payloads shared with cabinets, the server's connection, the outbox
//! dispatcher, inbound message handling and the embedded broker.

pub mod broker;
pub mod connection;
pub mod inbound;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::domain::MachineId;

/// Username of the server's own client on the embedded broker. `$` cannot appear in a
/// machine id, so no cabinet can claim it.
pub const INTERNAL_USER: &str = "$coinpulse-server";

pub use coinpulse_wire::{parse_status, AckMessage, GameOverMessage, Inbound, Topics};

/// The filters the server subscribes to.
pub fn subscriptions(topics: &Topics) -> [String; 3] {
    [topics.gameover("+"), topics.ack("+"), topics.status("+")]
}

/// The server's subscriptions when several replicas share an external broker: game overs
/// and acks through the shared subscription `$share/{group}/…`, so the broker hands each to
/// one replica; statuses to every replica (a shared subscription gets no retained messages,
/// and recording a status twice changes nothing).
pub fn shared_subscriptions(topics: &Topics, group: &str) -> [String; 3] {
    [
        format!("$share/{group}/{}", topics.gameover("+")),
        format!("$share/{group}/{}", topics.ack("+")),
        topics.status("+"),
    ]
}

/// A topic a cabinet publishes on → its valid machine id and what it carries.
pub fn parse_topic(topics: &Topics, topic: &str) -> Option<(MachineId, Inbound)> {
    let (id, kind) = topics.split(topic)?;
    Some((MachineId::parse(id).ok()?, kind))
}

/// Counters shown in `/status`, so an owner (and a test) can see what was refused.
#[derive(Debug, Default)]
pub struct MqttStats {
    pub connected: AtomicBool,
    pub rejected: AtomicU64,
    pub received: AtomicU64,
    pub published: AtomicU64,
    /// Acks that named no pulse of the acking cabinet.
    pub acks_ignored: AtomicU64,
}

impl MqttStats {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    pub fn reject(&self, topic: &str, why: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(topic, reason = why, "MQTT message rejected");
    }
}

/// Validates a game-over payload against the cabinet named by its topic.
pub fn parse_gameover(payload: &[u8], topic_id: &MachineId) -> Result<GameOverMessage, String> {
    let msg: GameOverMessage =
        serde_json::from_slice(payload).map_err(|e| format!("not a game-over message: {e}"))?;
    if msg.machine_id != topic_id.as_str() {
        return Err(format!(
            "machineId {:?} does not match the topic's {}",
            msg.machine_id, topic_id
        ));
    }
    if msg.status != "game_over" {
        return Err(format!("status {:?} is not game_over", msg.status));
    }
    if let Some(ts) = &msg.timestamp {
        chrono::DateTime::parse_from_rfc3339(ts).map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if msg.score.is_some_and(|s| s < 0) || msg.play_seconds.is_some_and(|s| s < 0) {
        return Err("score and playSeconds must not be negative".into());
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_name_valid_cabinets_only() {
        let t = Topics::new("arcade/machine/");
        let (id, kind) = parse_topic(&t, "arcade/machine/cab-1/gameover").unwrap();
        assert_eq!((id.as_str(), kind), ("cab-1", Inbound::GameOver));
        assert!(parse_topic(&t, "arcade/machine/cab-1/coinpulse").is_none());
        assert!(parse_topic(&t, "arcade/machine/bad id/ack").is_none());
        assert!(parse_topic(&t, "arcade/machine/+/ack").is_none());
    }

    #[test]
    fn gameover_must_match_topic() {
        let id = MachineId::parse("cab-1").unwrap();
        let ok = br#"{"machineId":"cab-1","status":"game_over","timestamp":"2024-07-01T12:30:00Z","score":10}"#;
        assert_eq!(parse_gameover(ok, &id).unwrap().score, Some(10));
        let other =
            br#"{"machineId":"cab-2","status":"game_over","timestamp":"2024-07-01T12:30:00Z"}"#;
        assert!(parse_gameover(other, &id)
            .unwrap_err()
            .contains("does not match"));
        assert!(parse_gameover(b"{nope", &id).is_err());
        let bad_status = br#"{"machineId":"cab-1","status":"playing"}"#;
        assert!(parse_gameover(bad_status, &id).is_err());
        let bad_ts = br#"{"machineId":"cab-1","status":"game_over","timestamp":"yesterday"}"#;
        assert!(parse_gameover(bad_ts, &id).is_err());
    }
}
