//! The agent's MQTT side: logs in as its cabinet, leaves an `offline` last will and
//! announces `online` (retained), and for each pulse checks it, applies it through the
//! outputs exactly once (journal first), then acks it. Game overs go back the same way.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coinpulse_wire::{
    verify_pulse, verify_pulse_ed25519, AckMessage, GameOverMessage, PulseMessage, Topics, OFFLINE,
    ONLINE,
};
use paho_mqtt as paho;
use rand::Rng;
use tokio::sync::{mpsc, watch};

use crate::client::{login_refused, paho_uri};
use crate::journal::{Journal, State};
use crate::output::{apply_all, Credit, Output, OutputError};

/// Everything the agent needs to run; built from the config file or by the simulator.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub machine_id: String,
    pub secret: String,
    /// tcp://, ssl://, ws://, wss:// (mqtt:// and mqtts:// are read as tcp and ssl).
    pub broker: String,
    pub ca_file: Option<std::path::PathBuf>,
    pub topic_prefix: String,
    /// The server's pulse key: verify `sig_ed25519`; without it, the HMAC `sig`.
    pub public_key: Option<ed25519_dalek::VerifyingKey>,
    /// Pulses older than this are refused as replays.
    pub max_age: Option<Duration>,
    /// A seed-era cabinet: no acks, no status, no last will. Only the tests turn this off.
    pub ack: bool,
    /// The simulator's pretend game: report game over this long after each credit.
    pub play_seconds: Option<u64>,
    pub connect: Connect,
}

/// What [`Agent::start`] does about the first connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// Return once connected; give up after `give_up_after` (None: never), or at once
    /// when the broker refuses the login (the simulator in a terminal, the tests).
    Wait {
        give_up_after: Option<Duration>,
        stop_when_refused: bool,
    },
    /// Return at once and keep trying in the background, saying why (a service: the
    /// control socket answers and game overs queue while the network is down).
    Background,
}

