//! `coinpulse cabinet …`: the same operations as the JSON API, on the configured database.
//! Run them beside the server or without it; a running server sees the changes at once.

use clap::{Args, Subcommand};
use tokio::sync::mpsc;

use super::money::{self, parse_amount};
use crate::cabinets::{self, CabinetInput, CabinetUpdate};
use crate::config::DatabaseSettings;
use crate::domain::{Bundle, Cabinet, Currency, Keys, Money};
use crate::store::Store;
use crate::writer::{self, Writer};

#[derive(Debug, Args)]
pub struct CabinetArgs {
    #[command(flatten)]
    settings: DatabaseSettings,
    #[command(subcommand)]
    command: CabinetCommand,
}

#[derive(Debug, Subcommand)]
enum CabinetCommand {
    /// Register a cabinet and print its MQTT credentials (the secret is shown only once).
    Add(AddArgs),
    /// List all cabinets: id, name, price, enabled, online.
    List,
    /// Show one cabinet, its bundles and its pay page.
    Show {
        /// The cabinet's machine id.
        machine_id: String,
    },
    /// Change the price per credit (and optionally the currency).
    #[command(after_help = money::HELP)]
    SetPrice {
        /// The cabinet's machine id.
        machine_id: String,
        /// Price per credit, e.g. 1.50 (see below).
        price: String,
        /// New currency (3-letter ISO code); default: the cabinet's current one.
        #[arg(long)]
        currency: Option<String>,
    },
    /// Set the bundles on the pay page, e.g. `1:1.00 3:2.50 "6:4.50:Party pack"`; none clears them.
    #[command(after_help = money::HELP)]
    SetBundles {
        /// The cabinet's machine id.
        machine_id: String,
        /// Bundles as credits:price[:label], prices in the cabinet's currency.
        bundles: Vec<String>,
    },
    /// Give a cabinet free credits (a refund in kind, a test): queued like a paid pulse.
    Credit {
        /// The cabinet's machine id.
        machine_id: String,
        /// Credits to send, 1 to 100.
        #[arg(value_parser = clap::value_parser!(i64).range(1..=100))]
        credits: i64,
        /// Why, for the records (shown with the pulse in the API), at most 200 characters.
        #[arg(long)]
        reason: String,
    },
    /// Stop taking payments for a cabinet (its payments go to review).
    Disable {
        /// The cabinet's machine id.
        machine_id: String,
    },
    /// Take payments for a cabinet again.
    Enable {
        /// The cabinet's machine id.
        machine_id: String,
    },
    /// Issue a new MQTT secret; the old one stops working and its connections are closed.
    RotateSecret {
        /// The cabinet's machine id.
        machine_id: String,
    },
    /// Take payments even when the broker cannot tell whether the cabinet is connected
    /// (a seed cabinet on an external broker).
    AlwaysAvailable {
        /// The cabinet's machine id.
        machine_id: String,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        setting: String,
    },
}

#[derive(Debug, Args)]
#[command(after_help = money::HELP)]
struct AddArgs {
    /// The cabinet's id: 1–64 characters of letters, digits, '_' and '-'.
    #[arg(long)]
    machine_id: String,
    /// Name shown on the pay page. Default: the machine id.
    #[arg(long)]
    name: Option<String>,
    /// The game it runs, shown on the pay page.
    #[arg(long, default_value = "")]
    game: String,
    /// Where it stands, for your records.
    #[arg(long, default_value = "")]
    location: String,
    /// Price per credit, e.g. 1.00 (see below).
    #[arg(long)]
    price: String,
    /// Currency of the price (3-letter ISO code).
    #[arg(long, default_value = "usd")]
    currency: String,
}

