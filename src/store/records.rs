//! Read side of payments, pulses and plays (lists for the API and the dashboard).

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Store, StoreError};

#[derive(Debug, Clone, Serialize)]
pub struct Payment {
    pub id: String,
    pub checkout_session_id: Option<String>,
    pub payment_intent_id: Option<String>,
    pub machine_id: Option<String>,
    pub amount_minor: i64,
    pub discount_minor: i64,
    pub currency: String,
    pub credits: i64,
    /// `pending` (awaiting an async payment), `credited`, `review`, `failed`, `expired`,
    /// `refunded` or `partially_refunded`.
    pub status: String,
    pub review_reason: Option<String>,
    pub refunded_minor: i64,
    pub livemode: bool,
    pub created_at: String,
    pub updated_at: String,
    /// The pulse that carried this payment's credits, if any, and its delivery state.
    pub pulse_id: Option<String>,
    pub pulse_published_at: Option<String>,
    pub pulse_acked_at: Option<String>,
}

impl Payment {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            checkout_session_id: row.try_get("checkout_session_id")?,
            payment_intent_id: row.try_get("payment_intent_id")?,
            machine_id: row.try_get("machine_id")?,
            amount_minor: row.try_get("amount_minor")?,
            discount_minor: row.try_get("discount_minor")?,
            currency: row.try_get("currency")?,
            credits: row.try_get("credits")?,
            status: row.try_get("status")?,
            review_reason: row.try_get("review_reason")?,
            refunded_minor: row.try_get("refunded_minor")?,
            livemode: row.try_get::<i64, _>("livemode")? != 0,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            pulse_id: row.try_get("pulse_id")?,
            pulse_published_at: row.try_get("pulse_published_at")?,
            pulse_acked_at: row.try_get("pulse_acked_at")?,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct PaymentFilter {
    pub machine_id: Option<String>,
    pub status: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Play {
    pub id: String,
    pub machine_id: String,
    pub ended_at: String,
    pub received_at: String,
    pub score: Option<i64>,
    pub play_seconds: Option<i64>,
    pub via: String,
}

/// A pulse as the outbox dispatcher needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxPulse {
    pub id: String,
    pub machine_id: String,
    pub payload: String,
    pub created_at: String,
    /// The cabinet speaks coinpulse's protocol (acks, dedupes): a repeat is harmless to it.
    pub acks: bool,
    /// Already handed to the embedded broker by the writer, right after its commit.
    pub routed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PulseRow {
    pub id: String,
    pub machine_id: String,
    pub credits: i64,
    pub source: String,
    pub payment_id: Option<String>,
    pub reason: Option<String>,
    pub created_at: String,
    pub published_at: Option<String>,
    pub acked_at: Option<String>,
}

impl Store {
    pub async fn payments(&self, f: &PaymentFilter) -> Result<Vec<Payment>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.*, u.id AS pulse_id, u.published_at AS pulse_published_at, \
             u.acked_at AS pulse_acked_at \
             FROM payments p LEFT JOIN pulses u ON u.payment_id = p.id \
             WHERE ($1 IS NULL OR p.machine_id = $1) AND ($2 IS NULL OR p.status = $2) \
             ORDER BY p.created_at DESC, p.id DESC LIMIT $3",
        )
        .bind(f.machine_id.as_deref())
        .bind(f.status.as_deref())
        .bind(f.limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(Payment::from_row)
            .collect::<Result<_, _>>()?)
    }

