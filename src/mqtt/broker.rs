//! The embedded MQTT broker (the `mqtt5` crate), so a fresh install needs nothing else.
//!
//! It enforces what a cabinet may do: cabinet X logs in as its machine id with its secret,
//! may subscribe only to `{prefix}/X/coinpulse` and publish only to its own `gameover`,
//! `ack` and `status` topics. The server's own client logs in with an internal credential
//! derived from the master key and may do everything. A client id belongs to the first
//! login that used it, for the life of the process (which is the life of the broker's
//! sessions), and the server's client id is reserved for the server.
//!
//! The broker also tells the server, through [`Presence`], which cabinets are connected and
//! subscribed right now: the dispatcher publishes a pulse only to a cabinet with a live
//! subscription, so a pulse never vanishes into a broker that had nobody to give it to.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mqtt5::broker::auth::{AuthProvider, AuthResult};
use mqtt5::broker::config::{BrokerConfig, StorageConfig, TlsConfig};
use mqtt5::broker::events::{
    BrokerEventHandler, ClientConnectEvent, ClientDisconnectEvent, ClientSubscribeEvent,
    SubAckReasonCode,
};
use mqtt5::broker::router::MessageRouter;
use mqtt5::broker::{BrokerShutdownHandle, MqttBroker, ResourceLimits};
use mqtt5::packet::connect::ConnectPacket;
use mqtt5::packet::publish::PublishPacket;
use mqtt5::protocol::v5::reason_codes::ReasonCode;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use super::{Inbound, Topics, INTERNAL_USER};
use crate::domain::verify_cabinet_secret;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("MQTT_LISTEN: cannot listen on {addr}: {cause} (is another MQTT broker running? set MQTT_LISTEN to a free port, or MQTT_URL to use that broker)")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("embedded MQTT broker: {0}")]
    Start(String),
}

pub const DEFAULT_PORT: u16 = 1883;

/// Connections the embedded broker takes in all: 20,000 cabinets and the server.
const MAX_CLIENTS: usize = 20_010;

/// Game overs and statuses one cabinet connection may send per second, and the burst it
/// may save up: a real cabinet sends a handful per game.
const CHATTER_PER_SECOND: f64 = 20.0;
const CHATTER_BURST: f64 = 100.0;
/// Acks come one per pulse received, so they get more room; each is still a database write,
/// so a login flooding them is held back too (behind webhooks in the writer either way).
const ACKS_PER_SECOND: f64 = 1_000.0;
const ACKS_BURST: f64 = 2_000.0;

/// How often logged-in cabinets are checked against the database, so a disabled cabinet or
/// one whose secret was rotated (possibly by the CLI, in another process) is disconnected.
const LOGIN_RECHECK: Duration = Duration::from_secs(2);

/// Binds the listening address: the configured one, or 0.0.0.0:1883, falling back to the
/// next free port up to 1889 so a first run works beside a broker that is already running.
pub fn choose_listen(configured: Option<SocketAddr>) -> Result<std::net::TcpListener, BrokerError> {
    if let Some(addr) = configured {
        return std::net::TcpListener::bind(addr)
            .map_err(|cause| BrokerError::Listen { addr, cause });
    }
    let default = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT));
    let first_err = match std::net::TcpListener::bind(default) {
        Ok(l) => return Ok(l),
        Err(cause) => cause,
    };
    for port in DEFAULT_PORT + 1..=DEFAULT_PORT + 6 {
        if let Ok(l) = std::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))) {
            tracing::warn!(
                port,
                "port {DEFAULT_PORT} is in use (another MQTT broker?); the embedded broker listens on \
                 {port} instead. Set MQTT_LISTEN to choose the port, or MQTT_URL to use the other broker"
            );
            return Ok(l);
        }
    }
    Err(BrokerError::Listen {
        addr: default,
        cause: first_err,
    })
}

