//! The `pulses` table: the outbox. A pulse is queued in the same transaction as the
//! payment that bought it, marked when handed to the broker, and marked again when the
//! cabinet acks it.

use serde::Serialize;

use super::{Store, StoreError, Tx};
use crate::domain::{PulseSource, PulseState};

/// A pulse as the owner's lists show it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Pulse {
    pub id: String,
    pub machine_id: String,
    pub credits: i64,
    #[sqlx(try_from = "String")]
    pub source: PulseSource,
    pub payment_id: Option<String>,
    pub reason: Option<String>,
    pub created_at: String,
    pub published_at: Option<String>,
    pub acked_at: Option<String>,
}

impl Pulse {
    pub fn state(&self) -> PulseState {
        PulseState::of(self.published_at.is_some(), self.acked_at.is_some())
    }
}

/// A pulse as the outbox dispatcher needs it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxPulse {
    pub id: String,
    pub machine_id: String,
    pub payload: String,
    pub created_at: String,
    /// When it was handed to the broker, if it was.
    pub published_at: Option<String>,
    /// The cabinet speaks coinpulse's protocol (acks, dedupes): a repeat is harmless to it.
    #[sqlx(rename = "acks_pulses", try_from = "super::sql::IntBool")]
    pub acks: bool,
    /// Already handed to the embedded broker by the writer, right after its commit.
    #[sqlx(skip)]
    pub routed: bool,
}

/// A new pulse, written at the end of the batch (after its payment row).
#[derive(Debug, Clone)]
pub struct NewPulse {
    pub id: String,
    pub machine_id: String,
    pub credits: i64,
    pub source: PulseSource,
    pub payment_id: Option<String>,
    pub reason: Option<String>,
    pub payload: String,
    pub created_at: String,
    /// Set when the pulse is handed to the broker in the same breath as its commit.
    pub published_at: Option<String>,
}

/// What became of a cabinet's ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// The first ack of one of this cabinet's pulses.
    Recorded,
    /// This cabinet's pulse, acked before (a redelivery acked again).
    Repeated,
    /// No pulse of this cabinet has that id.
    Unknown,
}

/// An outbox pulse with whether its cabinet acks; the outbox queries add their WHERE.
const OUTBOX_SELECT: &str = "SELECT p.id, p.machine_id, p.payload, p.created_at, \
     p.published_at, c.acks_pulses \
     FROM pulses p JOIN cabinets c ON c.machine_id = p.machine_id";

