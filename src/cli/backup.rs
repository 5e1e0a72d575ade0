//! `coinpulse backup`, `restore` and `migrate`: the database as a deploy pipeline and an
//! owner with a USB stick see it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::config::{key_file_path, sqlite_path, DatabaseSettings};
use crate::store::Store;

const DB_FILE: &str = "coinpulse.db";
const KEY_FILE: &str = "coinpulse.secret";

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Directory to write the copy into (created if missing); it must not hold a backup yet.
    /// It gets coinpulse.db and, when the server uses one, the key file coinpulse.secret.
    path: PathBuf,
    #[command(flatten)]
    settings: DatabaseSettings,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A directory written by `coinpulse backup`.
    path: PathBuf,
    /// Replace an existing database (stop the server first).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    settings: DatabaseSettings,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Only report: exit 0 when the database is up to date, 1 when migrations are pending,
    /// 2 when an applied one differs from this coinpulse's, 3 when the database cannot be
    /// read, a missing SQLite file included (never changes anything).
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    settings: DatabaseSettings,
}

/// A consistent copy of the running server's SQLite database and its key file.
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let settings = args.settings.existing()?;
    let url = &settings.database_url;
    if sqlite_path(url).is_none() {
        anyhow::bail!(
            "backup copies SQLite databases; for PostgreSQL run:\n  pg_dump --format=custom \
             --file coinpulse.dump \"$DATABASE_URL\"\n(and keep SECRET_KEY with it)"
        );
    }
    std::fs::create_dir_all(&args.path)
        .with_context(|| format!("cannot create {}", args.path.display()))?;
    let db_copy = args.path.join(DB_FILE);
    if db_copy.exists() {
        anyhow::bail!("{} already holds a backup", args.path.display());
    }
    let store = Store::connect(url).await?;
    store
        .backup_into(&db_copy)
        .await
        .with_context(|| format!("cannot write {}", db_copy.display()))?;
    store.close().await;
    owner_only(&db_copy)?;
    let key = key_file_path(url);
    let key_note = if settings.secret_key.is_some() {
        " (the master key is SECRET_KEY: keep it with the backup, it is not in it)".into()
    } else if key.exists() {
        let key_copy = args.path.join(KEY_FILE);
        std::fs::copy(&key, &key_copy)
            .with_context(|| format!("cannot copy the key file {}", key.display()))?;
        owner_only(&key_copy)?;
        format!(" and the key file {KEY_FILE}")
    } else {
        format!(
            " (no key file at {}: if the server uses SECRET_KEY, keep it with the backup)",
            key.display()
        )
    };
    println!("backed up the database to {}{key_note}", db_copy.display());
    Ok(())
}

/// Puts a backup back where the server looks for its database and key file.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let settings = args.settings.finish();
    let Some(db) = sqlite_path(&settings.database_url) else {
        anyhow::bail!("restore writes SQLite databases; for PostgreSQL use pg_restore");
    };
    let from = args.path.join(DB_FILE);
    if !from.exists() {
        anyhow::bail!("{} holds no {DB_FILE}", args.path.display());
    }
    if db.exists() && !args.force {
        anyhow::bail!(
            "{} exists: stop the server and pass --force to replace it",
            db.display()
        );
    }
    if server_running(&settings) {
        anyhow::bail!("a coinpulse server is running on this database: stop it first");
    }
    // The copy must open and hold a coinpulse schema before anything is replaced.
    let probe = Store::check_migrations(&format!("sqlite://{}?mode=ro", from.display()))
        .await
        .with_context(|| format!("{} is not a readable database", from.display()))?;
    if !probe.conflicts.is_empty() {
        anyhow::bail!(
            "the backup does not fit this coinpulse: {}",
            probe.conflicts.join("; ")
        );
    }
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    for suffix in ["-wal", "-shm"] {
        let mut side = db.clone().into_os_string();
        side.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(side));
    }
    std::fs::copy(&from, &db).with_context(|| format!("cannot write {}", db.display()))?;
    owner_only(&db)?;
    let key_from = args.path.join(KEY_FILE);
    if key_from.exists() {
        let key = key_file_path(&settings.database_url);
        std::fs::copy(&key_from, &key)?;
        owner_only(&key)?;
    }
    println!("restored {} from {}", db.display(), args.path.display());
    Ok(())
}

/// Applies pending migrations, or with --check only reports them.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    if args.check {
        // A pipeline must tell "pending" from "could not look".
        let code = check_migrations(args.settings).await.unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            3
        });
        if code != 0 {
            std::process::exit(code);
        }
        return Ok(());
    }
    // Applying may create the database (a deploy step before the first start).
    let settings = args.settings.finish();
    let url = &settings.database_url;
    let report = Store::check_migrations(url).await?;
    if print_conflicts(&report) {
        std::process::exit(2);
    }
    // Connecting migrates, under the database's migration lock on PostgreSQL.
    Store::connect(url).await?.close().await;
    if report.pending.is_empty() {
        println!("the database is up to date");
    } else {
        println!("applied {}", report.pending.join(", "));
    }
    Ok(())
}

/// --check's exit code: 0 up to date, 1 pending, 2 an applied migration differs.
async fn check_migrations(settings: DatabaseSettings) -> anyhow::Result<i32> {
    let settings = settings.existing()?;
    let report = Store::check_migrations(&settings.database_url).await?;
    if print_conflicts(&report) {
        return Ok(2);
    }
    if report.pending.is_empty() {
        println!("the database is up to date");
        return Ok(0);
    }
    for p in &report.pending {
        println!("pending: {p}");
    }
    Ok(1)
}

/// True when an applied migration differs from this coinpulse's.
fn print_conflicts(report: &crate::store::MigrationReport) -> bool {
    for c in &report.conflicts {
        println!("conflict: {c}");
    }
    !report.conflicts.is_empty()
}

fn owner_only(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} owner-only", path.display()))
}

/// Whether a server answers on the BIND this machine's server uses.
fn server_running(settings: &DatabaseSettings) -> bool {
    std::net::TcpStream::connect_timeout(
        &settings.server.bind,
        std::time::Duration::from_millis(300),
    )
    .is_ok()
}
