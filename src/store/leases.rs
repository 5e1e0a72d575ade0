//! Leases: one holder at a time for work that must not run twice at once when several
//! replicas share the database (the wallet expiry pass, the embedded broker).

use super::{Store, StoreError};
use crate::domain::db_time;

/// Who holds a lease, until when, and where it can be probed for life (host:port).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Lease {
    pub holder: String,
    pub until: String,
    pub probe: Option<String>,
}

impl Store {
    /// Takes lease `name` for this replica for `ttl`, or renews it; false while another
    /// replica holds it.
    pub async fn lease(
        &self,
        name: &str,
        ttl: chrono::Duration,
        probe: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = chrono::Utc::now();
        let taken = sqlx::query(
            "INSERT INTO leases (name, holder, until, probe) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until, \
             probe = excluded.probe WHERE leases.holder = excluded.holder OR leases.until < $5",
        )
        .bind(name)
        .bind(&*self.replica)
        .bind(db_time(now + ttl))
        .bind(probe)
        .bind(db_time(now))
        .execute(&self.pool)
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    pub async fn lease_holder(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        Ok(
            sqlx::query_as("SELECT holder, until, probe FROM leases WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Ends `holder`'s lease at once (it is known to be dead); false when someone else
    /// holds it by now.
    pub async fn break_lease(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        let broken = sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(broken.rows_affected() == 1)
    }

    /// Gives up this replica's lease `name`, if it holds it.
    pub async fn release_lease(&self, name: &str) -> Result<(), StoreError> {
        let me = self.replica.clone();
        self.break_lease(name, &me).await.map(|_| ())
    }
}
