//! `coinpulse cabinet-sim`: a cabinet in a terminal.

use clap::Args;

use crate::cabinet_sim::{SimCabinet, SimEvent, SimOptions};
use crate::config::Settings;

#[derive(Debug, Args)]
pub struct SimArgs {
    /// The cabinet's machine id (its MQTT username).
    #[arg(long)]
    machine_id: String,
    /// The cabinet's MQTT secret, as printed by `cabinet add`.
    #[arg(long, env = "CABINET_SECRET", hide_env_values = true)]
    secret: String,
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
    let opts = SimOptions {
        machine_id: args.machine_id.clone(),
        secret: args.secret,
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
