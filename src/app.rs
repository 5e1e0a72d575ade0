//! Builds and runs the whole application: database, broker, MQTT connection, writer,
//! dispatcher and web server. `main` and the tests both go through `Application::build`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use paho_mqtt as paho;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing_actix_web::TracingLogger;

use crate::config::Settings;
use crate::delivery::{Dispatcher, Outlet, Relay, MAX_INFLIGHT};
use crate::domain::Keys;
use crate::mqtt::connection::{self, Target};
use crate::mqtt::{broker, inbound, MqttStats, Topics, INTERNAL_USER};
use crate::store::Store;
use crate::web::{configure, AppState};
use crate::writer::{self, Writer};

pub struct Application {
    http: actix_web::dev::Server,
    http_addr: SocketAddr,
    broker_addr: Option<SocketAddr>,
    broker_tls_addr: Option<SocketAddr>,
    broker: Option<Arc<broker::EmbeddedBroker>>,
    store: Store,
    mqtt: paho::AsyncClient,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    setup_url: Option<String>,
}

/// Stops a running application (tests use it to restart one on the same database).
#[derive(Clone)]
pub struct StopHandle {
    http: actix_web::dev::ServerHandle,
    mqtt: paho::AsyncClient,
    broker: Option<Arc<broker::EmbeddedBroker>>,
}

impl StopHandle {
    pub async fn stop(&self) {
        let _ = self.mqtt.disconnect(None).await;
        self.http.stop(true).await;
        if let Some(b) = &self.broker {
            b.shutdown();
        }
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let started = Instant::now();
        let keys = Keys::new(settings.master_key()?);
        let store = Store::connect_with(&settings.database_url, settings.database_max_connections)
            .await
            .with_context(|| {
                format!(
                    "DATABASE_URL: cannot open {}",
                    redact_url(&settings.database_url)
                )
            })?
            .as_replica(&settings.mqtt_client_id);
        let topics = Topics::new(&settings.mqtt_topic_prefix);
        let stats = Arc::new(MqttStats::default());

        // Bounded everywhere: a flood from MQTT slows its sender, never grows the heap.
        let (outbox_tx, outbox_rx) = mpsc::channel(MAX_INFLIGHT);
        let (signal_tx, signal_rx) = mpsc::channel(1_024);
        let (inbound_tx, inbound_rx) = mpsc::channel(4_096);
        let (broker_tx, broker_rx) = mpsc::channel(4_096);

        let broker = MqttSide::start(&settings, &keys, &store, &topics, broker_tx).await?;
        let presence = broker.embedded.as_ref().map(|b| b.presence.clone());
        let mqtt = connection::start(&broker.target, stats.clone(), inbound_tx, signal_tx.clone())
            .map_err(|e| anyhow::anyhow!("MQTT_URL: cannot use {}: {e}", broker.target.uri))?;

        let relay = match &presence {
            Some(presence) => Relay::Embedded {
                presence: presence.clone(),
                topics: topics.clone(),
            },
            None => Relay::External {
                client: mqtt.clone(),
                topics: topics.clone(),
                stats: stats.clone(),
            },
        };
        let core = writer::Core {
            store: store.clone(),
            keys: keys.clone(),
            relay: Some(relay),
            stats: stats.clone(),
        };
        let (writer, writer_task) = Writer::spawn(core, outbox_tx);
        let dispatcher = Dispatcher {
            client: mqtt.clone(),
            outlet: match &presence {
                Some(p) => Outlet::Embedded(p.clone()),
                None => Outlet::External(mqtt.clone()),
            },
            topics: topics.clone(),
            store: store.clone(),
            writer: writer.clone(),
            stats: stats.clone(),
            share_group: settings.shared_group().map(str::to_owned),
        };
        let dispatcher_task = tokio::spawn(dispatcher.run(outbox_rx, signal_rx, broker_rx));
        let inbound_task = tokio::spawn(inbound::run(
            inbound_rx,
            topics.clone(),
            writer.clone(),
            stats.clone(),
            signal_tx,
        ));

        let mailer = crate::mail::Mailer::new(
            settings.smtp_url.as_ref().map(|u| u.expose()),
            &settings.smtp_from,
        )?;
        let expiry_task = tokio::spawn(crate::wallets::expiry_loop(
            store.clone(),
            writer.clone(),
            mailer.clone(),
            settings.public_url.clone(),
        ));
        let broker_addr = broker.embedded.as_ref().map(|b| b.addr);
        let broker_tls_addr = broker.embedded.as_ref().and_then(|b| b.tls_addr);
        let state = AppState {
            store: store.clone(),
            writer,
            settings: Arc::new(settings.clone()),
            stripe: crate::stripe::api::StripeApi::new(
                &settings.stripe_api_base,
                settings.stripe_secret_key.as_ref().map(|k| k.expose()),
                settings.allow_promotion_codes,
            ),
            keys: keys.clone(),
            stats,
            mqtt: mqtt.clone(),
            topics,
            broker: broker.label.clone(),
            mqtt_port: broker_addr.map(|a| a.port()),
            mqtt_tls_port: broker_tls_addr.map(|a| a.port()),
            presence,
            qr: crate::qr::QrCache::default(),
            limits: Arc::new(crate::web::Limits::new(store.clone(), keys.clone())),
            mailer,
        };
        let (http, http_addr) = serve_http(state, settings.bind)?;
        tracing::info!(
            http = %http_addr,
            public_url = %settings.public_url,
            broker = %broker.label,
            database = %redact_url(&settings.database_url),
            startup_ms = started.elapsed().as_millis() as u64,
            "coinpulse ready"
        );
        let setup_url = announce_setup(&store, &settings.public_url).await;
        let mut tasks = vec![
            ("database writer", writer_task),
            ("outbox dispatcher", dispatcher_task),
            ("MQTT inbound", inbound_task),
            ("wallet expiry", expiry_task),
        ];
        if let Some(addr) = broker_addr {
            let lease = crate::replicas::keep_embedded_broker(store.clone(), addr);
            tasks.push(("embedded broker lease", tokio::spawn(lease)));
        }
        Ok(Self {
            setup_url,
            http,
            http_addr,
            broker_addr,
            broker_tls_addr,
            broker: broker.embedded,
            store,
            mqtt,
            tasks,
        })
    }

