//! What several coinpulse processes sharing one database agree on. Most of it lives in the
//! database itself (unique webhooks and payments, claimed pulses, leases); this is the
//! embedded broker's rule: only one replica may run one, since cabinets can reach only one.

use std::net::SocketAddr;
use std::time::Duration;

use crate::store::Store;

const EMBEDDED_BROKER: &str = "embedded broker";
/// How long the embedded broker's lease lasts without renewal, and how often it is renewed.
const TTL: chrono::Duration = chrono::Duration::seconds(10);
const RENEW_EVERY: Duration = Duration::from_secs(3);

/// Takes the embedded broker's lease for this replica, whose broker listens on `listen`.
/// A previous holder on this host whose broker port answers no more (it died without
/// saying so, or it is this replica restarted) is taken over at once; a live one, here or
/// on another host, makes this one refuse to start.
pub async fn claim_embedded_broker(store: &Store, listen: SocketAddr) -> anyhow::Result<()> {
    let host = host();
    let probe = format!("{host}:{}", listen.port());
    let give_up = tokio::time::Instant::now() + TTL.to_std().expect("positive") + RENEW_EVERY;
    loop {
        if let Some(holder) = store.lease_holder(EMBEDDED_BROKER).await? {
            let here = holder.probe.as_deref().and_then(|p| on_this_host(p, &host));
            match here {
                // Our own port (we hold it now) or a dead one: the holder is gone.
                Some(port) if port == listen.port() || !answers(port) => {
                    tracing::warn!(previous = %holder.holder, "the previous server stopped without saying so; taking over the embedded broker");
                    store.break_lease(EMBEDDED_BROKER, &holder.holder).await?;
                }
                Some(_) => anyhow::bail!(refusal(&holder.holder)),
                // Another host: only its lease running out tells.
                None => {}
            }
        }
        if store.lease(EMBEDDED_BROKER, TTL, Some(&probe)).await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > give_up {
            let holder = store.lease_holder(EMBEDDED_BROKER).await?;
            anyhow::bail!(refusal(holder.as_ref().map_or("?", |h| &h.holder)));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn refusal(holder: &str) -> String {
    format!(
        "another coinpulse ({holder}) runs the embedded MQTT broker for this database. \
         Several replicas must share an external broker: set MQTT_URL (and \
         MQTT_USERNAME/MQTT_PASSWORD) on every one of them"
    )
}

/// Renews the embedded broker's lease while the server runs. Never returns.
pub async fn keep_embedded_broker(store: Store, listen: SocketAddr) {
    let probe = format!("{}:{}", host(), listen.port());
    let mut every = tokio::time::interval(RENEW_EVERY);
    loop {
        every.tick().await;
        match store.lease(EMBEDDED_BROKER, TTL, Some(&probe)).await {
            Ok(true) => {}
            Ok(false) => tracing::error!(
                "another coinpulse took over the embedded broker's lease: two servers now \
                 serve this database with brokers of their own; stop one"
            ),
            Err(e) => tracing::warn!(error = %e, "could not renew the embedded broker's lease"),
        }
    }
}

/// Gives the lease up at a clean stop, so the next start need not check.
pub async fn release_embedded_broker(store: &Store) {
    if let Err(e) = store.release_lease(EMBEDDED_BROKER).await {
        tracing::warn!(error = %e, "could not release the embedded broker's lease");
    }
}

fn host() -> String {
    crate::store::host_name()
}

/// The port of `probe` (host:port) when it names this host.
fn on_this_host(probe: &str, host: &str) -> Option<u16> {
    let (probe_host, port) = probe.rsplit_once(':')?;
    (probe_host == host).then(|| port.parse().ok()).flatten()
}

/// Whether something listens on this host's `port`.
fn answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_ok()
}
