//! Command-line interface: `serve` and the owner's tools, each with only its own options.

mod backup;
mod bench;
mod cabinet;
pub mod logs;
mod money;
mod mosquitto;
pub mod sim;
mod tls;
mod user;
mod wallet;
pub mod webhook_test;

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::{LocalServer, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "coinpulse",
    version,
    about = "Phone payments for coin-op arcade cabinets: Stripe in, MQTT coin pulses out.",
    long_about = "coinpulse takes Stripe payments for arcade cabinets and sends each cabinet its \
credits (a \"coin pulse\") over MQTT; cabinets report game over back.\n\n\
Start with `coinpulse serve`, then register each cabinet with `coinpulse cabinet add`. \
`coinpulse <command> --help` lists a command's options.\n\n\
Every option can also be set by an environment variable (--database-url is DATABASE_URL) \
or a line in a .env file in the working directory (or the file --env-file names); flags win \
over the environment, which wins over the file, and an empty value counts as unset. Amounts are typed one way everywhere: \
with a decimal point in the currency's main unit (1.00 = one dollar), as a whole number in \
minor units (100 = 100 cents = 1.00 USD).",
    after_help = "Quick start:\n  coinpulse serve                      # SQLite file + embedded MQTT broker\n  \
coinpulse cabinet add --machine-id cab-1 --name \"Street Fighter II\" --price 1.00 --currency usd\n  \
coinpulse cabinet-sim --machine-id cab-1 --secret-file cab-1.secret\n  \
coinpulse webhook-test --machine-id cab-1 --amount 1.00"
)]
pub struct Cli {
    /// Read settings from this file instead of `.env`: the service's own (e.g.
    /// /etc/coinpulse/coinpulse.env), so a command works on the server's database and key.
    #[arg(long, global = true, value_name = "FILE", env = ENV_FILE)]
    pub env_file: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

const ENV_FILE: &str = "COINPULSE_ENV_FILE";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: web pages and Stripe webhooks, MQTT broker or connection, pulse delivery.
    Serve(Box<ServeArgs>),
    /// Register cabinets, set prices and bundles, grant credits (works on the database).
    Cabinet(cabinet::CabinetArgs),
    /// The cabinet agent in this terminal, printing credits: verify pulses, apply each once, ack, report game over.
    CabinetSim(sim::SimArgs),
    /// Dashboard users: add, list, remove, reset a password.
    User(user::UserArgs),
    /// Player wallets: check balances against their ledgers.
    Wallet(wallet::WalletArgs),
    /// A consistent copy of the SQLite database and its key file, while the server runs.
    Backup(backup::BackupArgs),
    /// Put a backup back (the server stopped).
    Restore(backup::RestoreArgs),
    /// Apply the database's pending migrations, or report them (--check).
    Migrate(backup::MigrateArgs),
    /// Write a Mosquitto password file and ACL for every cabinet (an external broker with
    /// the embedded one's rights); --watch keeps them current.
    MosquittoConfig(mosquitto::MosquittoArgs),
    /// Certificates for the embedded broker's TLS listener.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// Send a correctly signed test payment (checkout.session.completed) to a running server.
    WebhookTest(webhook_test::WebhookTestArgs),
    /// Measure latency, throughput, memory and start-up against a local server; prints figures.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub settings: Settings,
}

impl Command {
    /// Only the server logs as it goes; the tools print their result and log only problems.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Serve(_) => {
                // mqtt5 logs every refused message itself; coinpulse's access rules log
                // them instead, with the login's name and at most one line a second.
                "info,sqlx=warn,mqtt5=error,actix_server=warn,paho_mqtt=warn"
            }
            Command::CabinetSim(_) => "warn,coinpulse_cabinet=info,paho_mqtt=error",
            _ => "warn,mqtt5=error,paho_mqtt=error",
        }
    }

    /// The log format the server was asked for; the tools always write text.
    pub fn log_format(&self) -> &str {
        match self {
            Command::Serve(args) => &args.settings.log_format,
            _ => "text",
        }
    }
}

