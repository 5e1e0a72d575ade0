//! The server's one MQTT connection (paho): persistent session, automatic reconnect with
//! backoff, and callbacks that feed the dispatcher and the inbound handler.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use paho_mqtt as paho;
use tokio::sync::mpsc;

use super::MqttStats;
use crate::delivery::Signal;

/// Where and as whom to connect.
#[derive(Clone)]
pub struct Target {
    pub uri: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for brokers that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub client_id: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("uri", &self.uri)
            .field("username", &self.username)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

pub use coinpulse_cabinet::client::{login_refused as is_login_refused, paho_uri};

pub fn create_client(target: &Target) -> Result<paho::AsyncClient, paho::Error> {
    let client = paho::CreateOptionsBuilder::new()
        .server_uri(paho_uri(&target.uri))
        .client_id(&target.client_id)
        // The outbox table is our persistence; paho's own files would only duplicate it.
        .persistence(None)
        // Above the dispatcher's in-flight bound, so a publish is never refused locally.
        .max_buffered_messages(2 * crate::delivery::MAX_INFLIGHT as i32)
        .create_client()?;
    // paho-mqtt's tokens each hold a clone of their client. If the last clone is dropped by
    // a token completing on paho's callback thread, MQTTAsync_destroy waits for the mutex
    // that thread already holds, and every MQTT client in the process freezes. Keeping one
    // reference for the life of the process means that can never happen; a process has one
    // long-lived client per broker connection anyway.
    std::mem::forget(client.clone());
    Ok(client)
}

pub fn connect_options(
    target: &Target,
    clean_session: bool,
    will: Option<paho::Message>,
) -> Result<paho::ConnectOptions, paho::Error> {
    Ok(connect_builder(target, clean_session, will)?.finalize())
}

fn connect_builder(
    target: &Target,
    clean_session: bool,
    will: Option<paho::Message>,
) -> Result<paho::ConnectOptionsBuilder, paho::Error> {
    let mut b = paho::ConnectOptionsBuilder::new();
    b.keep_alive_interval(Duration::from_secs(20))
        .clean_session(clean_session)
        .connect_timeout(Duration::from_secs(5))
        .automatic_reconnect(Duration::from_secs(1), Duration::from_secs(30));
    if let Some(u) = &target.username {
        b.user_name(u);
    }
    if let Some(p) = &target.password {
        b.password(p);
    }
    if let Some(w) = will {
        b.will_message(w);
    }
    let uri = paho_uri(&target.uri);
    if uri.starts_with("ssl://") || uri.starts_with("wss://") {
        let mut ssl = paho::SslOptionsBuilder::new();
        if let Some(ca) = &target.ca_file {
            ssl.trust_store(ca)?;
        }
        if let Some((cert, key)) = &target.client_cert {
            ssl.key_store(cert)?;
            ssl.private_key(key)?;
        }
        b.ssl_options(ssl.finalize());
    }
    Ok(b)
}

/// How long [`connect_with_backoff`] keeps trying.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Stop after this long (None: never).
    pub give_up_after: Option<Duration>,
    /// Stop at once when the broker answers with a refusal (a wrong login, say), rather
    /// than retrying as for an unreachable broker.
    pub stop_when_refused: bool,
}

impl Retry {
    /// The server's way: keep trying whatever the broker says, until it is up.
    pub const UNTIL_UP: Retry = Retry {
        give_up_after: None,
        stop_when_refused: false,
    };
}

/// Connects, retrying with backoff while the broker cannot be reached. After the first
/// success paho's automatic reconnect takes over.
pub async fn connect_with_backoff(
    client: &paho::AsyncClient,
    opts: paho::ConnectOptions,
    what: &str,
    retry: Retry,
) -> Result<(), paho::Error> {
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(25);
    loop {
        let e = match client.connect(opts.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let refused = matches!(e, paho::Error::ConnectReturn(_));
        let out_of_time = retry
            .give_up_after
            .is_some_and(|limit| started.elapsed() >= limit);
        if (refused && retry.stop_when_refused) || out_of_time {
            return Err(e);
        }
        // The first quick retries cover a broker that is still starting; only persistent
        // failure is worth a warning.
        if delay >= Duration::from_millis(400) {
            let why = if is_login_refused(&e) {
                "MQTT broker refused the login"
            } else {
                "MQTT broker unreachable"
            };
            tracing::warn!(broker = %client.server_uri(), error = %e, retry_in_ms = delay.as_millis() as u64,
                "{what}: {why}, retrying");
        }
        tokio::time::sleep(delay).await;
        // Capped low: a broker that is still starting, or back after an outage, should be
        // picked up within seconds.
        delay = (delay * 2).min(Duration::from_secs(3));
    }
}

/// Starts the server's connection in the background and returns its client at once, so the
/// web server can accept payments while the broker is still unreachable.
pub fn start(
    target: &Target,
    stats: Arc<MqttStats>,
    inbound: mpsc::Sender<paho::Message>,
    signals: mpsc::Sender<Signal>,
) -> Result<paho::AsyncClient, paho::Error> {
    let client = create_client(target)?;
    // The dispatcher bounds what is in flight (MAX_INFLIGHT); paho must not add a smaller
    // window of its own that would park pulses until the next sweep.
    let opts = connect_builder(target, false, None)?
        .max_inflight(crate::delivery::MAX_INFLIGHT as i32)
        .finalize();
    {
        // "connected" is reported by the dispatcher once the subscriptions are in place.
        client.set_connected_callback(move |c| {
            tracing::info!(broker = %c.server_uri(), "MQTT connected");
            // paho's own thread, not a runtime worker: blocking here is backpressure.
            let _ = signals.blocking_send(Signal::Connected);
        });
    }
    {
        let stats = stats.clone();
        client.set_connection_lost_callback(move |c| {
            stats.connected.store(false, Ordering::Relaxed);
            tracing::warn!(broker = %c.server_uri(), "MQTT connection lost; reconnecting");
        });
    }
    client.set_message_callback(move |_, msg| {
        if let Some(msg) = msg {
            // Backpressure: a flood of inbound messages slows paho's reader, not the heap.
            let _ = inbound.blocking_send(msg);
        }
    });
    let bg = client.clone();
    tokio::spawn(async move {
        // Retrying forever: this can only end in success.
        let _ = connect_with_backoff(&bg, opts, "server", Retry::UNTIL_UP).await;
    });
    Ok(client)
}
