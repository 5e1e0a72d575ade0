//! The `cabinets` table.

use sqlx::{Any, Executor};

use super::sql::IntBool;
use super::{Store, StoreError, Tx};
use crate::domain::{now_db, Cabinet};

#[derive(sqlx::FromRow)]
struct CabinetRow {
    machine_id: String,
    name: String,
    game: String,
    location: String,
    price_minor: i64,
    currency: String,
    #[sqlx(try_from = "IntBool")]
    enabled: bool,
    #[sqlx(try_from = "IntBool")]
    online: bool,
    last_seen_at: Option<String>,
    #[sqlx(try_from = "IntBool")]
    acks_pulses: bool,
    #[sqlx(try_from = "IntBool")]
    always_available: bool,
    created_at: String,
    updated_at: String,
    secret_salt: String,
    secret_hash: String,
    archived_at: Option<String>,
}

impl From<CabinetRow> for Cabinet {
    fn from(r: CabinetRow) -> Self {
        Self {
            machine_id: r.machine_id,
            name: r.name,
            game: r.game,
            location: r.location,
            price_minor: r.price_minor,
            currency: r.currency,
            enabled: r.enabled,
            online: r.online,
            last_seen_at: r.last_seen_at,
            acks_pulses: r.acks_pulses,
            always_available: r.always_available,
            created_at: r.created_at,
            updated_at: r.updated_at,
            secret_salt: r.secret_salt,
            secret_hash: r.secret_hash,
            archived_at: r.archived_at,
        }
    }
}

const SELECT: &str = "SELECT machine_id, name, game, location, price_minor, currency, enabled, \
     online, last_seen_at, acks_pulses, always_available, created_at, updated_at, secret_salt, \
     secret_hash, archived_at FROM cabinets";

/// One cabinet, on the pool or inside a transaction.
async fn find<'e>(
    ex: impl Executor<'e, Database = Any>,
    machine_id: &str,
) -> Result<Option<Cabinet>, sqlx::Error> {
    let row: Option<CabinetRow> = sqlx::query_as(&format!("{SELECT} WHERE machine_id = $1"))
        .bind(machine_id)
        .fetch_optional(ex)
        .await?;
    Ok(row.map(Cabinet::from))
}

#[derive(Debug, Clone)]
pub struct NewCabinet {
    pub machine_id: String,
    pub name: String,
    pub game: String,
    pub location: String,
    pub price_minor: i64,
    pub currency: String,
    pub enabled: bool,
    pub secret_salt: String,
    pub secret_hash: String,
}

/// Fields an owner may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct CabinetPatch {
    pub name: Option<String>,
    pub game: Option<String>,
    pub location: Option<String>,
    pub price_minor: Option<i64>,
    pub currency: Option<String>,
    pub enabled: Option<bool>,
    pub always_available: Option<bool>,
}