/// Where a client on this machine reaches a broker listening on `addr`.
pub fn local_target(addr: SocketAddr) -> SocketAddr {
    let mut t = addr;
    if t.ip().is_unspecified() {
        t.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    t
}

/// The TLS listener's address and PEM files.
#[derive(Debug, Clone)]
pub struct TlsListen {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub struct BrokerOptions {
    pub listen: Option<SocketAddr>,
    pub tls: Option<TlsListen>,
    pub topics: Topics,
    pub internal_password: String,
    pub server_client_id: String,
}

/// A running embedded broker.
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub presence: Presence,
    shutdown: BrokerShutdownHandle,
}

impl EmbeddedBroker {
    pub fn shutdown(&self) {
        self.shutdown.shutdown();
    }
}

/// What a login may do on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    Server,
    Cabinet(String),
}

impl Login {
    fn of(user: Option<&str>) -> Option<Self> {
        match user {
            Some(INTERNAL_USER) => Some(Self::Server),
            Some(id) => Some(Self::Cabinet(id.to_owned())),
            None => None,
        }
    }
}

/// Cabinet X may publish only its own game over, acks and status.
pub fn may_publish(topics: &Topics, login: &Login, topic: &str) -> bool {
    match login {
        Login::Server => true,
        Login::Cabinet(id) => {
            matches!(super::parse_topic(topics, topic), Some((m, _)) if m.as_str() == id)
        }
    }
}

/// Cabinet X may subscribe only to its own pulse topic, exactly: no wildcards, no `$SYS`.
pub fn may_subscribe(topics: &Topics, login: &Login, filter: &str) -> bool {
    match login {
        Login::Server => true,
        Login::Cabinet(id) => filter == topics.coinpulse(id),
    }
}

/// Why a CONNECT is refused, before the password is even looked at.
pub fn connect_conflict(
    owners: &HashMap<String, String>,
    server_client_id: &str,
    client_id: &str,
    user: &str,
) -> Option<&'static str> {
    if user != INTERNAL_USER && client_id == server_client_id {
        return Some("client id is reserved for the server");
    }
    match owners.get(client_id) {
        Some(owner) if owner != user => Some("client id belongs to another login"),
        _ => None,
    }
}

/// A cabinet's connections as the broker sees them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CabinetLink {
    pub connected: bool,
    pub subscribed: bool,
}

/// Broker events the dispatcher acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerEvent {
    /// A cabinet's connection now has its pulse subscription (new or resumed session).
    Subscribed(String),
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(capacity: f64) -> Self {
        Self {
            tokens: capacity,
            at: Instant::now(),
        }
    }

    /// Takes a token if there is one, refilling at `rate` per second up to `capacity`.
    fn take(&mut self, rate: f64, capacity: f64) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per connection: its two inbound budgets and when it was last logged about.
struct Limits {
    chatter: Bucket,
    acks: Bucket,
    logged: Option<Instant>,
}

impl Limits {
    fn new() -> Self {
        Self {
            chatter: Bucket::full(CHATTER_BURST),
            acks: Bucket::full(ACKS_BURST),
            logged: None,
        }
    }

    /// True at most once a second: refusals are counted always, logged at that pace.
    fn may_log(&mut self) -> bool {
        let now = Instant::now();
        if self
            .logged
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        self.logged = Some(now);
        true
    }
}

#[derive(Default)]
struct State {
    /// client id → the username that first used it.
    owners: HashMap<String, String>,
    /// machine id → client ids it has logged in with, and the secret hash at login.
    logins: HashMap<String, (HashSet<String>, String)>,
    /// Inbound rate limits per client id.
    limits: HashMap<String, Limits>,
    /// Client ids connected with a clean session: theirs ends at disconnect, and so does
    /// their claim on the id (cabinets with random ids would otherwise pile up here).
    clean: HashSet<String>,
}

struct Inner {
    topics: Topics,
    store: Store,
    internal_password: String,
    server_client_id: String,
    state: Mutex<State>,
    router: OnceLock<Arc<MessageRouter>>,
    events: mpsc::Sender<BrokerEvent>,
    refused: AtomicU64,
}

/// The server's view of the embedded broker: who is connected and subscribed right now.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

impl Presence {
    fn router(&self) -> Option<&Arc<MessageRouter>> {
        self.inner.router.get()
    }

