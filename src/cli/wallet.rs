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
}

pub async fn run(args: WalletArgs) -> anyhow::Result<()> {
    let settings = args.settings.finish();
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
    }
}
