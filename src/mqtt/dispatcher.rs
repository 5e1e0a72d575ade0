//! The outbox dispatcher: publishes each pulse right after its commit, marks it published
//! only on the broker's PUBACK, and republishes what is left after a (re)connect, a restart
//! or a failed publish. Pulses are never merged: one message per pulse id.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use paho_mqtt as paho;
use tokio::sync::mpsc;

use super::connection::Signal;
use super::{MqttStats, Topics};
use crate::domain::db_time;
use crate::store::{OutboxPulse, Store};
use crate::writer::Writer;

/// How far back a reconnecting cabinet is sent pulses it never acknowledged. Older ones are
/// left for the owner to look at rather than surprise the next player.
const REDELIVER_WINDOW: chrono::Duration = chrono::Duration::hours(1);
/// An unpublished pulse older than this is swept up even without a reconnect.
const SWEEP_AGE: chrono::Duration = chrono::Duration::seconds(5);

pub struct Dispatcher {
    pub client: paho::AsyncClient,
    pub topics: Topics,
    pub store: Store,
    pub writer: Writer,
    pub stats: Arc<MqttStats>,
}

impl Dispatcher {
    pub async fn run(
        self,
        mut fresh: mpsc::UnboundedReceiver<OutboxPulse>,
        mut signals: mpsc::UnboundedReceiver<Signal>,
    ) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, bool)>();
        let mut inflight: HashSet<String> = HashSet::new();
        let mut sweep = tokio::time::interval(Duration::from_secs(2));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(p) = fresh.recv() => {
                    self.publish(p, &mut inflight, &done_tx);
                }
                Some((id, ok)) = done_rx.recv() => {
                    let mut acked = Vec::new();
                    let mut settle = |id: String, ok: bool| {
                        inflight.remove(&id);
                        if ok { acked.push(id) }
                    };
                    settle(id, ok);
                    while let Ok((id, ok)) = done_rx.try_recv() {
                        settle(id, ok);
                    }
                    if !acked.is_empty() {
                        self.stats.published.fetch_add(acked.len() as u64, Ordering::Relaxed);
                        self.writer.published(acked).await;
                    }
                }
                Some(sig) = signals.recv() => match sig {
                    Signal::Connected => {
                        self.subscribe().await;
                        self.republish(None, &mut inflight, &done_tx).await;
                    }
                    Signal::CabinetOnline(machine_id) => {
                        self.redeliver(&machine_id, &mut inflight, &done_tx).await;
                    }
                },
                _ = sweep.tick() => {
                    if self.stats.is_connected() {
                        let cutoff = db_time(chrono::Utc::now() - SWEEP_AGE);
                        self.republish(Some(&cutoff), &mut inflight, &done_tx).await;
                    }
                }
                else => break,
            }
        }
    }

    fn publish(
        &self,
        p: OutboxPulse,
        inflight: &mut HashSet<String>,
        done: &mpsc::UnboundedSender<(String, bool)>,
    ) {
        if !self.stats.is_connected() || !inflight.insert(p.id.clone()) {
            // Offline: it stays in the outbox and goes out on reconnect.
            return;
        }
        let msg = paho::Message::new(self.topics.coinpulse(&p.machine_id), p.payload, paho::QOS_1);
        let token = self.client.publish(msg);
        let done = done.clone();
        tokio::spawn(async move {
            let ok = match token.await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(pulse_id = %p.id, machine_id = %p.machine_id, error = %e, "pulse publish failed; will retry");
                    false
                }
            };
            let _ = done.send((p.id, ok));
        });
    }

    async fn subscribe(&self) {
        let filters = self.topics.subscriptions();
        let qos = [paho::QOS_1; 3];
        match self.client.subscribe_many(&filters, &qos).await {
            Ok(_) => self.stats.connected.store(true, Ordering::Relaxed),
            Err(e) => tracing::error!(error = %e, "MQTT subscribe failed"),
        }
    }

    /// Publishes every unpublished pulse (created before `before`, when given).
    async fn republish(
        &self,
        before: Option<&str>,
        inflight: &mut HashSet<String>,
        done: &mpsc::UnboundedSender<(String, bool)>,
    ) {
        let mut cursor: Option<(String, String)> = None;
        let mut count = 0usize;
        loop {
            let after = cursor.as_ref().map(|(c, i)| (c.as_str(), i.as_str()));
            let page = match self.store.unpublished_pulses(after, 500).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "could not read the outbox");
                    return;
                }
            };
            let Some(last) = page.last() else { break };
            cursor = Some((last.created_at.clone(), last.id.clone()));
            let full = page.len() == 500;
            for p in page {
                if before.is_some_and(|b| p.created_at.as_str() >= b) {
                    continue;
                }
                if !inflight.contains(&p.id) {
                    count += 1;
                    self.publish(p, inflight, done);
                }
            }
            if !full {
                break;
            }
        }
        if count > 0 {
            tracing::info!(count, "republished pulses from the outbox");
        }
    }

    /// A cabinet announced itself online: send what it never acknowledged. A PUBACK only
    /// means the broker took the message; a broker that restarted, or a cabinet that crashed
    /// before crediting, can still lose it. Only cabinets that speak coinpulse's protocol
    /// announce their status, and those ignore pulse ids they have already seen, so this
    /// never double-credits; seed cabinets, which do neither, are never sent repeats.
    async fn redeliver(
        &self,
        machine_id: &str,
        inflight: &mut HashSet<String>,
        done: &mpsc::UnboundedSender<(String, bool)>,
    ) {
        let since = db_time(chrono::Utc::now() - REDELIVER_WINDOW);
        match self.store.unacked_pulses(machine_id, &since).await {
            Ok(pulses) => {
                if !pulses.is_empty() {
                    tracing::info!(
                        machine_id,
                        count = pulses.len(),
                        "redelivering unacknowledged pulses"
                    );
                }
                for p in pulses {
                    self.publish(p, inflight, done);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, machine_id, "could not read unacknowledged pulses")
            }
        }
    }
}
