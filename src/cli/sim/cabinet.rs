//! A simulated cabinet that behaves like a real one: logs in with its secret, leaves an
//! `offline` last will, announces `online` (retained), verifies each pulse's signature
//! (Ed25519 with the server's public key when given, else the HMAC `sig`), refuses pulses
//! older than a set age, ignores pulse ids it has already seen (remembered in a file across
//! its own restarts when given one), acks every pulse, and can report game over.
//! `coinpulse cabinet-sim` runs it; the integration tests use it as their cabinet.
//! It connects through the server's own connect-with-backoff loop.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paho_mqtt as paho;
use tokio::sync::{mpsc, watch};

use crate::domain::{verify_pulse, verify_pulse_ed25519, wire_time, PulseMessage};
use crate::mqtt::connection::{
    connect_options, connect_with_backoff, create_client, Retry, Target,
};
use crate::mqtt::{GameOverMessage, Topics};

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub machine_id: String,
    pub secret: String,
    /// tcp://host:port or ssl://host:port.
    pub broker: String,
    pub ca_file: Option<std::path::PathBuf>,
    pub topic_prefix: String,
    /// Report game over this long after each credit.
    pub play_seconds: Option<u64>,
    /// Seed cabinets never ack and never announce their status; turn off to behave like one.
    pub ack: bool,
    /// Keep retrying an unreachable broker this long (None: forever). A refused login is
    /// final at once.
    pub give_up_after: Option<Duration>,
    /// The server's pulse public key: verify `sig_ed25519` with it instead of the HMAC.
    pub public_key: Option<ed25519_dalek::VerifyingKey>,
    /// Pulse ids already credited, one per line, kept across restarts.
    pub state_file: Option<PathBuf>,
    /// Pulses whose timestamp is older than this are refused (a replay).
    pub max_age: Option<Duration>,
}

/// The pulse ids a cabinet has credited, optionally backed by an append-only file that is
/// fsync'd before the pulse is acked, so a replay is refused after a reboot too.
struct Seen {
    ids: HashSet<String>,
    file: Option<std::fs::File>,
}

impl Seen {
    fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let Some(path) = path else {
            return Ok(Self {
                ids: HashSet::new(),
                file: None,
            });
        };
        let ids = match std::fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            ids,
            file: Some(file),
        })
    }

    /// True when the id is new; it is on disk before this returns.
    fn insert(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_owned()) {
            return false;
        }
        if let Some(f) = &mut self.file {
            if let Err(e) = writeln!(f, "{id}").and_then(|_| f.sync_data()) {
                tracing::error!(error = %e, "could not record a pulse id");
            }
        }
        true
    }
}