impl Store {
    pub async fn pulses(
        &self,
        machine_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Pulse>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, machine_id, credits, source, payment_id, reason, created_at, published_at, \
             acked_at FROM pulses WHERE ($1 IS NULL OR machine_id = $1) \
             ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(machine_id)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn pulse(&self, id: &str) -> Result<Option<Pulse>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, machine_id, credits, source, payment_id, reason, created_at, published_at, \
             acked_at FROM pulses WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Oldest unpublished pulses after `after` (created_at, id: a paging cursor).
    pub async fn unpublished_pulses(
        &self,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<OutboxPulse>, StoreError> {
        let (after_created, after_id) = after.unwrap_or(("", ""));
        Ok(sqlx::query_as(&format!(
            "{OUTBOX_SELECT} WHERE p.published_at IS NULL \
             AND (p.created_at > $1 OR (p.created_at = $1 AND p.id > $2)) \
             ORDER BY p.created_at, p.id LIMIT $3"
        ))
        .bind(after_created)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Claims for this replica up to `limit` pulses not yet handed to the broker, created
    /// before `before` and after the `after` cursor, that no other replica holds (its claim
    /// lapsed, or it never had one); this replica's own claims are renewed. With several
    /// replicas on PostgreSQL, rows another one is claiming right now are skipped, not
    /// waited for.
    pub async fn claim_unpublished(
        &self,
        before: &str,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<OutboxPulse>, StoreError> {
        let (after_created, after_id) = after.unwrap_or(("", ""));
        let claim = Claim::new(&self.replica);
        let lock = self.skip_locked();
        let ids: Vec<String> = sqlx::query_scalar(&format!(
            "UPDATE pulses SET claimed_by = $1, claimed_until = $2 WHERE id IN (\
             SELECT id FROM pulses WHERE published_at IS NULL AND created_at < $4 \
             AND (created_at > $5 OR (created_at = $5 AND id > $6)) \
             AND (claimed_by = $1 OR claimed_until IS NULL OR claimed_until < $3) \
             ORDER BY created_at, id LIMIT $7{lock}) RETURNING id"
        ))
        .bind(claim.by)
        .bind(&claim.until)
        .bind(&claim.now)
        .bind(before)
        .bind(after_created)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        self.outbox_rows(&ids).await
    }

    /// Claims a cabinet's pulses for redelivery, made since `since`: those never acked (a
    /// cabinet that acks), or never handed (`unhanded_only`, a seed cabinet), that no other
    /// replica holds.
    pub async fn claim_pending(
        &self,
        machine_id: &str,
        since: &str,
        unhanded_only: bool,
    ) -> Result<Vec<OutboxPulse>, StoreError> {
        let claim = Claim::new(&self.replica);
        let lock = self.skip_locked();
        let which = if unhanded_only {
            "published_at IS NULL AND created_at >= $5"
        } else {
            "acked_at IS NULL AND created_at >= $5"
        };
        let ids: Vec<String> = sqlx::query_scalar(&format!(
            "UPDATE pulses SET claimed_by = $1, claimed_until = $2 WHERE id IN (\
             SELECT id FROM pulses WHERE machine_id = $4 AND {which} \
             AND (claimed_by = $1 OR claimed_until IS NULL OR claimed_until < $3) \
             ORDER BY created_at, id LIMIT 500{lock}) RETURNING id"
        ))
        .bind(claim.by)
        .bind(&claim.until)
        .bind(&claim.now)
        .bind(machine_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        self.outbox_rows(&ids).await
    }

    fn skip_locked(&self) -> &'static str {
        match self.backend {
            super::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            super::Backend::Sqlite => "",
        }
    }

    /// The outbox rows of `ids`, oldest first.
    async fn outbox_rows(&self, ids: &[String]) -> Result<Vec<OutboxPulse>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(200) {
            let marks = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("{OUTBOX_SELECT} WHERE p.id IN ({marks})");
            let mut q = sqlx::query_as::<_, OutboxPulse>(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            rows.extend(q.fetch_all(&self.pool).await?);
        }
        rows.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(rows)
    }

    /// Published but never acknowledged pulses of a cabinet, newer than `since`: what a
    /// reconnecting cabinet that acks may have missed.
    pub async fn unacked_pulses(
        &self,
        machine_id: &str,
        since: &str,
    ) -> Result<Vec<OutboxPulse>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "{OUTBOX_SELECT} WHERE p.machine_id = $1 AND p.acked_at IS NULL \
             AND p.created_at >= $2 ORDER BY p.created_at, p.id LIMIT 100"
        ))
        .bind(machine_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A cabinet's pulses never handed to the broker, oldest first.
    pub async fn unhanded_pulses(&self, machine_id: &str) -> Result<Vec<OutboxPulse>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "{OUTBOX_SELECT} WHERE p.machine_id = $1 AND p.published_at IS NULL \
             ORDER BY p.created_at, p.id LIMIT 500"
        ))
        .bind(machine_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Pulses not yet handed to the broker, and when the oldest of them was made.
    pub async fn outbox_backlog(&self) -> Result<(i64, Option<String>), StoreError> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), MIN(created_at) FROM pulses WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn count_unpublished(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM pulses WHERE published_at IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Clears handed marks of pulses that were never sent after all (and never acked), so
    /// they go out again.
    pub async fn unmark_handed(&self, ids: &[String]) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        unmark_handed(&mut conn, ids).await?;
        Ok(())
    }
}

impl Tx {
    /// Queues a new pulse's row for the commit.
    pub fn queue_pulse(&mut self, pulse: NewPulse) {
        self.pulses.push(pulse);
    }

    /// Marks pulses handed to the broker: a pulse queued in this transaction is written
    /// already marked; others are marked at commit, in one statement.
    pub fn mark_handed(&mut self, ids: &[String], at: &str) {
        for id in ids {
            match self.pulses.iter_mut().find(|p| &p.id == id) {
                Some(p) => p.published_at = Some(at.to_owned()),
                None => self.handed.push(id.clone()),
            }
        }
    }

    pub async fn unmark_handed(&mut self, ids: &[String]) -> Result<(), StoreError> {
        Ok(unmark_handed(self.conn(), ids).await?)
    }

    /// Records a cabinet's ack; only the cabinet's own pulses can be acked.
    pub async fn mark_acked(
        &mut self,
        machine_id: &str,
        pulse_id: &str,
        at: &str,
    ) -> Result<AckOutcome, StoreError> {
        let r = sqlx::query(
            "UPDATE pulses SET acked_at = $3, published_at = COALESCE(published_at, $3) \
             WHERE id = $1 AND machine_id = $2 AND acked_at IS NULL",
        )
        .bind(pulse_id)
        .bind(machine_id)
        .bind(at)
        .execute(self.conn())
        .await?;
        if r.rows_affected() == 1 {
            self.set_acks_pulses(machine_id).await?;
            return Ok(AckOutcome::Recorded);
        }
        let known: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pulses WHERE id = $1 AND machine_id = $2")
                .bind(pulse_id)
                .bind(machine_id)
                .fetch_one(self.conn())
                .await?;
        Ok(if known > 0 {
            AckOutcome::Repeated
        } else {
            AckOutcome::Unknown
        })
    }
}

/// How long a replica holds the pulses it claims before another may take them over: long
/// enough for any publish to settle, short enough that a dead replica's pulses are not
/// late by much.
pub const CLAIM_LEASE: chrono::Duration = chrono::Duration::seconds(15);

/// A replica's claim on pulses, until a moment.
pub(super) struct Claim<'a> {
    pub by: &'a str,
    pub until: String,
    pub now: String,
}

impl<'a> Claim<'a> {
    pub fn new(by: &'a str) -> Self {
        let now = chrono::Utc::now();
        Self {
            by,
            until: crate::domain::db_time(now + CLAIM_LEASE),
            now: crate::domain::db_time(now),
        }
    }
}

/// New pulses, claimed by the replica that commits them.
pub(super) async fn insert(
    conn: &mut sqlx::AnyConnection,
    rows: &[NewPulse],
    claim: &Claim<'_>,
) -> Result<(), sqlx::Error> {
    super::sql::insert_many(
        conn,
        "INSERT INTO pulses (id, machine_id, credits, source, payment_id, reason, payload, \
         created_at, published_at, claimed_by, claimed_until)",
        "",
        11,
        rows,
        |q, p| {
            q.bind(p.id.as_str())
                .bind(p.machine_id.as_str())
                .bind(p.credits)
                .bind(p.source.as_str())
                .bind(p.payment_id.as_deref())
                .bind(p.reason.as_deref())
                .bind(p.payload.as_str())
                .bind(p.created_at.as_str())
                .bind(p.published_at.as_deref())
                .bind(claim.by.to_owned())
                .bind(claim.until.clone())
        },
    )
    .await
}

pub(super) async fn mark_handed(
    conn: &mut sqlx::AnyConnection,
    ids: &[String],
    at: &str,
) -> Result<(), sqlx::Error> {
    super::sql::execute_in(
        conn,
        "UPDATE pulses SET published_at = $1 WHERE published_at IS NULL AND id",
        "",
        &[at],
        ids,
    )
    .await
    .map(|_| ())
}

async fn unmark_handed(conn: &mut sqlx::AnyConnection, ids: &[String]) -> Result<(), sqlx::Error> {
    super::sql::execute_in(
        conn,
        "UPDATE pulses SET published_at = NULL WHERE acked_at IS NULL AND id",
        "",
        &[],
        ids,
    )
    .await
    .map(|_| ())
}

/// Replaces the payload of every pulse of the cabinet it has not acked with
/// `resign(payload)` (a secret rotation).
pub(super) async fn resign_unacked(
    conn: &mut sqlx::AnyConnection,
    machine_id: &str,
    resign: impl Fn(&str) -> Option<String>,
) -> Result<(), sqlx::Error> {
    let pending: Vec<(String, String)> =
        sqlx::query_as("SELECT id, payload FROM pulses WHERE machine_id = $1 AND acked_at IS NULL")
            .bind(machine_id)
            .fetch_all(&mut *conn)
            .await?;
    for (id, payload) in pending {
        if let Some(new) = resign(&payload) {
            sqlx::query("UPDATE pulses SET payload = $2 WHERE id = $1")
                .bind(&id)
                .bind(&new)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}
