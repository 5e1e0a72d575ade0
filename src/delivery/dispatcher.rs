//! The outbox dispatcher: the one owner of each pulse's delivery state after its commit
//! (queued → handed to the broker → acked). One message per pulse id, never merged.
//!
//! Rules, in the order they matter for money:
//! - With the embedded broker a pulse is routed in-process, and only while its cabinet has
//!   a live subscription: handing it to the broker hands it to the cabinet's connection.
//!   Otherwise it waits in the outbox and goes out the moment the cabinet subscribes.
//! - The "handed" mark is committed before the pulse leaves the in-flight set, so the sweep
//!   cannot read a stale row and send it twice.
//! - Cabinets that ack are sent first and marked after (a crash in between means a repeat,
//!   which they ignore by id), and get every unacked pulse again on each new subscription.
//!   Seed cabinets, which never ack and never dedupe, are marked first and sent after: a
//!   crash in between (microseconds with the embedded broker) can cost a pulse but can
//!   never send one twice, and a handed pulse is never sent to them again.
//! - With an external broker nobody tells us who is subscribed: pulses go out at once and
//!   the cabinet's persistent session holds them; a live `online` from an acking cabinet
//!   stands in for the subscription event.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use paho_mqtt as paho;
use tokio::sync::mpsc;

use crate::domain::db_time;
use crate::mqtt::broker::{BrokerEvent, Presence};
use crate::mqtt::{MqttStats, Topics};
use crate::store::{OutboxPulse, Store};
use crate::writer::Writer;

/// How far back a resubscribing cabinet is sent pulses it never acknowledged. Older ones
/// are left for the owner to look at rather than surprise the next player.
const REDELIVER_WINDOW: chrono::Duration = chrono::Duration::hours(1);
/// An unpublished pulse older than this is swept up even without an event.
const SWEEP_AGE: chrono::Duration = chrono::Duration::seconds(1);
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Pulses handed to paho and not yet settled. Past this, fresh pulses stay in the outbox
/// for the sweep: memory stays bounded and paho never refuses a publish.
pub const MAX_INFLIGHT: usize = 8_192;

/// Events the dispatcher reacts to besides fresh pulses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// The server's own connection is up (again).
    Connected,
    /// A live (not retained) `online` on a cabinet's status topic, and when it arrived.
    /// With the embedded broker the subscription event is used instead and this is ignored.
    CabinetOnline(String, String),
}

pub enum Settle {
    /// The broker took a pulse for a cabinet that acks: Ok(id), or Err(id) on failure.
    Answered(Result<String, String>),
    /// These handed marks are committed.
    Marked(Vec<String>),
    /// A seed cabinet's pulse is marked handed: send it now.
    Premarked(OutboxPulse),
    /// A seed cabinet's pulse left (Ok) or could not be sent and was unmarked (Err).
    SeedDone(String),
}

/// Where pulses go.
#[derive(Clone)]
pub enum Outlet {
    /// Straight into the embedded broker's router, which knows who is subscribed.
    Embedded(Presence),
    /// Through the server's MQTT connection to an external broker.
    External(paho::AsyncClient),
}

pub struct Dispatcher {
    /// The server's own MQTT connection: its subscriptions carry cabinets' messages in.
    pub client: paho::AsyncClient,
    pub outlet: Outlet,
    pub topics: Topics,
    pub store: Store,
    pub writer: Writer,
    pub stats: Arc<MqttStats>,
    /// The shared-subscription group replicas on an external broker split messages by
    /// (None: every message to this server).
    pub share_group: Option<String>,
}

/// Pulses in flight (handed to the broker, handed mark not yet committed) and the channel
/// on which their publishes and marks settle.
pub struct Flight {
    ids: HashSet<String>,
    settle: mpsc::Sender<Settle>,
}

impl Flight {
    pub fn new() -> (Self, mpsc::Receiver<Settle>) {
        // Capacity above MAX_INFLIGHT: every publish sends one answer and at most one
        // mark, so senders never wait on this channel.
        let (settle, rx) = mpsc::channel::<Settle>(2 * MAX_INFLIGHT + 16);
        let flight = Self {
            ids: HashSet::new(),
            settle,
        };
        (flight, rx)
    }

    /// Whether this pulse is in flight now.
    pub fn contains(&self, pulse_id: &str) -> bool {
        self.ids.contains(pulse_id)
    }
}

/// Everything the dispatcher reacts to, one at a time.
pub enum Input {
    /// A pulse the writer just committed.
    Fresh(OutboxPulse),
    Broker(BrokerEvent),
    Signal(Signal),
    /// Time to look for pulses nothing else sent.
    Sweep,
}