pub async fn run(args: CabinetArgs) -> anyhow::Result<()> {
    let settings = args.settings.existing()?;
    let store = Store::connect(&settings.database_url).await?;
    let keys = Keys::new(settings.master_key()?);
    match args.command {
        CabinetCommand::Add(a) => {
            let currency = Currency::parse(&a.currency).map_err(anyhow::Error::msg)?;
            let input = CabinetInput {
                machine_id: a.machine_id,
                name: a.name,
                game: a.game,
                location: a.location,
                price_minor: parse_amount(&a.price, &currency)
                    .map_err(|e| anyhow::anyhow!("--price: {e}"))?,
                currency: a.currency,
                enabled: Some(true),
            };
            let reg = cabinets::register(&store, &keys, &input).await?;
            print_cabinet(&reg.cabinet);
            print_credentials(&settings, &reg.cabinet.machine_id, &reg.secret).await;
        }
        CabinetCommand::List => {
            let all = store.cabinets().await?;
            if all.is_empty() {
                println!("No cabinets yet. Add one with: coinpulse cabinet add --machine-id cab-1 --price 1.00");
            }
            for c in all {
                println!(
                    "{:<24} {:<28} {:>12}  {}  {}",
                    c.machine_id,
                    truncate(&c.name, 28),
                    price(&c),
                    if c.enabled { "enabled " } else { "disabled" },
                    if c.online { "online" } else { "offline" }
                );
            }
        }
        CabinetCommand::Show { machine_id } => {
            let c = existing(&store, &machine_id).await?;
            print_cabinet(&c);
            print_bundles(&c, &store.bundles(&c.machine_id).await?);
            println!("pay page:    {}/p/{}", settings.public_url, c.machine_id);
        }
        CabinetCommand::SetPrice {
            machine_id,
            price: text,
            currency,
        } => {
            let current = existing(&store, &machine_id).await?;
            let cur = Currency::parse(currency.as_deref().unwrap_or(&current.currency))
                .map_err(anyhow::Error::msg)?;
            let update = CabinetUpdate {
                price_minor: Some(parse_amount(&text, &cur).map_err(anyhow::Error::msg)?),
                currency: Some(cur.as_str().to_owned()),
                ..Default::default()
            };
            print_cabinet(&cabinets::update(&store, &machine_id, &update).await?);
        }
        CabinetCommand::SetBundles {
            machine_id,
            bundles,
        } => {
            let cabinet = existing(&store, &machine_id).await?;
            let currency = Currency::parse(&cabinet.currency).map_err(anyhow::Error::msg)?;
            let parsed = bundles
                .iter()
                .map(|b| Bundle::parse(b, &currency))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let saved = cabinets::set_bundles(&store, &cabinet, &parsed).await?;
            print_cabinet(&cabinet);
            print_bundles(&cabinet, &saved);
        }
        CabinetCommand::Credit {
            machine_id,
            credits,
            reason,
        } => grant(&store, &keys, &machine_id, credits, &reason).await?,
        CabinetCommand::Disable { machine_id } => {
            let u = CabinetUpdate {
                enabled: Some(false),
                ..Default::default()
            };
            print_cabinet(&cabinets::update(&store, &machine_id, &u).await?);
        }
        CabinetCommand::Enable { machine_id } => {
            let u = CabinetUpdate {
                enabled: Some(true),
                ..Default::default()
            };
            print_cabinet(&cabinets::update(&store, &machine_id, &u).await?);
        }
        CabinetCommand::AlwaysAvailable {
            machine_id,
            setting,
        } => {
            let u = CabinetUpdate {
                always_available: Some(setting == "on"),
                ..Default::default()
            };
            print_cabinet(&cabinets::update(&store, &machine_id, &u).await?);
        }
        CabinetCommand::RotateSecret { machine_id } => {
            let secret = cabinets::rotate_secret(&store, &keys, &machine_id).await?;
            print_credentials(&settings, &machine_id, &secret).await;
        }
    }
    store.close().await;
    Ok(())
}

