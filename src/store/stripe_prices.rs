//! The `stripe_prices` table: the Stripe product and price made once per cabinet and
//! price, reused by every Payment Link for it.

use super::{Store, StoreError};
use crate::domain::now_db;

impl Store {
    /// The Stripe (product, price) made earlier for this cabinet at this price, if any.
    pub async fn stripe_price(
        &self,
        machine_id: &str,
        price_minor: i64,
        currency: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT product_id, price_id FROM stripe_prices WHERE machine_id = $1 AND price_minor = $2 AND currency = $3",
        )
        .bind(machine_id)
        .bind(price_minor)
        .bind(currency)
        .fetch_optional(&self.pool)
        .await?)
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
