//! An MQTT test cabinet: the real cabinet agent (`coinpulse-cabinet`, the same as
//! `coinpulse cabinet-sim`) logged in as a registered cabinet, and the events it reports.

use std::time::Duration;

use coinpulse_cabinet::{Agent, AgentOptions, Event as SimEvent, Journal};
use tokio::sync::mpsc;

use super::{unique, TestApp};

/// A cabinet as the tests see it: credentials plus the events its simulator reports.
pub struct Cabinet {
    pub machine_id: String,
    pub secret: String,
    pub sim: Option<Agent>,
    pub events: mpsc::UnboundedReceiver<SimEvent>,
}

impl Cabinet {
    /// The next event within `secs` seconds.
    pub async fn next_event(&mut self, secs: u64) -> Option<SimEvent> {
        tokio::time::timeout(Duration::from_secs(secs), self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Fails the test if a credit arrives within `secs` seconds; redeliveries of pulses
    /// already credited are not credits.
    pub async fn expect_no_credit(&mut self, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if let SimEvent::Credit(p) = ev {
                panic!("unexpected credit for {}: {p:?}", self.machine_id);
            }
        }
    }

    /// The next credit, failing the test on timeout or on anything else first. Redeliveries
    /// of pulses already credited are allowed (MQTT is at-least-once; the cabinet ignores
    /// ids it has seen), so they are skipped; a second *credit* would be a real double.
    pub async fn expect_credit(&mut self) -> coinpulse::domain::PulseMessage {
        loop {
            match self.next_event(15).await {
                Some(SimEvent::Credit(p)) => return p,
                Some(SimEvent::Duplicate(_)) => continue,
                other => panic!("expected a credit for {}, got {other:?}", self.machine_id),
            }
        }
    }
}

impl TestApp {
    /// Registers a cabinet and connects its simulator (acking, like a current cabinet).
    pub async fn cabinet(&self, price: i64, currency: &str) -> Cabinet {
        let machine_id = unique("cab");
        let secret = self.register(&machine_id, price, currency).await;
        self.connect_cabinet(&machine_id, &secret, true).await
    }

    pub async fn connect_cabinet(&self, machine_id: &str, secret: &str, ack: bool) -> Cabinet {
        let (sim, events) = start_agent(AgentOptions {
            machine_id: machine_id.to_owned(),
            secret: secret.to_owned(),
            broker: self.broker.clone(),
            ca_file: self.broker_ca_file.clone(),
            topic_prefix: self.topic_prefix.clone(),
            public_key: None,
            max_age: None,
            ack,
            play_seconds: None,
            connect: coinpulse_cabinet::Connect::Wait {
                give_up_after: Some(Duration::from_secs(10)),
                stop_when_refused: true,
            },
        })
        .await;
        if ack {
            // Its retained "online" reaches the server asynchronously; pages judge by it.
            let path = format!("/cabinets/{machine_id}");
            self.eventually("the cabinet is seen online", || async {
                self.get(&path).await["online"] == true
            })
            .await;
        }
        Cabinet {
            machine_id: machine_id.to_owned(),
            secret: secret.to_owned(),
            sim: Some(sim),
            events,
        }
    }
}

/// Starts an agent with an in-memory journal and no outputs, and passes on its events
/// except connection changes (tests judge connections through the server).
pub async fn start_agent(opts: AgentOptions) -> (Agent, mpsc::UnboundedReceiver<SimEvent>) {
    let (agent, mut raw) = Agent::start(opts, Journal::in_memory(), Vec::new())
        .await
        .expect("cabinet connects");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = raw.recv().await {
            if !matches!(ev, SimEvent::Connected | SimEvent::Disconnected) && tx.send(ev).is_err() {
                break;
            }
        }
    });
    (agent, rx)
}
