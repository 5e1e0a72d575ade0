//! Statements the single writer runs inside its group-commit transactions.
//! Every insert that could repeat is `ON CONFLICT DO NOTHING` plus a row count, so
//! "already done" is an answer, not an error, on both backends.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::cabinets::{Cabinet, CABINET_COLUMNS};

pub type Conn = AnyConnection;

pub async fn cabinet(conn: &mut Conn, machine_id: &str) -> Result<Option<Cabinet>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {CABINET_COLUMNS} FROM cabinets WHERE machine_id = $1"
    ))
    .bind(machine_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(Cabinet::from_row).transpose()
}

/// The parts of a stored payment the money path decides on.
#[derive(Debug, Clone)]
pub struct PaymentState {
    pub id: String,
    pub status: String,
    pub machine_id: Option<String>,
    pub amount_minor: i64,
}

fn payment_state(row: &AnyRow) -> Result<PaymentState, sqlx::Error> {
    Ok(PaymentState {
        id: row.try_get("id")?,
        status: row.try_get("status")?,
        machine_id: row.try_get("machine_id")?,
        amount_minor: row.try_get("amount_minor")?,
    })
}

pub async fn payment_by_session(
    conn: &mut Conn,
    session_id: &str,
) -> Result<Option<PaymentState>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, status, machine_id, amount_minor FROM payments WHERE checkout_session_id = $1",
    )
    .bind(session_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(payment_state).transpose()
}

pub async fn payment_by_intent(
    conn: &mut Conn,
    payment_intent_id: &str,
) -> Result<Option<PaymentState>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, status, machine_id, amount_minor FROM payments WHERE payment_intent_id = $1 \
         ORDER BY created_at LIMIT 1",
    )
    .bind(payment_intent_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(payment_state).transpose()
}

#[derive(Debug, Clone)]
pub struct NewPayment<'a> {
    pub id: &'a str,
    pub checkout_session_id: &'a str,
    pub payment_intent_id: Option<&'a str>,
    pub machine_id: Option<&'a str>,
    pub amount_minor: i64,
    pub discount_minor: i64,
    pub currency: &'a str,
    pub credits: i64,
    pub status: &'a str,
    pub review_reason: Option<&'a str>,
    pub livemode: bool,
    pub at: &'a str,
}

/// Inserts unless a payment for the same checkout session exists.
pub async fn insert_payment(conn: &mut Conn, p: &NewPayment<'_>) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO payments (id, checkout_session_id, payment_intent_id, machine_id, amount_minor, \
         discount_minor, currency, credits, status, review_reason, livemode, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
         ON CONFLICT (checkout_session_id) DO NOTHING",
    )
    .bind(p.id)
    .bind(p.checkout_session_id)
    .bind(p.payment_intent_id)
    .bind(p.machine_id)
    .bind(p.amount_minor)
    .bind(p.discount_minor)
    .bind(p.currency)
    .bind(p.credits)
    .bind(p.status)
    .bind(p.review_reason)
    .bind(i64::from(p.livemode))
    .bind(p.at)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Moves a payment from `from_status` to the values in `p` (same id). Returns false when
