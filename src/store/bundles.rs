//! The `bundles` table: a cabinet's offers ("3 plays $2.50"), in the owner's order.

use super::{Store, StoreError};
use crate::domain::Bundle;

#[derive(sqlx::FromRow)]
struct BundleRow {
    credits: i64,
    price_minor: i64,
    label: String,
}

impl Store {
    pub async fn bundles(&self, machine_id: &str) -> Result<Vec<Bundle>, StoreError> {
        let rows: Vec<BundleRow> = sqlx::query_as(
            "SELECT credits, price_minor, label FROM bundles WHERE machine_id = $1 ORDER BY position",
        )
        .bind(machine_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Bundle {
                credits: r.credits,
                price_minor: r.price_minor,
                label: r.label,
            })
            .collect())
    }

    /// Replaces a cabinet's bundles (already validated) in one transaction.
    pub async fn set_bundles(
        &self,
        machine_id: &str,
        bundles: &[Bundle],
    ) -> Result<(), StoreError> {
        let mut txn = self.write_transaction().await?;
        sqlx::query("DELETE FROM bundles WHERE machine_id = $1")
            .bind(machine_id)
            .execute(&mut *txn)
            .await?;
        let rows: Vec<(i64, Bundle)> = (0..).zip(bundles.iter().cloned()).collect();
        super::sql::insert_many(
            &mut txn,
            "INSERT INTO bundles (machine_id, position, credits, price_minor, label)",
            "",
            5,
            &rows,
            |q, (position, b)| {
                q.bind(machine_id.to_owned())
                    .bind(*position)
                    .bind(b.credits)
                    .bind(b.price_minor)
                    .bind(b.label.as_str())
            },
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }
}
