//! The dashboard's read-only queries: totals, chart series, per-cabinet activity, the
//! payment search and its CSV stream, a payment's timeline and the play log.

use futures::Stream;
use serde::Serialize;

use super::payments::SELECT_WITH_PULSE;
use super::{Payment, Store, StoreError};

/// Payment statuses whose money was taken and credits sent (revenue).
const EARNED: &str = "('credited', 'refunded', 'partially_refunded')";

/// Net takings in one currency.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Takings {
    pub currency: String,
    pub net_minor: i64,
    pub payments: i64,
}

/// One bucket of a chart series (`day` is YYYY-MM-DD, or YYYY-MM-DDTHH for hours).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Bucket {
    pub bucket: String,
    pub currency: String,
    pub value: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CabinetActivity {
    pub machine_id: String,
    pub revenue_today: i64,
    pub last_play_at: Option<String>,
    /// Pulses the cabinet has not confirmed (not yet sent, or sent and not acked by a
    /// cabinet that acks).
    pub waiting: i64,
}

/// How the dashboard groups payment statuses for filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusView {
    Pending,
    /// Credited, the cabinet has not confirmed yet.
    Credited,
    /// Credited and acked by the cabinet.
    Delivered,
    Refunded,
    Review,
    Failed,
    Expired,
    Dismissed,
}

impl StatusView {
    pub const ALL: &'static [Self] = &[
        Self::Pending,
        Self::Credited,
        Self::Delivered,
        Self::Refunded,
        Self::Review,
        Self::Failed,
        Self::Expired,
        Self::Dismissed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Credited => "credited",
            Self::Delivered => "delivered",
            Self::Refunded => "refunded",
            Self::Review => "review",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Dismissed => "dismissed",
        }
    }

    fn condition(self) -> &'static str {
        match self {
            Self::Pending => "p.status = 'pending'",
            Self::Credited => "p.status = 'credited' AND u.acked_at IS NULL",
            Self::Delivered => "p.status = 'credited' AND u.acked_at IS NOT NULL",
            Self::Refunded => "p.status IN ('refunded', 'partially_refunded')",
            Self::Review => "p.status = 'review'",
            Self::Failed => "p.status = 'failed'",
            Self::Expired => "p.status = 'expired'",
            Self::Dismissed => "p.status = 'dismissed'",
        }
    }
}

/// The payments page's filter; every field optional.
#[derive(Debug, Clone, Default)]
pub struct PaymentQuery {
    pub machine_id: Option<String>,
    /// Inclusive lower bound, a db_time prefix (YYYY-MM-DD works).
    pub from: Option<String>,
    /// Exclusive upper bound.
    pub until: Option<String>,
    pub status: Option<StatusView>,
    /// coinpulse's id, any Stripe id the payment carries, or the payer's email.
    pub search: Option<String>,
}

impl PaymentQuery {
    /// The WHERE clause with binds $1..$6 (machine, from, until, search, search lower).
    fn clause(&self) -> String {
        let mut w = String::from(
            "($1 IS NULL OR p.machine_id = $1) AND ($2 IS NULL OR p.created_at >= $2) \
             AND ($3 IS NULL OR p.created_at < $3) AND ($4 IS NULL OR p.id = $4 \
             OR p.checkout_session_id = $4 OR p.payment_intent_id = $4 OR lower(p.email) = $5 \
             OR p.id IN (SELECT e.payment_id FROM stripe_events e \
             WHERE e.event_id = $4 OR e.object_id = $4))",
        );
        if let Some(s) = self.status {
            w.push_str(" AND ");
            w.push_str(s.condition());
        }
        w
    }

    fn bind<'q>(
        &'q self,
        q: sqlx::query::QueryAs<'q, sqlx::Any, Payment, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Any, Payment, sqlx::any::AnyArguments<'q>> {
        let search = self
            .search
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        q.bind(self.machine_id.as_deref())
            .bind(self.from.as_deref())
            .bind(self.until.as_deref())
            .bind(search)
            .bind(search.map(str::to_lowercase))
    }
}

/// One Stripe event that touched a payment.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub event_id: String,
    pub event_type: String,
    pub outcome: String,
    pub received_at: String,
}

/// A play with when its cabinet last got credits before it ended.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlayRow {
    pub id: String,
    pub machine_id: String,
    pub ended_at: String,
    pub received_at: String,
    pub score: Option<i64>,
    pub play_seconds: Option<i64>,
    pub credited_at: Option<String>,
}

/// Installation facts for the setup checklist.
#[derive(Debug, Clone, Default)]
pub struct Milestones {
    pub webhook_received: bool,
    pub cabinets: i64,
    pub cabinets_seen: i64,
}