    fn client_ids(&self, machine_id: &str) -> Vec<String> {
        let state = self.inner.state.lock().expect("broker state");
        state
            .logins
            .get(machine_id)
            .map(|(ids, _)| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the cabinet has a live connection with its pulse subscription in place: a
    /// pulse published now reaches it.
    pub async fn link(&self, machine_id: &str) -> CabinetLink {
        let mut link = CabinetLink::default();
        let Some(router) = self.router() else {
            return link;
        };
        let filter = self.inner.topics.coinpulse(machine_id);
        for cid in self.client_ids(machine_id) {
            if router.is_connected(&cid).await {
                link.connected = true;
                if router.has_subscription(&cid, &filter).await {
                    link.subscribed = true;
                }
            }
        }
        link
    }

    pub async fn deliverable(&self, machine_id: &str) -> bool {
        self.link(machine_id).await.subscribed
    }

    /// Publishes in-process, QoS 1, to the subscribers of `topic`: no socket and no client
    /// of our own between the outbox and the cabinet's connection. False when the broker
    /// is not running.
    pub async fn route(&self, topic: &str, payload: &str) -> bool {
        let Some(router) = self.router() else {
            return false;
        };
        let packet =
            PublishPacket::new(topic, payload.as_bytes().to_vec(), mqtt5::QoS::AtLeastOnce);
        router.route_message(&packet, None).await;
        true
    }

    /// Every cabinet that has logged in since the broker started, with its link now.
    pub async fn links(&self) -> Vec<(String, CabinetLink)> {
        let ids: Vec<String> = {
            let state = self.inner.state.lock().expect("broker state");
            state.logins.keys().cloned().collect()
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let link = self.link(&id).await;
            out.push((id, link));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// How many cabinets have a live connection now.
    pub async fn connected_count(&self) -> usize {
        let mut n = 0;
        for (_, link) in self.links().await {
            n += usize::from(link.connected);
        }
        n
    }

    /// Connections refused and messages dropped by the access rules since start.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Disconnects every connection of a cabinet (disabled, or its secret rotated).
    pub async fn kick(&self, machine_id: &str, why: &str) {
        let Some(router) = self.router() else { return };
        for cid in self.client_ids(machine_id) {
            if router.is_connected(&cid).await {
                tracing::warn!(machine_id, client_id = %cid, reason = why, "disconnecting cabinet");
                router.disconnect_client(&cid).await;
            }
        }
    }

    fn refuse(&self, what: &str, user: &str, client_id: &str, detail: &str) {
        self.inner.refused.fetch_add(1, Ordering::Relaxed);
        let log = {
            let mut state = self.inner.state.lock().expect("broker state");
            match state.limits.get_mut(client_id) {
                Some(l) => l.may_log(),
                // Logins are refused before a connection has limits: always logged.
                None => true,
            }
        };
        if log {
            tracing::warn!(username = user, client_id, detail, "MQTT {what} refused");
        }
    }

    /// Token buckets per connection; false when this message is over its kind's limit.
    fn within_rate(&self, client_id: &str, ack: bool) -> bool {
        let mut state = self.inner.state.lock().expect("broker state");
        let l = state
            .limits
            .entry(client_id.to_owned())
            .or_insert_with(Limits::new);
        let ok = if ack {
            l.acks.take(ACKS_PER_SECOND, ACKS_BURST)
        } else {
            l.chatter.take(CHATTER_PER_SECOND, CHATTER_BURST)
        };
        if !ok && l.may_log() {
            tracing::warn!(
                client_id,
                "cabinet is publishing too fast; messages dropped"
            );
        }
        ok
    }

    async fn check_login(&self, connect: &ConnectPacket) -> Result<Login, (ReasonCode, String)> {
        let inner = &self.inner;
        let user = connect.username.as_deref().unwrap_or("");
        let pass = connect
            .password
            .as_deref()
            .and_then(|p| std::str::from_utf8(p).ok())
            .unwrap_or("");
        let bad = |why: &str| (ReasonCode::BadUsernameOrPassword, why.to_owned());
        let denied = |why: &str| (ReasonCode::NotAuthorized, why.to_owned());
        if user.is_empty() {
            return Err(bad("no username"));
        }
        {
            let state = inner.state.lock().expect("broker state");
            if let Some(why) = connect_conflict(
                &state.owners,
                &inner.server_client_id,
                &connect.client_id,
                user,
            ) {
                return Err(denied(why));
            }
        }
        if user == INTERNAL_USER {
            return if bool::from(pass.as_bytes().ct_eq(inner.internal_password.as_bytes())) {
                Ok(Login::Server)
            } else {
                Err(bad("wrong internal password"))
            };
        }
        let cabinet = match inner.store.cabinet(user).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(bad("unknown username")),
            Err(e) => {
                tracing::error!(error = %e, "MQTT login check failed: database error");
                return Err((ReasonCode::ServerUnavailable, "database unavailable".into()));
            }
        };
        if !verify_cabinet_secret(pass, &cabinet.secret_hash) {
            return Err(bad("wrong secret"));
        }
        if !cabinet.enabled {
            return Err(denied("cabinet is disabled"));
        }
        let login = Login::Cabinet(cabinet.machine_id.clone());
        if let Some(will) = &connect.will {
            if !may_publish(&inner.topics, &login, &will.topic) {
                return Err(denied("last will on another cabinet's topic"));
            }
        }
        let mut state = inner.state.lock().expect("broker state");
        // Checked again under the lock that records it: two logins racing for one id.
        if let Some(why) = connect_conflict(
            &state.owners,
            &inner.server_client_id,
            &connect.client_id,
            user,
        ) {
            return Err(denied(why));
        }
        state
            .owners
            .insert(connect.client_id.clone(), cabinet.machine_id.clone());
        let entry = state
            .logins
            .entry(cabinet.machine_id.clone())
            .or_insert_with(|| (HashSet::new(), String::new()));
        entry.0.insert(connect.client_id.clone());
        entry.1 = cabinet.secret_hash;
        Ok(login)
    }

    /// Disconnects cabinets that were disabled or had their secret rotated since login.
    async fn recheck_logins(&self) {
        let logged_in: Vec<(String, String)> = {
            let state = self.inner.state.lock().expect("broker state");
            state
                .logins
                .iter()
                .map(|(id, (_, hash))| (id.clone(), hash.clone()))
                .collect()
        };
        if logged_in.is_empty() {
            return;
        }
        let cabinets = match self.inner.store.cabinets().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "could not recheck cabinet logins");
                return;
            }
        };
        let current: HashMap<&str, (bool, &str)> = cabinets
            .iter()
            .map(|c| (c.machine_id.as_str(), (c.enabled, c.secret_hash.as_str())))
            .collect();
        for (id, hash) in logged_in {
            let why = match current.get(id.as_str()) {
                None => Some("cabinet was removed"),
                Some((false, _)) => Some("cabinet was disabled"),
                Some((true, h)) if *h != hash => Some("cabinet secret was rotated"),
                _ => None,
            };
            if let Some(why) = why {
                self.kick(&id, why).await;
                let mut state = self.inner.state.lock().expect("broker state");
                state.logins.remove(&id);
            }
        }
    }
}