    /// The one-time owner setup link, while no dashboard user exists.
    pub fn setup_url(&self) -> Option<&str> {
        self.setup_url.as_deref()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The embedded broker's address, when it runs.
    pub fn broker_addr(&self) -> Option<SocketAddr> {
        self.broker_addr
    }

    /// The embedded broker's TLS address, when it has one.
    pub fn broker_tls_addr(&self) -> Option<SocketAddr> {
        self.broker_tls_addr
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            http: self.http.handle(),
            mqtt: self.mqtt.clone(),
            broker: self.broker.clone(),
        }
    }

    /// Runs until the web server stops (Ctrl-C / SIGTERM) or a background task dies; a dead
    /// task is an error, so the process exits non-zero instead of limping on.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self {
            http,
            store,
            mqtt,
            tasks,
            broker,
            ..
        } = self;
        let (names, handles): (Vec<_>, Vec<_>) = tasks.into_iter().unzip();
        let watch = futures::future::select_all(handles);
        let result = tokio::select! {
            r = http => r.context("web server failed"),
            (r, idx, rest) = watch => {
                for h in rest { h.abort(); }
                Err(anyhow::anyhow!("{} stopped unexpectedly: {:?}", names[idx], r.err()))
            }
        };
        let _ = mqtt.disconnect(None).await;
        if let Some(b) = broker {
            b.shutdown();
            crate::replicas::release_embedded_broker(&store).await;
        }
        store.close().await;
        tracing::info!("coinpulse stopped");
        result
    }
}

/// The broker side: the embedded broker (without MQTT_URL) or the external one's address,
/// and how the server's own client reaches it.
struct MqttSide {
    target: Target,
    embedded: Option<Arc<broker::EmbeddedBroker>>,
    /// For logs and installers: `embedded, mqtt://…` or the external URL.
    label: String,
}