/// What happened, for log lines, the simulator's terminal and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connected,
    Disconnected,
    /// A new pulse, applied by the outputs and acked.
    Credit(PulseMessage),
    /// A pulse applied before (a redelivery or a replay): acked again, not applied.
    Duplicate(String),
    /// A pulse whose output was interrupted by a crash: neither applied again nor acked
    /// until the owner resolves it.
    Interrupted(String),
    /// Bad signature, another cabinet's, too old, or not a pulse: ignored.
    Rejected(String),
    /// The outputs failed: not acked. `partial`: some coins may have been given, so the
    /// pulse waits for the owner like an interrupted one.
    OutputFailed {
        id: String,
        error: String,
        partial: bool,
    },
    GameOverSent {
        play_seconds: Option<i64>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("login refused by {0}: wrong machine id or secret")]
    LoginRefused(String),
    #[error("could not connect to {0}: {1}")]
    Unreachable(String, #[source] paho::Error),
    #[error("MQTT: {0}")]
    Mqtt(#[from] paho::Error),
}

/// Shared between the MQTT callbacks, the pulse worker and the control socket.
struct Shared {
    journal: Mutex<Journal>,
    /// When the last credit was applied, for a game over's playSeconds.
    last_credit: Mutex<Option<Instant>>,
    connected_since: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    /// The pulse whose outputs are running right now: not "interrupted", not resolvable.
    busy: Mutex<Option<String>>,
}

#[derive(Clone)]
pub struct Agent {
    client: paho::AsyncClient,
    topics: Topics,
    machine_id: String,
    announces: bool,
    connected: watch::Receiver<bool>,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
}

impl Agent {
    /// Connects (retrying until the broker answers, as the options say) and starts
    /// handling pulses with these outputs.
    pub async fn start(
        opts: AgentOptions,
        journal: Journal,
        outputs: Vec<Box<dyn Output>>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Event>), AgentError> {
        let topics = Topics::new(&opts.topic_prefix);
        let client = paho::CreateOptionsBuilder::new()
            .server_uri(paho_uri(&opts.broker))
            // One fixed id per cabinet: the broker keeps its session (and the pulses sent
            // while it was away) across reconnects.
            .client_id(format!("cabinet-{}", opts.machine_id))
            .persistence(None)
            // Acks and game overs made while the broker is away go out on reconnect.
            .send_while_disconnected(true)
            .allow_disconnected_send_at_anytime(true)
            .max_buffered_messages(1000)
            .create_client()?;
        // See the server's connection: the last clone of a paho client must never be
        // dropped on paho's own callback thread.
        std::mem::forget(client.clone());

        let will = opts.ack.then(|| {
            paho::Message::new_retained(topics.status(&opts.machine_id), OFFLINE, paho::QOS_1)
        });
        let conn_opts = connect_options(&opts, will)?;

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (raw_tx, raw_rx) = mpsc::unbounded_channel::<paho::Message>();
        client.set_message_callback(move |_, msg| {
            if let Some(m) = msg {
                let _ = raw_tx.send(m);
            }
        });
        let shared = Arc::new(Shared {
            journal: Mutex::new(journal),
            last_credit: Mutex::new(None),
            connected_since: Mutex::new(None),
            busy: Mutex::new(None),
        });
        let (connected_tx, connected) = watch::channel(false);
        let connected_tx = Arc::new(connected_tx);
        {
            let topics = topics.clone();
            let id = opts.machine_id.clone();
            let announce = opts.ack;
            let connected_tx = connected_tx.clone();
            let events = events_tx.clone();
            let shared = shared.clone();
            // On every (re)connect: subscribe, then announce. The broker handles one
            // client's packets in order, so by the time the server hears "online" (and
            // redelivers what we missed) the subscription is in place.
            client.set_connected_callback(move |c| {
                c.subscribe(topics.coinpulse(&id), paho::QOS_1);
                if announce {
                    c.publish(paho::Message::new_retained(
                        topics.status(&id),
                        ONLINE,
                        paho::QOS_1,
                    ));
                }
                *shared.connected_since.lock().expect("lock") = Some(chrono::Utc::now());
                connected_tx.send_replace(true);
                let _ = events.send(Event::Connected);
            });
        }
        let (lost_tx, lost_rx) = mpsc::unbounded_channel::<()>();
        {
            let events = events_tx.clone();
            let shared = shared.clone();
            let connected_tx = connected_tx.clone();
            client.set_connection_lost_callback(move |_| {
                *shared.connected_since.lock().expect("lock") = None;
                connected_tx.send_replace(false);
                let _ = events.send(Event::Disconnected);
                let _ = lost_tx.send(());
            });
        }

        match opts.connect {
            Connect::Wait {
                give_up_after,
                stop_when_refused,
            } => {
                first_connect(&client, conn_opts, give_up_after, stop_when_refused).await?;
                tokio::spawn(reconnect_loop(client.clone(), lost_rx));
            }
            Connect::Background => {
                let client = client.clone();
                tokio::spawn(async move {
                    // Retrying forever: this can only end in success.
                    let _ = first_connect(&client, conn_opts, None, false).await;
                    reconnect_loop(client, lost_rx).await;
                });
            }
        }

        let agent = Self {
            client,
            topics,
            machine_id: opts.machine_id.clone(),
            announces: opts.ack,
            connected,
            shared,
            events: events_tx,
        };
        tokio::spawn(agent.clone().handle_pulses(opts, raw_rx, outputs));
        Ok((agent, events_rx))
    }

    /// One pulse at a time, in arrival order: outputs are physical and cannot overlap.
    async fn handle_pulses(
        self,
        opts: AgentOptions,
        mut raw: mpsc::UnboundedReceiver<paho::Message>,
        outputs: Vec<Box<dyn Output>>,
    ) {
        let outputs = Arc::new(Mutex::new(outputs));
        while let Some(msg) = raw.recv().await {
            let event = match check_pulse(&opts, msg.payload()) {
                Err(why) => Event::Rejected(why),
                Ok(p) => self.handle_pulse(&opts, p, &outputs).await,
            };
            if let Event::Credit(_) = &event {
                if let Some(secs) = opts.play_seconds {
                    let agent = self.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(secs)).await;
                        let _ = agent.game_over(None).await;
                    });
                }
            }
            if self.events.send(event).is_err() {
                break;
            }
        }
    }

    /// The journal decides before the clock does: a pulse applied before is acked again
    /// however old (its first ack may have been lost), and one that failed or that the
    /// owner found unapplied may still be applied late. Only a pulse never seen is held to
    /// the age limit, which is what stops a recorded pulse from being replayed.
    async fn handle_pulse(
        &self,
        opts: &AgentOptions,
        p: PulseMessage,
        outputs: &Arc<Mutex<Vec<Box<dyn Output>>>>,
    ) -> Event {
        let state = self.journal().state(&p.id);
        match state {
            Some(State::Applied) => {
                self.ack(&p.id);
                return Event::Duplicate(p.id);
            }
            Some(State::Applying) => return Event::Interrupted(p.id),
            Some(State::Failed) | Some(State::NotApplied) => {}
            None => {
                if let Some(why) = too_old(opts, &p, chrono::Utc::now()) {
                    return Event::Rejected(why);
                }
            }
        }
        // Busy before the record exists, so that no `status` or `resolve` ever sees this
        // pulse as interrupted while it is being given.
        *self.shared.busy.lock().expect("lock") = Some(p.id.clone());
        // Written and on disk before the output runs: a crash from here on leaves a
        // trace that stops this pulse from ever being applied twice.
        let recorded = self.journal().applying(&p);
        let event = match recorded {
            Ok(()) => self.apply(p, outputs).await,
            Err(e) => Event::OutputFailed {
                id: p.id,
                error: format!("could not write the pulse journal, so nothing was applied: {e}"),
                partial: false,
            },
        };
        *self.shared.busy.lock().expect("lock") = None;
        event
    }

    /// Drives the outputs for a pulse recorded as "applying", then records the outcome.
    async fn apply(&self, p: PulseMessage, outputs: &Arc<Mutex<Vec<Box<dyn Output>>>>) -> Event {
        let credit = Credit {
            pulse_id: p.id.clone(),
            credits: p.credits,
            source: p.source.as_str().to_owned(),
        };
        let result = {
            let outputs = outputs.clone();
            // A panicking output must not stop every later pulse: the outputs stay usable,
            // and this pulse is reported as possibly partial below.
            let has_outputs = !outputs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_empty();
            if has_outputs {
                tokio::task::spawn_blocking(move || {
                    apply_all(
                        &mut outputs
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner),
                        &credit,
                    )
                })
                .await
                .unwrap_or_else(|e| Err(OutputError::Partial(format!("output panicked: {e}"))))
            } else {
                Ok(())
            }
        };
        match result {
            Ok(()) => {
                *self.shared.last_credit.lock().expect("lock") = Some(Instant::now());
                match self.journal().applied(&p.id) {
                    Ok(()) => {
                        self.ack(&p.id);
                        Event::Credit(p)
                    }
                    // Given but not recorded: acking would be right, but the journal can no
                    // longer prove it; leave it to the owner rather than risk a double.
                    Err(e) => Event::OutputFailed {
                        id: p.id,
                        error: format!("credits given, but the journal could not record it: {e}"),
                        partial: true,
                    },
                }
            }
            Err(OutputError::NothingDone(error)) => {
                if let Err(e) = self.journal().failed(&p.id, &error) {
                    tracing::error!(error = %e, "could not record a failed output");
                }
                Event::OutputFailed {
                    id: p.id,
                    error,
                    partial: false,
                }
            }
            // Stays at "applying": the owner decides.
            Err(OutputError::Partial(error)) => Event::OutputFailed {
                id: p.id,
                error,
                partial: true,
            },
        }
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.shared.journal.lock().expect("journal")
    }

    fn ack(&self, id: &str) {
        if !self.announces {
            return;
        }
        let body = serde_json::to_string(&AckMessage { id: id.to_owned() }).expect("serialises");
        self.client.publish(paho::Message::new(
            self.topics.ack(&self.machine_id),
            body,
            paho::QOS_1,
        ));
    }

    /// Reports game over, with the seconds since the last credit as playSeconds.
    pub async fn game_over(&self, score: Option<i64>) -> Result<Option<i64>, paho::Error> {
        let play_seconds = self
            .shared
            .last_credit
            .lock()
            .expect("lock")
            .take()
            .map(|t| t.elapsed().as_secs() as i64);
        let msg = GameOverMessage::now(
            &self.machine_id,
            uuid::Uuid::now_v7().to_string(),
            score,
            play_seconds,
        );
        let payload = serde_json::to_string(&msg).expect("serialisable");
        let delivered = self.client.publish(paho::Message::new(
            self.topics.gameover(&self.machine_id),
            payload,
            paho::QOS_1,
        ));
        // Offline, paho keeps it and sends it on reconnect; whoever reported the game
        // over (an emulator's exit hook) should not wait for the network.
        match tokio::time::timeout(Duration::from_secs(3), delivered).await {
            Ok(result) => {
                result?;
            }
            Err(_) => tracing::warn!("broker unreachable: the game over goes out on reconnect"),
        }
        let _ = self.events.send(Event::GameOverSent { play_seconds });
        Ok(play_seconds)
    }

    /// The owner's verdict on an interrupted pulse. Then the agent asks the server to
    /// offer again what it has not acked, as on a reconnect (subscribing again tells the
    /// embedded broker; a live `online` tells a server behind an external one): an applied
    /// pulse is then acked, one found unapplied is applied.
    pub fn resolve(&self, id: &str, applied: bool) -> Result<(), crate::journal::ResolveError> {
        if self.shared.busy.lock().expect("lock").as_deref() == Some(id) {
            return Err(crate::journal::ResolveError::Busy(id.to_owned()));
        }
        self.journal().resolve(id, applied)?;
        self.client
            .subscribe(self.topics.coinpulse(&self.machine_id), paho::QOS_1);
        if self.announces {
            self.client.publish(paho::Message::new_retained(
                self.topics.status(&self.machine_id),
                ONLINE,
                paho::QOS_1,
            ));
        }
        Ok(())
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

    pub fn machine_id(&self) -> &str {
        &self.machine_id
    }

    /// Whether the cabinet is connected right now; changes on every loss and reconnect.
    pub fn connection(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// What `coinpulse-cabinet status` shows.
    pub fn status(&self) -> crate::control::Status {
        let busy = self.shared.busy.lock().expect("lock").clone();
        let since = *self.shared.connected_since.lock().expect("lock");
        let connected = (*self.connected.borrow()).then_some(since);
        crate::control::Status::of(
            &self.journal(),
            busy.as_deref(),
            self.machine_id.clone(),
            self.client.server_uri(),
            connected,
        )
    }

    /// Waits (up to `limit`) until no pulse's outputs are running, so that a stop between
    /// pulses never leaves one interrupted.
    pub async fn idle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.shared.busy.lock().expect("lock").is_some()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A clean goodbye: status offline (retained), then disconnect. Bounded: offline, a
    /// publish would wait for a broker that is not there.
    pub async fn disconnect(self) {
        if !*self.connected.borrow() {
            return;
        }
        let limit = Duration::from_secs(2);
        if self.announces {
            let offline = self.client.publish(paho::Message::new_retained(
                self.topics.status(&self.machine_id),
                OFFLINE,
                paho::QOS_1,
            ));
            let _ = tokio::time::timeout(limit, offline).await;
        }
        let _ = tokio::time::timeout(limit, self.client.disconnect(None)).await;
    }
}

/// Checks a payload's signature (Ed25519 with the server's key when configured, else the
/// HMAC), that it is for this cabinet, and that it carries credits.
pub fn check_pulse(opts: &AgentOptions, payload: &[u8]) -> Result<PulseMessage, String> {
    let p = match &opts.public_key {
        Some(key) => verify_pulse_ed25519(payload, key),
        None => verify_pulse(payload, &opts.secret),
    }
    .map_err(|e| e.to_string())?;
    if p.machine_id != opts.machine_id {
        return Err(format!(
            "pulse {} is for {}, not this cabinet",
            p.id, p.machine_id
        ));
    }
    if p.credits < 1 {
        return Err(format!("pulse {} has {} credits", p.id, p.credits));
    }
    Ok(p)
}

/// Why a pulse the journal has never seen is too old to apply (a replay), if it is.
pub fn too_old(
    opts: &AgentOptions,
    p: &PulseMessage,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    let max = opts.max_age?;
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(&p.timestamp) else {
        return Some(format!(
            "pulse {} timestamp {:?} is not a time",
            p.id, p.timestamp
        ));
    };
    let age = now.signed_duration_since(at);
    (age.num_milliseconds() > max.as_millis() as i64).then(|| {
        format!(
            "pulse {} is {} s old (limit {} s)",
            p.id,
            age.num_seconds(),
            max.as_secs()
        )
    })
}

fn connect_options(
    opts: &AgentOptions,
    will: Option<paho::Message>,
) -> Result<paho::ConnectOptions, paho::Error> {
    let mut b = paho::ConnectOptionsBuilder::new();
    b.keep_alive_interval(Duration::from_secs(20))
        // A persistent session: QoS 1 pulses sent while the cabinet was away are kept.
        .clean_session(false)
        .connect_timeout(Duration::from_secs(10))
        .user_name(&opts.machine_id)
        .password(&opts.secret);
    if let Some(w) = will {
        b.will_message(w);
    }
    let uri = paho_uri(&opts.broker);
    if uri.starts_with("ssl://") || uri.starts_with("wss://") {
        let mut ssl = paho::SslOptionsBuilder::new();
        if let Some(ca) = &opts.ca_file {
            ssl.trust_store(ca)?;
        }
        b.ssl_options(ssl.finalize());
    }
    Ok(b.finalize())
}

/// The wait before retry `attempt` (0-based): doubling from 0.5 s to a minute, each drawn
/// from its upper half, so a hundred cabinets back after a power cut do not all knock at
/// the same instant.
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << attempt.min(7));
    let capped = base.min(Duration::from_secs(60));
    let half = capped / 2;
    half + half.mul_f64(rand::thread_rng().gen::<f64>())
}

