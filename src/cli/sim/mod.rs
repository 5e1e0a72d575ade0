//! `coinpulse cabinet-sim`: a cabinet in a terminal, and the simulated cabinet behind it
//! (which the integration tests use as their cabinet).

mod cabinet;

use std::time::Duration;

use clap::Args;

pub use cabinet::{SimCabinet, SimEvent, SimOptions};

use crate::config::{parse_topic_prefix, LocalServer, DEFAULT_TOPIC_PREFIX};
use crate::mqtt::connection::is_login_refused;

#[derive(Debug, Args)]
pub struct SimArgs {
    /// The cabinet's machine id (its MQTT username).
    #[arg(long)]
    machine_id: String,
    /// File holding the cabinet's MQTT secret, as printed by `cabinet add`. The secret can
    /// also come from the CABINET_SECRET environment variable; never from a flag, which
    /// anyone on the machine could read with `ps`.
    #[arg(long, env = "CABINET_SECRET_FILE")]
    secret_file: Option<std::path::PathBuf>,
    /// The server's pulse public key (hex, from `cabinet add`, the API or /status). When
    /// given, pulses are verified with Ed25519 rather than the secret-keyed HMAC.
    #[arg(long, env = "PULSE_PUBLIC_KEY")]
    public_key: Option<String>,
    /// File remembering credited pulse ids across restarts, so a replayed pulse is refused
    /// after a reboot too. Default: `<machine id>.pulses` in the current directory.
    #[arg(long)]
    state_file: Option<std::path::PathBuf>,
    /// Refuse pulses whose timestamp is older than this many seconds (replays).
    #[arg(long, default_value_t = 600)]
    max_age_secs: u64,
    /// Broker URL (tcp://host:1883 or ssl://host:8883). Unset: the embedded broker of the
    /// server running here, at the port it reports (or its MQTT_LISTEN).
    #[arg(long, env = "MQTT_URL", value_name = "URL", alias = "mqtt-url")]
    mqtt: Option<String>,
    /// CA certificate (PEM) to trust for an ssl:// broker.
    #[arg(long, env = "MQTT_CA_FILE")]
    mqtt_ca_file: Option<std::path::PathBuf>,
    /// The server's topic prefix; the cabinet listens on {prefix}/{machine id}/coinpulse.
    #[arg(long, env = "MQTT_TOPIC_PREFIX", default_value = DEFAULT_TOPIC_PREFIX, value_parser = parse_topic_prefix)]
    mqtt_topic_prefix: String,
    /// Report game over this many seconds after each credit.
    #[arg(long)]
    play_seconds: Option<u64>,
    /// Behave like a seed cabinet that never acknowledges pulses.
    #[arg(long)]
    no_ack: bool,
    #[command(flatten)]
    server: LocalServer,
}

pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let broker = match &args.mqtt {
        Some(url) => url.clone(),
        None => format!("tcp://127.0.0.1:{}", local_broker_port(&args.server).await),
    };
    println!("cabinet {} connecting to {broker} …", args.machine_id);
    let secret = match (&args.secret_file, std::env::var("CABINET_SECRET")) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--secret-file {}: {e}", path.display()))?
            .trim()
            .to_owned(),
        (None, Ok(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => anyhow::bail!(
            "the cabinet's secret is needed: --secret-file FILE or the CABINET_SECRET environment variable"
        ),
    };
    let public_key = args
        .public_key
        .as_deref()
        .map(crate::domain::parse_public_key)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
    let state_file = args
        .state_file
        .unwrap_or_else(|| format!("{}.pulses", args.machine_id).into());
    let opts = SimOptions {
        machine_id: args.machine_id.clone(),
        secret,
        public_key,
        state_file: Some(state_file),
        max_age: Some(Duration::from_secs(args.max_age_secs)),
        broker: broker.clone(),
        ca_file: args.mqtt_ca_file,
        topic_prefix: args.mqtt_topic_prefix,
        play_seconds: args.play_seconds,
        ack: !args.no_ack,
        give_up_after: None,
    };
    let (cabinet, mut events) = SimCabinet::connect(opts).await.map_err(|e| {
        if is_login_refused(&e) {
            // paho's text for a refused CONNACK is only a return code; say what it means.
            tracing::debug!(error = %e, "login refused");
            anyhow::anyhow!("login refused by {broker}: wrong machine id or secret")
        } else {
            anyhow::anyhow!("could not connect to {broker}: {e}")
        }
    })?;
    println!(
        "online; waiting for coin pulses on {} (Ctrl-C to stop)",
        cabinet.topics().coinpulse(&args.machine_id)
    );
    let mut connection = cabinet.connection();
    let mut online = true;
    loop {
        tokio::select! {
            Ok(()) = connection.changed() => {
                let now = *connection.borrow_and_update();
                if now != online {
                    online = now;
                    if online {
                        println!("back online: reconnected to {broker}");
                    } else {
                        println!("lost the broker {broker}; reconnecting …");
                    }
                }
            },
            ev = events.recv() => match ev {
                Some(SimEvent::Credit(p)) => println!(
                    "+{} credit{}  (pulse {}, {}, {})",
                    p.credits, if p.credits == 1 { "" } else { "s" }, p.id, p.source.as_str(), p.timestamp
                ),
                Some(SimEvent::Duplicate(id)) => println!("   redelivery of pulse {id} ignored"),
                Some(SimEvent::Rejected(why)) => println!("!! pulse rejected: {why}"),
                Some(SimEvent::GameOverSent) => println!("game over sent"),
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    cabinet.disconnect().await;
    println!("offline");
    Ok(())
}

/// The embedded broker's port, as MQTT_LISTEN or the server running here says. Never a
/// guess: with another broker on 1883 the server moves up, and a guessed 1883 would reach
/// the wrong broker. So without an answer it waits for the server.
async fn local_broker_port(server: &LocalServer) -> u16 {
    let mut said = false;
    loop {
        if let Some(port) = super::embedded_broker_port(server).await {
            return port;
        }
        if !said {
            println!(
                "waiting for the coinpulse server at http://{} to say where its broker is (or pass --mqtt URL) …",
                crate::mqtt::broker::local_target(server.bind)
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
