//! Hands a pulse to the broker in the same breath as its commit.

use crate::mqtt::broker::Presence;
use crate::mqtt::Topics;
use crate::store::{OutboxPulse, Store};

/// Where the writer hands new pulses the moment they are committed, with no queue or task
/// between the fsync and the broker. A seed cabinet's pulse is marked handed in that same
/// commit, so no crash can make it go out twice, and the gap in which a crash could lose
/// it is as short as it can be (see `delivery::dispatcher`).
#[derive(Clone)]
pub enum Relay {
    /// Every pulse whose cabinet has a live subscription, into the embedded broker's router.
    Embedded { presence: Presence, topics: Topics },
    /// Seed cabinets' pulses, through the server's connection to an external broker (pulses
    /// for cabinets that ack go through the dispatcher, which marks them on PUBACK).
    External {
        client: paho_mqtt::AsyncClient,
        topics: Topics,
        stats: std::sync::Arc<crate::mqtt::MqttStats>,
    },
}

impl Relay {
    /// Whether this pulse can be handed over right now.
    pub(crate) async fn takes(&self, p: &OutboxPulse) -> bool {
        match self {
            Self::Embedded { presence, .. } => presence.deliverable(&p.machine_id).await,
            Self::External { stats, .. } => !p.acks && stats.is_connected(),
        }
    }

    pub(crate) async fn hand(&self, store: &Store, p: &OutboxPulse) -> bool {
        match self {
            Self::Embedded { presence, topics } => {
                presence
                    .route(&topics.coinpulse(&p.machine_id), &p.payload)
                    .await
            }
            Self::External { client, topics, .. } => {
                let msg = paho_mqtt::Message::new(
                    topics.coinpulse(&p.machine_id),
                    p.payload.as_bytes(),
                    paho_mqtt::QOS_1,
                );
                // paho's own thread writes it to the socket at once; the PUBACK is
                // awaited off the writer's path, and a failure takes the mark back.
                let token = client.publish(msg);
                let (store, id) = (store.clone(), p.id.clone());
                tokio::spawn(async move {
                    if let Err(e) = token.await {
                        tracing::warn!(pulse_id = %id, error = %e, "pulse publish failed; will retry");
                        unmark(&store, &id).await;
                    }
                });
                true
            }
        }
    }
}

/// Takes back the handed mark of a pulse that was not sent after all.
pub(crate) async fn unmark(store: &Store, id: &str) {
    if let Err(e) = store.unmark_handed(&[id.to_owned()]).await {
        tracing::error!(pulse_id = %id, error = %e, "pulse not sent but marked handed; resend it by hand");
    }
}

/// Hands a just-committed pulse to the broker; on failure `p.routed` goes back to false
/// and the dispatcher's sweep sends it later.
pub(crate) async fn relay_now(store: &Store, relay: Option<&Relay>, p: &mut OutboxPulse) {
    let Some(relay) = relay else {
        p.routed = false;
        return;
    };
    if relay.hand(store, p).await {
        return;
    }
    p.routed = false;
    if !p.acks {
        // Marked handed in the commit but never sent: take the mark back.
        unmark(store, &p.id).await;
    }
}
