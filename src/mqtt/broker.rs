//! The embedded MQTT broker (rumqttd), so a fresh install needs nothing else. Cabinets log
//! in as their machine id with their secret; the server's own client uses an internal
//! credential derived from the master key. Anyone else is refused.

use std::collections::HashMap;
use std::net::SocketAddr;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use subtle::ConstantTimeEq;

use super::INTERNAL_USER;
use crate::domain::verify_cabinet_secret;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
#[error("MQTT_LISTEN: cannot listen on {addr}: {cause} (is another MQTT broker running? set MQTT_LISTEN to a free port, or MQTT_URL to use that broker)")]
pub struct BrokerError {
    addr: SocketAddr,
    cause: std::io::Error,
}

pub const DEFAULT_PORT: u16 = 1883;

/// Binds the listening address: the configured one, or 0.0.0.0:1883, falling back to the
/// next free port up to 1889 so a first run works beside a broker that is already running.
pub fn choose_listen(configured: Option<SocketAddr>) -> Result<std::net::TcpListener, BrokerError> {
    if let Some(addr) = configured {
        return std::net::TcpListener::bind(addr).map_err(|cause| BrokerError { addr, cause });
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
    Err(BrokerError {
        addr: default,
        cause: first_err,
    })
}

/// Starts the broker on its own threads and returns the address it listens on.
pub fn start(
    listen: Option<SocketAddr>,
    store: Store,
    internal_password: String,
    runtime: tokio::runtime::Handle,
) -> Result<SocketAddr, BrokerError> {
    // rumqttd binds inside its own thread and only logs a failure there, so check first.
    let probe = choose_listen(listen)?;
    let addr = probe.local_addr().map_err(|cause| BrokerError {
        addr: listen.unwrap_or(([0, 0, 0, 0], DEFAULT_PORT).into()),
        cause,
    })?;
    drop(probe);

    let mut connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: 64 * 1024,
        max_inflight_count: 256,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    connections.set_auth_handler(move |_client_id: String, user: String, pass: String| {
        let store = store.clone();
        let internal = internal_password.clone();
        let runtime = runtime.clone();
        async move {
            if user == INTERNAL_USER {
                return bool::from(pass.as_bytes().ct_eq(internal.as_bytes()));
            }
            // The lookup runs on the application's runtime, where the pool lives.
            let found = runtime
                .spawn(async move {
                    store
                        .cabinet(&user)
                        .await
                        .map(|c| c.map(|c| (c.machine_id, c.secret_hash)))
                })
                .await;
            match found {
                Ok(Ok(Some((machine_id, hash)))) => {
                    let ok = verify_cabinet_secret(&pass, &hash);
                    if !ok {
                        tracing::warn!(machine_id, "MQTT login refused: wrong secret");
                    }
                    ok
                }
                Ok(Ok(None)) => {
                    tracing::warn!("MQTT login refused: unknown username");
                    false
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "MQTT login check failed: database error");
                    false
                }
                Err(_) => false,
            }
        }
    });
    let server = ServerSettings {
        name: "coinpulse".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 20_010,
            max_outgoing_packet_count: 200,
            // Per-topic logs stay small: pulses are tiny and consumed at once.
            max_segment_size: 256 * 1024,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|cause| BrokerError { addr, cause })?;
    tracing::info!(%addr, "embedded MQTT broker listening");
    Ok(addr)
}

/// Where a client on this machine reaches a broker listening on `addr`.
pub fn local_target(addr: SocketAddr) -> SocketAddr {
    let mut t = addr;
    if t.ip().is_unspecified() {
        t.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    t
}
