//! `coinpulse wallet …`: player wallets on the configured database.

use clap::{Args, Subcommand};

use crate::config::DatabaseSettings;
use crate::store::Store;

#[derive(Debug, Args)]
pub struct WalletArgs {
    #[command(flatten)]
    settings: DatabaseSettings,
    #[command(subcommand)]
    command: WalletCommand,
}

#[derive(Debug, Subcommand)]
enum WalletCommand {
    /// Check every wallet's balance against the sum of its ledger; exits 1 on a mismatch.
    Check,
    /// Expire balances unused for the configured number of months (the server does this
    /// every hour by itself) and email the reminders that are due.
    Expire(ExpireArgs),
}

#[derive(Debug, Args)]
struct ExpireArgs {
    /// Only list what would expire and who would be reminded; change nothing.
    #[arg(long)]
    dry_run: bool,

    /// Months of no use after which a balance expires. Default: the dashboard's setting
    /// (Wallets → Top-up packages); the command refuses to run while expiry is off.
    #[arg(long)]
    months: Option<u32>,

    /// Judge as of this date (YYYY-MM-DD, UTC midnight) instead of now: what a later run
    /// would expire. Default: now.
    #[arg(long, value_parser = parse_date)]
    as_of: Option<chrono::DateTime<chrono::Utc>>,

    /// Mail server for reminders, as the server's SMTP_URL. Unset: no reminders.
    #[arg(long, env = "SMTP_URL", value_parser = crate::config::parse_secret, hide_env_values = true)]
    smtp_url: Option<crate::config::Secret>,

    /// Sender address of reminders, as the server's SMTP_FROM.
    #[arg(
        long,
        env = "SMTP_FROM",
        default_value = "coinpulse <coinpulse@localhost>"
    )]
    smtp_from: String,
}

fn parse_date(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        .map_err(|_| format!("{s:?} is not a date like 2027-06-30"))
}

pub async fn run(args: WalletArgs) -> anyhow::Result<()> {
    let settings = args.settings.existing()?;
    let store = Store::connect(&settings.database_url).await?;
    match args.command {
        WalletCommand::Check => {
            let bad = store.balance_mismatches().await?;
            if bad.is_empty() {
                println!("every wallet's balance equals the sum of its ledger");
                return Ok(());
            }
            for m in &bad {
                println!(
                    "wallet {}: balance {} but ledger sums to {}",
                    m.id, m.balance_minor, m.ledger_minor
                );
            }
            anyhow::bail!("{} wallet(s) disagree with their ledger", bad.len())
        }
        WalletCommand::Expire(e) => expire(&store, &settings.public_url, e).await,
    }
}

async fn expire(store: &Store, public_url: &str, args: ExpireArgs) -> anyhow::Result<()> {
    use crate::wallets::{expiry_months, run_expiry, ExpiryMode};
    let Some(months) = args.months.or(expiry_months(store).await?) else {
        anyhow::bail!(
            "balances never expire here: turn expiry on in the dashboard (Wallets → Top-up \
             packages) or pass --months N"
        );
    };
    let mailer =
        crate::mail::Mailer::new(args.smtp_url.as_ref().map(|u| u.expose()), &args.smtp_from)?;
    let mode = if args.dry_run {
        ExpiryMode::DryRun
    } else {
        ExpiryMode::Direct(store)
    };
    let now = args.as_of.unwrap_or_else(chrono::Utc::now);
    let report = run_expiry(store, mode, &mailer, public_url, months, now).await?;
    let verb = if args.dry_run {
        "would expire"
    } else {
        "expired"
    };
    for (wallet, currency, amount) in &report.expired {
        println!(
            "{verb} {} on wallet {wallet}",
            crate::domain::Money::format(*amount, currency)
        );
    }
    let verb = if args.dry_run {
        "would remind"
    } else {
        "reminded"
    };
    for wallet in &report.reminded {
        println!("{verb} wallet {wallet} by email");
    }
    println!(
        "{} balance(s) {}, {} reminder(s) (unused for {months} months as of {})",
        report.expired.len(),
        if args.dry_run { "due" } else { "expired" },
        report.reminded.len(),
        now.format("%Y-%m-%d")
    );
    Ok(())
}
