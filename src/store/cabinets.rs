//! Cabinet rows.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Store, StoreError};
use crate::domain::now_db;

#[derive(Debug, Clone, Serialize)]
pub struct Cabinet {
    pub machine_id: String,
    pub name: String,
    pub game: String,
    pub location: String,
    pub price_minor: i64,
    pub currency: String,
    pub enabled: bool,
    pub online: bool,
    pub last_seen_at: Option<String>,
    pub acks_pulses: bool,
    /// Take payments even when the broker cannot say whether the cabinet is connected.
    pub always_available: bool,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip)]
    pub secret_salt: String,
    #[serde(skip)]
    pub secret_hash: String,
}

impl Cabinet {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            machine_id: row.try_get("machine_id")?,
            name: row.try_get("name")?,
            game: row.try_get("game")?,
            location: row.try_get("location")?,
            price_minor: row.try_get("price_minor")?,
            currency: row.try_get("currency")?,
            enabled: row.try_get::<i64, _>("enabled")? != 0,
            online: row.try_get::<i64, _>("online")? != 0,
            last_seen_at: row.try_get("last_seen_at")?,
            acks_pulses: row.try_get::<i64, _>("acks_pulses")? != 0,
            always_available: row.try_get::<i64, _>("always_available")? != 0,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            secret_salt: row.try_get("secret_salt")?,
            secret_hash: row.try_get("secret_hash")?,
        })
    }
}

pub(super) const CABINET_COLUMNS: &str =
    "machine_id, name, game, location, price_minor, currency, \
     enabled, online, last_seen_at, acks_pulses, always_available, created_at, updated_at, secret_salt, secret_hash";

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
        let row = sqlx::query(&format!(
            "SELECT {CABINET_COLUMNS} FROM cabinets WHERE machine_id = $1"
        ))
        .bind(machine_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(Cabinet::from_row).transpose()?)
    }

    pub async fn cabinets(&self) -> Result<Vec<Cabinet>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CABINET_COLUMNS} FROM cabinets ORDER BY machine_id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(Cabinet::from_row)
            .collect::<Result<_, _>>()?)
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
        let mut tx = self.pool.begin().await?;
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
        let pending: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, payload FROM pulses WHERE machine_id = $1 AND acked_at IS NULL",
        )
        .bind(machine_id)
        .fetch_all(&mut *tx)
        .await?;
        for (id, payload) in pending {
            if let Some(new) = resign(&payload) {
                sqlx::query("UPDATE pulses SET payload = $2 WHERE id = $1")
                    .bind(&id)
                    .bind(&new)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }
}
