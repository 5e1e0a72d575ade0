//! Statements the single writer runs inside its group-commit transactions.
//! Every insert that could repeat is `ON CONFLICT DO NOTHING` plus a row count, so
//! "already done" is an answer, not an error, on both backends.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::cabinets::{Cabinet, CABINET_COLUMNS};

pub type Conn = AnyConnection;

pub async fn insert_event(
    conn: &mut Conn,
    event_id: &str,
    event_type: &str,
    livemode: bool,
    object_id: Option<&str>,
    at: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO stripe_events (event_id, event_type, livemode, object_id, outcome, received_at) \
         VALUES ($1, $2, $3, $4, 'received', $5) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(event_type)
    .bind(i64::from(livemode))
    .bind(object_id)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_event_outcome(
    conn: &mut Conn,
    event_id: &str,
    outcome: &str,
    payment_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE stripe_events SET outcome = $2, payment_id = $3 WHERE event_id = $1")
        .bind(event_id)
        .bind(outcome)
        .bind(payment_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

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
    sqlx::query(
        "UPDATE payments SET refunded_minor = $2, status = $3, updated_at = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(refunded_minor)
    .bind(status)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct NewPulse<'a> {
    pub id: &'a str,
    pub machine_id: &'a str,
    pub credits: i64,
    pub source: &'a str,
    pub payment_id: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub payload: &'a str,
    pub at: &'a str,
}

/// Inserts unless the payment already has its pulse.
pub async fn insert_pulse(conn: &mut Conn, p: &NewPulse<'_>) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "INSERT INTO pulses (id, machine_id, credits, source, payment_id, reason, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(p.id)
    .bind(p.machine_id)
    .bind(p.credits)
    .bind(p.source)
    .bind(p.payment_id)
    .bind(p.reason)
    .bind(p.payload)
    .bind(p.at)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
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

/// Records a cabinet's ack. Returns false for an unknown, foreign or repeated pulse id.
pub async fn mark_acked(
    conn: &mut Conn,
    machine_id: &str,
    pulse_id: &str,
    at: &str,
) -> Result<bool, sqlx::Error> {
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
    }
    Ok(r.rows_affected() == 1)
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
    let r = sqlx::query("UPDATE cabinets SET online = $2, last_seen_at = $3 WHERE machine_id = $1")
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
