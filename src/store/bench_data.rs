//! Synthetic history for `coinpulse bench`: cabinets and a long tail of payments, plays and
//! pulses, written straight into a fresh database so the dashboard can be measured at a
//! realistic size without replaying a year of webhooks.

use super::{Store, StoreError};
use crate::domain::db_time;

impl Store {
    /// `cabinets` cabinets and `payments` credited payments (each with its acked pulse and
    /// a play) spread over the last 365 days; returns the cabinet ids.
    pub async fn seed_history(
        &self,
        cabinets: usize,
        payments: usize,
        mut progress: impl FnMut(u64),
    ) -> Result<Vec<String>, StoreError> {
        let now = chrono::Utc::now();
        let ids: Vec<String> = (0..cabinets)
            .map(|i| format!("bench-dash-{i:03}"))
            .collect();
        let mut tx = self.write_transaction().await?;
        for id in &ids {
            sqlx::query(
                "INSERT INTO cabinets (machine_id, name, game, location, price_minor, currency, \
                 enabled, secret_salt, secret_hash, online, acks_pulses, created_at, updated_at) \
                 VALUES ($1, $2, 'Street Fighter II', 'Floor', 100, 'usd', 1, 'salt', 'x', 0, 1, $3, $3)",
            )
            .bind(id)
            .bind(format!("Cabinet {id}"))
            .bind(db_time(now))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        const CHUNK: usize = 2_000;
        let span = 365 * 24 * 3600;
        for start in (0..payments).step_by(CHUNK) {
            let mut tx = self.write_transaction().await?;
            for i in start..(start + CHUNK).min(payments) {
                let at = db_time(now - chrono::Duration::seconds((i as i64 * 7919) % span));
                let machine = &ids[i % ids.len()];
                let pid = uuid::Uuid::now_v7().to_string();
                sqlx::query(
                    "INSERT INTO payments (id, checkout_session_id, payment_intent_id, machine_id, \
                     amount_minor, discount_minor, currency, credits, status, livemode, created_at, \
                     updated_at, email) VALUES ($1, $2, $3, $4, 300, 0, 'usd', 3, 'credited', 0, $5, $5, $6)",
                )
                .bind(&pid)
                .bind(format!("cs_bench_{i}"))
                .bind(format!("pi_bench_{i}"))
                .bind(machine)
                .bind(&at)
                .bind(format!("player{}@example.com", i % 5000))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO pulses (id, machine_id, credits, source, payment_id, payload, \
                     created_at, published_at, acked_at) VALUES ($1, $2, 3, 'stripe', $3, '{}', $4, $4, $4)",
                )
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(machine)
                .bind(&pid)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO plays (id, machine_id, dedupe_key, ended_at, received_at, score, \
                     play_seconds, via) VALUES ($1, $2, $3, $4, $4, NULL, 180, 'mqtt')",
                )
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(machine)
                .bind(format!("bench:{i}"))
                .bind(&at)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            progress(((start + CHUNK).min(payments) - start) as u64);
        }
        Ok(ids)
    }
}
