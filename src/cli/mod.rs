//! Command-line interface: `serve` and the owner's tools.

mod bench;
mod cabinet;
mod sim;
mod tls;
pub mod webhook_test;

use clap::{Parser, Subcommand};

use crate::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "coinpulse",
    version,
    about = "Phone payments for coin-op arcade cabinets: Stripe in, MQTT coin pulses out.",
    long_about = "coinpulse takes Stripe payments for arcade cabinets and sends each cabinet its \
credits (a \"coin pulse\") over MQTT; cabinets report game over back.\n\n\
Every setting can be given as a flag, an environment variable of the same name \
(e.g. --database-url or DATABASE_URL), or a line in a .env file in the working directory. \
Flags win over the environment, which wins over .env.",
    after_help = "Quick start:\n  coinpulse serve                      # SQLite file + embedded MQTT broker\n  \
coinpulse cabinet add --machine-id cab-1 --name \"Street Fighter II\" --price 1.00 --currency usd\n  \
coinpulse cabinet-sim --machine-id cab-1 --secret-file cab-1.secret\n  \
coinpulse webhook-test --machine-id cab-1 --amount 100"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything: web server, MQTT broker/connection, payment writer, pulse dispatcher.
    Serve,
    /// Register and manage cabinets in the configured database.
    #[command(subcommand)]
    Cabinet(cabinet::CabinetCommand),
    /// Act as a cabinet: receive and verify pulses, ack them, report game over.
    CabinetSim(sim::SimArgs),
    /// Certificates for the embedded broker's TLS listener.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// Send a correctly signed test checkout.session.completed to a running server.
    WebhookTest(webhook_test::WebhookTestArgs),
    /// Measure latency, throughput, memory and start-up against a local server; prints figures.
    Bench(bench::BenchArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings.finish();
    match cli.command {
        Command::Serve => {
            // Each connected cabinet is a socket; lift the soft limit so thousands fit.
            crate::app::raise_fd_limit();
            crate::app::Application::build(settings).await?.run().await
        }
        Command::Cabinet(cmd) => cabinet::run(cmd, &settings).await,
        Command::CabinetSim(args) => sim::run(args, &settings).await,
        Command::Tls(cmd) => tls::run(cmd),
        Command::WebhookTest(args) => webhook_test::run(args, &settings).await,
        Command::Bench(args) => bench::run(args).await,
    }
}

/// The embedded broker's port as the server running here reports it (it may have moved off
/// 1883 when that port was taken), so local tools connect where the cabinets must.
pub(crate) async fn embedded_broker_port(settings: &Settings) -> u16 {
    if let Some(listen) = settings.mqtt_listen {
        return listen.port();
    }
    let url = format!(
        "http://{}/status",
        crate::mqtt::broker::local_target(settings.bind)
    );
    let reported = async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(800))
            .build()
            .ok()?;
        let status: serde_json::Value = client.get(url).send().await.ok()?.json().await.ok()?;
        status["mqtt_port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
    };
    reported.await.unwrap_or(crate::mqtt::broker::DEFAULT_PORT)
}
