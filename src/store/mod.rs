//! The only place with SQL. One API over SQLite and PostgreSQL (sqlx's `Any` driver,
//! runtime-checked queries with `$n` placeholders, which both backends accept).
//!
//! One file per table: each holds every query about its table, reads on [`Store`] (the
//! pool) and writes the single writer makes on [`Tx`] (its transaction).

mod bench_data;
mod bundles;
mod cabinets;
mod checkout_sessions;
mod dashboard;
mod events;
mod leases;
mod payments;
mod plays;
mod pulses;
mod rate_limits;
mod sql;
mod stripe_prices;
mod tx;
mod users;
mod wallets;

pub use cabinets::{CabinetPatch, NewCabinet};
pub use checkout_sessions::{Progress, StoredSession};
pub use dashboard::{
    Bucket, CabinetActivity, EventRow, Milestones, PaymentQuery, PlayRow, StatusView, Takings,
};
pub use events::NewEvent;
pub use leases::Lease;
pub use payments::{NewPayment, Payment, PaymentFilter, PaymentState};
pub use plays::{NewPlay, Play};
pub use pulses::{AckOutcome, NewPulse, OutboxPulse, Pulse};
pub use tx::Tx;

pub use users::{AuditEntry, Failures, NewAudit, User};
pub use wallets::{
    BalanceMismatch, LedgerRow, NewLedgerRow, Topup, Wallet, WalletActivity, WalletLink,
    WalletTotals,
};

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("could not flush the database to disk: {0}")]
    Sync(#[source] std::io::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// The single writer's connection. It commits without waiting for the disk (SQLite
    /// `synchronous = NORMAL`, PostgreSQL `synchronous_commit = off`: a commit survives a
    /// killed server at once) and the writer makes the batch durable with [`Store::sync`]
    /// before anyone hears "done", so a pulse can leave between the two (see `writer`).
    /// The pool itself on PostgreSQL.
    writer: AnyPool,
    /// For writes nothing is lost by forgetting (rate-limit counters): on SQLite one
    /// connection that commits without an fsync, so a player's tap does not wait on the
    /// disk for them. The pool itself on PostgreSQL.
    volatile: AnyPool,
    /// The SQLite write-ahead log that [`Store::sync`] fsyncs.
    wal: Option<std::sync::Arc<std::path::PathBuf>>,
    backend: Backend,
    /// This process among the replicas sharing the database: what its claims and leases
    /// are held as.
    replica: std::sync::Arc<str>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Store {
    /// Connects, applies pending migrations, and tunes SQLite for a durable single writer.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, None).await
    }

    /// As [`Store::connect`], holding at most `max_connections` open (None: the default).
    #[tracing::instrument(skip_all, fields(backend))]
    pub async fn connect_with(url: &str, max_connections: Option<u32>) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        tracing::Span::current().record("backend", tracing::field::debug(backend));
        let options = AnyConnectOptions::from_str(url)?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500));
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.unwrap_or(if backend == Backend::Sqlite {
                8
            } else {
                16
            }))
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| Box::pin(tune(conn, backend, "FULL")))
            .connect_with(options.clone())
            .await?;
        let wal = crate::config::sqlite_path(url).map(|db| {
            let mut wal = db.into_os_string();
            wal.push("-wal");
            std::sync::Arc::new(std::path::PathBuf::from(wal))
        });
        // One connection committing without an fsync (WAL, synchronous = NORMAL).
        let unsynced = || {
            AnyPoolOptions::new()
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(move |conn, _| Box::pin(tune(conn, backend, "NORMAL")))
                .connect_with(options.clone())
        };
        let (writer, volatile) = match (&wal, backend) {
            (Some(_), Backend::Sqlite) => (unsynced().await?, unsynced().await?),
            _ => (pool.clone(), pool.clone()),
        };
        let store = Self {
            pool,
            writer,
            volatile,
            wal: wal.filter(|_| backend == Backend::Sqlite),
            backend,
            replica: replica_name().into(),
        };
        store.migrate().await?;
        if backend == Backend::Sqlite {
            owner_only(url);
        }
        Ok(store)
    }
}

/// A name for a process that is not a server (the tools): unique to it.
fn replica_name() -> String {
    let random = &uuid::Uuid::new_v4().simple().to_string()[..8];
    format!("{}/tool-{}-{random}", host_name(), std::process::id())
}

pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Per-connection settings. On SQLite: WAL lets readers run beside the writer;
/// `synchronous` is FULL (every commit fsync'd) except on the writer's own connection,
/// which fsyncs through [`Store::sync`].
async fn tune(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    synchronous: &str,
) -> Result<(), sqlx::Error> {
    if backend == Backend::Sqlite {
        conn.execute("PRAGMA journal_mode = WAL").await?;
        conn.execute(format!("PRAGMA synchronous = {synchronous}").as_str())
            .await?;
        conn.execute("PRAGMA busy_timeout = 10000").await?;
        conn.execute("PRAGMA foreign_keys = ON").await?;
    }
    Ok(())
}