async fn existing(store: &Store, machine_id: &str) -> anyhow::Result<Cabinet> {
    store
        .cabinet(machine_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no cabinet with machine_id {machine_id:?}"))
}

/// Queues operator credits through the same writer and outbox as the API's
/// `POST /api/v1/cabinets/{id}/credits`; the running server's dispatcher finds the new
/// outbox row on its next sweep and sends it.
async fn grant(
    store: &Store,
    keys: &Keys,
    machine_id: &str,
    credits: i64,
    reason: &str,
) -> anyhow::Result<()> {
    let reason = cabinets::check_grant(credits, reason)?;
    // The writer hands new pulses to a dispatcher; here there is none, so the pulse waits
    // in the outbox for the server's.
    let (outbox, _no_dispatcher) = mpsc::channel(1);
    let core = writer::Core {
        store: store.clone(),
        keys: keys.clone(),
        relay: None,
        stats: Default::default(),
    };
    let (writer, task) = Writer::spawn(core, outbox);
    let pulse = writer
        .grant(machine_id, credits, reason)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no cabinet with machine_id {machine_id:?}"))?;
    drop(writer);
    let _ = task.await;
    let plural = if credits == 1 { "" } else { "s" };
    println!(
        "queued {credits} credit{plural} for {machine_id} (pulse {}, reason {reason:?})",
        pulse.id
    );
    println!(
        "the server sends it within a few seconds, or when it next starts if it is not running"
    );
    Ok(())
}

fn price(c: &Cabinet) -> String {
    Money::format(c.price_minor, &c.currency)
}

fn print_bundles(c: &Cabinet, bundles: &[Bundle]) {
    if bundles.is_empty() {
        println!("bundles:     none (the pay page offers single credits at the base price)");
        return;
    }
    println!("bundles:");
    for b in bundles {
        let price = Currency::parse(&c.currency)
            .map(|cur| {
                Money {
                    minor: b.price_minor,
                    currency: cur,
                }
                .to_string()
            })
            .unwrap_or_default();
        let plays = if b.label.is_empty() {
            String::new()
        } else {
            format!(" ({} credits)", b.credits)
        };
        println!("  {:<32} {price}", format!("{}{plays}", b.title()));
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

fn print_cabinet(c: &Cabinet) {
    println!("machine_id:  {}", c.machine_id);
    println!("name:        {}", c.name);
    if !c.game.is_empty() {
        println!("game:        {}", c.game);
    }
    if !c.location.is_empty() {
        println!("location:    {}", c.location);
    }
    println!("price:       {} per credit", price(c));
    println!("enabled:     {}", if c.enabled { "yes" } else { "no" });
    if c.always_available {
        println!("available:   always (the owner vouches for it)");
    }
    println!(
        "status:      {}{}",
        if c.online { "online" } else { "offline" },
        c.last_seen_at
            .as_deref()
            .map(|t| format!(" (last seen {t})"))
            .unwrap_or_default()
    );
}

async fn print_credentials(settings: &DatabaseSettings, machine_id: &str, secret: &str) {
    let broker = match settings.cabinet_mqtt_url.as_ref().or(settings.mqtt_url.as_ref()) {
        Some(url) => url.clone(),
        None => match super::embedded_broker_port(&settings.server).await {
            Some(port) => format!("tcp://<this server's address>:{port}"),
            None => format!(
                "tcp://<this server's address>:<its broker port: {} unless 1883 was taken; /status shows it>",
                crate::mqtt::broker::DEFAULT_PORT
            ),
        },
    };
    let prefix = &settings.mqtt_topic_prefix;
    println!();
    println!("MQTT credentials for the cabinet (the secret is shown only now):");
    println!("  broker:    {broker}");
    println!("  username:  {machine_id}");
    println!("  secret:    {secret}");
    println!("  receives:  {prefix}/{machine_id}/coinpulse");
    println!("  sends:     {prefix}/{machine_id}/gameover, …/ack, …/status");
    if let Ok(master) = settings.master_key() {
        let key = crate::domain::Keys::new(master).pulse_public_key_hex();
        println!("  pulse key: {key}");
        println!("             (the server's Ed25519 public key: verify each pulse's sig_ed25519 with it)");
    }
    println!();
    // The secret goes into a file, never onto a command line where `ps` would show it.
    println!("Try it (printf is a shell builtin, so the secret never appears in `ps`):");
    println!("  (umask 077; printf '%s' '{secret}' > {machine_id}.secret)");
    println!("  coinpulse cabinet-sim --machine-id {machine_id} --secret-file {machine_id}.secret");
}