impl MqttSide {
    async fn start(
        settings: &Settings,
        keys: &Keys,
        store: &Store,
        topics: &Topics,
        events: mpsc::Sender<broker::BrokerEvent>,
    ) -> anyhow::Result<Self> {
        if let Some(url) = &settings.mqtt_url {
            return Ok(Self {
                target: Target {
                    uri: url.clone(),
                    username: settings.mqtt_username.clone(),
                    password: settings
                        .mqtt_password
                        .as_ref()
                        .map(|p| p.expose().to_owned()),
                    ca_file: settings.mqtt_ca_file.clone(),
                    client_cert: settings
                        .mqtt_client_cert
                        .clone()
                        .zip(settings.mqtt_client_key.clone()),
                    client_id: settings.mqtt_client_id.clone(),
                },
                embedded: None,
                label: url.clone(),
            });
        }
        let tls = match (
            &settings.mqtt_tls_listen,
            &settings.mqtt_tls_cert,
            &settings.mqtt_tls_key,
        ) {
            (Some(addr), Some(cert), Some(key)) => Some(broker::TlsListen {
                addr: *addr,
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        let options = broker::BrokerOptions {
            listen: settings.mqtt_listen,
            tls,
            topics: topics.clone(),
            internal_password: keys.internal_mqtt_password(),
            server_client_id: settings.mqtt_client_id.clone(),
        };
        let embedded = broker::start(options, store.clone(), events).await?;
        if let Err(e) = crate::replicas::claim_embedded_broker(store, embedded.addr).await {
            embedded.shutdown();
            return Err(e);
        }
        Ok(Self {
            target: Target {
                uri: format!("tcp://{}", broker::local_target(embedded.addr)),
                username: Some(INTERNAL_USER.to_owned()),
                password: Some(keys.internal_mqtt_password()),
                ca_file: None,
                client_cert: None,
                client_id: settings.mqtt_client_id.clone(),
            },
            label: format!("embedded, mqtt://{}", embedded.addr),
            embedded: Some(Arc::new(embedded)),
        })
    }
}

/// While nobody can sign in to the dashboard, prints a one-time setup link (a fresh token
/// at every start; only its hash is stored).
async fn announce_setup(store: &Store, public_url: &str) -> Option<String> {
    match crate::accounts::issue_setup_token(store).await {
        Ok(Some(token)) => {
            let url = format!("{public_url}/setup?token={token}");
            tracing::warn!(
                "no dashboard account yet: open {url} to create the owner account (the link works once and changes at each start), or run `coinpulse user add --email you@example.com --role owner`"
            );
            Some(url)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, "could not issue a setup link");
            None
        }
    }
}

/// Starts the web server on `bind`.
fn serve_http(
    state: AppState,
    bind: SocketAddr,
) -> anyhow::Result<(actix_web::dev::Server, SocketAddr)> {
    let keys = state.keys.clone();
    let public_url = state.settings.public_url.clone();
    let state = web::Data::new(state);
    crate::metrics::handle();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(actix_web::middleware::from_fn(
                crate::error::render_html_errors,
            ))
            .wrap(actix_web::middleware::from_fn(crate::web::count_requests))
            .wrap(TracingLogger::default())
            // Phones on weak arcade Wi-Fi get pages gzipped when they ask for it.
            .wrap(actix_web::middleware::Compress::default())
            // Outermost, so error pages made by the middlewares above carry them too.
            .wrap(crate::web::security_headers(
                public_url.starts_with("https://"),
            ))
            .configure(|cfg| configure(cfg, &keys, &public_url))
    })
    .shutdown_timeout(10)
    .bind(bind)
    .with_context(|| format!("BIND: cannot listen on {bind}"))?;
    let addr = server.addrs()[0];
    Ok((server.run(), addr))
}

/// A database URL with any password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Lifts the open-file soft limit to the hard limit: every connected cabinet is a socket.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
