//! The four topics of a cabinet: `{prefix}/{machine id}/{coinpulse|gameover|ack|status}`.
//! The server publishes only on `coinpulse`; a cabinet publishes only on the other three.

/// The seed system's prefix.
pub const DEFAULT_TOPIC_PREFIX: &str = "arcade/machine";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

/// What a cabinet may send the server.
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

    pub fn prefix(&self) -> &str {
        &self.prefix
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

    /// `{prefix}/{id}/{kind}` → (id, kind) for the topics a cabinet publishes on. The id is
    /// not validated here: callers check it against their own rules.
    pub fn split<'t>(&self, topic: &'t str) -> Option<(&'t str, Inbound)> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let (id, kind) = rest.split_once('/')?;
        let kind = match kind {
            "gameover" => Inbound::GameOver,
            "ack" => Inbound::Ack,
            "status" => Inbound::Status,
            _ => return None,
        };
        Some((id, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip() {
        let t = Topics::new("arcade/machine/");
        assert_eq!(t.coinpulse("cab-1"), "arcade/machine/cab-1/coinpulse");
        assert_eq!(
            t.split("arcade/machine/cab-1/gameover"),
            Some(("cab-1", Inbound::GameOver))
        );
        assert_eq!(t.split(&t.ack("cab-1")), Some(("cab-1", Inbound::Ack)));
        assert_eq!(t.split(&t.status("x")), Some(("x", Inbound::Status)));
        assert!(t.split("arcade/machine/cab-1/coinpulse").is_none());
        assert!(t.split("other/cab-1/ack").is_none());
        assert!(t.split("arcade/machinex/cab-1/ack").is_none());
    }
}