struct Access(Presence);

impl AuthProvider for Access {
    fn authenticate<'a>(
        &'a self,
        connect: &'a ConnectPacket,
        client_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = mqtt5::error::Result<AuthResult>> + Send + 'a>> {
        Box::pin(async move {
            let user = connect.username.clone().unwrap_or_default();
            Ok(match self.0.check_login(connect).await {
                Ok(_) => AuthResult::success_with_user(user),
                Err((code, why)) => {
                    self.0.refuse(
                        "login",
                        &user,
                        &connect.client_id,
                        &format!("{why} (from {})", client_addr.ip()),
                    );
                    AuthResult::fail_with_reason(code, why)
                }
            })
        })
    }

    fn authorize_publish<'a>(
        &'a self,
        client_id: &str,
        user_id: Option<&'a str>,
        topic: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        let client_id = client_id.to_owned();
        Box::pin(async move {
            let Some(login) = Login::of(user_id) else {
                return false;
            };
            if !may_publish(&self.0.inner.topics, &login, topic) {
                self.0
                    .refuse("publish", user_id.unwrap_or(""), &client_id, topic);
                return false;
            }
            let ack = matches!(
                super::parse_topic(&self.0.inner.topics, topic),
                Some((_, Inbound::Ack))
            );
            login == Login::Server || self.0.within_rate(&client_id, ack)
        })
    }

    fn authorize_subscribe<'a>(
        &'a self,
        client_id: &str,
        user_id: Option<&'a str>,
        topic_filter: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        let client_id = client_id.to_owned();
        Box::pin(async move {
            let Some(login) = Login::of(user_id) else {
                return false;
            };
            let ok = may_subscribe(&self.0.inner.topics, &login, topic_filter);
            if !ok {
                self.0
                    .refuse("subscribe", user_id.unwrap_or(""), &client_id, topic_filter);
            }
            ok
        })
    }
}

