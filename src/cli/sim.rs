//! `coinpulse cabinet-sim`: the cabinet agent (`coinpulse-cabinet`) in a terminal, with
//! the print output: it verifies, dedupes and acks pulses exactly as a real cabinet does.

use std::time::Duration;

use clap::Args;
use coinpulse_cabinet::config::OutputConfig;
use coinpulse_cabinet::{AgentOptions, Connect, RunOptions};

use crate::config::{parse_topic_prefix, LocalServer, DEFAULT_TOPIC_PREFIX};

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
    /// The pulse journal, remembering every pulse across restarts so that none is applied
    /// twice. Default: `<machine id>.pulses` in the current directory.
    #[arg(long)]
    state_file: Option<std::path::PathBuf>,
    /// Refuse pulses whose timestamp is older than this many seconds (replays; 0: no limit).
    #[arg(long, default_value_t = coinpulse_cabinet::config::DEFAULT_MAX_AGE_SECS)]
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
    let journal = args
        .state_file
        .unwrap_or_else(|| format!("{}.pulses", args.machine_id).into());
    println!("cabinet {} connecting to {broker} …", args.machine_id);
    coinpulse_cabinet::run(RunOptions {
        agent: AgentOptions {
            machine_id: args.machine_id,
            secret,
            broker,
            ca_file: args.mqtt_ca_file,
            topic_prefix: args.mqtt_topic_prefix,
            public_key,
            max_age: (args.max_age_secs > 0).then(|| Duration::from_secs(args.max_age_secs)),
            ack: !args.no_ack,
            play_seconds: args.play_seconds,
            // In a terminal a wrong secret is worth stopping for.
            connect: Connect::Wait {
                give_up_after: None,
                stop_when_refused: true,
            },
        },
        journal: Some(journal),
        outputs: vec![OutputConfig::Print],
        gameover: Vec::new(),
        control_socket: None,
    })
    .await
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