impl Dispatcher {
    pub async fn run(
        self,
        mut fresh: mpsc::Receiver<OutboxPulse>,
        mut signals: mpsc::Receiver<Signal>,
        mut broker: mpsc::Receiver<BrokerEvent>,
    ) {
        let (mut flight, mut settle_rx) = Flight::new();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let input = tokio::select! {
                biased;
                Some(s) = settle_rx.recv() => {
                    self.settle_all(s, &mut settle_rx, &mut flight);
                    continue;
                }
                Some(p) = fresh.recv() => Input::Fresh(p),
                Some(ev) = broker.recv() => Input::Broker(ev),
                Some(sig) = signals.recv() => Input::Signal(sig),
                _ = sweep.tick() => Input::Sweep,
                else => break,
            };
            self.dispatch(input, &mut flight).await;
        }
    }

    /// Settles `first` and every other answer already waiting, then commits the handed
    /// marks of all pulses the broker took, in one write.
    pub fn settle_all(&self, first: Settle, rx: &mut mpsc::Receiver<Settle>, flight: &mut Flight) {
        let mut answered = Vec::new();
        self.settle(first, flight, &mut answered);
        while let Ok(s) = rx.try_recv() {
            self.settle(s, flight, &mut answered);
        }
        if !answered.is_empty() {
            self.mark(answered, flight);
        }
    }

    /// One step of the loop: reacts to one input.
    pub async fn dispatch(&self, input: Input, flight: &mut Flight) {
        match input {
            Input::Fresh(p) => {
                if !p.routed {
                    self.publish(p, flight).await;
                } else if p.acks && flight.ids.insert(p.id.clone()) {
                    // The writer already handed it over; only the mark is left.
                    let _ = flight.settle.try_send(Settle::Answered(Ok(p.id)));
                }
            }
            Input::Broker(BrokerEvent::Subscribed(machine_id)) => {
                self.deliver_pending(&machine_id, false, None, flight).await;
            }
            Input::Signal(Signal::Connected) => {
                self.subscribe().await;
                self.sweep(&db_time(chrono::Utc::now() + SWEEP_AGE), flight)
                    .await;
            }
            Input::Signal(Signal::CabinetOnline(machine_id, at)) => {
                // A live `online` is itself proof of a coinpulse cabinet; its status write
                // may not be committed yet, so say so here.
                if matches!(self.outlet, Outlet::External(_)) {
                    self.deliver_pending(&machine_id, true, Some(&at), flight)
                        .await;
                }
            }
            Input::Sweep => {
                if self.stats.is_connected() {
                    let cutoff = db_time(chrono::Utc::now() - SWEEP_AGE);
                    self.sweep(&cutoff, flight).await;
                }
            }
        }
    }

    fn settle(&self, s: Settle, flight: &mut Flight, answered: &mut Vec<String>) {
        match s {
            Settle::Answered(Ok(id)) => answered.push(id),
            // Failed publishes leave the set at once: the sweep retries them.
            Settle::Answered(Err(id)) | Settle::SeedDone(id) => {
                flight.ids.remove(&id);
            }
            Settle::Marked(ids) => {
                for id in ids {
                    flight.ids.remove(&id);
                }
            }
            Settle::Premarked(p) => self.send(p, flight),
        }
    }

    /// Commits the handed marks; the ids leave the in-flight set only once that commit is
    /// done, so every later read of the outbox sees them as handed.
    fn mark(&self, ids: Vec<String>, flight: &Flight) {
        self.stats
            .published
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
        let writer = self.writer.clone();
        let settle = flight.settle.clone();
        tokio::spawn(async move {
            loop {
                match writer.handed(ids.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        // Keep them in flight (not re-sent) until the mark sticks.
                        tracing::warn!(error = %e, count = ids.len(), "could not record handed pulses; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            let _ = settle.send(Settle::Marked(ids)).await;
        });
    }

    /// Takes a pulse into flight if it can go now. Cabinets that ack are sent at once and
    /// marked once the broker has it; seed cabinets are marked first (see the module doc).
    async fn publish(&self, p: OutboxPulse, flight: &mut Flight) {
        if !self.stats.is_connected()
            || flight.ids.len() >= MAX_INFLIGHT
            || flight.ids.contains(&p.id)
        {
            // It stays in the outbox; a reconnect or the sweep sends it.
            return;
        }
        if let Outlet::Embedded(presence) = &self.outlet {
            if !presence.deliverable(&p.machine_id).await {
                return;
            }
        }
        flight.ids.insert(p.id.clone());
        if p.acks {
            self.send(p, flight);
            return;
        }
        let writer = self.writer.clone();
        let settle = flight.settle.clone();
        tokio::spawn(async move {
            let next = match writer.handed(vec![p.id.clone()]).await {
                Ok(()) => Settle::Premarked(p),
                Err(e) => {
                    tracing::warn!(pulse_id = %p.id, error = %e, "could not mark a pulse handed; will retry");
                    Settle::SeedDone(p.id)
                }
            };
            let _ = settle.send(next).await;
        });
    }

    /// Hands one pulse (already in flight) to the broker.
    fn send(&self, p: OutboxPulse, flight: &Flight) {
        let topic = self.topics.coinpulse(&p.machine_id);
        let settle = flight.settle.clone();
        let writer = self.writer.clone();
        let outlet = self.outlet.clone();
        tokio::spawn(async move {
            let ok = match &outlet {
                Outlet::Embedded(presence) => presence.route(&topic, &p.payload).await,
                Outlet::External(client) => {
                    let msg = paho::Message::new(topic, p.payload.as_bytes(), paho::QOS_1);
                    match client.publish(msg).await {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::warn!(pulse_id = %p.id, machine_id = %p.machine_id, error = %e, "pulse publish failed; will retry");
                            false
                        }
                    }
                }
            };
            let next = match (p.acks, ok) {
                (true, true) => Settle::Answered(Ok(p.id)),
                (true, false) => Settle::Answered(Err(p.id)),
                (false, true) => Settle::SeedDone(p.id),
                (false, false) => {
                    // Never sent: take the mark back so it goes out later.
                    if let Err(e) = writer.unhanded(vec![p.id.clone()]).await {
                        tracing::error!(pulse_id = %p.id, error = %e, "pulse was not sent and is still marked handed; resend it by hand");
                    }
                    Settle::SeedDone(p.id)
                }
            };
            let _ = settle.send(next).await;
        });
    }

    async fn subscribe(&self) {
        let filters = match &self.share_group {
            Some(group) => crate::mqtt::shared_subscriptions(&self.topics, group),
            None => crate::mqtt::subscriptions(&self.topics),
        };
        let qos = [paho::QOS_1; 3];
        match self.client.subscribe_many(&filters, &qos).await {
            Ok(_) => self.stats.connected.store(true, Ordering::Relaxed),
            Err(e) => tracing::error!(error = %e, "MQTT subscribe failed"),
        }
    }

    /// Publishes every pulse not yet handed, created before `before`, that this replica
    /// can claim (no other replica is publishing it).
    async fn sweep(&self, before: &str, flight: &mut Flight) {
        let mut cursor: Option<(String, String)> = None;
        let mut count = 0usize;
        loop {
            let after = cursor.as_ref().map(|(c, i)| (c.as_str(), i.as_str()));
            let page = match self.store.claim_unpublished(before, after, 500).await {
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
                if flight.ids.contains(&p.id) {
                    continue;
                }
                let before_len = flight.ids.len();
                self.publish(p, flight).await;
                count += flight.ids.len() - before_len;
            }
            if !full || flight.ids.len() >= MAX_INFLIGHT {
                break;
            }
        }
        if count > 0 {
            tracing::info!(count, "published pulses from the outbox");
        }
    }

    /// The cabinet (re)subscribed: a cabinet that speaks coinpulse's protocol gets
    /// everything it never acked (recent enough); a seed cabinet gets only what was never
    /// handed.
    ///
    /// `online_at`: when the cabinet announced itself (external broker). What was handed,
    /// or made, after that went to its live subscription and is not sent again.
    async fn deliver_pending(
        &self,
        machine_id: &str,
        speaks_protocol: bool,
        online_at: Option<&str>,
        flight: &mut Flight,
    ) {
        let acks = match self.store.cabinet(machine_id).await {
            Ok(Some(c)) => c.acks_pulses || speaks_protocol,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, machine_id, "could not read the cabinet");
                return;
            }
        };
        let since = if acks {
            db_time(chrono::Utc::now() - REDELIVER_WINDOW)
        } else {
            String::new()
        };
        let pending = self.store.claim_pending(machine_id, &since, !acks).await;
        match pending {
            Ok(pulses) => {
                // A seed cabinet's pulse already in flight is being sent once: never again.
                let pulses: Vec<_> = pulses
                    .into_iter()
                    .filter(|p| acks || !flight.ids.contains(&p.id))
                    .filter(|p| {
                        online_at.is_none_or(|at| {
                            p.published_at.as_deref().unwrap_or(&p.created_at) < at
                        })
                    })
                    .collect();
                if !pulses.is_empty() {
                    tracing::info!(
                        machine_id,
                        count = pulses.len(),
                        acks,
                        "delivering pending pulses"
                    );
                }
                for mut p in pulses {
                    if flight.ids.contains(&p.id) {
                        // In flight to a connection that has just gone away (its handed
                        // mark is not committed yet): this connection gets it too. The
                        // cabinet acks and dedupes by id, so a repeat is harmless.
                        p.acks = true;
                        self.send(p, flight);
                    } else {
                        self.publish(p, flight).await;
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, machine_id, "could not read pending pulses")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    use crate::domain::Keys;
    use crate::mqtt::broker::{self, BrokerOptions};
    use crate::mqtt::connection::{connect_options, create_client, Target};
    use crate::writer::{self, Writer};

    const MACHINE: &str = "cab-1";
    const SALT: &str = "salt";

    struct Rig {
        dispatcher: Dispatcher,
        writer: Writer,
        keys: Keys,
        broker: broker::EmbeddedBroker,
        _dir: tempfile::TempDir,
    }

    async fn rig() -> Rig {
        let keys = Keys::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let secret = keys.cabinet_secret(MACHINE, SALT);
        let (store, dir) = crate::test_support::store_with_cabinet(MACHINE, SALT, &secret).await;
        let topics = Topics::new("arcade/machine");
        let (events, _events_rx) = mpsc::channel(16);
        let broker = broker::start(
            BrokerOptions {
                listen: Some("127.0.0.1:0".parse().unwrap()),
                tls: None,
                topics: topics.clone(),
                internal_password: keys.internal_mqtt_password(),
                server_client_id: "coinpulse-server".into(),
            },
            store.clone(),
            events,
        )
        .await
        .unwrap();
        let stats = Arc::new(MqttStats::default());
        stats.connected.store(true, Ordering::Relaxed);
        let core = writer::Core {
            store: store.clone(),
            keys: keys.clone(),
            relay: None,
            stats: stats.clone(),
        };
        let (outbox, _outbox_rx) = mpsc::channel(16);
        let (writer, _task) = Writer::spawn(core, outbox);
        // The server's own connection is not used by the inputs these tests send.
        let client = create_client(&target(broker.addr, "coinpulse-server", None)).unwrap();
        let dispatcher = Dispatcher {
            client,
            outlet: Outlet::Embedded(broker.presence.clone()),
            topics,
            store,
            writer: writer.clone(),
            stats,
            share_group: None,
        };
        Rig {
            dispatcher,
            writer,
            keys,
            broker,
            _dir: dir,
        }
    }

    fn target(addr: std::net::SocketAddr, client_id: &str, password: Option<String>) -> Target {
        Target {
            uri: format!("tcp://{addr}"),
            username: password.as_ref().map(|_| client_id.to_owned()),
            password,
            ca_file: None,
            client_cert: None,
            client_id: client_id.to_owned(),
        }
    }

    /// Runs the settle side of the loop until `pulse_id` leaves the in-flight set.
    async fn settle_until_landed(
        d: &Dispatcher,
        flight: &mut Flight,
        rx: &mut mpsc::Receiver<Settle>,
        pulse_id: &str,
    ) {
        while flight.contains(pulse_id) {
            let s = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("the pulse settles")
                .unwrap();
            d.settle_all(s, rx, flight);
        }
    }

    #[tokio::test]
    async fn a_pulse_waits_for_its_cabinet_and_goes_out_when_it_subscribes() {
        let rig = rig().await;
        let d = &rig.dispatcher;
        let pulse = rig.writer.grant(MACHINE, 2, "test").await.unwrap().unwrap();
        let (mut flight, mut settle_rx) = Flight::new();

        // Nobody is connected: the pulse stays in the outbox.
        d.dispatch(Input::Fresh(pulse.clone()), &mut flight).await;
        assert!(!flight.contains(&pulse.id));
        assert_eq!(d.store.count_unpublished().await.unwrap(), 1);

        // The cabinet connects and subscribes; the subscription event sends the pulse.
        let secret = rig.keys.cabinet_secret(MACHINE, SALT);
        let mut cabinet =
            create_client(&target(rig.broker.addr, MACHINE, Some(secret.clone()))).unwrap();
        let mut stream = cabinet.get_stream(16);
        cabinet
            .connect(
                connect_options(&target(rig.broker.addr, MACHINE, Some(secret)), true, None)
                    .unwrap(),
            )
            .await
            .unwrap();
        cabinet
            .subscribe(d.topics.coinpulse(MACHINE), 1)
            .await
            .unwrap();
        d.dispatch(
            Input::Broker(BrokerEvent::Subscribed(MACHINE.into())),
            &mut flight,
        )
        .await;
        settle_until_landed(d, &mut flight, &mut settle_rx, &pulse.id).await;

        let msg = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the cabinet gets its pulse")
            .flatten()
            .expect("a message");
        assert_eq!(msg.payload_str(), pulse.payload);
        assert_eq!(
            d.store.count_unpublished().await.unwrap(),
            0,
            "marked handed"
        );

        // A second subscription does not send a seed cabinet's handed pulse again.
        d.dispatch(
            Input::Broker(BrokerEvent::Subscribed(MACHINE.into())),
            &mut flight,
        )
        .await;
        assert!(!flight.contains(&pulse.id));
        let again = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
        assert!(again.is_err(), "no repeat for a cabinet that never acks");
        rig.broker.shutdown();
    }
}