async fn first_connect(
    client: &paho::AsyncClient,
    conn_opts: paho::ConnectOptions,
    give_up_after: Option<Duration>,
    stop_when_refused: bool,
) -> Result<(), AgentError> {
    let started = Instant::now();
    let uri = client.server_uri();
    let mut attempt = 0;
    loop {
        let e = match client.connect(conn_opts.clone()).await {
            Ok(_) => {
                tracing::info!(broker = %uri, "connected");
                return Ok(());
            }
            Err(e) => e,
        };
        let refused = login_refused(&e);
        if refused && stop_when_refused {
            return Err(AgentError::LoginRefused(uri));
        }
        if give_up_after.is_some_and(|t| started.elapsed() >= t) {
            return Err(if refused {
                AgentError::LoginRefused(uri)
            } else {
                AgentError::Unreachable(uri, e)
            });
        }
        // A broker that is still starting is normal; say so only when it persists.
        let wait = if attempt == 0 {
            Duration::from_millis(50)
        } else {
            backoff(attempt - 1)
        };
        if refused {
            tracing::error!(broker = %uri, retry_in_s = wait.as_secs_f32(),
                "login refused: check machine_id and the secret against the cabinet's page on the server");
        } else if attempt >= 2 {
            tracing::warn!(broker = %uri, error = %e, retry_in_s = wait.as_secs_f32(), "broker unreachable, retrying");
        }
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// After a lost connection: reconnect with backoff and jitter until it is back.
async fn reconnect_loop(client: paho::AsyncClient, mut lost: mpsc::UnboundedReceiver<()>) {
    while lost.recv().await.is_some() {
        let uri = client.server_uri();
        tracing::warn!(broker = %uri, "disconnected from the broker; reconnecting");
        let mut attempt = 0;
        // A loss reported twice is one outage: whoever finds the connection back is done.
        while !client.is_connected() {
            tokio::time::sleep(backoff(attempt)).await;
            if client.is_connected() {
                break;
            }
            match client.reconnect().await {
                Ok(_) => tracing::info!(broker = %uri, "reconnected"),
                Err(e) if login_refused(&e) => tracing::error!(broker = %uri,
                    "login refused: check machine_id and the secret against the cabinet's page on the server"),
                Err(e) => tracing::warn!(broker = %uri, error = %e, "reconnect failed"),
            }
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coinpulse_wire::{sign_pulse, wire_time, PulseSource};

    fn opts(key: &ed25519_dalek::SigningKey) -> AgentOptions {
        AgentOptions {
            machine_id: "cab-1".into(),
            secret: "s".into(),
            broker: String::new(),
            ca_file: None,
            topic_prefix: "arcade/machine".into(),
            public_key: Some(key.verifying_key()),
            max_age: Some(Duration::from_secs(600)),
            ack: true,
            play_seconds: None,
            connect: Connect::Background,
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
        let p = check_pulse(&o, good.as_bytes()).unwrap();
        assert_eq!(p.id, "p1");
        assert_eq!(too_old(&o, &p, now), None);
        let other = sign_pulse(&pulse("p2", "cab-2", now), "s", &key);
        assert!(check_pulse(&o, other.as_bytes())
            .unwrap_err()
            .contains("cab-2"));
        let old = pulse("p3", "cab-1", now - chrono::Duration::hours(2));
        assert!(too_old(&o, &old, now).unwrap().contains("old"));
        let no_limit = AgentOptions {
            max_age: None,
            ..o.clone()
        };
        assert_eq!(too_old(&no_limit, &old, now), None);
        // Signed with the cabinet secret but not the server's key: a sniffed password.
        let forger = ed25519_dalek::SigningKey::from_bytes(&[4u8; 32]);
        let forged = sign_pulse(&pulse("p4", "cab-1", now), "s", &forger);
        assert!(check_pulse(&o, forged.as_bytes()).is_err());
        // Without the public key, the secret's HMAC decides.
        let hmac_only = AgentOptions {
            public_key: None,
            ..o.clone()
        };
        assert!(check_pulse(&hmac_only, forged.as_bytes()).is_ok());
        let wrong_secret = sign_pulse(&pulse("p5", "cab-1", now), "other", &key);
        assert!(check_pulse(&hmac_only, wrong_secret.as_bytes()).is_err());
        assert!(check_pulse(&o, b"{not json").is_err());
    }

    #[test]
    fn backoff_doubles_to_a_minute_with_jitter() {
        for attempt in 0..20 {
            let full = Duration::from_millis(500)
                .saturating_mul(1 << attempt.min(7))
                .min(Duration::from_secs(60));
            let d = backoff(attempt);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        let draws: std::collections::HashSet<_> = (0..20).map(|_| backoff(5)).collect();
        assert!(draws.len() > 1, "jittered");
    }
}
