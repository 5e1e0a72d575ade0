//! MQTT: topics and payloads shared with cabinets, the server's connection, the outbox
//! dispatcher, inbound message handling and the embedded broker.

pub mod broker;
pub mod connection;
pub mod inbound;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::domain::MachineId;

/// Username of the server's own client on the embedded broker. `$` cannot appear in a
/// machine id, so no cabinet can claim it.
pub const INTERNAL_USER: &str = "$coinpulse-server";

#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    GameOver,
    Ack,
    Status,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    pub fn coinpulse(&self, machine_id: &str) -> String {
        format!("{}/{machine_id}/coinpulse", self.prefix)
    }
    pub fn gameover(&self, machine_id: &str) -> String {
        format!("{}/{machine_id}/gameover", self.prefix)
    }
    pub fn ack(&self, machine_id: &str) -> String {
        format!("{}/{machine_id}/ack", self.prefix)
    }
    pub fn status(&self, machine_id: &str) -> String {
        format!("{}/{machine_id}/status", self.prefix)
    }

    /// The filters the server subscribes to.
    pub fn subscriptions(&self) -> [String; 3] {
        [self.gameover("+"), self.ack("+"), self.status("+")]
    }

    /// The server's subscriptions when several replicas share an external broker: game
    /// overs and acks through the shared subscription `$share/{group}/…`, so the broker
    /// hands each to one replica; statuses to every replica (a shared subscription gets no
    /// retained messages, and recording a status twice changes nothing).
    pub fn shared_subscriptions(&self, group: &str) -> [String; 3] {
        [
            format!("$share/{group}/{}", self.gameover("+")),
            format!("$share/{group}/{}", self.ack("+")),
            self.status("+"),
        ]
    }

    /// `{prefix}/{id}/{kind}` → (id, kind) for the topics the server listens to.
    pub fn parse(&self, topic: &str) -> Option<(MachineId, Inbound)> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let (id, kind) = rest.split_once('/')?;
        let kind = match kind {
            "gameover" => Inbound::GameOver,
            "ack" => Inbound::Ack,
            "status" => Inbound::Status,
            _ => return None,
        };
        Some((MachineId::parse(id).ok()?, kind))
    }
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

/// The seed's game-over message, plus the optional fields coinpulse understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameOverMessage {
    #[serde(rename = "machineId")]
    pub machine_id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<i64>,
    #[serde(rename = "playSeconds", skip_serializing_if = "Option::is_none")]
    pub play_seconds: Option<i64>,
    /// Set by coinpulse when it republishes an HTTP game over, and optionally by cabinets
    /// so that a QoS 1 redelivery is not logged twice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AckMessage {
    pub id: String,
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

/// `online`/`offline`, as plain text or `{"status": "online"}`.
pub fn parse_status(payload: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    let word = if text.starts_with('{') {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()?
            .get("status")?
            .as_str()?
            .to_ascii_lowercase()
    } else {
        text.to_ascii_lowercase()
    };
    match word.as_str() {
        "online" => Some(true),
        "offline" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip() {
        let t = Topics::new("arcade/machine/");
        assert_eq!(t.coinpulse("cab-1"), "arcade/machine/cab-1/coinpulse");
        let (id, kind) = t.parse("arcade/machine/cab-1/gameover").unwrap();
        assert_eq!((id.as_str(), kind), ("cab-1", Inbound::GameOver));
        assert!(t.parse("arcade/machine/cab-1/coinpulse").is_none());
        assert!(t.parse("arcade/machine/bad id/ack").is_none());
        assert!(t.parse("other/cab-1/ack").is_none());
        assert!(t.parse("arcade/machinex/cab-1/ack").is_none());
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

    #[test]
    fn status_payloads() {
        assert_eq!(parse_status(b"online"), Some(true));
        assert_eq!(parse_status(b"OFFLINE\n"), Some(false));
        assert_eq!(parse_status(br#"{"status":"online"}"#), Some(true));
        assert_eq!(parse_status(b"maybe"), None);
    }
}