impl Store {
    pub async fn insert_cabinet(&self, c: &NewCabinet) -> Result<Cabinet, StoreError> {
        let now = now_db();
        let result = sqlx::query(
            "INSERT INTO cabinets (machine_id, name, game, location, price_minor, currency, enabled, \
             secret_salt, secret_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(&c.machine_id)
        .bind(&c.name)
        .bind(&c.game)
        .bind(&c.location)
        .bind(c.price_minor)
        .bind(&c.currency)
        .bind(i64::from(c.enabled))
        .bind(&c.secret_salt)
        .bind(&c.secret_hash)
        .bind(&now)
        .execute(&self.pool)
        .await;
        match result.map_err(StoreError::from) {
            Err(e) if e.is_unique_violation() => Err(StoreError::Conflict(format!(
                "a cabinet with machine_id {:?} already exists",
                c.machine_id
            ))),
            Err(e) => Err(e),
            Ok(_) => Ok(self
                .cabinet(&c.machine_id)
                .await?
                .expect("cabinet just inserted")),
        }
    }

    pub async fn cabinet(&self, machine_id: &str) -> Result<Option<Cabinet>, StoreError> {
        Ok(find(&self.pool, machine_id).await?)
    }

    pub async fn cabinets(&self) -> Result<Vec<Cabinet>, StoreError> {
        let rows: Vec<CabinetRow> = sqlx::query_as(&format!("{SELECT} ORDER BY machine_id"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Cabinet::from).collect())
    }

    /// Cabinets whose last status message said `online` (on an external broker the
    /// server cannot see connections, only what cabinets announce).
    pub async fn count_online_cabinets(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM cabinets WHERE online = 1 AND enabled = 1 AND archived_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Applies `patch`; `None` when the cabinet does not exist.
    pub async fn update_cabinet(
        &self,
        machine_id: &str,
        patch: &CabinetPatch,
    ) -> Result<Option<Cabinet>, StoreError> {
        let result = sqlx::query(
            "UPDATE cabinets SET name = COALESCE($2, name), game = COALESCE($3, game), \
             location = COALESCE($4, location), price_minor = COALESCE($5, price_minor), \
             currency = COALESCE($6, currency), enabled = COALESCE($7, enabled), updated_at = $8, \
             always_available = COALESCE($9, always_available) WHERE machine_id = $1",
        )
        .bind(machine_id)
        .bind(patch.name.as_deref())
        .bind(patch.game.as_deref())
        .bind(patch.location.as_deref())
        .bind(patch.price_minor)
        .bind(patch.currency.as_deref())
        .bind(patch.enabled.map(i64::from))
        .bind(now_db())
        .bind(patch.always_available.map(i64::from))
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Ok(None);
        }
        self.cabinet(machine_id).await
    }

    /// Archives a cabinet: it stops taking payments and leaves the lists, its history stays.
    /// `archived` false brings it back (disabled, for the owner to check first).
    pub async fn set_cabinet_archived(
        &self,
        machine_id: &str,
        archived: bool,
    ) -> Result<bool, StoreError> {
        let now = now_db();
        let r = sqlx::query(
            "UPDATE cabinets SET archived_at = $2, enabled = 0, updated_at = $3 WHERE machine_id = $1",
        )
        .bind(machine_id)
        .bind(archived.then_some(now.as_str()))
        .bind(&now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Stores a new secret and, in the same transaction, replaces the payload of every
    /// pulse the cabinet has not acked with `resign(old payload)`, so pulses still in the
    /// outbox verify with the new secret. False when the cabinet does not exist.
    pub async fn set_cabinet_secret(
        &self,
        machine_id: &str,
        salt: &str,
        hash: &str,
        resign: impl Fn(&str) -> Option<String>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_transaction().await?;
        let result = sqlx::query(
            "UPDATE cabinets SET secret_salt = $2, secret_hash = $3, updated_at = $4 WHERE machine_id = $1",
        )
        .bind(machine_id)
        .bind(salt)
        .bind(hash)
        .bind(now_db())
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() != 1 {
            return Ok(false);
        }
        super::pulses::resign_unacked(&mut tx, machine_id, resign).await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl Tx {
    /// A cabinet, read once per transaction.
    pub async fn cabinet(&mut self, machine_id: &str) -> Result<Option<Cabinet>, StoreError> {
        if let Some(c) = self.cabinets.get(machine_id) {
            return Ok(c.clone());
        }
        let c = find(self.conn(), machine_id).await?;
        self.cabinets.insert(machine_id.to_owned(), c.clone());
        Ok(c)
    }

    /// Records a cabinet's `online`/`offline`. False when the cabinet does not exist.
    pub async fn set_cabinet_status(
        &mut self,
        machine_id: &str,
        online: bool,
        at: &str,
    ) -> Result<bool, StoreError> {
        // A cabinet that announces its status speaks coinpulse's protocol (seed cabinets
        // never do): it dedupes pulse ids, so unacked pulses may be sent to it again.
        let r = sqlx::query(
            "UPDATE cabinets SET online = $2, last_seen_at = $3, acks_pulses = 1 WHERE machine_id = $1",
        )
        .bind(machine_id)
        .bind(i64::from(online))
        .bind(at)
        .execute(self.conn())
        .await?;
        self.cabinets.remove(machine_id);
        Ok(r.rows_affected() == 1)
    }

    /// The cabinet acked a pulse: from now on it is known to speak the protocol.
    pub(super) async fn set_acks_pulses(&mut self, machine_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE cabinets SET acks_pulses = 1 WHERE machine_id = $1 AND acks_pulses = 0",
        )
        .bind(machine_id)
        .execute(self.conn())
        .await?;
        self.cabinets.remove(machine_id);
        Ok(())
    }
}
