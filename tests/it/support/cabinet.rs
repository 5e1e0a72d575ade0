//! An MQTT test cabinet: the real simulator (the same as `coinpulse cabinet-sim`) logged in
//! as a registered cabinet, and the events it reports.

use std::time::Duration;

use coinpulse::cli::sim::{SimCabinet, SimEvent, SimOptions};
use tokio::sync::mpsc;

use super::{unique, TestApp};

/// A cabinet as the tests see it: credentials plus the events its simulator reports.
pub struct Cabinet {
    pub machine_id: String,
    pub secret: String,
    pub sim: Option<SimCabinet>,
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
        let (sim, events) = SimCabinet::connect(SimOptions {
            machine_id: machine_id.to_owned(),
            secret: secret.to_owned(),
            broker: self.broker.clone(),
            ca_file: None,
            topic_prefix: self.topic_prefix.clone(),
            play_seconds: None,
            ack,
            give_up_after: Some(Duration::from_secs(10)),
            public_key: None,
            state_file: None,
            max_age: None,
        })
        .await
        .expect("cabinet connects");
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