struct Events(Presence);

impl Events {
    fn machine_of(&self, client_id: &str) -> Option<String> {
        let state = self.0.inner.state.lock().expect("broker state");
        state.owners.get(client_id).cloned()
    }

    /// Tells the dispatcher the cabinet can be sent its pending pulses now.
    async fn subscribed(&self, machine_id: String) {
        let _ = self
            .0
            .inner
            .events
            .send(BrokerEvent::Subscribed(machine_id))
            .await;
    }
}

impl BrokerEventHandler for Events {
    fn on_client_connect<'a>(
        &'a self,
        event: ClientConnectEvent,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let Some(machine_id) = self.machine_of(&event.client_id) else {
                return;
            };
            tracing::info!(machine_id, client_id = %event.client_id, clean = event.clean_start, "cabinet connected");
            {
                let mut state = self.0.inner.state.lock().expect("broker state");
                if event.clean_start {
                    state.clean.insert(event.client_id.to_string());
                } else {
                    state.clean.remove(&*event.client_id);
                }
            }
            // A resumed session keeps its subscription without a new SUBSCRIBE.
            if !event.clean_start {
                self.subscribed(machine_id).await;
            }
        })
    }

    fn on_client_subscribe<'a>(
        &'a self,
        event: ClientSubscribeEvent,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let Some(machine_id) = self.machine_of(&event.client_id) else {
                return;
            };
            let own = self.0.inner.topics.coinpulse(&machine_id);
            let granted = event.subscriptions.iter().any(|s| {
                *s.topic_filter == *own
                    && matches!(
                        s.result,
                        SubAckReasonCode::GrantedQoS0
                            | SubAckReasonCode::GrantedQoS1
                            | SubAckReasonCode::GrantedQoS2
                    )
            });
            if granted {
                self.subscribed(machine_id).await;
            }
        })
    }

    fn on_client_disconnect<'a>(
        &'a self,
        event: ClientDisconnectEvent,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            if let Some(machine_id) = self.machine_of(&event.client_id) {
                tracing::info!(machine_id, client_id = %event.client_id, unexpected = event.unexpected, "cabinet disconnected");
                // A takeover by the same login may already have reconnected this id.
                let live = match self.0.router() {
                    Some(r) => r.is_connected(&event.client_id).await,
                    None => false,
                };
                let mut state = self.0.inner.state.lock().expect("broker state");
                state.limits.remove(&*event.client_id);
                if !live && state.clean.remove(&*event.client_id) {
                    state.owners.remove(&*event.client_id);
                    if let Some((ids, _)) = state.logins.get_mut(&machine_id) {
                        ids.remove(&*event.client_id);
                    }
                }
            }
        })
    }
}

