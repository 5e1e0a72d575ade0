//! The `plays` table: one row per game over a cabinet reported. Its dedupe key makes a
//! repeated game over (a QoS 1 redelivery, an HTTP retry) count once.

use serde::Serialize;

use super::{Store, StoreError, Tx};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Play {
    pub id: String,
    pub machine_id: String,
    pub ended_at: String,
    pub received_at: String,
    pub score: Option<i64>,
    pub play_seconds: Option<i64>,
    pub via: String,
}

#[derive(Debug, Clone)]
pub struct NewPlay<'a> {
    pub id: &'a str,
    pub machine_id: &'a str,
    pub dedupe_key: &'a str,
    pub ended_at: &'a str,
    pub received_at: &'a str,
    pub score: Option<i64>,
    pub play_seconds: Option<i64>,
    pub via: &'a str,
}

impl Store {
    pub async fn plays(
        &self,
        machine_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Play>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, machine_id, ended_at, received_at, score, play_seconds, via FROM plays \
             WHERE ($1 IS NULL OR machine_id = $1) ORDER BY received_at DESC, id DESC LIMIT $2",
        )
        .bind(machine_id)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Tx {
    /// False when the play was logged before (same dedupe key).
    pub async fn insert_play(&mut self, p: &NewPlay<'_>) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO plays (id, machine_id, dedupe_key, ended_at, received_at, score, play_seconds, via) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(p.id)
        .bind(p.machine_id)
        .bind(p.dedupe_key)
        .bind(p.ended_at)
        .bind(p.received_at)
        .bind(p.score)
        .bind(p.play_seconds)
        .bind(p.via)
        .execute(self.conn())
        .await?;
        Ok(r.rows_affected() == 1)
    }
}
