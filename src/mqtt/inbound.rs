//! Messages from cabinets: game over, pulse acks and online/offline status. Anything that
//! does not parse, or whose topic and body disagree, is logged and counted, never acted on.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use paho_mqtt as paho;
use tokio::sync::mpsc;

use super::{parse_gameover, parse_status, AckMessage, Inbound, MqttStats, Topics};
use crate::delivery::Signal;
use crate::writer::{PlayInput, Writer};

pub async fn run(
    mut rx: mpsc::Receiver<paho::Message>,
    topics: Topics,
    writer: Writer,
    stats: Arc<MqttStats>,
    signals: mpsc::Sender<Signal>,
) {
    while let Some(msg) = rx.recv().await {
        stats.received.fetch_add(1, Ordering::Relaxed);
        let topic = msg.topic();
        let Some((machine_id, kind)) = super::parse_topic(&topics, topic) else {
            stats.reject(topic, "not a cabinet topic coinpulse understands");
            continue;
        };
        // Writes are queued, not awaited: the writer keeps their order and batches them.
        match kind {
            Inbound::GameOver => match parse_gameover(msg.payload(), &machine_id) {
                Ok(g) => {
                    writer
                        .queue_play(PlayInput::from_gameover(&g, "mqtt"))
                        .await
                }
                Err(why) => stats.reject(topic, &why),
            },
            Inbound::Ack => match serde_json::from_slice::<AckMessage>(msg.payload()) {
                Ok(ack) => writer.queue_ack(machine_id.as_str(), &ack.id).await,
                Err(e) => stats.reject(topic, &format!("not an ack: {e}")),
            },
            Inbound::Status => match parse_status(msg.payload()) {
                Some(online) => {
                    writer.queue_status(machine_id.as_str(), online).await;
                    // A retained status is old news replayed on subscribe; only a live
                    // "online" means the cabinet has just (re)connected.
                    if online && !msg.retained() {
                        let _ = signals
                            .send(Signal::CabinetOnline(
                                machine_id.to_string(),
                                crate::domain::now_db(),
                            ))
                            .await;
                    }
                }
                None => stats.reject(topic, "status must be online or offline"),
            },
        }
    }
}
