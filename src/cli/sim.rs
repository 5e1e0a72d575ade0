//! `coinpulse cabinet-sim`: a cabinet in a terminal.

use clap::Args;

use crate::cabinet_sim::{SimCabinet, SimEvent, SimOptions};
use crate::config::Settings;

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
    /// Broker URL. Default: MQTT_URL, else the embedded broker of the server running here.
    #[arg(long)]
    mqtt: Option<String>,
    /// Report game over this many seconds after each credit.
    #[arg(long)]
    play_seconds: Option<u64>,
    /// Behave like a seed cabinet that never acknowledges pulses.
    #[arg(long)]
    no_ack: bool,
}

pub async fn run(args: SimArgs, settings: &Settings) -> anyhow::Result<()> {
    let broker = match args.mqtt.or_else(|| settings.mqtt_url.clone()) {
        Some(url) => url,
        None => format!(
            "tcp://127.0.0.1:{}",
            super::embedded_broker_port(settings).await
        ),
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
        max_age: Some(std::time::Duration::from_secs(args.max_age_secs)),
        broker,
        ca_file: settings.mqtt_ca_file.clone(),
        topic_prefix: settings.mqtt_topic_prefix.clone(),
        play_seconds: args.play_seconds,
        ack: !args.no_ack,
        give_up_after: None,
    };
    let (cabinet, mut events) = SimCabinet::connect(opts).await.map_err(|e| {
        anyhow::anyhow!("could not connect: {e} (check the machine id, secret and broker address)")
    })?;
    println!(
        "online; waiting for coin pulses on {} (Ctrl-C to stop)",
        cabinet.topics().coinpulse(&args.machine_id)
    );
    loop {
        tokio::select! {
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