fn check_pulse(opts: &SimOptions, payload: &[u8]) -> Result<PulseMessage, String> {
    let p = match &opts.public_key {
        Some(key) => verify_pulse_ed25519(payload, key),
        None => verify_pulse(payload, &opts.secret),
    }
    .map_err(|e| e.to_string())?;
    if p.machine_id != opts.machine_id {
        return Err(format!("pulse for {} arrived here", p.machine_id));
    }
    if let Some(max) = opts.max_age {
        let at = chrono::DateTime::parse_from_rfc3339(&p.timestamp)
            .map_err(|_| format!("pulse timestamp {:?} is not a time", p.timestamp))?;
        let age = chrono::Utc::now().signed_duration_since(at);
        if age.num_milliseconds() > max.as_millis() as i64 {
            return Err(format!(
                "pulse {} is {} s old (limit {} s)",
                p.id,
                age.num_seconds(),
                max.as_secs()
            ));
        }
    }
    Ok(p)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimEvent {
    /// A new, correctly signed pulse.
    Credit(PulseMessage),
    /// A pulse id seen before (a redelivery): acked again, not credited.
    Duplicate(String),
    /// A pulse whose signature or format is wrong: ignored.
    Rejected(String),
    GameOverSent,
}

pub struct SimCabinet {
    client: paho::AsyncClient,
    topics: Topics,
    machine_id: String,
    announces: bool,
    connected: watch::Receiver<bool>,
}

impl SimCabinet {
    /// Connects (retrying until the broker answers) and starts handling pulses.
    pub async fn connect(
        opts: SimOptions,
    ) -> Result<(Self, mpsc::UnboundedReceiver<SimEvent>), paho::Error> {
        let topics = Topics::new(&opts.topic_prefix);
        let target = Target {
            uri: opts.broker.clone(),
            username: Some(opts.machine_id.clone()),
            password: Some(opts.secret.clone()),
            ca_file: opts.ca_file.clone(),
            client_cert: None,
            client_id: format!("cabinet-{}", opts.machine_id),
        };
        let client = create_client(&target)?;
        // A seed cabinet (ack off) announces nothing: no last will, no status.
        let will = opts.ack.then(|| {
            paho::Message::new_retained(topics.status(&opts.machine_id), "offline", paho::QOS_1)
        });
        let conn_opts = connect_options(&target, false, will)?;

        let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<paho::Message>();
        client.set_message_callback(move |_, msg| {
            if let Some(m) = msg {
                let _ = raw_tx.send(m);
            }
        });
        let (connected_tx, connected) = watch::channel(false);
        let connected_tx = Arc::new(connected_tx);
        {
            let topics = topics.clone();
            let id = opts.machine_id.clone();
            let announce = opts.ack;
            let connected_tx = connected_tx.clone();
            // On every (re)connect: subscribe, then announce ourselves. The broker handles
            // one client's packets in order, so by the time the server hears "online" (and
            // redelivers what we missed) our subscription is in place.
            client.set_connected_callback(move |c| {
                c.subscribe(topics.coinpulse(&id), paho::QOS_1);
                if announce {
                    c.publish(paho::Message::new_retained(
                        topics.status(&id),
                        "online",
                        paho::QOS_1,
                    ));
                }
                connected_tx.send_replace(true);
            });
        }
        client.set_connection_lost_callback(move |_| {
            connected_tx.send_replace(false);
        });
        // A refused login is final at once; an unreachable broker is retried.
        let retry = Retry {
            give_up_after: opts.give_up_after,
            stop_when_refused: true,
        };
        let what = format!("cabinet {}", opts.machine_id);
        connect_with_backoff(&client, conn_opts, &what, retry).await?;

        let ack_mode = opts.ack;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Seen::open(opts.state_file.as_deref()).map_err(
            |e| paho::Error::GeneralString(format!("pulse state file: {e}")),
        )?));
        let worker = client.clone();
        let worker_topics = topics.clone();
        tokio::spawn(async move {
            while let Some(msg) = raw_rx.recv().await {
                let event = match check_pulse(&opts, msg.payload()) {
                    Err(why) => SimEvent::Rejected(why),
                    Ok(p) => {
                        let first = seen.lock().expect("seen set").insert(&p.id);
                        if opts.ack {
                            let ack = serde_json::json!({ "id": p.id }).to_string();
                            worker.publish(paho::Message::new(
                                worker_topics.ack(&opts.machine_id),
                                ack,
                                paho::QOS_1,
                            ));
                        }
                        if first {
                            if let Some(secs) = opts.play_seconds {
                                let c = worker.clone();
                                let t = worker_topics.clone();
                                let id = opts.machine_id.clone();
                                let tx = events_tx.clone();
                                tokio::spawn(async move {
                                    tokio::time::sleep(Duration::from_secs(secs)).await;
                                    if publish_game_over(&c, &t, &id, Some(secs as i64), None)
                                        .await
                                        .is_ok()
                                    {
                                        let _ = tx.send(SimEvent::GameOverSent);
                                    }
                                });
                            }
                            SimEvent::Credit(p)
                        } else {
                            SimEvent::Duplicate(p.id)
                        }
                    }
                };
                if events_tx.send(event).is_err() {
                    break;
                }
            }
        });
        Ok((
            Self {
                client,
                topics,
                machine_id: target.username.unwrap_or_default(),
                announces: ack_mode,
                connected,
            },
            events_rx,
        ))
    }

    pub async fn game_over(&self, score: Option<i64>) -> Result<(), paho::Error> {
        publish_game_over(&self.client, &self.topics, &self.machine_id, None, score).await
    }

    /// Publishes raw bytes on one of this cabinet's topics (tests use it to send garbage).
    pub async fn publish_raw(&self, topic: &str, payload: &[u8]) -> Result<(), paho::Error> {
        self.client
            .publish(paho::Message::new(topic, payload, paho::QOS_1))
            .await
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Whether the cabinet is connected to its broker right now; changes when it loses the
    /// broker and when paho's automatic reconnect regains it.
    pub fn connection(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// A clean goodbye: status offline (retained, unless a seed cabinet), then disconnect.
    pub async fn disconnect(self) {
        if !self.announces {
            let _ = self.client.disconnect(None).await;
            return;
        }
        let _ = self
            .client
            .publish(paho::Message::new_retained(
                self.topics.status(&self.machine_id),
                "offline",
                paho::QOS_1,
            ))
            .await;
        let _ = self.client.disconnect(None).await;
    }
}

async fn publish_game_over(
    client: &paho::AsyncClient,
    topics: &Topics,
    machine_id: &str,
    play_seconds: Option<i64>,
    score: Option<i64>,
) -> Result<(), paho::Error> {
    let msg = GameOverMessage {
        machine_id: machine_id.to_owned(),
        status: "game_over".into(),
        timestamp: Some(wire_time(chrono::Utc::now())),
        score,
        play_seconds,
        id: Some(uuid::Uuid::now_v7().to_string()),
    };
    let payload = serde_json::to_string(&msg).expect("serialisable");
    client
        .publish(paho::Message::new(
            topics.gameover(machine_id),
            payload,
            paho::QOS_1,
        ))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{sign_pulse, PulseSource};

    fn opts(key: &ed25519_dalek::SigningKey) -> SimOptions {
        SimOptions {
            machine_id: "cab-1".into(),
            secret: "s".into(),
            broker: String::new(),
            ca_file: None,
            topic_prefix: "arcade/machine".into(),
            play_seconds: None,
            ack: true,
            give_up_after: None,
            public_key: Some(key.verifying_key()),
            state_file: None,
            max_age: Some(Duration::from_secs(600)),
        }
    }

    fn pulse(id: &str, machine_id: &str, at: chrono::DateTime<chrono::Utc>) -> PulseMessage {
        PulseMessage {
            id: id.into(),
            machine_id: machine_id.into(),
            credits: 1,
            timestamp: wire_time(at),
            source: PulseSource::Stripe,
        }
    }

    #[test]
    fn pulses_are_checked_by_key_machine_and_age() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        let o = opts(&key);
        let now = chrono::Utc::now();
        let good = sign_pulse(&pulse("p1", "cab-1", now), "s", &key);
        assert_eq!(check_pulse(&o, good.as_bytes()).unwrap().id, "p1");
        let other = sign_pulse(&pulse("p2", "cab-2", now), "s", &key);
        assert!(check_pulse(&o, other.as_bytes())
            .unwrap_err()
            .contains("cab-2"));
        let old = sign_pulse(
            &pulse("p3", "cab-1", now - chrono::Duration::hours(2)),
            "s",
            &key,
        );
        assert!(check_pulse(&o, old.as_bytes()).unwrap_err().contains("old"));
        // Signed with the cabinet secret but not the server's key: a sniffed password.
        let forger = ed25519_dalek::SigningKey::from_bytes(&[4u8; 32]);
        let forged = sign_pulse(&pulse("p4", "cab-1", now), "s", &forger);
        assert!(check_pulse(&o, forged.as_bytes()).is_err());
    }

    #[test]
    fn seen_pulse_ids_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cab-1.pulses");
        let mut seen = Seen::open(Some(&path)).unwrap();
        assert!(seen.insert("p1"));
        assert!(!seen.insert("p1"));
        drop(seen);
        let mut again = Seen::open(Some(&path)).unwrap();
        assert!(!again.insert("p1"), "a replay after a reboot is refused");
        assert!(again.insert("p2"));
    }
}
