//! Shared rate-limit state (`rate_limits`): one atomic statement per request, so replicas
//! on one database hold each key to one allowance.

use super::{Store, StoreError};

impl Store {
    /// Takes one request from `key`'s allowance by the generic cell rate algorithm: one
    /// request per `every_ms`, with bursts while the key is at most `tolerance_ms` ahead of
    /// time. None when allowed; else how many milliseconds until it would be. A refused
    /// request writes nothing, so a flood of them costs reads, not commits.
    pub async fn take_rate_token(
        &self,
        key: &str,
        now_ms: i64,
        every_ms: i64,
        tolerance_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        // In an upsert's SET and WHERE, `rate_limits.tat` is the row's old value.
        let taken: Option<i64> = sqlx::query_scalar(
            "INSERT INTO rate_limits (key, tat) VALUES ($1, $2 + $3) \
             ON CONFLICT (key) DO UPDATE SET \
               tat = CASE WHEN rate_limits.tat > $2 THEN rate_limits.tat + $3 ELSE $2 + $3 END \
             WHERE rate_limits.tat - $2 <= $4 \
             RETURNING tat",
        )
        .bind(key)
        .bind(now_ms)
        .bind(every_ms)
        .bind(tolerance_ms)
        .fetch_optional(&self.volatile)
        .await?;
        if taken.is_some() {
            return Ok(None);
        }
        let tat: i64 = sqlx::query_scalar("SELECT tat FROM rate_limits WHERE key = $1")
            .bind(key)
            .fetch_one(&self.volatile)
            .await?;
        Ok(Some((tat - now_ms - tolerance_ms).max(1)))
    }

    /// Forgets keys whose allowance is whole again (they would start afresh anyway).
    pub async fn prune_rate_limits(&self, now_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM rate_limits WHERE tat < $1")
            .bind(now_ms)
            .execute(&self.volatile)
            .await?
            .rows_affected())
    }
}