/// Parses the command line after loading `.env`. A setting error names the environment
/// variable beside the flag, since most owners set them in `.env`.
pub fn parse() -> Result<Cli, anyhow::Error> {
    let names = environment_names();
    // The file must be read before clap parses, so its flag is picked out by hand; clap
    // then parses it again, for --help and for the error on a misspelt one.
    let env_file = env_file_arg(std::env::args_os().skip(1))
        .or_else(|| std::env::var_os(ENV_FILE).filter(|v| !v.is_empty()))
        .map(std::path::PathBuf::from);
    crate::config::load_environment(&names, env_file.as_deref())?;
    Cli::try_parse().or_else(|mut e| {
        if let Some(tip) = environment_tip(&e) {
            e.insert(
                ContextKind::Suggested,
                ContextValue::StyledStrs(vec![tip.into()]),
            );
        }
        e.exit()
    })
}

/// The value of `--env-file FILE` / `--env-file=FILE`, if given (before a `--`).
fn env_file_arg(args: impl Iterator<Item = OsString>) -> Option<OsString> {
    let mut args = args.take_while(|a| a != "--");
    while let Some(arg) = args.next() {
        if arg == "--env-file" {
            return args.next();
        }
        if let Some(v) = arg.to_str().and_then(|a| a.strip_prefix("--env-file=")) {
            return Some(v.into());
        }
    }
    None
}

/// Every environment variable an option of any subcommand reads.
fn environment_names() -> Vec<OsString> {
    fn walk(cmd: &clap::Command, out: &mut Vec<OsString>) {
        out.extend(
            cmd.get_arguments()
                .filter_map(|a| a.get_env().map(OsString::from)),
        );
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut names = Vec::new();
    walk(&Cli::command(), &mut names);
    names.sort();
    names.dedup();
    names
}

/// "this is BIND in the environment and .env" for an error about `--bind`.
fn environment_tip(e: &clap::Error) -> Option<String> {
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation | ErrorKind::ArgumentConflict
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    fn find(cmd: &clap::Command, long: &str) -> Option<String> {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(long))
            .and_then(|a| a.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .or_else(|| cmd.get_subcommands().find_map(|s| find(s, long)))
    }
    let env = find(&Cli::command(), long)?;
    Some(format!(
        "--{long} is the {env} environment variable (or {env}= in .env); an empty value counts as unset"
    ))
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            // Each connected cabinet is a socket; lift the soft limit so thousands fit.
            crate::app::raise_fd_limit();
            crate::app::Application::build(args.settings.finish())
                .await?
                .run()
                .await
        }
        Command::Cabinet(args) => cabinet::run(args).await,
        Command::CabinetSim(args) => sim::run(args).await,
        Command::User(args) => user::run(args).await,
        Command::Wallet(args) => wallet::run(args).await,
        Command::Backup(args) => backup::backup(args).await,
        Command::MosquittoConfig(args) => mosquitto::run(args).await,
        Command::Restore(args) => backup::restore(args).await,
        Command::Migrate(args) => backup::migrate(args).await,
        Command::Tls(cmd) => tls::run(cmd),
        Command::WebhookTest(args) => webhook_test::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}

/// The embedded broker's port as the server running here reports it (it may have moved off
/// 1883 when that port was taken), so local tools connect where the cabinets must. `None`
/// when neither MQTT_LISTEN nor a running server says.
pub(crate) async fn embedded_broker_port(server: &LocalServer) -> Option<u16> {
    if let Some(listen) = server.mqtt_listen {
        return Some(listen.port());
    }
    let url = format!(
        "http://{}/status",
        crate::mqtt::broker::local_target(server.bind)
    );
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(800))
        .build()
        .ok()?;
    let status: serde_json::Value = client.get(url).send().await.ok()?.json().await.ok()?;
    status["mqtt_port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_file_flag_is_found_in_either_spelling_before_a_double_dash() {
        let find = |args: &[&str]| env_file_arg(args.iter().map(OsString::from));
        assert_eq!(
            find(&["--env-file", "/etc/c.env", "cabinet", "list"]),
            Some("/etc/c.env".into())
        );
        assert_eq!(
            find(&["cabinet", "list", "--env-file=/etc/c.env"]),
            Some("/etc/c.env".into())
        );
        assert_eq!(find(&["cabinet", "list"]), None);
        assert_eq!(find(&["webhook-test", "--", "--env-file", "x"]), None);
    }
}
