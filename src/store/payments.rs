//! The `payments` table: one row per Stripe payment coinpulse heard of, whatever became
//! of it.

use serde::Serialize;

use super::sql::IntBool;
use super::{Store, StoreError, Tx};
use crate::domain::PaymentStatus;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Payment {
    pub id: String,
    pub checkout_session_id: Option<String>,
    pub payment_intent_id: Option<String>,
    pub machine_id: Option<String>,
    pub amount_minor: i64,
    pub discount_minor: i64,
    pub currency: String,
    pub credits: i64,
    #[sqlx(try_from = "String")]
    pub status: PaymentStatus,
    pub review_reason: Option<String>,
    pub refunded_minor: i64,
    #[sqlx(try_from = "IntBool")]
    pub livemode: bool,
    pub created_at: String,
    pub updated_at: String,
    /// The payer's email, when Checkout collected one.
    pub email: Option<String>,
    /// The owner's note when the payment left review.
    pub review_note: Option<String>,
    /// The pulse that carried this payment's credits, if any, and its delivery state.
    pub pulse_id: Option<String>,
    pub pulse_published_at: Option<String>,
    pub pulse_acked_at: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct PaymentFilter {
    pub machine_id: Option<String>,
    pub status: Option<PaymentStatus>,
    pub limit: i64,
}

/// The parts of a stored payment the money path decides on.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PaymentState {
    pub id: String,
    #[sqlx(try_from = "String")]
    pub status: PaymentStatus,
    pub machine_id: Option<String>,
    pub amount_minor: i64,
}

/// A payment as the money path writes it (inserted, or settled from `pending`).
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
    pub status: PaymentStatus,
    pub review_reason: Option<&'a str>,
    pub livemode: bool,
    pub email: Option<&'a str>,
    pub at: &'a str,
}

impl<'a> NewPayment<'a> {
    pub fn with_review(self, reason: Option<&'a str>) -> Self {
        Self {
            review_reason: reason,
            ..self
        }
    }

    fn state(&self) -> PaymentState {
        PaymentState {
            id: self.id.to_owned(),
            status: self.status,
            machine_id: self.machine_id.map(str::to_owned),
            amount_minor: self.amount_minor,
        }
    }
}

pub(super) const SELECT_WITH_PULSE: &str =
    "SELECT p.*, u.id AS pulse_id, u.published_at AS pulse_published_at, \
     u.acked_at AS pulse_acked_at FROM payments p LEFT JOIN pulses u ON u.payment_id = p.id";
const SELECT_STATE: &str =
    "SELECT id, status, machine_id, amount_minor, checkout_session_id FROM payments";

