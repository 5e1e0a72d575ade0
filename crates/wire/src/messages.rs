//! What cabinets send: game over (the seed's message plus optional fields), acks and their
//! online/offline status; and the seed's timestamp format.

use serde::{Deserialize, Serialize};

/// A cabinet's status payloads (retained; `offline` is also its last will).
pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";

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
    /// Set by coinpulse when it republishes an HTTP game over, and by cabinets so that a
    /// QoS 1 redelivery is not logged twice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl GameOverMessage {
    /// A game over as a cabinet reports it now.
    pub fn now(
        machine_id: &str,
        id: String,
        score: Option<i64>,
        play_seconds: Option<i64>,
    ) -> Self {
        Self {
            machine_id: machine_id.to_owned(),
            status: "game_over".into(),
            timestamp: Some(wire_time(chrono::Utc::now())),
            score,
            play_seconds,
            id: Some(id),
        }
    }
}

/// A cabinet's acknowledgement of one pulse: `{"id": "<pulse id>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckMessage {
    pub id: String,
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
        ONLINE => Some(true),
        OFFLINE => Some(false),
        _ => None,
    }
}

/// The seed's wire format for timestamps: second precision, `Z` suffix.
pub fn wire_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_payloads() {
        assert_eq!(parse_status(b"online"), Some(true));
        assert_eq!(parse_status(b"OFFLINE\n"), Some(false));
        assert_eq!(parse_status(br#"{"status":"online"}"#), Some(true));
        assert_eq!(parse_status(b"maybe"), None);
    }

    #[test]
    fn game_over_uses_the_seed_field_names() {
        let g = GameOverMessage::now("cab-1", "g1".into(), Some(10), Some(95));
        let v: serde_json::Value = serde_json::to_value(&g).unwrap();
        assert_eq!(v["machineId"], "cab-1");
        assert_eq!(v["status"], "game_over");
        assert_eq!(v["playSeconds"], 95);
        assert_eq!(v["score"], 10);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        let a = chrono::DateTime::parse_from_rfc3339("2024-07-01T12:00:00.5Z")
            .unwrap()
            .to_utc();
        assert_eq!(wire_time(a), "2024-07-01T12:00:00Z");
    }
}