/// The database holds password hashes and payers' emails: readable by its owner only, like
/// the key file beside it.
fn owner_only(url: &str) {
    use std::os::unix::fs::PermissionsExt;
    let Some(db) = crate::config::sqlite_path(url) else {
        return;
    };
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.clone().into_os_string();
        path.push(suffix);
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = ?path, error = %e, "could not make the database owner-only");
            }
        }
    }
}

/// How the database's schema compares with this binary's migrations.
#[derive(Debug, Default)]
pub struct MigrationReport {
    /// Migrations this binary would apply: "0006 wallet limits".
    pub pending: Vec<String>,
    /// Applied migrations whose file changed since (or that this binary does not know:
    /// a database written by a newer coinpulse).
    pub conflicts: Vec<String>,
}

impl Store {
    /// Compares the database's applied migrations with this binary's, changing nothing.
    pub async fn check_migrations(url: &str) -> Result<MigrationReport, StoreError> {
        sqlx::any::install_default_drivers();
        let migrator = if url.starts_with("postgres") {
            sqlx::migrate!("migrations/postgres")
        } else {
            sqlx::migrate!("migrations/sqlite")
        };
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect_with(AnyConnectOptions::from_str(url)?)
            .await?;
        // No table yet means nothing applied; any other failure (not a database, no right
        // to read it) is an error, never "everything pending".
        let has_table: i64 = sqlx::query_scalar(if url.starts_with("postgres") {
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()"
        } else {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        })
        .fetch_one(&pool)
        .await?;
        let applied: Vec<(i64, Vec<u8>)> = if has_table > 0 {
            sqlx::query_as(
                "SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version",
            )
            .fetch_all(&pool)
            .await?
        } else {
            Vec::new()
        };
        pool.close().await;
        let name = |m: &sqlx::migrate::Migration| format!("{:04} {}", m.version, m.description);
        let mut report = MigrationReport::default();
        for m in migrator.iter() {
            match applied.iter().find(|(v, _)| *v == m.version) {
                None => report.pending.push(name(m)),
                Some((_, sum)) if sum.as_slice() != &*m.checksum => report
                    .conflicts
                    .push(format!("{} changed since it was applied", name(m))),
                Some(_) => {}
            }
        }
        for (v, _) in &applied {
            if !migrator.iter().any(|m| m.version == *v) {
                report.conflicts.push(format!(
                    "{v:04} is applied but unknown to this coinpulse (a newer one wrote this database)"
                ));
            }
        }
        Ok(report)
    }

    /// A consistent copy of the whole SQLite database at `path` (`VACUUM INTO`: one read
    /// transaction, so it holds exactly what was committed when it began) while the server
    /// keeps running.
    pub async fn backup_into(&self, path: &std::path::Path) -> Result<(), StoreError> {
        if self.backend != Backend::Sqlite {
            return Err(StoreError::Unsupported(
                "backup copies SQLite databases; for PostgreSQL use pg_dump",
            ));
        }
        sqlx::query("VACUUM INTO $1")
            .bind(path.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a unit of work: the single writer's transaction (see [`Tx`]). Its commit
    /// survives a killed server at once, but is on disk only after [`Store::sync`].
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let txn = match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut txn = self.writer.begin().await?;
                sqlx::query("SET LOCAL synchronous_commit = off")
                    .execute(&mut *txn)
                    .await?;
                txn
            }
        };
        Ok(Tx::new(txn, self.replica.clone()))
    }

    /// This process's name among replicas.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Names this process among the replicas sharing the database, stable across its
    /// restarts (so a restarted server picks up its own claims at once): `slot` is what
    /// sets it apart from the other replicas, its MQTT client id.
    pub fn as_replica(mut self, slot: &str) -> Self {
        self.replica = format!("{}/{slot}", host_name()).into();
        self
    }

    /// Makes every commit so far durable. SQLite: fsyncs the write-ahead log (what
    /// `synchronous = FULL` would have done at the commit). PostgreSQL: commits a
    /// transaction that waits for its WAL flush, which covers every earlier commit.
    pub async fn sync(&self) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            let mut txn = self.writer.begin().await?;
            sqlx::query("SELECT txid_current()")
                .execute(&mut *txn)
                .await?;
            txn.commit().await?;
            return Ok(());
        }
        let Some(wal) = self.wal.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || match std::fs::File::open(wal.as_path()) {
            Ok(file) => file.sync_data(),
            // No log: the last connection closed and checkpointed it (and fsync'd that).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| StoreError::Sync(std::io::Error::other(e)))?
        .map_err(StoreError::Sync)
    }

    /// A transaction that will write. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a deferred one that read first would fail with SQLITE_BUSY, without
    /// waiting, if another connection wrote in between; this way it waits its turn.
    pub(crate) async fn write_transaction(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.volatile.close().await;
        self.pool.close().await;
    }
}