impl Store {
    /// Payments waiting for the owner's review.
    pub async fn count_review(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM payments WHERE status = 'review'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn payments(&self, f: &PaymentFilter) -> Result<Vec<Payment>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "{SELECT_WITH_PULSE} WHERE ($1 IS NULL OR p.machine_id = $1) \
             AND ($2 IS NULL OR p.status = $2) ORDER BY p.created_at DESC, p.id DESC LIMIT $3"
        ))
        .bind(f.machine_id.as_deref())
        .bind(f.status.map(PaymentStatus::as_str))
        .bind(f.limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn payment(&self, id: &str) -> Result<Option<Payment>, StoreError> {
        Ok(
            sqlx::query_as(&format!("{SELECT_WITH_PULSE} WHERE p.id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

#[derive(sqlx::FromRow)]
struct StateRow {
    #[sqlx(flatten)]
    state: PaymentState,
    checkout_session_id: Option<String>,
}

/// Statements each change one payment only when it is still in the state the caller saw,
/// so a second writer (another replica) that got there first makes them return false.
impl Tx {
    /// The payment of a checkout session, read once per transaction.
    pub async fn payment_by_session(
        &mut self,
        session_id: &str,
    ) -> Result<Option<PaymentState>, StoreError> {
        if let Some(p) = self.payments.get(session_id) {
            return Ok(p.clone());
        }
        let row: Option<StateRow> =
            sqlx::query_as(&format!("{SELECT_STATE} WHERE checkout_session_id = $1"))
                .bind(session_id)
                .fetch_optional(self.conn())
                .await?;
        let p = row.map(|r| r.state);
        self.payments.insert(session_id.to_owned(), p.clone());
        Ok(p)
    }

    pub(super) async fn load_payments(&mut self, session_ids: &[&str]) -> Result<(), StoreError> {
        let rows: Vec<StateRow> = super::sql::fetch_in(
            self.conn(),
            &format!("{SELECT_STATE} WHERE checkout_session_id"),
            "",
            &[],
            session_ids,
        )
        .await?;
        for id in session_ids {
            self.payments.insert((*id).to_owned(), None);
        }
        for r in rows {
            if let Some(s) = r.checkout_session_id {
                self.payments.insert(s, Some(r.state));
            }
        }
        Ok(())
    }

    /// The first payment made through a PaymentIntent (what a refund names).
    pub async fn payment_by_intent(
        &mut self,
        payment_intent_id: &str,
    ) -> Result<Option<PaymentState>, StoreError> {
        let row: Option<StateRow> = sqlx::query_as(&format!(
            "{SELECT_STATE} WHERE payment_intent_id = $1 ORDER BY created_at LIMIT 1"
        ))
        .bind(payment_intent_id)
        .fetch_optional(self.conn())
        .await?;
        Ok(row.map(|r| r.state))
    }

    /// Inserts unless a payment for the same checkout session exists.
    pub async fn insert_payment(&mut self, p: &NewPayment<'_>) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO payments (id, checkout_session_id, payment_intent_id, machine_id, amount_minor, \
             discount_minor, currency, credits, status, review_reason, livemode, created_at, updated_at, email) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13) \
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
        .bind(p.status.as_str())
        .bind(p.review_reason)
        .bind(i64::from(p.livemode))
        .bind(p.at)
        .bind(p.email)
        .execute(self.conn())
        .await?;
        let inserted = r.rows_affected() == 1;
        if inserted {
            self.payments
                .insert(p.checkout_session_id.to_owned(), Some(p.state()));
        }
        Ok(inserted)
    }

    /// Moves a pending payment to the values in `p` (same id).
    pub async fn settle_payment(&mut self, p: &NewPayment<'_>) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE payments SET payment_intent_id = COALESCE($3, payment_intent_id), machine_id = $4, \
             amount_minor = $5, discount_minor = $6, currency = $7, credits = $8, status = $9, \
             review_reason = $10, updated_at = $11, email = COALESCE($12, email) \
             WHERE id = $1 AND status = $2",
        )
        .bind(p.id)
        .bind(PaymentStatus::Pending.as_str())
        .bind(p.payment_intent_id)
        .bind(p.machine_id)
        .bind(p.amount_minor)
        .bind(p.discount_minor)
        .bind(p.currency)
        .bind(p.credits)
        .bind(p.status.as_str())
        .bind(p.review_reason)
        .bind(p.at)
        .bind(p.email)
        .execute(self.conn())
        .await?;
        let settled = r.rows_affected() == 1;
        if settled {
            self.payments
                .insert(p.checkout_session_id.to_owned(), Some(p.state()));
        }
        Ok(settled)
    }

    /// Closes a pending payment (`failed`, `expired`).
    pub async fn close_pending_payment(
        &mut self,
        session_id: &str,
        p: &PaymentState,
        to: PaymentStatus,
        at: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE payments SET status = $3, updated_at = $4 WHERE id = $1 AND status = $2",
        )
        .bind(&p.id)
        .bind(PaymentStatus::Pending.as_str())
        .bind(to.as_str())
        .bind(at)
        .execute(self.conn())
        .await?;
        let closed = r.rows_affected() == 1;
        if closed {
            let state = PaymentState {
                status: to,
                ..p.clone()
            };
            self.payments.insert(session_id.to_owned(), Some(state));
        }
        Ok(closed)
    }

    /// Moves a payment out of review to `credited` for `machine_id`; false when it was not
    /// in review.
    pub async fn take_from_review(
        &mut self,
        id: &str,
        machine_id: &str,
        credits: i64,
        note: &str,
        at: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE payments SET status = 'credited', machine_id = $2, credits = $3, \
             review_note = $4, updated_at = $5 \
             WHERE id = $1 AND status = 'review' AND refunded_minor < amount_minor",
        )
        .bind(id)
        .bind(machine_id)
        .bind(credits)
        .bind(note)
        .bind(at)
        .execute(self.conn())
        .await?;
        // A cached state of this payment is stale now.
        self.payments
            .retain(|_, p| p.as_ref().is_none_or(|p| p.id != id));
        Ok(r.rows_affected() == 1)
    }

    pub async fn record_refund(
        &mut self,
        id: &str,
        refunded_minor: i64,
        status: PaymentStatus,
        at: &str,
    ) -> Result<(), StoreError> {
        // Refund events can arrive out of order: the refunded amount only ever grows, and a
        // payment fully refunded never goes back to partially refunded.
        // Only a credited payment takes a refund status; one in review (or dismissed) keeps
        // its status, so it stays in the queue, and records the refunded amount.
        sqlx::query(
            "UPDATE payments SET refunded_minor = $2, updated_at = $4, status = CASE \
             WHEN status IN ('credited', 'refunded', 'partially_refunded') THEN $3 ELSE status END \
             WHERE id = $1 AND (refunded_minor < $2 OR ($3 = 'refunded' AND status <> 'refunded'))",
        )
        .bind(id)
        .bind(refunded_minor)
        .bind(status.as_str())
        .bind(at)
        .execute(self.conn())
        .await?;
        Ok(())
    }
}