    pub async fn payment(&self, id: &str) -> Result<Option<Payment>, StoreError> {
        let row = sqlx::query(
            "SELECT p.*, u.id AS pulse_id, u.published_at AS pulse_published_at, \
             u.acked_at AS pulse_acked_at \
             FROM payments p LEFT JOIN pulses u ON u.payment_id = p.id WHERE p.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(Payment::from_row).transpose()?)
    }

    pub async fn plays(
        &self,
        machine_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Play>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, machine_id, ended_at, received_at, score, play_seconds, via FROM plays \
             WHERE ($1 IS NULL OR machine_id = $1) ORDER BY received_at DESC, id DESC LIMIT $2",
        )
        .bind(machine_id)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Play {
                    id: r.try_get("id")?,
                    machine_id: r.try_get("machine_id")?,
                    ended_at: r.try_get("ended_at")?,
                    received_at: r.try_get("received_at")?,
                    score: r.try_get("score")?,
                    play_seconds: r.try_get("play_seconds")?,
                    via: r.try_get("via")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    pub async fn pulses(
        &self,
        machine_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<PulseRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, machine_id, credits, source, payment_id, reason, created_at, published_at, \
             acked_at FROM pulses WHERE ($1 IS NULL OR machine_id = $1) \
             ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(machine_id)
        .bind(limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PulseRow {
                    id: r.try_get("id")?,
                    machine_id: r.try_get("machine_id")?,
                    credits: r.try_get("credits")?,
                    source: r.try_get("source")?,
                    payment_id: r.try_get("payment_id")?,
                    reason: r.try_get("reason")?,
                    created_at: r.try_get("created_at")?,
                    published_at: r.try_get("published_at")?,
                    acked_at: r.try_get("acked_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Oldest unpublished pulses after `after_created` (paging cursor), for the dispatcher.
    pub async fn unpublished_pulses(
        &self,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<OutboxPulse>, StoreError> {
        let (after_created, after_id) = after.unwrap_or(("", ""));
        let sql = format!(
            "{OUTBOX_SELECT} WHERE p.published_at IS NULL \
             AND (p.created_at > $1 OR (p.created_at = $1 AND p.id > $2)) \
             ORDER BY p.created_at, p.id LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(after_created)
            .bind(after_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        outbox_from_rows(&rows)
    }

    /// Published but never acknowledged pulses of a cabinet that acknowledges, newer
    /// than `since`: what a reconnecting cabinet may have missed.
    pub async fn unacked_pulses(
        &self,
        machine_id: &str,
        since: &str,
    ) -> Result<Vec<OutboxPulse>, StoreError> {
        let sql = format!(
            "{OUTBOX_SELECT} WHERE p.machine_id = $1 AND p.acked_at IS NULL \
             AND p.created_at >= $2 ORDER BY p.created_at, p.id LIMIT 100"
        );
        let rows = sqlx::query(&sql)
            .bind(machine_id)
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        outbox_from_rows(&rows)
    }

    /// A cabinet's pulses never handed to the broker, oldest first.
    pub async fn unhanded_pulses(&self, machine_id: &str) -> Result<Vec<OutboxPulse>, StoreError> {
        let sql = format!(
            "{OUTBOX_SELECT} WHERE p.machine_id = $1 AND p.published_at IS NULL \
             ORDER BY p.created_at, p.id LIMIT 500"
        );
        let rows = sqlx::query(&sql)
            .bind(machine_id)
            .fetch_all(&self.pool)
            .await?;
        outbox_from_rows(&rows)
    }

    pub async fn count_unpublished(&self) -> Result<i64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pulses WHERE published_at IS NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }
}

/// An outbox pulse with whether its cabinet acks; the three outbox queries add their WHERE.
const OUTBOX_SELECT: &str = "SELECT p.id, p.machine_id, p.payload, p.created_at, c.acks_pulses \
     FROM pulses p JOIN cabinets c ON c.machine_id = p.machine_id";

fn outbox_from_rows(rows: &[AnyRow]) -> Result<Vec<OutboxPulse>, StoreError> {
    rows.iter()
        .map(outbox_from_row)
        .collect::<Result<_, _>>()
        .map_err(Into::into)
}

fn outbox_from_row(r: &AnyRow) -> Result<OutboxPulse, sqlx::Error> {
    Ok(OutboxPulse {
        id: r.try_get("id")?,
        machine_id: r.try_get("machine_id")?,
        payload: r.try_get("payload")?,
        created_at: r.try_get("created_at")?,
        acks: r.try_get::<i64, _>("acks_pulses")? != 0,
        routed: false,
    })
}
