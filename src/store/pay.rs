//! Bundles, checkout sessions created by coinpulse, and cached Stripe prices.

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError};
use crate::domain::{now_db, Bundle};

#[derive(Debug, Clone, Serialize)]
pub struct StoredSession {
    pub id: String,
    pub machine_id: String,
    pub credits: i64,
    pub amount_minor: i64,
    pub currency: String,
    pub bundle_label: String,
    pub url: String,
    pub status: String,
    pub created_at: String,
    /// Keyed hash of the pay page cookie that opened it.
    #[serde(skip)]
    pub buyer: Option<String>,
}

/// Where a checkout stands, for the player's thanks page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub payment_status: Option<String>,
    pub published: bool,
    pub acked: bool,
}

impl Store {
    pub async fn bundles(&self, machine_id: &str) -> Result<Vec<Bundle>, StoreError> {
        let rows = sqlx::query(
            "SELECT credits, price_minor, label FROM bundles WHERE machine_id = $1 ORDER BY position",
        )
        .bind(machine_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Bundle {
                    credits: r.try_get("credits")?,
                    price_minor: r.try_get("price_minor")?,
                    label: r.try_get("label")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Replaces a cabinet's bundles (already validated) in one transaction.
    pub async fn set_bundles(
        &self,
        machine_id: &str,
        bundles: &[Bundle],
    ) -> Result<(), StoreError> {
        let mut txn = self.pool().begin().await?;
        sqlx::query("DELETE FROM bundles WHERE machine_id = $1")
            .bind(machine_id)
            .execute(&mut *txn)
            .await?;
        for (i, b) in bundles.iter().enumerate() {
            sqlx::query(
                "INSERT INTO bundles (machine_id, position, credits, price_minor, label) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(machine_id)
            .bind(i as i64)
            .bind(b.credits)
            .bind(b.price_minor)
            .bind(&b.label)
            .execute(&mut *txn)
            .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Stores a new session; a replay of the same session (a double-tapped Pay button that
    /// Stripe answered from its idempotency cache) is already stored and left as it is.
    pub async fn insert_checkout_session(&self, s: &StoredSession) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO checkout_sessions (id, machine_id, credits, amount_minor, currency, bundle_label, url, status, created_at, buyer) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&s.id)
        .bind(&s.machine_id)
        .bind(s.credits)
        .bind(s.amount_minor)
        .bind(&s.currency)
        .bind(&s.bundle_label)
        .bind(&s.url)
        .bind(&s.status)
        .bind(&s.created_at)
        .bind(s.buyer.as_deref())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A session this buyer opened for the same cabinet and bundle after `since` and has
    /// not finished: coming back to the pay page leads there instead of to a new session.
    pub async fn open_checkout_session(
        &self,
        buyer: &str,
        machine_id: &str,
        credits: i64,
        amount_minor: i64,
        since: &str,
    ) -> Result<Option<StoredSession>, StoreError> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM checkout_sessions WHERE buyer = $1 AND machine_id = $2 AND credits = $3 \
             AND amount_minor = $4 AND status = 'open' AND created_at > $5 \
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(buyer)
        .bind(machine_id)
        .bind(credits)
        .bind(amount_minor)
        .bind(since)
        .fetch_optional(self.pool())
        .await?;
        match id {
            Some(id) => self.checkout_session(&id).await,
            None => Ok(None),
        }
    }

    pub async fn checkout_session(&self, id: &str) -> Result<Option<StoredSession>, StoreError> {
        let row = sqlx::query(
            "SELECT id, machine_id, credits, amount_minor, currency, bundle_label, url, status, created_at, buyer \
             FROM checkout_sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(StoredSession {
                id: r.try_get("id")?,
                machine_id: r.try_get("machine_id")?,
                credits: r.try_get("credits")?,
                amount_minor: r.try_get("amount_minor")?,
                currency: r.try_get("currency")?,
                bundle_label: r.try_get("bundle_label")?,
                url: r.try_get("url")?,
                status: r.try_get("status")?,
                created_at: r.try_get("created_at")?,
                buyer: r.try_get("buyer")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }

    /// The payment and pulse state behind a checkout session.
    pub async fn checkout_progress(&self, session_id: &str) -> Result<Progress, StoreError> {
        let row = sqlx::query(
            "SELECT p.status, u.published_at, u.acked_at FROM payments p \
             LEFT JOIN pulses u ON u.payment_id = p.id WHERE p.checkout_session_id = $1",
        )
        .bind(session_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            None => Progress {
                payment_status: None,
                published: false,
                acked: false,
            },
            Some(r) => Progress {
                payment_status: Some(r.try_get("status")?),
                published: r.try_get::<Option<String>, _>("published_at")?.is_some(),
                acked: r.try_get::<Option<String>, _>("acked_at")?.is_some(),
            },
        })
    }

    /// The Stripe (product, price) made earlier for this cabinet at this price, if any.
    pub async fn stripe_price(
        &self,
        machine_id: &str,
        price_minor: i64,
        currency: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT product_id, price_id FROM stripe_prices WHERE machine_id = $1 AND price_minor = $2 AND currency = $3",
        )
        .bind(machine_id)
        .bind(price_minor)
        .bind(currency)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| (r.get("product_id"), r.get("price_id"))))
    }

    pub async fn save_stripe_price(
        &self,
        machine_id: &str,
        price_minor: i64,
        currency: &str,
        product_id: &str,
        price_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stripe_prices (machine_id, price_minor, currency, product_id, price_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(machine_id)
        .bind(price_minor)
        .bind(currency)
        .bind(product_id)
        .bind(price_id)
        .bind(now_db())
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