/// Starts the broker on the current runtime. Sessions live in memory: after a restart the
/// outbox, not the broker, is what remembers undelivered pulses (see docs/broker.md).
pub async fn start(
    opts: BrokerOptions,
    store: Store,
    events: mpsc::Sender<BrokerEvent>,
) -> Result<EmbeddedBroker, BrokerError> {
    let probe = choose_listen(opts.listen)?;
    let addr = probe.local_addr().map_err(|cause| BrokerError::Listen {
        addr: opts.listen.unwrap_or(([0, 0, 0, 0], DEFAULT_PORT).into()),
        cause,
    })?;
    drop(probe);

    let presence = Presence {
        inner: Arc::new(Inner {
            topics: opts.topics.clone(),
            store,
            internal_password: opts.internal_password,
            server_client_id: opts.server_client_id,
            state: Mutex::new(State::default()),
            router: OnceLock::new(),
            events,
            refused: AtomicU64::new(0),
        }),
    };
    let storage = StorageConfig {
        enable_persistence: false,
        max_queued_messages_per_client: 1_000,
        ..StorageConfig::default()
    };
    let mut config = BrokerConfig::default()
        .with_bind_addresses(vec![addr])
        .with_max_clients(MAX_CLIENTS)
        .with_max_packet_size(64 * 1024)
        .with_sys_topics_enabled(false)
        .with_storage(storage)
        .with_event_handler(Arc::new(Events(presence.clone())));
    config.shared_subscription_available = false;
    if let Some(tls) = &opts.tls {
        config = config.with_tls(
            TlsConfig::new(tls.cert.clone(), tls.key.clone()).with_bind_address(tls.addr),
        );
    }
    let broker = MqttBroker::with_config(config)
        .await
        .map_err(|e| BrokerError::Start(e.to_string()))?
        .with_auth_provider(Arc::new(Access(presence.clone())));
    let _ = presence.inner.router.set(broker.router());
    // An arcade's cabinets often share one address (NAT, or a hosted server seeing the
    // venue's router): the only connection cap is the broker's total. The connection rate
    // stays high enough for every cabinet to come back at once after a restart.
    broker.resource_monitor().update_limits(ResourceLimits {
        max_connections: MAX_CLIENTS,
        max_connections_per_ip: MAX_CLIENTS,
        max_message_rate_per_client: 0,
        max_bandwidth_per_client: 0,
        max_connection_rate: 20_000,
        rate_limit_window: Duration::from_secs(1),
    });
    let tls_addr = broker.tls_local_addr();
    let shutdown = broker.shutdown_handle();
    let mut broker = broker;
    tokio::spawn(async move {
        if let Err(e) = broker.run().await {
            tracing::error!(error = %e, "embedded MQTT broker stopped");
        }
    });
    {
        let presence = presence.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LOGIN_RECHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                presence.recheck_logins().await;
            }
        });
    }
    tracing::info!(%addr, tls = ?tls_addr, "embedded MQTT broker listening");
    Ok(EmbeddedBroker {
        addr,
        tls_addr,
        presence,
        shutdown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cab(id: &str) -> Login {
        Login::Cabinet(id.into())
    }

    #[test]
    fn cabinets_publish_only_their_own_topics() {
        let t = Topics::new("arcade/machine");
        let a = cab("A");
        for ok in [
            "arcade/machine/A/gameover",
            "arcade/machine/A/ack",
            "arcade/machine/A/status",
        ] {
            assert!(may_publish(&t, &a, ok), "{ok}");
        }
        for no in [
            "arcade/machine/B/gameover",
            "arcade/machine/B/ack",
            "arcade/machine/B/status",
            "arcade/machine/A/coinpulse",
            "arcade/machine/B/coinpulse",
            "arcade/machine/A/other",
            "elsewhere/A/ack",
            "$SYS/x",
        ] {
            assert!(!may_publish(&t, &a, no), "{no}");
        }
        assert!(may_publish(
            &t,
            &Login::Server,
            "arcade/machine/B/coinpulse"
        ));
    }

    #[test]
    fn cabinets_subscribe_only_to_their_own_pulses() {
        let t = Topics::new("arcade/machine");
        let a = cab("A");
        assert!(may_subscribe(&t, &a, "arcade/machine/A/coinpulse"));
        for no in [
            "arcade/machine/+/coinpulse",
            "arcade/machine/B/#",
            "arcade/machine/A/#",
            "arcade/#",
            "#",
            "arcade/machine/A/ack",
            "arcade/machine/B/coinpulse",
            "$SYS/#",
            "$share/g/arcade/machine/A/coinpulse",
        ] {
            assert!(!may_subscribe(&t, &a, no), "{no}");
        }
        assert!(may_subscribe(&t, &Login::Server, "arcade/machine/+/ack"));
    }

    #[test]
    fn client_ids_cannot_be_taken_over() {
        let mut owners = HashMap::new();
        owners.insert("cabinet-B".to_string(), "B".to_string());
        assert!(connect_conflict(&owners, "coinpulse-server", "cabinet-B", "A").is_some());
        assert!(connect_conflict(&owners, "coinpulse-server", "cabinet-B", "B").is_none());
        assert!(connect_conflict(&owners, "coinpulse-server", "coinpulse-server", "A").is_some());
        assert!(connect_conflict(
            &owners,
            "coinpulse-server",
            "coinpulse-server",
            INTERNAL_USER
        )
        .is_none());
        assert!(connect_conflict(&owners, "coinpulse-server", "fresh", "A").is_none());
    }
}