impl Store {
    pub async fn takings_since(&self, since: &str) -> Result<Vec<Takings>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT currency, CAST(COALESCE(SUM(amount_minor - refunded_minor), 0) AS BIGINT) AS net_minor, \
             COUNT(*) AS payments FROM payments WHERE created_at >= $1 AND status IN {EARNED} \
             GROUP BY currency ORDER BY currency"
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn plays_since(&self, since: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM plays WHERE received_at >= $1")
                .bind(since)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Net takings per day and currency since `since`.
    pub async fn takings_by_day(&self, since: &str) -> Result<Vec<Bucket>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT substr(created_at, 1, 10) AS bucket, currency, \
             CAST(COALESCE(SUM(amount_minor - refunded_minor), 0) AS BIGINT) AS value FROM payments \
             WHERE created_at >= $1 AND status IN {EARNED} \
             GROUP BY substr(created_at, 1, 10), currency ORDER BY bucket"
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Plays per UTC hour since `since` (bucket YYYY-MM-DDTHH); the caller folds them
    /// into hours of the week.
    pub async fn plays_by_hour(&self, since: &str) -> Result<Vec<Bucket>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT substr(received_at, 1, 13) AS bucket, '' AS currency, COUNT(*) AS value \
             FROM plays WHERE received_at >= $1 GROUP BY substr(received_at, 1, 13) ORDER BY bucket",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn cabinet_activity(&self, today: &str) -> Result<Vec<CabinetActivity>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT c.machine_id, \
             (SELECT CAST(COALESCE(SUM(p.amount_minor - p.refunded_minor), 0) AS BIGINT) FROM payments p \
              WHERE p.machine_id = c.machine_id AND p.created_at >= $1 AND p.status IN {EARNED}) AS revenue_today, \
             (SELECT MAX(y.received_at) FROM plays y WHERE y.machine_id = c.machine_id) AS last_play_at, \
             (SELECT COUNT(*) FROM pulses u WHERE u.machine_id = c.machine_id AND u.acked_at IS NULL \
              AND (c.acks_pulses = 1 OR u.published_at IS NULL)) AS waiting \
             FROM cabinets c WHERE c.archived_at IS NULL ORDER BY c.machine_id"
        ))
        .bind(today)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A page of payments matching `q`, newest first.
    pub async fn find_payments(
        &self,
        q: &PaymentQuery,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Payment>, StoreError> {
        let sql = format!(
            "{SELECT_WITH_PULSE} WHERE {} ORDER BY p.created_at DESC, p.id DESC LIMIT $6 OFFSET $7",
            q.clause()
        );
        Ok(q.bind(sqlx::query_as(&sql))
            .bind(limit.clamp(1, 1000))
            .bind(offset.max(0))
            .fetch_all(&self.pool)
            .await?)
    }

    /// Every payment matching `q`, newest first, read a page at a time (keyset paging),
    /// so a year of payments never sits in memory at once.
    pub fn stream_payments(
        &self,
        q: PaymentQuery,
    ) -> impl Stream<Item = Result<Vec<Payment>, StoreError>> + 'static {
        const PAGE: i64 = 500;
        let store = self.clone();
        let sql = format!(
            "{SELECT_WITH_PULSE} WHERE {} AND (p.created_at, p.id) < ($6, $7) \
             ORDER BY p.created_at DESC, p.id DESC LIMIT $8",
            q.clause()
        );
        futures::stream::try_unfold(
            (store, q, sql, None::<(String, String)>, false),
            |(store, q, sql, cursor, done)| async move {
                if done {
                    return Ok(None);
                }
                // A row-value bound reads the (created_at, id) index as a range; the first
                // page starts above every stored time ('~' sorts after the digits).
                let (created, id) = cursor
                    .clone()
                    .unwrap_or_else(|| ("~".into(), String::new()));
                let rows: Vec<Payment> = q
                    .bind(sqlx::query_as(&sql))
                    .bind(created)
                    .bind(id)
                    .bind(PAGE)
                    .fetch_all(&store.pool)
                    .await?;
                if rows.is_empty() {
                    return Ok(None);
                }
                let last = rows.last().expect("not empty");
                let next = Some((last.created_at.clone(), last.id.clone()));
                let done = (rows.len() as i64) < PAGE;
                Ok(Some((rows, (store, q, sql, next, done))))
            },
        )
    }

    pub async fn payment_events(&self, payment_id: &str) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT event_id, event_type, outcome, received_at FROM stripe_events \
             WHERE payment_id = $1 ORDER BY received_at, event_id",
        )
        .bind(payment_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The first play its cabinet reported after the payment's pulse (its game over).
    pub async fn play_after(
        &self,
        machine_id: &str,
        since: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(received_at) FROM plays WHERE machine_id = $1 AND received_at >= $2",
        )
        .bind(machine_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn play_log(
        &self,
        machine_id: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<PlayRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT y.id, y.machine_id, y.ended_at, y.received_at, y.score, y.play_seconds, \
             (SELECT MAX(u.created_at) FROM pulses u WHERE u.machine_id = y.machine_id \
              AND u.created_at <= y.ended_at) AS credited_at \
             FROM plays y WHERE ($1 IS NULL OR y.machine_id = $1) \
             ORDER BY y.received_at DESC, y.id DESC LIMIT $2 OFFSET $3",
        )
        .bind(machine_id)
        .bind(limit.clamp(1, 1000))
        .bind(offset.max(0))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn milestones(&self) -> Result<Milestones, StoreError> {
        let webhooks: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM stripe_events LIMIT 1) AS any_event",
        )
        .fetch_one(&self.pool)
        .await?;
        let (cabinets, cabinets_seen): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN last_seen_at IS NOT NULL OR acks_pulses = 1 \
             THEN 1 ELSE 0 END), 0) AS BIGINT) FROM cabinets",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Milestones {
            webhook_received: webhooks > 0,
            cabinets,
            cabinets_seen,
        })
    }

    /// Takes a payment out of review without credits; false when it was not in review.
    pub async fn dismiss_review(&self, id: &str, note: &str) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE payments SET status = 'dismissed', review_note = $2, updated_at = $3 \
             WHERE id = $1 AND status = 'review'",
        )
        .bind(id)
        .bind(note)
        .bind(crate::domain::now_db())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}

impl Store {
    /// Changes whenever a payment, an ack or a play is recorded: what the dashboard's live
    /// view watches (each part reads an index).
    pub async fn activity_mark(&self) -> Result<String, StoreError> {
        let (a, b, c, d): (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = sqlx::query_as(
            "SELECT (SELECT MAX(updated_at) FROM payments), (SELECT MAX(acked_at) FROM pulses), \
                 (SELECT MAX(received_at) FROM plays), (SELECT MAX(last_seen_at) FROM cabinets)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok([a, b, c, d].map(Option::unwrap_or_default).join("|"))
    }
}