/// another writer got there first.
pub async fn settle_payment(
    conn: &mut Conn,
    from_status: &str,
    p: &NewPayment<'_>,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE payments SET payment_intent_id = COALESCE($3, payment_intent_id), machine_id = $4, \
         amount_minor = $5, discount_minor = $6, currency = $7, credits = $8, status = $9, \
         review_reason = $10, updated_at = $11 WHERE id = $1 AND status = $2",
    )
    .bind(p.id)
    .bind(from_status)
    .bind(p.payment_intent_id)
    .bind(p.machine_id)
    .bind(p.amount_minor)
    .bind(p.discount_minor)
    .bind(p.currency)
    .bind(p.credits)
    .bind(p.status)
    .bind(p.review_reason)
    .bind(p.at)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_payment_status(
    conn: &mut Conn,
    id: &str,
    from_status: &str,
    to_status: &str,
    at: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE payments SET status = $3, updated_at = $4 WHERE id = $1 AND status = $2",
    )
    .bind(id)
    .bind(from_status)
    .bind(to_status)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn record_refund(
    conn: &mut Conn,
    id: &str,
    refunded_minor: i64,
    status: &str,
    at: &str,
) -> Result<(), sqlx::Error> {
    // Refund events can arrive out of order: the refunded amount only ever grows, and a
    // payment fully refunded never goes back to partially refunded.
    sqlx::query(
        "UPDATE payments SET refunded_minor = $2, status = $3, updated_at = $4 \
         WHERE id = $1 AND (refunded_minor < $2 OR ($3 = 'refunded' AND status <> 'refunded'))",
    )
    .bind(id)
    .bind(refunded_minor)
    .bind(status)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn mark_published(conn: &mut Conn, ids: &[String], at: &str) -> Result<(), sqlx::Error> {
    for chunk in ids.chunks(500) {
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "UPDATE pulses SET published_at = $1 WHERE published_at IS NULL AND id IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(at);
        for id in chunk {
            q = q.bind(id);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Clears handed marks of pulses that were never sent (and never acked).
pub async fn unmark_published(conn: &mut Conn, ids: &[String]) -> Result<(), sqlx::Error> {
    for id in ids {
        sqlx::query("UPDATE pulses SET published_at = NULL WHERE id = $1 AND acked_at IS NULL")
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
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

/// Records a cabinet's ack; only the cabinet's own pulses can be acked.
pub async fn mark_acked(
    conn: &mut Conn,
    machine_id: &str,
    pulse_id: &str,
    at: &str,
) -> Result<AckOutcome, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE pulses SET acked_at = $3, published_at = COALESCE(published_at, $3) \
         WHERE id = $1 AND machine_id = $2 AND acked_at IS NULL",
    )
    .bind(pulse_id)
    .bind(machine_id)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    if r.rows_affected() == 1 {
        sqlx::query(
            "UPDATE cabinets SET acks_pulses = 1 WHERE machine_id = $1 AND acks_pulses = 0",
        )
        .bind(machine_id)
        .execute(&mut *conn)
        .await?;
        return Ok(AckOutcome::Recorded);
    }
    let known: Option<i64> =
        sqlx::query_scalar("SELECT COUNT(*) FROM pulses WHERE id = $1 AND machine_id = $2")
            .bind(pulse_id)
            .bind(machine_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(if known.unwrap_or(0) > 0 {
        AckOutcome::Repeated
    } else {
        AckOutcome::Unknown
    })
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

pub async fn insert_play(conn: &mut Conn, p: &NewPlay<'_>) -> Result<bool, sqlx::Error> {
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
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_cabinet_status(
    conn: &mut Conn,
    machine_id: &str,
    online: bool,
    at: &str,
) -> Result<bool, sqlx::Error> {
    // A cabinet that announces its status speaks coinpulse's protocol (seed cabinets never
    // do): it dedupes pulse ids, so unacked pulses may be sent to it again.
    let r = sqlx::query(
        "UPDATE cabinets SET online = $2, last_seen_at = $3, acks_pulses = 1 WHERE machine_id = $1",
    )
    .bind(machine_id)
    .bind(i64::from(online))
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// A checkout session coinpulse created: the server's truth about what was bought.
#[derive(Debug, Clone)]
pub struct SessionTruth {
    pub machine_id: String,
    pub credits: i64,
    pub amount_minor: i64,
    pub currency: String,
}

pub async fn checkout_session(
    conn: &mut Conn,
    id: &str,
) -> Result<Option<SessionTruth>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT machine_id, credits, amount_minor, currency FROM checkout_sessions WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        Ok(SessionTruth {
            machine_id: r.try_get("machine_id")?,
            credits: r.try_get("credits")?,
            amount_minor: r.try_get("amount_minor")?,
            currency: r.try_get("currency")?,
        })
    })
    .transpose()
}

pub async fn set_checkout_status(
    conn: &mut Conn,
    id: &str,
    status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE checkout_sessions SET status = $2 WHERE id = $1")
        .bind(id)
        .bind(status)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// ---- Set-based statements: one round trip for a whole batch ----

/// `($1, $2, $3), ($4, $5, $6), …` for `rows` rows of `cols` values.
fn values_clause(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn in_clause(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows per multi-row statement: well under SQLite's and PostgreSQL's parameter limits.
const CHUNK: usize = 256;

pub async fn existing_events(
    conn: &mut Conn,
    ids: &[&str],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let mut out = std::collections::HashSet::new();
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT event_id FROM stripe_events WHERE event_id IN ({})",
            in_clause(chunk.len())
        );
        let mut q = sqlx::query_scalar::<_, String>(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        out.extend(q.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

pub async fn payments_by_sessions(
    conn: &mut Conn,
    session_ids: &[&str],
) -> Result<std::collections::HashMap<String, PaymentState>, sqlx::Error> {
    let mut out = std::collections::HashMap::new();
    for chunk in session_ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT checkout_session_id, id, status, machine_id, amount_minor FROM payments WHERE checkout_session_id IN ({})",
            in_clause(chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut *conn).await? {
            out.insert(row.try_get("checkout_session_id")?, payment_state(&row)?);
        }
    }
    Ok(out)
}

pub async fn checkout_sessions(
    conn: &mut Conn,
    ids: &[&str],
) -> Result<std::collections::HashMap<String, SessionTruth>, sqlx::Error> {
    let mut out = std::collections::HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT id, machine_id, credits, amount_minor, currency FROM checkout_sessions WHERE id IN ({})",
            in_clause(chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for r in q.fetch_all(&mut *conn).await? {
            out.insert(
                r.try_get("id")?,
                SessionTruth {
                    machine_id: r.try_get("machine_id")?,
                    credits: r.try_get("credits")?,
                    amount_minor: r.try_get("amount_minor")?,
                    currency: r.try_get("currency")?,
                },
            );
        }
    }
    Ok(out)
}

/// A processed event, written with its final outcome at the end of the batch.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub event_id: String,
    pub event_type: String,
    pub livemode: bool,
    pub object_id: Option<String>,
    pub outcome: &'static str,
    pub payment_id: Option<String>,
    pub received_at: String,
}

pub async fn insert_events(conn: &mut Conn, rows: &[EventRow]) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO stripe_events (event_id, event_type, livemode, object_id, outcome, payment_id, received_at) \
             VALUES {} ON CONFLICT (event_id) DO NOTHING",
            values_clause(chunk.len(), 7)
        );
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q
                .bind(&e.event_id)
                .bind(&e.event_type)
                .bind(i64::from(e.livemode))
                .bind(e.object_id.as_deref())
                .bind(e.outcome)
                .bind(e.payment_id.as_deref())
                .bind(&e.received_at);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A pulse row, written at the end of the batch (after its payment row).
#[derive(Debug, Clone)]
pub struct PulseRow {
    pub id: String,
    pub machine_id: String,
    pub credits: i64,
    pub source: &'static str,
    pub payment_id: Option<String>,
    pub reason: Option<String>,
    pub payload: String,
    pub created_at: String,
    /// Set when the pulse is handed to the broker in the same breath as its commit.
    pub published_at: Option<String>,
}

pub async fn insert_pulses(conn: &mut Conn, rows: &[PulseRow]) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO pulses (id, machine_id, credits, source, payment_id, reason, payload, created_at, published_at) VALUES {}",
            values_clause(chunk.len(), 9)
        );
        let mut q = sqlx::query(&sql);
        for p in chunk {
            q = q
                .bind(&p.id)
                .bind(&p.machine_id)
                .bind(p.credits)
                .bind(p.source)
                .bind(p.payment_id.as_deref())
                .bind(p.reason.as_deref())
                .bind(&p.payload)
                .bind(&p.created_at)
                .bind(p.published_at.as_deref());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}
